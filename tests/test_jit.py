"""gg.jit: replays equal eager steps, retrace when they must, and refuse what they cannot follow.

Training: 100 jitted steps of an MLP (every activation MLP takes; SGD with momentum, Adam,
AdamW; dropout, with the generator's state after) equal 100 eager steps from the same start,
to 1e-6 in float32 and 1e-12 in float64, on the CPU and on CUDA (the emulator in CI). The
whole op registry is traced and replayed in tests/test_jit_registry.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.nn import functional as F
from gpugrad.nn.layers import ACTIVATIONS
from gpugrad.ops.registry import OpDef
from gpugrad.testing import assert_close

TOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    if request.param == "cuda" and not gg.cuda.is_available():
        pytest.skip(f"no CUDA device: {gg.cuda.unavailable_reason()}")
    return request.param


OPTIMIZERS = {
    "sgd_momentum": lambda ps: gg.optim.SGD(ps, lr=0.05, momentum=0.9),
    "sgd_nesterov_wd": lambda ps: gg.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda ps: gg.optim.Adam(ps, lr=1e-2),
    "adam_amsgrad": lambda ps: gg.optim.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda ps: gg.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}


def _train_step(model, opt):
    """The eager training step: forward, cross-entropy, backward, optimizer step; returns the loss."""
    def step(x, t):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        return loss
    return step


def _run(steps, jitted, *, device, dtype, activation="relu", optimizer="adam", dropout=0.0, seed=0):
    """(losses, parameters, optimizer state, the generator's next draw) after ``steps`` training steps."""
    gg.manual_seed(seed)
    model = gg.nn.MLP([6, 16, 16, 3], activation=activation, dropout=dropout, device=device, dtype=dtype)
    opt = OPTIMIZERS[optimizer](list(model.parameters()))
    rng = np.random.default_rng(seed)
    batches = [(gg.tensor(rng.standard_normal((8, 6)), dtype=dtype, device=device),
                gg.tensor(rng.integers(0, 3, 8), device=device)) for _ in range(3)]

    step = _train_step(model, opt)
    run = gg.jit(step) if jitted else step
    losses = [run(*batches[i % 3]).item() for i in range(steps)]
    params = [p.detach().cpu().numpy().copy() for p in model.parameters()]
    state = [np.asarray(v.cpu().numpy() if isinstance(v, gg.Tensor) else v, dtype=np.float64)
             for st in opt.state_dict()["state"].values() for v in st.values()]
    return losses, params, state, gg.rand(4).numpy(), run


def _assert_same(eager, jitted, dtype):
    tol = TOL[np.dtype(dtype)]
    assert_close(np.array(jitted[0]), np.array(eager[0]), rtol=tol, atol=tol)
    assert len(jitted[1] + jitted[2]) == len(eager[1] + eager[2])
    for a, b in zip(jitted[1] + jitted[2], eager[1] + eager[2]):
        assert_close(a, b, rtol=tol, atol=tol)
    assert_close(jitted[3], eager[3], rtol=0, atol=0)       # the generator moved alike


@pytest.mark.parametrize("dtype", [gg.float32, gg.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_100_jitted_steps_equal_100_eager_steps(device, dtype, optimizer):
    eager = _run(100, False, device=device, dtype=dtype, optimizer=optimizer, dropout=0.25)
    jitted = _run(100, True, device=device, dtype=dtype, optimizer=optimizer, dropout=0.25)
    _assert_same(eager, jitted, dtype)
    assert jitted[4].traces == 2               # the first step creates the optimizer's state: traced again


@pytest.mark.parametrize("dtype", [gg.float32, gg.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_mlp_activation_replays_as_eager(device, dtype, activation):
    eager = _run(100, False, device=device, dtype=dtype, activation=activation, optimizer="sgd_momentum")
    jitted = _run(100, True, device=device, dtype=dtype, activation=activation, optimizer="sgd_momentum")
    _assert_same(eager, jitted, dtype)


def test_a_replay_runs_no_op_dispatch_and_records_no_graph(monkeypatch):
    model = gg.nn.MLP([4, 8, 2])
    opt = gg.optim.SGD(model.parameters(), lr=0.1)
    x, t = gg.randn(5, 4), gg.tensor([0, 1, 1, 0, 1])

    step = gg.jit(_train_step(model, opt))
    step(x, t)
    step(x, t)

    def refuse(*args, **kwargs):
        raise AssertionError("a replay dispatched an op")

    monkeypatch.setattr(OpDef, "__call__", refuse)
    monkeypatch.setattr(gg.optim.SGD, "step", refuse)
    loss = step(x, t)
    assert loss.grad_fn is None and loss.shape == ()
    assert all(p.grad is not None and p.grad.grad_fn is None for p in model.parameters())


def test_returned_tensors_are_new_each_call():
    w = gg.randn(3, requires_grad=True)
    step = gg.jit(lambda x: (x * w).sum())
    outs = [step(gg.tensor([1.0, 2.0, float(k)])) for k in range(4)]
    assert len({id(o.data) for o in outs}) == 4
    for k, out in enumerate(outs):
        assert_close(out, (gg.tensor([1.0, 2.0, float(k)]) * w).sum().detach(), rtol=1e-6)


def test_a_new_shape_retraces_and_the_cache_is_bounded():
    w = gg.randn(4, 3)
    step = gg.jit(lambda x: gg.tanh(x @ w), cache_size=2)
    for n in (2, 5, 2, 7, 2):
        x = gg.randn(n, 4)
        assert_close(step(x), gg.tanh(x @ w), rtol=0, atol=0)
    assert step.traces == 3                  # 2, 5, 7 (the 2 again: still cached)
    step(gg.randn(5, 4))
    assert step.traces == 4                  # 5 was dropped when 7 came
    step.clear()
    step(gg.randn(2, 4))
    assert step.traces == 5


def test_a_host_read_in_the_function_raises_naming_the_line():
    w = gg.randn(3)

    def step(x):
        y = (x * w).sum()
        if y > 0:                                        # the read
            return y * 2
        return y

    with pytest.raises(gg.jit.TraceError, match=r"test_jit.py:\d+.*gg.where"):
        gg.jit(step)(gg.ones(3))


def test_host_reads_eager_runs_the_function_eagerly_with_one_warning():
    w = gg.randn(3)

    def step(x):
        y = (x * w).sum()
        return y * 2 if y.item() > 0 else y - 1

    jitted = gg.jit(step, host_reads="eager")
    xs = [gg.ones(3), -gg.ones(3), gg.ones(3) * 0.5]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [jitted(x).item() for x in xs]
    assert got == [step(x).item() for x in xs]
    assert len([w for w in caught if "runs eagerly" in str(w.message)]) == 1
    assert jitted.traces == 1


def test_in_place_changes_and_rebinding_between_calls_are_seen():
    w = gg.tensor([1.0, 2.0, 3.0])
    step = gg.jit(lambda x: (x * w).sum())
    x = gg.ones(3)
    assert step(x).item() == 6.0
    assert step(x).item() == 6.0
    w.mul_(2)                                             # in place
    assert step(x).item() == 12.0
    x.add_(1)                                             # the same input, changed in place
    assert step(x).item() == 24.0
    w.data = np.array([1.0, 1.0, 1.0], dtype=np.float32)  # a new array in the tensor
    assert step(x).item() == 6.0
    w.data = np.ones(3, dtype=np.float64)                 # a new dtype: traced again
    assert step(x).item() == 6.0
    assert step.traces == 2


def test_changes_between_calls_are_seen_once_the_replay_runs_as_graphs(device):
    """On CUDA the replay's work is captured into graphs (from its second replay on), which hold the
    addresses of the arrays they captured: changes in place are still seen, and a tensor given
    a new array makes the replay trace again."""
    def tensor(values):
        return gg.tensor(values, dtype=gg.float32, device=device)

    w, b = tensor([1.0, 2.0, 3.0]), tensor([0.5, -0.5, 0.25])
    step = gg.jit(lambda x: (gg.tanh(x * w + b) * 2 - 1).sum())

    def want(x):
        return (gg.tanh(x * w + b) * 2 - 1).sum().detach()

    x = tensor([0.1, 0.2, 0.3])
    for _ in range(4):                                    # traced, warmed up, captured, launched
        assert_close(step(x), want(x), rtol=1e-6, atol=1e-6)
    w.mul_(2)                                             # a traced tensor, changed in place
    assert_close(step(x), want(x), rtol=1e-6, atol=1e-6)
    x.add_(1)                                             # the argument, changed in place
    assert_close(step(x), want(x), rtol=1e-6, atol=1e-6)
    other = tensor([0.3, 0.0, -0.3])                      # another argument of the signature
    assert_close(step(other), want(other), rtol=1e-6, atol=1e-6)
    if device == "cuda":
        (report,) = step.launch_report()
        assert report["graphs"] >= 1 and report["refused"] == []
    b.data = tensor([1.0, 1.0, 1.0]).data                 # a new array in a traced tensor
    for _ in range(3):
        assert_close(step(x), want(x), rtol=1e-6, atol=1e-6)
    if device == "cuda":
        assert step.traces == 2                           # the graph held b's old array: traced again
    else:
        assert step.traces == 1                           # the CPU replay reads b's new array


def test_a_learning_rate_changed_between_calls_is_used():
    def run(jitted):
        gg.manual_seed(3)
        model = gg.nn.Linear(4, 2)
        opt = gg.optim.Adam(model.parameters(), lr=0.1)
        sched = gg.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        x, t = gg.randn(6, 4), gg.tensor([0, 1, 0, 1, 1, 0])

        step = _train_step(model, opt)
        run = gg.jit(step) if jitted else step
        losses = []
        for _ in range(8):
            losses.append(run(x, t).item())
            sched.step()
        return losses, model.weight.detach().numpy().copy(), opt.state[model.weight]["step"]

    eager, jitted = run(False), run(True)
    assert_close(np.array(jitted[0]), np.array(eager[0]), rtol=1e-6)
    assert_close(jitted[1], eager[1], rtol=1e-6)
    assert jitted[2] == eager[2] == 8


def test_gradients_accumulate_across_calls_without_zero_grad():
    def run(jitted):
        w = gg.tensor([0.5, -1.0, 2.0], requires_grad=True)

        def step(x):
            (x * w).sum().backward()
            return w.grad

        run = gg.jit(step) if jitted else step
        return [run(gg.tensor([1.0, 2.0, float(k)])).numpy().copy() for k in range(5)]

    for a, b in zip(run(True), run(False)):
        assert_close(a, b, rtol=0, atol=0)


def test_an_argument_that_requires_grad_gets_its_own_gradient_each_call():
    step = gg.jit(lambda x: (x * x).sum().backward())
    xs = [gg.tensor([1.0, float(k)], requires_grad=True) for k in range(3)]
    for x in xs:
        step(x)
    assert [x.grad.numpy().tolist() for x in xs] == [[2.0, 0.0], [2.0, 2.0], [2.0, 4.0]]


def test_cross_entropy_guards_retrace_for_ignored_rows_and_raise_for_bad_targets():
    model = gg.nn.Linear(3, 4)
    step = gg.jit(lambda x, t: F.cross_entropy(model(x), t, ignore_index=-1))
    x = gg.randn(4, 3)
    for t in ([0, 1, 2, 3], [0, 1, 2, 3], [0, -1, 2, 3], [0, 1, 2, 3]):
        t = gg.tensor(t)
        assert_close(step(x, t), F.cross_entropy(model(x), t, ignore_index=-1).detach(), rtol=1e-6)
    with pytest.raises(IndexError, match="target 9 is out of bounds"):
        step(x, gg.tensor([0, 9, 2, 3]))


def test_optimizer_steps_count_like_eager_and_state_dicts_round_trip():
    model = gg.nn.Linear(3, 2)
    opt = gg.optim.Adam(model.parameters(), lr=0.01)
    x, t = gg.randn(4, 3), gg.tensor([0, 1, 1, 0])

    @gg.jit
    def step(x, t):
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()

    for _ in range(5):
        step(x, t)
    assert all(st["step"] == 5 for st in opt.state.values())
    opt.load_state_dict(opt.state_dict())      # new state arrays: the replay must use them
    before = model.weight.detach().numpy().copy()
    step(x, t)
    assert all(st["step"] == 6 for st in opt.state.values())
    assert not np.array_equal(model.weight.detach().numpy(), before)


def test_jit_rejects_what_it_cannot_key():
    with pytest.raises(TypeError, match="neither a Tensor nor hashable"):
        gg.jit(lambda x: x)([1, 2, np.zeros(2)])
    with pytest.raises(ValueError, match="host_reads"):
        gg.jit(lambda x: x, host_reads="sometimes")


def test_gpugrad_train_with_jit_gives_the_same_run(tmp_path):
    from gpugrad.cli import main
    from gpugrad.train import TrainConfig, train

    runs = [train(TrainConfig(epochs=3, hidden=(16,), batch_size=100, device="cpu", progress=False,
                              jit=jitted, seed=5), log=lambda line: None) for jitted in (False, True)]
    assert runs[0]["history"] == runs[1]["history"]
    assert runs[0]["test_loss"] == runs[1]["test_loss"]
    out = tmp_path / "run"
    assert main(["train", "--jit", "--epochs", "1", "--hidden", "8", "--device", "cpu", "--no-progress",
                 "--out", str(out)]) == 0
    assert (out / "last.safetensors").exists()


def test_gpugrad_train_refuses_jit_with_several_processes():
    from gpugrad.train import TrainConfig, UsageError, World, check_world

    with pytest.raises(UsageError, match="--jit: traces the step of one process"):
        check_world(TrainConfig(jit=True, device="cpu"), World(size=2, local_rank=1))
    assert check_world(TrainConfig(jit=True, device="cpu"), World()) == "cpu"
