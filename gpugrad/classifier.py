"""A trained run's model, ready to use: ``load_classifier``, and the ``gpugrad eval`` / ``predict`` jobs.

A checkpoint written by ``gpugrad train`` holds the run's config, so the model is rebuilt
from the file alone: ``clf = load_classifier("runs/digits")`` then ``clf.predict(X)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import nn
from .creation import tensor
from .data import read_arrays
from .engine import no_grad
from .serialization import load
from .train import (
    BEST,
    CHECKPOINT_FORMAT,
    LAST,
    TrainConfig,
    UsageError,
    build_model,
    check_device,
    checked_arrays,
    config_from,
    load_dataset,
    resolve_device,
    split,
)


@dataclass
class Classifier:
    """A trained model with its input scaling and labels: ``load_classifier("runs/x").predict(X)``."""
    model: nn.Module
    mean: np.ndarray
    std: np.ndarray
    classes: np.ndarray
    config: TrainConfig
    fingerprint: str
    device: str = "cpu"

    def logits(self, X: Any, chunk: int = 8192) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        if X.shape[1] != self.mean.shape[0]:
            raise ValueError(f"predict: the model takes {self.mean.shape[0]} features per sample, the data "
                             f"has {X.shape[1]}")
        self.model.eval()
        with no_grad():
            out = [self.model(tensor((X[i:i + chunk] - self.mean) / self.std, device=self.device)).numpy()
                   for i in range(0, len(X), chunk)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits), one row per sample."""
        z = self.logits(X)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The predicted label of each sample (in the labels the model was trained on)."""
        return self.classes[self.logits(X).argmax(axis=1)]


def load_classifier(path: str, device: str = "cpu") -> Classifier:
    """The model of a run directory (its best weights) or of one checkpoint file, ready to predict."""
    file = path
    if os.path.isdir(path):
        file = next((os.path.join(path, f) for f in (BEST, LAST) if os.path.exists(os.path.join(path, f))),
                    None)
        if file is None:
            raise UsageError(f"--checkpoint {path}: no {BEST} or {LAST} in that directory; give the --out "
                             "directory of a gpugrad train run, or a checkpoint file")
    elif not os.path.exists(path):
        raise UsageError(f"--checkpoint {path}: no such file or directory")
    state = load(file)
    if not (isinstance(state, dict) and state.get("gpugrad_train") == CHECKPOINT_FORMAT):
        raise UsageError(f"--checkpoint {path}: {file} is not a gpugrad train checkpoint (it has no config "
                         "to rebuild the model from)")
    cfg = config_from(state["config"])
    device = resolve_device(device)
    model = build_model(cfg, state["input_mean"].shape[0], len(state["classes"])).to(device)
    model.load_state_dict(state["model"])
    return Classifier(model, state["input_mean"], state["input_std"], state["classes"], cfg,
                      state["data_fingerprint"], device)


def _labels_as_indices(clf: Classifier, y: np.ndarray, where: str) -> np.ndarray:
    index = np.searchsorted(clf.classes, y)
    index = np.minimum(index, len(clf.classes) - 1)
    unknown = clf.classes[index] != y
    if unknown.any():
        raise UsageError(f"--data {where}: label {y[unknown][0]} is not one the model was trained on "
                         f"({', '.join(map(str, clf.classes[:10]))})")
    return index


def evaluate_checkpoint(path: str, data: str | None = None, labels: str | None = None,
                        device: str = "auto", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Loss and accuracy of a run's best model: on its own test set, or on all of ``data``."""
    check_device(device)
    clf = load_classifier(path, resolve_device(device))
    if data is None:                        # the run's own test split, rebuilt from its config
        cfg = clf.config
        dataset = load_dataset(cfg.data, cfg.labels, warn=lambda m: None)
        if dataset.fingerprint != clf.fingerprint:
            raise UsageError(f"--checkpoint {path}: the run's data ({cfg.data or dataset.name}) changed "
                             "since "
                             "training; give a labelled file with --data to evaluate on")
        rows = split(dataset.y, cfg.val_fraction, cfg.test_fraction, cfg.seed)[2]
        X, y, name = dataset.X[rows], dataset.y[rows], f"{dataset.name} (the run's test set)"
    else:
        try:
            X, raw = read_arrays(data, labels)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--data {err}") from None
        X, raw = checked_arrays(data, X, raw)
        X, y, name = X, _labels_as_indices(clf, raw, data), os.path.basename(data)
    logits = clf.logits(X)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    result = {"data": name, "samples": len(y), "loss": float(-log_probs[np.arange(len(y)), y].mean()),
              "accuracy": float((logits.argmax(axis=1) == y).mean())}
    log(f"{name}: {len(y)} samples, loss {result['loss']:.4f}")
    log(f"{'test accuracy' if data is None else 'accuracy'}: {100 * result['accuracy']:.2f}%")
    return result


def predict_file(path: str, data: str, out: str, device: str = "auto",
                 log: Callable[[str], None] = print) -> np.ndarray:
    """Write the predicted labels and class probabilities of every sample in ``data`` to ``out`` (.npz)."""
    check_device(device)
    out_dir = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out) or not os.path.isdir(out_dir):
        raise UsageError(f"--out {out}: give a file name in an existing directory, e.g. preds.npz")
    clf = load_classifier(path, resolve_device(device))
    try:
        X, _ = read_arrays(data, need_labels=False)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"--data {err}") from None
    X = X.reshape(len(X), -1) if X.ndim > 1 else X
    features = clf.mean.shape[0]
    if data.lower().endswith(".csv") and X.shape[1] == features + 1:
        log(f"note: {data} has {features + 1} columns and the model takes {features}: the last is taken "
            "as the label and ignored")
        X = X[:, :-1]
    if X.ndim != 2 or X.shape[1] != features or X.dtype.kind not in "fiub" or not np.isfinite(X).all():
        raise UsageError(f"--data {data}: the model takes finite numbers, {features} features per sample; "
                         f"the file has shape {X.shape}, dtype {X.dtype}")
    probabilities = clf.predict_proba(X)
    predicted = clf.classes[probabilities.argmax(axis=1)]
    tmp = f"{out}.tmp"
    with open(tmp, "wb") as f:          # a file object: numpy.savez would add '.npz' to a name
        np.savez(f, labels=predicted, probabilities=probabilities.astype(np.float32), classes=clf.classes)
    os.replace(tmp, out)
    log(f"wrote {out}: labels ({len(predicted)},) and probabilities {probabilities.shape}")
    return predicted


__all__ = ["Classifier", "load_classifier", "evaluate_checkpoint", "predict_file"]
