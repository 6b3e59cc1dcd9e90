"""The neural-network ops against PyTorch: convolution, pooling, normalisation, activations, losses,
attention, interpolation, and their modules.

Every case runs the same call on gpugrad and on torch (``fn(F, *tensors)`` with F either
library's ``nn.functional``) in float32 and float64 and compares the output's shape,
dtype and values, then the gradients of every input for one random cotangent (shape,
dtype, values). The same cases are gradchecked and gradgradchecked in float64 without
torch, and the primitives under them have registry samples. Tests that need torch skip
with the reason; the reference checks below them (naive loops, adjoint identities) run
everywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optional
import pytest

import gpugrad as gg
import gpugrad.nn as nn
import gpugrad.nn.functional as F
from gpugrad.cuda import emulator
from gpugrad.ops import conv as conv_ops
from gpugrad.testing import assert_close

try:
    import torch
    import torch.nn.functional as TF
except ImportError:   # the comparisons skip; everything else runs
    torch = None
    TF = None

needs_torch = optional.needs("torch")       # the shared reason: tests/optional.py
DTYPES = ["float32", "float64"]
TOL = {"float32": (2e-4, 2e-5), "float64": (1e-9, 1e-11)}


# ----------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """fn(F, *inputs) on both libraries; ``make`` draws the inputs (float64 arrays, or masks)."""
    name: str
    fn: Callable
    make: Callable[[np.random.Generator], list]
    grads: tuple[int, ...] | None = None          # which inputs get gradients (default: every float one)
    tol: float = 1.0                               # a multiple of the dtype's tolerance
    gradcheck: bool = True                         # also gradcheck / gradgradcheck it in float64
    kwargs: dict = field(default_factory=dict)

    def grad_positions(self, arrays: list) -> tuple[int, ...]:
        if self.grads is not None:
            return self.grads
        return tuple(i for i, a in enumerate(arrays) if isinstance(a, np.ndarray) and a.dtype.kind == "f")


def _u(*shape, lo=-2.0, hi=2.0):
    return lambda rng: rng.uniform(lo, hi, size=shape)


def _inputs(*makers):
    return lambda rng: [m(rng) for m in makers]


def _ties(*shape):
    """Values from a small set, so that windows hold tied maxima (as after a ReLU)."""
    return lambda rng: rng.integers(-2, 3, size=shape).astype(np.float64)


def _kinks(points):
    """The activation's corners exactly, points either side of them, large values, and random ones."""
    def make(rng):
        near = [p + d for p in points for d in (-1e-3, 0.0, 1e-3)]
        return np.array(near + [-100.0, -30.0, -5.0, 5.0, 30.0, 100.0] + list(rng.uniform(-6, 6, 12)))
    return make


CONV = [
    Case("conv1d", lambda F, x, w, b: F.conv1d(x, w, b), _inputs(_u(2, 3, 7), _u(4, 3, 3), _u(4))),
    Case("conv1d-stride-pad-dilation", lambda F, x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2),
         _inputs(_u(2, 3, 9), _u(4, 3, 3), _u(4))),
    Case("conv1d-groups", lambda F, x, w: F.conv1d(x, w, groups=2), _inputs(_u(2, 4, 6), _u(6, 2, 2))),
    Case("conv1d-same-even", lambda F, x, w: F.conv1d(x, w, padding="same"),
         _inputs(_u(1, 2, 6), _u(3, 2, 4))),
    Case("conv1d-valid-unbatched", lambda F, x, w: F.conv1d(x, w, padding="valid"),
         _inputs(_u(2, 6), _u(3, 2, 3))),
    Case("conv2d", lambda F, x, w, b: F.conv2d(x, w, b), _inputs(_u(2, 3, 5, 6), _u(4, 3, 3, 3), _u(4))),
    Case("conv2d-stride-pad", lambda F, x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2)),
         _inputs(_u(2, 2, 6, 5), _u(3, 2, 3, 2), _u(3))),
    Case("conv2d-dilation", lambda F, x, w: F.conv2d(x, w, dilation=2, padding=1),
         _inputs(_u(1, 2, 7, 6), _u(3, 2, 3, 3))),
    Case("conv2d-groups", lambda F, x, w, b: F.conv2d(x, w, b, groups=2, stride=2),
         _inputs(_u(2, 4, 5, 5), _u(6, 2, 3, 3), _u(6))),
    Case("conv2d-depthwise", lambda F, x, w: F.conv2d(x, w, groups=3, padding=1),
         _inputs(_u(2, 3, 4, 4), _u(3, 1, 3, 3))),
    Case("conv2d-same", lambda F, x, w: F.conv2d(x, w, padding="same", dilation=(1, 2)),
         _inputs(_u(1, 2, 5, 6), _u(2, 2, 2, 3))),
    Case("conv2d-1x1", lambda F, x, w, b: F.conv2d(x, w, b), _inputs(_u(2, 3, 4, 4), _u(5, 3, 1, 1), _u(5))),
    Case("conv2d-unbatched", lambda F, x, w: F.conv2d(x, w, stride=2), _inputs(_u(2, 5, 5), _u(3, 2, 2, 2))),
    Case("conv_transpose1d", lambda F, x, w, b: F.conv_transpose1d(x, w, b, stride=2, padding=1),
         _inputs(_u(2, 3, 5), _u(3, 2, 3), _u(2))),
    Case("conv_transpose2d", lambda F, x, w, b: F.conv_transpose2d(x, w, b),
         _inputs(_u(2, 3, 4, 4), _u(3, 2, 3, 3), _u(2))),
    Case("conv_transpose2d-stride-output_padding",
         lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
         _inputs(_u(2, 2, 3, 4), _u(2, 3, 3, 3), _u(3))),
    Case("conv_transpose2d-groups-dilation",
         lambda F, x, w: F.conv_transpose2d(x, w, stride=(1, 2), groups=2, dilation=2, output_padding=(1, 0)),
         _inputs(_u(1, 4, 3, 3), _u(4, 1, 2, 3))),
    Case("conv_transpose2d-unbatched", lambda F, x, w: F.conv_transpose2d(x, w, stride=3),
         _inputs(_u(2, 2, 3), _u(2, 1, 2, 2))),
    Case("unfold", lambda F, x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
         _inputs(_u(2, 2, 5, 6))),
    Case("fold", lambda F, x: F.fold(x, (4, 5), 2, padding=1, stride=2), _inputs(_u(2, 8, 9))),
]

POOL = [
    Case("max_pool2d", lambda F, x: F.max_pool2d(x, 2), _inputs(_u(2, 3, 4, 6))),
    Case("max_pool2d-stride-pad", lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1),
         _inputs(_u(2, 2, 7, 6))),
    Case("max_pool2d-dilation", lambda F, x: F.max_pool2d(x, (2, 3), stride=1, dilation=(2, 1)),
         _inputs(_u(1, 2, 6, 6))),
    Case("max_pool2d-ceil", lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
         _inputs(_u(1, 2, 6, 8))),
    Case("max_pool2d-ceil-drops-last", lambda F, x: F.max_pool2d(x, 3, stride=3, padding=1, ceil_mode=True),
         _inputs(_u(1, 2, 5, 8))),                # the last window would start in the padding: dropped
    Case("max_pool2d-ties", lambda F, x: F.max_pool2d(x, 3, stride=1, padding=1), _inputs(_ties(2, 2, 5, 5)),
         gradcheck=False),
    Case("max_pool2d-indices", lambda F, x: F.max_pool2d(x, 2, stride=1, return_indices=True),
         _inputs(_ties(1, 2, 4, 5)), gradcheck=False),
    Case("max_pool2d-unbatched", lambda F, x: F.max_pool2d(x, 2), _inputs(_u(3, 4, 4))),
    Case("max_pool1d", lambda F, x: F.max_pool1d(x, 3, stride=2, padding=1, ceil_mode=True),
         _inputs(_u(2, 3, 8))),
    Case("avg_pool2d", lambda F, x: F.avg_pool2d(x, 2), _inputs(_u(2, 3, 4, 6))),
    Case("avg_pool2d-pad", lambda F, x: F.avg_pool2d(x, 3, stride=2, padding=1), _inputs(_u(2, 2, 7, 6))),
    Case("avg_pool2d-pad-exclude",
         lambda F, x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
         _inputs(_u(2, 2, 7, 6))),
    Case("avg_pool2d-ceil", lambda F, x: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
         _inputs(_u(1, 2, 6, 8))),
    Case("avg_pool2d-ceil-exclude",
         lambda F, x: F.avg_pool2d(x, (2, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False),
         _inputs(_u(1, 2, 6, 7))),
    Case("avg_pool2d-ceil-drops-last", lambda F, x: F.avg_pool2d(x, 3, stride=3, padding=1, ceil_mode=True),
         _inputs(_u(1, 2, 5, 8))),
    Case("avg_pool2d-divisor", lambda F, x: F.avg_pool2d(x, 2, padding=1, divisor_override=3),
         _inputs(_u(1, 2, 5, 5))),
    Case("avg_pool1d", lambda F, x: F.avg_pool1d(x, 3, stride=2, padding=1, count_include_pad=False),
         _inputs(_u(2, 3, 8))),
    Case("adaptive_avg_pool2d-global", lambda F, x: F.adaptive_avg_pool2d(x, 1), _inputs(_u(2, 3, 4, 5))),
    Case("adaptive_avg_pool2d-uneven", lambda F, x: F.adaptive_avg_pool2d(x, (3, 4)),
         _inputs(_u(2, 2, 5, 7))),
    Case("adaptive_avg_pool2d-none", lambda F, x: F.adaptive_avg_pool2d(x, (None, 2)),
         _inputs(_u(1, 2, 3, 5))),
    Case("adaptive_avg_pool2d-up", lambda F, x: F.adaptive_avg_pool2d(x, (4, 3)), _inputs(_u(1, 2, 3, 2))),
    Case("adaptive_avg_pool1d", lambda F, x: F.adaptive_avg_pool1d(x, 3), _inputs(_u(2, 3, 7))),
]

NORM = [
    Case("batch_norm-train", lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
         _inputs(_u(4, 3, 2, 2), _u(3), _u(3))),
    Case("batch_norm-train-1d", lambda F, x: F.batch_norm(x, None, None, training=True, eps=1e-3),
         _inputs(_u(5, 3))),
    Case("batch_norm-eval", lambda F, x, m, v, w, b: F.batch_norm(x, m, v, w, b),
         _inputs(_u(3, 2, 4), _u(2), _u(2, lo=0.5, hi=2.0), _u(2), _u(2)), grads=(0, 3, 4)),
    Case("instance_norm", lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b),
         _inputs(_u(2, 3, 4, 3), _u(3), _u(3))),
    Case("instance_norm-running", lambda F, x, m, v: F.instance_norm(x, m, v, use_input_stats=False),
         _inputs(_u(2, 3, 5), _u(3), _u(3, lo=0.5, hi=2)), grads=(0,)),
    Case("group_norm", lambda F, x, w, b: F.group_norm(x, 2, w, b), _inputs(_u(2, 4, 3, 2), _u(4), _u(4))),
    Case("group_norm-plain", lambda F, x: F.group_norm(x, 3, eps=1e-3), _inputs(_u(2, 6, 5))),
    Case("normalize", lambda F, x: F.normalize(x), _inputs(_u(3, 4, 2))),
    Case("normalize-p1-last", lambda F, x: F.normalize(x, p=1.0, dim=-1), _inputs(_u(3, 4))),
    Case("normalize-tiny", lambda F, x: F.normalize(x * 1e-14, dim=1), _inputs(_u(2, 3)), gradcheck=False),
]

ACTIVATIONS = [
    Case("elu", lambda F, x: F.elu(x), _inputs(_kinks([0.0]))),
    Case("elu-alpha", lambda F, x: F.elu(x, alpha=0.5), _inputs(_kinks([0.0]))),
    Case("selu", lambda F, x: F.selu(x), _inputs(_kinks([0.0]))),
    Case("celu", lambda F, x: F.celu(x, alpha=2.0), _inputs(_kinks([0.0]))),
    Case("relu6", lambda F, x: F.relu6(x), _inputs(_kinks([0.0, 6.0]))),
    Case("hardtanh", lambda F, x: F.hardtanh(x, -2.0, 0.5), _inputs(_kinks([-2.0, 0.5]))),
    # NOTE: PyTorch's float64 hardsigmoid gradient multiplies by 1/6 rounded to float32 (a 3e-8 error)
    Case("hardsigmoid", lambda F, x: F.hardsigmoid(x), _inputs(_kinks([-3.0, 3.0])), tol=100),
    Case("hardswish", lambda F, x: F.hardswish(x), _inputs(_kinks([-3.0, 3.0]))),
    Case("mish", lambda F, x: F.mish(x), _inputs(_kinks([0.0]))),
    Case("softsign", lambda F, x: F.softsign(x), _inputs(_kinks([0.0]))),
    Case("softmin", lambda F, x: F.softmin(x, dim=1), _inputs(_u(3, 4))),
    Case("hardshrink", lambda F, x: F.hardshrink(x), _inputs(_kinks([-0.5, 0.5]))),
    Case("softshrink", lambda F, x: F.softshrink(x, 0.5), _inputs(_kinks([-0.5, 0.5]))),
    Case("tanhshrink", lambda F, x: F.tanhshrink(x), _inputs(_kinks([0.0]))),
    Case("threshold", lambda F, x: F.threshold(x, 0.5, -2.0), _inputs(_kinks([0.5]))),
    Case("glu", lambda F, x: F.glu(x, dim=1), _inputs(_u(3, 4, 2))),
    Case("prelu", lambda F, x, w: F.prelu(x, w), _inputs(_u(2, 3, 4), _u(3, lo=0, hi=1))),
    Case("prelu-shared", lambda F, x, w: F.prelu(x, w), _inputs(_kinks([0.0]), _u(1, lo=0, hi=1))),
    Case("softmin-dtype", lambda F, x: F.softmin(x, dim=0, dtype=torch.float64 if F is TF else gg.float64),
         _inputs(_u(4, 2)), gradcheck=False),
]


def _bce_edges(rng):
    return [np.array([0.0, 1e-5, 0.3, 0.5, 0.99, 1.0, 1.0, 0.0]),
            np.array([0.0, 0.3, 1.0, 0.2, 0.0, 1.0, 0.4, 0.6])]


def _kl_inputs(rng):
    logp = np.log(rng.dirichlet(np.ones(4), size=3))
    return [logp, rng.dirichlet(np.ones(4), size=3)]


def _kl_with_zeros(rng):
    logp, target = _kl_inputs(rng)
    target[0, 1] = 0.0
    return [logp, target]


LOSSES = [
    Case("binary_cross_entropy", lambda F, x, t: F.binary_cross_entropy(x, t),
         _inputs(_u(3, 4, lo=0.02, hi=0.98), _u(3, 4, lo=0.0, hi=1.0))),
    Case("binary_cross_entropy-weight-sum",
         lambda F, x, t, w: F.binary_cross_entropy(x, t, w, reduction="sum"),
         _inputs(_u(2, 3, lo=0.02, hi=0.98), _u(2, 3, lo=0, hi=1), _u(3, lo=0.5, hi=2)), grads=(0, 1)),
    Case("binary_cross_entropy-edges", lambda F, x, t: F.binary_cross_entropy(x, t, reduction="none"),
         _bce_edges, grads=(0,), gradcheck=False, tol=10),              # gradients of 1e11 at x = 1
    Case("smooth_l1_loss", lambda F, x, t: F.smooth_l1_loss(x, t), _inputs(_u(3, 4), _u(3, 4))),
    Case("smooth_l1_loss-beta", lambda F, x, t: F.smooth_l1_loss(x, t, reduction="sum", beta=0.5),
         _inputs(_u(3, 4), _u(3, 4))),
    Case("smooth_l1_loss-beta0", lambda F, x, t: F.smooth_l1_loss(x, t, reduction="none", beta=0.0),
         _inputs(_u(3, 4), _u(3, 4))),
    Case("huber_loss", lambda F, x, t: F.huber_loss(x, t), _inputs(_u(3, 4, lo=-3, hi=3), _u(3, 4))),
    Case("huber_loss-delta-weight", lambda F, x, t, w: F.huber_loss(x, t, "sum", delta=2.0, weight=w),
         _inputs(_u(3, 4, lo=-4, hi=4), _u(3, 4), _u(3, 4, lo=0, hi=1))),
    Case("kl_div-batchmean", lambda F, x, t: F.kl_div(x, t, reduction="batchmean"), _kl_inputs),
    Case("kl_div-sum-zeros", lambda F, x, t: F.kl_div(x, t, reduction="sum"), _kl_with_zeros, grads=(0,)),
    Case("kl_div-none-logtarget", lambda F, x, t: F.kl_div(x, t, reduction="none", log_target=True),
         _inputs(_u(3, 4, lo=-3, hi=0), _u(3, 4, lo=-3, hi=0))),
    Case("cosine_similarity", lambda F, a, b: F.cosine_similarity(a, b), _inputs(_u(3, 5), _u(3, 5))),
    Case("cosine_similarity-broadcast", lambda F, a, b: F.cosine_similarity(a, b, dim=-1, eps=1e-6),
         _inputs(_u(3, 1, 4), _u(2, 4))),
    Case("cosine_similarity-tiny", lambda F, a, b: F.cosine_similarity(a * 1e-9, b, dim=0),
         _inputs(_u(4, 2), _u(4, 2)), gradcheck=False),
]


def _attention_inputs(*shapes, mask=None):
    def make(rng):
        arrays = [rng.uniform(-1, 1, size=s) for s in shapes]
        if mask == "bool":
            m = rng.uniform(size=(shapes[0][-2], shapes[1][-2])) > 0.4
            m[:, 0] = True
            arrays.append(m)
        elif mask == "bool-full-row":
            m = rng.uniform(size=(shapes[0][-2], shapes[1][-2])) > 0.4
            m[1] = False
            arrays.append(m)
        elif mask == "float":
            arrays.append(rng.uniform(-1, 1, size=(shapes[0][-2], shapes[1][-2])))
        return arrays
    return make


ATTENTION = [
    Case("sdpa", lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v),
         _attention_inputs((2, 3, 4), (2, 5, 4), (2, 5, 3))),
    Case("sdpa-bool-mask", lambda F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
         _attention_inputs((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 2), mask="bool")),
    Case("sdpa-masked-row", lambda F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
         _attention_inputs((2, 3, 4), (2, 5, 4), (2, 5, 2), mask="bool-full-row")),
    Case("sdpa-float-mask", lambda F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, scale=0.3),
         _attention_inputs((1, 3, 4), (1, 5, 4), (1, 5, 2), mask="float")),
    Case("sdpa-causal", lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
         _attention_inputs((2, 4, 3), (2, 4, 3), (2, 4, 3))),
    Case("sdpa-gqa", lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
         _attention_inputs((1, 4, 3, 2), (1, 2, 5, 2), (1, 2, 5, 3))),
]

INTERPOLATE = [
    Case("nearest-2x", lambda F, x: F.interpolate(x, scale_factor=2), _inputs(_u(1, 2, 3, 4))),
    Case("nearest-size", lambda F, x: F.interpolate(x, size=(5, 7)), _inputs(_u(2, 2, 3, 4))),
    Case("nearest-down", lambda F, x: F.interpolate(x, scale_factor=0.5), _inputs(_u(1, 2, 6, 5))),
    Case("nearest-fraction", lambda F, x: F.interpolate(x, scale_factor=1.7), _inputs(_u(1, 1, 5, 6))),
    Case("nearest-recompute", lambda F, x: F.interpolate(x, scale_factor=1.7, recompute_scale_factor=True),
         _inputs(_u(1, 1, 5, 6))),
    Case("nearest-exact", lambda F, x: F.interpolate(x, size=(7, 3), mode="nearest-exact"),
         _inputs(_u(1, 2, 4, 5))),
    Case("nearest-1d", lambda F, x: F.interpolate(x, size=7), _inputs(_u(2, 3, 4))),
    Case("bilinear", lambda F, x: F.interpolate(x, scale_factor=2, mode="bilinear"), _inputs(_u(1, 2, 3, 4))),
    Case("bilinear-size-down", lambda F, x: F.interpolate(x, size=(3, 5), mode="bilinear"),
         _inputs(_u(2, 2, 7, 8))),
    Case("bilinear-align", lambda F, x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=True),
         _inputs(_u(1, 2, 3, 4))),
    Case("bilinear-align-one",
         lambda F, x: F.interpolate(x, size=(1, 3), mode="bilinear", align_corners=True),
         _inputs(_u(1, 1, 3, 4))),
    Case("bilinear-fraction", lambda F, x: F.interpolate(x, scale_factor=(1.5, 0.7), mode="bilinear"),
         _inputs(_u(1, 2, 4, 6))),
    Case("linear-1d", lambda F, x: F.interpolate(x, size=9, mode="linear", align_corners=False),
         _inputs(_u(2, 2, 5))),
]

CASES = CONV + POOL + NORM + ACTIVATIONS + LOSSES + ATTENTION + INTERPOLATE


# ----------------------------------------------------------------------------- running both libraries


def _torch_dtype(dtype: str) -> Any:
    return getattr(torch, dtype)


def _same(got: gg.Tensor, want: Any, what: str, dtype: str, tol: float = 1.0) -> None:
    """Equal shape, dtype and values (within the dtype's tolerance)."""
    assert got.shape == tuple(want.shape), f"{what}: shape {got.shape} != torch's {tuple(want.shape)}"
    assert str(got.dtype) == str(want.dtype).replace("torch.", ""), \
        f"{what}: dtype {got.dtype} != torch's {want.dtype}"
    rtol, atol = TOL[dtype]
    assert_close(got.detach().numpy(), want.detach().numpy(), rtol=rtol * tol, atol=atol * tol,
                               msg=what)


def _build(case: Case, dtype: str, rng: np.random.Generator):
    arrays = case.make(rng)
    positions = case.grad_positions(arrays)
    ours, theirs = [], []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(dtype)
        ours.append(gg.tensor(a, requires_grad=i in positions))
        theirs.append(torch.tensor(a, requires_grad=i in positions))
    return ours, theirs, positions


def _outputs(result: Any) -> list:
    return list(result) if isinstance(result, tuple) else [result]


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_torch(case, dtype):
    ours, theirs, positions = _build(case, dtype, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # kl_div's 'mean' warning, on both sides
        got, want = _outputs(case.fn(F, *ours)), _outputs(case.fn(TF, *theirs))
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        _same(g, w, f"{case.name} output {k}", dtype, case.tol)
    rng = np.random.default_rng(1)
    seeds = [(o, w, rng.standard_normal(w.shape).astype(o.dtype)) for o, w in zip(got, want)
             if w.requires_grad]
    if not seeds:
        return
    gg.autograd.backward([o for o, _, _ in seeds], [gg.tensor(s) for _, _, s in seeds])
    torch.autograd.backward([w for _, w, _ in seeds], [torch.tensor(s) for _, _, s in seeds])
    for i in positions:
        assert ours[i].grad is not None, f"{case.name}: no gradient for input {i}"
        _same(ours[i].grad, theirs[i].grad, f"{case.name} gradient of input {i}", dtype, case.tol)


KINKS = (0.0, 6.0, -2.0, 0.5, -0.5, -3.0, 3.0)       # where the activations above have corners


def _float64_inputs(case: Case) -> list:
    arrays = case.make(np.random.default_rng(3))
    if case in ACTIVATIONS and arrays[0].ndim == 1:   # finite differences must not straddle a corner
        x = arrays[0]
        arrays[0] = x[(np.abs(x) < 10) & (np.abs(x[:, None] - np.array(KINKS)) > 0.01).all(axis=1)]
    positions = case.grad_positions(arrays)
    return [gg.tensor(np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else a,
                      requires_grad=i in positions) for i, a in enumerate(arrays)]


def _first_output(case: Case) -> Callable:
    return lambda *xs: _outputs(case.fn(F, *xs))[0]


@pytest.mark.parametrize("case", [c for c in CASES if c.gradcheck], ids=lambda c: c.name)
def test_composite_gradcheck(case):
    assert gg.testing.gradcheck(_first_output(case), *_float64_inputs(case))


# the kinked activations are checked away from their corners (finite differences straddle a kink)
# second derivative 0 (nothing to check), or 0 * a kink
PIECEWISE_LINEAR = ("relu6", "hardtanh", "hardsigmoid", "hardshrink", "softshrink", "threshold",
                    "prelu-shared")


@pytest.mark.parametrize("case", [c for c in CASES if c.gradcheck and c.name not in PIECEWISE_LINEAR],
                         ids=lambda c: c.name)
def test_composite_gradgradcheck(case):
    assert gg.testing.gradgradcheck(_first_output(case), *_float64_inputs(case))


# ----------------------------------------------------------------------------- references without torch


def _naive_conv2d(x, w, stride, pad, dilation, groups):
    """Direct summation over every output position: the reference that shares no code with im2col."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    per = o // groups
    for oc in range(o):
        g = oc // per
        for y in range(oh):
            for z in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, y * stride[0]:y * stride[0] + dilation[0] * (kh - 1) + 1:
                           dilation[0], z * stride[1]:z * stride[1] + dilation[1] * (kw - 1) + 1:dilation[1]]
                out[:, oc, y, z] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize("stride,pad,dilation,groups", [
    ((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 1), 1), ((1, 2), (2, 1), (2, 1), 2),
    ((3, 2), (1, 1), (1, 1), 4)])
def test_conv2d_equals_direct_summation(stride, pad, dilation, groups):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 4 // groups, 3, 2))
    got = F.conv2d(gg.tensor(x), gg.tensor(w), stride=stride, padding=pad, dilation=dilation, groups=groups)
    want = _naive_conv2d(x, w, stride, pad, dilation, groups)
    assert got.shape == want.shape and got.dtype == gg.float64
    assert_close(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,pad,dilation,groups,extra", [
    (1, 0, 1, 1, 0), (2, 1, 1, 1, 1), ((2, 3), (0, 1), (1, 2), 2, (1, 0)), (2, 1, 2, 1, 1)])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(stride, pad, dilation, groups, extra):
    # <conv2d(y, w), x> = <y, conv_transpose2d(x, w)> for every x and y of the matching shapes
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 6 // groups, 3, 2))
    x = gg.tensor(rng.standard_normal((2, 4, 3, 4)))
    y_shape = F.conv_transpose2d(x, gg.tensor(w), stride=stride, padding=pad, output_padding=extra,
                                 groups=groups, dilation=dilation).shape
    y = rng.standard_normal(y_shape)
    forward = F.conv2d(gg.tensor(y), gg.tensor(w), stride=stride, padding=pad, dilation=dilation,
                       groups=groups)
    assert forward.shape == x.shape
    left = float((forward.numpy() * x.numpy()).sum())
    right = float((y * F.conv_transpose2d(x, gg.tensor(w), stride=stride, padding=pad, output_padding=extra,
                                          groups=groups, dilation=dilation).numpy()).sum())
    assert math.isclose(left, right, rel_tol=1e-11)


@pytest.mark.parametrize("channels,windows", conv_ops._GEOMETRIES)
def test_im2col_and_col2im_are_adjoint(channels, windows):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, channels) + windows.size)
    c = rng.standard_normal((2, channels) + windows.kernel + windows.grid)
    left = (conv_ops.patches(np, x, windows) * c).sum()
    right = (x * conv_ops.unpatch(np, c, windows)).sum()
    assert math.isclose(left, right, rel_tol=1e-12)


def test_max_pool_gradient_goes_to_the_first_maximum_only():
    x = gg.tensor([[[[1.0, 3.0, 3.0], [3.0, 0.0, 2.0], [0.0, 0.0, 0.0]]]], requires_grad=True)
    out = F.max_pool2d(x, 2, stride=1)          # windows overlap; three hold the tied 3s
    assert_close(out.detach().numpy(), [[[[3.0, 3.0], [3.0, 2.0]]]], rtol=0, atol=0)
    out.sum().backward()
    assert_close(x.grad.numpy(), [[[[0.0, 2.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]], rtol=0, atol=0)
    values, idx = F.max_pool2d(x, 2, stride=1, return_indices=True)
    assert idx.dtype == gg.int64
    assert_close(idx.numpy(), [[[[1, 1], [3, 5]]]], rtol=0, atol=0)


def test_max_pool_of_integers_and_nan():
    x = gg.tensor(np.arange(16).reshape(1, 1, 4, 4))
    out = F.max_pool2d(x, 2)
    assert out.dtype == gg.int64
    assert_close(out.numpy(), [[[[5, 7], [13, 15]]]], rtol=0, atol=0)
    nan = gg.tensor([[[[1.0, float("nan")], [2.0, 0.0]]]], requires_grad=True)
    value = F.max_pool2d(nan, 2)
    assert math.isnan(value.item())
    value.sum().backward()
    assert_close(nan.grad.numpy(), [[[[0.0, 1.0], [0.0, 0.0]]]], rtol=0, atol=0)


def test_avg_pool_divisors_by_hand():
    x = gg.ones(1, 1, 3, 3)
    # padding 1 with a 2x2 window and stride 2: windows cover 1, 2, 2, 4 real elements
    assert_close(F.avg_pool2d(x, 2, padding=1, count_include_pad=False), np.ones((1, 1, 2, 2), np.float32))
    assert_close(F.avg_pool2d(x, 2, padding=1).numpy(), [[[[0.25, 0.5], [0.5, 1.0]]]])
    ints = F.avg_pool2d(gg.tensor([[[[1, 2], [4, 6]]]]), 2)
    assert ints.dtype == gg.int64 and ints.item() == 3            # truncating, as PyTorch


def test_batch_norm_running_statistics_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    mean, var = gg.zeros(2), gg.ones(2)
    out = F.batch_norm(gg.tensor(x), mean, var, training=True, momentum=0.5, eps=0.0)
    assert_close(out.numpy(), [[-1.0, -1.0], [1.0, 1.0]])
    assert_close(mean.numpy(), [1.0, 2.0])                       # 0.5 * [2, 4]
    assert_close(var.numpy(), [0.5 + 0.5 * 2.0, 0.5 + 0.5 * 8.0])  # unbiased: [2, 8]
    assert mean.dtype == gg.float32


def test_adaptive_pool_and_interpolate_agree_with_plain_numpy():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 1, 5, 7))
    got = F.adaptive_avg_pool2d(gg.tensor(x), (2, 3)).numpy()
    rows = [(0, 3), (2, 5)]
    cols = [(0, 3), (2, 5), (4, 7)]
    want = np.array([[x[0, 0, a:b, c:d].mean() for c, d in cols] for a, b in rows])
    assert_close(got[0, 0], want, rtol=1e-12)
    up = F.interpolate(gg.tensor(x), scale_factor=2).numpy()
    assert_close(up, x.repeat(2, axis=2).repeat(2, axis=3), rtol=0, atol=0)
    same = F.interpolate(gg.tensor(x), size=(5, 7), mode="bilinear", align_corners=True).numpy()
    assert_close(same, x, rtol=1e-12)


def test_attention_dropout_keeps_the_expectation():
    gg.manual_seed(0)
    q = gg.randn(1, 4, 8)
    k, v = gg.randn(1, 6, 8), gg.randn(1, 6, 3)
    plain = F.scaled_dot_product_attention(q, k, v).numpy()
    dropped = np.mean([F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy() for _ in range(400)], 0)
    assert_close(dropped, plain, atol=0.15)
    assert_close(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0), np.zeros((1, 4, 3), np.float32),
                 rtol=0, atol=0)


# ----------------------------------------------------------------------------- errors, as PyTorch raises them


ERRORS = [
    ("conv2d-dtypes", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2, dtype=lib.float64)),
     RuntimeError, "float64"),
    ("conv2d-channels", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 2, 2, 2)), RuntimeError,
     "channels"),
    ("conv2d-kernel-too-big", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 5, 5)),
     RuntimeError, "kernel"),
    ("conv2d-same-strided", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2),
                                                    padding="same", stride=2), RuntimeError, "same"),
    ("conv2d-bad-padding",
     lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2), padding="foo"),
     RuntimeError, "padding"),
    ("conv2d-negative-padding",
     lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2), padding=-1),
     RuntimeError, "negative padding"),
    ("conv2d-zero-stride", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2), stride=0),
     RuntimeError, "stride"),
    ("conv2d-2d-input", lambda F, lib: F.conv2d(lib.randn(4, 4), lib.ones(1, 1, 2, 2)), RuntimeError,
     "input"),
    ("conv2d-stride-length", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2),
                                                     stride=(1, 1, 1)), RuntimeError, "stride"),
    ("conv2d-bias", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2), bias=lib.ones(2)),
     RuntimeError, "bias"),
    ("conv2d-groups", lambda F, lib: F.conv2d(lib.randn(1, 1, 4, 4), lib.ones(2, 1, 2, 2), groups=2),
     RuntimeError, "groups"),
    ("conv_transpose2d-output_padding",
     lambda F, lib: F.conv_transpose2d(lib.randn(1, 1, 4, 4), lib.ones(1, 1, 2, 2), output_padding=1),
     RuntimeError, "output padding"),
    ("max_pool2d-pad", lambda F, lib: F.max_pool2d(lib.randn(1, 1, 4, 4), 2, padding=2), RuntimeError, "pad"),
    ("max_pool2d-too-small", lambda F, lib: F.max_pool2d(lib.randn(1, 1, 4, 4), 5), RuntimeError, "small"),
    ("batch_norm-eval-no-stats", lambda F, lib: F.batch_norm(lib.randn(4, 3), None, None), RuntimeError,
     "running_mean"),
    ("batch_norm-one-value", lambda F, lib: F.batch_norm(lib.randn(1, 3), lib.zeros(3), lib.ones(3),
                                                         training=True), ValueError, "more than 1 value"),
    ("batch_norm-stats-size", lambda F, lib: F.batch_norm(lib.randn(4, 3), lib.zeros(2), lib.ones(2),
                                                          training=True), RuntimeError, "3"),
    ("group_norm-groups", lambda F, lib: F.group_norm(lib.randn(2, 6), 4), RuntimeError, "divisible"),
    ("bce-range", lambda F, lib: F.binary_cross_entropy(lib.tensor([1.5]), lib.tensor([1.0])), RuntimeError,
     "between 0 and 1"),
    ("bce-size", lambda F, lib: F.binary_cross_entropy(lib.rand(3), lib.rand(3, 1)), ValueError, "size"),
    ("smooth_l1-beta", lambda F, lib: F.smooth_l1_loss(lib.randn(3), lib.randn(3), beta=-1.0), RuntimeError,
     "beta"),
    ("huber-delta", lambda F, lib: F.huber_loss(lib.randn(3), lib.randn(3), delta=0.0), RuntimeError,
     "delta"),
    ("interpolate-align-nearest",
     lambda F, lib: F.interpolate(lib.randn(1, 1, 2, 2), scale_factor=2, align_corners=True), ValueError,
     "align_corners"),
    ("sdpa-causal-and-mask", lambda F, lib: F.scaled_dot_product_attention(
        lib.randn(2, 3), lib.randn(2, 3), lib.randn(2, 3), attn_mask=lib.ones(2, 2, dtype=lib.bool),
        is_causal=True), RuntimeError, "is_causal"),
]


@pytest.mark.parametrize("name,call,kind,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_the_problem(name, call, kind, words):
    with pytest.raises(kind, match=words):
        call(F, gg)
    if torch is not None:
        with pytest.raises(kind):                   # the same exception type as PyTorch
            call(TF, torch)


def test_unsupported_options_say_so():
    x = gg.randn(1, 1, 4, 4)
    with pytest.raises(NotImplementedError, match="bicubic"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(NotImplementedError, match="padding_mode"):
        nn.Conv2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)


# ----------------------------------------------------------------------------- modules


def _copy_to_torch(module: nn.Module, tmodule: Any) -> None:
    """Load gpugrad's parameters and buffers into the torch module (same names, same shapes)."""
    state = {k: torch.tensor(v.numpy()) for k, v in module.state_dict().items()}
    tmodule.load_state_dict(state)


def _compare_module(make: Callable, x: np.ndarray, dtype: str, train: bool = True, tol: float = 1.0) -> None:
    module, tmodule = make(nn), make(torch.nn)
    module.to(getattr(gg, dtype))
    tmodule.to(_torch_dtype(dtype))
    assert list(module.state_dict()) == list(tmodule.state_dict())
    for (name, p), (_, tp) in zip(module.state_dict().items(), tmodule.state_dict().items()):
        assert p.shape == tuple(tp.shape) and str(p.dtype) == str(tp.dtype).replace("torch.", ""), name
    _copy_to_torch(module, tmodule)
    module.train(train)
    tmodule.train(train)
    ours = gg.tensor(x.astype(dtype), requires_grad=True)
    theirs = torch.tensor(x.astype(dtype), requires_grad=True)
    out, tout = module(ours), tmodule(theirs)
    _same(out, tout, "module output", dtype, tol)
    seed = np.random.default_rng(2).standard_normal(tout.shape).astype(dtype)
    out.backward(gg.tensor(seed))
    tout.backward(torch.tensor(seed))
    _same(ours.grad, theirs.grad, "input gradient", dtype, tol)
    for (name, p), (_, tp) in zip(module.named_parameters(), tmodule.named_parameters()):
        _same(p.grad, tp.grad, f"gradient of {name}", dtype, tol)
    for (name, b), (_, tb) in zip(module.named_buffers(), tmodule.named_buffers()):
        if b.dtype.kind == "f":
            _same(b, tb, f"buffer {name}", dtype)
        else:
            assert b.item() == tb.item(), name
    assert repr(module) == repr(tmodule)


MODULES = [
    ("Conv1d", lambda nn: nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 9)),
    ("Conv1d-same", lambda nn: nn.Conv1d(2, 3, 4, padding="same", bias=False), (2, 2, 6)),
    ("Conv2d", lambda nn: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5)),
    ("Conv2d-groups", lambda nn: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=2),
     (2, 4, 7, 6)),
    ("ConvTranspose1d", lambda nn: nn.ConvTranspose1d(3, 2, 3, stride=2), (2, 3, 4)),
    ("ConvTranspose2d",
     lambda nn: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2),
     (2, 4, 3, 3)),
    ("MaxPool2d", lambda nn: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 2, 6, 7)),
    ("MaxPool1d", lambda nn: nn.MaxPool1d(2), (2, 2, 6)),
    ("AvgPool2d", lambda nn: nn.AvgPool2d(2, padding=1, count_include_pad=False), (2, 2, 5, 5)),
    ("AvgPool1d", lambda nn: nn.AvgPool1d(3, 1), (2, 2, 6)),
    ("AdaptiveAvgPool2d", lambda nn: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7)),
    ("AdaptiveAvgPool1d", lambda nn: nn.AdaptiveAvgPool1d(1), (2, 2, 5)),
    ("Flatten", lambda nn: nn.Flatten(), (2, 2, 3, 2)),
    ("Upsample", lambda nn: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 3, 3)),
    ("Upsample-size", lambda nn: nn.Upsample(size=(4, 5)), (1, 2, 3, 3)),
    ("UpsamplingBilinear2d", lambda nn: nn.UpsamplingBilinear2d(scale_factor=2), (1, 1, 3, 2)),
    ("UpsamplingNearest2d", lambda nn: nn.UpsamplingNearest2d(size=5), (1, 1, 3, 2)),
    ("BatchNorm1d", lambda nn: nn.BatchNorm1d(3), (5, 3)),
    ("BatchNorm1d-3d", lambda nn: nn.BatchNorm1d(3, momentum=0.3), (4, 3, 2)),
    ("BatchNorm2d", lambda nn: nn.BatchNorm2d(3), (4, 3, 2, 2)),
    ("BatchNorm2d-plain", lambda nn: nn.BatchNorm2d(3, affine=False, track_running_stats=False),
     (4, 3, 2, 2)),
    ("InstanceNorm2d", lambda nn: nn.InstanceNorm2d(3), (2, 3, 4, 4)),
    ("InstanceNorm1d-affine-tracked", lambda nn: nn.InstanceNorm1d(3, affine=True, track_running_stats=True),
     (2, 3, 5)),
    ("InstanceNorm1d-unbatched", lambda nn: nn.InstanceNorm1d(3), (3, 5)),
    ("GroupNorm", lambda nn: nn.GroupNorm(2, 4), (2, 4, 3, 3)),
    ("GroupNorm-plain", lambda nn: nn.GroupNorm(3, 6, affine=False), (2, 6, 4)),
    ("ELU", lambda nn: nn.ELU(0.7), (3, 4)),
    ("SELU", lambda nn: nn.SELU(), (3, 4)),
    ("CELU", lambda nn: nn.CELU(1.5), (3, 4)),
    ("ReLU6", lambda nn: nn.ReLU6(), (3, 4)),
    ("Hardtanh", lambda nn: nn.Hardtanh(-0.5, 1.5), (3, 4)),
    ("Hardsigmoid", lambda nn: nn.Hardsigmoid(), (3, 4)),
    ("Hardswish", lambda nn: nn.Hardswish(), (3, 4)),
    ("Mish", lambda nn: nn.Mish(), (3, 4)),
    ("Softsign", lambda nn: nn.Softsign(), (3, 4)),
    ("Softmin", lambda nn: nn.Softmin(dim=1), (3, 4)),
    ("Hardshrink", lambda nn: nn.Hardshrink(0.7), (3, 4)),
    ("Softshrink", lambda nn: nn.Softshrink(), (3, 4)),
    ("Tanhshrink", lambda nn: nn.Tanhshrink(), (3, 4)),
    ("Threshold", lambda nn: nn.Threshold(0.1, 20.0), (3, 4)),
    ("GLU", lambda nn: nn.GLU(), (3, 4)),
    ("PReLU", lambda nn: nn.PReLU(3, init=0.1), (2, 3, 4)),
]


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,make,shape", MODULES, ids=[m[0] for m in MODULES])
def test_module_matches_torch(name, make, shape, dtype):
    x = np.random.default_rng(4).uniform(-3, 3, size=shape)
    _compare_module(make, x, dtype, tol=100 if name == "Hardsigmoid" else 1)   # see the hardsigmoid case


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_running_stats_over_steps_then_eval(dtype):
    for make in (lambda nn: nn.BatchNorm2d(3), lambda nn: nn.BatchNorm2d(3, momentum=None),
                 lambda nn: nn.BatchNorm1d(4, momentum=0.2, affine=False)):
        module, tmodule = make(nn).to(getattr(gg, dtype)), make(torch.nn).to(_torch_dtype(dtype))
        rng = np.random.default_rng(9)
        shape = (6, 3, 2, 3) if isinstance(module, nn.BatchNorm2d) else (6, 4)
        for step in range(4):
            x = rng.normal(step, 1 + step, size=shape).astype(dtype)
            _same(module(gg.tensor(x)), tmodule(torch.tensor(x)), f"train step {step}", dtype)
            for (bname, b), (_, tb) in zip(module.named_buffers(), tmodule.named_buffers()):
                if b.dtype.kind == "f":
                    _same(b, tb, f"{bname} after step {step}", dtype)
                else:
                    assert b.item() == tb.item() == step + 1
        module.eval()
        tmodule.eval()
        x = rng.normal(size=shape).astype(dtype)
        _same(module(gg.tensor(x)), tmodule(torch.tensor(x)), "eval", dtype)
        assert module.num_batches_tracked.item() == 4        # eval leaves the statistics alone


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_eval_mode_gradients(dtype):
    batch = np.random.default_rng(11).normal(1.0, 2.0, size=(5, 3, 2, 2)).astype(np.float32)

    def make(lib):                       # running statistics from one training batch, then eval
        module = lib.BatchNorm2d(3)
        module(gg.tensor(batch) if lib is nn else torch.tensor(batch))
        return module
    _compare_module(make, np.random.default_rng(5).normal(size=(2, 3, 2, 2)), dtype, train=False)


LOSS_MODULES = [
    ("BCELoss", lambda nn, w: nn.BCELoss(weight=w), (0.02, 0.98)),
    ("BCELoss-sum", lambda nn, w: nn.BCELoss(reduction="sum"), (0.02, 0.98)),
    ("SmoothL1Loss", lambda nn, w: nn.SmoothL1Loss(beta=0.5), (-2, 2)),
    ("HuberLoss", lambda nn, w: nn.HuberLoss(reduction="sum", delta=0.7), (-2, 2)),
    ("KLDivLoss", lambda nn, w: nn.KLDivLoss(reduction="batchmean", log_target=True), (-3, 0)),
]


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,make,bounds", LOSS_MODULES, ids=[m[0] for m in LOSS_MODULES])
def test_loss_module_matches_torch(name, make, bounds, dtype):
    rng = np.random.default_rng(6)
    x = rng.uniform(*bounds, size=(3, 4)).astype(dtype)
    t = rng.uniform(0 if bounds[0] >= 0 else bounds[0], 1 if bounds[0] >= 0 else 0, size=(3, 4)).astype(dtype)
    w = rng.uniform(0.5, 2, size=(4,)).astype(dtype)
    module, tmodule = make(nn, gg.tensor(w)), make(torch.nn, torch.tensor(w))
    ours, theirs = gg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    loss, tloss = module(ours, gg.tensor(t)), tmodule(theirs, torch.tensor(t))
    _same(loss, tloss, name, dtype)
    loss.backward()
    tloss.backward()
    _same(ours.grad, theirs.grad, f"{name} gradient", dtype)
    assert repr(module) == repr(tmodule)


@needs_torch
def test_cosine_similarity_module_matches_torch():
    a, b = np.random.default_rng(7).normal(size=(2, 3, 5))
    got = nn.CosineSimilarity(dim=0, eps=1e-6)(gg.tensor(a), gg.tensor(b))
    _same(got, torch.nn.CosineSimilarity(dim=0, eps=1e-6)(torch.tensor(a), torch.tensor(b)), "cos", "float64")


def test_conv_init_is_pytorchs_default():
    gg.manual_seed(0)
    # enough output channels that the largest bias is near its bound
    for layer in (nn.Conv2d(6, 300, 5), nn.Conv1d(4, 300, 3, groups=2), nn.ConvTranspose2d(300, 6, 3)):
        fan_in = layer.weight.shape[1] * math.prod(layer.weight.shape[2:])
        bound = 1 / math.sqrt(fan_in)             # kaiming_uniform(a=sqrt(5)): sqrt(6 / (6 fan_in))
        w, b = np.abs(layer.weight.detach().numpy()), np.abs(layer.bias.detach().numpy())
        assert w.max() <= bound and w.max() > 0.95 * bound
        if b.size > 100:
            assert b.max() <= bound and b.max() > 0.95 * bound
        assert layer.weight.dtype == gg.float32
    assert nn.Conv2d(2, 3, 3, bias=False).bias is None


@needs_torch
def test_conv_init_distribution_matches_torch():
    torch.manual_seed(0)
    gg.manual_seed(0)
    ours = nn.Conv2d(8, 64, 3).weight.detach().numpy().ravel()
    theirs = torch.nn.Conv2d(8, 64, 3).weight.detach().numpy().ravel()
    assert abs(ours.std() - theirs.std()) < 0.05 * theirs.std()
    assert abs(np.abs(ours).max() - np.abs(theirs).max()) < 0.01 * np.abs(theirs).max()


def test_conv_transpose_output_size_picks_the_output_padding():
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    x = gg.randn(1, 2, 4, 4)
    assert layer(x).shape == (1, 3, 7, 7)
    assert layer(x, output_size=(8, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="valid sizes"):
        layer(x, output_size=(9, 9))


def test_batch_norm_buffers_are_state_and_move_with_the_module():
    bn = nn.BatchNorm1d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == gg.int64 and bn.running_mean.dtype == gg.float32
    bn(gg.randn(4, 3))
    twin = nn.BatchNorm1d(3)
    twin.load_state_dict(bn.state_dict())
    assert_close(twin.running_var.numpy(), bn.running_var.numpy(), rtol=0, atol=0)
    assert twin.num_batches_tracked.item() == 1
    bn.to(gg.float64)
    assert bn.running_mean.dtype == gg.float64 and bn.num_batches_tracked.dtype == gg.int64
    bn.reset_running_stats()
    assert bn.num_batches_tracked.item() == 0 and (bn.running_var.numpy() == 1).all()
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(gg.randn(2, 3))


def test_inplace_activations_overwrite_only_without_gradients():
    x = gg.tensor([-1.0, 0.5, 7.0])
    assert F.relu6(x, inplace=True) is x
    assert_close(x.numpy(), [0.0, 0.5, 6.0], rtol=0, atol=0)
    y = gg.tensor([-1.0, 2.0], requires_grad=True)
    out = nn.ELU(inplace=True)(y)
    assert out is not y and y.detach().numpy()[0] == -1.0


# ----------------------------------------------------------------------------- a conv net trains like torch's


def _conv_net(lib: Any) -> Any:
    return lib.Sequential(
        lib.Conv2d(1, 4, 3, padding=1), lib.BatchNorm2d(4), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(4, 6, 3, stride=1, padding="same", groups=2), lib.Hardswish(), lib.AvgPool2d(2),
        lib.Flatten(), lib.Linear(6 * 2 * 2, 3))


def _digits(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images of three classes: a bar in one of three places, plus noise."""
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 3, size=n)
    images = rng.normal(0, 0.3, size=(n, 1, 8, 8))
    for i, c in enumerate(labels):
        images[i, 0, :, 2 * c + 1:2 * c + 3] += 1.5
    return images, labels


def test_conv_net_learns():
    gg.manual_seed(0)
    model = _conv_net(nn)
    opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = _digits()
    x, y = gg.tensor(images.astype(np.float32)), gg.tensor(labels)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    assert (model(x).detach().numpy().argmax(axis=1) == labels).mean() > 0.9


@needs_torch
def test_conv_net_equals_torch_step_for_step_in_float64():
    gg.manual_seed(0)
    model = _conv_net(nn).to(gg.float64)
    tmodel = _conv_net(torch.nn).double()
    _copy_to_torch(model, tmodel)
    opt = gg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    images, labels = _digits()
    x, y = gg.tensor(images), gg.tensor(labels)
    tx, ty = torch.tensor(images), torch.tensor(labels)
    for step in range(5):
        loss = F.cross_entropy(model(x), y)
        tloss = TF.cross_entropy(tmodel(tx), ty)
        assert math.isclose(loss.item(), tloss.item(), rel_tol=1e-10), step
        opt.zero_grad()
        topt.zero_grad()
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
    for (name, p), (_, tp) in zip(model.state_dict().items(), tmodel.state_dict().items()):
        if p.dtype.kind == "f":
            assert_close(p.numpy(), tp.numpy(), rtol=1e-9, atol=1e-11, msg=name)


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cases_on_cuda_equal_the_cpu(case):
    """Every case on the GPU (float64): the same values and gradients as on the CPU, and (counted on the
    emulator) no read from the device in the forward or the backward."""
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    cpu = _float64_inputs(case)
    gpu = [t.detach().to("cuda").requires_grad_(t.requires_grad) if t.dtype.kind == "f" else t.to("cuda")
           for t in cpu]
    outs = [_outputs(case.fn(F, *cpu))]
    with emulator.host_reads() as reads:
        outs.append(_outputs(case.fn(F, *gpu)))
        for out in outs:
            if out[0].requires_grad:
                (out[0] * out[0]).sum().backward()
    assert reads == [], f"{case.name} read from the device: {reads}"
    for a, b in zip(*outs):
        assert b.device == "cuda:0" and a.shape == b.shape and a.dtype == b.dtype
        assert_close(b.detach().cpu().numpy(), a.detach().numpy(), rtol=1e-10, atol=1e-12)
    if not outs[0][0].requires_grad:
        return
    for a, b in zip(cpu, gpu):
        if a.requires_grad:
            assert b.grad.device == "cuda:0"
            assert_close(b.grad.cpu().numpy(), a.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.cuda
def test_conv_net_step_on_cuda_makes_no_host_copy():
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    from gpugrad import backend  # noqa: PLC0415
    from tests.test_cuda import no_host_copies  # noqa: PLC0415 - the guard the CUDA suite uses
    cp = backend.load_cupy()
    gg.manual_seed(0)
    model = _conv_net(nn).to("cuda")
    opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = _digits()
    x, y = gg.tensor(images.astype(np.float32)).cuda(), gg.tensor(labels).cuda()
    for _ in range(2):                                    # warm-up, then a guarded step
        with no_host_copies(cp) as calls:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert calls == []
    assert model[1].num_batches_tracked.device == "cuda:0"
