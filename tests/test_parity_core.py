"""A PyTorch user's program means the same in gpugrad: ops, dtypes and gradients against PyTorch.

Each case runs the same function on gpugrad and on PyTorch, in float32 and float64, and
compares the output's shape, dtype and values, then the gradient of a weighted sum with
respect to every float input (shape, dtype, values). Cases that need PyTorch skip, saying
so, where it is missing; the checks that need no peer (errors, defaults) always run.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad.cuda import emulator
from gpugrad.ops.registry import REGISTRY
from gpugrad.testing import assert_close

try:
    import torch
except ImportError:                      # the README's test command runs without PyTorch
    torch = None

needs_torch = optional.needs("torch")       # the shared reason: tests/optional.py
DTYPES = ["float32", "float64"]
TOL = {"float32": (2e-5, 2e-6), "float64": (1e-10, 1e-12)}


# ----------------------------------------------------------------------------- the harness


def _torch_dtype(name):
    return getattr(torch, name)


def _np_dtype(t):
    return np.dtype(str(t.dtype).replace("torch.", ""))


def _parts(out):
    """An op's results as a list of tensors (a (values, indices) tuple gives both)."""
    return list(out) if isinstance(out, tuple) else [out]


def _inputs(arrays, lib, dtype):
    """Float arrays become inputs that require grad in ``dtype``; others stay constants."""
    out = []
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            if lib == "torch":
                out.append(torch.tensor(a, dtype=_torch_dtype(dtype), requires_grad=True))
            else:
                out.append(gg.tensor(a, dtype=dtype, requires_grad=True))
        elif isinstance(a, np.ndarray):
            out.append(torch.tensor(a) if lib == "torch" else gg.tensor(a))
        else:
            out.append(a)
    return out


def _run(fn, arrays, lib, dtype):
    inputs = _inputs(arrays, lib, dtype)
    outs = _parts(fn(*inputs))
    floats = [o for o in outs if o.dtype in (torch.float32, torch.float64)] if lib == "torch" else \
        [o for o in outs if o.dtype.kind == "f"]
    loss = None
    for o in floats:
        if not o.requires_grad:
            continue
        weight = np.linspace(0.5, 1.5, max(o.numel(), 1))[:o.numel()].reshape(tuple(o.shape))
        w = torch.tensor(weight, dtype=o.dtype) if lib == "torch" else gg.tensor(weight, dtype=o.dtype)
        term = (o * w).sum()
        loss = term if loss is None else loss + term
    leaves = [i for i in inputs if getattr(i, "requires_grad", False)]
    grads = [None] * len(leaves)
    if loss is not None:
        loss.backward()
        grads = [i.grad for i in leaves]
    values = [o.detach().numpy() if lib == "torch" else o.detach().numpy() for o in outs]
    return values, [None if g is None else g.numpy() for g in grads]


def _same(actual, expected, dtype, what, rtol=None, atol=None):
    rt, at = TOL[dtype]
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != PyTorch's {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != PyTorch's {expected.dtype}"
    if actual.dtype.kind == "f":
        assert_close(actual, expected, rtol=rtol or rt, atol=atol or at, equal_nan=True,
                                   msg=what)
    else:
        assert_close(actual, expected, msg=what, rtol=0, atol=0)


def check(gfn, tfn, arrays, dtype, **tol):
    """gpugrad's ``gfn`` and PyTorch's ``tfn`` agree on outputs and input gradients."""
    g_vals, g_grads = _run(gfn, arrays, "gg", dtype)
    t_vals, t_grads = _run(tfn, arrays, "torch", dtype)
    assert len(g_vals) == len(t_vals), f"{len(g_vals)} outputs, PyTorch gives {len(t_vals)}"
    for i, (g, t) in enumerate(zip(g_vals, t_vals)):
        _same(g, t, dtype, f"output {i}", **tol)
    for i, (g, t) in enumerate(zip(g_grads, t_grads)):
        if t is None:
            assert g is None or not np.any(g), f"gradient {i}: PyTorch gives none"
            continue
        assert g is not None, f"gradient {i}: gpugrad gives none, PyTorch {t}"
        _same(g, t, dtype, f"gradient of input {i}", **tol)


def _u(lo, hi, shape=(3, 4), seed=0):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape)


def _same_fn(f):
    """The same Tensor-method spelling on both libraries."""
    return f, f


# ----------------------------------------------------------------------------- unary ops and methods

UNARY = {
    "floor": (lambda x: x.floor(), (-3, 3)), "ceil": (lambda x: x.ceil(), (-3, 3)),
    "round": (lambda x: x.round(), (-3, 3)), "round-decimals": (lambda x: x.round(decimals=1), (-3, 3)),
    "trunc": (lambda x: x.trunc(), (-3, 3)), "tan": (lambda x: x.tan(), (-1.2, 1.2)),
    "asin": (lambda x: x.asin(), (-0.9, 0.9)), "acos": (lambda x: x.acos(), (-0.9, 0.9)),
    "atan": (lambda x: x.atan(), (-3, 3)), "sinh": (lambda x: x.sinh(), (-3, 3)),
    "cosh": (lambda x: x.cosh(), (-3, 3)), "asinh": (lambda x: x.asinh(), (-3, 3)),
    "acosh": (lambda x: x.acosh(), (1.2, 3)), "atanh": (lambda x: x.atanh(), (-0.9, 0.9)),
    "log2": (lambda x: x.log2(), (0.2, 3)), "log10": (lambda x: x.log10(), (0.2, 3)),
    "exp2": (lambda x: x.exp2(), (-3, 3)), "rsqrt": (lambda x: x.rsqrt(), (0.2, 3)),
    "neg": (lambda x: x.neg(), (-2, 2)), "sigmoid": (lambda x: x.sigmoid(), (-30, 30)),
    "log-sigmoid": (lambda x: x.sigmoid().log(), (-30, 5)),
    "cumsum0": (lambda x: x.cumsum(0), (-2, 2)), "cumsum1": (lambda x: x.cumsum(dim=1), (-2, 2)),
    "cumprod": (lambda x: x.cumprod(1), (0.5, 1.5)), "logcumsumexp": (lambda x: x.logcumsumexp(1), (-3, 3)),
    "cummax": (lambda x: x.cummax(1), (-2, 2)), "cummin": (lambda x: x.cummin(0), (-2, 2)),
    "sort": (lambda x: x.sort(), (-2, 2)), "sort-desc": (lambda x: x.sort(dim=0, descending=True), (-2, 2)),
    "argsort": (lambda x: x.argsort(dim=1), (-2, 2)), "topk": (lambda x: x.topk(2), (-2, 2)),
    "topk-smallest": (lambda x: x.topk(2, dim=0, largest=False), (-2, 2)),
    "softmax": (lambda x: x.softmax(1), (-3, 3)), "log_softmax": (lambda x: x.log_softmax(0), (-3, 3)),
    "t": (lambda x: x.t(), (-2, 2)), "var": (lambda x: x.var(), (-2, 2)),
    "var-dim": (lambda x: x.var(1, keepdim=True), (-2, 2)), "std": (lambda x: x.std(0), (-2, 2)),
    "var-biased": (lambda x: x.var(1, unbiased=False), (-2, 2)),
    "std-correction": (lambda x: x.std(dim=1, correction=2), (-2, 2)),
    "max-dim": (lambda x: x.max(1), (-2, 2)), "min-dim": (lambda x: x.min(dim=0, keepdim=True), (-2, 2)),
    "max": (lambda x: x.max(), (-2, 2)), "amax": (lambda x: x.amax(1), (-2, 2)),
    "sum-dtype": (lambda x: x.sum(1, dtype=torch.float64 if isinstance(x, torch.Tensor) else gg.float64),
                  (-2, 2)),
    "norm3": (lambda x: x.norm(3), (-2, 2)), "norm-dim": (lambda x: x.norm(1.5, dim=1), (-2, 2)),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), (-2, 2)), "clamp_min": (lambda x: x.clamp_min(0.1), (-2, 2)),
    "contiguous": (lambda x: x.t().contiguous() * 2, (-2, 2)),
    "isposinf": (lambda x: (x / 0).isposinf(), (-2, 2)), "isneginf": (lambda x: (x / 0).isneginf(), (-2, 2)),
}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_match_torch(name, dtype):
    fn, (lo, hi) = UNARY[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # x / 0 on purpose
        check(fn, fn, [_u(lo, hi)], dtype)


# ----------------------------------------------------------------------------- binary ops

BINARY = {
    "remainder": (lambda a, b: a % b, (5.2, 5.8), (-2.2, -2.05)),
    "rremainder": (lambda a, b: 7.3 % b.detach() + a, (5.2, 5.8), (2.05, 2.2)),   # PyTorch: no gradient
    # PyTorch has no derivative for //; gpugrad's is div(rounding_mode="floor")'s: zero
    "floordiv": ((lambda a, b: (a // b) * a, lambda a, b: a.div(b, rounding_mode="floor") * a),
                 (-5.8, 5.8), (2.05, 2.2)),
    "fmod": (lambda a, b: a.fmod(b), (-5.8, -5.2), (2.05, 2.2)),
    "div-trunc": (lambda a, b: a.div(b, rounding_mode="trunc") + a, (-5.8, 5.8), (2.05, 2.2)),
    "div-floor": (lambda a, b: a.div(b, rounding_mode="floor") + b, (-5.8, 5.8), (2.05, 2.2)),
    "atan2": (lambda a, b: a.atan2(b), (-2, 2), (-2, 2)),
    "logaddexp": (lambda a, b: a.logaddexp(b), (-3, 3), (-30, 3)),
    "copysign": (lambda a, b: a.copysign(b), (-2, 2), (-2, 2)),
    "lerp": (lambda a, b: a.lerp(b, 0.3) + a.lerp(b, 0.8), (-2, 2), (-2, 2)),
    "lerp-tensor": (lambda a, b: a.lerp(b, b.sigmoid()), (-2, 2), (-2, 2)),
    "maximum": (lambda a, b: a.maximum(b), (-2, 2), (-2, 2)),
    "minimum": (lambda a, b: a.minimum(b), (-2, 2), (-2, 2)),
    "clamp-tensors": (lambda a, b: a.clamp(min=b - 0.5, max=b + 0.5), (-2, 2), (-2, 2)),
    "max-other": (lambda a, b: a.max(b), (-2, 2), (-2, 2)),
    "pow": (lambda a, b: a ** b, (0.5, 2), (-2, 2)),
}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_match_torch(name, dtype):
    fn, ra, rb = BINARY[name]
    gfn, tfn = fn if isinstance(fn, tuple) else (fn, fn)
    check(gfn, tfn, [_u(*ra), _u(*rb, shape=(4,), seed=1)], dtype)


EINSUM = ["ij,jk->ik", "ij,kj", "bij,bjk->bik", "ii", "ii->i", "ij->", "i,i", "i,j->ij", "...ij,...jk",
          "bn,anm,bm->ba", "ij,ij->ij", "ijk->kji"]
EINSUM_SHAPES = {"ij,jk->ik": [(3, 4), (4, 2)], "ij,kj": [(3, 4), (2, 4)],
                 "bij,bjk->bik": [(2, 3, 4), (2, 4, 5)], "ii": [(3, 3)], "ii->i": [(3, 3)], "ij->": [(3, 4)],
                 "i,i": [(4,), (4,)], "i,j->ij": [(3,), (4,)],
                 "...ij,...jk": [(2, 1, 3, 4), (5, 4, 2)], "bn,anm,bm->ba": [(2, 3), (4, 3, 5), (2, 5)],
                 "ij,ij->ij": [(3, 4), (3, 4)], "ijk->kji": [(2, 3, 4)]}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", EINSUM)
def test_einsum_matches_torch(spec, dtype):
    arrays = [_u(-1, 1, s, seed=i) for i, s in enumerate(EINSUM_SHAPES[spec])]
    check(lambda *xs: gg.einsum(spec, *xs), lambda *xs: torch.einsum(spec, *xs), arrays, dtype)


def test_einsum_errors_name_einsum():
    with pytest.raises(ValueError, match="einsum: .*subscript"):
        gg.einsum("ij,jk->ik", gg.ones(2, 3), gg.ones(4, 2))
    with pytest.raises(ValueError, match="einsum: .*2 operand"):
        gg.einsum("ij,jk", gg.ones(2, 3))


# ----------------------------------------------------------------------------- weak scalars and promotion

def _promotion_cases():
    f32 = np.float32
    return {
        "int * 1.5": (lambda m: m.tensor([1, 2]) * 1.5),
        "int ** 0.5": (lambda m: m.tensor([1, 4]) ** 0.5),
        "0.7 ** int": (lambda m: 0.7 ** m.tensor([1, 2])),
        "tensor(1) + 0.5": (lambda m: m.tensor(1) + 0.5),
        "maximum(int, float32 0-d)": (lambda m: m.maximum(m.tensor([1, 3]), m.tensor(2.0))),
        "float32 * np.float64": (lambda m: m.tensor([1.0, 2.0]) * np.float64(2.0)),
        "np.float64 * float32": (lambda m: np.float64(2.0) * m.tensor([1.0, 2.0])),
        "float32 * float64 0-d": (lambda m: m.tensor([1.0, 2.0]) * m.tensor(2.0, dtype=m.float64)),
        "float64 0-d * float32": (lambda m: m.tensor(2.0, dtype=m.float64) * m.tensor([1.0, 2.0])),
        "int64 + float32": (lambda m: m.tensor([1, 2]) + m.tensor([1.0, 2.0])),
        "int8 + float64 0-d": (lambda m: m.tensor([1, 2], dtype=m.int8) + m.tensor(1.0, dtype=m.float64)),
        "int32 + int64 0-d": (lambda m: m.tensor([1, 2], dtype=m.int32) + m.tensor(7)),
        "bool + 1": (lambda m: m.tensor([True, False]) + 1),
        "bool * 1.5": (lambda m: m.tensor([True, False]) * 1.5),
        "float16 * 2.5": (lambda m: m.tensor([1.0, 2.0], dtype=m.float16) * 2.5),
        "uint8 + int8": (lambda m: m.tensor([1, 2], dtype=m.uint8) + m.tensor([1, 2], dtype=m.int8)),
        "int / int": (lambda m: m.tensor([1, 2]) / m.tensor([2, 2])),
        "int // 2": (lambda m: m.tensor([5, -5]) // 2),
        "int % 3": (lambda m: m.tensor([5, -5]) % 3),
        "int fmod 3": (lambda m: m.fmod(m.tensor([5, -5]), 3)),
        "int div trunc": (lambda m: m.div(m.tensor([5, -5]), 2, rounding_mode="trunc")),
        "where(int, 0.5)": (lambda m: m.where(m.tensor([True, False]), m.tensor([1, 2]), 0.5)),
        "clamp(int, 0.5)": (lambda m: m.clamp(m.tensor([0, 2]), min=0.5)),
        "int floor": (lambda m: m.tensor([1, 2]).floor()),
        "int exp2": (lambda m: m.exp2(m.tensor([1, 2]))),
        "int copysign": (lambda m: m.copysign(m.tensor([1, 2]), -1.0)),
        "int sum float64": (lambda m: m.tensor([1, 2]).sum(dtype=m.float64)),
        "bool sum": (lambda m: m.tensor([True, True]).sum()),
        "int32 cumsum": (lambda m: m.tensor([1, 2], dtype=m.int32).cumsum(0)),
        "float32 var of int": (lambda m: m.tensor([1.0, 2.0]) - m.tensor([1, 2]).float().mean()),
        "f32": (lambda m: m.tensor(np.ones(2, f32)) + 1),
    }


@needs_torch
@pytest.mark.parametrize("case", sorted(_promotion_cases()))
def test_result_dtypes_match_torch(case):
    fn = _promotion_cases()[case]
    ours, theirs = fn(gg), fn(torch)
    assert ours.dtype == _np_dtype(theirs), f"{case}: {ours.dtype}, PyTorch {theirs.dtype}"
    assert ours.shape == tuple(theirs.shape)
    assert_close(ours.numpy().astype(np.float64), theirs.numpy().astype(np.float64), rtol=1e-6)


def test_weak_scalars_without_torch():
    """The issue's examples, checked without a peer."""
    assert (gg.tensor([1, 2]) * 1.5).dtype == gg.float32
    assert (gg.tensor([1, 4]) ** 0.5).dtype == gg.float32
    assert (0.7 ** gg.tensor([1, 2])).dtype == gg.float32
    assert (gg.tensor(1) + 0.5).dtype == gg.float32
    assert gg.maximum(gg.tensor([1, 2]), gg.tensor(1.5)).dtype == gg.float32
    assert (gg.tensor([1.0, 2.0]) * np.float64(3.0)).dtype == gg.float32
    assert (gg.ones(3) * gg.tensor(2.0, dtype=gg.float64)).dtype == gg.float32
    assert (gg.ones(3) * gg.ones(3, dtype=gg.float64)).dtype == gg.float64   # both with dims: the wider


def test_promoted_operands_get_gradients_in_their_own_dtype():
    x = gg.tensor([1.0, 2.0], requires_grad=True)                  # float32, broadcast against (2, 2)
    y = gg.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=gg.float64, requires_grad=True)
    z = x * y
    assert z.dtype == gg.float64
    z.sum().backward()
    assert x.grad.dtype == gg.float32 and x.grad.shape == (2,)
    assert_close(x.grad.numpy(), [4.0, 6.0])
    assert y.grad.dtype == gg.float64


def test_a_float32_model_refuses_float64_and_int_inputs():
    model = gg.nn.Linear(3, 2)
    for bad in (gg.ones(4, 3, dtype=gg.float64), gg.ones(4, 3, dtype=gg.int64)):
        with pytest.raises(RuntimeError, match="linear: expected operands of one dtype"):
            model(bad)
    with pytest.raises(RuntimeError, match="matmul: expected operands of one dtype"):
        gg.ones(2, 3) @ gg.ones(3, 2, dtype=gg.float64)
    assert model(gg.ones(4, 3)).dtype == gg.float32


@needs_torch
def test_torch_refuses_the_same_mixed_models():
    with pytest.raises(RuntimeError):
        torch.nn.Linear(3, 2)(torch.ones(4, 3, dtype=torch.float64))


def test_an_int_too_large_for_the_dtype_names_the_op():
    with pytest.raises(OverflowError, match=r"add: the Python int 1267650600228229401496703205376 does not"):
        gg.arange(3) + 2 ** 100
    with pytest.raises(OverflowError, match="multiply:"):
        gg.tensor([1, 2], dtype=gg.int8) * 1000


# ----------------------------------------------------------------------------- bitwise operators

BITWISE = {
    "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
    "lshift": lambda a, b: a << (b % 4), "rshift": lambda a, b: a >> (b % 4), "invert": lambda a, b: ~a,
    "rand": lambda a, b: 6 & a, "ror": lambda a, b: 1 | a, "rxor": lambda a, b: 3 ^ a,
    "rlshift": lambda a, b: 1 << (b % 4),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(BITWISE))
@pytest.mark.parametrize("kind", ["int64", "int32", "bool"])
def test_bitwise_operators_match_torch(name, kind):
    if kind == "bool" and "shift" in name:
        pytest.skip("shifts are for integers in both libraries")
    rng = np.random.default_rng(3)
    a = rng.integers(0, 16, 6).astype(kind) if kind != "bool" else rng.integers(0, 2, 6).astype(bool)
    b = rng.integers(0, 16, 6).astype(kind) if kind != "bool" else rng.integers(0, 2, 6).astype(bool)
    fn = BITWISE[name]
    if kind == "bool" and name.startswith("r"):
        fn = {"rand": lambda a, b: True & a, "ror": lambda a, b: False | a,
              "rxor": lambda a, b: True ^ a}[name]
    ours, theirs = fn(gg.tensor(a), gg.tensor(b)), fn(torch.tensor(a), torch.tensor(b))
    assert ours.dtype == _np_dtype(theirs)
    assert_close(ours.numpy(), theirs.numpy(), rtol=0, atol=0)


def test_bitwise_operators_without_torch():
    assert (gg.tensor([5, 6]) & 3).tolist() == [1, 2]
    assert (True & gg.tensor([True, False])).tolist() == [True, False]
    assert (~gg.tensor([True, False])).tolist() == [False, True]
    assert (~gg.tensor([0, 1])).tolist() == [-1, -2]
    assert (1 << gg.tensor([1, 2])).tolist() == [2, 4]
    with pytest.raises(TypeError, match="bitwise_not"):
        ~gg.tensor([1.0])
    with pytest.raises(TypeError, match="bitwise_and"):
        gg.tensor([1.0]) & 1


# ----------------------------------------------------------------------------- 0-d tensors and empty axes


ZERO_D = {
    "sum0": lambda x: x.sum(0), "mean-1": lambda x: x.mean(dim=-1), "max0": lambda x: x.max(0),
    "amax0": lambda x: x.amax(0), "softmax0": lambda x: x.softmax(0),
    "log_softmax-1": lambda x: x.log_softmax(-1), "cumsum0": lambda x: x.cumsum(0),
    "cumprod0": lambda x: x.cumprod(-1), "logsumexp0": lambda x: x.logsumexp(0),
    "argmax0": lambda x: x.argmax(0), "sort0": lambda x: x.sort(0), "topk1": lambda x: x.topk(1),
    "cummax0": lambda x: x.cummax(0), "prod0": lambda x: x.prod(0), "std0": lambda x: x.std(0, correction=0),
}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ZERO_D))
def test_zero_d_tensors_take_dim_0_and_minus_1(name, dtype):
    check(ZERO_D[name], ZERO_D[name], [np.array(1.5)], dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_axes_as_torch(dtype):
    check(lambda x: x.logsumexp(1), lambda x: x.logsumexp(1), [np.zeros((2, 0))], dtype)
    check(lambda x: x.softmax(1), lambda x: x.softmax(1), [np.zeros((2, 0))], dtype)
    check(lambda x: x.log_softmax(0), lambda x: x.log_softmax(0), [np.zeros((0, 3))], dtype)
    check(lambda x: x.cumsum(0), lambda x: x.cumsum(0), [np.zeros((0, 3))], dtype)


def test_empty_axes_and_dim_errors_without_torch():
    assert gg.logsumexp(gg.zeros(0), 0).item() == -math.inf
    assert gg.nn.functional.softmax(gg.zeros(2, 0), dim=1).shape == (2, 0)
    with pytest.raises(IndexError, match="softmax: axis 2 is out of range"):
        gg.nn.functional.softmax(gg.ones(2, 3), dim=2)
    with pytest.raises(IndexError, match="log_softmax: axis -3"):
        gg.ones(2, 3).log_softmax(-3)
    with pytest.raises(IndexError, match="max: expected reduction dim 1 to have non-zero size"):
        gg.zeros(2, 0).max(1)
    with pytest.raises(RuntimeError, match="topk: selected index k=4 is out of range"):
        gg.ones(3).topk(4)
    with pytest.raises(TypeError, match="cumsum: give the dimension"):
        gg.ones(2, 3).cumsum(None)


# ----------------------------------------------------------------------------- var and std


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("correction", [1, 3, 5])
def test_var_and_std_with_large_corrections_match_torch(correction, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # both libraries warn that the degrees of freedom are <= 0
        for fn in (lambda x: x.var(1, correction=correction), lambda x: x.std(1, correction=correction)):
            g_vals, _ = _run(fn, [_u(-1, 1, (2, 3))], "gg", dtype)
            t_vals, _ = _run(fn, [_u(-1, 1, (2, 3))], "torch", dtype)
            _same(g_vals[0], t_vals[0], dtype, "var/std")
            assert not np.any(g_vals[0] < 0)
        g_vals, _ = _run(lambda x: x.var(correction=correction), [np.ones(3)], "gg", dtype)
        t_vals, _ = _run(lambda x: x.var(correction=correction), [np.ones(3)], "torch", dtype)
        _same(g_vals[0], t_vals[0], dtype, "var of a constant")


def test_var_defaults_without_torch():
    x = gg.tensor([1.0, 2.0, 3.0, 4.0])
    assert math.isclose(x.var().item(), np.var([1, 2, 3, 4], ddof=1), rel_tol=1e-6)      # Tensor: unbiased
    assert math.isclose(gg.var(x).item(), np.var([1, 2, 3, 4]), rel_tol=1e-6)            # gg.var: NumPy's
    assert math.isclose(x.std(unbiased=False).item(), np.std([1, 2, 3, 4]), rel_tol=1e-6)
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):
        assert x.var(correction=4).item() == math.inf and x.var(correction=9).item() == math.inf


# ----------------------------------------------------------------------------- gradients at the edges


def _edge_cases():
    nan = math.nan
    return {
        "x**0 at 0": (lambda x: x ** 0, [np.array([0.0, 1.0, -2.0])]),
        "x**y at 0": (lambda x, y: x ** y, [np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.5, 1.5])]),
        "std of a constant": (lambda x: x.std(), [np.full(4, 3.0)]),
        "std(dim) of constant rows": (lambda x: x.std(1), [np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]])]),
        "norm3 at 0": (lambda x: torch_or_gg_norm(x, 3), [np.zeros(3)]),
        "norm0.5 at 0": (lambda x: torch_or_gg_norm(x, 0.5), [np.array([0.0, 1.0, 2.0])]),
        "norm2 at 0": (lambda x: torch_or_gg_norm(x, 2), [np.zeros(3)]),
        "max with NaN": (lambda x: x.max(), [np.array([1.0, nan, 3.0])]),
        "max(dim) with NaN": (lambda x: x.max(1).values, [np.array([[1.0, nan, 3.0], [1.0, 2.0, 2.0]])]),
        "max with ties": (lambda x: x.max(), [np.array([1.0, 3.0, 3.0])]),
        "max(dim) with ties": (lambda x: x.max(0), [np.array([[1.0, 3.0], [1.0, 2.0]])]),
        "min(dim) with ties": (lambda x: x.min(1), [np.array([[1.0, 1.0, 2.0]])]),
        "maximum with NaN": (lambda x, y: x.maximum(y), [np.array([1.0, nan, 3.0]), np.array([2, 2, nan])]),
        "minimum with NaN": (lambda x, y: x.minimum(y), [np.array([1.0, nan, 3.0]), np.array([2, 2, nan])]),
        "maximum with ties": (lambda x, y: x.maximum(y), [np.array([1.0, 2.0]), np.array([1.0, 0.0])]),
        "cumprod with zeros": (lambda x: x.cumprod(1), [np.array([[2.0, 0, 3, 0, 4], [0, 1.5, 2, 3, 0.5]])]),
        "prod with zeros": (lambda x: x.prod(1), [np.array([[2.0, 0, 3], [0.0, 0, 2], [1.0, 2, 3]])]),
        "cummax with ties and NaN": (lambda x: x.cummax(0), [np.array([1.0, 1.0, 0.0, nan, 2.0, nan, 5.0])]),
        "cummin with ties": (lambda x: x.cummin(0), [np.array([1.0, 1.0, 0.0, 2.0, 0.0])]),
        "sort with NaN": (lambda x: x.sort(descending=True), [np.array([2.0, nan, 1.0, 2.0])]),
        # PyTorch's float32 gradient here is 0.4999855 where the exact value is 0.5
        "logcumsumexp wide range": (lambda x: x.logcumsumexp(0), [np.array([-1000.0, 0.0, -50.0, 30.0])],
                                    {"atol": 2e-5}),
        # (below -88 PyTorch's float32 sigmoid underflows to 0; gpugrad's stays subnormal)
        "sigmoid very negative": (lambda x: x.sigmoid().log(), [np.array([-20.0, -80.0, -30.0, 5.0])]),
        "clamp at the bounds": (lambda x, lo: x.clamp(min=lo, max=lo + 1), [np.array([0.0, 1.0, 2.0, 3.0]),
                                                                             np.array([0.0, 0.0, 0.5, 3.0])]),
        "lerp weight 1": (lambda a, b: a.lerp(b, 1.0), [np.array([0.1, 1e8]), np.array([0.3, 1.0])]),
    }


def torch_or_gg_norm(x, p):
    return torch.linalg.vector_norm(x, p) if isinstance(x, torch.Tensor) else gg.linalg.vector_norm(x, p)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(_edge_cases()))
def test_edge_values_and_gradients_match_torch(case, dtype):
    fn, arrays, *tol = _edge_cases()[case]
    check(fn, fn, arrays, dtype, **(tol[0] if tol and dtype == "float32" else {}))


def test_edges_without_torch():
    x = gg.tensor([0.0, 2.0], requires_grad=True)
    (x ** 0).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]
    x = gg.full((3,), 2.0, requires_grad=True)
    x.std().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    x = gg.zeros(3, requires_grad=True)
    gg.linalg.norm(x, ord=3).backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    assert gg.log(gg.sigmoid(gg.tensor(-20.0))).item() == pytest.approx(-20.0, rel=1e-6)
    x = gg.tensor([1.0, math.nan, 3.0], requires_grad=True)
    x.max().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    # a nan tensor bound gives nan, as NumPy and PyTorch (it once compared False and let x through)
    x, lo, hi = gg.tensor([2.0, 2.0, 0.5]), gg.tensor([math.nan, 0.0, 0.0]), gg.tensor([3.0, math.nan, 1.0])
    assert_close(gg.clip(x, lo, hi), np.clip(x.numpy(), lo.numpy(), hi.numpy()), equal_nan=True)
    assert_close(x.clamp(min=lo), np.array([math.nan, 2.0, 0.5], np.float32), equal_nan=True)


# ----------------------------------------------------------------------------- return types and spellings


def test_max_min_sort_topk_return_named_tuples():
    x = gg.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    values, indices = x.max(dim=1)                          # not rows: (values, indices)
    assert values.tolist() == [5.0, 6.0] and indices.tolist() == [1, 2] and indices.dtype == gg.int64
    assert x.min(1).indices.tolist() == [0, 1] and x.max(1, keepdim=True).values.shape == (2, 1)
    assert x.max().item() == 6.0 and gg.max(x, axis=1).tolist() == [5.0, 6.0]   # gg.max: values only
    assert x.sort(1).indices.tolist() == [[0, 2, 1], [1, 0, 2]] and gg.sort(x, 1).tolist()[0] == [1, 3, 5]
    assert x.topk(1).values.tolist() == [[5.0], [6.0]]
    assert type(x.cummax(1)).__name__ == "cummax" and x.cummin(1).values.shape == (2, 3)


def test_spellings_pytorch_users_type():
    x = gg.tensor([[1.5, -2.0, 3.0], [0.5, 4.0, -1.0]])
    assert x.neg().tolist() == (-x).tolist() and x.t().shape == (3, 2) and gg.ones(3).t().shape == (3,)
    with pytest.raises(RuntimeError, match="t: expects a tensor with <= 2 dimensions"):
        gg.ones(2, 2, 2).t()
    assert x.int().dtype == gg.int32 and x.long().dtype == gg.int64 and x.bool().dtype == gg.bool
    assert x.contiguous() is x and x.T.contiguous().data.flags.c_contiguous
    assert x.is_cuda is False
    z = x.new_zeros(2, 4)
    assert z.shape == (2, 4) and z.dtype == x.dtype and z.device == x.device and not z.any().item()
    assert x.new_ones((3,), dtype=gg.float64).dtype == gg.float64 and x.new_full((2,), 7.0).tolist() == [7, 7]
    assert gg.empty(2, 3).shape == (2, 3) and gg.empty((4,), dtype=gg.int64).dtype == gg.int64
    assert gg.empty_like(x).shape == x.shape and x.new_empty(5).shape == (5,)


def test_set_default_dtype():
    assert gg.get_default_dtype() == gg.float32
    gg.set_default_dtype(gg.float64)
    try:
        assert gg.tensor([1.5]).dtype == gg.float64 and gg.zeros(2).dtype == gg.float64
        assert (gg.tensor([1, 2]) * 1.5).dtype == gg.float64 and gg.randn(2).dtype == gg.float64
        assert gg.nn.Linear(2, 3).weight.dtype == gg.float64 and gg.exp(gg.arange(3)).dtype == gg.float64
    finally:
        gg.set_default_dtype(gg.float32)
    assert gg.tensor([1.5]).dtype == gg.float32
    with pytest.raises(TypeError, match="set_default_dtype: only floating-point"):
        gg.set_default_dtype(gg.int64)


def test_creation_errors():
    with pytest.raises(TypeError, match="linspace: dtype bool is not supported"):
        gg.linspace(0, 1, 5, dtype=gg.bool)
    with pytest.raises(AttributeError, match="bfloat16 is not supported"):
        gg.bfloat16  # noqa: B018
    with pytest.raises(TypeError, match="bfloat16 is not supported"):
        gg.zeros(2, dtype="bfloat16")


@needs_torch
def test_linspace_with_integer_dtype_matches_torch():
    ours, theirs = gg.linspace(0, 10, 4, dtype=gg.int64), torch.linspace(0, 10, 4, dtype=torch.int64)
    assert ours.dtype == _np_dtype(theirs) and ours.tolist() == theirs.tolist()


def test_the_new_ops_are_in_the_registry_with_samples():
    """Each primitive gets the registry's gradcheck and gradgradcheck (tests/test_registry_gradcheck.py)."""
    primitives = ["floor", "ceil", "round", "trunc", "remainder", "fmod", "divide_rounded", "tan", "arcsin",
                  "arccos", "arctan", "arctan2", "sinh", "cosh", "arcsinh", "arccosh", "arctanh", "log2",
                  "log10", "exp2", "rsqrt", "logaddexp", "copysign", "cumsum", "cumprod", "pnorm"]
    for name in primitives:
        assert name in REGISTRY and REGISTRY[name].samples is not None and REGISTRY[name].higher_order, name
    for name in ("cum_extreme_indices", "argsort", "isposinf", "isneginf", "bitwise_and", "left_shift"):
        assert not REGISTRY[name].differentiable, name


# ----------------------------------------------------------------------------- CUDA


def _device_cases():
    """The unary, binary and einsum cases above, with gpugrad's spelling."""
    for name, (fn, (lo, hi)) in sorted(UNARY.items()):
        marks = pytest.mark.skipif(torch is None, reason="its spelling names PyTorch's dtype") \
            if name == "sum-dtype" else ()
        yield pytest.param(fn, [_u(lo, hi)], id=name, marks=marks)
    for name, (fn, ra, rb) in sorted(BINARY.items()):
        gfn = fn[0] if isinstance(fn, tuple) else fn
        yield pytest.param(gfn, [_u(*ra), _u(*rb, shape=(4,), seed=1)], id=name)
    for spec in EINSUM:
        arrays = [_u(-2, 2, shape, seed=i) for i, shape in enumerate(EINSUM_SHAPES[spec])]
        yield pytest.param(lambda *xs, spec=spec: gg.einsum(spec, *xs), arrays, id=f"einsum {spec}")


@pytest.mark.cuda
@pytest.mark.parametrize("fn,arrays", list(_device_cases()))
def test_ops_on_cuda_equal_the_cpu_and_read_nothing_back(fn, arrays):
    """Each case on "cuda" (float64): the CPU's values and gradients (shapes, dtypes too), and no read
    from the device in the forward or the backward (counted on the emulator)."""
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    results = []
    for device in ("cpu", "cuda"):
        inputs = [gg.tensor(a, dtype=gg.float64, device=device, requires_grad=True) for a in arrays]
        with emulator.host_reads() as reads, np.errstate(divide="ignore", invalid="ignore"):   # x / 0
            outs = _parts(fn(*inputs))
            floats = [o for o in outs if o.requires_grad]
            if floats:
                sum((o * (k + 1)).sum() for k, o in enumerate(floats)).backward()
        results.append(outs + [x.grad for x in inputs])
    assert reads == [], reads
    for a, b in zip(*results):
        assert (a is None) == (b is None)
        if a is not None:
            assert b.device == "cuda:0" and (b.shape, b.dtype) == (a.shape, a.dtype)
            assert_close(b.detach().cpu(), a.detach(), rtol=1e-10, atol=1e-12, equal_nan=True,
                         check_device=False)
