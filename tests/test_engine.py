"""The tape engine: accumulation, leaves, retain_graph, no_grad, long chains, memory."""

import gc
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import assert_close


def test_gradient_of_two_x_dot_x_is_four_x():
    x = gg.arange(4.0)
    x.requires_grad_()
    y = 2 * gg.dot(x, x)
    assert y.item() == 28.0
    y.backward()
    assert x.grad.tolist() == [0.0, 4.0, 8.0, 12.0]
    assert (x.grad == 4 * x).all()
    assert x.grad.dtype == gg.float32


def test_gradients_accumulate_until_reset():
    x = gg.arange(4.0, requires_grad=True)
    x.sum().backward()
    x.sum().backward()
    assert x.grad.tolist() == [2.0] * 4
    x.grad.zero_()
    x.sum().backward()
    assert x.grad.tolist() == [1.0] * 4
    x.grad = None
    (x * x).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_grad_never_aliases_other_arrays():
    x = gg.ones(3, requires_grad=True)
    w = gg.ones(3, requires_grad=True)
    seed = gg.ones(3)
    (x + w).backward(gradient=seed)
    x.grad.zero_()
    assert w.grad.tolist() == [1.0] * 3 and seed.tolist() == [1.0] * 3


def test_grad_takes_over_a_fresh_gradient_buffer_instead_of_copying():
    w = gg.randn(3, 4, requires_grad=True)
    x = gg.randn(5, 3)
    (x @ w).sum().backward()
    assert w.grad.data.base is None                   # the matmul's result itself, not a copy of it
    assert_close(w.grad, x.numpy().sum(0)[:, None] * np.ones((3, 4), np.float32), rtol=1e-6)


def test_grad_is_copied_when_someone_else_holds_the_gradient():
    x = gg.ones(3, requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g))        # the hook keeps the array it was given
    (x * 2).sum().backward()
    x.grad.zero_()
    assert seen[0].tolist() == [2.0] * 3

    x = gg.ones(3, requires_grad=True)
    y = x + 0                                         # add passes the same array to x and to y
    y.retain_grad()
    (y * 3).sum().backward()
    x.grad.zero_()
    assert y.grad.tolist() == [3.0] * 3


def test_non_scalar_backward_needs_a_gradient():
    x = gg.arange(4.0, requires_grad=True)
    y = x * x
    with pytest.raises(RuntimeError, match="gradient"):
        y.backward()
    y.backward(gradient=gg.ones_like(y))
    assert x.grad.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_weighted_backward():
    x = gg.arange(3.0, requires_grad=True)
    (x * x).backward(gradient=gg.tensor([1.0, 10.0, 100.0]))
    assert x.grad.tolist() == [0.0, 20.0, 400.0]


def test_detach_and_stop_gradient_are_constants():
    x = gg.arange(4.0, requires_grad=True)
    y = x * x
    u = y.detach()
    (u * x).sum().backward()
    assert (x.grad == u).all()
    x.grad = None
    v = gg.stop_gradient(y)
    assert not v.requires_grad and v.is_leaf
    (v * x).sum().backward()
    assert (x.grad == y.detach()).all()


def test_leaves_and_non_leaves():
    x = gg.ones(2, requires_grad=True)
    y = x * 2
    z = y.sum()
    z.backward()
    assert x.is_leaf and not y.is_leaf and x.grad is not None
    with pytest.warns(UserWarning, match="retain_grad"):
        assert y.grad is None
    assert y.grad_fn is not None and x.grad_fn is None


def test_retain_graph():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 8.0]
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_shared_subexpression_gets_all_contributions():
    x = gg.tensor(3.0, requires_grad=True)
    a = x * x          # used twice below
    y = a * a + a      # x^4 + x^2
    y.backward()
    assert x.grad.item() == 4 * 27 + 6


def test_a_node_runs_only_after_all_its_consumers():
    # y feeds consumers created long after it and in between other branches; the walk
    # must sum all of them before running y's rule (one missed term changes the answer)
    x = gg.tensor([0.5, -1.5], requires_grad=True, dtype=gg.float64)
    y = gg.tanh(x)
    branches = [y * float(k) for k in range(1, 6)]
    z = y
    for b in reversed(branches):
        z = z + gg.sin(b) * y
    z.sum().backward()
    xv = np.array([0.5, -1.5])
    t = np.tanh(xv)
    dz_dt = 1 + sum(np.cos(k * t) * k * t + np.sin(k * t) for k in range(1, 6))
    assert_close(x.grad.numpy(), dz_dt * (1 - t * t), rtol=1e-12)


def test_a_chain_step_waits_for_an_older_consumer():
    # after n runs, p is n's only new parent, but h (older than n, newer than p) still has
    # to send p its share: following the chain from n straight into p would lose it
    x = gg.tensor(0.3, requires_grad=True, dtype=gg.float64)
    p = gg.tanh(x)
    h = p * 2.0
    n = p * 3.0
    (h + n).backward()
    assert x.grad.item() == pytest.approx(5 * (1 - np.tanh(0.3) ** 2), rel=1e-14)


def test_backward_from_several_roots_on_one_path():
    x = gg.tensor(2.0, requires_grad=True, dtype=gg.float64)
    a = x * x                  # a is a root and also an ancestor of the other root
    b = a * x
    gg.autograd.backward([a, b], [gg.tensor(1.0, dtype=gg.float64), gg.tensor(10.0, dtype=gg.float64)])
    assert x.grad.item() == 2 * 2.0 + 10 * 3 * 2.0 ** 2


def test_branches_that_get_no_gradient_are_not_visited():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    dead = gg.exp(x) * 2       # consumed only by a comparison, which passes no gradient
    y = (x * 3).sum() + (dead > 1).sum()
    y.backward()
    assert x.grad.tolist() == [3.0, 3.0]
    y2 = (dead * 1).sum()      # dead's saved arrays were not released by the first backward
    y2.backward()
    assert_close(x.grad.numpy(), [3 + 2 * np.e, 3 + 2 * np.e ** 2], rtol=1e-6)


def test_graphs_built_by_two_threads_at_once():
    # node creation order interleaves across threads; each graph's walk must stay correct
    import threading

    results = {}

    def gradient(seed: int) -> np.ndarray:
        x = gg.tensor(np.linspace(-1, 1, 8) * seed, requires_grad=True, dtype=gg.float64)
        y = x
        for _ in range(200):
            y = gg.tanh(y * 0.9 + x * 0.1)
        y.sum().backward()
        return x.grad.numpy()

    def work(seed: int) -> None:
        results[seed] = gradient(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in (1, 2):
        assert_close(results[seed], gradient(seed), rtol=0, atol=0)   # the same, computed alone


def test_no_grad_and_enable_grad():
    x = gg.ones(2, requires_grad=True)
    with gg.no_grad():
        y = x * 2
        with gg.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad
    assert gg.is_grad_enabled()

    @gg.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad
    with gg.set_grad_enabled(False):
        assert not gg.is_grad_enabled()


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        gg.arange(3).requires_grad_()
    with pytest.raises(TypeError, match="floating-point"):
        gg.tensor([1, 2], requires_grad=True)


def test_backward_on_a_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gg.ones(2).sum().backward()


def test_gradients_through_broadcasting():
    x = gg.ones((2, 3), requires_grad=True)
    b = gg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    s = gg.tensor(2.0, requires_grad=True)
    ((x * b + s) * s).sum().backward()
    assert b.grad.shape == (3,) and b.grad.tolist() == [4.0, 4.0, 4.0]
    assert s.grad.item() == 36.0    # d/ds sum((x b + s) s) = sum(x b + s) + 6 s = 24 + 12


def test_indexing_gradient_accumulates_repeated_indices():
    x = gg.arange(5.0, requires_grad=True)
    x[[0, 2, 2, 4, 0, 0]].sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 2.0, 0.0, 1.0]
    x.grad = None
    x[x > 2].sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    x.grad = None
    x[1:4:2].sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_max_splits_gradient_among_ties():
    x = gg.tensor([1.0, 3.0, 3.0], requires_grad=True)
    x.max().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5]
    y = gg.tensor([2.0, 2.0], requires_grad=True)
    gg.maximum(y[0], y[1]).backward()
    assert y.grad.tolist() == [0.5, 0.5]


def test_prod_gradient_with_zeros():
    x = gg.tensor([2.0, 0.0, 3.0], requires_grad=True)
    x.prod().backward()
    assert x.grad.tolist() == [0.0, 6.0, 0.0]


def test_norm_gradient_at_zero_is_zero():
    x = gg.zeros(3, requires_grad=True)
    gg.linalg.norm(x).backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]


def test_relu_and_abs_subgradients_at_zero():
    x = gg.zeros(2, requires_grad=True)
    (gg.relu(x) + gg.abs(x)).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]


def test_power_with_zero_base():
    x = gg.tensor([0.0, 2.0], requires_grad=True)
    p = gg.tensor(2.0, requires_grad=True)
    (x ** p).sum().backward()
    assert x.grad.tolist() == [0.0, 4.0]
    assert p.grad.item() == pytest.approx(4 * np.log(2))


def test_control_flow_from_the_chapter():
    def f(a):
        b = a * 2
        while gg.linalg.norm(b) < 1000:
            b = b * 2
        c = b if b.sum() > 0 else 100 * b
        return c

    for seed in range(5):
        gg.manual_seed(seed)
        a = gg.randn(size=())
        d = f(a)
        d_grad = gg.grad(f)(a)
        assert abs(d_grad.item() - (d / a).item()) <= 1e-5 * abs(d_grad.item())


def test_long_chain_has_no_recursion_limit():
    x = gg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    assert sys.getrecursionlimit() < 100_000
    y.backward()
    assert x.grad.item() == 1.0


def test_backward_time_is_linear_in_graph_size():
    import time

    def run(n):
        x = gg.tensor(1.0, requires_grad=True)
        y = x
        for _ in range(n):
            y = y + 1.0
        t0 = time.perf_counter()
        y.backward()
        return time.perf_counter() - t0

    run(1000)
    small = min(run(5_000) for _ in range(3))
    large = min(run(40_000) for _ in range(3))
    # 8x the nodes: a linear walk takes ~8x; a quadratic one would take ~64x
    assert large < 25 * small


def test_saved_arrays_are_released_by_backward():
    x = gg.randn(1000, requires_grad=True)
    y = gg.tanh(x)
    node = y.grad_fn
    out_ref = weakref.ref(node)
    z = y.sum()
    z.backward()
    assert node.out is None
    del y, z, node
    gc.collect()
    assert out_ref() is None


def test_graph_is_freed_without_the_garbage_collector():
    gc.disable()
    try:
        x = gg.randn(10, requires_grad=True)
        y = gg.exp(x * 2).sum()
        ref = weakref.ref(y.grad_fn)
        y.backward()
        del y
        assert ref() is None          # no reference cycles: refcounting alone frees the graph
    finally:
        gc.enable()


def test_nodes_built_by_ops_and_by_the_constructor_have_the_same_fields():
    # OpDef.__call__ fills a Node's slots inline (for speed): it must fill every one of them
    from gpugrad.engine import Node

    x = gg.ones(2, requires_grad=True)
    by_op = (x * 2)._node
    by_init = Node(by_op.op, None, (None, None), {}, [x, None], by_op.dtype)
    slots = [s for s in Node.__slots__ if s not in ("where", "__weakref__")]   # where: anomaly only
    for node in (by_op, by_init):
        missing = [s for s in slots if not hasattr(node, s)]
        assert not missing, missing
    assert list(by_init) == [x, None] and by_init.parents is by_init
    assert by_init != Node(by_op.op, None, (None, None), {}, [x, None], by_op.dtype)   # identity


def test_a_recorded_op_leaves_one_object_for_the_garbage_collector():
    # a full GC pass scans every tracked object: a graph of N ops should add N, not 2N
    x, c = gg.ones(3, requires_grad=True), gg.ones(3)
    gc.collect()
    before = len(gc.get_objects())
    y = x
    for _ in range(1000):
        y = y * c
    gc.collect()                       # tuples of arrays (saved inputs) are untracked by a pass
    grown = len(gc.get_objects()) - before
    assert 1000 <= grown < 1050, grown
    assert y._node.parents[1] is None and len(y._node) == 2


def test_memory_is_flat_over_training_like_steps():
    w = gg.randn(64, 64, requires_grad=True)
    x = gg.randn(32, 64)

    def step():
        loss = gg.tanh(x @ w).square().mean()
        loss.backward()
        with gg.no_grad():
            w.sub_(0.01 * w.grad)
        w.grad = None

    for _ in range(50):
        step()
    tracemalloc.start()
    for _ in range(300):
        step()
    gc.collect()
    first, _ = tracemalloc.get_traced_memory()
    for _ in range(2000):
        step()
    gc.collect()
    second, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert second - first < 16 * 1024, f"memory grew by {second - first} bytes over 2000 steps"


def test_gradients_keep_each_leafs_dtype():
    a = gg.ones(2, dtype=gg.float32, requires_grad=True)
    b = gg.ones(2, dtype=gg.float64, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.dtype == gg.float32 and b.grad.dtype == gg.float64
    h = gg.ones(2, dtype=gg.float16, requires_grad=True)
    (h.to(gg.float32) * 3).sum().backward()
    assert h.grad.dtype == gg.float16 and h.grad.tolist() == [3.0, 3.0]


def test_in_place_on_a_leaf_that_requires_grad_is_an_error():
    w = gg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.add_(1.0)
    with gg.no_grad():
        w.add_(1.0)
    assert w.tolist() == [2.0, 2.0]


def test_clone_and_detach_clone():
    a = gg.randn(size=())
    b = a.detach().clone().requires_grad_()
    (b * 3).backward()
    assert b.grad.item() == 3.0 and a.grad is None
    c = gg.ones(2, requires_grad=True)
    d = c.clone()
    (d * d).sum().backward()
    assert c.grad.tolist() == [2.0, 2.0]


# ----------------------------------------------------------------------------- the walk on tangled graphs

def _tangled(x, seed, size=30, override=None):
    """A random DAG over ``x``: every value feeds later ones at random, so the walk's heap (not its
    chain shortcut) decides the order. ``override=(k, z)`` puts z in place of value k."""
    rng = np.random.default_rng(seed)
    values = [x, gg.sin(x), x * 0.5]
    for k in range(size):
        i, j = (int(v) for v in rng.integers(0, len(values), 2))
        a, b = values[i], values[j]
        kind = int(rng.integers(0, 3))
        value = a + b if kind == 0 else a * b * 0.5 if kind == 1 else gg.tanh(a) - b
        values.append(override[1] if override is not None and override[0] == k else value)
    picked = [int(i) for i in rng.choice(len(values), 6, replace=False)]
    return sum(values[i].sum() for i in picked), values


@pytest.mark.parametrize("seed", range(4))
def test_gradients_and_second_derivatives_of_tangled_graphs(seed):
    x = gg.tensor(np.random.default_rng(seed).uniform(-1, 1, (3,)), requires_grad=True)
    assert gg.testing.gradcheck(lambda t: _tangled(t, seed)[0], x)
    assert gg.testing.gradgradcheck(lambda t: _tangled(t, seed)[0], x)


@pytest.mark.parametrize("seed", range(3))
def test_the_gradient_reaching_an_inner_value_is_its_gradient_as_a_leaf(seed):
    x = gg.tensor(np.random.default_rng(seed).uniform(-1, 1, (3,)), requires_grad=True)
    out, values = _tangled(x, seed)
    compared = 0
    for k in range(0, 30, 3):
        (captured,) = gg.autograd.grad(out, [values[3 + k]], retain_graph=True, allow_unused=True)
        z = values[3 + k].detach().requires_grad_()
        rebuilt = _tangled(x.detach(), seed, override=(k, z))[0]
        if captured is None:                    # value k does not reach the output
            assert not rebuilt.requires_grad
            continue
        rebuilt.backward()
        assert_close(captured, z.grad)
        compared += 1
    assert compared >= 3


def test_one_root_given_twice_sums_its_seeds():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    gg.autograd.backward([y, y], [gg.tensor([1.0, 10.0]), gg.tensor([2.0, 20.0])])
    assert_close(x.grad, gg.tensor([9.0, 90.0]))
    leaf = gg.tensor([1.0, 2.0], requires_grad=True)
    gg.autograd.backward([leaf, leaf], [gg.tensor([1.0, 1.0]), gg.tensor([2.0, 3.0])])
    assert_close(leaf.grad, gg.tensor([3.0, 4.0]))


def test_post_accumulate_hooks_run_once_when_a_leafs_gradient_is_final():
    """A leaf is final, and its hook runs, as soon as the walk passes its oldest reader (DDP starts
    its reduction then, while the older ops run); each hook sees the whole gradient, once."""
    early = gg.tensor([1.0, 2.0], requires_grad=True)       # read by the first op only
    late = gg.tensor([3.0, 4.0], requires_grad=True)        # read by the last op only
    events = []
    early.register_post_accumulate_grad_hook(lambda t: events.append(("early", t.grad.numpy().copy())))
    late.register_post_accumulate_grad_hook(lambda t: events.append(("late", t.grad.numpy().copy())))
    h = early * 2.0
    h.register_hook(lambda g: events.append(("h", None)))
    m = gg.tanh(h) + h
    m.register_hook(lambda g: events.append(("m", None)))
    out = (m * late).sum() + (late * 5.0).sum()
    out.backward()
    assert [name for name, _ in events] == ["late", "m", "h", "early"]
    expected_late = np.tanh([2.0, 4.0]) + [2.0, 4.0] + 5.0
    assert_close(events[0][1], expected_late.astype(np.float32))
    dm = np.array([3.0, 4.0]) * (1 - np.tanh([2.0, 4.0]) ** 2 + 1)
    assert_close(events[3][1], (2 * dm).astype(np.float32))
    assert_close(early.grad, gg.tensor(2 * dm, dtype=gg.float32))


def test_a_hook_on_an_inner_value_changes_what_flows_on():
    x = gg.tensor([1.0, -2.0], requires_grad=True)
    h = x * x
    h.register_hook(lambda g: g * 10.0)
    (h + x).sum().backward()
    assert_close(x.grad, gg.tensor([21.0, -39.0]))
