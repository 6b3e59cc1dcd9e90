"""Optimizers and schedulers: parity with torch.optim, param groups, zero_grad, state_dict round trips."""

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.optim as optim
from gpugrad.optim import lr_scheduler
from gpugrad.serialization import load, save
from gpugrad.testing import assert_close

SHAPES = [(3, 4), (5,), ()]
STEPS = 50


def _init(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _gradient(p, t, a):
    """A gradient that depends on the current parameter (so a wrong update changes later gradients)."""
    return 2.0 * np.sin(p) + np.cos(0.3 * t + a)


def _gg_params(init, dtype=gg.float64):
    return [gg.tensor(a.copy(), dtype=dtype, requires_grad=True) for a in init]


def _gg_steps(opt, params, init, start, stop):
    for t in range(start, stop):
        for p, a in zip(params, init):
            p.grad = gg.tensor(_gradient(p.data, t, a), dtype=p.dtype)
        opt.step()


def _torch_run(torch, name, kw, init, steps=STEPS, groups=None):
    params = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    spec = params if groups is None else [{**g, "params": [params[i] for i in g["params"]]} for g in groups]
    opt = getattr(torch.optim, name)(spec, **kw)
    for t in range(steps):
        for p, a in zip(params, init):
            p.grad = torch.tensor(_gradient(p.detach().numpy(), t, a))
        opt.step()
    return [p.detach().numpy() for p in params]


CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, maximize=True, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.02, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.3, 0.8), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{'-'.join(k)}" for n, k in CASES])
def test_matches_torch_float64(name, kw, torch):
    init = _init()
    params = _gg_params(init)
    opt = getattr(optim, name)(params, **kw)
    _gg_steps(opt, params, init, 0, STEPS)
    expected = _torch_run(torch, name, kw, init)
    for p, e in zip(params, expected):
        assert p.dtype == np.float64 and p.shape == e.shape
        assert_close(p.data, e, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("AdamW", dict(lr=0.01))])
def test_float32_stays_float32_and_close(name, kw, torch):
    init = _init()
    params = _gg_params(init, gg.float32)
    opt = getattr(optim, name)(params, **kw)
    _gg_steps(opt, params, init, 0, 20)
    expected = _torch_run(torch, name, kw, init, steps=20)
    for p, e in zip(params, expected):
        assert p.dtype == np.float32
        for buf in opt.state[p].values():
            assert not hasattr(buf, "dtype") or buf.dtype == np.float32
        assert_close(p.data, e.astype(np.float32), rtol=1e-4, atol=1e-5)     # the float64 run, rounded


def test_end_to_end_backward_matches_torch(torch):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 3)), rng.standard_normal(16)
    w0, b0 = rng.standard_normal(3), rng.standard_normal(())
    w, b = gg.tensor(w0, requires_grad=True), gg.tensor(b0, requires_grad=True)
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    opt, topt = optim.Adam([w, b], lr=0.05), torch.optim.Adam([tw, tb], lr=0.05)
    gx, gy, tx, ty = gg.tensor(x), gg.tensor(y), torch.tensor(x), torch.tensor(y)
    for _ in range(30):
        opt.zero_grad()
        ((gx @ w + b - gy) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        ((tx @ tw + tb - ty) ** 2).mean().backward()
        topt.step()
    assert_close(w.data, tw.detach().numpy(), rtol=1e-10)
    assert_close(b.data, tb.detach().numpy(), rtol=1e-10)


def test_param_groups_with_their_own_options_match_torch(torch):
    init = _init()
    params = _gg_params(init)
    groups = [{"params": [0, 2], "lr": 0.01}, {"params": [1], "momentum": 0.5, "nesterov": True}]
    opt = optim.SGD([{**g, "params": [params[i] for i in g["params"]]} for g in groups], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.5]
    _gg_steps(opt, params, init, 0, STEPS)
    expected = _torch_run(torch, "SGD", dict(lr=0.1, momentum=0.9), init, groups=groups)
    for p, e in zip(params, expected):
        assert_close(p.data, e, rtol=1e-10, atol=1e-13)


def test_zero_grad_and_params_without_grad_are_skipped():
    a, b = gg.ones(3, requires_grad=True), gg.ones(2, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    (a * 2).sum().backward()
    opt.step()
    assert not np.array_equal(a.data, np.ones(3)) and np.array_equal(b.data, np.ones(2))
    assert b not in opt.state or not opt.state[b]
    opt.zero_grad(set_to_none=False)
    assert_close(a.grad, np.zeros(3, np.float32), rtol=0, atol=0)
    assert b.grad is None
    before = a.data.copy()
    opt.step()                                   # zero gradient: Adam still moves by its momentum
    assert not np.array_equal(a.data, before)
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    before = a.data.copy()
    opt.step()
    assert_close(a.data, before, rtol=0, atol=0)


def test_step_updates_in_place_and_runs_the_closure():
    p = gg.tensor([1.0, 2.0], requires_grad=True)
    data = p.data
    opt = optim.SGD([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 5.0
    assert p.data is data
    assert_close(p.data, [0.0, 0.0])


@pytest.mark.parametrize("name,kw", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
])
def test_state_dict_round_trip_mid_training(name, kw, tmp_path):
    init = _init()
    straight = _gg_params(init)
    opt = getattr(optim, name)(straight, **kw)
    _gg_steps(opt, straight, init, 0, STEPS)

    first = _gg_params(init)
    opt1 = getattr(optim, name)(first, **kw)
    _gg_steps(opt1, first, init, 0, 20)
    save({"params": [p.detach() for p in first], "optim": opt1.state_dict()}, tmp_path / "ckpt.gg")
    _gg_steps(opt1, first, init, 20, 25)         # later steps must not change what was saved

    ckpt = load(tmp_path / "ckpt.gg")
    resumed = [gg.tensor(t.data, requires_grad=True) for t in ckpt["params"]]
    opt2 = getattr(optim, name)(resumed, lr=123.0)
    opt2.load_state_dict(ckpt["optim"])
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    _gg_steps(opt2, resumed, init, 20, STEPS)
    for p, q in zip(straight, resumed):
        assert_close(p.data, q.data, rtol=0, atol=0)


def test_state_dict_is_a_snapshot_and_names_params_by_index():
    p, q = gg.ones(2, requires_grad=True), gg.ones(3, requires_grad=True)
    opt = optim.Adam([{"params": [p]}, {"params": [q], "lr": 0.5}])
    p.grad = gg.ones(2)
    opt.step()
    sd = opt.state_dict()
    assert list(sd["state"]) == ["0"]
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert sd["state"]["0"]["step"] == 1
    saved = sd["state"]["0"]["exp_avg"].data.copy()
    opt.step()
    assert_close(sd["state"]["0"]["exp_avg"].data, saved, rtol=0, atol=0)


def test_load_state_dict_errors():
    p, q = gg.ones(2, requires_grad=True), gg.ones(3, requires_grad=True)
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    p.grad, q.grad = gg.ones(2), gg.ones(3)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="1 parameter group.*this optimizer has 2"):
        optim.SGD([{"params": [p]}, {"params": [q]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="2 parameter.*in the state dict but 1"):
        optim.SGD([p], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"shape \(2,\) but the parameter has shape \(3,\)"):
        optim.SGD([q, p], lr=0.1, momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="lacks option"):
        optim.Adam([p, q]).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"foo": 1})
    other = optim.SGD([p, q], lr=0.1)
    before = other.param_groups[0]["lr"]
    bad = {**sd, "state": {**sd["state"], "7": {}}}
    with pytest.raises(ValueError, match="names no parameter"):
        other.load_state_dict(bad)
    assert other.param_groups[0]["lr"] == before and not other.state      # a failed load changes nothing


def test_constructor_errors():
    p = gg.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    for betas in ((0.9, 1.5), (1.0, 0.9), (0.9, 1.0), (-0.1, 0.9), (0.9,), (0.9, 0.99, 0.999)):
        with pytest.raises(ValueError, match=r"invalid betas=.* in param group 0"):
            optim.Adam([p], betas=betas)
    with pytest.raises(ValueError, match=r"invalid eps=-1e-08 in param group 0; use a value >= 0"):
        optim.AdamW([p], eps=-1e-8)
    optim.Adam([p], betas=(0.0, 0.0), eps=0.0)          # the boundaries PyTorch accepts
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="not a Tensor"):
        optim.SGD([np.ones(2)], lr=0.1)


@pytest.mark.parametrize("kw", [dict(lr=0.1, momentum=0.9, dampening=0.25, weight_decay=0.05),
                                dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True),
                                dict(lr=0.2)])
def test_sgd_is_the_textbook_update(kw):
    """PyTorch's SGD, written out: d = ±g + wd p; b = d, then mu b + (1 - tau) d; p -= lr (d + mu b | b)."""
    mu, tau, wd = kw.get("momentum", 0.0), kw.get("dampening", 0.0), kw.get("weight_decay", 0.0)
    p = gg.tensor([1.0, -2.0, 0.5], dtype=gg.float64, requires_grad=True)
    opt = optim.SGD([p], **kw)
    expected, b = np.array([1.0, -2.0, 0.5]), None
    for t in range(4):
        g = np.array([0.3, -0.1, 0.2]) * (t + 1) + expected        # depends on the parameter
        p.grad = gg.tensor(g)
        opt.step()
        d = (-g if kw.get("maximize") else g) + wd * expected
        if mu:
            b = d.copy() if b is None else mu * b + (1 - tau) * d
            d = d + mu * b if kw.get("nesterov") else b
        expected = expected - kw["lr"] * d
        assert_close(p.detach(), expected, rtol=1e-14, atol=1e-15, msg=f"step {t + 1}")


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01, weight_decay=0.1)), ("AdamW", dict(lr=0.01)),
                                     ("AdamW", dict(lr=0.05, betas=(0.5, 0.8), eps=1e-3, weight_decay=0.2))])
def test_adam_is_the_textbook_update(name, kw):
    """Both moments and both bias corrections, written out (Kingma and Ba; AdamW decays p first)."""
    b1, b2 = kw.get("betas", (0.9, 0.999))
    eps, lr = kw.get("eps", 1e-8), kw["lr"]
    wd = kw.get("weight_decay", 0.0 if name == "Adam" else 1e-2)
    p = gg.tensor([1.0, -2.0, 0.5], dtype=gg.float64, requires_grad=True)
    opt = getattr(optim, name)([p], **kw)
    expected, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for t in range(1, 5):
        g = np.array([0.3, -0.1, 0.2]) * t + expected
        p.grad = gg.tensor(g)
        opt.step()
        if name == "AdamW":
            expected = expected * (1 - lr * wd)
        else:
            g = g + wd * expected
        m = b1 * m + (1 - b1) * g                                 # first moment
        v = b2 * v + (1 - b2) * g * g                             # second moment
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)       # bias corrections
        expected = expected - lr * m_hat / (np.sqrt(v_hat) + eps)
        assert_close(p.detach(), expected, rtol=1e-13, atol=1e-15, msg=f"step {t}")
        assert_close(opt.state[p]["exp_avg"], m, rtol=1e-13, atol=1e-15)
        assert_close(opt.state[p]["exp_avg_sq"], v, rtol=1e-13, atol=1e-15)


def test_defaults_are_pytorchs():
    p = gg.zeros(2, requires_grad=True)
    adam, adamw, sgd = optim.Adam([p]), optim.AdamW([p]), optim.SGD([p], lr=0.1)
    assert {k: adam.defaults[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")} == \
        dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False)
    assert (adamw.defaults["lr"], adamw.defaults["eps"], adamw.defaults["weight_decay"]) == (1e-3, 1e-8, 1e-2)
    options = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")
    assert {k: sgd.defaults[k] for k in options} == dict(momentum=0.0, dampening=0.0, weight_decay=0.0,
                                                         nesterov=False, maximize=False)


# ---------------------------------------------------------------------------------------------- schedulers
SCHEDULERS = [
    ("StepLR", dict(step_size=3)),
    ("StepLR", dict(step_size=2, gamma=0.5)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
]


@pytest.mark.parametrize("name,kw", SCHEDULERS, ids=[f"{n}-{k}" for n, k in SCHEDULERS])
def test_scheduler_lrs_match_torch(name, kw, torch):
    p = gg.zeros(2, requires_grad=True)
    opt = optim.SGD([{"params": [p]}, {"params": [gg.zeros(1, requires_grad=True)], "lr": 0.3}], lr=0.1)
    sched = getattr(lr_scheduler, name)(opt, **kw)
    tparams = [torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)]
    topt = torch.optim.SGD([{"params": [tparams[0]]}, {"params": [tparams[1]], "lr": 0.3}], lr=0.1)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    ours, theirs = [], []
    for _ in range(35):                        # past T_max: the cosine comes back up
        ours.append(sched.get_last_lr())
        theirs.append(tsched.get_last_lr())
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
    assert_close(ours, theirs, rtol=1e-12, atol=1e-15)


def test_scheduler_state_dict_round_trip(tmp_path):
    def make():
        p = gg.zeros(2, requires_grad=True)
        opt = optim.SGD([p], lr=0.1, momentum=0.9)
        return opt, lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)

    opt, sched = make()
    for _ in range(4):
        sched.step()
    save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.gg")
    expected = []
    for _ in range(5):
        sched.step()
        expected.append(sched.get_last_lr())

    opt2, sched2 = make()
    ckpt = load(tmp_path / "s.gg")
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert sched2.last_epoch == 4 and opt2.param_groups[0]["lr"] == sched2.get_last_lr()[0]
    got = []
    for _ in range(5):
        sched2.step()
        got.append(sched2.get_last_lr())
    assert got == expected
    with pytest.raises(ValueError, match="lacks"):
        sched2.load_state_dict({"last_epoch": 3})


def test_scheduler_errors():
    opt = optim.SGD([gg.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=5)
    with pytest.raises(TypeError, match="Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)


def test_step_bumps_the_version_so_a_stale_graph_is_caught():
    w = gg.ones(3, requires_grad=True)
    loss = (w * w).sum()
    opt = optim.SGD([w], lr=0.1)
    w.grad = gg.ones(3)
    opt.step()
    with pytest.raises(RuntimeError, match="SGD.step"):
        loss.backward()


def test_fused_kernels_replace_the_reference_only_off_the_cpu(monkeypatch):
    from gpugrad.optim import functional

    def fused(*args, **kwargs):
        raise AssertionError("not for NumPy arrays")

    monkeypatch.setitem(functional.FUSED, "sgd", fused)
    assert functional.pick("sgd", np) is optim.sgd_update
    assert functional.pick("sgd", object()) is fused          # any non-NumPy array module
    assert functional.pick("adam", object()) is optim.adam_update
    p = gg.ones(2, requires_grad=True)
    p.grad = gg.ones(2)
    optim.SGD([p], lr=0.5).step()
    assert_close(p.data, [0.5, 0.5], rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                     ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1))])
def test_cuda_matches_cpu_and_keeps_state_on_the_device(name, kw):
    try:
        gg.zeros(1).to("cuda")
    except RuntimeError:
        pytest.skip("no CUDA device")
    init = _init()
    cpu = _gg_params(init)
    gpu = [gg.tensor(a.copy(), dtype=gg.float64, device="cuda", requires_grad=True) for a in init]
    opt_cpu, opt_gpu = getattr(optim, name)(cpu, **kw), getattr(optim, name)(gpu, **kw)
    for t in range(10):
        for pc, pg, a in zip(cpu, gpu, init):
            g = _gradient(pc.data, t, a)
            pc.grad = gg.tensor(g, dtype=gg.float64)
            pg.grad = gg.tensor(g, dtype=gg.float64, device="cuda")
        opt_cpu.step()
        opt_gpu.step()
    for pc, pg in zip(cpu, gpu):
        assert pg.device.type == "cuda"
        assert all(not hasattr(v, "shape") or type(v).__module__.startswith("cupy")
                   for v in opt_gpu.state[pg].values())
        assert_close(pg.detach().numpy(), pc.data, rtol=1e-12, atol=1e-14)
    sd = opt_gpu.state_dict()
    fresh = [gg.tensor(p.detach().numpy(), requires_grad=True) for p in gpu]
    moved = getattr(optim, name)(fresh, **kw)
    moved.load_state_dict(sd)                                  # state follows its (CPU) parameter
    assert all(type(v).__module__ == "numpy" for st in moved.state.values() for v in st.values()
               if hasattr(v, "shape"))
