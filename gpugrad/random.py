"""Random numbers two ways: PyTorch's global generator, and JAX's functional keys.

PyTorch style (``gg.manual_seed``, ``gg.randn``, ``gg.rand``, ``gg.randint``): one seeded NumPy
generator; CUDA draws come from a CuPy generator seeded from it. Inside ``gg.vmap`` a draw
follows the vmap's ``randomness`` policy (torch.func's: "error", "different", "same").

JAX style (``gg.random.key``/``PRNGKey``, ``split``, ``fold_in``, ``normal``, ``uniform``,
``randint``, ``bernoulli``, ``permutation``, ``bits``): a key is a uint32 tensor of shape (2,)
and every draw is a pure function of it, computed by a counter-based generator
(Threefry-2x32-20, gpugrad/ops/random.py) on the key's device: the same numbers on the CPU
and on CUDA, bit for bit, and the same bits and uniforms as ``jax.random`` for the same key.
Under vmap, a batch of keys gives a batch of independent draws.

    from gpugrad import random
    key = random.PRNGKey(1)
    key, sub = random.split(key)
    x = random.normal(sub, (3,))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import backend, batched, dtypes
from .batched import BatchedTensor
from .creation import _finish, allocating, parse_size
from .dtypes import as_dtype
from .ops import random as _prng
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
    if batched.state.levels and _batched_over("a random draw"):
        raise RuntimeError("uniform_on: called inside vmap with randomness='different'; an array cannot "
                           "hold one draw per batch entry (use gpugrad.random.uniform_like)")
    return _uniform_array(xp, shape, dtype)


def _uniform_array(xp: Any, shape: tuple, dtype: Any) -> Any:
    if draw_hook is not None and (traced := draw_hook(_uniform_array, xp, shape, dtype)) is not None:
        return traced
    if xp is np:
        return _generator.random(shape, dtype=dtype)
    device = xp.cuda.Device().id
    state = _device_states.get(device)
    if state is None:
        state = _device_states[device] = xp.random.RandomState(int(_generator.integers(2**63)))
    return state.random_sample(shape, dtype=dtype)


def uniform_like(x: Tensor, name: str) -> Tensor:
    """float32 uniforms in [0, 1) of ``x``'s shape on its device, from the global generator; inside vmap,
    as its ``randomness`` policy says (one draw per batch entry with "different")."""
    levels = _batched_over(name) if batched.state.levels else []
    shape = (*(level.size for level in levels), *x.shape)
    data = x.data if type(x) is not BatchedTensor else batched.all_entries(x)
    xp = backend.namespace(data)
    with backend.device_scope(data):
        return _batched_draw(Tensor._wrap(_uniform_array(xp, shape, np.float32)), levels)


def _batched_over(name: str) -> list[batched.Level]:
    """The running vmaps (outermost first) that a draw from the global generator gets one batch axis
    per; raises where one of them refuses the draw (randomness="error", vmap's default)."""
    levels = [batched.state.levels[k] for k in sorted(batched.state.levels)]
    for level in levels:
        if level.randomness == "error":
            raise RuntimeError(
                f"{name}: called inside vmap, which by default refuses gpugrad's global random generator "
                "(vmap(..., randomness='error')); pass randomness='different' for independent draws per "
                "batch entry or 'same' for one draw shared by all, or draw from a key (gpugrad.random) and "
                "vmap over keys")
    return [level for level in levels if level.randomness == "different"]


def _batched_draw(t: Tensor, levels: list[batched.Level]) -> Tensor:
    """A draw with one leading axis per level (outermost first) as a batched tensor of those levels."""
    for level in levels:
        t = BatchedTensor.of(t, 0, level.level)
    return t


def _global_draw(name: str, shape: tuple, make: Any) -> Tensor:
    """``make(shape)`` (a Tensor), with leading batch axes for the vmaps that want independent draws."""
    levels = _batched_over(name) if batched.state.levels else []
    if not levels:
        return make(shape)
    return _batched_draw(make((*(level.size for level in levels), *shape)), levels)


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
    return _global_draw("randn", parse_size(shape, size, "randn"),
                        lambda s: _finish(_draw("randn", s, dtype), device, requires_grad))


def rand(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1)."""
    return _global_draw("rand", parse_size(shape, size, "rand"),
                        lambda s: _finish(_draw("rand", s, dtype), device, requires_grad))


def torch_randint(low: int, high: int | None = None, size: Any = (), *, dtype: Any = None,
                  device: Any = None) -> Tensor:
    """PyTorch's randint (``gg.randint``): integers drawn uniformly from [low, high), int64 by default."""
    if high is None:
        low, high = 0, low
    shape = parse_size((size,), None, "randint")

    def make(s: tuple) -> Tensor:
        with allocating("randint", s, np.int64):
            arr = _integers(low, high, s, as_dtype(dtype) or np.int64)
        return _finish(arr, device, False)
    return _global_draw("randint", shape, make)


def _integers(low: int, high: int, shape: tuple, dtype: Any) -> np.ndarray:
    if draw_hook is not None and (traced := draw_hook(_integers, low, high, shape, dtype)) is not None:
        return traced
    return np.asarray(_generator.integers(low, high, size=shape)).astype(dtype)


# ----------------------------------------------------------------------------- functional keys (JAX's)


def key(seed: int, *, device: Any = None) -> Tensor:
    """A PRNG key from an integer seed: uint32 words (seed >> 32, seed & 0xFFFFFFFF), as JAX's keys."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"key: the seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not -2**63 <= seed < 2**64:
        raise ValueError(f"key: the seed {seed} does not fit in 64 bits")
    seed %= 2**64
    return _finish(np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32), device, False)


PRNGKey = key      # JAX's older name: in gpugrad both are raw (2,) uint32 keys


def _check_key(name: str, k: Any) -> Tensor:
    if not isinstance(k, Tensor):
        raise TypeError(f"{name}: expected a key (gg.random.key(seed)), got {type(k).__name__}")
    if k.dtype != np.uint32 or tuple(k.shape) != (2,):
        raise TypeError(f"{name}: a key is a uint32 tensor of shape (2,) (from gg.random.key), got "
                        f"{k.dtype} of shape {tuple(k.shape)}; vmap over keys to draw for many at once")
    return k


def _on(k: Tensor, device: Any) -> Tensor:
    """The key on ``device`` (the draw happens where the key is), or as it is."""
    return k if device is None or k.device == backend.as_device(device) else k.to(device)


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name}: shape must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{name}: negative dimension in shape {shape}")
    return shape


def _float(name: str, dtype: Any) -> np.dtype:
    dt = as_dtype(dtype) or dtypes.default_float
    if dt.kind != "f":
        raise TypeError(f"{name}: dtype must be a floating dtype, got {dt}")
    return dt


def split(key: Tensor, num: int | Sequence[int] = 2) -> Tensor:
    """``num`` new keys from ``key``: shape (num, 2), or (*num, 2) for a tuple (jax.random.split)."""
    key = _check_key("split", key)
    return _prng.threefry_split(key, shape=_shape("split", num))


def fold_in(key: Tensor, data: Any) -> Tensor:
    """A new key from ``key`` and an integer (e.g. a step or a rank): jax.random.fold_in."""
    key = _check_key("fold_in", key)
    if isinstance(data, Tensor):
        if data.dtype.kind not in "iub" or data.shape != ():
            raise TypeError(f"fold_in: data must be an integer scalar, got {data.dtype} of shape "
                            f"{data.shape}")
        word = data.astype(np.uint32) if type(data) is BatchedTensor else \
            Tensor._wrap(backend.namespace(data.data).asarray(data.data % 2**32).astype(np.uint32))
    else:
        if isinstance(data, bool) or not isinstance(data, (int, np.integer)):
            raise TypeError(f"fold_in: data must be an int, got {type(data).__name__}")
        xp = backend.namespace(batched.all_entries(key))
        word = Tensor._wrap(xp.asarray(int(data) % 2**32, dtype=np.uint32))
    return _prng.threefry_fold_in(key, word)


def bits(key: Tensor, shape: Any = (), dtype: Any = None, *, device: Any = None) -> Tensor:
    """Uniformly random bits: uint32 (the default) or uint64, as jax.random.bits."""
    key = _on(_check_key("bits", key), device)
    dt = as_dtype(dtype) or np.dtype(np.uint32)
    if dt not in (np.uint32, np.uint64):
        raise TypeError(f"bits: dtype must be uint32 or uint64, got {dt}")
    return _prng.random_bits(key, shape=_shape("bits", shape), width=dt.itemsize * 8)


def uniform(key: Tensor, shape: Any = (), dtype: Any = None, minval: float = 0.0, maxval: float = 1.0, *,
            device: Any = None) -> Tensor:
    """Floats uniform in [minval, maxval) (float32 by default), as jax.random.uniform (same numbers)."""
    key = _on(_check_key("uniform", key), device)
    dt = _float("uniform", dtype)
    draw = dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
    out = _prng.random_uniform(key, shape=_shape("uniform", shape), dtype=draw, low=float(minval),
                               high=float(maxval))
    return out if draw == dt else out.astype(dt)


def normal(key: Tensor, shape: Any = (), dtype: Any = None, *, device: Any = None) -> Tensor:
    """Standard normal floats (float32 by default), by Box-Muller on the key's uniforms.

    The same numbers on every device for the same key; they differ from jax.random.normal's,
    which transforms the same uniforms by the inverse error function.
    """
    key = _on(_check_key("normal", key), device)
    dt = _float("normal", dtype)
    draw = dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
    out = _prng.random_normal(key, shape=_shape("normal", shape), dtype=draw)
    return out if draw == dt else out.astype(dt)


def randint(*args: Any, **kwargs: Any) -> Tensor:
    """Integers uniform in [minval, maxval): ``randint(key, shape, minval, maxval, dtype=int64)``, as
    jax.random.randint (its algorithm; int32 gives JAX's numbers). Called without a key, as
    ``randint(low, high, size)``, it is PyTorch's ``gg.randint`` on the global generator."""
    if args and isinstance(args[0], Tensor) and args[0].dtype == np.uint32:
        return _key_randint(*args, **kwargs)
    return torch_randint(*args, **kwargs)


def _key_randint(key: Tensor, shape: Any, minval: int, maxval: int, dtype: Any = None, *,
                 device: Any = None) -> Tensor:
    key = _on(_check_key("randint", key), device)
    dt = as_dtype(dtype) or np.dtype(np.int64)
    if dt.kind not in "iu" or dt.itemsize not in (4, 8):
        raise TypeError(f"randint: dtype must be a 32- or 64-bit integer dtype, got {dt}")
    for name, v in (("minval", minval), ("maxval", maxval)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"randint: {name} must be an int, got {type(v).__name__}")
    info = np.iinfo(dt)
    shape = _shape("randint", shape)
    nbits = dt.itemsize * 8
    lo, hi = min(max(int(minval), info.min), info.max), min(max(int(maxval), info.min), info.max)
    over = int(maxval) > info.max                      # maxval one past the dtype's largest value
    span = 1 if int(maxval) <= int(minval) else (hi - lo + (1 if over else 0)) % 2**nbits
    keys = _prng.threefry_split(key, shape=(2,))      # JAX's: 2 x nbits random bits per integer
    higher = _prng.random_bits(keys[0], shape=shape, width=nbits)
    lower = _prng.random_bits(keys[1], shape=shape, width=nbits)
    return _prng.random_integers(higher, lower, span=span, low=lo, dtype=dt)


def bernoulli(key: Tensor, p: Any = 0.5, shape: Any = None, *, device: Any = None) -> Tensor:
    """True with probability ``p`` (a number or a tensor, broadcast to ``shape``), as jax.random.bernoulli."""
    from . import ops  # noqa: PLC0415

    key = _on(_check_key("bernoulli", key), device)
    p_shape = tuple(getattr(p, "shape", ()))
    shape = p_shape if shape is None else _shape("bernoulli", shape)
    dt = p.dtype if isinstance(p, Tensor) and p.dtype.kind == "f" else dtypes.default_float
    return ops.less(uniform(key, shape, dt), p)


def permutation(key: Tensor, x: Any, axis: int = 0, independent: bool = False) -> Tensor:
    """A random permutation of range(x) for an int ``x``, or of ``x`` along ``axis`` (jax.random.permutation).

    Each round sorts by fresh random 32-bit keys (stable), enough rounds that ties are unlikely,
    as JAX does. ``independent`` shuffles each slice along ``axis`` on its own.
    """
    from . import ops  # noqa: PLC0415
    from .creation import arange  # noqa: PLC0415

    key = _check_key("permutation", key)
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        if x < 0:
            raise ValueError(f"permutation: x must be >= 0, got {x}")
        return _shuffle(key, arange(int(x), device=key.device), 0)
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if x.ndim == 0:
        raise ValueError("permutation: x must be an int or a tensor with at least one dimension")
    axis = axis % x.ndim
    if independent or x.ndim == 1:
        return _shuffle(key, x, axis)
    order = _shuffle(key, arange(x.shape[axis], device=key.device), 0)
    return ops.getitem(x, (slice(None),) * axis + (order,))


def _shuffle(key: Tensor, x: Tensor, axis: int) -> Tensor:
    from . import ops  # noqa: PLC0415

    rounds = math.ceil(3 * math.log(max(1, math.prod(x.shape))) / math.log(2**32 - 1))
    for _ in range(rounds):
        keys = split(key)
        key, sub = keys[0], keys[1]
        order = ops.argsort(_prng.random_bits(sub, shape=tuple(x.shape), width=32), axis=axis)
        x = ops.take_along_axis(x, order, axis)
    return x
