"""JAX-style transforms: grad, value_and_grad, stop_gradient."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import assert_close


def test_grad_of_two_x_dot_x():
    x = gg.arange(4.0)
    g = gg.grad(lambda x: 2 * gg.dot(x, x))(x)
    assert g.tolist() == [0.0, 4.0, 8.0, 12.0]
    assert x.grad is None and not x.requires_grad     # the caller's tensor is untouched


def test_grad_of_sum_and_of_non_scalar_reduced():
    x = gg.arange(4.0)
    assert gg.grad(lambda x: x.sum())(x).tolist() == [1.0] * 4
    assert gg.grad(lambda x: (x * x).sum())(x).tolist() == [0.0, 2.0, 4.0, 6.0]


def test_grad_of_non_scalar_function_is_a_clear_error():
    with pytest.raises(TypeError, match="scalar-output"):
        gg.grad(lambda x: x * x)(gg.arange(4.0))


def test_grad_of_integer_argument_is_a_clear_error():
    with pytest.raises(TypeError, match="floating-point"):
        gg.grad(lambda x: x * 2.0)(3)


def test_grad_accepts_python_numbers_and_numpy():
    assert gg.grad(lambda x: x * x)(3.0).item() == 6.0
    assert gg.grad(lambda x: (x * x).sum())(np.array([1.0, 2.0])).tolist() == [2.0, 4.0]


def test_value_and_grad():
    value, g = gg.value_and_grad(lambda x: (x ** 3).sum())(gg.tensor([1.0, 2.0]))
    assert value.item() == 9.0 and not value.requires_grad
    assert g.tolist() == [3.0, 12.0]


def test_argnums_and_has_aux():
    def f(x, y, scale):
        return (x * y).sum() * scale, {"note": "aux"}

    gx, aux = gg.grad(f, has_aux=True)(gg.tensor([1.0, 2.0]), gg.tensor([3.0, 4.0]), 2.0)
    assert gx.tolist() == [6.0, 8.0] and aux == {"note": "aux"}
    (value, aux), (gx, gy) = gg.value_and_grad(f, argnums=(0, 1), has_aux=True)(
        gg.tensor([1.0, 2.0]), gg.tensor([3.0, 4.0]), 2.0)
    assert value.item() == 22.0 and gx.tolist() == [6.0, 8.0] and gy.tolist() == [2.0, 4.0]


def test_grad_of_a_constant_function_is_zero():
    assert gg.grad(lambda x: gg.tensor(1.0))(gg.ones(3)).tolist() == [0.0, 0.0, 0.0]


def test_grad_ignores_an_outer_no_grad():
    with gg.no_grad():
        assert gg.grad(lambda x: x * x)(2.0).item() == 4.0


def test_stop_gradient():
    x = gg.arange(4.0)
    y = lambda x: x * x  # noqa: E731 - as in the chapter
    z = lambda x: gg.stop_gradient(y(x)) * x  # noqa: E731
    assert (gg.grad(lambda x: z(x).sum())(x) == y(x)).all()
    assert (gg.grad(lambda x: y(x).sum())(x) == 2 * x).all()


def test_grad_through_data_dependent_control_flow():
    def f(a):
        b = a * 2
        while gg.linalg.norm(b) < 1000:
            b = b * 2
        if b.sum() > 0:
            c = b
        else:
            c = 100 * b
        return c

    gg.manual_seed(1)
    a = gg.randn(size=())
    d = f(a)
    d_grad = gg.grad(f)(a)
    assert_close(d_grad.item(), (d / a).item(), rtol=1e-6)
    assert gg.grad(f)(gg.tensor(-0.5)).item() == pytest.approx(100 * 2048)


def test_grad_leaves_graphs_it_closes_over_intact():
    x = gg.arange(4.0).requires_grad_()
    w = x * x                                   # computed outside, with its own graph
    g = gg.grad(lambda a: (a * w).sum())(gg.ones(4))
    assert g.tolist() == [0.0, 1.0, 4.0, 9.0]
    assert x.grad is None                       # grad() never accumulates into .grad
    w.sum().backward()                          # w's graph was neither run nor freed
    assert x.grad.tolist() == [0.0, 2.0, 4.0, 6.0]
