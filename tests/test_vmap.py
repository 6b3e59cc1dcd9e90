"""gg.vmap by hand: in_axes/out_axes, nesting, every transform in both orders, per-example gradients,
batched indices, composites, randomness, fallback and the errors. Each result equals a Python loop
(shape, dtype and values); tests/test_vmap_registry.py covers every op automatically."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import random
from gpugrad.func import functional_call
from gpugrad.testing import assert_close

F = gg.nn.functional


def t(*shape, seed=0, lo=-1.5, hi=1.5):
    values = np.random.default_rng(seed + 17 * len(shape)).uniform(lo, hi, size=shape)
    return gg.tensor(values, dtype=gg.float64)


def ints(seed, high, shape):
    return gg.tensor(np.random.default_rng(seed).integers(0, high, shape))


def same(actual, expected, rtol=1e-10, atol=1e-12):
    assert isinstance(actual, gg.Tensor) and not isinstance(actual, gg.batched.BatchedTensor)
    assert_close(actual, expected, rtol=rtol, atol=atol)


def loop(f, *args, axes=None, out_axis=0):
    """The reference: f on each batch entry (``axes`` of the arguments, None: shared), stacked at out_axis."""
    axes = axes or [0] * len(args)
    size = next(a.shape[ax] for a, ax in zip(args, axes) if ax is not None)
    outs = [f(*[a if ax is None else gg.tensor(np.take(a.numpy(), i, axis=ax)) for a, ax in zip(args, axes)])
            for i in range(size)]
    return gg.tensor(np.stack([o.numpy() for o in outs], axis=out_axis))


# ----------------------------------------------------------------------------- axes

def test_in_axes_out_axes_and_negative_axes():
    x, w = t(4, 3), t(3, 2)
    f = lambda x, w: gg.tanh(x @ w)      # noqa: E731
    same(gg.vmap(f, in_axes=(0, None))(x, w), loop(f, x, w, axes=[0, None]))
    same(gg.vmap(f, in_axes=(-1, None))(x.T, w), loop(f, x, w, axes=[0, None]))
    same(gg.vmap(f, in_axes=(0, None), out_axes=1)(x, w), loop(f, x, w, axes=[0, None], out_axis=1))
    same(gg.vmap(f, in_axes=(0, None), out_axes=-1)(x, w), loop(f, x, w, axes=[0, None], out_axis=1))
    ws = t(4, 3, 2, seed=1)
    same(gg.vmap(f)(x, ws), loop(f, x, ws))


def test_pytrees_in_and_out_and_keyword_arguments():
    params = {"w": t(3, 2), "b": t(5, 2, seed=1)}
    xs = t(5, 3, seed=2)

    def f(p, x, scale=1.0):
        out = x @ p["w"] + p["b"]
        return {"out": out * scale, "sum": out.sum()}, [x.sum()]

    got, (xsum,) = gg.vmap(f, in_axes=({"w": None, "b": 0}, 0), out_axes=({"out": 1, "sum": 0}, [0]))(
        params, xs, scale=2.0)
    for i in range(5):
        ref, _ = f({"w": params["w"], "b": params["b"][i]}, xs[i], scale=2.0)
        assert_close(got["out"][:, i], ref["out"])
        assert_close(got["sum"][i], ref["sum"])
    same(xsum, gg.tensor(xs.numpy().sum(axis=1)))


def test_unbatched_outputs_are_broadcast_and_none_passes_them():
    x, c = t(3, 2), t(2)
    out, const = gg.vmap(lambda x: (x * 2, c), out_axes=(0, None))(x)
    same(out, x * 2)
    assert const is c
    same(gg.vmap(lambda x: c)(x), gg.stack([c, c, c]))


def test_numpy_arguments_are_mapped_too():
    same(gg.vmap(lambda v: v.sum())(np.ones((3, 2))), gg.tensor([2.0, 2.0, 2.0], dtype=gg.float64))


@pytest.mark.parametrize("call,error,match", [
    (lambda: gg.vmap(lambda x: x, in_axes=None)(t(3)), ValueError, "no argument is mapped"),
    (lambda: gg.vmap(lambda x, y: x + y)(t(3), t(4)), ValueError, "different sizes"),
    (lambda: gg.vmap(lambda x: x)(gg.tensor(1.0)), ValueError, "0-d tensor cannot be mapped"),
    (lambda: gg.vmap(lambda x: x, in_axes=2)(t(3, 2)), ValueError, "no such axis"),
    (lambda: gg.vmap(lambda x: x, in_axes=(0, 0))(t(3)), ValueError, "one per argument"),
    (lambda: gg.vmap(lambda x: x, in_axes=({"a": 0},))(t(3)), ValueError, "does not match the structure"),
    (lambda: gg.vmap(lambda x: x, out_axes=None)(t(3)), ValueError, "out_axes is None"),
    (lambda: gg.vmap(lambda x: 3.0)(t(3)), TypeError, "where a tensor was expected"),
    (lambda: gg.vmap(lambda x: x, in_axes=1.5)(t(3)), TypeError, "ints or None"),
    (lambda: gg.vmap(lambda x: x)(3.0), TypeError, "not a tensor"),
    (lambda: gg.vmap(lambda x: x, randomness="maybe"), ValueError, "randomness must be"),
])
def test_bad_arguments_are_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("body,match", [
    (lambda x: x.item(), r"item\(\)"),
    (lambda x: x if x.sum() > 0 else -x, "truth value"),
    (lambda x: float(x.sum()), "Python float"),
    (lambda x: x.numpy(), "NumPy array"),
    (lambda x: gg.tensor(x), "values as an array"),
    (lambda x: x[x > 0], "boolean mask"),
])
def test_reading_values_inside_vmap_says_why(body, match):
    with pytest.raises((RuntimeError, IndexError), match=match):
        gg.vmap(body)(t(3, 2))


def test_in_place_changes_and_backward_inside_vmap_are_refused():
    def inplace(x):
        x += 1
        return x

    with pytest.raises(RuntimeError, match="in-place change of a batched tensor"):
        gg.vmap(inplace)(t(3, 2))
    with pytest.raises(RuntimeError, match="take gradients with gg.grad"):
        gg.vmap(lambda x: x.sum().backward())(t(3, 2))


def test_a_batched_tensor_that_escapes_its_vmap_is_an_error():
    kept = []
    gg.vmap(lambda x: kept.append(x) or x)(t(3, 2))
    with pytest.raises(RuntimeError, match="escaped the vmap"):
        kept[0] + 1


def test_repr_of_a_batched_tensor_names_its_level():
    seen = []
    gg.vmap(lambda x: seen.append(repr(x)) or x)(t(3, 2))
    assert seen[0].startswith("BatchedTensor(level=") and "bdim=0" in seen[0]


# ----------------------------------------------------------------------------- nesting

def test_vmap_of_vmap_equals_a_double_loop():
    x, y = t(3, 4, 2), t(4, 2, seed=1)
    f = lambda a, b: gg.sin(a) * b + (a @ b)   # noqa: E731
    inner = gg.vmap(f, in_axes=(0, 0))
    got = gg.vmap(inner, in_axes=(0, None))(x, y)
    ref = np.stack([np.stack([f(x[i, j], y[j]).numpy() for j in range(4)]) for i in range(3)])
    same(got, gg.tensor(ref))


def test_an_inner_vmap_closing_over_an_outer_batched_value():
    xs, ys = t(3, 2), t(5, 2, seed=1)
    got = gg.vmap(lambda x: gg.vmap(lambda y: (x * y).sum())(ys))(xs)
    same(got, gg.tensor(xs.numpy() @ ys.numpy().T))


def test_nested_in_axes_other_than_zero():
    x = t(2, 3, 4)
    got = gg.vmap(gg.vmap(lambda v: v.sum(), in_axes=1), in_axes=2)(x)     # (4, 2)
    same(got, gg.tensor(x.numpy().sum(axis=0).T))


# ----------------------------------------------------------------------------- composition with transforms

def f_scalar(x):
    return (gg.tanh(x) * x ** 2).sum() + gg.sin(x).prod()


def f_vector(x):
    return gg.stack([gg.tanh(x).sum() * x[0], gg.exp(x).mean(), (x * x).sum()])


def test_vmap_of_grad_and_grad_of_vmap():
    xs = t(4, 3)
    same(gg.vmap(gg.grad(f_scalar))(xs), loop(gg.grad(f_scalar), xs))
    total = gg.grad(lambda xs: gg.vmap(f_scalar)(xs).sum())(xs)
    same(total, loop(gg.grad(f_scalar), xs))


def test_vmap_of_value_and_grad_with_aux():
    xs = t(4, 3)
    (values, aux), grads = gg.vmap(gg.value_and_grad(lambda x: (f_scalar(x), x.mean()), has_aux=True))(xs)
    same(values, loop(f_scalar, xs))
    same(aux, gg.tensor(xs.numpy().mean(axis=1)))
    same(grads, loop(gg.grad(f_scalar), xs))


@pytest.mark.parametrize("transform", [gg.jacobian, gg.jacfwd, gg.hessian])
def test_vmap_of_jacobians_and_hessians(transform):
    xs = t(3, 4)
    f = f_scalar if transform is gg.hessian else f_vector
    same(gg.vmap(transform(f))(xs), loop(transform(f), xs))


def test_jacobian_and_hessian_of_a_vmapped_function():
    x = t(4)
    g = gg.vmap(lambda a: gg.tanh(a) * a, in_axes=0)       # elementwise: a diagonal Jacobian
    same(gg.jacobian(g)(x), gg.tensor(np.diag(gg.grad(lambda v: (gg.tanh(v) * v).sum())(x).numpy())))
    h = gg.hessian(lambda v: gg.vmap(lambda a: gg.sin(a) * a)(v).sum())(x)
    same(h, gg.hessian(lambda v: (gg.sin(v) * v).sum())(x))


def test_vmap_of_jvp_and_vjp_and_their_transforms_of_vmap():
    xs, ts, cs = t(4, 3), t(4, 3, seed=1), t(4, 3, seed=2)
    f = lambda x: gg.tanh(x) * x.sum()          # noqa: E731
    push = lambda x, v: gg.jvp(f, (x,), (v,))[1]      # noqa: E731
    pull = lambda x, c: gg.vjp(f, x)[1](c)[0]         # noqa: E731
    same(gg.vmap(push)(xs, ts), loop(push, xs, ts))
    same(gg.vmap(pull)(xs, cs), loop(pull, xs, cs))
    out, tangent = gg.jvp(gg.vmap(f), (xs,), (ts,))
    same(tangent, loop(push, xs, ts))
    _, pull_all = gg.vjp(gg.vmap(f), xs)
    same(pull_all(cs)[0], loop(pull, xs, cs))


def test_a_vjp_function_made_outside_vmap_pulls_a_batch_of_cotangents():
    x = t(3)
    out, pull = gg.vjp(f_vector, x)
    basis = gg.eye(3, dtype=gg.float64)
    same(gg.vmap(lambda c: pull(c)[0])(basis), gg.jacobian(f_vector)(x))


def test_grad_of_grad_inside_vmap():
    xs = t(4, 3)
    g2 = gg.grad(lambda x: gg.grad(f_scalar)(x).sum())
    same(gg.vmap(g2)(xs), loop(g2, xs))


def test_grad_through_a_vmap_of_per_example_gradients():
    # d/dw of sum over examples of |grad_w loss(w, x_i)|^2: vmap and grad interleaved three deep
    w, xs = t(3), t(5, 3, seed=1)
    loss = lambda w, x: gg.tanh((w * x).sum()) ** 2     # noqa: E731

    def penalty(w):
        return (gg.vmap(gg.grad(loss), in_axes=(None, 0))(w, xs) ** 2).sum()

    def penalty_loop(w):
        return sum((gg.grad(loss)(w, xs[i]) ** 2).sum() for i in range(5))

    same(gg.grad(penalty)(w), gg.grad(penalty_loop)(w))


def test_jacobian_and_jacfwd_agree_on_pytrees_and_tuple_argnums():
    params = {"w": t(3, 2), "b": t(2, seed=1)}
    x = t(4, 3, seed=2)

    def f(p, x):
        return {"y": gg.tanh(x @ p["w"] + p["b"]), "s": (x ** 2).sum()}

    rev = gg.jacobian(f, argnums=(0, 1))(params, x)
    fwd = gg.jacfwd(f, argnums=(0, 1))(params, x)
    for key in ("y", "s"):
        same(fwd[key][1], rev[key][1])
        for name in ("w", "b"):
            same(fwd[key][0][name], rev[key][0][name])
    assert rev["y"][0]["w"].shape == (4, 2, 3, 2) and rev["s"][1].shape == (4, 3)


def test_chunks_give_the_same_results():
    xs = t(7, 3)
    f = lambda x: (gg.tanh(x) * 2, x.sum())      # noqa: E731
    whole = gg.vmap(f, out_axes=(1, 0))(xs)
    for chunk in (1, 3, 7, 50):
        parts = gg.vmap(f, out_axes=(1, 0), chunk_size=chunk)(xs)
        same(parts[0], whole[0])
        same(parts[1], whole[1])
    x = t(5)
    for chunk in (1, 2, None):
        same(gg.hessian(f_scalar, chunk_size=chunk)(x), gg.hessian(f_scalar, chunk_size=5)(x))
        same(gg.jacobian(f_vector, chunk_size=chunk)(x), gg.jacfwd(f_vector, chunk_size=chunk)(x))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        gg.vmap(f, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        gg.jacobian(f, chunk_size=1.5)
    with pytest.raises(ValueError, match="randomness='same'"):
        gg.vmap(f, chunk_size=2, randomness="same")


def test_jacfwd_and_jacrev_of_an_empty_input_or_output():
    assert gg.jacfwd(lambda x: x * 2)(gg.zeros(0, dtype=gg.float64)).shape == (0, 0)
    assert gg.jacobian(lambda x: x[:0])(gg.ones(3)).shape == (0, 3)


def test_hessian_matches_torch_func_on_a_tanh_mlp_loss(torch):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    theta = rng.standard_normal(4 * 5 + 5 + 5 * 2 + 2)

    def unpack(lib, th):
        return th[:20].reshape(5, 4), th[20:25], th[25:35].reshape(2, 5), th[35:]

    def loss_gg(th):
        w1, b1, w2, b2 = unpack(gg, th)
        return ((gg.tanh(gg.tensor(x) @ w1.T + b1) @ w2.T + b2 - gg.tensor(y)) ** 2).mean()

    def loss_torch(th):
        w1, b1, w2, b2 = unpack(torch, th)
        return ((torch.tanh(torch.tensor(x) @ w1.T + b1) @ w2.T + b2 - torch.tensor(y)) ** 2).mean()

    ours = gg.hessian(loss_gg)(gg.tensor(theta)).numpy()
    theirs = torch.func.hessian(loss_torch)(torch.tensor(theta)).numpy()
    assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert_close(gg.jacfwd(gg.grad(loss_gg))(gg.tensor(theta)).numpy(), theirs, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- per-example gradients

def _mlp(dtype=gg.float64):
    gg.manual_seed(4)
    return gg.nn.MLP([6, 8, 3], activation="tanh", dtype=dtype)


def _loss(model):
    def loss(params, x, y):
        return F.cross_entropy(functional_call(model, params, (x,)), y)
    return loss


def test_per_example_gradients_of_an_mlp_equal_a_loop():
    model = _mlp()
    params = {k: p.detach() for k, p in model.named_parameters()}
    x = t(7, 6)
    y = gg.tensor(np.random.default_rng(0).integers(0, 3, 7))
    loss = _loss(model)
    per = gg.vmap(gg.grad(loss), in_axes=(None, 0, 0))(params, x, y)
    assert set(per) == set(params)
    for i in range(7):
        one = gg.grad(loss)(params, x[i], y[i])
        for name in params:
            assert per[name].shape == (7, *params[name].shape) and per[name].dtype == gg.float64
            assert_close(per[name][i], one[name], rtol=1e-10, atol=1e-13)
    # the batch's mean gradient is the mean of the per-example ones
    mean = gg.grad(lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))(params)
    for name in params:
        assert_close(per[name].numpy().mean(axis=0), mean[name].numpy(), rtol=1e-10, atol=1e-13)


def test_per_example_gradients_match_torch_func(torch):
    model = _mlp()
    params = {k: p.detach() for k, p in model.named_parameters()}
    x = t(7, 6)
    y = np.random.default_rng(0).integers(0, 3, 7)
    ours = gg.vmap(gg.grad(_loss(model)), in_axes=(None, 0, 0))(params, x, gg.tensor(y))
    tm = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    tparams = {k: torch.tensor(params[k].numpy()) for k, _ in tm.named_parameters()}

    def tloss(p, xi, yi):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(tm, p, (xi,)), yi)

    theirs = torch.func.vmap(torch.func.grad(tloss), in_dims=(None, 0, 0))(
        tparams, torch.tensor(x.numpy()), torch.tensor(y))
    for name in params:
        assert_close(ours[name], theirs[name].detach().numpy(), rtol=1e-10, atol=1e-13)


def test_functional_call_restores_the_module_and_checks_names():
    model = _mlp()
    before = {k: p for k, p in model.named_parameters()}
    zeros = {k: gg.zeros_like(p) for k, p in before.items()}
    out = functional_call(model, zeros, t(2, 6))
    same(out, gg.zeros(2, 3, dtype=gg.float64))
    assert all(p is before[k] for k, p in model.named_parameters())
    with pytest.raises(ValueError, match="no parameter or buffer named 'nope'"):
        functional_call(model, {"nope": gg.zeros(1)}, t(2, 6))
    with pytest.raises(ValueError, match="strict=True"):
        functional_call(model, {"0.weight": zeros["0.weight"]}, t(2, 6), strict=True)
    with pytest.raises(TypeError, match="must be a dict"):
        functional_call(model, [1, 2], t(2, 6))
    half = ({"0.weight": zeros["0.weight"]}, {"0.bias": zeros["0.bias"]})
    assert functional_call(model, half, (t(2, 6),)).shape == (2, 3)


def test_functional_call_replaces_tied_weights_everywhere():
    lin = gg.nn.Linear(3, 3, bias=False)
    model = gg.nn.Sequential(lin, lin)
    w = gg.eye(3) * 2
    same(functional_call(model, {"0.weight": w}, gg.ones(1, 3)), gg.full((1, 3), 4.0))
    with pytest.raises(ValueError, match="one tied tensor"):
        functional_call(model, {"0.weight": w, "1.weight": w * 1}, gg.ones(1, 3))


# ----------------------------------------------------------------------------- batched indices and composites

@pytest.mark.parametrize("name,f,args", [
    ("x[i]", lambda x, i: x[i], lambda: (t(4, 5, 2), gg.tensor([0, 3, 1, 4]))),
    ("x[:, i]", lambda x, i: x[:, i], lambda: (t(4, 3, 5), gg.tensor([[0, 1], [3, 3], [4, 0], [2, 2]]))),
    ("x[i, :, j]", lambda x, i, j: x[i, :, j],
     lambda: (t(4, 3, 2, 5), gg.tensor([[0], [2], [1], [0]]), gg.tensor([[1, 4], [0, 0], [3, 2], [4, 1]]))),
    ("x[..., i]", lambda x, i: x[..., i], lambda: (t(4, 2, 3, 5), gg.tensor([1, 4, 0, 2]))),
    ("gather", lambda x, i: gg.gather(x, 1, i), lambda: (t(4, 3, 5), ints(1, 5, (4, 3, 2)))),
    ("take_along_dim", lambda x, i: gg.take_along_dim(x, i, 0),
     lambda: (t(4, 3, 5), ints(2, 3, (4, 2, 5)))),
    ("embedding", lambda i, w: F.embedding(i, w), lambda: (ints(3, 6, (4, 3)), t(4, 6, 2))),
    ("one_hot", lambda i: F.one_hot(i, 5).astype(gg.float64), lambda: (ints(4, 5, (4, 3)),)),
    ("masked_fill", lambda x: x.masked_fill(x > 0, 0.5), lambda: (t(4, 3, 5),)),
    ("sort", lambda x: gg.sort(x, axis=0), lambda: (t(4, 3, 5),)),
    ("topk", lambda x: x.topk(2, dim=-1).values, lambda: (t(4, 3, 5),)),
    ("max(dim)", lambda x: x.max(dim=1).values, lambda: (t(4, 3, 5),)),
    ("cummax", lambda x: gg.cummax(x, dim=1).values, lambda: (t(4, 3, 5),)),
    ("scatter", lambda x, i: x.scatter(1, i, 7.0), lambda: (t(4, 3, 5), ints(5, 5, (4, 3, 2)))),
])
def test_batched_indices_and_index_composites(name, f, args):
    args = args()
    same(gg.vmap(f)(*args), loop(f, *args))
    floats = tuple(i for i, a in enumerate(args) if a.dtype.kind == "f")
    out = f(*[a[0] for a in args])
    if floats and out.dtype.kind == "f":
        g = gg.grad(lambda *a: f(*a).sum(), argnums=floats)
        got = gg.vmap(g)(*args)
        refs = [g(*[a[i] for a in args]) for i in range(args[0].shape[0])]
        for j in range(len(floats)):
            same(got[j], gg.stack([r[j] for r in refs]))


@pytest.mark.parametrize("name,f,args", [
    ("softmax", lambda x: F.softmax(x, dim=-1), lambda: (t(3, 4, 5),)),
    ("log_softmax", lambda x: F.log_softmax(x, dim=0), lambda: (t(3, 4, 5),)),
    ("cross_entropy", lambda x, y: F.cross_entropy(x, y), lambda: (t(3, 4, 5), ints(0, 5, (3, 4)))),
    ("cross_entropy 1-d", lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1),
     lambda: (t(3, 5), gg.tensor([1, 4, 0]))),
    ("mse", lambda x, y: F.mse_loss(x, y), lambda: (t(3, 4), t(3, 4, seed=1))),
    ("bce", lambda x, y: F.binary_cross_entropy(gg.sigmoid(x), gg.sigmoid(y)),
     lambda: (t(3, 4), t(3, 4, seed=1))),
    ("layer_norm", lambda x: F.layer_norm(x, (5,)), lambda: (t(3, 4, 5),)),
    ("gelu", lambda x: F.gelu(x), lambda: (t(3, 4),)),
    ("conv2d", lambda x, w: F.conv2d(x, w, padding=1), lambda: (t(3, 2, 3, 6, 6), t(3, 4, 3, 3, 3, seed=1))),
    ("conv2d shared", lambda x: F.conv2d(x, gg.ones(4, 3, 3, 3, dtype=gg.float64) * 0.1, stride=2),
     lambda: (t(3, 2, 3, 6, 6),)),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), lambda: (t(3, 2, 3, 6, 6),)),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2), lambda: (t(3, 2, 3, 6, 6),)),
    ("einsum", lambda a, b: gg.einsum("ij,jk->ik", a, b), lambda: (t(3, 3, 4), t(3, 4, 2, seed=1))),
    ("var/std", lambda x: gg.var(x, axis=1) + x.std(dim=0).sum(), lambda: (t(3, 4, 5),)),
    ("logsumexp", lambda x: gg.logsumexp(x, axis=-1), lambda: (t(3, 4, 5),)),
    ("norm", lambda x: gg.linalg.norm(x), lambda: (t(3, 4, 5),)),
    ("clip/where", lambda x: gg.clip(x, -0.5, 0.5) + gg.where(x > 0, x, 0.0), lambda: (t(3, 4),)),
    ("pad", lambda x: F.pad(x, (1, 2)), lambda: (t(3, 4, 5),)),
    ("attention", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
     lambda: (t(3, 2, 4, 5), t(3, 2, 4, 5, seed=1), t(3, 2, 4, 5, seed=2))),
    ("interpolate", lambda x: F.interpolate(x, scale_factor=2), lambda: (t(3, 1, 2, 3, 3),)),
    ("flip/roll/tril", lambda x: gg.flip(x, 0) + gg.roll(x, 1, 1) + gg.tril(x), lambda: (t(3, 4, 4),)),
    ("stack/split", lambda x, y: gg.split(gg.stack([x, y], 1), 2, 0)[1],
     lambda: (t(3, 4, 2), t(3, 4, 2, seed=1))),
])
def test_composites_under_vmap(name, f, args):
    args = args()
    same(gg.vmap(f)(*args), loop(f, *args), rtol=1e-9)
    floats = tuple(i for i, a in enumerate(args) if a.dtype.kind == "f")
    g = gg.grad(lambda *a: f(*a).sum(), argnums=floats)
    got = gg.vmap(g)(*args)
    refs = [g(*[a[i] for a in args]) for i in range(args[0].shape[0])]
    for j in range(len(floats)):
        same(got[j], gg.stack([r[j] for r in refs]), rtol=1e-9)


# ----------------------------------------------------------------------------- randomness and fallback

def test_global_generator_randomness_policies():
    x = gg.ones(4, 3)
    with pytest.raises(RuntimeError, match="randomness='error'"):
        gg.vmap(lambda v: v + gg.randn(3))(x)
    with pytest.raises(RuntimeError, match="randomness='error'"):
        gg.vmap(lambda v: F.dropout(v, 0.5))(x)
    same_draw = gg.vmap(lambda v: v * 0 + gg.rand(3), randomness="same")(x).numpy()
    assert (same_draw == same_draw[0]).all()
    different = gg.vmap(lambda v: v * 0 + gg.rand(3), randomness="different")(x).numpy()
    assert len({tuple(row) for row in different}) == 4
    masks = gg.vmap(lambda v: F.dropout(v, 0.5), randomness="different")(gg.ones(8, 50)).numpy()
    assert set(np.unique(masks)) <= {0.0, 2.0} and len({tuple(row) for row in masks}) == 8
    gg.manual_seed(3)
    noisy = gg.vmap(lambda v: gg.randn(2) + v, randomness="different")
    first = noisy(gg.zeros(3, 2)).numpy()
    gg.manual_seed(3)
    assert_close(noisy(gg.zeros(3, 2)).numpy(), first, rtol=0, atol=0)


def test_nested_vmaps_with_different_randomness_draw_per_level():
    inner = gg.vmap(lambda v: v + gg.rand(()), randomness="same")
    out = gg.vmap(inner, randomness="different")(gg.zeros(3, 4))
    values = out.numpy()
    assert (values == values[:, :1]).all()            # the inner level shares its draw
    assert len(set(values[:, 0])) == 3                # the outer one does not


def test_a_batch_of_keys_gives_independent_draws():
    keys = random.split(random.PRNGKey(0), 4)
    got = gg.vmap(lambda k: random.normal(k, (3,)))(keys)
    same(got.astype(gg.float64), gg.stack([random.normal(k, (3,)) for k in keys]).astype(gg.float64))
    ks = gg.vmap(lambda k: random.split(k, 2))(keys)
    assert ks.shape == (4, 2, 2) and ks.dtype == np.uint32
    assert_close(ks[2], random.split(keys[2], 2))
    folded = gg.vmap(lambda i: random.fold_in(random.PRNGKey(5), i))(gg.arange(4))
    assert_close(folded[3], random.fold_in(random.PRNGKey(5), 3))


class _Square(gg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_ops_and_functions_without_a_batching_rule():
    def _cube(xp, x):
        return x ** 3

    from gpugrad.ops.registry import OpDef
    cube = OpDef(_cube, save=("x",), samples=None, differentiable=True, broadcast=False, float_inputs=False,
                 fused=None, higher_order=True)       # not registered: no global state
    cube.vjp(lambda xp, g, out, x: (3 * x * x * g,))
    x = t(3, 2)
    with pytest.raises(NotImplementedError, match="cube has no batching rule"):
        gg.vmap(cube)(x)
    same(gg.vmap(cube, fallback="loop")(x), x ** 3)
    same(gg.vmap(gg.grad(lambda v: cube(v).sum()), fallback="loop")(x), 3 * x * x)
    with pytest.raises(NotImplementedError, match="autograd.Function _Square has no batching rule"):
        gg.vmap(_Square.apply)(x)
    same(gg.vmap(_Square.apply, fallback="loop")(x), x * x)
    same(gg.grad(lambda v: gg.vmap(_Square.apply, fallback="loop")(v).sum())(x), 2 * x)
    with pytest.raises(ValueError, match="fallback must be"):
        gg.vmap(cube, fallback="yes")


# ----------------------------------------------------------------------------- memory and the hot path

def test_vmap_leaves_no_reference_cycles_and_no_state():
    import gc

    from gpugrad.ops import registry
    xs = t(4, 3)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(3):
            gg.vmap(gg.grad(f_scalar))(xs)
            gg.hessian(f_scalar)(xs[0])
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert len(gc.get_objects()) < before + 200
    assert registry.vmapping == 0 and not gg.batched.state.levels


@pytest.mark.cuda
def test_vmap_on_cuda_matches_the_cpu():
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    model = _mlp()
    cpu = {k: p.detach() for k, p in model.named_parameters()}
    x, y = t(5, 6), gg.tensor([0, 2, 1, 1, 0])
    ref = gg.vmap(gg.grad(_loss(model)), in_axes=(None, 0, 0))(cpu, x, y)
    model.to("cuda")
    gpu = {k: p.detach() for k, p in model.named_parameters()}
    got = gg.vmap(gg.grad(_loss(model)), in_axes=(None, 0, 0))(gpu, x.to("cuda"), y.to("cuda"))
    for name in ref:
        assert got[name].device == "cuda:0"
        assert_close(got[name], ref[name].to("cuda"), rtol=1e-10, atol=1e-13)
    moved = gg.vmap(lambda v: v.to("cuda") * 2)(x)
    assert moved.device == "cuda:0" and moved.shape == x.shape
    same(moved.cpu(), x * 2)

