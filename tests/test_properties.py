"""Property-based and differential tests: random programs of registry ops on random shapes.

hypothesis draws programs (elementwise, broadcasting binary ops, reductions over random
axes, shape ops, slicing and integer indexing), and every one is gradchecked in float64
and, where PyTorch is installed, run in PyTorch too: values and all input gradients
must agree within 1e-8.
"""

from __future__ import annotations

import numpy as np
import optional
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpugrad as gg
from gpugrad.testing import assert_close

try:
    import torch
except ImportError:        # the differential half is skipped without it
    torch = None

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# each op: (arity, gpugrad implementation, torch implementation); all smooth on their domain
UNARY = {
    "tanh": (lambda m, x: m.tanh(x)),
    "sin": (lambda m, x: m.sin(x)),
    "sigmoid": (lambda m, x: m.sigmoid(x)),
    "square": (lambda m, x: x * x),
    "exp_tanh": (lambda m, x: m.exp(m.tanh(x))),
    "log1p_sq": (lambda m, x: m.log1p(x * x)),
    "sqrt_1p": (lambda m, x: m.sqrt(1 + x * x)),
    "scale": (lambda m, x: -0.5 * x + 0.25),
}
BINARY = {
    "add": (lambda m, x, y: x + y),
    "sub": (lambda m, x, y: x - y),
    "mul": (lambda m, x, y: x * y),
    "div": (lambda m, x, y: x / (1.5 + m.tanh(y))),
    "pow": (lambda m, x, y: (1.2 + m.sin(x)) ** m.tanh(y)),
}


def _reduce(kind, m, x, axes, keep):
    if not axes:
        return x
    if m is torch:
        if kind == "var":
            return torch.var(x, dim=axes, keepdim=keep, correction=0)
        return getattr(torch, {"sum": "sum", "mean": "mean", "logsumexp": "logsumexp"}[kind])(
            x, dim=axes, keepdim=keep)
    return getattr(gg, kind)(x, axis=axes, keepdims=keep)


def _shapes_broadcasting_to(shape):
    """Strategies for a shape that broadcasts with ``shape``."""
    @st.composite
    def make(draw):
        drop = draw(st.integers(0, len(shape)))
        dims = [1 if draw(st.booleans()) else n for n in shape[drop:]]
        return tuple(dims)
    return make()


@st.composite
def programs(draw):
    """(input shapes, steps): each step names an op and the indices of its operands."""
    base = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    shapes = [base, draw(_shapes_broadcasting_to(base))]
    steps = []
    n_values = len(shapes)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "shape", "index"]))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY))), draw(st.integers(0, n_values - 1))))
        elif kind == "binary":
            i, j = draw(st.integers(0, n_values - 1)), draw(st.integers(0, n_values - 1))
            steps.append(("binary", draw(st.sampled_from(sorted(BINARY))), i, j))
        elif kind == "reduce":
            steps.append(("reduce", draw(st.sampled_from(["sum", "mean", "logsumexp", "var"])),
                          draw(st.integers(0, n_values - 1)), draw(st.integers(0, 7)), draw(st.booleans())))
        elif kind == "shape":
            steps.append(("shape", draw(st.sampled_from(["T", "flatten", "unsqueeze"])),
                          draw(st.integers(0, n_values - 1))))
        else:
            steps.append(("index", draw(st.integers(0, n_values - 1)), draw(st.integers(0, 2)),
                          draw(st.lists(st.integers(0, 10), min_size=1, max_size=4))))
        n_values += 1
    return shapes, steps


def run(m, inputs, steps):
    """Interpret a program with library ``m`` (gpugrad or torch); returns a scalar."""
    values = list(inputs)
    for step in steps:
        kind = step[0]
        if kind == "unary":
            out = UNARY[step[1]](m, values[step[2]])
        elif kind == "binary":
            x, y = values[step[2]], values[step[3]]
            try:
                out = BINARY[step[1]](m, x, y)
            except (ValueError, RuntimeError):
                out = x                             # shapes that do not broadcast: skip the step
        elif kind == "reduce":
            x = values[step[2]]
            ndim = x.ndim if m is gg else x.dim()
            axes = tuple(a for a in range(ndim) if step[3] >> a & 1)
            kind = step[1] if all(x.shape[a] for a in axes) else "sum"   # mean of nothing is NaN
            out = _reduce(kind, m, x, axes, step[4])
        elif kind == "shape":
            x = values[step[2]]
            ndim = x.ndim if m is gg else x.dim()
            if step[1] == "T":
                out = x.permute(tuple(reversed(range(ndim)))) if m is torch else x.T
            elif step[1] == "flatten":
                out = x.reshape(-1)
            else:
                out = x.unsqueeze(0)
        else:
            x = values[step[1]]
            ndim = x.ndim if m is gg else x.dim()
            if ndim == 0 or x.shape[0] == 0:
                out = x
            else:
                n = x.shape[0]
                if step[2] == 0:
                    out = x[1:]
                elif step[2] == 1:
                    out = x[::-1] if m is gg else x.flip(0)
                else:
                    idx = [i % n for i in step[3]]        # repeated indices scatter-add
                    out = x[idx] if m is gg else x[torch.tensor(idx)]
        values.append(out)
    total = values[-1].sum()
    for v in values[:2]:
        total = total + 0.1 * (v * v).sum()          # keep every input in the result
    return total


def _data(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.5, 1.5, size=s) for s in shapes]


@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_random_programs_pass_gradcheck(program, seed):
    shapes, steps = program
    arrays = _data(shapes, seed)
    inputs = [gg.tensor(a, dtype=gg.float64, requires_grad=True) for a in arrays]
    assert gg.testing.gradcheck(lambda *xs: run(gg, xs, steps), *inputs)


@optional.needs("torch")
@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_random_programs_match_torch(program, seed):
    shapes, steps = program
    arrays = _data(shapes, seed)
    ours = [gg.tensor(a, dtype=gg.float64, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out_g, out_t = run(gg, ours, steps), run(torch, theirs, steps)
    assert_close(out_g.item(), out_t.item(), rtol=1e-8, atol=1e-10)
    out_g.backward()
    out_t.backward()
    for g, t in zip(ours, theirs):
        assert_close(g.grad.numpy(), t.grad.numpy(), rtol=1e-8, atol=1e-10)


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), st.data())
def test_random_slicing_and_indexing(shape, data):
    index = []
    for n in shape:
        choice = data.draw(st.sampled_from(["int", "slice", "array", "full"]))
        if choice == "int":
            index.append(data.draw(st.integers(-n, n - 1)))
        elif choice == "slice":
            start = data.draw(st.integers(-n, n))
            stop = data.draw(st.integers(-n, n))
            step = data.draw(st.sampled_from([1, 2, -1]))
            index.append(slice(start, stop, step))
        elif choice == "array":
            index.append(np.array(data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4))))
        else:
            index.append(slice(None))
    index = tuple(index)
    a = np.random.default_rng(0).standard_normal(shape)
    x = gg.tensor(a, requires_grad=True)
    # PyTorch's reading, through NumPy: the integers select first, then the index arrays apply to
    # what is left (NumPy alone would move the arrays' dimensions first when an integer splits them)
    first = tuple(slice(None) if isinstance(i, np.ndarray) else i for i in index)
    then = tuple(i if isinstance(i, np.ndarray) else slice(None) for i in index if not isinstance(i, int))
    try:
        expected = a[first][then]
    except IndexError:
        with pytest.raises(IndexError):
            x[index]
        return
    assert_close(x[index].detach().numpy(), expected, rtol=0, atol=0)
    if expected.size:
        assert gg.testing.gradcheck(lambda t: t[index] * 1.0, x)


@SETTINGS
@given(st.lists(st.integers(1, 3), min_size=0, max_size=4).map(tuple), st.data())
def test_reductions_over_random_axes(shape, data):
    ndim = len(shape)
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, ndim - 1), max_size=ndim)))) if ndim else ()
    keep = data.draw(st.booleans())
    a = np.random.default_rng(1).standard_normal(shape)
    x = gg.tensor(a, requires_grad=True)
    for name in ("sum", "mean", "max", "prod", "logsumexp"):
        ours = getattr(gg, name)(x, axis=axes, keepdims=keep)
        if name == "logsumexp":
            ref = np.log(np.exp(a).sum(axis=axes, keepdims=keep))
        else:
            ref = getattr(np, name)(a, axis=axes, keepdims=keep)
        assert_close(ours.detach().numpy(), ref, rtol=1e-12)
        assert gg.testing.gradcheck(lambda t, name=name: getattr(gg, name)(t, axis=axes, keepdims=keep), x)
