"""Every op of the registry, traced by gg.jit and replayed, equals the eager op: values and gradients.

For each sample an op declares (the registry's own test inputs, as in
tests/test_registry_gradcheck.py), a jitted function applies the op and, for a differentiable
op, takes the gradient of a weighted sum of its float outputs with respect to every input.
It is called on the sample (the trace), again (the replay), and on the sample's inputs scaled
by a random factor near 1 (a replay on new values: nothing may have been frozen), each time
against the same eager computation: shapes, dtypes and values, float64, on CPU and CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops.registry import REGISTRY
from gpugrad.ops.samples import Const
from gpugrad.testing import assert_close

# on the CPU a replay makes the eager NumPy calls: equal; on CUDA fused kernels may differ in the last bits
TOL = {"cpu": 0.0, "cuda": 1e-12}


def _cases():
    rng = np.random.default_rng(4321)
    for name, op in sorted(REGISTRY.items()):
        if op.samples is None:
            continue
        for sample in op.samples(rng):
            yield pytest.param(op, sample, id=f"{name}[{sample.name}]")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    if request.param == "cuda" and not gg.cuda.is_available():
        pytest.skip(f"no CUDA device: {gg.cuda.unavailable_reason()}")
    return request.param


def _inputs(op, sample, device, scale=None):
    rng = np.random.default_rng(7)
    args = []
    for a in sample.args:
        if isinstance(a, Const):      # an index, a mask, a target: a tensor argument of the jitted function
            value = a.value
            args.append(gg.tensor(value, device=device) if isinstance(value, np.ndarray) else value)
            continue
        value = a if scale is None else a * rng.uniform(1 - scale, 1 + scale, size=np.shape(a))
        args.append(gg.tensor(np.asarray(value, dtype=np.float64), device=device,
                              requires_grad=op.differentiable))
    return args


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _apply(op, params, weights):
    def f(*args):
        outs = _flat(op(*args, **params))
        if not op.differentiable:
            return outs, []
        leaves = [a for a in args if isinstance(a, gg.Tensor) and a.requires_grad]
        floats = [o for o in outs if isinstance(o, gg.Tensor) and o.requires_grad]
        loss = sum((o * weights(o.shape, o.device)).sum() for o in floats)
        grads = gg.autograd.grad(loss, leaves, allow_unused=True) if floats else [None] * len(leaves)
        return outs, [g if g is not None else gg.zeros(1) for g in grads]
    return f


def _weights():
    made: dict = {}

    def weights(shape, device):
        key = (shape, str(device))
        if key not in made:
            rng = np.random.default_rng(abs(hash(key)) % 2**32)
            made[key] = gg.tensor(rng.uniform(0.5, 1.5, size=shape), dtype=gg.float64, device=device)
        return made[key]
    return weights


def _plain(t):
    return t.detach() if isinstance(t, gg.Tensor) else np.asarray(t)


def _assert_equal(got, want, tol):
    """The same kind, shape, dtype and device, and close values."""
    assert type(got) is type(want), (type(got), type(want))
    assert_close(_plain(got), _plain(want), rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("op,sample", list(_cases()))
def test_traced_and_replayed_op_equals_eager(device, op, sample):
    weights = _weights()
    eager = _apply(op, sample.params, weights)
    jitted = gg.jit(_apply(op, sample.params, weights))
    for scale in (None, None, 0.01, 0.02):
        args = _inputs(op, sample, device, scale)
        try:
            want_outs, want_grads = eager(*args)
        except Exception as err:  # noqa: BLE001 - the eager op's own failure is another test's business
            if scale is not None:
                raise
            pytest.skip(f"the eager op fails on {device} (tests/test_cuda.py reports it): "
                        f"{type(err).__name__}")
        got_outs, got_grads = jitted(*_inputs(op, sample, device, scale))
        assert len(got_outs) == len(want_outs) and len(got_grads) == len(want_grads)
        for got, want in zip(got_outs + got_grads, want_outs + want_grads):
            _assert_equal(got, want, TOL[device])
    assert jitted.traces <= 3, f"traced {jitted.traces} times for 4 calls of one signature"
