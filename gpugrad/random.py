"""Random tensors from one seeded generator (``gg.manual_seed``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import backend, dtypes
from .creation import _finish, allocating, parse_size
from .dtypes import as_dtype
from .tensor import Tensor

_generator = np.random.default_rng()
_device_states: dict[int, Any] = {}          # GPU index -> CuPy RandomState, seeded from _generator
# gg.jit, while it traces a function: draw_hook(fn, *args) records the draw fn(*args) and returns
# its traced result (None when this thread is not tracing), so every replay draws again
draw_hook: Any = None


def manual_seed(seed: int) -> None:
    """Seed gpugrad's random number generator, so runs repeat exactly (the GPUs' draws too)."""
    global _generator
    _generator = np.random.default_rng(seed)
    _device_states.clear()
    if backend.cuda_active:                  # CuPy's own generator, for code that draws on the GPU
        backend.load_cupy().random.seed(seed)


def generator() -> np.random.Generator:
    return _generator


def uniform_on(xp: Any, shape: tuple, dtype: Any) -> Any:
    """Uniform samples in [0, 1) as an array of ``xp``: NumPy's from the host generator, CuPy's drawn
    on the current GPU (no host copy) by a generator seeded from it, so manual_seed repeats them."""
    if draw_hook is not None and (traced := draw_hook(uniform_on, xp, shape, dtype)) is not None:
        return traced
    if xp is np:
        return _generator.random(shape, dtype=dtype)
    device = xp.cuda.Device().id
    state = _device_states.get(device)
    if state is None:
        state = _device_states[device] = xp.random.RandomState(int(_generator.integers(2**63)))
    return state.random_sample(shape, dtype=dtype)


def _draw(kind: str, shape: tuple, dtype: Any) -> np.ndarray:
    if draw_hook is not None and (traced := draw_hook(_draw, kind, shape, dtype)) is not None:
        return traced
    dtype = as_dtype(dtype) or dtypes.default_float
    if dtype.kind != "f":
        raise TypeError(f"{kind}: random floats need a float dtype, got {dtype}")
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.float32
    with allocating(kind, shape, draw_dtype):
        if kind == "randn":
            arr = _generator.standard_normal(shape, dtype=draw_dtype)
        else:
            arr = _generator.random(shape, dtype=draw_dtype)
        return np.asarray(arr).astype(dtype, copy=False)


def randn(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """Standard normal samples: ``randn(2, 3)``, ``randn((2, 3))`` or ``randn(size=())``."""
    return _finish(_draw("randn", parse_size(shape, size, "randn"), dtype), device, requires_grad)


def rand(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1)."""
    return _finish(_draw("rand", parse_size(shape, size, "rand"), dtype), device, requires_grad)


def randint(low: int, high: int | None = None, size: Any = (), *, dtype: Any = None,
            device: Any = None) -> Tensor:
    """Integers drawn uniformly from [low, high) (int64 by default)."""
    if high is None:
        low, high = 0, low
    shape = parse_size((size,), None, "randint")
    with allocating("randint", shape, np.int64):
        arr = _integers(low, high, shape, as_dtype(dtype) or np.int64)
    return _finish(arr, device, False)


def _integers(low: int, high: int, shape: tuple, dtype: Any) -> np.ndarray:
    if draw_hook is not None and (traced := draw_hook(_integers, low, high, shape, dtype)) is not None:
        return traced
    return np.asarray(_generator.integers(low, high, size=shape)).astype(dtype)
