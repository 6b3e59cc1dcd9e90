"""Every op in the registry, on every sample it declares, passes gradcheck in float64.

Adding an op with samples adds its test here; no new test code is needed.
"""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops.registry import REGISTRY, OpDef
from gpugrad.ops.samples import Const

# ops that declare no samples, and why
NO_SAMPLES = {
    "to_device": "moves between CPU and GPU; checked by the CUDA tests",
}

# ops whose VJP cannot run on Tensors (create_graph), and why
NO_HIGHER_ORDER: dict[str, str] = {}

# samples whose second derivative is not smooth at the point checked, the absolute tolerance their
# gradgradcheck needs, and why (everything else runs with gradcheck's strict defaults)
KINKS = {
    "pnorm[(2, 3)-(1,)-{'ord': 3.0}-True]": (1e-6, "zero entries: the gradient of |x|^3 is sign(x) x^2, "
                                             "whose central difference at 0 is eps / |x|_3^2, not 0"),
}


def _cases(higher_order=False):
    rng = np.random.default_rng(1234)
    for name, op in sorted(REGISTRY.items()):
        if not op.differentiable or op.samples is None or (higher_order and not op.higher_order):
            continue
        for sample in op.samples(rng):
            yield pytest.param(op, sample, id=f"{name}[{sample.name}]")


def _as_inputs(sample):
    args = []
    for a in sample.args:
        if isinstance(a, Const):
            args.append(a.value)
        else:
            args.append(gg.tensor(a, dtype=gg.float64, requires_grad=True))
    return args


@pytest.mark.parametrize("op,sample", list(_cases()))
def test_gradcheck(op, sample):
    inputs = _as_inputs(sample)
    assert gg.testing.gradcheck(lambda *xs: op(*xs, **sample.params), *inputs)


@pytest.mark.parametrize("op,sample", list(_cases(higher_order=True)))
def test_gradgradcheck(op, sample):
    """Second order: the VJP rule itself, run on Tensors with create_graph, differentiates right."""
    inputs = _as_inputs(sample)
    atol = KINKS.get(f"{op.name}[{sample.name}]", (gg.testing.ATOL,))[0]
    assert gg.testing.gradgradcheck(lambda *xs: op(*xs, **sample.params), *inputs, atol=atol)


def test_ops_without_higher_order_are_listed():
    assert {n for n, op in REGISTRY.items() if op.differentiable and not op.higher_order} == \
        set(NO_HIGHER_ORDER)


def test_create_graph_through_an_op_without_higher_order_says_it_is_unsupported():
    def _first_order_only(xp, x):
        return xp.exp(x)

    op = OpDef(_first_order_only, save=("out",), samples=None, differentiable=True, broadcast=False,
               float_inputs=False, fused=None, higher_order=False)   # not registered: no global state
    op.vjp(lambda xp, g, out, x: (g * out,))
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(NotImplementedError, match="first_order_only: create_graph"):
        gg.autograd.grad(op(x).sum(), x, create_graph=True)


def test_every_differentiable_op_has_samples_or_a_reason():
    missing = {n for n, op in REGISTRY.items() if op.differentiable and op.samples is None}
    assert missing == set(NO_SAMPLES)


def test_every_differentiable_op_has_a_vjp():
    assert [n for n, op in REGISTRY.items() if op.differentiable and op.vjp_rule is None] == []
