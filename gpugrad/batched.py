"""Batched tensors: the values a vmapped function sees, and the transforms' per-thread state.

Inside ``gg.vmap(f)``, ``f`` runs once for the whole batch on ``BatchedTensor``s. Each is the
*logical* value of one batch entry: its shape, dtype and device are one entry's, and every
op on it is dispatched by the registry to the op's batching rule, which computes on the
*physical* value (``value``, the whole batch, with the batch at axis ``bdim``) and wraps the
result again. Nested vmaps nest the wrapping: the value of a level-2 batched tensor may be
a level-1 one. Levels are numbered in creation order, so an inner vmap has a higher level.

A batched tensor is a ``Tensor`` (its methods are Tensor's: they call ops), and its own
``requires_grad`` and node are those of the logical value, for a ``grad`` taken inside the
vmap; the physical value carries its own, for a ``grad`` taken outside. Its ``data`` is a
``LogicalArray``: shape, dtype and size only. Code that would read the values (``item()``,
``float()``, ``numpy()``, Python ``if`` on a batched tensor) gets an error that says why
(the function runs once for every entry at the same time) and what to do instead.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor


class LogicalArray:
    """The ``data`` of a batched tensor: one batch entry's shape, dtype and array module, no values."""

    __slots__ = ("shape", "dtype", "xp")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, xp: Any) -> None:
        self.shape = shape
        self.dtype = dtype
        self.xp = xp

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):               # protocol probes (__array_interface__...): not here
            raise AttributeError(name)
        raise RuntimeError(_reading(f"its array's .{name}"))

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(_reading("its values as an array"))

    def __bool__(self) -> bool:
        raise RuntimeError(_reading("its truth value"))

    def __repr__(self) -> str:
        return f"LogicalArray(shape={self.shape}, dtype={self.dtype})"

    def _refuse(self, *args: Any) -> Any:
        raise RuntimeError(_reading("its values as an array (array arithmetic, a comparison, an index)"))

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __and__ = __or__ = __invert__ = __neg__ = __getitem__ = __setitem__ = __iter__ = __len__ = _refuse
    __int__ = __float__ = __index__ = _refuse
    __hash__ = None     # type: ignore[assignment]


backend.logical_array_type = LogicalArray


def _reading(what: str) -> str:
    if not state.levels:
        return ("vmap: a batched tensor escaped the vmap that made it (it was kept after the vmapped "
                "function returned, e.g. in a global or a closure) and was used outside it; return it "
                "from the function instead")
    return (f"vmap: a function under vmap read {what} from a batched tensor; inside vmap the function "
            "runs once for the whole batch, so a batched tensor has no single value. Use gpugrad's ops "
            "(e.g. gg.where instead of an if on a value), move the read outside the vmap, or loop in "
            "Python instead of vmap")


class BatchedTensor(Tensor):
    """One batch entry's view of a batched value (``value``, batched at axis ``bdim``) at a vmap ``level``."""

    __slots__ = ("value", "bdim", "level")

    @classmethod
    def of(cls, value: Tensor, bdim: int, level: int) -> BatchedTensor:
        """Wrap ``value`` (batched at ``bdim``) as a batched tensor of ``level``; no gradient of its own."""
        t = object.__new__(cls)
        t.value = value
        t.bdim = bdim
        t.level = level
        shape = value.shape
        t.data = LogicalArray(shape[:bdim] + shape[bdim + 1:], value.dtype, backend.namespace(value.data)
                              if type(value) is not BatchedTensor else value.data.xp)
        t._requires_grad = False
        t._grad = None
        t._node = None
        t._hooks = None
        return t

    def logical_leaf(self) -> BatchedTensor:
        """The same value as a new leaf that requires grad (what ``gg.grad`` differentiates inside vmap)."""
        leaf = BatchedTensor.of(self.value, self.bdim, self.level)
        leaf._requires_grad = True
        return leaf

    # ------------------------------------------------------------------ what differs from Tensor
    @property
    def device(self) -> backend.Device:
        return self.value.device

    @property
    def is_cuda(self) -> bool:
        return self.value.is_cuda

    def detach(self) -> BatchedTensor:
        return BatchedTensor.of(self.value.detach(), self.bdim, self.level)

    def contiguous(self) -> BatchedTensor:
        return self

    def item(self) -> Any:
        raise RuntimeError(_reading("a Python number (item())"))

    def numpy(self) -> np.ndarray:
        raise RuntimeError(_reading("a NumPy array (numpy())"))

    def tolist(self) -> Any:
        raise RuntimeError(_reading("a list (tolist())"))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        raise RuntimeError(_reading("a NumPy array"))

    def __bool__(self) -> bool:
        raise RuntimeError(_reading("a truth value (an if or while on a tensor)"))

    def __float__(self) -> float:
        raise RuntimeError(_reading("a Python float"))

    def __int__(self) -> int:
        raise RuntimeError(_reading("a Python int"))

    def __index__(self) -> int:
        raise RuntimeError(_reading("a Python index"))

    def backward(self, gradient: Any = None, retain_graph: bool | None = None,
                 create_graph: bool = False) -> None:
        raise RuntimeError("backward: called on a batched tensor inside vmap; inside vmap take gradients "
                           "with gg.grad (or gg.vjp), e.g. gg.vmap(gg.grad(loss))(xs), or call backward() "
                           "on vmap's result outside it")

    def _check_inplace(self, name: str) -> None:
        raise RuntimeError(f"{name}: in-place change of a batched tensor inside vmap; write it without "
                           "the in-place form (y = y + 1 instead of y += 1 or y.add_(1), gg.where for masked "
                           "writes)")

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check_inplace("__setitem__")

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(_reading("a DLPack capsule"))

    def __repr__(self) -> str:
        return f"BatchedTensor(level={self.level}, bdim={self.bdim}, value={self.value!r})"


def is_batched(x: Any) -> bool:
    return type(x) is BatchedTensor


def all_entries(x: Any) -> Any:
    """The array of every batch entry's values of ``x`` (the whole batch of a batched tensor), for
    checks that hold for each entry exactly when they hold for all (index ranges, value domains)."""
    while type(x) is BatchedTensor:
        x = x.value
    return x.data if isinstance(x, Tensor) else x


# ----------------------------------------------------------------------------- per-thread state


class Level:
    """One running vmap: its level, batch size and policies."""

    __slots__ = ("level", "size", "randomness", "fallback", "quiet")

    def __init__(self, level: int, size: int, randomness: str, fallback: str | None) -> None:
        self.level = level
        self.size = size
        self.randomness = randomness
        self.fallback = fallback
        self.quiet = 0          # > 0 while a batching rule of this level runs: its ops are not recorded


class _State(threading.local):
    def __init__(self) -> None:
        self.levels: dict[int, Level] = {}      # the vmaps running in this thread, by level
        self.depth = 0                          # how many grad-like transforms are evaluating f


state = _State()
_next_level = itertools.count(1).__next__


def current(level: int, op_name: str) -> Level:
    """The running vmap of ``level``; a RuntimeError if the batched tensor outlived it."""
    found = state.levels.get(level)
    if found is None:
        raise RuntimeError(f"{op_name}: a batched tensor escaped the vmap that made it (it was kept after "
                           "the vmapped function returned, e.g. in a global or a closure); return it from "
                           "the function instead")
    return found


def innermost() -> Level | None:
    """The innermost vmap running in this thread, or None outside vmap."""
    levels = state.levels
    return levels[max(levels)] if levels else None
