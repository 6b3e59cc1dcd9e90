"""``gpugrad train``: train an MLP classifier on real data, resumably, on the GPU when there is one.

The default data set is scikit-learn's 8x8 handwritten digits (1,797 images shipped inside
scikit-learn, so nothing is downloaded); ``--data`` trains on your own ``.npz`` (arrays X and
y), ``.npy`` features with ``--labels`` or ``.csv`` (last column the label) instead. Every
option and the data are checked before training starts (``UsageError``).

The data is split once, stratified and seeded, into training, validation and test sets:
per-epoch figures are on the validation set, and the test set is measured once, at the end,
with the weights of the epoch with the lowest validation loss. ``--out DIR`` writes, every epoch
and atomically, ``last.safetensors`` (everything needed to continue: model, optimizer,
the position in the epoch, every random generator's state, the history) and
``best.safetensors`` (those weights), then ``metrics.json`` and ``curves.png``. Ctrl-C
stops after the current step and saves; ``resume(DIR)`` continues bit-identically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from . import __version__, backend, nn, optim
from .creation import tensor
from .data import read_arrays
from .engine import no_grad
from .jit import jit
from .nn.layers import ACTIVATIONS
from .random import generator as gg_generator
from .random import manual_seed
from .serialization import load, save
from .tensor import Tensor

LAST, BEST, METRICS, CURVES = "last.safetensors", "best.safetensors", "metrics.json", "curves.png"
CHECKPOINT_FORMAT = 1          # the layout of a run's checkpoint (the keys below), not of the file
OPTIMIZERS = ("sgd", "adam", "adamw")
HISTORY = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# what --resume may change: how long, where, how it is shown, on which device, where the data now is
RESUMABLE = ("epochs", "out", "progress", "device", "data", "labels", "jit")


class UsageError(ValueError):
    """A bad option or data file, found before training starts (the command exits with code 2)."""


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
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    data: str | None = None
    labels: str | None = None
    out: str | None = None
    progress: bool = True
    jit: bool = False              # train with gg.jit (the same numbers; the step traced once, replayed)


DEFAULTS = TrainConfig()


# ----------------------------------------------------------------------------- checking the options
def flag(field: str) -> str:
    """The command-line flag of a config field: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


def check_config(cfg: TrainConfig, resuming: bool = False) -> None:
    """Raise UsageError naming the flag, the value and what to do, for the first bad option."""
    def fail(field: str, problem: str) -> UsageError:
        return UsageError(f"{flag(field)} {_shown(getattr(cfg, field))}: {problem}")

    for field in ("epochs", "batch_size"):
        value = getattr(cfg, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(field, "must be a whole number of at least 1")
    if not (isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and 0 <= cfg.seed < 2**63):
        raise fail("seed", "must be a whole number from 0 to 2**63 - 1")
    if not _finite_number(cfg.lr) or cfg.lr <= 0:
        raise fail("lr", "the learning rate must be a finite number above 0, e.g. 1e-3")
    if not _finite_number(cfg.weight_decay) or cfg.weight_decay < 0:
        raise fail("weight_decay", "must be a finite number, 0 or more (0 turns it off)")
    for field in ("val_fraction", "test_fraction"):
        value = getattr(cfg, field)
        if not _finite_number(value) or not 0 < value < 1:
            raise fail(field, "must be a fraction between 0 and 1, e.g. 0.1")
    if cfg.val_fraction + cfg.test_fraction >= 0.9:
        raise fail("test_fraction", f"with --val-fraction {cfg.val_fraction} it leaves "
                   f"{1 - cfg.val_fraction - cfg.test_fraction:.0%} of the data for training; keep the "
                   "two fractions under 0.9 together")
    if not (isinstance(cfg.hidden, tuple) and all(isinstance(h, int) and h > 0 for h in cfg.hidden)):
        raise fail("hidden", "give layer sizes as positive integers separated by commas, e.g. 128,64")
    if cfg.activation not in ACTIVATIONS:
        raise fail("activation", f"unknown activation; use one of {', '.join(sorted(ACTIVATIONS))}")
    if cfg.optimizer not in OPTIMIZERS:
        raise fail("optimizer", f"unknown optimizer; use one of {', '.join(OPTIMIZERS)}")
    check_device(cfg.device)
    if cfg.labels is not None and (cfg.data is None or not cfg.data.lower().endswith(".npy")):
        raise fail("labels", "labels in their own file go with --data FEATURES.npy")
    if cfg.out is not None:
        check_out_dir(cfg.out, resuming)


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "''"
    return str(value) if value not in ("", None) else repr(value)


def check_device(name: Any) -> None:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (and for CUDA, a usable GPU), else UsageError."""
    if not isinstance(name, str):
        raise UsageError(f"--device {name!r}: give auto, cpu, cuda or cuda:N")
    kind, _, index = name.partition(":")
    if name == "auto" or name == "cpu" or (kind == "cuda" and (not index or index.isdigit())):
        if kind == "cuda":
            reason = backend.cuda_unavailable_reason()
            if reason:
                raise UsageError(f"--device {name}: {reason}")
            count = backend.load_cupy().cuda.runtime.getDeviceCount()
            if index and int(index) >= count:
                raise UsageError(f"--device {name}: there are {count} CUDA device(s), cuda:0 to "
                                 f"cuda:{count - 1}")
        return
    lower = name.lower()
    hint = {"gpu": "cuda", "cpu": "cpu", "cuda": "cuda", "auto": "auto"}.get(lower.partition(":")[0])
    advice = f"did you mean --device {hint}?" if hint else \
        "gpugrad runs on the CPU and on NVIDIA GPUs (through CuPy): use auto, cpu, cuda or cuda:N"
    raise UsageError(f"--device {name}: unknown device; {advice}")


def check_out_dir(out: str, resuming: bool = False) -> None:
    """``--out`` must be a directory we can create or write into, and not hold another run."""
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UsageError(f"--out {out}: is a file, not a directory; give a directory for the run's files")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: the directory is not writable")
        if not resuming and os.path.exists(os.path.join(out, LAST)):
            raise UsageError(f"--out {out}: already holds a run ({LAST}); continue it with --resume {out}, "
                             "or give another --out (or delete that directory)")
        return
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot create it: {parent} is not a writable directory")


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when a GPU is usable, else the CPU."""
    if name == "auto":
        return "cpu" if backend.cuda_unavailable_reason() else "cuda"
    return name


def parse_hidden(text: str) -> tuple[int, ...]:
    """'128,64' -> (128, 64); '' -> () (a linear model)."""
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--hidden {text!r}: give layer sizes as integers separated by commas, "
                         "e.g. 128,64") from None
    if any(s <= 0 for s in sizes):
        raise UsageError(f"--hidden {text!r}: layer sizes must be positive")
    return sizes


# ----------------------------------------------------------------------------- data
@dataclass
class LabelledData:
    """A labelled data set ready to split: X float32 (n, features), y int64 in 0..k-1."""
    name: str
    X: np.ndarray
    y: np.ndarray
    classes: np.ndarray        # the original label of each class index
    fingerprint: str           # CRC-32 of the file's arrays: the same data on resume and eval


def load_dataset(path: str | None, labels: str | None = None,
                 warn: Callable[[str], None] | None = None) -> LabelledData:
    """Read and check a data set (default: the 8x8 digits); UsageError naming ``--data`` if it is bad."""
    if path is None:
        try:
            from sklearn.datasets import load_digits  # noqa: PLC0415 - optional extra
        except ImportError:
            raise UsageError("the default data set (8x8 digits) comes with scikit-learn: pip install "
                             "'gpugrad[train]' (or pass --data FILE.npz with arrays X and y)") from None
        digits = load_digits()
        X, y, name = digits.data.astype(np.float32) / 16.0, digits.target, "digits (8x8)"
    else:
        try:
            X, y = read_arrays(path, labels)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--data {err}") from None
        name = os.path.basename(path)
    fingerprint = f"{zlib.crc32(np.ascontiguousarray(y), zlib.crc32(np.ascontiguousarray(X))):08x}"
    X, y = checked_arrays(path or name, X, y)
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise UsageError(f"--data {path or name}: all {len(y)} samples have the label {classes[0]}; a "
                         "classifier needs at least two classes")
    if not np.array_equal(classes, np.arange(len(classes))):
        shown = ", ".join(map(str, classes[:6])) + (", ..." if len(classes) > 6 else "")
        (warn or warnings.warn)(f"--data {path}: the labels are not 0..{len(classes) - 1} but {len(classes)} "
                                f"distinct values ({shown}); training on their ranks, and predictions "
                                "give the original labels back")
    return LabelledData(name, X, y.astype(np.int64), classes, fingerprint)


def checked_arrays(path: str, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if X.ndim < 2 or X.shape[0] < 2:
        raise UsageError(f"--data {path}: X must have shape (samples, features...), got {X.shape}")
    if X.dtype.kind not in "fiub":
        raise UsageError(f"--data {path}: X must be numeric, got dtype {X.dtype}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise UsageError(f"--data {path}: y must have shape ({X.shape[0]},) to match X {X.shape}, "
                         f"got {y.shape}")
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise UsageError(f"--data {path}: y must hold integer class labels, got dtype {y.dtype}"
                         + (" with fractions" if y.dtype.kind == "f" else ""))
    X = X.reshape(X.shape[0], -1).astype(np.float32)
    if not np.all(np.isfinite(X)):
        raise UsageError(f"--data {path}: X contains NaN or Inf")
    return X, y.astype(np.int64)


def split(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Seeded, stratified (train, validation, test) indices: each class is cut in the same fractions."""
    rng = np.random.default_rng([seed, 0])
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in range(int(y.max()) + 1):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        for part, chunk in zip(parts, (members[n_test + n_val:], members[n_test:n_test + n_val],
                                       members[:n_test])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def check_split(data: LabelledData, cfg: TrainConfig, parts: tuple[np.ndarray, ...]) -> None:
    """Every part non-empty and every class in the training part, or a UsageError saying what to change."""
    for name, part in zip(("training", "validation", "test"), parts):
        if len(part) == 0:
            raise UsageError(f"--data {cfg.data or data.name}: {len(data.y)} samples are too few to split "
                             f"with "
                             f"--val-fraction {cfg.val_fraction} and --test-fraction {cfg.test_fraction}: "
                             f"the {name} set would be empty; give more samples or change the fractions")
    missing = np.setdiff1d(np.arange(len(data.classes)), data.y[parts[0]])
    if len(missing):
        raise UsageError(f"--data {cfg.data or data.name}: class {data.classes[missing[0]]} has too few "
                         "samples to be in "
                         "the training set as well; give more samples of it or lower the fractions")


# ----------------------------------------------------------------------------- the run
def make_optimizer(cfg: TrainConfig, params: list) -> optim.Optimizer:
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def evaluate(model: nn.Module, X: Tensor, y: Tensor, chunk: int = 8192) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on X, y, without recording; two reads from the device."""
    model.eval()
    loss_sum = correct = 0.0
    with no_grad():
        for start in range(0, y.shape[0], chunk):
            logits = model(X[start:start + chunk])
            yb = y[start:start + chunk]
            loss_sum = loss_sum + nn.functional.cross_entropy(logits, yb, reduction="sum")
            correct = correct + (logits.argmax(axis=1) == yb).sum()
    model.train()
    n = max(y.shape[0], 1)
    return float(loss_sum) / n, int(correct) / n


class _Interrupt:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = self.forced = False
        self.previous: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class _Bar:
    """One progress bar for the whole run (running loss, last validation accuracy), else a line per epoch."""

    REFRESH_S = 0.5            # the running loss is read from the device at most this often

    def __init__(self, run: _Run, log: Callable[[str], None]) -> None:
        self.run, self.log, self.bar, self.shown = run, log, None, 0.0
        if run.cfg.progress:
            try:
                from tqdm import tqdm  # noqa: PLC0415 - optional extra
            except ImportError:
                return
            self.bar = tqdm(total=run.cfg.epochs * run.batches, initial=run.epoch * run.batches + run.batch,
                            desc=run.describe(), file=sys.stderr, dynamic_ncols=True, unit="step",
                            disable=None)       # None: off when stderr is not a terminal
            if self.bar.disable:
                self.bar = None

    def step(self) -> None:
        if self.bar is None:
            return
        self.bar.update()
        now = time.monotonic()
        if now - self.shown >= self.REFRESH_S:
            self.shown = now
            self.bar.set_postfix(self.run.postfix(), refresh=False)

    def epoch(self, line: str) -> None:
        if self.bar is None:
            self.log(line)
        else:
            self.bar.set_description(self.run.describe(), refresh=False)
            self.bar.set_postfix(self.run.postfix())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Run:
    """A run's whole state: what a checkpoint holds, and the loop that advances it."""

    def __init__(self, cfg: TrainConfig, data: LabelledData, log: Callable[[str], None]) -> None:
        self.cfg, self.data, self.log = cfg, data, log
        self.device = resolve_device(cfg.device)
        parts = split(data.y, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        check_split(data, cfg, parts)
        train_rows = data.X[parts[0]]
        self.mean, self.std = train_rows.mean(axis=0), train_rows.std(axis=0) + 1e-6
        self.sets = [(tensor((data.X[p] - self.mean) / self.std, device=self.device),
                      tensor(data.y[p], device=self.device)) for p in parts]
        manual_seed(cfg.seed)
        self.model = build_model(cfg, data.X.shape[1], len(data.classes)).to(self.device)
        self.optimizer = make_optimizer(cfg, list(self.model.parameters()))
        self.order = np.random.default_rng([cfg.seed, 1])        # the batch order: its own stream
        self.batches = -(-len(parts[0]) // cfg.batch_size)
        self.epoch = self.batch = 0                                  # epochs done; batches done in this one
        self.epoch_order_state = self.order.bit_generator.state      # the epoch in progress draws from it
        self.sums = self._zero_sums()                                 # this epoch's loss sum, correct count
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY}
        self.best = {"epoch": 0, "val_accuracy": 0.0, "val_loss": math.inf}
        self.best_weights: dict[str, Tensor] | None = None
        self._train_step: Callable | None = None                      # made at the first step
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.seconds = 0.0                                            # of the sessions before this one
        self.resumed_at = time.perf_counter()                         # when this session started

    def _zero_sums(self) -> list[Tensor]:
        return [tensor(0.0, dtype="float64", device=self.device), tensor(0, device=self.device)]

    def describe(self) -> str:
        return f"epoch {min(self.epoch + 1, self.cfg.epochs)}/{self.cfg.epochs}"

    def postfix(self) -> dict[str, str]:
        """The bar's figures; the running loss is one read from the device."""
        seen = min(self.batch * self.cfg.batch_size, len(self.sets[0][1]))
        if seen:
            shown = {"loss": f"{float(self.sums[0]) / seen:.4f}"}        # this epoch's, so far
        else:
            shown = {"loss": f"{self.history['train_loss'][-1]:.4f}" if self.history["train_loss"] else "-"}
        if self.history["val_accuracy"]:
            shown["val_acc"] = f"{self.history['val_accuracy'][-1]:.2%}"
        return shown

    # ---- the loop
    def fit(self, interrupt: _Interrupt) -> None:
        X, y = self.sets[0]
        n, size = y.shape[0], self.cfg.batch_size
        bar = _Bar(self, self.log)
        try:
            while self.epoch < self.cfg.epochs:
                self.order.bit_generator.state = self.epoch_order_state   # (a no-op unless resumed)
                order = tensor(self.order.permutation(n), device=self.device)
                for b in range(self.batch, self.batches):
                    rows = order[b * size:(b + 1) * size]
                    self._step(X[rows], y[rows])
                    self.batch = b + 1
                    bar.step()
                    if interrupt.requested and self.batch < self.batches:
                        raise KeyboardInterrupt
                bar.epoch(self._end_epoch())
                if interrupt.requested and self.epoch < self.cfg.epochs:
                    raise KeyboardInterrupt
        finally:
            bar.close()

    def _step(self, xb: Tensor, yb: Tensor) -> None:
        if self._train_step is None:                        # --jit: traced once per batch shape, replayed
            self._train_step = jit(self._eager_step) if self.cfg.jit else self._eager_step
        loss, correct = self._train_step(xb, yb)
        with no_grad():                                     # accumulated on the device: no read per batch
            self.sums[0] = self.sums[0] + loss.astype("float64") * yb.shape[0]
            self.sums[1] = self.sums[1] + correct

    def _eager_step(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer step on a batch: its loss and its count of correct predictions."""
        logits = self.model(xb)
        loss = nn.functional.cross_entropy(logits, yb)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.argmax(axis=1) == yb).sum()

    def _end_epoch(self) -> str:
        n = self.sets[0][1].shape[0]
        train_loss, train_acc = float(self.sums[0]) / n, int(self.sums[1]) / n
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged: the loss is {train_loss} in epoch {self.epoch + 1}; lower --lr (it is "
                f"{self.cfg.lr})" + (f"; {self.cfg.out} keeps the checkpoints of epoch {self.epoch}"
                                     if self.cfg.out and self.epoch else ""))
        val_loss, val_acc = evaluate(self.model, *self.sets[1])
        for key, value in zip(HISTORY, (train_loss, train_acc, val_loss, val_acc)):
            self.history[key].append(value)
        self.epoch, self.batch = self.epoch + 1, 0
        self.sums = self._zero_sums()
        self.epoch_order_state = self.order.bit_generator.state    # the next epoch draws from here
        if val_loss < self.best["val_loss"]:             # the criterion of Keras's and Lightning's defaults
            self.best = {"epoch": self.epoch, "val_accuracy": val_acc, "val_loss": val_loss}
            self.best_weights = {k: Tensor._wrap(v.data.copy()) for k, v in self.model.state_dict().items()}
            if self.cfg.out:
                save(self.weights_checkpoint(self.best_weights), os.path.join(self.cfg.out, BEST))
        self.save_last()
        return (f"epoch {self.epoch}/{self.cfg.epochs}: loss {train_loss:.4f}, accuracy {train_acc:.2%}, "
                f"validation accuracy {val_acc:.2%}")

    # ---- checkpoints
    def weights_checkpoint(self, weights: dict[str, Any]) -> dict[str, Any]:
        """What eval and predict need: the config, the weights, the input scaling, the labels."""
        return {"gpugrad_train": CHECKPOINT_FORMAT, "version": __version__, "config": config_dict(self.cfg),
                "model": weights, "input_mean": self.mean, "input_std": self.std,
                "classes": self.data.classes, "data_fingerprint": self.data.fingerprint,
                "best": dict(self.best)}

    def save_last(self) -> None:
        if not self.cfg.out:
            return
        state = self.weights_checkpoint(self.model.state_dict())
        state.update(
            optimizer=self.optimizer.state_dict(), history=self.history, started=self.started,
            seconds=self.seconds + time.perf_counter() - self.resumed_at,
            progress={"epoch": self.epoch, "batch": self.batch, "order": self.epoch_order_state,
                      "sums": list(self.sums)},
            rng={"gpugrad": gg_generator().bit_generator.state})
        save(state, os.path.join(self.cfg.out, LAST))

    def restore(self, state: dict[str, Any], run_dir: str) -> None:
        """Continue from the ``last`` checkpoint of ``run_dir``: weights, optimizer, position, generators."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        progress = state["progress"]
        self.epoch, self.batch = progress["epoch"], progress["batch"]
        self.epoch_order_state = progress["order"]
        self.sums = [s.to(self.device) for s in progress["sums"]]
        gg_generator().bit_generator.state = state["rng"]["gpugrad"]
        self.history = {k: list(state["history"][k]) for k in HISTORY}
        self.best, self.started, self.seconds = dict(state["best"]), state["started"], state["seconds"]
        if self.best["epoch"]:
            best = load(os.path.join(run_dir, BEST))
            self.best_weights = {k: v.to(self.device) for k, v in best["model"].items()}
            if self.cfg.out != run_dir:                  # the new directory gets the best weights too
                os.makedirs(self.cfg.out, exist_ok=True)
                save(best, os.path.join(self.cfg.out, BEST))

    def finish(self) -> dict[str, Any]:
        """Test the best weights once; write metrics.json and curves.png; return the metrics."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        test_loss, test_acc = evaluate(self.model, *self.sets[2])
        return {
            "gpugrad_version": __version__, "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(self.seconds + time.perf_counter() - self.resumed_at, 3),
            "data": self.data.name, "device": self.device, "device_name": device_name(self.device),
            "samples": {"train": len(self.sets[0][1]), "validation": len(self.sets[1][1]),
                        "test": len(self.sets[2][1])},
            "classes": self.data.classes.tolist(),
            "best_epoch": self.best["epoch"], "best_val_loss": self.best["val_loss"],
            "best_val_accuracy": self.best["val_accuracy"],
            "test_accuracy": test_acc, "test_loss": test_loss,
            "history": self.history, "config": config_dict(self.cfg)}


def build_model(cfg: TrainConfig, features: int, classes: int) -> nn.MLP:
    return nn.MLP([features, *cfg.hidden, classes], activation=cfg.activation)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def config_from(saved: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in known}
    values["hidden"] = tuple(values.get("hidden", DEFAULTS.hidden))
    return TrainConfig(**values)


def device_name(device: str) -> str:
    """The device's own name: the GPU's model, or the CPU's."""
    if device.startswith("cuda"):
        cp = backend.load_cupy()
        index = backend.as_device(device).index
        name = cp.cuda.runtime.getDeviceProperties(index)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


# ----------------------------------------------------------------------------- train and resume
def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one training job; returns its metrics (also written to ``cfg.out``)."""
    check_config(cfg)
    data = load_dataset(cfg.data, cfg.labels, warn=lambda m: log(f"warning: {m}"))
    run = _Run(cfg, data, log)
    return _execute(run, log)


def resume(run_dir: str, log: Callable[[str], None] = print, **changes: Any) -> dict[str, Any]:
    """Continue the run saved in ``run_dir`` exactly where it stopped (``changes``: epochs, out, ...)."""
    state = _load_run_checkpoint(run_dir)
    saved = config_from(state["config"])
    refused = sorted(set(changes) - set(RESUMABLE))
    if refused:
        parts = ", ".join(f"{flag(k)} {_shown(changes[k])} (the run has {_shown(getattr(saved, k))})"
                          for k in refused)
        raise UsageError(f"--resume {run_dir}: a resumed run keeps its settings, but {parts} "
                         "would change them; drop those options, or start a new run with another --out")
    cfg = dataclasses.replace(saved, **{"out": run_dir, **changes})
    if cfg.epochs < state["progress"]["epoch"]:
        raise UsageError(f"--epochs {cfg.epochs}: the run in {run_dir} has already trained "
                         f"{state['progress']['epoch']} epochs; give at least that many")
    check_config(cfg, resuming=True)
    data = load_dataset(cfg.data, cfg.labels, warn=lambda m: None)
    if data.fingerprint != state["data_fingerprint"]:
        raise UsageError(f"--resume {run_dir}: the data ({cfg.data or data.name}) is not the data the run "
                         "was trained on (its checksum differs); give the original with --data")
    if cfg.out != run_dir:
        check_out_dir(cfg.out)
    run = _Run(cfg, data, log)
    run.restore(state, run_dir)
    log(f"resuming {run_dir} at epoch {run.epoch + 1}, batch {run.batch + 1} of {run.batches}")
    return _execute(run, log)


def _load_run_checkpoint(path: str) -> dict[str, Any]:
    file = os.path.join(path, LAST) if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise UsageError(f"--resume {path}: no {LAST} there; give the --out directory of a run")
    state = load(file)
    if not (isinstance(state, dict) and state.get("gpugrad_train") == CHECKPOINT_FORMAT
            and "progress" in state):
        raise UsageError(f"--resume {path}: {file} is not the last checkpoint of a gpugrad train run")
    return state


def _execute(run: _Run, log: Callable[[str], None]) -> dict[str, Any]:
    cfg = run.cfg
    if cfg.out:
        os.makedirs(cfg.out, exist_ok=True)
    log(f"data: {run.data.name}, {len(run.sets[0][1])} training, {len(run.sets[1][1])} validation and "
        f"{len(run.sets[2][1])} test samples, {run.data.X.shape[1]} features, {len(run.data.classes)} "
        f"classes; device: {run.device}")
    run.resumed_at = time.perf_counter()
    with _Interrupt() as interrupt:    # held to the end: a Ctrl-C after the last step lets the run finish
        try:
            run.fit(interrupt)
        except KeyboardInterrupt:
            if not cfg.out:
                log("interrupted; nothing saved (no --out)")
            elif interrupt.requested and not interrupt.forced:      # stopped between two steps
                run.save_last()
                log(f"interrupted in epoch {run.epoch + 1}, after batch {run.batch} of {run.batches}; saved "
                    f"{os.path.join(cfg.out, LAST)}. Continue with: "
                    f"python -m gpugrad train --resume {cfg.out}")
            else:
                log(f"stopped at once; {os.path.join(cfg.out, LAST)} keeps the last saved state. Continue "
                    f"with: python -m gpugrad train --resume {cfg.out}")
            raise
        metrics = run.finish()
        if cfg.out:
            write_metrics(metrics, cfg.out, log)
    log(f"best epoch {metrics['best_epoch']} of {cfg.epochs} (lowest validation loss "
        f"{metrics['best_val_loss']:.4f}, validation accuracy {metrics['best_val_accuracy']:.2%})")
    log(f"test accuracy: {100 * metrics['test_accuracy']:.2f}%")
    return metrics


def write_metrics(metrics: dict[str, Any], out: str, log: Callable[[str], None]) -> None:
    path = os.path.join(out, METRICS)
    with open(path + ".tmp", "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(path + ".tmp", path)
    if plot_curves(metrics, os.path.join(out, CURVES)):
        log(f"wrote {out}/{LAST}, {BEST}, {METRICS} and {CURVES}")
    else:
        log(f"wrote {out}/{LAST}, {BEST} and {METRICS} (no {CURVES}: pip install matplotlib)")


def plot_curves(metrics: dict[str, Any], path: str) -> bool:
    """Loss and accuracy per epoch as a PNG titled with the run's config; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    history, cfg = metrics["history"], metrics["config"]
    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4.4))
    panels = ((ax_loss, "loss", 1, "cross-entropy"), (ax_acc, "accuracy", 100, "accuracy (%)"))
    for ax, key, scale, label in panels:
        ax.plot(epochs, [scale * v for v in history[f"train_{key}"]], label="train")
        ax.plot(epochs, [scale * v for v in history[f"val_{key}"]], label="validation")
        ax.axvline(metrics["best_epoch"], color="grey", linestyle=":", label="best epoch")
        ax.set(xlabel="epoch", ylabel=label, title=key)
        ax.grid(alpha=0.3)
        ax.legend()
    hidden = ",".join(map(str, cfg["hidden"])) or "none"
    fig.suptitle(f"{metrics['data']}: MLP hidden {hidden}, {cfg['activation']}; {cfg['optimizer']} "
                 f"lr {cfg['lr']:g}, weight decay {cfg['weight_decay']:g}, batch {cfg['batch_size']}, "
                 f"seed {cfg['seed']}; "
                 f"test accuracy {metrics['test_accuracy']:.2%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


__all__ = ["TrainConfig", "UsageError", "train", "resume", "check_config", "load_dataset", "split",
           "evaluate", "plot_curves", "parse_hidden"]
