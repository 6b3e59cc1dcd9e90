"""The CUDA backend on a real GPU. Every test is marked ``cuda`` and skips, saying why, without one.

With GPUGRAD_EMULATE_CUDA=1 they run on gpugrad's CUDA emulator instead (CI does); the two
that need a real GPU's clock or memory pool say so when they skip there.

In file order (cheap and basic first, so ``pytest -x`` stops early on a broken backend):

1. devices: moves (.to, .cuda, .cpu, .numpy), creation functions, seeding, save/load
   across devices, and the errors for operands on different devices;
2. fused kernels: each one equals its plain rule (benchmarks/gpu/plain_rules.py, with
   xp = cupy) in float32 and float64, on random inputs of awkward sizes;
3. the engine on CUDA: backward runs the fused kernels, gradients stay on the device,
   and neither backward nor an optimizer step copies anything to the host or waits
   for the GPU;
4. an MLP trained with cross-entropy and Adam on CUDA matches the same run on the CPU;
5. the whole op registry, every sample, in float64: values and gradients equal the CPU's,
   and gradients pass central differences taken on the device.

``device_gradcheck`` below checks each registry sample on the device;
``test_gg_testing_gradcheck_on_cuda`` checks the public gradcheck on CUDA inputs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pytest

import gpugrad as gg
from benchmarks.gpu import plain_rules as plain
from gpugrad import backend
from gpugrad.cuda import emulator, kernels
from gpugrad.nn import functional as F
from gpugrad.ops.registry import REGISTRY
from gpugrad.ops.samples import Const
from gpugrad.optim import functional as optim_functional
from gpugrad.testing import assert_close

pytestmark = pytest.mark.cuda

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64]
SIZES = [0, 1, 257, 100_003]
# rtol, atol of a fused kernel against its plain rule run by CuPy in the same dtype
TOL = {F32: (2e-5, 2e-6), F64: (1e-12, 1e-13)}


@pytest.fixture
def cp() -> Any:
    """The cupy module; skips the test (with CuPy's own reason) where no GPU is usable."""
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    return backend.load_cupy()


def gpu_only(reason: str) -> Any:
    """Skip a test on the CUDA emulator (GPUGRAD_EMULATE_CUDA), saying why it needs a real GPU."""
    return pytest.mark.skipif(gg.cuda.is_emulated(),
                              reason=f"needs a real GPU, not the CUDA emulator: {reason}")


def host(a: Any) -> np.ndarray:
    """A CuPy (or NumPy) array as NumPy, copied explicitly."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def close(actual: Any, expected: Any, dtype: Any, *, scale: float = 1.0, err: str = "") -> None:
    """actual has expected's shape and dtype ``dtype``, and expected's values to dtype's tolerance."""
    assert actual.dtype == np.dtype(dtype), f"{err}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    rtol, atol = TOL[np.dtype(dtype)]
    assert_close(actual, expected, rtol=rtol, atol=atol * scale, check_dtype=False, check_device=False,
                 equal_nan=True, msg=err)                 # nan where the reference is nan


def randn(cp: Any, shape: Any, dtype: Any, rng: np.random.Generator, scale: float = 1.0) -> Any:
    """Random normal values drawn on the host (reproducible), on the GPU in ``dtype``."""
    return cp.asarray((rng.normal(0.0, scale, size=shape)).astype(dtype))


# ============================================================================= 1. devices


def test_cuda_module_reports_the_device(cp):
    assert gg.cuda.is_available() and gg.cuda.unavailable_reason() is None
    assert gg.cuda.device_count() == cp.cuda.runtime.getDeviceCount() >= 1
    assert gg.cuda.current_device() == 0
    x = gg.ones(1000, device="cuda") * 2
    gg.cuda.synchronize()
    gg.cuda.synchronize("cuda:0")
    with pytest.raises(ValueError, match="not a CUDA device"):
        gg.cuda.synchronize("cpu")
    assert x.device == "cuda" and x.device == gg.Device("cuda:0") and str(x.device) == "cuda:0"
    assert "device='cuda:0'" in repr(x)


def test_moves_between_devices_copy_explicitly(cp):
    x = gg.randn(3, 4)
    y = x.to("cuda")
    assert y.device == "cuda:0" and isinstance(y.data, cp.ndarray) and y.dtype == gg.float32
    assert y.to("cuda") is y and y.cuda() is y                     # already there: no copy
    assert x.cuda().device == "cuda:0" and x.cuda(0).device == "cuda:0"
    assert x.to(gg.Device("cuda:0")).device == "cuda:0"
    z = y.to("cuda", gg.float64)
    assert z.device == "cuda:0" and z.dtype == gg.float64
    back = y.cpu()
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    assert_close(back.numpy(), x.numpy(), rtol=0, atol=0)
    host_copy = y.numpy()                                         # .numpy() copies to the host
    assert isinstance(host_copy, np.ndarray)
    assert_close(host_copy, x.numpy(), rtol=0, atol=0)
    host_copy[0, 0] = 123.0                                       # a copy: the GPU data is untouched
    assert y[0, 0].item() == x[0, 0].item() and y.tolist() == x.tolist()
    assert isinstance(y.sum().item(), float) and float(y.sum()) == pytest.approx(float(x.sum()), rel=1e-5)
    with pytest.raises(RuntimeError, match="requires grad"):
        y.detach().requires_grad_().numpy()


def test_gradients_flow_back_across_a_move(cp):
    x = gg.randn(5, requires_grad=True)                           # a CPU leaf
    y = x.to("cuda")
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    assert_close(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)
    w = gg.randn(5, device="cuda", requires_grad=True)            # a CUDA leaf, loss on the CPU
    (w.cpu() * 3).sum().backward()
    assert w.grad.device == "cuda:0"
    assert_close(w.grad.numpy(), np.full(5, 3, np.float32), rtol=0, atol=0)


def test_creation_functions_make_tensors_on_the_device(cp):
    cases = {
        "tensor": lambda d: gg.tensor([[1.0, 2.0], [3.0, 4.0]], device=d),
        "as_tensor": lambda d: gg.as_tensor(np.arange(6).reshape(2, 3), device=d),
        "zeros": lambda d: gg.zeros(2, 3, device=d),
        "ones": lambda d: gg.ones((2, 3), dtype=gg.float64, device=d),
        "full": lambda d: gg.full((2, 2), 7.5, device=d),
        "arange": lambda d: gg.arange(0.0, 5.0, 0.5, device=d),
        "linspace": lambda d: gg.linspace(-1, 1, 9, device=d),
        "eye": lambda d: gg.eye(3, 4, device=d),
        "zeros_like": lambda d: gg.zeros_like(gg.ones(2, 5), device=d),
        "ones_like": lambda d: gg.ones_like(gg.ones(3), device=d),
        "full_like": lambda d: gg.full_like(gg.ones(3), 2.5, device=d),
        "randn": lambda d: (gg.manual_seed(3), gg.randn(4, 5, device=d))[1],
        "rand": lambda d: (gg.manual_seed(3), gg.rand(4, 5, dtype=gg.float64, device=d))[1],
        "randint": lambda d: (gg.manual_seed(3), gg.randint(0, 10, (6,), device=d))[1],
    }
    for name, make in cases.items():
        on_gpu, on_cpu = make("cuda"), make("cpu")
        assert on_gpu.device == "cuda:0" and isinstance(on_gpu.data, cp.ndarray), name
        assert on_gpu.dtype == on_cpu.dtype and on_gpu.shape == on_cpu.shape, name
        assert_close(on_gpu.numpy(), on_cpu.numpy(), msg=name, rtol=0, atol=0)
    t = gg.zeros(3, device="cuda", requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.device == "cuda:0"
    like = gg.zeros_like(gg.ones(2, device="cuda"))               # *_like keeps the device
    assert like.device == "cuda:0"


def test_manual_seed_reproduces_draws_on_cuda(cp):
    def draws() -> list[np.ndarray]:
        gg.manual_seed(1234)
        out = [gg.randn(100, device="cuda"), gg.rand(3, 4, device="cuda"),
               gg.randint(0, 50, (20,), device="cuda")]
        out.append(F.dropout(gg.ones(1000, device="cuda"), p=0.3))
        model = gg.nn.MLP([8, 16, 4], device="cuda")
        out.extend(p.detach() for p in model.parameters())
        return [t.numpy() for t in out]

    first, second = draws(), draws()
    for a, b in zip(first, second):
        assert_close(a, b, rtol=0, atol=0)
    gg.manual_seed(1234)                                         # the same numbers as on the CPU
    assert_close(gg.randn(100).numpy(), first[0], rtol=0, atol=0)
    gg.manual_seed(99)
    assert not np.array_equal(gg.randn(100, device="cuda").numpy(), first[0])


def test_save_on_cuda_load_on_cpu_and_back(cp):
    gg.manual_seed(0)
    model = gg.nn.MLP([6, 16, 3], activation="tanh", device="cuda")
    opt = gg.optim.Adam(model.parameters(), lr=1e-2)
    x, t = gg.randn(10, 6, device="cuda"), gg.randint(0, 3, (10,), device="cuda")
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ckpt.gg")
        gg.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": 2}, path)
        on_cpu = gg.load(path)
        on_gpu = gg.load(path, device="cuda")
    assert on_cpu["step"] == 2
    for key, value in model.state_dict().items():
        assert on_cpu["model"][key].device == "cpu" and on_gpu["model"][key].device == "cuda:0"
        assert_close(on_cpu["model"][key].numpy(), value.numpy(), rtol=0, atol=0)
        assert_close(on_gpu["model"][key].numpy(), value.numpy(), rtol=0, atol=0)
    # a CPU model (and its optimizer) resumes from the CUDA checkpoint, and a CUDA one from that
    cpu_model = gg.nn.MLP([6, 16, 3], activation="tanh")
    cpu_model.load_state_dict(on_cpu["model"])
    cpu_opt = gg.optim.Adam(cpu_model.parameters(), lr=1e-2)
    cpu_opt.load_state_dict(on_cpu["opt"])
    assert all(backend.device_of(s["exp_avg"]) == "cpu" for s in cpu_opt.state.values())
    gpu_model = gg.nn.MLP([6, 16, 3], activation="tanh", device="cuda")
    gpu_model.load_state_dict(on_cpu["model"])                   # copied onto each parameter's device
    gpu_opt = gg.optim.Adam(gpu_model.parameters(), lr=1e-2)
    gpu_opt.load_state_dict(on_gpu["opt"])
    assert all(backend.device_of(s["exp_avg_sq"]) == "cuda:0" for s in gpu_opt.state.values())
    xc, tc = x.cpu(), t.cpu()
    for m, o, xs, ts in ((cpu_model, cpu_opt, xc, tc), (gpu_model, gpu_opt, x, t), (model, opt, x, t)):
        o.zero_grad()
        F.cross_entropy(m(xs), ts).backward()
        o.step()
    for a, b, c in zip(cpu_model.parameters(), gpu_model.parameters(), model.parameters()):
        assert_close(b.detach().numpy(), c.detach().numpy(), rtol=1e-6, atol=1e-7)
        assert_close(a.detach().numpy(), c.detach().numpy(), rtol=1e-4, atol=1e-5)


def _device_error(fn: Callable[[], Any]) -> str:
    with pytest.raises(RuntimeError) as info:
        fn()
    return str(info.value)


def test_mixing_cpu_and_cuda_names_both_devices(cp):
    a, b = gg.ones(3), gg.ones(3, device="cuda")
    for name, fn in {"add": lambda: a + b, "multiply": lambda: b * a, "matmul": lambda: a @ b,
                     "where": lambda: gg.where(b > 0, a, b)}.items():
        msg = _device_error(fn)
        assert name in msg and "different devices" in msg and "cpu" in msg and "cuda:0" in msg, msg
    w = gg.ones(3, device="cuda", requires_grad=True)
    msg = _device_error(lambda: (w * 2).backward(gradient=gg.ones(3)))
    assert "cpu" in msg and "cuda:0" in msg, msg
    # an optimizer whose state lives on another device than its parameter
    model = gg.nn.Linear(3, 2)
    opt = gg.optim.Adam(model.parameters())
    model(gg.ones(4, 3)).sum().backward()
    opt.step()
    model.cuda()
    model(gg.ones(4, 3, device="cuda")).sum().backward()
    msg = _device_error(opt.step)
    assert "cpu" in msg and "cuda:0" in msg, msg


def _needs_two_gpus() -> None:
    if gg.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, this machine has {gg.cuda.device_count()}")


def test_mixing_two_gpus_names_both(cp):
    _needs_two_gpus()
    a = gg.ones(3, device="cuda:0")
    b = a.to("cuda:1")
    assert b.device == "cuda:1" and b.data.device.id == 1
    assert_close(b.numpy(), np.ones(3, np.float32), rtol=0, atol=0)
    msg = _device_error(lambda: a + b)
    assert "cuda:0" in msg and "cuda:1" in msg, msg
    with pytest.raises(RuntimeError, match="does not exist"):
        a.to(f"cuda:{gg.cuda.device_count()}")


def test_training_on_the_second_gpu(cp):
    # CuPy runs an op on the *current* device and refuses arrays of another one, so this
    # needs gpugrad to run each op (and its VJP) under its operands' device.
    _needs_two_gpus()
    w = gg.randn(4, device="cuda:1", requires_grad=True)
    loss = (w.tanh() * w).sum()                                   # fused kernels on the second GPU
    loss.backward()
    assert loss.device == "cuda:1" and w.grad.device == "cuda:1"
    expected = (np.tanh(w.detach().numpy()) + w.detach().numpy() / np.cosh(w.detach().numpy()) ** 2)
    assert_close(w.grad.numpy(), expected, rtol=1e-5)


# ============================================================================= 2. fused kernels
#
# Each kernel's result in its dtype is compared with its plain rule evaluated in float64 on
# the same (already rounded) inputs: a float32 composition of the plain rule has rounding
# errors of its own (1 + tanh(u) near -1, say) that are no fault of the kernel.


def up(*arrays: Any) -> list[Any]:
    """float64 copies of the arrays (on their device) for the reference computation."""
    return [a.astype(np.float64) for a in arrays]


def _activation_inputs(cp: Any, act: str, shape: tuple, dtype: Any, rng: np.random.Generator,
                       bias: np.ndarray | None = None) -> tuple[Any, Any, float]:
    """(g, saved, alpha) on the GPU: saved is act's output (of x + bias) or its input x."""
    x = rng.normal(0.0, 2.0, size=shape)
    x.reshape(-1)[::7] = 0.0                                      # exact zeros: relu's kink
    alpha = 0.07 if act == "leaky_relu" else 0.0
    if act in plain.SAVES_OUTPUT:
        z = x if bias is None else x + bias.astype(np.float64)
        saved = plain.activation_forward(np, act, z)
    else:
        saved = x
    return randn(cp, shape, dtype, rng), cp.asarray(saved.astype(dtype)), alpha


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", plain.ACTIVATIONS)
def test_activation_kernels_equal_the_plain_rules(cp, act, dtype):
    rng = np.random.default_rng(0)
    for n in SIZES:
        g, saved, alpha = _activation_inputs(cp, act, (n,), dtype, rng)
        dx = kernels.activation_backward(f"{act}_backward", g, saved, alpha)
        assert isinstance(dx, cp.ndarray) and dx.dtype == dtype and dx.shape == (n,)
        close(dx, plain.activation_backward(cp, act, *up(g, saved), alpha), dtype, err=f"{act} n={n}")
    g, saved, alpha = _activation_inputs(cp, act, (33, 7), dtype, rng)   # 2-d and non-contiguous
    dx = kernels.activation_backward(f"{act}_backward", g.T, saved.T, alpha)
    close(dx, plain.activation_backward(cp, act, *up(g.T, saved.T), alpha), dtype, err=f"{act} transposed")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_named_activation_helpers(cp, dtype):
    rng = np.random.default_rng(1)
    g, x = randn(cp, (257,), dtype, rng), randn(cp, (257,), dtype, rng, 2.0)
    g64, x64 = up(g, x)
    out = cp.tanh(x)
    close(kernels.tanh_backward(g, out), g64 * (1 - out.astype(np.float64) ** 2), dtype)
    close(kernels.relu_backward(g, cp.maximum(x, 0)), g64 * (x64 > 0), dtype)
    sig = 1 / (1 + cp.exp(-x))
    sig64 = sig.astype(np.float64)
    close(kernels.sigmoid_backward(g, sig), g64 * sig64 * (1 - sig64), dtype)
    close(kernels.leaky_relu_backward(g, x, 0.2), cp.where(x64 > 0, g64, 0.2 * g64), dtype)
    close(kernels.gelu_backward(g, x), plain.activation_backward(cp, "gelu_erf", g64, x64), dtype)
    close(kernels.gelu_backward(g, x, "tanh"), plain.activation_backward(cp, "gelu_tanh", g64, x64), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["multiply", "divide"])
def test_binary_kernels_equal_the_plain_rules(cp, op, dtype):
    rng = np.random.default_rng(2)
    for shape in [(n,) for n in SIZES] + [(317, 5)]:
        g, x = randn(cp, shape, dtype, rng), randn(cp, shape, dtype, rng)
        y = cp.asarray(rng.uniform(0.5, 2.0, size=shape).astype(dtype))
        if op == "multiply":
            got, want = kernels.multiply_backward(g, x, y), plain.multiply_backward(cp, *up(g, x, y))
        else:
            out = x / y
            got, want = kernels.divide_backward(g, y, out), plain.divide_backward(cp, *up(g, y, out))
        for name, a, b in zip(("first", "second"), got, want):
            assert a.dtype == dtype and a.shape == shape
            close(a, b, dtype, err=f"{op} {name} gradient, shape {shape}")


CE_SHAPES = [(0, 10), (1, 1), (257, 7), (100_003, 10), (64, 3000)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_kernels_equal_the_plain_rules(cp, reduction, eps, dtype):
    rng = np.random.default_rng(3)
    for rows, cols in CE_SHAPES:
        x = randn(cp, (rows, cols), dtype, rng, 3.0)
        t_host = rng.integers(0, cols, size=rows)
        t_host[::5] = -100                                        # ignored rows
        t = cp.asarray(t_host)
        g = randn(cp, (rows,) if reduction == "none" else (), dtype, rng)
        kw = dict(reduction=reduction, ignore_index=-100, label_smoothing=eps)
        loss, lse = kernels.cross_entropy_forward(x, t, **kw)
        dx = kernels.cross_entropy_backward(g, x, t, lse, **kw)
        x64, g64 = up(x, g)
        ref_loss, ref_lse = plain.cross_entropy_forward(cp, x64, t, **kw)
        ref_dx = plain.cross_entropy_backward(cp, g64, x64, t, ref_lse, **kw)
        where = f"{reduction} eps={eps} shape {(rows, cols)}"
        assert loss.dtype == dtype and dx.dtype == dtype and dx.shape == (rows, cols)
        close(lse, ref_lse, dtype, scale=10, err=f"lse, {where}")
        if rows == 0 and reduction == "mean":                     # no counted rows: 0 / 0, as PyTorch
            assert bool(cp.isnan(loss)) and bool(cp.isnan(ref_loss))
        else:
            # a sum over rows: its rounding grows with them
            close(loss, ref_loss, dtype, scale=10 * max(1.0, math.sqrt(rows)), err=f"loss, {where}")
        close(dx, ref_dx, dtype, err=f"dlogits, {where}")


BIAS_SHAPES = [(0, 33), (1, 1), (257, 33), (100_003, 3), (4, 5, 129)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", plain.ACTIVATIONS)
def test_bias_activation_kernels_equal_the_plain_rules(cp, act, dtype):
    rng = np.random.default_rng(4)
    for shape in BIAS_SHAPES:
        bias_host = rng.normal(size=shape[-1:]).astype(dtype)
        g, saved, alpha = _activation_inputs(cp, act, shape, dtype, rng, bias=bias_host)
        bias = cp.asarray(bias_host)
        dx, db = kernels.bias_activation_backward(act, g, saved, bias, negative_slope=alpha)
        g64, saved64, bias64 = up(g, saved, bias)
        if act not in plain.SAVES_OUTPUT:             # the kernel rounds x + b to dtype, as the plain rule
            saved64 = (saved + bias).astype(np.float64) - bias64
        ref_dx, _ = plain.bias_activation_backward(cp, act, g64, saved64, bias64, alpha)
        assert dx.dtype == db.dtype == dtype and dx.shape == shape and db.shape == shape[-1:]
        close(dx, ref_dx, dtype, scale=4, err=f"{act} dx, shape {shape}")
        # db is the sum of dx over the rows, added in the arithmetic type: its error grows with them
        lead = tuple(range(len(shape) - 1))
        ref_db = dx.astype(np.float64).sum(axis=lead)
        magnitude = float(cp.abs(ref_dx).sum()) / max(1, shape[-1])
        close(db, ref_db, dtype, scale=max(1.0, magnitude), err=f"{act} db, shape {shape}")


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.1, maximize=True),
    dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
]
ADAM_CONFIGS = [
    dict(lr=1e-3),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, amsgrad=True, maximize=True),
    dict(lr=1e-2, beta1=0.3, beta2=0.99, eps=1e-6),              # 1 - beta1 >= 0.5: lerp's other branch
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_kernel_equals_the_plain_update(cp, config, dtype):
    rng = np.random.default_rng(5)
    for n in SIZES:
        p = randn(cp, n, dtype, rng)
        q = p.copy()
        buf_k = cp.empty_like(p) if config.get("momentum") else None
        buf_p = cp.empty_like(p) if config.get("momentum") else None
        for step in range(1, 4):
            g = randn(cp, n, dtype, rng)
            kernels.sgd_step(p, g, buf_k, first_step=step == 1, **config)
            plain.sgd_step(cp, q, g, buf_p, first_step=step == 1, **config)
            close(p, q, dtype, err=f"sgd param, n={n}, step {step}")
            if buf_k is not None:
                close(buf_k, buf_p, dtype, err=f"sgd momentum buffer, n={n}, step {step}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
def test_adam_kernels_equal_the_plain_update(cp, config, decoupled, dtype):
    rng = np.random.default_rng(6)
    for n in SIZES:
        fused = [randn(cp, n, dtype, rng)] + [cp.zeros(n, dtype) for _ in range(3)]
        ref = [a.copy() for a in fused]
        amsgrad = config.get("amsgrad", False)
        for step in range(1, 4):
            g = randn(cp, n, dtype, rng)
            kernels.adam_step(fused[0], g, fused[1], fused[2], fused[3] if amsgrad else None, step=step,
                              decoupled=decoupled, **config)
            plain.adam_step(cp, ref[0], g, ref[1], ref[2], ref[3] if amsgrad else None, step=step,
                            decoupled=decoupled, **config)
            for name, a, b in zip(("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), fused, ref):
                close(a, b, dtype, scale=10, err=f"adam {name}, n={n}, step {step}")


def test_fused_vjp_falls_back_where_it_does_not_apply(cp):
    g = cp.ones((4, 5), cp.float32)
    x = cp.ones((4, 5), cp.float32)
    assert kernels.fused_vjp("multiply_backward", g, None, x, 2.0, needs=(True, False)) is None
    x64 = x.astype(cp.float64)
    assert kernels.fused_vjp("multiply_backward", g, None, x, x64, needs=(True, True)) is None
    assert kernels.fused_vjp("tanh_backward", g.astype(cp.int32), x.astype(cp.int32), None) is None


# ============================================================================= 3. the engine on CUDA


@contextmanager
def counting_fused_calls() -> Iterator[dict[str, int]]:
    """Count the calls of each fused VJP and fused optimizer update while the block runs."""
    counts: dict[str, int] = {}

    def spy(name: str, fn: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapped

    vjps = {name: spy(name, fn) for name, fn in kernels.FUSED_VJPS.items()}
    updates = {name: spy(f"optim.{name}", fn) for name, fn in kernels.OPTIMIZER_UPDATES.items()}
    multi = {name: spy(f"optim_multi.{name}", fn) for name, fn in kernels.OPTIMIZER_MULTI_UPDATES.items()}
    with mock.patch.dict(kernels.FUSED_VJPS, vjps), mock.patch.dict(optim_functional.FUSED, updates), \
            mock.patch.dict(optim_functional.FUSED_MULTI, multi):
        yield counts


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_runs_the_fused_kernels(cp, dtype):
    x = gg.randn(6, 7, dtype=dtype, device="cuda", requires_grad=True)
    y = gg.rand(6, 7, dtype=dtype, device="cuda", requires_grad=True)
    with counting_fused_calls() as counts:
        out = (x.tanh() * y + x.sigmoid() / (y + 0.5) + x.relu()).sum()
        out.backward()
    for name in ("tanh_backward", "sigmoid_backward", "relu_backward", "multiply_backward",
                 "divide_backward"):
        assert counts.get(name) == 1, (name, counts)
    xc, yc = (t.detach().cpu().requires_grad_() for t in (x, y))
    (xc.tanh() * yc + xc.sigmoid() / (yc + 0.5) + xc.relu()).sum().backward()
    rtol = 1e-5 if dtype == F32 else 1e-12
    for gpu, cpu in ((x, xc), (y, yc)):
        assert gpu.grad.device == "cuda:0" and gpu.grad.dtype == dtype
        assert_close(gpu.grad.numpy(), cpu.grad.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_dimensional_tensors_through_the_fused_kernels(cp, dtype):
    # ascontiguousarray makes a 0-d array (1,): backward raised "gradient of shape (1,) for a leaf
    # of shape ()" for `loss * 0.5` on a GPU (issue 11, defect 1)
    x = gg.tensor(0.7, dtype=dtype, device="cuda", requires_grad=True)
    y = gg.tensor(-1.3, dtype=dtype, device="cuda", requires_grad=True)
    with counting_fused_calls() as counts:
        (x.tanh() * y + x.sigmoid() / y + x.relu() * 0.5).backward()
    assert {"tanh_backward", "sigmoid_backward", "relu_backward", "multiply_backward",
            "divide_backward"} <= set(counts), counts
    xc, yc = (t.detach().cpu().requires_grad_() for t in (x, y))
    (xc.tanh() * yc + xc.sigmoid() / yc + xc.relu() * 0.5).backward()
    for gpu, cpu in ((x, xc), (y, yc)):
        assert gpu.grad.shape == () and gpu.grad.dtype == dtype and gpu.grad.device == "cuda:0"
        close(gpu.grad.data, cpu.grad.data, dtype)
    for make in (lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: gg.optim.Adam(ps, lr=0.1),
                 lambda ps: gg.optim.AdamW(ps, lr=0.1)):
        w = gg.tensor(2.0, dtype=dtype, device="cuda", requires_grad=True)
        opt = make([w])
        for _ in range(2):
            opt.zero_grad()
            (w * w).backward()
            opt.step()
        assert w.shape == () and w.dtype == dtype and float(w) < 2.0


def test_bad_class_and_embedding_indices_raise_at_the_next_read(cp):
    # On the CPU they raise at once; on a GPU the check runs on the device (a host check would
    # wait for the GPU on every call) and raises at the next read from it, naming the op and the
    # value: never a silent NaN loss or a gradient without its -1 term (issue 11, defect 6).
    logits = gg.randn(4, 5, device="cuda", requires_grad=True)
    good = gg.tensor([0, 1, -100, 4], device="cuda")              # ignore_index rows are fine
    cases = {
        r"cross_entropy: target 7 is out of bounds for 5 classes \(valid targets are 0..4, or "
        r"ignore_index=-100\) \(found on cuda:0 by a check on the device": (
            lambda: F.cross_entropy(logits, gg.tensor([0, 7, 1, 2], device="cuda")), lambda t: t.item()),
        "cross_entropy: target -3 is out of bounds for 5 classes": (   # the composite path (weights)
            lambda: F.cross_entropy(logits, gg.tensor([0, -3, 1, 2], device="cuda"),
                                    weight=gg.ones(5, device="cuda")), lambda t: t.detach().numpy()),
        "cross_entropy: target 5 is out of bounds for 5 classes.*ignore_index=1": (   # (N, C, L) logits
            lambda: F.cross_entropy(gg.randn(2, 5, 3, device="cuda"),
                                    gg.tensor([[0, 1, 5], [1, 1, 1]], device="cuda"), ignore_index=1),
            lambda t: float(t)),
        "nll_loss: target 9 is out of bounds for 5 classes": (
            lambda: F.nll_loss(F.log_softmax(logits, dim=1), gg.tensor([9, 0, 0, 0], device="cuda")),
            lambda t: t.cpu()),
        r"Embedding: index 4 is out of range for 4 embeddings \(valid indices are 0..3\)": (
            lambda: gg.nn.Embedding(4, 3, device="cuda")(gg.tensor([[1, 4], [0, 2]], device="cuda")),
            lambda t: repr(t)),
    }
    for message, (compute, read) in cases.items():
        out = compute()                                            # no error yet: nothing was read
        if out.requires_grad:
            out.sum().backward()
        with pytest.raises(IndexError, match=message):
            read(out)
        ok = F.cross_entropy(logits, good)                         # raised once; the next reads are clean
        assert math.isfinite(ok.item())
    assert not gg.cuda.checks.pending()


def test_dropout_draws_its_mask_on_the_device(cp, monkeypatch):
    # The mask was drawn on the host and copied to the GPU on every call (issue 11, defect 5).
    from gpugrad import random as gg_random

    x = gg.ones(20_000, device="cuda", requires_grad=True)
    gg.manual_seed(5)
    first = F.dropout(x, p=0.3)
    monkeypatch.setattr(backend, "to_device", lambda *a: pytest.fail("dropout copied its mask to the GPU"))
    monkeypatch.setattr(gg_random, "_generator", None)            # the host generator is not used again
    second = F.dropout(x, p=0.3)
    second.sum().backward()
    for out in (first, second):
        kept = out.detach().numpy()
        assert out.device == "cuda:0" and out.dtype == gg.float32
        assert set(np.unique(kept).tolist()) == {0.0, np.float32(1 / 0.7)}
        assert abs((kept == 0).mean() - 0.3) < 0.02
    assert not np.array_equal(first.detach().numpy(), second.detach().numpy())
    assert_close(x.grad.numpy(), second.detach().numpy(), rtol=0, atol=0)


def _small_training_setup(cp: Any, dtype: Any = gg.float32, activation: str = "tanh") -> tuple:
    gg.manual_seed(0)
    model = gg.nn.MLP([32, 64, 64, 10], activation=activation, device="cuda", dtype=dtype)
    opt = gg.optim.Adam(model.parameters(), lr=1e-3)
    x = gg.randn(128, 32, dtype=dtype, device="cuda")
    t = gg.randint(0, 10, (128,), device="cuda")
    return model, opt, x, t


def _train_step(model: Any, opt: Any, x: Any, t: Any) -> Any:
    opt.zero_grad()
    loss = F.cross_entropy(model(x), t)
    loss.backward()
    opt.step()
    return loss


_HOST_COPIES = ("get", "item", "tolist", "__array__", "__float__", "__int__", "__bool__", "__complex__",
                "__index__", "__iter__", "__repr__", "__str__", "__format__")


@contextmanager
def no_host_copies(cp: Any) -> Iterator[list[str]]:
    """Make every way a CuPy array reaches the host raise (and be recorded) inside the block."""
    calls: list[str] = []

    def refuse(name: str) -> Callable:
        def fn(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"a device-to-host copy ({name}) during a block that must make none")
        return fn

    with ExitStack() as stack:
        for name in _HOST_COPIES:
            if hasattr(cp.ndarray, name):
                stack.enter_context(mock.patch.object(cp.ndarray, name, refuse(f"cupy.ndarray.{name}")))
        stack.enter_context(mock.patch.object(cp, "asnumpy", refuse("cupy.asnumpy")))
        yield calls


def test_backward_and_step_make_no_host_copy(cp):
    model, opt, x, t = _small_training_setup(cp)
    _train_step(model, opt, x, t)                                 # warm-up: compile every kernel
    opt.zero_grad()
    loss = F.cross_entropy(model(x), t)
    with counting_fused_calls() as counts, no_host_copies(cp) as calls:
        loss.backward()
        opt.step()
    assert calls == []
    # MLP runs each hidden Linear + Tanh as linear_activation: its fused VJP, not tanh_backward
    assert counts.get("linear_activation_backward") == 2, counts
    # the six parameters (one dtype, one step count) in one multi-tensor launch
    assert counts.get("optim_multi.adam") == 1 and "optim.adam" not in counts, counts
    assert "tanh_backward" not in counts, counts
    assert counts.get("softmax_cross_entropy_backward") == 1, counts
    for p in model.parameters():
        assert p.grad.device == "cuda:0" and isinstance(p.grad.data, cp.ndarray)
        assert p.grad.dtype == p.dtype and p.device == "cuda:0"
        state = opt.state[p]
        assert all(isinstance(state[k], cp.ndarray) for k in ("exp_avg", "exp_avg_sq"))
    with no_host_copies(cp) as calls, pytest.raises(AssertionError, match="device-to-host"):
        loss.item()                                               # the guard does catch a copy
    assert calls


_SPIN = r"""
extern "C" __global__ void gg_test_spin(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}
"""


@gpu_only("it times a kernel that spins on the GPU's clock; the emulator has no clock and no asynchrony "
          "(test_cuda_emulator.py counts the host reads instead)")
def test_backward_and_step_never_wait_for_the_gpu(cp):
    # Keep the GPU busy for a second, then run backward and the optimizer step: if anything in
    # them copied to the host or synchronised, it would wait for the spin to finish.
    spin = cp.RawKernel(_SPIN, "gg_test_spin")
    model, opt, x, t = _small_training_setup(cp, activation="relu")
    _train_step(model, opt, x, t)
    opt.zero_grad()
    loss = F.cross_entropy(model(x), t)
    spin((1,), (1,), (np.uint64(0),))
    cp.cuda.Device().synchronize()
    spin((1,), (1,), (np.uint64(1_000_000_000),))                 # 1 s of GPU time
    start = time.perf_counter()
    loss.backward()
    opt.step()
    host_s = time.perf_counter() - start
    done = cp.cuda.Event()
    done.record()
    still_busy = not done.done
    cp.cuda.Device().synchronize()
    assert still_busy, f"backward + step waited for the GPU (they took {host_s:.3f} s of host time)"
    assert host_s < 0.9


# ============================================================================= 4. an MLP: CUDA == CPU


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_mlp_training_on_cuda_matches_the_cpu(cp, activation, dtype):
    rtol, atol = (2e-4, 2e-5) if dtype == F32 else (1e-10, 1e-12)
    runs = {}
    for device in ("cpu", "cuda"):
        gg.manual_seed(42)
        model = gg.nn.MLP([20, 64, 64, 5], activation=activation, device=device, dtype=dtype)
        opt = gg.optim.Adam(model.parameters(), lr=1e-3)
        x = gg.randn(96, 20, dtype=dtype, device=device)
        t = gg.randint(0, 5, (96,), device=device)
        record = []
        for _ in range(4):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), t, label_smoothing=0.05)
            loss.backward()
            assert loss.device == gg.Device(device)
            record.append([loss.detach().numpy()] + [p.grad.numpy() for p in model.parameters()])
            opt.step()
        record.append([p.detach().numpy() for p in model.parameters()])
        assert all(p.device == gg.Device(device) and p.grad.device == gg.Device(device)
                   for p in model.parameters())
        runs[device] = record
    for step, (cpu, gpu) in enumerate(zip(runs["cpu"], runs["cuda"])):
        for k, (a, b) in enumerate(zip(cpu, gpu)):
            assert b.dtype == a.dtype
            assert_close(b, a, rtol=rtol, atol=atol, msg=f"step {step}, array {k}")


class _Net(gg.nn.Module):
    """Most layers and losses of gg.nn in one model: embedding, layer norm, activations, dropout."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.emb = gg.nn.Embedding(11, 8, padding_idx=0, device=device, dtype=gg.float64)
        self.body = gg.nn.Sequential(
            gg.nn.Linear(8, 16, device=device, dtype=gg.float64), gg.nn.GELU(),
            gg.nn.LayerNorm(16, device=device, dtype=gg.float64),
            gg.nn.Linear(16, 16, device=device, dtype=gg.float64), gg.nn.SiLU(), gg.nn.Dropout(0.25),
            gg.nn.Linear(16, 16, device=device, dtype=gg.float64), gg.nn.LeakyReLU(0.1),
            gg.nn.Linear(16, 4, device=device, dtype=gg.float64))

    def forward(self, idx: Any) -> Any:
        return self.body(self.emb(idx).mean(axis=1))


def _losses(out: Any, target: Any, device: str) -> Any:
    probs = F.softmax(out.detach() * 0.5, dim=1)
    weight = gg.tensor([1.0, 2.0, 0.5, 1.5], dtype=gg.float64, device=device)
    return (gg.nn.CrossEntropyLoss(label_smoothing=0.1)(out, target)
            + F.cross_entropy(out, target, weight=weight) + F.cross_entropy(out, probs)
            + gg.nn.NLLLoss()(F.log_softmax(out, dim=1), target)
            + gg.nn.MSELoss()(out, probs) + gg.nn.L1Loss()(out, probs)
            + gg.nn.BCEWithLogitsLoss()(out, probs) + F.softplus(out).mean())


@pytest.mark.parametrize("optimizer", ["SGD", "SGD-nesterov", "Adam", "AdamW-amsgrad"])
def test_layers_losses_optimizers_and_schedulers_on_cuda_match_the_cpu(cp, optimizer):
    make = {"SGD": lambda ps: gg.optim.SGD(ps, lr=0.05, weight_decay=0.01),
            "SGD-nesterov": lambda ps: gg.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, dampening=0.0),
            "Adam": lambda ps: gg.optim.Adam(ps, lr=1e-2, weight_decay=0.01),
            "AdamW-amsgrad": lambda ps: gg.optim.AdamW(ps, lr=1e-2, amsgrad=True)}[optimizer]
    runs = {}
    for device in ("cpu", "cuda"):
        gg.manual_seed(3)
        net = _Net(device)
        net.eval()                             # dropout off: the two runs do the same arithmetic
        opt = make(list(net.parameters()))
        sched = gg.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        idx = gg.randint(0, 11, (24, 5), device=device)
        target = gg.randint(0, 4, (24,), device=device)
        record = []
        for _ in range(4):
            opt.zero_grad()
            loss = _losses(net(idx), target, device)
            loss.backward()
            record.append([loss.detach().numpy()] + [p.grad.numpy() for p in net.parameters()])
            opt.step()
            sched.step()
        record.append([p.detach().numpy() for p in net.parameters()])
        assert all(p.device == gg.Device(device) and p.grad.device == gg.Device(device)
                   for p in net.parameters())
        assert all(backend.device_of(v) == gg.Device(device) for st in opt.state.values() for v in st.values()
                   if hasattr(v, "shape"))
        net.train()                            # and dropout's own path on the device
        out = net(idx)
        _losses(out, target, device).backward()
        assert out.device == gg.Device(device) and math.isfinite(out.sum().item())
        runs[device] = record
    for step, (cpu, gpu) in enumerate(zip(runs["cpu"], runs["cuda"])):
        for k, (a, b) in enumerate(zip(cpu, gpu)):
            assert a.shape == b.shape and a.dtype == b.dtype, (step, k)
            assert_close(b, a, rtol=1e-10, atol=1e-12, msg=f"step {step}, array {k}")


# ============================================================================= 5. the registry


def _cases() -> Iterator[Any]:
    rng = np.random.default_rng(1234)
    for name, op in sorted(REGISTRY.items()):
        if not op.differentiable or op.samples is None:
            continue
        for sample in op.samples(rng):
            yield pytest.param(op, sample, id=f"{name}[{sample.name}]")


def _inputs(sample: Any, device: str) -> list[Any]:
    """A sample's arguments as float64 leaves on ``device``; constant arrays (masks) go there too."""
    args = []
    for a in sample.args:
        if isinstance(a, Const):
            args.append(gg.tensor(a.value, device=device) if isinstance(a.value, np.ndarray) else a.value)
        else:
            args.append(gg.tensor(a, dtype=gg.float64, device=device, requires_grad=True))
    return args


def _vjp(fn: Callable, inputs: list[Any], positions: list[int], v: Any) -> list[np.ndarray]:
    """v^T J for each input in ``positions``, through backward and .grad, copied to the host."""
    for i in positions:
        inputs[i].grad = None
    out = fn(*inputs)
    if not out.requires_grad:
        return [np.zeros(inputs[i].shape) for i in positions]
    out.backward(gradient=gg.Tensor(v))
    result = []
    for i in positions:
        g = inputs[i].grad
        if g is None:
            result.append(np.zeros(inputs[i].shape))
            continue
        assert g.device == inputs[i].device and g.dtype == gg.float64 and g.shape == inputs[i].shape
        result.append(g.numpy())
    return result


@pytest.mark.parametrize("op,sample", list(_cases()))
def test_registry_gradcheck_on_cuda(cp, op, sample):
    def fn(*xs: Any) -> Any:
        return op(*xs, **sample.params)

    gpu_inputs, cpu_inputs = _inputs(sample, "cuda"), _inputs(sample, "cpu")
    with gg.no_grad():
        gpu_out, cpu_out = fn(*gpu_inputs), fn(*cpu_inputs)
    assert gpu_out.device == "cuda:0" and gpu_out.dtype == cpu_out.dtype and gpu_out.shape == cpu_out.shape
    assert_close(gpu_out.numpy(), cpu_out.numpy(), rtol=1e-12, atol=1e-12)
    assert gg.testing.gradcheck(fn, *gpu_inputs)                 # perturbs on the device
    positions = [i for i, t in enumerate(cpu_inputs) if isinstance(t, gg.Tensor) and t.requires_grad]
    v = np.asarray(np.random.default_rng(0).standard_normal(cpu_out.shape))
    gpu_vjp = _vjp(fn, gpu_inputs, positions, gg.tensor(v, device="cuda").data)
    cpu_vjp = _vjp(fn, cpu_inputs, positions, v)
    for i, a, b in zip(positions, gpu_vjp, cpu_vjp):
        assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"input {i}: CUDA vs CPU gradient")


@pytest.mark.parametrize("op,sample", list(_cases()))
def test_registry_ops_read_nothing_back_on_cuda(cp, op, sample):
    """Each op's forward and VJP on the device read nothing from it (the emulator counts the reads)."""
    if not gg.cuda.is_emulated():
        pytest.skip("host reads are counted by the CUDA emulator (GPUGRAD_EMULATE_CUDA=1) only")
    inputs = _inputs(sample, "cuda")
    with emulator.host_reads() as reads:
        out = op(*inputs, **sample.params)
        if out.requires_grad:
            out.backward(gradient=gg.ones_like(out))
    assert reads == []


def test_gg_testing_gradcheck_on_cuda(cp):
    """gpugrad.testing.gradcheck and gradgradcheck take CUDA inputs (they perturb on the device)."""
    x = gg.randn(4, dtype=gg.float64, device="cuda", requires_grad=True)
    assert gg.testing.gradcheck(lambda t: (t * t).tanh(), x)
    assert gg.testing.gradgradcheck(lambda t: (t * t).tanh(), x)


@gpu_only("it reads CuPy's memory pool; the emulator's arrays live in host memory")
def test_saved_arrays_are_freed_on_the_device_and_memory_stays_flat(cp):
    """CuPy's memory pool: backward releases what the graph saved; training steps do not grow it."""
    pool = cp.get_default_memory_pool()
    model = gg.nn.MLP([256, 512, 512, 10]).to("cuda")
    opt = gg.optim.Adam(model.parameters(), lr=1e-3)
    x = gg.randn(1024, 256, device="cuda")
    y = gg.randint(0, 10, (1024,), device="cuda")

    def step() -> None:
        loss = gg.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    cp.cuda.Device().synchronize()
    baseline = pool.used_bytes()
    loss = gg.nn.functional.cross_entropy(model(x), y)
    with_graph = pool.used_bytes()
    assert with_graph > baseline                      # activations saved for backward
    loss.backward()
    del loss
    after = pool.used_bytes()
    assert after <= baseline + 2 * sum(p.numel() * 4 for p in model.parameters())   # only the .grads
    for _ in range(50):
        step()
    cp.cuda.Device().synchronize()
    assert pool.used_bytes() <= after + (1 << 20), "device memory grew over 50 steps"
