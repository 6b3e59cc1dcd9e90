"""The fused CUDA kernels (kernels/*.cu), checked without a GPU.

1. Compile: every .cu file builds with nvcc for sm_90 (PTX, then ptxas), and with NVRTC
   using gpugrad.cuda.kernels' own source text and options, which is what CuPy's RawModule
   runs. Each is skipped, saying why, where its compiler is missing.
2. Arithmetic: each kernel file is compiled by g++ as plain C++ after
   gpugrad/cuda/emulator/shim.h and run on the CPU through gpugrad.cuda.kernels' own functions
   (kernels.use_launcher), on random inputs of awkward sizes, for float32, float64 and
   float16, in a one-thread launch and in multi-block ones, against the plain rule: the
   VJP rules of gpugrad.ops for relu/sigmoid/tanh/multiply/divide, and NumPy references
   for the rest, themselves checked against PyTorch when it is installed.
   Every comparison checks shapes and dtypes as well as values.
3. Consistency: the registry of fused kernels, the entry points the sources define, the
   ops' ``fused=`` names and the kernels no op uses yet agree; the compiled source changes
   with every header it includes.

A test marked cuda runs the same checks through CuPy: on a GPU, or on the CUDA emulator
(GPUGRAD_EMULATE_CUDA=1), and is skipped otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optional
import pytest
from kernel_host import emulator

from gpugrad.cuda import kernels
from gpugrad.ops.registry import REGISTRY
from gpugrad.testing import assert_close

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64, F16]
SIZES = [0, 1, 255, 257, 1031]
# (grid, block) of the emulated launches: one thread; several blocks, so the grid-stride
# loop strides; and a block that is not a power of two, for the block reductions.
CONFIGS = [(1, 1), (3, 4), (2, 3)]
# rtol, atol of a kernel's result against a float64 reference computed from the same inputs
TOL = {F64: (1e-12, 1e-12), F32: (3e-6, 3e-6), F16: (2e-3, 2e-3)}

# Kernels no op names with fused= yet. Wiring one (an op declares it) fails
# test_unwired_kernels_are_listed until it is taken off this list.
NOT_YET_WIRED = {
    "leaky_relu_backward": "nn.functional.leaky_relu is a composite; a leaky_relu primitive would declare it",
    "gelu_tanh_backward": "nn.functional.gelu is a composite; a gelu primitive (approximate='tanh') would",
    "gelu_erf_backward": "the same for gelu(approximate='none')",
    "bias_leaky_relu_backward": "ops.linear_activation takes relu, tanh, sigmoid (saving the output only)",
    "bias_gelu_tanh_backward": "the same: gelu would need the pre-activation saved as well",
    "bias_gelu_erf_backward": "the same, for gelu(approximate='none')",
}
# Kernels that are never an op's fused VJP, by design.
NOT_OP_KERNELS = {
    "bias_relu_forward": "the forward of ops.linear_activation on CUDA (kernels.bias_activation_forward)",
    "bias_sigmoid_forward": "the same, sigmoid",
    "bias_tanh_forward": "the same, tanh",
    "softmax_cross_entropy_forward": "the forward of ops.softmax_cross_entropy on CUDA (and its fused VJP)",
    "sgd_step": "an optimizer update: gpugrad.optim.functional.FUSED['sgd'] = kernels.sgd_update",
    "adam_step": "an optimizer update: FUSED['adam'] = kernels.adam_update (decoupled=False)",
    "adamw_step": "the same update with decoupled weight decay",
    "sgd_step_multi": "SGD over many parameters at once: FUSED_MULTI['sgd'] = kernels.sgd_step_multi",
    "adam_step_multi": "Adam over many parameters at once: FUSED_MULTI['adam'] = kernels.adam_step_multi",
    "adamw_step_multi": "the same with decoupled weight decay",
    "threefry_split": "gg.random.split's forward on CUDA (ops/random.py; tests/test_random_keys.py)",
    "threefry_fold_in": "gg.random.fold_in's forward on CUDA",
    "random_bits": "gg.random.bits' forward on CUDA (and randint's, permutation's bits)",
    "random_uniform": "gg.random.uniform's forward on CUDA",
    "random_normal": "gg.random.normal's forward on CUDA",
}

KERNEL_FILES = sorted({spec.file for spec in kernels.KERNELS.values()})


def entries_in(file: str) -> set[str]:
    return set(emulator.entries_of(file))


def same_kind(actual, expected, dtype, err=""):
    """actual has expected's shape and the given dtype (assert_allclose alone broadcasts () against (1,))."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{err}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{err}: dtype {actual.dtype}, expected {np.dtype(dtype)}"


def close(actual, expected, dtype, *, scale=1.0, err=""):
    """actual has expected's shape and dtype ``dtype``, and equals the float64 expected to dtype's
    tolerance (atol times scale)."""
    same_kind(actual, expected, dtype, err)
    rtol, atol = TOL[np.dtype(dtype)]
    assert_close(actual, expected, rtol=rtol, atol=atol * scale, check_dtype=False, equal_nan=True,
                 msg=err)                                 # float64 expected; nan where it is nan


def equal(actual, expected, *, rtol, atol=0.0, err=""):
    """The same shape and dtype as expected, and its values to rtol/atol."""
    assert_close(actual, expected, rtol=rtol, atol=atol, msg=err)


def f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# ============================================================================= compilers


def _nvcc_build(file: str, out_dir: Path) -> tuple[str, float]:
    """nvcc -cubin for sm_90 (ptxas runs, spills are warnings turned errors); returns (PTX, seconds)."""
    src = kernels.kernels_dir() / file
    keep = out_dir / Path(file).stem
    keep.mkdir()
    cmd = ["nvcc", "-arch=sm_90", "-cubin", "--keep", f"--keep-dir={keep}", "-Werror", "all-warnings",
           "-Xptxas", "-warn-spills", *kernels.compile_options(), "-o", str(keep / "out.cubin"), str(src)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise AssertionError(f"nvcc failed on {file}:\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return (keep / f"{src.stem}.ptx").read_text(), seconds


@pytest.fixture(scope="session")
def nvcc_builds(tmp_path_factory):
    """Every kernel file built once by nvcc, in parallel: {file: (ptx, seconds)}."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH: the CUDA compile check is skipped "
                    "(install the CUDA toolkit to run it)")
    out = tmp_path_factory.mktemp("nvcc")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip(KERNEL_FILES, pool.map(lambda f: _nvcc_build(f, out), KERNEL_FILES)))
    return results


def ptx_entries(ptx: str) -> set[str]:
    return set(re.findall(r"^\.visible \.entry (\w+)\(", ptx, flags=re.M))


@pytest.mark.parametrize("file", KERNEL_FILES)
def test_nvcc_compiles_for_sm90(nvcc_builds, file):
    ptx, seconds = nvcc_builds[file]
    assert ptx_entries(ptx) == entries_in(file)
    assert seconds < 120, f"{file}: nvcc took {seconds:.1f} s"


def _find_nvrtc() -> str | None:
    """libnvrtc: $GPUGRAD_NVRTC, the system's, CUDA_PATH's, or an nvidia-cuda-nvrtc wheel's."""
    if os.environ.get("GPUGRAD_NVRTC"):
        return os.environ["GPUGRAD_NVRTC"]
    wheel = _nvrtc_wheel()
    if wheel is not None:
        hits = sorted(p for p in glob.glob(os.path.join(wheel, "lib", "libnvrtc.so*")) if "builtins" not in p)
        if hits:
            return hits[0]
    found = ctypes.util.find_library("nvrtc")
    if found:
        return found
    roots = [os.environ.get("CUDA_PATH", "/usr/local/cuda") + "/lib64", *sys.path]
    for root in roots:
        for pattern in ("libnvrtc.so*", "nvidia/*/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
            hits = sorted(p for p in glob.glob(os.path.join(root, pattern)) if "builtins" not in p)
            if hits:
                return hits[0]
    return None


def _nvrtc_wheel() -> str | None:
    """The directory of the nvidia-cuda-nvrtc-cu12 wheel's package, if it is installed."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except ModuleNotFoundError:
        return None
    return next(iter(spec.submodule_search_locations), None) if spec else None


@pytest.fixture(scope="session")
def nvrtc():
    path = _find_nvrtc()
    if path is None and _nvrtc_wheel() is not None:      # CI's second step installs it: never skip there
        pytest.fail(f"the nvidia-cuda-nvrtc wheel is installed ({_nvrtc_wheel()}) but no libnvrtc was "
                    "found in it")
    if path is None:
        pytest.skip("libnvrtc not found: the NVRTC (CuPy's compiler) check is skipped; "
                    "pip install nvidia-cuda-nvrtc, or set GPUGRAD_NVRTC=/path/to/libnvrtc.so")
    return ctypes.CDLL(path)


def nvrtc_compile(lib, source: str, name: str, options: tuple[str, ...]) -> tuple[int, str, str]:
    """(result code, log, PTX) of one NVRTC compilation."""
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram: {rc}"
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx = ""
    if rc == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, buf)
        ptx = buf.value.decode()
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), ptx


# What CuPy's RawModule adds to our options (an arch; -ftz=true in the versions that do).
_CUPY_ADDS = ("--gpu-architecture=compute_90", "-ftz=true")


@pytest.mark.parametrize("file", KERNEL_FILES)
def test_nvrtc_compiles_the_loaders_source(nvrtc, file):
    # NVRTC has no system headers and fewer builtins than nvcc: this is the compile CuPy does
    options = kernels.compile_options() + _CUPY_ADDS
    rc, log, ptx = nvrtc_compile(nvrtc, kernels.kernel_source(file), file, options)
    assert rc == 0, f"NVRTC failed on {file}:\n{log}"
    assert ptx_entries(ptx) == entries_in(file)


def test_nvrtc_errors_name_the_file(nvrtc):
    # the '#line 1 "<path>"' that kernel_source prepends makes errors point into kernels/
    source = kernels.kernel_source("binary_backward.cu") + "\nthis is not C++;\n"
    rc, log, _ = nvrtc_compile(nvrtc, source, "x.cu", kernels.compile_options() + _CUPY_ADDS)
    assert rc != 0
    assert "kernels/binary_backward.cu" in log


# ============================================================================= the CPU emulation


@pytest.fixture(scope="session")
def host_libs():
    """Every kernel file built by g++ for the CPU, in parallel: ({file: CDLL}, {file: (path, entries)})."""
    if emulator.compiler() is None:
        pytest.skip("g++ is not on PATH: the CPU emulation of the CUDA kernels is skipped")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        built = dict(zip(KERNEL_FILES, pool.map(emulator.build_library, KERNEL_FILES)))
    return {f: ctypes.CDLL(str(path)) for f, (path, _) in built.items()}, built


@pytest.fixture(params=CONFIGS, ids=lambda c: f"grid{c[0]}x{c[1]}")
def host(request, host_libs):
    """A CPU launcher for gpugrad.cuda.kernels' functions, installed for the test's duration."""
    grid, block = request.param
    launcher = emulator.HostLauncher(host_libs[0], grid=grid, block=block)
    with kernels.use_launcher(launcher):
        yield launcher


def _numpy(a):
    """The emulation works on NumPy arrays as they are (a GPU check passes cupy.asarray)."""
    return a


def kernels_get(a):
    """A launcher's array as NumPy (CuPy arrays are copied to the host)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


# ----------------------------------------------------------------------------- references

_erf = np.vectorize(math.erf, otypes=[np.float64])
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def ref_gelu_erf(g, x):
    cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return g * (cdf + x * pdf)


def ref_gelu_tanh(g, x):
    t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x))


def _rule(op):
    return lambda g, s, alpha: REGISTRY[op].vjp_rule(np, g, s, None)[0]


# activation -> (reference dx(g, saved, alpha), forward in float64 or None when saved is x)
ACTIVATIONS = {
    "relu": (_rule("relu"), lambda x: np.maximum(x, 0)),
    "leaky_relu": (lambda g, x, a: np.where(x > 0, g, a * g), None),
    "sigmoid": (_rule("sigmoid"), lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (_rule("tanh"), np.tanh),
    "gelu_tanh": (lambda g, x, a: ref_gelu_tanh(g, x), None),
    "gelu_erf": (lambda g, x, a: ref_gelu_erf(g, x), None),
}


def activation_case(rng, act, shape, dtype, bias=None, zeros=True):
    """(g, saved, alpha): saved is act's output (of x + bias) or its input x, in dtype."""
    x = rng.normal(0, 2, size=shape)
    if zeros:
        x.reshape(-1)[::7] = 0.0                      # exact zeros: relu's kink
    g = rng.normal(size=shape).astype(dtype)
    forward = ACTIVATIONS[act][1]
    if forward is None:
        saved = x
    else:
        saved = forward(x if bias is None else x + bias.astype(np.float64))
    return g, saved.astype(dtype), 0.07 if act == "leaky_relu" else 0.0


def ref_cross_entropy(x, t, g, *, ignore_index, eps, reduction):
    """(loss, lse, dlogits) in float64: log-softmax, label-smoothed NLL, and its VJP."""
    x, g = f64(x, g)
    rows, cols = x.shape
    m = x.max(axis=1, keepdims=True) if cols else np.zeros((rows, 1))
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    logp = x - lse[:, None]
    valid = t != ignore_index
    tt = np.where(valid, t, 0)
    nll = -logp[np.arange(rows), tt]
    smooth = -logp.mean(axis=1) if cols else np.zeros(rows)
    per_row = (1 - eps) * nll + (eps * smooth if eps else 0.0)   # NOTE: 0 * inf for -inf logits
    per_row = np.where(valid, per_row, 0.0)
    count = valid.sum()
    q = np.full((rows, cols), eps / max(cols, 1))
    q[np.arange(rows), tt] += 1 - eps
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = {"none": per_row, "sum": per_row.sum(), "mean": per_row.sum() / count}[reduction]
        scale = {"none": g, "sum": np.full(rows, g), "mean": np.full(rows, g / count)}[reduction]
        dx = np.where(valid[:, None], (np.exp(logp) - q) * scale[:, None], 0.0)
    return loss, lse, dx


def _stored(dtype):
    """Round to the state's dtype: a kernel continues with its state as stored (as PyTorch)."""
    return (lambda a: a) if dtype is None else (lambda a: np.asarray(a).astype(dtype).astype(np.float64))


def ref_sgd(p, g, buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
            first_step=False, state_dtype=None):
    """torch.optim.SGD's single-tensor step in float64: (param, buf)."""
    p, g = f64(p, g)
    d = -g if maximize else g
    if weight_decay:
        d = d + weight_decay * p
    if momentum:
        buf = d.copy() if first_step else momentum * np.asarray(buf, np.float64) + (1 - dampening) * d
        buf = _stored(state_dtype)(buf)
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


def ref_adam(p, g, m, v, vmax, *, step, lr, beta1, beta2, eps, weight_decay=0.0, amsgrad=False,
             maximize=False, decoupled=False, state_dtype=None):
    """torch.optim.Adam / AdamW's single-tensor step in float64: (param, exp_avg, exp_avg_sq, v_max)."""
    stored = _stored(state_dtype)
    p, g, m, v = f64(p, g, m, v)
    d = -g if maximize else g
    if weight_decay:
        if decoupled:
            p = stored(p * (1 - lr * weight_decay))
        else:
            d = d + weight_decay * p
    m = stored(m + (1 - beta1) * (d - m))
    v = stored(beta2 * v + (1 - beta2) * d * d)
    if amsgrad:
        vmax = np.maximum(np.asarray(vmax, np.float64), v)
    denom = np.sqrt(vmax if amsgrad else v) / math.sqrt(1 - beta2**step) + eps
    return p - lr / (1 - beta1**step) * m / denom, m, v, vmax


# ----------------------------------------------------------------------------- the checks
#
# Each check_* takes dev (NumPy array -> the array type the launcher works on) and runs
# gpugrad.cuda.kernels' public function, so the same checks serve the emulation and a GPU.


def check_activation(dev, act, n, dtype, rng, zeros=True):
    g, saved, alpha = activation_case(rng, act, (n,), dtype, zeros=zeros)
    dx = kernels.activation_backward(f"{act}_backward", dev(g), dev(saved), alpha)
    expected = ACTIVATIONS[act][0](*f64(g, saved), alpha)
    close(kernels_get(dx), expected, dtype, err=act)
    assert dx.dtype == dtype and dx.shape == g.shape


def check_binary(dev, op, shape, dtype, rng):
    x = rng.normal(size=shape).astype(dtype)
    y = (rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1, 1], size=shape)).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    if op == "multiply":
        gx, gy = kernels.multiply_backward(dev(g), dev(x), dev(y))
        expected = REGISTRY["multiply"].vjp_rule(np, *f64(g), None, *f64(x, y), needs=(True, True))
    else:
        out = (x / y).astype(dtype)
        gx, gy = kernels.divide_backward(dev(g), dev(y), dev(out))
        expected = REGISTRY["divide"].vjp_rule(np, *f64(g, out), None, *f64(y), needs=(True, True))
    close(kernels_get(gx), expected[0], dtype, err=f"{op} gx")
    close(kernels_get(gy), expected[1], dtype, err=f"{op} gy")


def check_cross_entropy(dev, shape, dtype, rng, *, reduction, eps, ignore_index=-100):
    rows, cols = shape
    x = (rng.normal(0, 3, size=shape)).astype(dtype)
    t = rng.integers(0, max(cols, 1), size=rows)
    t[::5] = ignore_index
    g = rng.normal(size=rows) if reduction == "none" else np.float64(rng.normal())
    kw = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=eps)
    with np.errstate(divide="ignore", invalid="ignore"):     # 'mean' of no rows: 0 / 0 on NumPy
        loss, lse = kernels.cross_entropy_forward(dev(x), dev(t), **kw)
        dx = kernels.cross_entropy_backward(dev(np.asarray(g, dtype)), dev(x), dev(t), lse, **kw)
    ref_loss, ref_lse, ref_dx = ref_cross_entropy(x, t, np.asarray(g, dtype), ignore_index=ignore_index,
                                                  eps=eps, reduction=reduction)
    acc = F64 if dtype == F64 else F32
    assert loss.dtype == dtype and lse.dtype == acc and dx.dtype == dtype
    close(kernels_get(lse), ref_lse, acc, scale=10, err="lse")
    # the loss is a sum over rows: its error grows with them
    close(kernels_get(loss), ref_loss, dtype, scale=10 * max(1, math.sqrt(rows)), err="loss")
    close(kernels_get(dx), ref_dx, dtype, err="dlogits")


def check_bias_activation(dev, act, shape, dtype, rng):
    bias = rng.normal(size=shape[-1:]).astype(dtype)
    g, saved, alpha = activation_case(rng, act, shape, dtype, bias=bias)
    dx, db = kernels.bias_activation_backward(act, dev(g), dev(saved), dev(bias), negative_slope=alpha)
    g64, s64, b64 = f64(g, saved, bias)
    z = s64 + b64 if ACTIVATIONS[act][1] is None else s64
    expected = ACTIVATIONS[act][0](g64, z, alpha)
    dx, db = kernels_get(dx), kernels_get(db)
    close(dx, expected, dtype, scale=4, err=f"{act} dx")   # NOTE: z = x + b is rounded once more
    lead = tuple(range(len(shape) - 1))
    rows = int(np.prod(shape[:-1]))
    # db is the sum of the dx values as written, added in the arithmetic type
    close(db, dx.astype(np.float64).sum(axis=lead), dtype, scale=max(1, rows), err=f"{act} db")
    assert dx.dtype == db.dtype == dtype and db.shape == shape[-1:]


def check_bias_forward(dev, act, shape, dtype, rng):
    z = rng.normal(scale=2.0, size=shape).astype(dtype)
    bias = rng.normal(size=shape[-1:]).astype(dtype)
    # what linear_activation's plain forward computes from the same product (x = z, W = I)
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    plain = REGISTRY["linear_activation"].forward(np, z.reshape(rows, cols), np.eye(cols, dtype=dtype), bias,
                                                  activation=act)
    if z.size:
        z.flat[0] = np.nan                                      # NaN stays NaN in every form
    z64, b64 = z.astype(np.float64), bias.astype(np.float64)     # copies: the kernel works in place
    got = kernels.bias_activation_forward(act, dev(z), dev(bias))
    assert got is not None
    got = kernels_get(got)
    assert got.dtype == dtype and got.shape == shape
    close(got, ACTIVATIONS[act][1](z64 + b64), dtype, scale=2, err=act)
    if z.size:
        assert np.isnan(got.flat[0])
        got.flat[0] = plain.flat[0]
    close(got.reshape(rows, cols), plain.astype(np.float64), dtype, scale=4, err=f"{act} vs the op")


def check_sgd(dev, n, dtype, rng, config):
    p = rng.normal(size=n).astype(dtype)
    buf = rng.normal(size=n).astype(dtype) if config.get("momentum") else None
    dp, dbuf = dev(p), (dev(buf) if buf is not None else None)
    for step in range(1, 4):
        g = rng.normal(size=n).astype(dtype)
        before_p, before_buf = kernels_get(dp).copy(), (kernels_get(dbuf).copy() if buf is not None else None)
        kernels.sgd_step(dp, dev(g), dbuf, first_step=step == 1, **config)
        ref_p, ref_buf = ref_sgd(before_p, g, before_buf, first_step=step == 1, state_dtype=dtype, **config)
        close(kernels_get(dp), ref_p, dtype, err=f"sgd param, step {step}")
        if buf is not None:
            close(kernels_get(dbuf), ref_buf, dtype, err=f"sgd buffer, step {step}")


def check_adam(dev, n, dtype, rng, config, decoupled):
    p = rng.normal(size=n).astype(dtype)
    state = [np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype)]
    dp, dm, dv, dvmax = dev(p), *(dev(s) for s in state)
    kw = dict(lr=config["lr"], beta1=config.get("beta1", 0.9), beta2=config.get("beta2", 0.999),
              eps=config.get("eps", 1e-8), weight_decay=config.get("weight_decay", 0.0),
              amsgrad=config.get("amsgrad", False), maximize=config.get("maximize", False))
    for step in range(1, 4):
        g = rng.normal(size=n)
        if dtype == F16:
            # NOTE: float16 state underflows for |g| below ~0.01 ((1 - beta2) g^2 < 6e-8, the smallest
            # subnormal): sqrt(v) then hangs on one rounding, which float32 arithmetic (the kernel's)
            # and float64 (the reference's) may take apart, moving the step by tens of percent
            g = np.copysign(np.maximum(np.abs(g), 0.05), g)
        g = g.astype(dtype)
        before = [kernels_get(a).copy() for a in (dp, dm, dv, dvmax)]
        vmax = dvmax if kw["amsgrad"] else None
        kernels.adam_step(dp, dev(g), dm, dv, vmax, step=step, decoupled=decoupled, **kw)
        ref = ref_adam(before[0], g, before[1], before[2], before[3], step=step, decoupled=decoupled,
                       state_dtype=dtype, **kw)
        for name, got, want in zip(("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                                   (dp, dm, dv, dvmax), ref):
            if name == "max_exp_avg_sq" and not kw["amsgrad"]:
                assert_close(kernels_get(got), before[3], rtol=0, atol=0)   # untouched
                continue
            close(kernels_get(got), want, dtype, err=f"adam {name}, step {step}")


def check_sgd_multi(dev, sizes, dtype, rng, config, exact=True):
    """sgd_step_multi over tensors of ``sizes`` equals sgd_step on each (bit for bit when ``exact``)."""
    kw = dict(lr=config["lr"], momentum=config.get("momentum", 0.0), dampening=config.get("dampening", 0.0),
              weight_decay=config.get("weight_decay", 0.0), nesterov=config.get("nesterov", False),
              maximize=config.get("maximize", False))
    multi = [[dev(rng.normal(size=n).astype(dtype)), dev(np.zeros(n, dtype))] for n in sizes]
    single = [[dev(kernels_get(a).copy()) for a in arrays] for arrays in multi]
    for step in range(1, 3):
        grads = [rng.normal(size=n).astype(dtype) for n in sizes]
        bufs = lambda arrays: arrays[1] if kw["momentum"] else None  # noqa: E731
        kernels.sgd_step_multi([(a[0], dev(g), bufs(a)) for a, g in zip(multi, grads)], first_step=step == 1,
                               **kw)
        for a, g in zip(single, grads):
            kernels.sgd_step(a[0], dev(g), bufs(a), first_step=step == 1, **kw)
        for i, (a, b) in enumerate(zip(multi, single)):
            for name, x, y in zip(("param", "momentum_buffer"), a, b):
                _same_result(kernels_get(x), kernels_get(y), dtype, exact, f"tensor {i} ({sizes[i]}) {name}")


def _same_result(got, want, dtype, exact, err):
    # on the CPU emulation both kernels compile to the same code; a GPU compiler may contract
    # the inlined copy differently (an FMA), so there the results need only agree to rounding
    same_kind(got, want, want.dtype, err)
    if exact:
        assert_close(got, want, msg=err, rtol=0, atol=0)
    else:
        close(got, want.astype(np.float64), dtype, scale=4, err=err)


def check_adam_multi(dev, sizes, dtype, rng, config, decoupled, exact=True):
    """adam_step_multi over tensors of ``sizes`` equals adam_step on each (bit for bit when ``exact``)."""
    kw = dict(lr=config["lr"], beta1=config.get("beta1", 0.9), beta2=config.get("beta2", 0.999),
              eps=config.get("eps", 1e-8), weight_decay=config.get("weight_decay", 0.0),
              amsgrad=config.get("amsgrad", False), maximize=config.get("maximize", False))
    multi = [[dev(rng.normal(size=n).astype(dtype))] + [dev(np.zeros(n, dtype)) for _ in range(3)]
             for n in sizes]
    single = [[dev(kernels_get(a).copy()) for a in arrays] for arrays in multi]
    for step in range(1, 3):
        grads = [rng.normal(size=n).astype(dtype) for n in sizes]
        kernels.adam_step_multi([(p, dev(g), m, v, vmax if kw["amsgrad"] else None)
                                 for (p, m, v, vmax), g in zip(multi, grads)],
                                step=step, decoupled=decoupled, **kw)
        for (p, m, v, vmax), g in zip(single, grads):
            kernels.adam_step(p, dev(g), m, v, vmax if kw["amsgrad"] else None, step=step,
                              decoupled=decoupled, **kw)
        for i, (a, b) in enumerate(zip(multi, single)):
            for name, x, y in zip(("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), a, b):
                _same_result(kernels_get(x), kernels_get(y), dtype, exact, f"tensor {i} ({sizes[i]}) {name}")


# ----------------------------------------------------------------------------- emulated runs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_activation_backward(host, act, n, dtype):
    check_activation(_numpy, act, n, dtype, np.random.default_rng(n))


class _RealBlocks(emulator.HostLauncher):
    """Runs each launch with the block it asks for (gpugrad.cuda.kernels: 32 to 256 threads)."""

    def launch(self, kernel, n, args, *, block=kernels.BLOCK, per_block=None):
        self.block = block
        super().launch(kernel, n, args, block=block, per_block=per_block)


def test_every_kernel_family_at_the_block_sizes_of_the_real_launches(host_libs):
    """CONFIGS above are small blocks, for speed; here each family runs once with the blocks the real
    launches use, two of them so the grid-stride loops stride, on inputs without planted zeros."""
    launcher = _RealBlocks(host_libs[0], grid=2, block=1)
    rng = np.random.default_rng(5)
    with kernels.use_launcher(launcher):
        for act in ACTIVATIONS:
            check_activation(_numpy, act, 1031, np.float32, rng, zeros=False)
        for op in ("multiply", "divide"):
            check_binary(_numpy, op, (7, 151), np.float32, rng)
        for cols in (11, 300):                                  # row kernels of 32 and 256 threads
            check_cross_entropy(_numpy, (37, cols), np.float32, rng, reduction="mean", eps=0.1)
        check_sgd(_numpy, 1031, np.float32, rng, SGD_CONFIGS[-1])
        check_adam(_numpy, 1031, np.float32, rng, ADAM_CONFIGS[-1], True)
    assert {b for _, _, b, _ in launcher.launches} == {32, 256}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0,), (1,), (255,), (257,), (1031,), (7, 13)], ids=str)
@pytest.mark.parametrize("op", ["multiply", "divide"])
def test_binary_backward(host, op, shape, dtype):
    check_binary(_numpy, op, shape, dtype, np.random.default_rng(len(shape) + shape[0]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (1, 7), (37, 11), (6, 300), (3, 1031)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy(host, shape, dtype, reduction, eps):
    check_cross_entropy(_numpy, shape, dtype, np.random.default_rng(shape[0] * 31 + shape[1]),
                        reduction=reduction, eps=eps)


@pytest.mark.parametrize("ignore_index", [0, 3, -1])
def test_softmax_cross_entropy_ignore_index_inside_the_classes(host, ignore_index):
    check_cross_entropy(_numpy, (23, 5), F64, np.random.default_rng(1), reduction="mean", eps=0.2,
                        ignore_index=ignore_index)


def test_softmax_cross_entropy_extreme_logits(host):
    # huge logits stay finite (online max), -inf logits (masked classes) are skipped
    x = np.array([[1e4, 1e4 - 1.0, -1e4], [0.0, -np.inf, 2.0], [-np.inf, 5.0, -np.inf]])
    t = np.array([1, 2, 1])
    loss, lse = kernels.cross_entropy_forward(x, t, reduction="none")
    dx = kernels.cross_entropy_backward(np.ones(3), x, t, lse, reduction="none")
    ref_loss, ref_lse, ref_dx = ref_cross_entropy(x, t, np.ones(3), ignore_index=-100, eps=0.0,
                                                  reduction="none")
    equal(loss, ref_loss, rtol=1e-12, atol=1e-12)
    equal(lse, ref_lse, rtol=1e-12)
    equal(dx, ref_dx, rtol=1e-12, atol=1e-12)


def test_softmax_cross_entropy_degenerate_targets(host):
    x = np.random.default_rng(0).normal(size=(3, 4))
    # every row ignored: the mean is NaN (0 / 0) and the gradient 0, as PyTorch
    t = np.full(3, -100)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss, lse = kernels.cross_entropy_forward(x, t)
        dx = kernels.cross_entropy_backward(np.float64(1.0), x, t, lse)
    assert np.isnan(loss)
    assert_close(dx, np.zeros((3, 4)), rtol=0, atol=0)
    # a target outside [0, C) that is not ignore_index: that row's loss is NaN
    loss, _ = kernels.cross_entropy_forward(x, np.array([0, 4, -2]), reduction="none")
    assert not np.isnan(loss[0]) and np.isnan(loss[1]) and np.isnan(loss[2])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (1, 1), (7, 3), (33, 17), (4, 5, 6), (300, 2), (2, 1031)],
                         ids=str)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_bias_activation_backward(host, act, shape, dtype):
    check_bias_activation(_numpy, act, shape, dtype, np.random.default_rng(sum(shape)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (1, 1), (7, 3), (33, 17), (4, 5, 6), (2, 1031)], ids=str)
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_bias_activation_forward(host, act, shape, dtype):
    check_bias_forward(_numpy, act, shape, dtype, np.random.default_rng(sum(shape) + 7))


def test_bias_activation_forward_declines_what_it_cannot_take(host):
    z, b = np.ones((3, 4), F32), np.ones(4, F32)
    assert kernels.bias_activation_forward("relu", z.astype(F64), b) is None      # mixed dtypes
    assert kernels.bias_activation_forward("relu", z, np.ones(3, F32)) is None    # bias of another length
    assert kernels.bias_activation_forward("relu", z.T, np.ones(3, F32)) is None  # not C-contiguous
    assert kernels.bias_activation_forward("relu", z.astype(np.int32), b.astype(np.int32)) is None
    assert (z == 1).all() and host.launches == []
    with pytest.raises(ValueError, match="unknown activation 'gelu'; one of relu, sigmoid, tanh"):
        kernels.bias_activation_forward("gelu", z, b)


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 7, 40, 41, 100])
def test_bias_activation_chunks(host_libs, rows_per_chunk):
    # the raw kernels, for any split of the rows into chunks (the last one short)
    rng = np.random.default_rng(rows_per_chunk)
    rows, cols = 41, 6
    g, saved, _ = activation_case(rng, "gelu_erf", (rows, cols), F64)
    bias = rng.normal(size=cols)
    launcher = emulator.HostLauncher(host_libs[0], grid=2, block=3)
    chunks = -(-rows // rows_per_chunk)
    dx, db, partial = np.empty_like(g), np.empty(cols), np.full((chunks, cols), np.nan)
    launcher.launch(launcher.kernel("bias_gelu_erf_backward", F64), chunks * cols,
                    (g, saved, bias, dx, partial, np.int64(rows), np.int64(cols), np.int64(rows_per_chunk),
                     np.float64(0)))
    launcher.launch(launcher.kernel("bias_grad_reduce", F64), cols,
                    (partial, db, np.int64(chunks), np.int64(cols)))
    expected = ref_gelu_erf(g, saved + bias)
    equal(dx, expected, rtol=1e-12, atol=1e-12)
    equal(db, expected.sum(axis=0), rtol=1e-12, atol=1e-12)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.1, maximize=True),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
    dict(lr=0.1, momentum=0.5, maximize=True),
]
ADAM_CONFIGS = [
    dict(lr=1e-3),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, amsgrad=True),
    dict(lr=1e-2, beta1=0.5, beta2=0.9, maximize=True, weight_decay=0.01),
    dict(lr=1e-2, beta1=0.3, beta2=0.99, eps=1e-6),    # 1 - beta1 >= 0.5: lerp's other branch
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 257, 1031])
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_step(host, config, n, dtype):
    check_sgd(_numpy, n, dtype, np.random.default_rng(n), config)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 257, 1031])
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
def test_adam_step(host, config, decoupled, n, dtype):
    check_adam(_numpy, n, dtype, np.random.default_rng(n), config, decoupled)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_adam_step_multi(host, config, decoupled, dtype):
    check_adam_multi(_numpy, [257, 0, 1, 1031, 5], dtype, np.random.default_rng(3), config, decoupled)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_step_multi(host, config, dtype):
    check_sgd_multi(_numpy, [257, 0, 1, 1031, 5], dtype, np.random.default_rng(4), config)


def test_sgd_step_multi_refuses_a_missing_buffer(host):
    a = np.zeros(3, F32)
    with pytest.raises(ValueError, match=r"momentum=0.9 needs a momentum_buffer \(parameter 1\)"):
        kernels.sgd_step_multi([(a, a, a.copy()), (a, a, None)], lr=0.1, momentum=0.9)
    assert kernels.SGD_TENSORS.itemsize == 4 * 8 * kernels.MULTI_TENSORS + 8   # gg::SgdTensors' size


def test_adam_step_multi_launches_once_per_32_tensors(host):
    sizes = [(i % 7) + 1 for i in range(70)]                      # 70 tensors: launches of 32, 32, 6
    check_adam_multi(_numpy, sizes, F32, np.random.default_rng(0), dict(lr=0.01), False)
    multi = [launch for launch in host.launches if launch[0].startswith("adam_step_multi")]
    assert len(multi) == 2 * 3 and {n for _, n, _, _ in multi} == {7}


def test_adam_step_multi_refuses_mixed_dtypes_and_missing_state(host):
    a32, a64 = np.zeros(3, F32), np.zeros(3, F64)
    with pytest.raises(ValueError, match="parameter 1 is float64 on cpu, parameter 0 float32 on cpu"):
        kernels.adam_step_multi([(a32, a32, a32.copy(), a32.copy(), None), (a64, a64, a64.copy(), a64.copy(),
                                                                             None)], step=1, lr=0.1)
    with pytest.raises(ValueError, match=r"amsgrad=True needs max_exp_avg_sq \(parameter 0\)"):
        kernels.adam_step_multi([(a32, a32, a32.copy(), a32.copy(), None)], step=1, lr=0.1, amsgrad=True)
    with pytest.raises(ValueError, match="step counts from 1"):
        kernels.adam_step_multi([(a32, a32, a32.copy(), a32.copy(), None)], step=0, lr=0.1)
    kernels.adam_step_multi([], step=1, lr=0.1)                    # nothing to do
    # the struct goes by value as CuPy passes it: a NumPy array of size one, of the struct's size
    kernel = host.kernel("adam_step_multi", F32)
    scalars = (*(np.float32(v) for v in (0.1, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.1)), np.int32(0), np.int32(0))
    packed = np.zeros((), dtype=kernels.ADAM_TENSORS)
    kernel.check((packed, *scalars))
    for wrong in (packed[()], np.zeros(2, dtype=kernels.ADAM_TENSORS), np.zeros((), dtype=np.int64)):
        with pytest.raises(TypeError, match="1544-byte struct"):
            kernel.check((wrong, *scalars))
    assert kernels.ADAM_TENSORS.itemsize == 6 * 8 * kernels.MULTI_TENSORS + 8   # gg::AdamTensors' size


def test_optimizer_updates_take_optim_functionals_signature(host):
    # kernels.sgd_update / adam_update drop into gpugrad.optim.functional.FUSED as they are
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=10), rng.normal(size=10)
    q = p.copy()
    kernels.OPTIMIZER_UPDATES["sgd"](np, q, g, None, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0,
                                     nesterov=False, maximize=False, first_step=True)
    equal(q, p - 0.1 * g, rtol=1e-15)
    m, v = np.zeros(10), np.zeros(10)
    kernels.OPTIMIZER_UPDATES["adam"](np, q, g, m, v, None, step=1, lr=0.1, beta1=0.9, beta2=0.999,
                                      eps=1e-8, weight_decay=0.0, decoupled_weight_decay=True, amsgrad=False,
                                      maximize=False)
    equal(q, p - 0.1 * g - 0.1 * np.sign(g), rtol=1e-6)


def test_fused_vjps_match_the_ops_rules(host):
    # what the lead wires into the CUDA backward: same arguments and results as the plain rules
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)).astype(F32)
    y = rng.uniform(0.5, 2.0, size=(4, 5)).astype(F32)
    g = rng.normal(size=(4, 5)).astype(F32)
    for op in REGISTRY.values():
        if op.fused is None or op.name in ("multiply", "divide", "softmax_cross_entropy",
                                           "linear_activation"):                       # below
            continue
        out = op.forward(np, x)
        got = kernels.fused_vjp(op.fused, g, out, None, needs=(True,))
        want = op.vjp_rule(np, g, out, None)
        equal(got[0], want[0], rtol=1e-6, atol=1e-7, err=op.name)
    got = kernels.fused_vjp("multiply_backward", g, None, x, y, needs=(True, True))
    want = REGISTRY["multiply"].vjp_rule(np, g, None, x, y, needs=(True, True))
    for a, b in zip(got, want):
        equal(a, b, rtol=1e-6)
    out = x / y
    got = kernels.fused_vjp("divide_backward", g, out, None, y, needs=(True, True))
    want = REGISTRY["divide"].vjp_rule(np, g, out, None, y, needs=(True, True))
    for a, b in zip(got, want):
        equal(a, b, rtol=1e-6)
    ce_op = REGISTRY["softmax_cross_entropy"]
    logits = rng.normal(size=(6, 5)).astype(F32)
    target = rng.integers(0, 5, size=6)
    target[0] = 2
    for params in ({"ignore_index": -100, "label_smoothing": 0.0, "reduction": "mean"},
                   {"ignore_index": 2, "label_smoothing": 0.1, "reduction": "sum"},
                   {"ignore_index": 2, "label_smoothing": 0.0, "reduction": "none"}):
        gl = rng.normal(size=(6,)).astype(F32) if params["reduction"] == "none" else np.asarray(1.3, F32)
        loss, _ = kernels.cross_entropy_forward(logits, target, **params)
        equal(loss, ce_op.forward(np, logits, target, **params), rtol=1e-5, atol=1e-6)
        got = kernels.fused_vjp("softmax_cross_entropy_backward", gl, None, logits, target,
                                needs=(True, False), **params)
        want = ce_op.vjp_rule(np, gl, None, logits, target, **params)
        equal(got[0], want[0], rtol=1e-5, atol=1e-6, err=str(params))
        assert got[1] is None
    la_op = REGISTRY["linear_activation"]
    w, b = rng.normal(size=(3, 5)).astype(F32), rng.normal(size=(3,)).astype(F32)
    gla = rng.normal(size=(4, 3)).astype(F32)
    for act in ("relu", "tanh", "sigmoid"):
        for needs in ((True, True, True), (False, True, True), (True, False, False)):
            out = la_op.forward(np, x, w, b, activation=act)
            got = kernels.fused_vjp("linear_activation_backward", gla, out, x, w, b, needs=needs,
                                    activation=act)
            want = la_op.vjp_rule(np, gla, out, x, w, b, needs=needs, activation=act)
            for a, c in zip(got, want):
                assert (a is None) == (c is None), (act, needs)
                if a is not None:
                    equal(a, c, rtol=1e-5, atol=1e-6, err=f"{act} {needs}")
    out = la_op.forward(np, x[None], w, b, activation="relu")      # batch dims folded: the plain rule
    assert kernels.fused_vjp("linear_activation_backward", gla[None], out, x[None], w, b,
                             needs=(True, True, True), activation="relu") is None
    got = kernels.fused_vjp("leaky_relu_backward", g, None, x, needs=(True,), negative_slope=0.2)
    equal(got[0], np.where(x > 0, g, 0.2 * g), rtol=1e-6)
    # cases the kernels do not pay for, or cannot take: None, and the caller runs the plain rule
    assert kernels.fused_vjp("multiply_backward", g, None, x, 2.0, needs=(True, False)) is None
    assert kernels.fused_vjp("multiply_backward", g, None, x, y.astype(F64), needs=(True, True)) is None
    assert kernels.fused_vjp("tanh_backward", g.astype(np.int32), out.astype(np.int32), None) is None
    with pytest.raises(KeyError, match="no fused VJP"):
        kernels.fused_vjp("sgd_step", g, out)


def _fused_samples():
    for op in REGISTRY.values():
        if op.fused is None:
            continue
        for sample in op.samples(np.random.default_rng(1)):
            yield pytest.param(op, sample, id=f"{op.name}-{sample.name}")


@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize(("op", "sample"), list(_fused_samples()))
def test_recorded_nodes_take_the_fused_path_as_on_a_gpu(host, op, sample, dtype):
    # The path backward takes on CUDA (OpDef._run_vjp_cuda, with what the node saved), run on the
    # CPU emulation: it must give the plain rule's gradients for every sample of every fused op.
    import gpugrad as gg

    args = [gg.tensor(a.astype(dtype), requires_grad=True)
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" else getattr(a, "value", a)
            for a in sample.args]
    out = op(*args, **sample.params)
    node = out._node
    g = np.random.default_rng(2).normal(size=out.shape).astype(out.dtype)
    want = op.run_vjp(g, node)
    got = op._run_vjp_cuda(np, g, node)
    tol = 1e-12 if dtype == F64 else 2e-5
    for i, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), i
        if a is not None:
            equal(a, b, rtol=tol, atol=tol, err=f"input {i}")


def _train_three_steps(monkeypatch, make_opt, multi_kernel=None):
    """Parameters of a small float64 MLP after 3 steps of make_opt(params); with multi_kernel, the
    optimizer takes its CUDA path (Optimizer._update_group batching into that kernel)."""
    import gpugrad as gg
    from gpugrad.optim import optimizer as optimizer_module

    gg.manual_seed(0)
    model = gg.nn.MLP([5, 8, 8, 3], dtype=gg.float64)
    opt, extra = make_opt(list(model.parameters()))
    x, t = gg.randn(6, 5, dtype=gg.float64), gg.tensor([0, 1, 2, 0, 1, 2])
    with monkeypatch.context() as m:
        if multi_kernel is not None:
            m.setattr(optimizer_module, "pick_multi", lambda name, xp: multi_kernel)
        for _ in range(3):
            opt.zero_grad()
            gg.nn.functional.cross_entropy(model(x), t).backward()
            opt.step()
    return opt, model, extra, [p.detach().numpy().copy() for p in model.parameters()]


def _multi_launches(host):
    return len([e for e in host.launches if "multi" in e[0]])


@pytest.mark.parametrize("config", [{}, {"amsgrad": True, "weight_decay": 0.1}, {"maximize": True}], ids=str)
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_optimizers_batch_parameters_into_the_multi_tensor_kernel(host, monkeypatch, cls, config):
    # Adam's batching as it runs on CUDA, on the emulation: the per-parameter reference update's result
    import gpugrad as gg

    def make_opt(params):
        extra = gg.zeros(4, dtype=gg.float64, requires_grad=True)     # a group member with no grad
        return getattr(gg.optim, cls)([{"params": params + [extra]}], lr=0.05, **config), extra

    before = _multi_launches(host)
    opt, model, extra, batched = _train_three_steps(monkeypatch, make_opt, kernels.adam_step_multi)
    assert extra.grad is None and not opt.state.get(extra)
    assert all(opt.state[p]["step"] == 3 for p in model.parameters())
    assert _multi_launches(host) - before == 3                       # one per step for the six tensors
    for a, b in zip(batched, _train_three_steps(monkeypatch, make_opt)[3]):
        equal(a, b, rtol=1e-12, atol=1e-14)


SGD_BATCH_CONFIGS = [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, {}]


@pytest.mark.parametrize("config", SGD_BATCH_CONFIGS, ids=str)
def test_sgd_batches_parameters_into_the_multi_tensor_kernel(host, monkeypatch, config):
    # SGD's batching as it runs on CUDA, on the emulation: the per-parameter update's result
    import gpugrad as gg

    def make_opt(params):
        return gg.optim.SGD(params, lr=0.05, **config), None

    before = _multi_launches(host)
    batched = _train_three_steps(monkeypatch, make_opt, kernels.sgd_step_multi)[3]
    assert _multi_launches(host) - before == 3
    for a, b in zip(batched, _train_three_steps(monkeypatch, make_opt)[3]):
        equal(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_dimensional_arrays_keep_their_shape(host, dtype):
    # NumPy's and CuPy's ascontiguousarray turn a 0-d array into shape (1,): the fused functions
    # must not, or backward gets a (1,) gradient for a () leaf (defect 1 of issue 11)
    g, x, y = (np.asarray(v, dtype) for v in (0.5, 1.5, -2.0))
    for act in ACTIVATIONS:
        dx = kernels.activation_backward(f"{act}_backward", g, x, 0.1)
        same_kind(dx, g, dtype, act)
    for pair in (kernels.multiply_backward(g, x, y), kernels.divide_backward(g, y, np.asarray(x / y))):
        for grad in pair:
            same_kind(grad, g, dtype)
    p, buf = np.asarray(1.0, dtype), np.asarray(0.0, dtype)
    kernels.sgd_step(p, g, buf, lr=0.1, momentum=0.9, first_step=True)
    close(p, np.float64(1.0 - 0.1 * 0.5), dtype)
    m, v = np.asarray(0.0, dtype), np.asarray(0.0, dtype)
    kernels.adam_step(p, g, m, v, step=1, lr=0.1)
    same_kind(p, g, dtype)
    same_kind(m, g, dtype)
    kernels.sgd_step_multi([(p, g, None)], lr=0.1)
    kernels.adam_step_multi([(p, g, m, v, None)], step=2, lr=0.1)
    same_kind(p, g, dtype)


def test_nothing_is_launched_for_empty_arrays(host):
    e = np.empty(0, F32)
    kernels.tanh_backward(e, e)
    kernels.multiply_backward(e, e, e)
    kernels.sgd_step(e, e, None, lr=0.1)
    assert all(n == 0 for _, n, _, _ in host.launches)


def test_float16_conversions_match_numpy(host_libs):
    lib = host_libs[0]["activation_backward.cu"]
    lib.gg_test_half_to_float.restype = ctypes.c_float
    lib.gg_test_half_to_float.argtypes = [ctypes.c_ushort]
    lib.gg_test_float_to_half.restype = ctypes.c_ushort
    lib.gg_test_float_to_half.argtypes = [ctypes.c_float]
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = np.array([lib.gg_test_half_to_float(int(b)) for b in bits], dtype=np.float32)
    assert_close(got, bits.view(np.float16).astype(np.float32), rtol=0, atol=0, equal_nan=True)
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 65504.0, 65519.996, 65520.0, 1e6, np.inf, -np.inf, np.nan, 5.96e-8,
                        2.98e-8, 2.99e-8, 6.1035e-5, 6.1e-5, 1 + 2.0**-11, 1 + 3 * 2.0**-11, -1e-9],
                       np.float32)
    floats = np.concatenate([special, rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)
                             .view(np.float32), rng.normal(0, 1e-5, 5000).astype(np.float32),
                             rng.normal(0, 100, 5000).astype(np.float32)])
    got = np.array([lib.gg_test_float_to_half(float(f)) for f in floats], dtype=np.uint16).view(np.float16)
    with np.errstate(over="ignore"):
        want = floats.astype(np.float16)
    assert_close(np.isnan(got), np.isnan(want), rtol=0, atol=0)
    finite = ~np.isnan(want)
    assert_close(got[finite].view(np.uint16), want[finite].view(np.uint16), rtol=0, atol=0)


def test_the_emulation_catches_wrong_arguments(host_libs):
    launcher = emulator.HostLauncher(host_libs[0])
    k = launcher.kernel("tanh_backward", F32)
    a = np.ones(4, F32)
    with pytest.raises(TypeError, match="NumPy scalar"):
        k(1, 1, (a, a, a, 4, np.float32(0)))                 # a Python int for long long n
    with pytest.raises(TypeError, match="8-byte integer"):
        k(1, 1, (a, a, a, np.int32(4), np.float32(0)))
    with pytest.raises(TypeError, match="float64"):
        k(1, 1, (a, a, a.astype(F64), np.int64(4), np.float32(0)))
    with pytest.raises(TypeError, match="takes 5 arguments"):
        k(1, 1, (a, a, a, np.int64(4)))
    with pytest.raises(RuntimeError, match="wrote outside"):
        k(1, 1, (np.ones(8, F32), np.ones(8, F32), a, np.int64(8), np.float32(0)))   # n past dx's end


# ============================================================================= references vs PyTorch

def _torch():
    return optional.need("torch")


def test_activation_references_match_torch():
    torch = _torch()
    rng = np.random.default_rng(0)
    x, g = rng.normal(0, 3, size=500), rng.normal(size=500)
    cases = {
        "gelu_erf": lambda t: torch.nn.functional.gelu(t),
        "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.07),
    }
    for act, fn in cases.items():
        xt = torch.tensor(x, requires_grad=True)
        fn(xt).backward(torch.tensor(g))
        assert_close(ACTIVATIONS[act][0](g, x, 0.07), xt.grad.numpy(), rtol=1e-12, atol=1e-14,
                                   msg=act)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.15])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_reference_matches_torch(reduction, eps, ignore_index):
    torch = _torch()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(17, 6))
    t = rng.integers(0, 6, size=17)
    t[::4] = ignore_index
    g = rng.normal(size=17) if reduction == "none" else rng.normal()
    xt = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(xt, torch.tensor(t), ignore_index=ignore_index,
                                             label_smoothing=eps, reduction=reduction)
    loss.backward(torch.tensor(g, dtype=torch.float64))
    ref_loss, ref_lse, ref_dx = ref_cross_entropy(x, t, g, ignore_index=ignore_index, eps=eps,
                                                  reduction=reduction)
    assert_close(ref_loss, loss.detach().numpy(), rtol=1e-12)
    assert_close(ref_dx, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert_close(ref_lse, torch.logsumexp(xt, 1).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_reference_matches_torch(config):
    torch = _torch()
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=20)
    pt = torch.tensor(p0.copy(), requires_grad=True)
    opt = torch.optim.SGD([pt], **config)
    p, buf = p0, None
    for step in range(1, 5):
        g = rng.normal(size=20)
        pt.grad = torch.tensor(g)
        opt.step()
        p, buf = ref_sgd(p, g, buf, first_step=step == 1, **config)
        assert_close(p, pt.detach().numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
def test_adam_reference_matches_torch(config, decoupled):
    torch = _torch()
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=20)
    pt = torch.tensor(p0.copy(), requires_grad=True)
    kw = dict(lr=config["lr"], betas=(config.get("beta1", 0.9), config.get("beta2", 0.999)),
              eps=config.get("eps", 1e-8), weight_decay=config.get("weight_decay", 0.0),
              amsgrad=config.get("amsgrad", False), maximize=config.get("maximize", False))
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)([pt], **kw)
    p, m, v, vmax = p0, np.zeros(20), np.zeros(20), np.zeros(20)
    for step in range(1, 5):
        g = rng.normal(size=20)
        pt.grad = torch.tensor(g)
        opt.step()
        p, m, v, vmax = ref_adam(p, g, m, v, vmax, step=step, lr=kw["lr"], beta1=kw["betas"][0],
                                 beta2=kw["betas"][1], eps=kw["eps"], weight_decay=kw["weight_decay"],
                                 amsgrad=kw["amsgrad"], maximize=kw["maximize"], decoupled=decoupled)
        assert_close(p, pt.detach().numpy(), rtol=1e-12, atol=1e-14)


# ============================================================================= consistency


def test_every_kernel_file_exists_and_every_cu_file_is_registered():
    on_disk = sorted(p.name for p in kernels.kernels_dir().glob("*.cu"))
    assert on_disk == KERNEL_FILES
    for name, spec in kernels.KERNELS.items():
        assert spec.entries == tuple(f"{name}_{kernels._SUFFIX[d]}" for d in spec.dtypes)


def test_compiled_entry_points_are_exactly_the_registry(host_libs):
    # from the symbols of the emulated libraries: what the .cu sources define after preprocessing
    for file, (path, entries) in host_libs[1].items():
        assert emulator.exported_entries(path) == entries_in(file) == set(entries), file


def test_every_kernel_has_a_header_comment():
    for name, spec in kernels.KERNELS.items():
        text = (kernels.kernels_dir() / spec.file).read_text()
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("//"))
        assert re.search(rf"\b{name}\b", comments), f"{spec.file}: no comment describes {name}"


def _kernels_of(fused: str) -> tuple[str, ...]:
    return kernels.FUSED_VJP_KERNELS.get(fused, (fused,))


def test_every_fused_name_of_an_op_is_a_kernel_with_a_vjp():
    for op in REGISTRY.values():
        if op.fused is not None:
            assert op.fused in kernels.FUSED_VJPS, f"{op.name}: no kernels.FUSED_VJPS entry for {op.fused!r}"
            assert set(_kernels_of(op.fused)) <= set(kernels.KERNELS), f"{op.name}: fused={op.fused!r}"
    assert set(kernels.FUSED_VJPS) <= set(kernels.KERNELS) | set(kernels.FUSED_VJP_KERNELS)


def test_unwired_kernels_are_listed():
    used = {k for op in REGISTRY.values() if op.fused is not None for k in _kernels_of(op.fused)}
    assert not set(NOT_YET_WIRED) & set(NOT_OP_KERNELS)
    assert set(kernels.KERNELS) - used == set(NOT_YET_WIRED) | set(NOT_OP_KERNELS)


# ============================================================================= the loader, without CuPy


def test_importing_the_loader_does_not_import_cupy():
    code = "import sys, gpugrad, gpugrad.cuda.kernels; assert 'cupy' not in sys.modules, 'cupy was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_kernel_sources_and_options():
    d = kernels.kernels_dir()
    assert (d / "common.cuh").is_file()
    src = kernels.kernel_source("activation_backward.cu")
    assert src.splitlines()[1] == f'#line 1 "{(d / "activation_backward.cu").as_posix()}"'
    assert f"-I{d}" in kernels.compile_options()
    assert kernels.kernel_names() == sorted(kernels.KERNELS)
    assert kernels.KERNELS["tanh_backward"].entry(np.float16) == "tanh_backward_f16"
    with pytest.raises(TypeError, match="no kernel for dtype int32"):
        kernels.KERNELS["tanh_backward"].entry(np.int32)
    with pytest.raises(KeyError, match="no fused kernel named"):
        kernels.get_kernel("nope", np.float32)


def test_the_compiled_source_changes_with_every_included_header(tmp_path, monkeypatch):
    # CuPy's kernel cache keys a binary by the source text and options: an edit to a header alone
    # must change the text, or an old binary is replayed (issue 11, defect 4)
    import shutil as sh

    copy = tmp_path / "kernels"
    sh.copytree(kernels.kernels_dir(), copy)
    monkeypatch.setattr(kernels, "kernels_dir", lambda: copy)
    assert [h.name for h in kernels.included_headers("activation_backward.cu")] == ["activations.cuh",
                                                                                    "common.cuh"]
    before = {f: kernels.kernel_source(f) for f in KERNEL_FILES}
    with open(copy / "common.cuh", "a") as header:
        header.write("// an edit\n")
    after = {f: kernels.kernel_source(f) for f in KERNEL_FILES}
    assert all(before[f] != after[f] for f in KERNEL_FILES)      # every file includes common.cuh
    with open(copy / "activations.cuh", "a") as header:
        header.write("// another\n")
    again = {f: kernels.kernel_source(f) for f in KERNEL_FILES}
    changed = {f for f in KERNEL_FILES if again[f] != after[f]}
    assert changed == {f for f in KERNEL_FILES if "activations.cuh" in (copy / f).read_text()}
    assert all(again[f].endswith((copy / f).read_text()) for f in KERNEL_FILES)


def test_grid_size_and_launch(monkeypatch):
    assert kernels.grid_size(0, 256, 100) == 0
    assert kernels.grid_size(1, 256, 100) == 1
    assert kernels.grid_size(256, 256, 100) == 1
    assert kernels.grid_size(257, 256, 100) == 2
    assert kernels.grid_size(10**9, 256, 100) == 100
    assert kernels.grid_size(7, 32, 100, per_block=1) == 7
    calls = []
    monkeypatch.setattr(kernels, "max_blocks", lambda device_id=None: 4)
    kernels.launch(lambda *a: calls.append(a), 0, ())
    assert calls == []                                        # nothing launched for n == 0
    kernels.launch(lambda *a: calls.append(a), 1000, (1, 2))
    kernels.launch(lambda *a: calls.append(a), 10**6, (3,), block=128)
    assert calls == [((4,), (256,), (1, 2)), ((4,), (128,), (3,))]


def test_get_kernel_without_cuda_says_why():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: covered by the cuda test")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="no CUDA device"):
        kernels.get_kernel("tanh_backward", np.float32)


def test_argument_errors(host):
    a, b = np.ones((2, 3), F32), np.ones((3, 2), F32)
    with pytest.raises(ValueError, match=r"tanh_backward: saved and g differ: \(3, 2\) float32 vs \(2, 3\)"):
        kernels.tanh_backward(a, b)
    with pytest.raises(ValueError, match="bias must be"):
        kernels.bias_activation_backward("relu", a, a, np.ones(2, F32))
    with pytest.raises(ValueError, match="not an activation kernel"):
        kernels.activation_backward("multiply_backward", a, a)
    with pytest.raises(ValueError, match="unknown activation"):
        kernels.bias_activation_backward("swish", a, a, np.ones(3, F32))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.sgd_step(a.T, a.T, None, lr=0.1)
    with pytest.raises(ValueError, match="needs a momentum_buffer"):
        kernels.sgd_step(a, a, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="amsgrad=True needs"):
        kernels.adam_step(a, a, a.copy(), a.copy(), step=1, lr=0.1, amsgrad=True)
    with pytest.raises(ValueError, match="reduction must be"):
        kernels.cross_entropy_forward(a, np.zeros(2, np.int64), reduction="avg")
    with pytest.raises(ValueError, match=r"expected logits \(N, C\)"):
        kernels.cross_entropy_forward(a, np.zeros(3, np.int64))
    # non-contiguous inputs are made contiguous, not refused
    equal(kernels.tanh_backward(a.T, b), np.zeros((3, 2), F32), rtol=0)


# ============================================================================= on a GPU


@pytest.mark.cuda
def test_cuda_kernels_match_the_references():
    try:
        cp = kernels.backend.load_cupy()
    except RuntimeError as err:
        pytest.skip(f"no CUDA device: {err}")
    rng = np.random.default_rng(0)
    dev = cp.asarray
    for dtype in DTYPES:
        for act in ACTIVATIONS:
            for n in (0, 1, 257, 100_003):
                check_activation(dev, act, n, dtype, rng)
            check_bias_activation(dev, act, (1000, 33), dtype, rng)
        for act in ("relu", "sigmoid", "tanh"):
            check_bias_forward(dev, act, (1000, 33), dtype, rng)
        for op in ("multiply", "divide"):
            check_binary(dev, op, (100_003,), dtype, rng)
        for reduction in ("mean", "sum", "none"):
            check_cross_entropy(dev, (64, 1000), dtype, rng, reduction=reduction, eps=0.1)
        check_cross_entropy(dev, (1000, 7), dtype, rng, reduction="mean", eps=0.0)
        for config in SGD_CONFIGS:
            check_sgd(dev, 100_003, dtype, rng, config)
        for config in ADAM_CONFIGS:
            check_adam(dev, 100_003, dtype, rng, config, decoupled=True)
            check_adam(dev, 1031, dtype, rng, config, decoupled=False)
            check_adam_multi(dev, [100_003, 0, 1, 1031] * 9, dtype, rng, config, decoupled=True, exact=False)
        for config in SGD_CONFIGS:
            check_sgd_multi(dev, [100_003, 0, 1, 1031] * 9, dtype, rng, config, exact=False)
