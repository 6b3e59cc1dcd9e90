"""Every op in the registry, on every sample it declares, equals an independent reference.

The reference is NumPy's function of the same name, or a formula written out here (mpmath for
erf), never gpugrad's own code. Results are compared in float64 (shape, dtype, values) and
in float32 (the op keeps float32). The few ops whose reference would restate their own
implementation are listed with the test that compares them with PyTorch instead.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad.ops.registry import REGISTRY
from gpugrad.ops.samples import Const
from gpugrad.testing import assert_close


def _softmax_cross_entropy(x, target, *, ignore_index, label_smoothing, reduction):
    logp = x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - x.max(1, keepdims=True)
    kept = target != ignore_index
    picked = -logp[np.arange(len(x)), np.where(kept, target, 0)]
    rows = np.where(kept, (1 - label_smoothing) * picked - label_smoothing * logp.mean(1), 0.0)
    return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / kept.sum()}[reduction]


def _windows(x, w, fill=0.0):
    """Every kernel offset's strided view of the input padded with ``fill``: (N, C, kh, kw, oh, ow)."""
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = w.kernel, w.stride, w.pad_lead, w.dilation, w.grid
    padded = np.full((n, c, max(x.shape[2] + ph, (oh - 1) * sh + (kh - 1) * dh + 1),
                       max(x.shape[3] + pw, (ow - 1) * sw + (kw - 1) * dw + 1)), fill)
    padded[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    out = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            out[:, :, i, j] = padded[:, :, rows, j * dw:j * dw + (ow - 1) * sw + 1:sw]
    return out


def _linear_activation(x, weight, bias, *, activation):
    z = x @ weight.T + bias
    return {"relu": np.maximum(z, 0), "tanh": np.tanh(z), "sigmoid": 1 / (1 + np.exp(-z))}[activation]


def _put(x, v, *, steps, value_shape, in_place=False):
    out = x.copy()
    view = out
    for step in steps[:-1]:
        view = view[step]
    view[steps[-1]] = np.broadcast_to(v, value_shape) if v.shape != value_shape else v
    return out


def _scatter(x, src, *, index):
    out = x.copy()
    out[index] = src
    return out


def _segment_extreme(values, *, positions, size, kind):
    pick = np.maximum if kind == "amax" else np.minimum
    out = np.full(size, -np.inf if kind == "amax" else np.inf)
    pick.at(out, positions, values)
    return out


def _unindex(g, *, index, shape):
    out = np.zeros(shape)
    np.add.at(out, index, g)
    return out


def _erf(x):
    mpmath = optional.need("mpmath")
    return np.vectorize(lambda v: float(mpmath.erf(v)))(x)


REFERENCES = {
    "alias": lambda x: x, "clone": lambda x: x,
    "astype": lambda x, *, dtype: x.astype(dtype),
    "binary_cross_entropy": lambda x, t: -(t * np.maximum(np.log(x), -100)            # PyTorch's clamp
                                           + (1 - t) * np.maximum(np.log1p(-x), -100)),
    "clip": lambda x, *, lo, hi: np.minimum(np.maximum(x, -np.inf if lo is None else lo),
                                            np.inf if hi is None else hi),
    "concatenate": lambda *xs, axis, sizes: np.concatenate(xs, axis=axis),
    "divide_rounded": lambda x, y, *, mode: np.floor(x / y) if mode == "floor" else np.trunc(x / y),
    "erf": _erf,
    "getitem": lambda x, *, index: x[index],
    "im2col": lambda x, *, windows: _windows(x, windows),
    "linear": lambda x, w, b=None: x @ w.T + (0 if b is None else b),
    "linear_activation": _linear_activation,
    "max_pool2d": lambda x, *, windows: _windows(x, windows, -np.inf).max(axis=(2, 3)),
    "norm2": lambda x, *, axis, keepdims: np.sqrt((x * x).sum(axis=axis, keepdims=keepdims)),
    "pnorm": lambda x, *, ord, axis, keepdims: (np.abs(x) ** ord).sum(axis=axis, keepdims=keepdims)
    ** (1 / ord),
    "put": _put,
    "relu": lambda x: np.maximum(x, 0.0),
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "scatter": _scatter,
    "segment_extreme": _segment_extreme,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softmax_cross_entropy": _softmax_cross_entropy,
    "unindex": _unindex,
}

# ops compared elsewhere, and why not here
ELSEWHERE = {
    "col2im": "the adjoint of im2col: its gradcheck (tests/test_registry_gradcheck.py) ties it to "
              "im2col's reference, and tests/test_parity_nn.py compares F.fold with PyTorch",
    "cum_extreme_indices": "the indices of cummax/cummin: tests/test_parity_core.py compares them with "
                           "PyTorch",
    "to_device": "moves between CPU and GPU; checked by the CUDA tests",
}


def _reference(name):
    return REFERENCES.get(name) or getattr(np, name)


def _cases():
    rng = np.random.default_rng(1234)
    for name, op in sorted(REGISTRY.items()):
        if op.differentiable and op.samples is not None and name not in ELSEWHERE:
            for sample in op.samples(rng):
                yield pytest.param(op, sample, id=f"{name}[{sample.name}]")


def _run(op, sample, dtype):
    ours = [a.value if isinstance(a, Const) else gg.tensor(a.astype(dtype)) for a in sample.args]
    theirs = [a.value if isinstance(a, Const) else a.astype(dtype) for a in sample.args]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return op(*ours, **sample.params), np.asarray(_reference(op.name)(*theirs, **sample.params))


@pytest.mark.parametrize("op,sample", list(_cases()))
def test_forward_equals_the_reference_in_float64(op, sample):
    got, expected = _run(op, sample, np.float64)
    if expected.dtype.kind == "f":
        expected = expected.astype(got.dtype) if "dtype" in sample.params else expected
    assert_close(got, expected, rtol=1e-12, atol=1e-14, equal_nan=True)


@pytest.mark.parametrize("op,sample", list(_cases()))
def test_forward_keeps_float32(op, sample):
    got, expected = _run(op, sample, np.float32)
    if "dtype" not in sample.params:       # casts choose their own output dtype
        assert got.dtype == gg.float32
    assert_close(got, expected.astype(got.dtype), rtol=1e-5, atol=1e-6, equal_nan=True)


def test_every_op_with_samples_has_a_reference():
    differentiable = {n for n, op in REGISTRY.items() if op.differentiable}
    covered = {n for n in differentiable if n in REFERENCES or hasattr(np, n)} | set(ELSEWHERE)
    assert differentiable - covered == set()
    assert set(REFERENCES) | set(ELSEWHERE) <= set(REGISTRY)
    assert math.isclose(float(_erf(np.array(0.5))), 0.5204998778130465)
