"""Counter-based random numbers: Threefry-2x32-20 on the host (NumPy) and on CUDA (kernels/random.cu).

A key is a uint32 array of shape (..., 2); element i of a draw is the Threefry block of the
key and the counter i (as 64 bits: high word, low word). The bits, the split and the
fold-in are JAX's (its default, "partitionable" scheme), so for the same key gpugrad and
``jax.random`` give the same bits and uniforms. The float transforms use only exactly
rounded operations (+, -, *, /, sqrt; kernels/random.cu avoids fused multiply-adds), so
the host's numbers and the GPU's are the same bits.

The primitives take keys with any leading dimensions (one draw per key): that is their
batching rule for vmap, where a batch of keys gives a batch of independent draws. They have
no gradient. gpugrad.random is the public API on top of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from . import batching
from .registry import defop

_U32, _U64 = np.dtype(np.uint32), np.dtype(np.uint64)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


# ----------------------------------------------------------------------------- Threefry on the host


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0: Any, k1: Any, c0: np.ndarray, c1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Threefry-2x32 block (20 rounds) of keys (k0, k1) and counters (c0, c1), uint32, broadcast."""
    k0, k1 = np.asarray(k0, _U32), np.asarray(k1, _U32)
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = (np.asarray(c0, _U32) + ks[0]).astype(_U32)
    x1 = (np.asarray(c1, _U32) + ks[1]).astype(_U32)
    with np.errstate(over="ignore"):
        for s in range(5):
            for r in _ROTATIONS[s % 2]:
                x0 = x0 + x1
                x1 = _rotl(x1, r) ^ x0
            x0 = x0 + ks[(s + 1) % 3]
            x1 = x1 + ks[(s + 2) % 3] + np.uint32(s + 1)
    return x0, x1


def _blocks(keys: np.ndarray, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each key's blocks at counters start..start+n-1: two (keys, n) uint32 arrays."""
    count = np.arange(start, start + n, dtype=_U64)
    hi, lo = (count >> np.uint64(32)).astype(_U32), (count & np.uint64(0xFFFFFFFF)).astype(_U32)
    flat = keys.reshape(-1, 2)
    return threefry2x32(flat[:, :1], flat[:, 1:], hi[None, :], lo[None, :])


def _bits32(keys: np.ndarray, start: int, n: int) -> np.ndarray:
    x0, x1 = _blocks(keys, start, n)
    return x0 ^ x1


def _bits64(keys: np.ndarray, start: int, n: int) -> np.ndarray:
    x0, x1 = _blocks(keys, start, n)
    return (x0.astype(_U64) << np.uint64(32)) | x1.astype(_U64)


# ----------------------------------------------------------------------------- exact float transforms
# The same operations in the same order as kernels/random.cu (NumPy rounds each one; no FMA).

_LOG_SERIES = (0.33333333333333331, 0.20000000000000001, 0.14285714285714285, 0.1111111111111111,
               0.090909090909090912, 0.076923076923076927, 0.066666666666666666, 0.058823529411764705,
               0.052631578947368418, 0.047619047619047616)                 # 1 / (2k + 1)
_SIN_SERIES = (-0.16666666666666666, 0.0083333333333333332, -0.00019841269841269841, 2.7557319223985893e-06,
               -2.505210838544172e-08, 1.6059043836821613e-10, -7.6471637318198164e-13,
               2.8114572543455206e-15, -8.2206352466243295e-18)            # (-1)^k / (2k + 1)!
_COS_SERIES = (-0.5, 0.041666666666666664, -0.0013888888888888889, 2.4801587301587302e-05,
               -2.7557319223985888e-07, 2.08767569878681e-09, -1.1470745597729725e-11,
               4.7794773323873853e-14, -1.5619206968586225e-16)            # (-1)^k / (2k)!
_LN2_HI, _LN2_LO = 0.69314718036912382, 1.9082149292705877e-10    # ln 2 = hi + lo, hi with 31 bits
_HALF_PI = 1.5707963267948966
_SQRT_HALF = 0.70710678118654752


def _horner(coeffs: tuple[float, ...], y: np.ndarray) -> np.ndarray:
    p = np.full_like(y, coeffs[-1])
    for c in coeffs[-2::-1]:
        p = p * y + c
    return p


def log_unit(u: np.ndarray) -> np.ndarray:
    """log(u) for float64 u in (0, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s)."""
    b = u.view(np.int64)
    e = ((b >> 52) & 0x7FF) - 1022
    m = ((b & 0x000FFFFFFFFFFFFF) | 0x3FE0000000000000).view(np.float64)
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = np.where(low, e - 1, e).astype(np.float64)
    f = m + -1.0
    s = f / (2.0 + f)
    z = s * s
    two_s = 2.0 * s
    log_m = two_s + two_s * (z * _horner(_LOG_SERIES, z))
    return e * _LN2_HI + (e * _LN2_LO + log_m)


def cos_turn(v: np.ndarray) -> np.ndarray:
    """cos(2 pi v) for float64 v in [0, 1): the quadrant from 4v, the rest from series on [0, pi/4]."""
    w4 = v * 4.0
    q = w4.astype(np.int64)
    w = w4 + -q.astype(np.float64)
    flip = w > 0.5
    w = np.where(flip, 1.0 + -w, w)
    want_cos = (q % 2 == 0) != flip
    x = w * _HALF_PI
    y = x * x
    sin = x + (x * y) * _horner(_SIN_SERIES, y)
    cos = 1.0 + y * _horner(_COS_SERIES, y)
    r = np.where(want_cos, cos, sin)
    return np.where((q == 1) | (q == 2), -r, r)


def _normal(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    scale = 2.3283064365386963e-10 if bits == 32 else 1.1102230246251565e-16
    if bits == 53:
        a, b = a >> np.uint64(11), b >> np.uint64(11)
    u = (a.astype(np.float64) + 0.5) * scale
    v = b.astype(np.float64) * scale
    return np.sqrt(-2.0 * log_unit(u)) * cos_turn(v)


def _uniform(bits: np.ndarray, dtype: np.dtype, low: float, high: float) -> np.ndarray:
    if dtype == _F32:
        u = ((bits >> np.uint32(9)) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1.0)
        lo, span = np.float32(low), np.float32(high) - np.float32(low)
    else:
        u = ((bits >> np.uint64(12)) | np.uint64(0x3FF0000000000000)).view(np.float64) - 1.0
        lo, span = np.float64(low), np.float64(high) - np.float64(low)
    return np.maximum(u * span + lo, lo)


# ----------------------------------------------------------------------------- on CUDA


def _launch(name: str, dtype: Any, keys: Any, n: int, out_shape: tuple, out_dtype: Any, *scalars: Any,
            data: Any = None) -> Any:
    """One kernels/random.cu launch over every (key, element) pair; its output array."""
    from ..cuda import kernels  # noqa: PLC0415 - only ever reached with CuPy arrays

    cp = backend.namespace(keys)
    keys = cp.ascontiguousarray(keys.reshape(-1, 2))
    out = cp.empty(out_shape, dtype=out_dtype)
    n_keys = keys.shape[0]
    args = (keys, np.int64(n_keys), np.int64(n), *scalars, out) if data is None else \
        (keys, cp.ascontiguousarray(data.reshape(-1)), np.int64(n_keys), out)
    with backend.device_scope(keys):
        kernels.launch(kernels.get_kernel(name, dtype), n_keys * (n if data is None else 1), args)
    return out


# ----------------------------------------------------------------------------- the primitives


def _keys_batch(batch, key):
    """Under vmap, more keys: the batch axis first (a key's words stay last)."""
    return batching.to_front(key, batch[0])


@defop(differentiable=False)
def threefry_split(xp, key, *, shape):
    """Keys of shape (..., *shape, 2) from keys (..., 2): block(key, counter i) for each i."""
    lead = key.shape[:-1]
    n = math.prod(shape)
    if xp is np:
        x0, x1 = _blocks(key, 0, n)
        out = np.stack([x0, x1], axis=-1)
    else:
        out = _launch("threefry_split", _U32, key, n, (*lead, n, 2), _U32)
    return out.reshape((*lead, *shape, 2))


@threefry_split.batch
def _(batch, key, *, shape):
    return threefry_split(_keys_batch(batch, key), shape=shape), 0


@defop(differentiable=False)
def threefry_fold_in(xp, key, data):
    """Keys (..., 2): block(key, counter data), data a uint32 per key (broadcast)."""
    lead = key.shape[:-1]
    data = xp.broadcast_to(data.astype(_U32), lead)
    if xp is np:
        x0, x1 = threefry2x32(key[..., 0], key[..., 1], np.zeros_like(data), data)
        return np.stack([x0, x1], axis=-1)
    return _launch("threefry_fold_in", _U32, key, 1, (*lead, 2), _U32, data=data)


@threefry_fold_in.batch
def _(batch, key, data):
    key = batching.materialize(key, batch[0], batch.size)
    data = batching.materialize(data, batch[1], batch.size)
    return threefry_fold_in(key, data), 0


@defop(differentiable=False)
def random_bits(xp, key, *, shape, width):
    """uint32 (width 32) or uint64 (width 64) random bits of shape (..., *shape), one draw per key."""
    lead = key.shape[:-1]
    n = math.prod(shape)
    if xp is np:
        bits = (_bits32 if width == 32 else _bits64)(key, 0, n)
    else:
        dtype = _U32 if width == 32 else _U64
        bits = _launch("random_bits", dtype, key, n, (*lead, n), dtype)
    return bits.reshape((*lead, *shape))


@defop(differentiable=False)
def random_uniform(xp, key, *, shape, dtype, low, high):
    """Uniform floats in [low, high) of shape (..., *shape): the top mantissa bits of random_bits."""
    lead = key.shape[:-1]
    n = math.prod(shape)
    if xp is np:
        bits = (_bits32 if dtype == _F32 else _bits64)(key, 0, n)
        out = _uniform(bits, dtype, low, high)
    else:
        out = _launch("random_uniform", dtype, key, n, (*lead, n), dtype, dtype.type(low), dtype.type(high))
    return out.reshape((*lead, *shape))


@defop(differentiable=False)
def random_normal(xp, key, *, shape, dtype):
    """Standard normal floats of shape (..., *shape): Box-Muller on the uniforms at counters i and n + i."""
    lead = key.shape[:-1]
    n = math.prod(shape)
    if xp is np:
        width = 32 if dtype == _F32 else 64
        bits = _bits32 if width == 32 else _bits64
        out = _normal(bits(key, 0, n), bits(key, n, n), 32 if width == 32 else 53).astype(dtype)
    else:
        out = _launch("random_normal", dtype, key, n, (*lead, n), dtype)
    return out.reshape((*lead, *shape))


@defop(differentiable=False, batch="elementwise")
def random_integers(xp, higher, lower, *, span, low, dtype):
    """low + (2 x nbits random bits, as one number) mod span, JAX's way: in unsigned arithmetic that
    wraps, with the multiplier 2^nbits mod span; a span of 0 stands for 2^nbits (every value)."""
    unsigned = higher.dtype
    nbits = unsigned.itemsize * 8
    if span == 0:                                  # the whole range: x mod 2^nbits is x
        offset = lower
    else:
        half = (2 ** (nbits // 2)) % span
        multiplier = unsigned.type((half * half % 2 ** nbits) % span)
        n = unsigned.type(span)
        offset = ((higher % n) * multiplier + lower % n) % n
    return offset.astype(dtype) + xp.asarray(low, dtype=dtype)


for _op in (random_bits, random_uniform, random_normal):
    _op.batch(lambda batch, key, _op=_op, **params: (_op(_keys_batch(batch, key), **params), 0))
