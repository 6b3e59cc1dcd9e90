"""Datasets and batching: Dataset, TensorDataset, Subset, random_split, DataLoader, DistributedSampler;
read_arrays."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import backend
from .random import generator as _gg_generator
from .tensor import Tensor


class Dataset:
    """A map-style dataset: ``len(ds)`` samples, ``ds[i]`` is one sample (e.g. a tuple of Tensors).

    A subclass may also define ``__getitems__(indices)`` returning a whole batch (a tuple
    of batched Tensors); DataLoader then calls it once per batch instead of stacking samples.
    """

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")


class TensorDataset(Dataset):
    """Samples are rows of tensors that share their first dimension: ``ds[i] = (x[i], y[i])``."""

    _batch_by_slice = True      # __getitems__ also takes a slice (sequential batches are views, copied)

    def __init__(self, *tensors: Tensor | np.ndarray) -> None:
        if not tensors:
            raise ValueError("TensorDataset: give at least one tensor, e.g. TensorDataset(x, y)")
        converted = []
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                if not hasattr(t, "shape"):
                    raise TypeError(f"TensorDataset: argument {i} is a {type(t).__name__}; give Tensors "
                                    "(or NumPy arrays)")
                t = Tensor._wrap(t)
            if t.ndim == 0:
                raise ValueError(f"TensorDataset: argument {i} is 0-d; every tensor needs a first "
                                 "dimension that indexes the samples")
            converted.append(t)
        n = converted[0].shape[0]
        if any(t.shape[0] != n for t in converted):
            shapes = ", ".join(str(t.shape) for t in converted)
            raise ValueError(f"TensorDataset: tensors must have the same size in their first dimension "
                             f"(the number of samples), got shapes {shapes}")
        self.tensors: tuple[Tensor, ...] = tuple(converted)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"TensorDataset: index {index} is out of range for {n} samples")
        return tuple(Tensor._wrap(t.data[i, ...]) for t in self.tensors)

    def __getitems__(self, indices: Any) -> tuple[Tensor, ...]:
        """A batch: each tensor indexed by ``indices`` (an int array or a slice) in one gather."""
        out = []
        for t in self.tensors:
            idx = indices
            if isinstance(indices, np.ndarray) and backend.namespace(t.data) is not np:
                idx = backend.namespace(t.data).asarray(indices)
            batch = t.data[idx]
            out.append(Tensor._wrap(batch.copy() if isinstance(indices, slice) else batch))
        return tuple(out)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    _batch_by_slice = True

    def __init__(self, dataset: Dataset, indices: Sequence[int] | np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices: Any) -> Any:
        mapped = self.indices[indices]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(mapped)
        return collate([self.dataset[int(i)] for i in mapped])


def random_split(dataset: Dataset, lengths: Sequence[int | float], seed: int | None = None) -> list[Subset]:
    """Split into non-overlapping random subsets of the given lengths (or fractions summing to 1)."""
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0):
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):             # leftovers go round-robin, as in PyTorch
            counts[i % len(counts)] += 1
        lengths = counts
    if any(not isinstance(x, numbers.Integral) or x < 0 for x in lengths) or sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} must be non-negative ints summing to the "
                         f"dataset's size {n}, or fractions summing to 1")
    rng = np.random.default_rng(seed if seed is not None else _draw_seed())
    perm = rng.permutation(n)
    bounds = np.cumsum([0, *lengths])
    return [Subset(dataset, perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def collate(samples: list[Any]) -> Any:
    """Stack a list of samples into one batch, keeping their structure (tuple, list, dict, tensor)."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in samples):
            raise ValueError(f"DataLoader: samples in a batch have different lengths: "
                             f"{sorted({len(s) for s in samples})}")
        fields = [collate([s[i] for s in samples]) for i in range(len(first))]
        return fields if isinstance(first, list) else tuple(fields)
    if isinstance(first, dict):
        return {k: collate([s[k] for s in samples]) for k in first}
    if isinstance(first, Tensor) or hasattr(first, "shape"):
        arrays = [s.data if isinstance(s, Tensor) else s for s in samples]
        shapes = {tuple(a.shape) for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"DataLoader: cannot stack samples of different shapes {sorted(shapes)}; "
                             "pad them to one shape in the dataset")
        xp = backend.namespace(arrays[0])
        return Tensor._wrap(xp.stack(arrays))
    if isinstance(first, (numbers.Number, np.generic)):
        return Tensor(list(samples))
    raise TypeError(f"DataLoader: cannot batch samples of type {type(first).__name__}; a sample should be "
                    "a Tensor, array, number, or a tuple/list/dict of those")


def _draw_seed() -> int:
    """A seed drawn from gpugrad's generator, so gg.manual_seed makes shuffling repeat."""
    return int(_gg_generator().integers(2**63))


class DataLoader:
    """Iterate over ``dataset`` in batches: each batch has the structure of a sample, with Tensors stacked."""

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 seed: int | None = None, device: Any = None, sampler: Any = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True cannot be combined; the sampler decides "
                             "the order (DistributedSampler(..., shuffle=True) shuffles)")
        if sampler is not None and not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
            raise TypeError(f"DataLoader: sampler must be an iterable of indices with a length, got "
                            f"{type(sampler).__name__}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.device = backend.as_device(device) if device is not None else None
        self.sampler = sampler      # yields the sample indices, in order (e.g. a DistributedSampler)
        # with a seed: one generator for the loader's life, a new permutation each epoch
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _num_samples(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def _order(self) -> np.ndarray | None:
        """This epoch's sample order (None: sequential)."""
        if self.sampler is not None:
            return np.fromiter(self.sampler, dtype=np.int64)
        if not self.shuffle:
            return None
        rng = self._rng if self._rng is not None else np.random.default_rng(_draw_seed())
        return rng.permutation(len(self.dataset))

    def __iter__(self) -> Iterator[Any]:
        order = self._order()
        n = self._num_samples()
        fetch_batch = getattr(self.dataset, "__getitems__", None)
        by_slice = fetch_batch is not None and getattr(self.dataset, "_batch_by_slice", False)
        for b in range(len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is not None:
                indices: Any = order[start:stop]
            elif by_slice:
                indices = slice(start, stop)
            else:
                indices = np.arange(start, stop)
            if fetch_batch is not None:
                batch = fetch_batch(indices)
            else:
                batch = collate([self.dataset[int(i)] for i in indices])
            yield self._to_device(batch) if self.device is not None else batch

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, Tensor):
            return Tensor._wrap(backend.to_device(batch.data, self.device))
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._to_device(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch


class DistributedSampler:
    """This rank's share of ``dataset``'s indices: rank r takes every num_replicas-th one from r.

    As PyTorch's: ``num_replicas`` and ``rank`` default to the process group's; with
    ``shuffle`` the order is a permutation seeded by ``seed + epoch`` (call ``set_epoch`` each
    epoch; every rank must use the same seed); the uneven tail is padded by repeating the
    first indices (every rank gets ``ceil(n / num_replicas)``), or with ``drop_last`` dropped
    (``floor(n / num_replicas)`` each). The permutation comes from NumPy, so it differs from
    PyTorch's.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from . import distributed  # noqa: PLC0415 - only when the process group decides

            num_replicas = distributed.get_world_size() if num_replicas is None else num_replicas
            rank = distributed.get_rank() if rank is None else rank
        for name, value in (("num_replicas", num_replicas), ("rank", rank), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"DistributedSampler: {name} must be an int, got {value!r}")
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        self.num_samples = n // self.num_replicas if self.drop_last else -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s permutation from now on (with shuffle): call it before each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            indices = np.arange(n)
        if self.total_size > n:                                 # pad: repeat from the start
            indices = np.resize(indices, self.total_size)
        else:                                                   # drop the tail
            indices = indices[:self.total_size]
        return iter(indices[self.rank::self.num_replicas].tolist())


# ---------------------------------------------------------------------------------------------- files
def read_arrays(path: str, labels: str | None = None, *, need_labels: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Features X and labels y from a file: ``.npz`` (arrays X and y), ``.npy`` (X; y from ``labels``,
    another ``.npy``) or ``.csv`` (numbers, an optional header row; the last column is the label).

    Nothing is unpickled. Without ``need_labels`` y may be absent (None); a CSV then holds
    features only. Errors (ValueError, FileNotFoundError) start with the path.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: " + ("not a file" if os.path.exists(path) else "no such file"))
    kind = os.path.splitext(path)[1].lower()
    if labels is not None and kind != ".npy":
        raise ValueError(f"{labels}: separate labels go with a .npy features file; {path} is not one")
    if kind == ".npz":
        X, y = _read_npz(path)
    elif kind == ".npy":
        X = _read_npy(path)
        y = _read_npy(labels) if labels is not None else None
    elif kind == ".csv":
        table = _read_csv(path, 2 if need_labels else 1)
        X, y = (table[:, :-1], table[:, -1]) if need_labels else (table, None)
    else:
        raise ValueError(f"{path}: unknown file type {kind or '(no extension)'!r}; give a .npz with arrays X "
                         "and y, a .npy of features with a .npy of labels, or a .csv whose last column "
                         "is the label")
    if y is None and need_labels:
        raise ValueError(f"{path}: no labels; " + ("give them with a second .npy file" if kind == ".npy"
                                                    else "the .npz file needs an array named y"))
    return X, y


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, "rb") as f:
        start = f.read(8)
    if start[:2] != b"PK":
        raise ValueError(f"{path}: not a .npz archive (it starts with {start!r}); save one with "
                         "numpy.savez(path, X=features, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise ValueError(f"{path}: the .npz file needs arrays named X and y; it has "
                                 f"{sorted(archive.files)}")
            return archive["X"], (archive["y"] if "y" in archive.files else None)
    except (OSError, ValueError, EOFError) as err:       # a truncated zip, an object array...
        if str(err).startswith(path):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err}); save one with "
                         "numpy.savez(path, X=features, y=labels)") from None


def _read_npy(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({type(err).__name__}: {err}); save one "
                         "with numpy.save(path, array)") from None


def _read_csv(path: str, min_columns: int) -> np.ndarray:
    """A numeric table; a first row that is not all numbers is taken as the header and skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    try:
        [float(field) for field in first.split(",")]
        header = 0
    except ValueError:
        header = 1
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=header, ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: not a table of numbers separated by commas ({err})") from None
    if table.shape[1] < min_columns:
        raise ValueError(f"{path}: needs at least two columns (features, then the label), has "
                         f"{table.shape[1]}")
    return table
