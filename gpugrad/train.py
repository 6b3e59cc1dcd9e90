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

Under a launcher of several processes (``gpugrad train --nproc N`` starts one), every process
runs the job (``World``): each step's batch is shared among them through DDP, so the training
does not depend on their number and any number may resume any run; rank 0 alone logs and writes.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np

from . import __version__, backend, nn, optim
from .creation import tensor
from .data import read_arrays
from .distributed import api, env, faults
from .distributed.launch import TERMINAL_VARIABLE
from .distributed.mpi import INSTALL_HINT, load_mpi
from .distributed.training import AnyRankFlag, reduce_metrics
from .engine import no_grad
from .jit import jit
from .nn.layers import ACTIVATIONS
from .nn.parallel import DistributedDataParallel
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


T = TypeVar("T")


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


def check_config(cfg: TrainConfig, resuming: bool = False, check_out: bool = True) -> None:
    """Raise UsageError naming the flag, the value and what to do, for the first bad option
    (``check_out``: including --out, which only the process that writes needs)."""
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
    if cfg.out is not None and check_out:
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


# ----------------------------------------------------------------------------- processes
@dataclass
class World:
    """This process's place in a training job: rank 0 of 1 alone, else what the launcher
    (mpiexec, srun) says. With several processes it joins the process group for the job."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False           # this job made the process group (and destroys it at the end)

    @classmethod
    def from_launcher(cls) -> World:
        try:
            launch = env.from_environment()
        except RuntimeError as err:
            raise UsageError(str(err)) from None
        if api.is_initialized():                                        # the caller's process group
            return cls(api.get_rank(), api.get_world_size(), launch.local_rank)
        if launch.world_size > 1 and not api.is_available():
            raise UsageError(f"{launch.launcher} started {launch.world_size} processes, and they need mpi4py "
                             f"to work together: {INSTALL_HINT}")
        return cls(launch.rank, launch.world_size, launch.local_rank)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agreed(self, prepare: Callable[[], T]) -> T:
        """``prepare()`` on every rank; a UsageError on any rank is raised on every rank, so none waits."""
        try:
            result, error = prepare(), None
        except UsageError as err:
            if self.size == 1:
                raise
            result, error = None, str(err)
        if self.size > 1:
            errors = load_mpi().COMM_WORLD.allgather(error)     # before the process group: plain MPI
            failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
            if failed:
                rank, message = failed[0]
                everywhere = len(failed) == self.size and all(e == message for _, e in failed)
                raise UsageError(message if everywhere else f"rank {rank} of {self.size}: {message}")
        return result  # type: ignore[return-value]

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """The job's body: an error that every rank raises at the same point passes; any other one, on
        any rank, prints its traceback and ends the whole job, so no rank waits for a failed one."""
        try:
            yield
        except (UsageError, FloatingPointError, Stopped):
            raise
        except BaseException as err:
            if self.size > 1:
                faults.report_and_abort(self.rank, self.size, err, self._abort)
            raise
        finally:
            self.close()

    def connect(self, device: str) -> None:
        """Join the job's process group: nccl for GPUs, mpi for the CPU (nothing to do alone)."""
        if self.size > 1 and not api.is_initialized():
            cuda = device.startswith("cuda")
            api.init_process_group("nccl" if cuda else "mpi",
                                   device_id=backend.as_device(device).index if cuda else None)
            self.owns_group = True

    def close(self) -> None:
        if self.owns_group:
            self.owns_group = False
            api.destroy_process_group()

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n rows (the shares differ by one at most)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def summed(self, tensors: list[Tensor]) -> list[Tensor]:
        """Copies of ``tensors`` summed over the ranks (the tensors themselves are unchanged)."""
        if self.size == 1:
            return list(tensors)
        totals = [t.clone() for t in tensors]
        for t in totals:
            api.all_reduce(t)
        return totals

    def barrier(self) -> None:
        if self.size > 1:
            api.barrier()

    def _abort(self) -> None:
        if api.is_initialized():
            api.default_group("abort").abort()
        load_mpi().COMM_WORLD.Abort(1)


class Stopped(KeyboardInterrupt):
    """Every rank stopped at the same step, for a Ctrl-C (or SIGUSR1) on one of them; the run is saved."""


def check_world(cfg: TrainConfig, world: World) -> str:
    """This rank's device (``cuda:<local rank>`` on GPUs), after checking that the run can be shared
    among ``world.size`` processes."""
    device = resolve_device(cfg.device)
    if world.size == 1:
        return device
    if cfg.jit:     # (gg.jit does not trace DistributedDataParallel's all-reduces)
        raise UsageError(f"--jit: traces the step of one process; leave --jit out to train with "
                         f"{world.size} processes")
    if cfg.batch_size < world.size:
        raise UsageError(f"--batch-size {cfg.batch_size}: each step's batch is shared among the {world.size} "
                         f"processes; give at least {world.size}")
    if not device.startswith("cuda"):
        return device
    if ":" in cfg.device:
        raise UsageError(f"--device {cfg.device}: names one GPU, and each of the {world.size} processes "
                         "needs its own; give --device cuda (the k-th process of a machine takes cuda:k) "
                         "or cpu")
    count = backend.load_cupy().cuda.runtime.getDeviceCount()
    if world.local_rank >= count:
        raise UsageError(f"--device {cfg.device}: each process needs its own GPU, and this machine has "
                         f"{count}; start at most {count} process(es) per machine, or give --device cpu")
    return f"cuda:{world.local_rank}"


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


# what asks a run to stop after the current step: Ctrl-C, and SIGUSR1 (which mpiexec forwards to every rank)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGUSR1") if hasattr(signal, name))


class _Interrupt:
    """Ctrl-C (SIGINT) or SIGUSR1 asks the loop to stop after the current step; a second one stops at
    once."""

    def __init__(self) -> None:
        self.requested = self.forced = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class _Bar:
    """One progress bar for the whole run (running loss, last validation accuracy), else a line per epoch."""

    REFRESH_S = 0.5            # the running loss is read from the device at most this often

    def __init__(self, run: _Run, log: Callable[[str], None]) -> None:
        self.run, self.log, self.bar, self.shown = run, log, None, 0.0
        if run.cfg.progress and run.world.main:
            try:
                from tqdm import tqdm  # noqa: PLC0415 - optional extra
            except ImportError:
                return
            # None: off when stderr is not a terminal; on when `gpugrad train --nproc` ran from one
            # (under mpiexec, rank 0's stderr is a pipe to that terminal)
            self.bar = tqdm(total=run.cfg.epochs * run.batches, initial=run.epoch * run.batches + run.batch,
                            desc=run.describe(), file=sys.stderr, dynamic_ncols=True, unit="step",
                            disable=False if os.environ.get(TERMINAL_VARIABLE) == "1" else None)
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
    """A run's whole state: what a checkpoint holds, and the loop that advances it.

    With several processes every rank holds the whole run; each step's batch (the same rows of
    the same permutation as in a run of one process) is shared among them, and the figures are
    summed over them: rank 0 alone writes and logs.
    """

    def __init__(self, cfg: TrainConfig, data: LabelledData, log: Callable[[str], None],
                 world: World | None = None) -> None:
        self.cfg, self.data, self.log = cfg, data, log
        self.world = World() if world is None else world
        self.device = check_world(cfg, self.world)
        parts = split(data.y, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        check_split(data, cfg, parts)
        train_rows = data.X[parts[0]]
        self.mean, self.std = train_rows.mean(axis=0), train_rows.std(axis=0) + 1e-6
        self.sets = [(tensor((data.X[p] - self.mean) / self.std, device=self.device),
                      tensor(data.y[p], device=self.device)) for p in parts]
        manual_seed(cfg.seed)
        self.model = build_model(cfg, data.X.shape[1], len(data.classes)).to(self.device)
        self.net: nn.Module = self.model                              # what training steps call (DDP)
        self.optimizer = make_optimizer(cfg, list(self.model.parameters()))
        self.order = np.random.default_rng([cfg.seed, 1])        # the batch order: its own stream
        self.batches = -(-len(parts[0]) // cfg.batch_size)
        self.epoch = self.batch = 0                                  # epochs done; batches done in this one
        self.epoch_order_state = self.order.bit_generator.state      # the epoch in progress draws from it
        self.sums = self._zero_sums()                 # this epoch's loss sum, correct count (this rank's)
        self.seen = 0                                 # the training rows in self.sums
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY}
        self.best = {"epoch": 0, "val_accuracy": 0.0, "val_loss": math.inf}
        self.best_weights: dict[str, Tensor] | None = None
        self._train_step: Callable | None = None                      # made at the first step
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.seconds = 0.0                                            # of the sessions before this one
        self.resumed_at = time.perf_counter()                         # when this session started

    def _zero_sums(self) -> list[Tensor]:
        return [tensor(0.0, dtype="float64", device=self.device), tensor(0, device=self.device)]

    def distribute(self) -> None:
        """With several processes: join the process group and train through DistributedDataParallel."""
        if self.world.size > 1:
            self.world.connect(self.device)
            self.net = DistributedDataParallel(self.model)

    def describe(self) -> str:
        return f"epoch {min(self.epoch + 1, self.cfg.epochs)}/{self.cfg.epochs}"

    def postfix(self) -> dict[str, str]:
        """The bar's figures; the running loss (rank 0's rows) is one read from the device."""
        if self.seen:
            shown = {"loss": f"{float(self.sums[0]) / self.seen:.4f}"}        # this epoch's, so far
        else:
            shown = {"loss": f"{self.history['train_loss'][-1]:.4f}" if self.history["train_loss"] else "-"}
        if self.history["val_accuracy"]:
            shown["val_acc"] = f"{self.history['val_accuracy'][-1]:.2%}"
        return shown

    # ---- the loop
    def fit(self, interrupt: _Interrupt) -> None:
        X, y = self.sets[0]
        n, size = y.shape[0], self.cfg.batch_size
        rank, ranks = self.world.rank, self.world.size
        bar = _Bar(self, self.log)
        stops = AnyRankFlag()                          # a stop asked for on any rank, seen by all at once
        try:
            while self.epoch < self.cfg.epochs:
                self.order.bit_generator.state = self.epoch_order_state   # (a no-op unless resumed)
                order = tensor(self.order.permutation(n), device=self.device)
                stop = False
                for b in range(self.batch, self.batches):
                    rows = order[b * size:(b + 1) * size]
                    mine = rows[rank::ranks] if ranks > 1 else rows
                    self._step(X[mine], y[mine], rows.shape[0])
                    self.batch = b + 1
                    bar.step()
                    stop = stops.poll(interrupt.requested)       # the same answer on every rank
                    if stop and self.batch < self.batches:
                        raise Stopped
                bar.epoch(self._end_epoch())
                if stop and self.epoch < self.cfg.epochs:
                    raise Stopped
        finally:
            stops.close()
            bar.close()

    def _step(self, xb: Tensor, yb: Tensor, batch_rows: int) -> None:
        """One optimizer step on the batch of ``batch_rows`` rows, of which this rank has ``xb, yb``."""
        if self._train_step is None:                        # --jit: traced once per batch shape, replayed
            self._train_step = jit(self._eager_step) if self.cfg.jit else self._eager_step
        total, correct = self._train_step(xb, yb, batch_rows)
        with no_grad():                                     # accumulated on the device: no read per batch
            self.sums[0] = self.sums[0] + total.astype("float64")
            self.sums[1] = self.sums[1] + correct
        self.seen += yb.shape[0]

    def _eager_step(self, xb: Tensor, yb: Tensor, batch_rows: int) -> tuple[Tensor, Tensor]:
        """One optimizer step: this rank's loss sum and its count of correct predictions."""
        logits = self.net(xb)
        total = nn.functional.cross_entropy(logits, yb, reduction="sum")
        # the mean over the whole batch: DDP averages the ranks' gradients, so each rank scales its sum
        # by world size / batch rows (with one process, the batch mean)
        loss = total * (self.world.size / batch_rows)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return total.detach(), (logits.argmax(axis=1) == yb).sum()

    def _evaluate(self, X: Tensor, y: Tensor) -> tuple[float, float]:
        """(loss, accuracy) on X, y: each rank evaluates its share, the figures are combined."""
        rows = self.world.shard(y.shape[0])
        loss, accuracy = evaluate(self.model, X[rows], y[rows])
        combined = reduce_metrics({"loss": loss, "accuracy": accuracy}, weight=rows.stop - rows.start)
        return combined["loss"], combined["accuracy"]

    def _end_epoch(self) -> str:
        n = self.sets[0][1].shape[0]
        loss_sum, correct = self.world.summed(self.sums)
        train_loss, train_acc = float(loss_sum) / n, int(correct) / n
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged: the loss is {train_loss} in epoch {self.epoch + 1}; lower --lr (it is "
                f"{self.cfg.lr})" + (f"; {self.cfg.out} keeps the checkpoints of epoch {self.epoch}"
                                     if self.cfg.out and self.epoch else ""))
        val_loss, val_acc = self._evaluate(*self.sets[1])
        for key, value in zip(HISTORY, (train_loss, train_acc, val_loss, val_acc)):
            self.history[key].append(value)
        self.epoch, self.batch = self.epoch + 1, 0
        self.sums, self.seen = self._zero_sums(), 0
        self.epoch_order_state = self.order.bit_generator.state    # the next epoch draws from here
        if val_loss < self.best["val_loss"]:             # the criterion of Keras's and Lightning's defaults
            self.best = {"epoch": self.epoch, "val_accuracy": val_acc, "val_loss": val_loss}
            self.best_weights = {k: Tensor._wrap(v.data.copy()) for k, v in self.model.state_dict().items()}
            if self.cfg.out and self.world.main:
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
        """Write ``last`` (on rank 0; every rank calls it, as the epoch's sums are summed over ranks)."""
        if not self.cfg.out:
            return
        sums = self.world.summed(self.sums)
        if not self.world.main:
            return
        state = self.weights_checkpoint(self.model.state_dict())
        state.update(
            optimizer=self.optimizer.state_dict(), history=self.history, started=self.started,
            seconds=self.seconds + time.perf_counter() - self.resumed_at,
            progress={"epoch": self.epoch, "batch": self.batch, "order": self.epoch_order_state,
                      "sums": sums, "processes": self.world.size},
            rng={"gpugrad": gg_generator().bit_generator.state})
        save(state, os.path.join(self.cfg.out, LAST))

    def restore(self, state: dict[str, Any], run_dir: str) -> None:
        """Continue from the ``last`` checkpoint of ``run_dir``: weights, optimizer, position, generators.

        Every rank loads it (the batches depend on no world size, so any number of processes may
        continue any run); rank 0 takes over the epoch's sums so far.
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        progress = state["progress"]
        self.epoch, self.batch = progress["epoch"], progress["batch"]
        self.epoch_order_state = progress["order"]
        if self.world.main:
            self.sums = [s.to(self.device) for s in progress["sums"]]
            self.seen = min(self.batch * self.cfg.batch_size, len(self.sets[0][1]))
        gg_generator().bit_generator.state = state["rng"]["gpugrad"]
        self.history = {k: list(state["history"][k]) for k in HISTORY}
        self.best, self.started, self.seconds = dict(state["best"]), state["started"], state["seconds"]
        if self.best["epoch"]:
            best = load(os.path.join(run_dir, BEST))
            self.best_weights = {k: v.to(self.device) for k, v in best["model"].items()}
            if self.cfg.out != run_dir and self.world.main:   # the new directory gets the best weights too
                os.makedirs(self.cfg.out, exist_ok=True)
                save(best, os.path.join(self.cfg.out, BEST))

    def finish(self) -> dict[str, Any]:
        """Test the best weights once; return the metrics (every rank has them)."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        test_loss, test_acc = self._evaluate(*self.sets[2])
        return {
            "gpugrad_version": __version__, "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(self.seconds + time.perf_counter() - self.resumed_at, 3),
            "data": self.data.name, "device": self.device, "device_name": device_name(self.device),
            "processes": self.world.size,
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
    """Run one training job; returns its metrics (also written to ``cfg.out``).

    Under a launcher of several processes (``mpiexec -n N``) every process runs this: they train
    together, and rank 0 alone logs and writes.
    """
    world = World.from_launcher()
    log = log if world.main else _silent
    with world.guard():
        def prepare() -> _Run:
            check_config(cfg, check_out=world.main)
            check_world(cfg, world)
            data = load_dataset(cfg.data, cfg.labels, warn=lambda m: log(f"warning: {m}"))
            return _Run(cfg, data, log, world)

        return _execute(world.agreed(prepare))


def resume(run_dir: str, log: Callable[[str], None] = print, **changes: Any) -> dict[str, Any]:
    """Continue the run saved in ``run_dir`` exactly where it stopped (``changes``: epochs, out, ...),
    with any number of processes (see ``train``)."""
    world = World.from_launcher()
    log = log if world.main else _silent
    with world.guard():
        def prepare() -> tuple[_Run, int]:
            cfg, state, data = _resumable(run_dir, changes, world)
            run = _Run(cfg, data, log, world)
            run.restore(state, run_dir)
            return run, state["progress"].get("processes", 1)

        run, saved = world.agreed(prepare)
        log(f"resuming {run_dir} at epoch {run.epoch + 1}, batch {run.batch + 1} of {run.batches}"
            + (f" (saved by {saved} process{'es' * (saved > 1)}, continued by {world.size})"
               if saved != world.size else ""))
        return _execute(run)


def check_job(nproc: int, cfg: TrainConfig | None = None, resume_dir: str | None = None,
              **changes: Any) -> None:
    """The checks every one of ``nproc`` processes will make, made once, before starting them: a new
    run's ``cfg`` or the resumed ``resume_dir`` with its ``changes``; a UsageError if one fails."""
    world = World(size=nproc, local_rank=nproc - 1)       # the last process on this machine
    if resume_dir is not None:
        _resumable(resume_dir, changes, world)
        return
    if cfg is None:
        raise TypeError("check_job: give the config of a new run, or resume_dir")
    check_config(cfg)
    check_world(cfg, world)
    data = load_dataset(cfg.data, cfg.labels, warn=lambda m: None)
    check_split(data, cfg, split(data.y, cfg.val_fraction, cfg.test_fraction, cfg.seed))


def _silent(line: str) -> None:
    """The log of ranks other than 0."""


def _resumable(run_dir: str, changes: dict[str, Any], world: World) -> tuple[TrainConfig, dict, LabelledData]:
    """The config, checkpoint and data to continue ``run_dir`` with ``changes``; UsageError if it cannot."""
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
    check_config(cfg, resuming=True, check_out=world.main)
    check_world(cfg, world)
    data = load_dataset(cfg.data, cfg.labels, warn=lambda m: None)
    if data.fingerprint != state["data_fingerprint"]:
        raise UsageError(f"--resume {run_dir}: the data ({cfg.data or data.name}) is not the data the run "
                         "was trained on (its checksum differs); give the original with --data")
    if cfg.out != run_dir and world.main:
        check_out_dir(cfg.out)
    return cfg, state, data


def _load_run_checkpoint(path: str) -> dict[str, Any]:
    file = os.path.join(path, LAST) if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise UsageError(f"--resume {path}: no {LAST} there; give the --out directory of a run")
    state = load(file)
    if not (isinstance(state, dict) and state.get("gpugrad_train") == CHECKPOINT_FORMAT
            and "progress" in state):
        raise UsageError(f"--resume {path}: {file} is not the last checkpoint of a gpugrad train run")
    return state


def _execute(run: _Run) -> dict[str, Any]:
    cfg, log, world = run.cfg, run.log, run.world
    run.distribute()
    if cfg.out and world.main:
        os.makedirs(cfg.out, exist_ok=True)
    log(f"data: {run.data.name}, {len(run.sets[0][1])} training, {len(run.sets[1][1])} validation and "
        f"{len(run.sets[2][1])} test samples, {run.data.X.shape[1]} features, {len(run.data.classes)} "
        f"classes; device: {run.device}" + (f", {world.size} processes" if world.size > 1 else ""))
    run.resumed_at = time.perf_counter()
    with _Interrupt() as interrupt:    # held to the end: a Ctrl-C after the last step lets the run finish
        try:
            run.fit(interrupt)
        except KeyboardInterrupt as stop:
            if not cfg.out:
                log("interrupted; nothing saved (no --out)")
            elif isinstance(stop, Stopped):                  # every rank stopped after the same step
                run.save_last()
                log(f"interrupted in epoch {run.epoch + 1}, after batch {run.batch} of {run.batches}; saved "
                    f"{os.path.join(cfg.out, LAST)}. Continue with: "
                    f"python -m gpugrad train --resume {cfg.out}")
            else:
                log(f"stopped at once; {os.path.join(cfg.out, LAST)} keeps the last saved state. Continue "
                    f"with: python -m gpugrad train --resume {cfg.out}")
            raise
        metrics = run.finish()
        if cfg.out and world.main:
            write_metrics(metrics, cfg.out, log)
    world.barrier()                                     # rank 0's files are written when any rank returns
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
