"""Fuzzing the public entry points with malformed arguments.

Each call either returns a Tensor (checked against NumPy where NumPy accepts the same
arguments) or raises a clear, built-in error: TypeError, ValueError, IndexError or
RuntimeError, or MemoryError for a size the machine cannot hold (gg.eye(10**6) asks for
3.6 TiB; NumPy's message gives the size, shape and dtype). Anything else (AttributeError,
KeyError, ZeroDivisionError, a crash) is a bug.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpugrad as gg
from gpugrad.testing import assert_close

CLEAR = (TypeError, ValueError, IndexError, RuntimeError, NotImplementedError, MemoryError)


def _values():
    tensors = st.sampled_from([
        lambda: gg.tensor(2.0), lambda: gg.zeros(0), lambda: gg.zeros(2, 0), lambda: gg.ones(3),
        lambda: gg.arange(6.0).reshape(2, 3), lambda: gg.tensor([math.nan, math.inf]),
        lambda: gg.tensor([1, 2]), lambda: gg.tensor([True, False]),
        lambda: gg.ones(2, requires_grad=True), lambda: gg.ones(2, dtype=gg.float64),
    ]).map(lambda make: make())
    junk = st.sampled_from([None, "abc", [], [[1, 2], [3]], {}, object(), math.nan, math.inf, -1, 0,
                            10**6, 2.5, (1, -2), (), slice(None), Ellipsis, np.zeros(2), b"x", 1j])
    return st.one_of(tensors, junk)


FUNCTIONS = {
    "tensor": lambda a, b: gg.tensor(a, dtype=b),
    "zeros": lambda a, b: gg.zeros(a, dtype=b),
    "full": lambda a, b: gg.full(a, b),
    "arange": lambda a, b: gg.arange(a, b),
    "linspace": lambda a, b: gg.linspace(a, b, 3),
    "eye": lambda a, b: gg.eye(a, b),
    "randn": lambda a, b: gg.randn(a, dtype=b),
    "add": lambda a, b: gg.add(a, b),
    "mul": lambda a, b: a * b,
    "div": lambda a, b: gg.divide(a, b),
    "pow": lambda a, b: gg.power(a, b),
    "matmul": lambda a, b: gg.matmul(a, b),
    "dot": lambda a, b: gg.dot(a, b),
    "maximum": lambda a, b: gg.maximum(a, b),
    "where": lambda a, b: gg.where(a, b, 0.0),
    "exp": lambda a, b: gg.exp(a),
    "clip": lambda a, b: gg.clip(a, b, None),
    "sum": lambda a, b: gg.sum(a, axis=b),
    "mean": lambda a, b: gg.mean(a, axis=b),
    "max": lambda a, b: gg.max(a, axis=b),
    "argmax": lambda a, b: gg.argmax(a, axis=b),
    "logsumexp": lambda a, b: gg.logsumexp(a, axis=b),
    "reshape": lambda a, b: gg.reshape(a, b),
    "transpose": lambda a, b: gg.transpose(a, b),
    "squeeze": lambda a, b: gg.squeeze(a, b),
    "expand_dims": lambda a, b: gg.expand_dims(a, b),
    "broadcast_to": lambda a, b: gg.broadcast_to(a, b),
    "concatenate": lambda a, b: gg.concatenate([a, b]),
    "stack": lambda a, b: gg.stack([a, b]),
    "getitem": lambda a, b: a[b],
    "norm": lambda a, b: gg.linalg.norm(a, b),
    "astype": lambda a, b: a.astype(b),
    "to": lambda a, b: a.to(b),
    "backward": lambda a, b: a.backward(b),
    "grad": lambda a, b: gg.grad(lambda t: (t * b).sum())(a),
    "item": lambda a, b: a.item(),
    "bool": lambda a, b: bool(a),
    "gradcheck": lambda a, b: gg.testing.gradcheck(lambda t: t * b, a),
}


METHODS = {"getitem", "astype", "to", "backward", "item", "bool", "mul", "grad"}  # a must be a Tensor


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FUNCTIONS)), _values(), _values())
def test_malformed_arguments_give_clear_errors(name, a, b):
    import warnings
    if name in METHODS:
        assume(isinstance(a, gg.Tensor))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            result = FUNCTIONS[name](a, b)
        except CLEAR as err:
            assert str(err), f"{name}: {type(err).__name__} without a message"
            return
        assert result is None or isinstance(result, (gg.Tensor, bool, int, float, complex, tuple))
        if isinstance(result, gg.Tensor) and name in NUMPY:
            _same_as_numpy(name, result, a, b)


# what NumPy computes for the same arguments (Tensors given as their arrays); gpugrad may accept more
# (PyTorch's rules), so only results NumPy also gives are compared, by shape and values
NUMPY = {
    "add": np.add, "mul": np.multiply, "div": np.divide, "pow": np.power, "matmul": np.matmul,
    "dot": np.dot, "maximum": np.maximum, "exp": lambda a, b: np.exp(a),
    "clip": lambda a, b: np.clip(a, b, None),
    "sum": lambda a, b: np.sum(a, axis=b), "mean": lambda a, b: np.mean(a, axis=b),
    "max": lambda a, b: np.max(a, axis=b), "argmax": lambda a, b: np.argmax(a, axis=b),
    "reshape": np.reshape, "transpose": np.transpose, "squeeze": lambda a, b: np.squeeze(a, b),
    "expand_dims": np.expand_dims, "broadcast_to": np.broadcast_to,
    "concatenate": lambda a, b: np.concatenate([a, b]), "stack": lambda a, b: np.stack([a, b]),
    "getitem": lambda a, b: a[b], "where": lambda a, b: np.where(a, b, 0.0),
}


def _same_as_numpy(name, result, a, b):
    args = [x.detach().numpy() if isinstance(x, gg.Tensor) else x for x in (a, b)]
    try:
        expected = np.asarray(NUMPY[name](*args))
    except Exception:  # noqa: BLE001 - NumPy refusing is no comparison
        return
    if expected.dtype.kind not in "biuf":
        return
    rtol = max(1e-5, 4 * float(np.finfo(expected.dtype).eps)) if expected.dtype.kind == "f" else 1e-5
    assert_close(result.detach(), expected, check_dtype=False, equal_nan=True, rtol=rtol, atol=1e-6,
                 msg=f"{name}({a!r}, {b!r}) vs NumPy")       # NumPy's bool -> float16 is coarser


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["add", "mul", "maximum", "matmul"]),
       st.lists(st.integers(0, 3), max_size=3).map(tuple), st.lists(st.integers(0, 3), max_size=3).map(tuple))
def test_shape_combinations_match_numpy(name, sa, sb):
    a, b = np.ones(sa), np.full(sb, 2.0)
    ref = {"add": np.add, "mul": np.multiply, "maximum": np.maximum, "matmul": np.matmul}[name]
    try:
        expected = ref(a, b)
    except ValueError:
        expected = None
    try:
        got = FUNCTIONS[name](gg.tensor(a), gg.tensor(b))
    except ValueError as err:
        assert expected is None, f"{name}{sa, sb}: gpugrad refused ({err}) what NumPy accepts"
        assert name in str(err)
        return
    assert expected is not None, f"{name}{sa, sb}: NumPy refuses, gpugrad returned {got.shape}"
    assert_close(got.numpy(), expected, rtol=0, atol=0)
