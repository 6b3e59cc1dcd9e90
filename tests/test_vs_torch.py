"""Differential tests: forward values and input gradients equal PyTorch's in float64."""

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad.testing import assert_close

torch = optional.need("torch")    # every test here is a comparison with PyTorch

# (name, gpugrad function, torch function, input ranges)
UNARY = [
    ("exp", gg.exp, torch.exp, (-2, 2)), ("log", gg.log, torch.log, (0.2, 3)),
    ("log1p", gg.log1p, torch.log1p, (-0.5, 2)), ("expm1", gg.expm1, torch.expm1, (-2, 2)),
    ("sqrt", gg.sqrt, torch.sqrt, (0.2, 3)), ("sin", gg.sin, torch.sin, (-3, 3)),
    ("cos", gg.cos, torch.cos, (-3, 3)), ("tanh", gg.tanh, torch.tanh, (-3, 3)),
    ("sigmoid", gg.sigmoid, torch.sigmoid, (-6, 6)), ("relu", gg.relu, torch.relu, (-2, 2)),
    ("abs", gg.abs, torch.abs, (-2, 2)), ("square", gg.square, torch.square, (-2, 2)),
    ("clip", lambda x: gg.clip(x, -0.5, 0.7), lambda x: torch.clamp(x, -0.5, 0.7), (-2, 2)),
    ("neg", lambda x: -x, lambda x: -x, (-2, 2)),
    ("logsumexp", lambda x: gg.logsumexp(x, axis=1), lambda x: torch.logsumexp(x, dim=1), (-3, 3)),
    ("var", lambda x: gg.var(x, axis=0, ddof=1), lambda x: torch.var(x, dim=0), (-2, 2)),
    ("prod", lambda x: x.prod(axis=1), lambda x: x.prod(dim=1), (0.5, 1.5)),
    ("max", lambda x: x.amax(dim=1), lambda x: x.amax(dim=1), (-2, 2)),
    ("max_dim", lambda x: x.max(dim=1).values, lambda x: x.max(dim=1).values, (-2, 2)),
    ("norm", gg.linalg.norm, torch.linalg.norm, (-2, 2)),
    ("index", lambda x: x[[0, 2, 2], 1:], lambda x: x[[0, 2, 2], 1:], (-2, 2)),
    ("transpose", lambda x: x.T.reshape(-1), lambda x: x.T.reshape(-1), (-2, 2)),
]

BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b),
]


def _run(fn, arrays, lib):
    if lib == "torch":
        inputs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    else:
        inputs = [gg.tensor(a, dtype=gg.float64, requires_grad=True) for a in arrays]
    out = fn(*inputs)
    weight = np.linspace(0.5, 1.5, out.numel()).reshape(tuple(out.shape))
    w = torch.tensor(weight) if lib == "torch" else gg.tensor(weight)
    (out * w).sum().backward()
    return out.detach().numpy(), [i.grad.numpy() for i in inputs]


@pytest.mark.parametrize("name,gfn,tfn,rng_", UNARY, ids=[u[0] for u in UNARY])
def test_unary_matches_torch(name, gfn, tfn, rng_):
    a = np.random.default_rng(0).uniform(*rng_, size=(3, 4))
    g_out, g_grads = _run(gfn, [a], "gg")
    t_out, t_grads = _run(tfn, [a], "torch")
    assert_close(g_out, t_out, rtol=1e-10, atol=1e-12)
    assert_close(g_grads[0], t_grads[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name,fn", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3))])
def test_binary_with_broadcasting_matches_torch(name, fn, shapes):
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.5, 2, size=shapes[0]), rng.uniform(0.5, 2, size=shapes[1])
    g_out, g_grads = _run(fn, [a, b], "gg")
    t_out, t_grads = _run(fn, [a, b], "torch")
    assert_close(g_out, t_out, rtol=1e-10)
    for g, t in zip(g_grads, t_grads):
        assert_close(g, t, rtol=1e-8)


def test_small_mlp_matches_torch():
    rng = np.random.default_rng(2)
    x, w1, b1, w2 = (rng.standard_normal(s) for s in [(8, 5), (5, 16), (16,), (16, 3)])

    def mlp(lib, x, w1, b1, w2):
        m = lib
        h = m.tanh(x @ w1 + b1)
        logits = h @ w2
        return (logits - m.logsumexp(logits, 1, keepdims=True)).mean()

    g_out, g_grads = _run(lambda *a: mlp(gg, *a), [x, w1, b1, w2], "gg")
    t_out, t_grads = _run(lambda *a: mlp(torch, *a), [x, w1, b1, w2], "torch")
    assert_close(g_out, t_out, rtol=1e-10)
    for g, t in zip(g_grads, t_grads):
        assert_close(g, t, rtol=1e-8, atol=1e-12)
