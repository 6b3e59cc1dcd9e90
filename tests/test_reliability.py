"""Never silently wrong: in-place safety, anomaly detection, dtype rules, threads, memory."""

import gc
import threading
import tracemalloc

import numpy as np
import pytest

import gpugrad as gg

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
    w = gg.randn(3, requires_grad=True)
    for _ in range(3):
        loss = (w * w).sum()
        loss.backward()
        with gg.no_grad():
            w.sub_(0.1 * w.grad)
        w.grad = None


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


def test_hundred_thousand_op_chain_backpropagates():
    x = gg.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(50_000):
        y = gg.tanh(y) + 0.0
    y.backward()
    assert np.isfinite(x.grad.item())
