"""``gpugrad train``: train an MLP classifier on real data, on the GPU when there is one.

The default data set is scikit-learn's 8x8 handwritten digits (1,797 images, shipped
inside scikit-learn, so nothing is downloaded); ``--data file.npz`` trains on any
arrays ``X`` (samples x features) and ``y`` (integer labels) instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import backend, nn, optim
from .creation import tensor
from .data import DataLoader, TensorDataset
from .engine import no_grad
from .random import manual_seed
from .serialization import save


@dataclass
class TrainConfig:
    """Everything that defines a run (saved with the checkpoint)."""
    hidden: tuple[int, ...] = (256,)
    activation: str = "relu"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    device: str = "auto"
    seed: int = 0
    test_fraction: float = 0.2
    data: str | None = None
    out: str | None = None
    progress: bool = True


# ----------------------------------------------------------------------------- data

def load_data(path: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(X float32 of shape (n, features), y int64 of shape (n,), a name for the data set)."""
    if path is None:
        try:
            from sklearn.datasets import load_digits  # noqa: PLC0415 - optional extra
        except ImportError:
            raise RuntimeError(
                "the default data set (8x8 digits) comes with scikit-learn: pip install 'gpugrad[train]' "
                "(or pass --data file.npz with arrays X and y)") from None
        digits = load_digits()
        return digits.data.astype(np.float32) / 16.0, digits.target.astype(np.int64), "digits (8x8)"
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"X", "y"} - set(archive.files)
            if missing:
                raise ValueError(f"--data {path}: the .npz file needs arrays named X and y; missing "
                                 f"{sorted(missing)} (it has {sorted(archive.files)})")
            X, y = archive["X"], archive["y"]
    except (OSError, ValueError) as err:
        if isinstance(err, ValueError) and str(err).startswith("--data"):
            raise
        raise ValueError(f"--data {path}: not a readable .npz file ({err}); save one with "
                         "numpy.savez(path, X=features, y=labels)") from None
    return _check_arrays(path, X, y)


def _check_arrays(path: str, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    if X.ndim < 2 or X.shape[0] < 2:
        raise ValueError(f"--data {path}: X must have shape (samples, features...), got {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"--data {path}: X must be numeric, got dtype {X.dtype}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"--data {path}: y must have shape ({X.shape[0]},) to match X {X.shape}, "
                         f"got {y.shape}")
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise ValueError(f"--data {path}: y must hold integer class labels, got dtype {y.dtype}")
    X = X.reshape(X.shape[0], -1).astype(np.float32)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"--data {path}: X contains NaN or Inf")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"--data {path}: labels must be 0, 1, 2, ...; found {y.min()}")
    return X, y, os.path.basename(path)


def split(X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """A seeded, stratified train/test split (every class in both parts where possible)."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test.extend(members[:int(round(len(members) * test_fraction))])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test] = True
    return X[~test_mask], y[~test_mask], X[test_mask], y[test_mask]


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when a GPU is usable, else the CPU."""
    if name == "auto":
        return "cpu" if backend.cuda_unavailable_reason() else "cuda"
    if name.startswith("cuda"):
        backend.load_cupy()          # raises a clear RuntimeError when there is no GPU
    return name


# ----------------------------------------------------------------------------- training

def make_optimizer(cfg: TrainConfig, params: list) -> optim.Optimizer:
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use sgd, adam or adamw")


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional extra
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=True, file=sys.stderr, dynamic_ncols=True)


def evaluate(model: nn.Module, X: Any, y: Any) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on X, y, without recording."""
    model.eval()
    with no_grad():
        logits = model(X)
        loss = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(axis=1) == y).mean().item()
    model.train()
    return loss, accuracy


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one training job; returns its metrics (also written to ``cfg.out``)."""
    started = time.perf_counter()
    manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    X, y, name = load_data(cfg.data)
    Xtr, ytr, Xte, yte = split(X, y, cfg.test_fraction, cfg.seed)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0) + 1e-6      # standardise with training statistics
    Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std
    n_classes = int(y.max()) + 1
    log(f"data: {name}, {len(ytr)} training and {len(yte)} test samples, {X.shape[1]} features, "
        f"{n_classes} classes; device: {device}")

    model = nn.MLP([X.shape[1], *cfg.hidden, n_classes], activation=cfg.activation).to(device)
    optimizer = make_optimizer(cfg, list(model.parameters()))
    loader = DataLoader(TensorDataset(tensor(Xtr), tensor(ytr)), batch_size=cfg.batch_size,
                        shuffle=True, seed=cfg.seed, device=device)
    Xte_t, yte_t = tensor(Xte, device=device), tensor(yte, device=device)

    history: dict[str, list[float]] = {"train_loss": [], "train_accuracy": [], "test_loss": [],
                                       "test_accuracy": []}
    for epoch in range(1, cfg.epochs + 1):
        total_loss = correct = seen = 0.0
        bar = _progress(loader, len(loader), f"epoch {epoch}/{cfg.epochs}", cfg.progress)
        for xb, yb in bar:
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n = yb.shape[0]
            total_loss += loss.item() * n
            correct += (logits.argmax(axis=1) == yb).sum().item()
            seen += n
            if bar is not loader:
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.2%}", refresh=False)
        test_loss, test_acc = evaluate(model, Xte_t, yte_t)
        if bar is not loader:
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.2%}",
                            test_acc=f"{test_acc:.2%}")
            bar.close()
        history["train_loss"].append(total_loss / seen)
        history["train_accuracy"].append(correct / seen)
        history["test_loss"].append(test_loss)
        history["test_accuracy"].append(test_acc)
        if bar is loader:
            log(f"epoch {epoch}/{cfg.epochs}: loss {total_loss / seen:.4f}, accuracy {correct / seen:.2%}, "
                f"test accuracy {test_acc:.2%}")

    metrics = {"data": name, "device": device, "seconds": round(time.perf_counter() - started, 3),
               "final_test_accuracy": history["test_accuracy"][-1],
               "final_test_loss": history["test_loss"][-1], "history": history,
               "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}}
    if cfg.out:
        _write_outputs(cfg, model, optimizer, metrics, (mean, std), log)
    log(f"test accuracy: {100 * metrics['final_test_accuracy']:.2f}%")
    return metrics


def _write_outputs(cfg: TrainConfig, model: nn.Module, optimizer: optim.Optimizer, metrics: dict,
                   scaling: tuple[np.ndarray, np.ndarray], log: Callable[[str], None]) -> None:
    os.makedirs(cfg.out, exist_ok=True)
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
          "input_mean": scaling[0], "input_std": scaling[1],
          "config": json.dumps(metrics["config"])}, os.path.join(cfg.out, "checkpoint.gg"))
    with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    plot = os.path.join(cfg.out, "curves.png")
    if plot_curves(metrics["history"], plot):
        log(f"wrote {cfg.out}/checkpoint.gg, metrics.json and curves.png")
    else:
        log(f"wrote {cfg.out}/checkpoint.gg and metrics.json (no curves.png: pip install matplotlib)")


def plot_curves(history: dict[str, list[float]], path: str) -> bool:
    """Loss and accuracy per epoch as a PNG; False when matplotlib is absent."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], label="train")
    ax_loss.plot(epochs, history["test_loss"], label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * a for a in history["train_accuracy"]], label="train")
    ax_acc.plot(epochs, [100 * a for a in history["test_accuracy"]], label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def parse_hidden(text: str) -> tuple[int, ...]:
    """'128,64' -> (128, 64); '' -> () (a linear model)."""
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--hidden {text!r}: give layer sizes as integers separated by commas, "
                         "e.g. 128,64") from None
    if any(s <= 0 for s in sizes):
        raise ValueError(f"--hidden {text!r}: layer sizes must be positive")
    return sizes


__all__ = ["TrainConfig", "train", "load_data", "split", "evaluate", "plot_curves", "parse_hidden"]
