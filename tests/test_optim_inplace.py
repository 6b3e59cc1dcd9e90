"""The CPU optimizer updates write into reusable work arrays, bit for bit the formulas with temporaries.

No PyTorch needed: the reference is each update written out with temporaries (the code that
gpugrad.optim.functional ran before it wrote into ``Scratch`` arrays), and every step is
compared exactly, in float32 and float64, shapes and dtypes included.
"""

import math
import tracemalloc

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.optim as optim
from gpugrad.optim.functional import Scratch

DTYPES = [np.float32, np.float64]
SHAPES = [(3, 4), (5,), (), (0, 3), (257,), (2, 3, 4)]      # 257: past NumPy's SIMD block, with a tail
STEPS = 12


# ----------------------------------------------------------------------------- the formulas, written out

def written_out_sgd(param, grad, buf, *, lr, momentum, dampening, weight_decay, nesterov, maximize,
                    first_step):
    d_p = -grad if maximize else grad
    if weight_decay != 0:
        d_p = d_p + weight_decay * param
    if momentum != 0:
        if first_step:
            np.copyto(buf, d_p)
        else:
            np.multiply(buf, momentum, out=buf)
            np.add(buf, d_p if dampening == 0 else (1 - dampening) * d_p, out=buf)
        d_p = d_p + momentum * buf if nesterov else buf
    np.subtract(param, lr * d_p, out=param)


def written_out_adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps,
                     weight_decay, decoupled, amsgrad, maximize):
    if maximize:
        grad = -grad
    if weight_decay != 0:
        if decoupled:
            np.multiply(param, 1 - lr * weight_decay, out=param)
        else:
            grad = grad + weight_decay * param
    w = 1 - beta1
    if w < 0.5:
        np.add(exp_avg, w * (grad - exp_avg), out=exp_avg)
    else:
        np.subtract(grad, (grad - exp_avg) * (1 - w), out=exp_avg)
    np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
    np.add(exp_avg_sq, (1 - beta2) * grad * grad, out=exp_avg_sq)
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    v = max_exp_avg_sq if amsgrad else exp_avg_sq
    denom = np.sqrt(v, out=np.empty_like(v))
    np.divide(denom, bias_correction2_sqrt, out=denom)
    np.add(denom, eps, out=denom)
    np.subtract(param, step_size * exp_avg / denom, out=param)


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, maximize=True),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, weight_decay=0.1, maximize=True),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.8, dampening=0.3),
    dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.02, maximize=True),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
]
ADAM_CASES = [
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("Adam", dict(lr=0.02, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, weight_decay=0.1, maximize=True, amsgrad=True)),
    ("Adam", dict(lr=0.02, betas=(0.3, 0.8), eps=1e-6, weight_decay=0.1, amsgrad=True)),   # lerp's 2nd form
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.01, betas=(0.2, 0.5), weight_decay=0.3)),
]


def _init(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grad(p, t):
    """A gradient that depends on the parameter, with exact zeros of both signs in it."""
    g = (np.sin(3.0 * p) + np.cos(0.7 * t)).astype(p.dtype)
    g.reshape(-1)[::7] = 0.0
    g.reshape(-1)[3::11] = -0.0
    return g


def _assert_same(actual, expected, what):
    assert type(actual) is np.ndarray and actual.shape == expected.shape and actual.dtype == expected.dtype, \
        f"{what}: {type(actual).__name__} {getattr(actual, 'shape', None)} {getattr(actual, 'dtype', None)}"
    # bit for bit: equal values, and equal signs of zero
    assert np.array_equal(actual, expected) and np.array_equal(np.signbit(actual), np.signbit(expected)), \
        f"{what}: max |diff| {np.max(np.abs(actual - expected), initial=0)}"


def _run(make_opt, init, dtype):
    """gpugrad's optimizer over all SHAPES at once (sharing one Scratch); yields after each step."""
    params = [gg.tensor(a.copy(), requires_grad=True) for a in init]
    opt = make_opt(params)
    for t in range(STEPS):
        grads = []
        for p in params:
            g = _grad(p.data, t)
            grads.append(g.copy())
            p.grad = gg.tensor(g)
        opt.step()
        for p, g in zip(params, grads):         # the gradient is only read
            _assert_same(p.grad.data, g, "grad after step")
        yield t, opt, params, grads


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kw", SGD_CASES, ids=["-".join(f"{k}={v}" for k, v in c.items()) for c in SGD_CASES])
def test_sgd_bit_for_bit(kw, dtype):
    init = _init(dtype)
    ref = [a.copy() for a in init]
    bufs = [np.empty_like(a) for a in init]
    full = {**dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False), **kw}
    for t, opt, params, grads in _run(lambda ps: optim.SGD(ps, **kw), init, dtype):
        for i, (p, g) in enumerate(zip(params, grads)):
            written_out_sgd(ref[i], g, bufs[i], first_step=t == 0, **full)
            _assert_same(p.data, ref[i], f"step {t}, param {i} {p.shape}")
            if full["momentum"]:
                _assert_same(opt.state[p]["momentum_buffer"], bufs[i], f"step {t}, buffer {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name,kw", ADAM_CASES, ids=[f"{n}-" + "-".join(f"{k}={v}" for k, v in kw.items())
                                                     for n, kw in ADAM_CASES])
def test_adam_bit_for_bit(name, kw, dtype):
    init = _init(dtype)
    ref = [a.copy() for a in init]
    moments = [[np.zeros_like(a) for _ in range(3)] for a in init]
    decoupled = name == "AdamW"
    beta1, beta2 = kw.get("betas", (0.9, 0.999))
    full = dict(lr=kw["lr"], beta1=beta1, beta2=beta2, eps=kw.get("eps", 1e-8),
                weight_decay=kw.get("weight_decay", 1e-2 if decoupled else 0.0), decoupled=decoupled,
                amsgrad=kw.get("amsgrad", False), maximize=kw.get("maximize", False))
    for t, opt, params, grads in _run(lambda ps: getattr(optim, name)(ps, **kw), init, dtype):
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v, vmax = moments[i]
            written_out_adam(ref[i], g, m, v, vmax, step=t + 1, **full)
            _assert_same(p.data, ref[i], f"step {t}, param {i} {p.shape}")
            state = opt.state[p]
            _assert_same(state["exp_avg"], m, f"step {t}, exp_avg {i}")
            _assert_same(state["exp_avg_sq"], v, f"step {t}, exp_avg_sq {i}")
            if full["amsgrad"]:
                _assert_same(state["max_exp_avg_sq"], vmax, f"step {t}, max_exp_avg_sq {i}")


def test_update_functions_work_without_a_scratch():
    """Called as plain functions (the CUDA kernels' reference), they make their own work arrays."""
    p, g = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), np.full((2, 3), 0.5, np.float32)
    ref, got = p.copy(), p.copy()
    buf_ref, buf = np.empty_like(p), np.empty_like(p)
    hyper = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=True, maximize=True)
    written_out_sgd(ref, g, buf_ref, first_step=True, **hyper)
    optim.sgd_update(np, got, g, buf, first_step=True, **hyper)
    _assert_same(got, ref, "sgd_update without scratch")
    m, v = np.zeros_like(p), np.zeros_like(p)
    mr, vr = np.zeros_like(p), np.zeros_like(p)
    written_out_adam(ref, g, mr, vr, None, step=1, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                     weight_decay=0.0, decoupled=False, amsgrad=False, maximize=False)
    optim.adam_update(np, got, g, m, v, None, step=1, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                      weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False, maximize=False)
    _assert_same(got, ref, "adam_update without scratch")
    _assert_same(m, mr, "exp_avg")


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
                                  lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1, amsgrad=True),
                                  lambda ps: optim.AdamW(ps, lr=0.01, maximize=True)],
                         ids=["SGD", "Adam", "AdamW"])
def test_a_step_allocates_no_temporaries(make):
    """After the first step (which makes the state and the work arrays), a step allocates nothing big."""
    w = gg.tensor(np.random.default_rng(1).standard_normal((256, 256)), requires_grad=True)   # 512 KiB
    b = gg.tensor(np.ones(256), requires_grad=True)
    opt = make([w, b])
    for p in (w, b):
        p.grad = gg.tensor(np.full(p.shape, 0.25))
    opt.step()
    tracemalloc.start()
    try:
        opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = w.data.nbytes
    assert peak < size // 8, f"a step allocated {peak} bytes at its peak; the weight has {size}"


def test_scratch_lends_views_of_shared_buffers():
    s = Scratch()
    big = np.zeros((4, 5), np.float32)
    a1, b1 = s.take(np, big, 2)
    assert a1.shape == b1.shape == (4, 5) and a1.dtype == b1.dtype == np.float32
    assert not np.shares_memory(a1, b1) and not np.shares_memory(a1, big)
    # a smaller parameter of the same dtype shares the buffers; another dtype gets its own
    a2, b2 = s.take(np, np.zeros(7, np.float32), 2)
    assert a2.shape == (7,) and np.shares_memory(a1, a2) and np.shares_memory(b1, b2)
    (c,) = s.take(np, np.zeros(3, np.float64), 1)
    assert c.dtype == np.float64 and not np.shares_memory(c, a1)
    assert s.take(np, big, 1)[0] is a1                          # cached: the same view each step
    assert s.take(np, np.zeros((), np.float32), 1)[0].shape == ()
    # a larger parameter grows the buffers and drops the views of the old ones
    a3, b3 = s.take(np, np.zeros(100, np.float32), 2)
    assert a3.shape == (100,) and not np.shares_memory(a3, a1)
    a4, _ = s.take(np, big, 2)
    assert np.shares_memory(a4, a3) and not np.shares_memory(a4, a1)
    assert len(s.take(np, big, 3)) == 3                           # more buffers on demand
