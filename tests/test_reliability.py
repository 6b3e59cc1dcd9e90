"""Never silently wrong: in-place safety, anomaly detection, dtype rules, threads, memory."""

import gc
import re
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import assert_close

# ----------------------------------------------------------------------------- dtypes

DTYPES = [np.float16, np.float32, np.float64, np.int64, np.bool_]


@pytest.mark.parametrize("a", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("b", DTYPES, ids=lambda d: np.dtype(d).name)
def test_binary_promotion_follows_pytorch(a, b):
    """NumPy's rules, except that an integer or bool meeting a float gives that float (PyTorch, JAX)."""
    x = gg.tensor(np.ones(3, dtype=a))
    y = gg.tensor(np.ones(3, dtype=b))
    kinds = {np.dtype(a).kind, np.dtype(b).kind}
    expected = np.result_type(a, b) if len(kinds) == 1 or "f" not in kinds else \
        np.dtype(a if np.dtype(a).kind == "f" else b)
    assert (x + y).dtype == expected
    assert (x * y).dtype == expected


def test_python_scalars_are_weak():
    for dt in (gg.float16, gg.float32, gg.float64):
        x = gg.ones(2, dtype=dt)
        assert (x * 2.5).dtype == dt and (3 + x).dtype == dt and (x ** 2).dtype == dt


def test_requires_grad_on_integer_and_bool_tensors():
    for dt in (gg.int64, gg.int32, gg.bool):
        with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
            gg.zeros(2, dtype=dt).requires_grad_()


def test_grad_of_a_non_floating_output():
    with pytest.raises(TypeError, match="floating-point outputs"):
        gg.grad(lambda x: (x > 0).sum())(gg.ones(2))
    x = gg.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="gradient is float64 but the output is float32"):
        (x * 2).backward(gradient=gg.ones(2, dtype=gg.float64))


def test_assigning_a_mismatched_grad():
    x = gg.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        x.grad = gg.ones(3)
    with pytest.raises(TypeError, match="Tensor or None"):
        x.grad = [1.0, 1.0]


# ----------------------------------------------------------------------------- in-place safety

def test_modifying_a_saved_input_is_caught_at_backward_with_the_line():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    c = gg.tensor([3.0, 4.0])
    y = (x * c).sum()
    c.add_(1.0)
    where = r"multiplyBackward needs its input 1.*add_ at .*test_reliability\.py:\d+"
    with pytest.raises(RuntimeError, match=where):
        y.backward()


def test_modifying_a_saved_output_under_no_grad_is_caught():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    y = gg.exp(x)
    with gg.no_grad():
        y.mul_(2.0)
    with pytest.raises(RuntimeError, match="expBackward needs its output"):
        y.sum().backward()


def test_modifying_through_a_view_is_caught():
    x = gg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = gg.tensor([1.0, 2.0, 3.0])
    y = (gg.tanh(x) * w).sum()
    view = w.detach()
    view[0] = 10.0                           # same memory as w
    with pytest.raises(RuntimeError, match="__setitem__"):
        y.backward()


@pytest.mark.parametrize("change", [
    lambda t: t.add_(1), lambda t: t.sub_(1), lambda t: t.mul_(2), lambda t: t.div_(2),
    lambda t: t.zero_(), lambda t: t.fill_(3), lambda t: t.copy_(gg.ones(2)), lambda t: t.clamp_(0, 0.5),
    lambda t: t.__setitem__(0, 5.0),
])
def test_every_in_place_op_bumps_the_version(change):
    x = gg.tensor([0.3, 0.7], requires_grad=True)
    c = gg.tensor([0.2, 0.4])
    y = (x * c).sum()
    change(c)
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()


def test_unmodified_and_later_modified_tensors_are_fine():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    c = gg.tensor([3.0, 4.0])
    c.add_(1.0)                              # before use: fine
    y = (x * c).sum()
    y.backward()
    c.add_(1.0)                              # after backward: fine
    assert x.grad.tolist() == [4.0, 5.0]


def test_in_place_on_a_leaf_that_requires_grad_outside_no_grad():
    w = gg.ones(2, requires_grad=True)
    for op in (lambda: w.add_(1), lambda: w.zero_(), lambda: w.__setitem__(0, 1.0)):
        with pytest.raises(RuntimeError, match="no_grad"):
            op()


def test_optimizer_style_update_then_new_forward_is_fine():
    w = gg.randn(3, dtype=gg.float64, requires_grad=True)
    start = w.detach().numpy().copy()
    for _ in range(3):
        loss = (w * w).sum()
        loss.backward()
        with gg.no_grad():
            w.sub_(0.1 * w.grad)               # w - 0.1 * 2w
        w.grad = None
    assert_close(w.detach(), start * 0.8 ** 3, rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------- anomaly detection

def test_anomaly_in_backward_names_op_shape_and_line():
    x = gg.tensor([0.0, 1.0], requires_grad=True)
    with gg.detect_anomaly(), np.errstate(divide="ignore"):
        y = gg.sqrt(x)
        with pytest.raises(RuntimeError, match=r"sqrtBackward.*shape \(2,\).*Inf.*test_reliability\.py"):
            y.sum().backward()


def test_anomaly_in_forward():
    with gg.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(RuntimeError, match=r"output of log of shape \(1,\) contains NaN"):
            gg.log(gg.tensor([-1.0]))


def test_anomaly_is_off_by_default_and_thread_local():
    assert not gg.is_anomaly_enabled()
    seen = {}
    with gg.detect_anomaly():
        t = threading.Thread(target=lambda: seen.setdefault("other", gg.is_anomaly_enabled()))
        t.start()
        t.join()
        assert gg.is_anomaly_enabled()
    assert seen["other"] is False and not gg.is_anomaly_enabled()
    with np.errstate(invalid="ignore"):
        assert np.isnan(gg.log(gg.tensor([-1.0])).item())    # off: a NaN is just a value


# ----------------------------------------------------------------------------- threads

def _train(seed, steps=30):
    rng = np.random.default_rng(seed)
    w = gg.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    x, y = gg.tensor(rng.standard_normal((16, 4))), gg.tensor(rng.standard_normal((16, 3)))
    losses = []
    for i in range(steps):
        if i % 5 == 0:
            with gg.no_grad():                    # each thread toggles its own grad mode
                _ = x @ w
        loss = ((gg.tanh(x @ w) - y) ** 2).mean()
        loss.backward()
        with gg.no_grad():
            w.sub_(0.1 * w.grad)
        w.grad = None
        losses.append(loss.item())
    return losses


def test_two_threads_train_as_if_alone():
    alone = [_train(1), _train(2)]
    results = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, _train(s))) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[1] == alone[0] and results[2] == alone[1]


def test_no_grad_is_thread_local():
    seen = {}
    with gg.no_grad():
        t = threading.Thread(target=lambda: seen.setdefault("other", gg.is_grad_enabled()))
        t.start()
        t.join()
        assert not gg.is_grad_enabled()
    assert seen["other"] is True



def test_threads_backpropagating_into_one_leaf_lose_no_gradient():
    # a large leaf: NumPy releases the GIL inside the add, so an unlocked read-add-store loses sums
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        w = gg.zeros(100_000, requires_grad=True)
        start = threading.Barrier(4)

        def work():
            start.wait()
            for _ in range(60):
                (w * 1.0).sum().backward()

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert w.grad.dtype == gg.float32 and w.grad.shape == (100_000,)
    assert w.grad.data.min() == w.grad.data.max() == 240.0


# ----------------------------------------------------------------------------- what backward accepts

def _doubling(gradient):
    """A Function computing 2x whose backward returns ``gradient(g)``."""
    class Doubling(gg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return gradient(g)

    return Doubling


def _function_returning(shape):
    return _doubling(lambda g: gg.ones(shape, dtype=g.dtype))


@pytest.mark.parametrize("leaf", [True, False], ids=["leaf-input", "computed-input"])
@pytest.mark.parametrize("x_shape,g_shape", [((3,), ()), ((3,), (1,)), ((3,), (4,)), ((1, 3), (3,)),
                                             ((2, 3), (1, 3)), ((2, 3), (3,)), ((2, 1), (2,))])
def test_a_function_returning_a_wrong_shape_raises(x_shape, g_shape, leaf):
    x = gg.zeros(x_shape, requires_grad=True)
    out = _function_returning(g_shape).apply(x if leaf else x * 1.0)
    message = re.escape(f"Doubling.backward returned a gradient of shape {g_shape} for input 0, "
                        f"which has shape {x_shape}")
    with pytest.raises(RuntimeError, match=message):
        out.sum().backward()


@pytest.mark.parametrize("x_shape,g_shape,total", [((3,), (2, 3), 2.0), ((3,), (1, 3), 1.0),
                                                   ((1, 3), (4, 1, 3), 4.0), ((), (5,), 5.0)])
def test_a_function_gradient_the_input_broadcasts_to_is_summed_as_in_pytorch(x_shape, g_shape, total):
    for graph in (False, True):
        x = gg.zeros(x_shape, requires_grad=True)
        _function_returning(g_shape).apply(x * 1.0).sum().backward(create_graph=graph)
        assert x.grad.shape == x_shape and x.grad.dtype == gg.float32
        assert_close(x.grad.data, np.full(x_shape, total, np.float32), rtol=0, atol=0)


def test_a_function_gradient_of_another_dtype_is_cast_to_the_input_dtype():
    x = gg.ones(3, requires_grad=True)
    _doubling(lambda g: g.astype(gg.float64) * 2).apply(x * 1.0).sum().backward()
    assert x.grad.dtype == gg.float32 and x.grad.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("on_leaf", [True, False], ids=["leaf-hook", "tensor-hook"])
@pytest.mark.parametrize("change,what", [(lambda g: g.astype(gg.float64), "dtype"),
                                         (lambda g: g.sum(), "shape"), (lambda g: g[None], "shape"),
                                         (lambda g: g.numpy(), "Tensor")])
def test_a_hook_that_changes_a_gradients_dtype_or_shape_raises(change, what, on_leaf):
    x = gg.ones(3, requires_grad=True)
    y = x * 2.0
    (x if on_leaf else y).register_hook(change)
    with pytest.raises(RuntimeError, match=f"hook '.*<lambda>'.*{what}"):
        y.sum().backward()


# ----------------------------------------------------------------------------- no shared .grad

def test_create_graph_gives_each_leaf_its_own_grad():
    a, b = gg.ones(3, requires_grad=True), gg.ones(3, requires_grad=True)
    v = gg.tensor([1.0, 2.0, 3.0])
    (a + b).backward(v, create_graph=True)
    grads = [a.grad, b.grad]
    assert a.grad is not b.grad and a.grad is not v
    for g in grads:
        assert g.shape == (3,) and g.dtype == gg.float32
        assert not np.shares_memory(g.data, v.data)
    assert not np.shares_memory(a.grad.data, b.grad.data)
    with gg.no_grad():
        a.grad.mul_(0.5)                          # as clip_grad_norm_ does
    assert b.grad.tolist() == [1.0, 2.0, 3.0] and v.tolist() == [1.0, 2.0, 3.0]
    assert a.grad.tolist() == [0.5, 1.0, 1.5]


def test_create_graph_grads_stay_differentiable():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    (gx,) = gg.autograd.grad(x.grad.sum(), x)
    assert gx.tolist() == [6.0, 12.0]


@pytest.mark.parametrize("graph", [False, True], ids=["first-order", "create_graph"])
def test_grad_is_always_writable_and_zero_grad_keeps_it(graph):
    x = gg.ones(3, requires_grad=True)
    y = x * 2.0
    y.retain_grad()
    y.sum().backward(create_graph=graph)         # sum's gradient arrives as a read-only broadcast
    for t in (x, y):
        assert t.grad.data.flags.writeable
    opt = gg.optim.SGD([x], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert x.grad.tolist() == [0.0, 0.0, 0.0] and not x.grad.requires_grad
    y.grad.zero_()
    z = gg.ones(3, requires_grad=True)
    (z + 0.0).sum().backward(create_graph=graph)  # z.grad would be the broadcast itself
    gg.optim.SGD([z], lr=0.1).zero_grad(set_to_none=False)
    assert z.grad.tolist() == [0.0, 0.0, 0.0]
    model = gg.nn.Linear(2, 1)
    model(gg.ones(4, 2)).sum().backward(create_graph=graph)
    model.zero_grad(set_to_none=False)
    assert all(p.grad.data.flags.writeable and not p.grad.data.any() for p in model.parameters())


# ----------------------------------------------------------------------------- grad modes

def test_set_grad_enabled_as_a_function_a_block_and_a_decorator():
    x = gg.ones(2, requires_grad=True)
    try:
        gg.set_grad_enabled(False)
        assert not gg.is_grad_enabled() and not (x * 2).requires_grad
        gg.set_grad_enabled(True)
        assert gg.is_grad_enabled() and (x * 2).requires_grad
        with gg.set_grad_enabled(False):
            assert not (x * 2).requires_grad
        assert gg.is_grad_enabled()
        with gg.no_grad(), gg.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert gg.is_grad_enabled()

        @gg.set_grad_enabled(False)
        def f():
            return x * 2

        assert gg.is_grad_enabled()               # decorating changes nothing until f runs
        assert not f().requires_grad and gg.is_grad_enabled()
        with pytest.raises(TypeError, match="set_grad_enabled: mode must be a bool"):
            gg.set_grad_enabled("no")
    finally:
        gg.set_grad_enabled(True)


def test_inference_mode_as_a_block_and_a_decorator():
    x = gg.ones(2, requires_grad=True)
    with gg.inference_mode():
        assert not gg.is_grad_enabled() and not (x * 2).requires_grad
    with gg.inference_mode(False):
        assert (x * 2).requires_grad
    assert gg.is_grad_enabled()

    @gg.inference_mode()
    def f():
        return x * 2

    @gg.inference_mode
    def g():
        return x * 2

    @gg.no_grad
    def h():
        return x * 2

    assert not f().requires_grad and not g().requires_grad and not h().requires_grad
    assert g.__name__ == "g" and gg.is_grad_enabled()
    block = gg.inference_mode()
    with block, block:                            # one object, entered twice
        assert not gg.is_grad_enabled()
    assert gg.is_grad_enabled()


# ----------------------------------------------------------------------------- memory and scale

def test_ten_thousand_training_steps_keep_memory_flat():
    rng = np.random.default_rng(0)
    w1 = gg.tensor(rng.standard_normal((8, 16)) * 0.3, requires_grad=True)
    w2 = gg.tensor(rng.standard_normal((16, 2)) * 0.3, requires_grad=True)
    x, y = gg.tensor(rng.standard_normal((8, 8))), gg.tensor(rng.standard_normal((8, 2)))

    def step():
        loss = ((gg.relu(x @ w1) @ w2 - y) ** 2).mean()
        loss.backward()
        with gg.no_grad():
            for w in (w1, w2):
                w.sub_(0.01 * w.grad)
                w.grad.zero_()

    for _ in range(200):
        step()
    gc.collect()
    tracemalloc.start()
    for _ in range(1000):
        step()
    gc.collect()
    first = tracemalloc.get_traced_memory()[0]
    for _ in range(9000):
        step()
    gc.collect()
    second = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert second - first < 32 * 1024, f"grew {second - first} bytes over 9000 steps"


def _cube_sum(x):
    return (x ** 3).sum()


def _pair_loss(params):
    u, v = params["b"][1]
    return (params["w"] * params["b"][0]).sum() + (u * v).sum()


_X = np.array([0.5, -1.0, 2.0], dtype=np.float32)
TRANSFORM_CALLS = {
    "grad": lambda x: gg.grad(_cube_sum)(x),
    "value_and_grad": lambda x: gg.value_and_grad(_cube_sum)(x),
    "grad-has_aux": lambda x: gg.grad(lambda x: (_cube_sum(x), {"aux": x * 2}), has_aux=True)(x),
    "grad-pytree": lambda x: gg.grad(_pair_loss)({"w": x, "b": [x, (x, x)]}),
    "grad-argnums": lambda x: gg.grad(lambda a, b: (a * b).sum(), argnums=(0, 1))(x, x),
    "vjp": lambda x: gg.vjp(lambda x: {"y": gg.sin(x), "z": [x * 2]}, x)[1]({"y": gg.ones(3), "z": [x]}),
    "jvp": lambda x: gg.jvp(gg.tanh, (x,), (gg.ones(3),)),
    "jacobian": lambda x: gg.jacobian(gg.tanh)(x),
    "hessian": lambda x: gg.hessian(_cube_sum)(x),
    "grad-of-grad": lambda x: gg.grad(lambda y: gg.grad(_cube_sum)(y).sum())(x),
    "autograd.grad-create_graph": lambda x: gg.autograd.grad(
        _cube_sum(gg.tensor(x, requires_grad=True)), gg.tensor(x, requires_grad=True), allow_unused=True),
    "Function": lambda x: _SAME_SHAPE.apply(gg.tensor(x, requires_grad=True) * 1.0).sum().backward(),
}
_SAME_SHAPE = _function_returning((3,))


@pytest.mark.parametrize("name", list(TRANSFORM_CALLS))
def test_transforms_leave_no_reference_cycles(name):
    call, x = TRANSFORM_CALLS[name], gg.tensor(_X)
    call(x)                                       # first-call caches (op tables, imports)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(10):
            call(x)
        left = len(gc.get_objects()) - before
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0, f"{name}: 10 calls left {found} objects in reference cycles"
    assert left < 10, f"{name}: 10 calls left {left} objects for the garbage collector"


def test_hundred_thousand_op_chain_backpropagates():
    x = gg.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(50_000):
        y = gg.tanh(y) + 0.0
    y.backward()
    assert np.isfinite(x.grad.item())
