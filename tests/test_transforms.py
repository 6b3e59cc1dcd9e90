"""Transforms, higher-order gradients, custom Functions and hooks (one engine for both styles)."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import assert_close


def f64(*values):
    return gg.tensor(np.array(values, dtype=np.float64))


# ----------------------------------------------------------------------------- known results

def test_hessian_of_sum_of_cubes_is_diag_6x():
    x = f64(1.0, -2.0, 0.5)
    assert_close(gg.hessian(lambda x: (x ** 3).sum())(x).numpy(), np.diag(6 * x.numpy()))


def test_grad_of_grad_of_tanh():
    t = np.linspace(-2, 2, 7)
    second = [gg.grad(gg.grad(gg.tanh))(gg.tensor(v, dtype=gg.float64)).item() for v in t]
    th = np.tanh(t)
    assert_close(second, -2 * th * (1 - th ** 2), rtol=1e-10)
    third = gg.grad(gg.grad(gg.grad(gg.tanh)))(gg.tensor(0.3, dtype=gg.float64)).item()
    th = np.tanh(0.3)
    assert third == pytest.approx(-2 * (1 - th ** 2) ** 2 + 4 * th ** 2 * (1 - th ** 2))


def test_jvp_and_vjp_of_sin():
    x, t = f64(0.1, 1.0, 2.5), f64(1.0, -2.0, 0.5)
    out, tangent = gg.jvp(gg.sin, (x,), (t,))
    assert_close(out.numpy(), np.sin(x.numpy()))
    assert_close(tangent.numpy(), np.cos(x.numpy()) * t.numpy())
    out, vjp_fn = gg.vjp(gg.sin, x)
    (g,) = vjp_fn(t)
    assert_close(g.numpy(), np.cos(x.numpy()) * t.numpy())
    (g2,) = vjp_fn(t * 2)                     # vjp_fn can be called again
    assert_close(g2.numpy(), 2 * g.numpy())


def test_jacobian_of_linear_map_is_the_matrix():
    w = gg.randn(3, 4, dtype=gg.float64)
    x = gg.randn(4, dtype=gg.float64)
    assert_close(gg.jacobian(lambda x: w @ x)(x).numpy(), w.numpy())
    jx, jw = gg.jacobian(lambda x, w: w @ x, argnums=(0, 1))(x, w)
    assert jx.shape == (3, 4) and jw.shape == (3, 3, 4)
    assert_close(jw.numpy()[1, 1], x.numpy())


def test_jvp_of_a_nonlinear_map_matches_jacobian():
    def f(x):
        return gg.tanh(x[:2] * x[1:]) * x.sum()

    x, t = gg.randn(3, dtype=gg.float64), gg.randn(3, dtype=gg.float64)
    _, tangent = gg.jvp(f, (x,), (t,))
    assert_close(tangent.numpy(), gg.jacobian(f)(x).numpy() @ t.numpy(), rtol=1e-10)


# ----------------------------------------------------------------------------- grad options

def test_pytree_arguments():
    params = {"w": gg.tensor([[1.0, 2.0]]), "layers": [gg.tensor(3.0), (gg.tensor([1.0, 1.0]),)]}

    def loss(p, scale):
        return (p["w"].sum() * p["layers"][0] + (p["layers"][1][0] ** 2).sum()) * scale

    g = gg.grad(loss)(params, 2.0)
    assert set(g) == {"w", "layers"} and isinstance(g["layers"], list) and isinstance(g["layers"][1], tuple)
    assert g["w"].tolist() == [[6.0, 6.0]] and g["layers"][0].item() == 6.0
    assert g["layers"][1][0].tolist() == [4.0, 4.0]


def test_user_tensors_marked_requires_grad_are_plain_values_for_grad():
    x = gg.arange(3.0, requires_grad=True)
    g = gg.grad(lambda x: (x * x).sum())(x)
    assert not g.requires_grad and x.grad is None


# ----------------------------------------------------------------------------- PyTorch style

def test_backward_create_graph_then_differentiate_the_gradient():
    x = f64(1.0, 2.0)
    x.requires_grad_()
    y = (x ** 3).sum()
    y.backward(create_graph=True)
    assert x.grad.requires_grad
    g = x.grad
    x.grad = None
    g.sum().backward()
    assert_close(x.grad.numpy(), 6 * x.detach().numpy())


def test_autograd_grad_api():
    x = f64(1.0, 2.0)
    x.requires_grad_()
    w = f64(3.0)
    w.requires_grad_()
    y = x * w
    gx, gw = gg.autograd.grad(y, (x, w), grad_outputs=gg.ones_like(y), retain_graph=True)
    assert gx.tolist() == [3.0, 3.0] and gw.tolist() == [3.0]
    assert x.grad is None
    unused = f64(0.0)
    unused.requires_grad_()
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        gg.autograd.grad(y.sum(), [x, unused], retain_graph=True)
    assert gg.autograd.grad(y.sum(), [x, unused], allow_unused=True)[1] is None


def test_autograd_grad_of_a_non_leaf():
    x = f64(2.0)
    x.requires_grad_()
    h = x * x
    y = gg.exp(h)
    (gh,) = gg.autograd.grad(y, h)
    assert gh.item() == pytest.approx(np.exp(4.0))


def test_hvp_matches_torch(torch):
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((16, 5)), rng.standard_normal((16, 2))
    w1, b1, w2 = rng.standard_normal((5, 8)), rng.standard_normal(8), rng.standard_normal((8, 2))
    v = [rng.standard_normal(a.shape) for a in (w1, b1, w2)]

    def loss(lib, w1, b1, w2):
        xt, yt = (torch.tensor(xs), torch.tensor(ys)) if lib is torch else (gg.tensor(xs), gg.tensor(ys))
        h = lib.tanh(xt @ w1 + b1)
        return ((h @ w2 - yt) ** 2).mean()

    params = [gg.tensor(a, requires_grad=True) for a in (w1, b1, w2)]
    grads = gg.autograd.grad(loss(gg, *params), params, create_graph=True)
    dot = sum((g * gg.tensor(vi)).sum() for g, vi in zip(grads, v))
    ours = gg.autograd.grad(dot, params)

    _, theirs = torch.autograd.functional.hvp(
        lambda *p: loss(torch, *p), tuple(torch.tensor(a) for a in (w1, b1, w2)),
        tuple(torch.tensor(a) for a in v))
    for a, b in zip(ours, theirs):
        assert_close(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    # the functional style agrees: the Hessian block of b1 times v_b1
    h = gg.hessian(lambda b: loss(gg, gg.tensor(w1), b, gg.tensor(w2)))(gg.tensor(b1))
    _, only_b = torch.autograd.functional.hvp(
        lambda *p: loss(torch, *p), tuple(torch.tensor(a) for a in (w1, b1, w2)),
        (torch.zeros(w1.shape, dtype=torch.float64), torch.tensor(v[1]),
         torch.zeros(w2.shape, dtype=torch.float64)))
    assert_close(h.numpy() @ v[1], only_b[1].numpy(), rtol=1e-10)


# ----------------------------------------------------------------------------- custom functions

class Cube(gg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g


class ScaledExp(gg.autograd.Function):
    """Saves its output and takes a non-tensor argument."""

    @staticmethod
    def forward(ctx, x, scale):
        out = gg.exp(x) * scale
        ctx.save_for_backward(out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out, None


def test_custom_function_gradcheck_and_second_order():
    x = gg.randn(4, dtype=gg.float64, requires_grad=True)
    assert gg.testing.gradcheck(Cube.apply, x)
    assert gg.testing.gradgradcheck(Cube.apply, x)
    assert gg.testing.gradcheck(lambda t: ScaledExp.apply(t, 2.5), x)
    assert gg.testing.gradgradcheck(lambda t: ScaledExp.apply(t, 2.5), x)
    y = Cube.apply(x)
    assert y.grad_fn.name == "CubeBackward"


def test_custom_function_needs_input_grad_and_errors():
    seen = {}

    class Probe(gg.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            seen["needs"] = ctx.needs_input_grad
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g                                  # wrong: two inputs

    a = gg.ones(2, requires_grad=True)
    out = Probe.apply(a, gg.ones(2))
    assert seen["needs"] == (True, False)
    with pytest.raises(RuntimeError, match="returned 1 gradient"):
        out.sum().backward()


def test_custom_function_saved_tensors_are_freed():
    x = gg.ones(2, requires_grad=True)
    y = Cube.apply(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


# ----------------------------------------------------------------------------- hooks

def test_hooks_on_leaf_and_intermediate():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = x.register_hook(lambda g: g * 10)
    y = x * 3
    y.register_hook(lambda g: seen.append(g.tolist()))
    y.sum().backward()
    assert seen == [[1.0, 1.0]] and x.grad.tolist() == [30.0, 30.0]
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_hook_replacing_an_intermediate_gradient_changes_upstream():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.register_hook(lambda g: gg.zeros_like(g))
    (h + x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


def test_hooks_run_in_functional_grad_too():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: g * 0.5)
    (gx,) = gg.autograd.grad(y.sum(), x)
    assert gx.tolist() == [1.0, 1.0]


def test_retain_grad():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.retain_grad()
    h.retain_grad()                               # twice is the same as once
    (h * 3).sum().backward()
    assert h.grad.tolist() == [3.0, 3.0] and x.grad.tolist() == [6.0, 12.0]


def test_hook_on_a_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gg.ones(2).register_hook(lambda g: g)


def test_hessian_with_tuple_argnums_is_nested():
    def f(x, y):
        return (x ** 2).sum() * y.sum()

    (hxx, hxy), (hyx, hyy) = gg.hessian(f, argnums=(0, 1))(f64(1.0, 2.0), f64(3.0))
    assert_close(hxx.numpy(), 6 * np.eye(2))
    assert_close(hxy.numpy(), [[2.0], [4.0]])
    assert_close(hyx.numpy(), [[2.0, 4.0]])
    assert hyy.numpy().tolist() == [[0.0]]


def test_jacobian_of_a_tuple_output():
    jac_a, jac_b = gg.jacobian(lambda x: (x * 2, x.sum()))(f64(1.0, 2.0))
    assert_close(jac_a.numpy(), 2 * np.eye(2))
    assert_close(jac_b.numpy(), [1.0, 1.0])


def test_removing_a_hook_after_retain_grad():
    x = f64(1.0, 2.0)
    x.requires_grad_()
    y = x * x
    handle = y.register_hook(lambda g: g * 100)
    y.retain_grad()
    handle.remove()
    y.sum().backward()
    assert y.grad.tolist() == [1.0, 1.0] and x.grad.tolist() == [2.0, 4.0]


def test_retain_grad_sees_the_gradient_after_user_hooks():
    x = f64(1.0, 2.0)
    x.requires_grad_()
    y = x * x
    y.retain_grad()
    y.register_hook(lambda g: g * 2)
    y.sum().backward()
    assert y.grad.tolist() == [2.0, 2.0]                 # as PyTorch


def test_aux_is_detached_at_top_level():
    (_, aux), _ = gg.value_and_grad(lambda x: (x.sum(), {"double": x * 2}), has_aux=True)(gg.ones(2))
    assert not aux["double"].requires_grad
