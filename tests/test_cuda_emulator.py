"""The CUDA emulator (gpugrad.cuda.emulator): CuPy's rules on the CPU, and what it lets the suite check.

Three kinds of tests:

1. the emulated ``cupy`` used directly (every run): its strictness (no implicit host
   conversion, no host arrays among device operands, CuPy's index wrap-around), the host
   reads it counts, its kernels (g++ builds of CUDA source, arguments checked), and what it
   refuses to pretend (timing, memory, graph capture);
2. how GPUGRAD_EMULATE_CUDA switches it on, in subprocesses (every run);
3. gpugrad's CUDA path on the emulator (only in a run with GPUGRAD_EMULATE_CUDA=1, as CI's
   emulated step): a training step reads nothing back from the device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import backend
from gpugrad.cuda import kernels
from gpugrad.cuda.emulator import array, host_build
from gpugrad.cuda.emulator import host_reads as record_host_reads
from gpugrad.cuda.emulator.namespace import cupy as cp
from gpugrad.cuda.emulator.namespace import cupyx
from gpugrad.nn import functional as F
from gpugrad.ops.special import erf_array
from gpugrad.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]
needs_gxx = pytest.mark.skipif(host_build.compiler() is None, reason="g++ is not on PATH: the emulator "
                               "cannot build kernels (it says so: test_without_gxx_the_error_says_so)")
emulated_run = pytest.mark.skipif(not gg.cuda.is_emulated(), reason="needs a run with GPUGRAD_EMULATE_CUDA=1 "
                                  "(CI's emulated step): it checks gpugrad's CUDA path on the emulator")


# ============================================================================= 1. the emulated cupy


def test_implicit_conversion_to_numpy_raises_as_in_cupy():
    a = cp.arange(3.0)
    for convert in (np.asarray, np.array, lambda x: np.float64(1.0) * np.ones(3) + np.asarray(x)):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(a)
    assert isinstance(a.get(), np.ndarray) and isinstance(cp.asnumpy(a), np.ndarray)


def test_host_arrays_among_device_operands_raise_as_in_cupy():
    a, host = cp.ones(3), np.ones(3)
    for op in (lambda: a + host, lambda: host + a, lambda: a * host[0:1], lambda: cp.add(a, [1.0, 2.0, 3.0]),
               lambda: cp.concatenate([a, host]), lambda: cp.where(a > 0, a, host), lambda: np.exp(host) + a,
               lambda: cp.matmul(a, host), lambda: a.__iadd__(host)):
        with pytest.raises(TypeError, match="Unsupported type <class '(numpy.ndarray|list)'>"):
            op()
    # what CuPy does accept from the host: scalars, explicit copies, index arrays, assigned values
    assert (a + np.float32(2.0) + 1).tolist() == [4.0, 4.0, 4.0]
    copy = cp.asarray(host)
    host[0] = 5.0                                     # a copy on the device, not a view of host memory
    assert copy[0].item() == 1.0
    assert cp.arange(4)[np.array([3, 1])].tolist() == [3, 1]
    a[...] = np.full(3, 2.0)
    assert a.tolist() == [2.0, 2.0, 2.0]


def test_numpy_functions_and_methods_run_on_the_device():
    a = cp.arange(6.0).reshape(2, 3)
    for result in (np.exp(a), np.concatenate([a, a]), cp.linalg.norm(a, axis=1), a.sum(), a.max(axis=0),
                   cp.einsum("ij->j", a), cp.take_along_axis(a, cp.zeros((2, 1), dtype=np.int64), 1),
                   a.T, a.astype(np.float32), cp.sort(a, axis=None), a @ a.T):
        assert type(result) is cp.ndarray, type(result)
    assert a.sum().shape == () and a.sum().item() == 15.0          # reductions give 0-d arrays
    # the namespace is NumPy's, wrapped generically: every ufunc and public function is there
    for name in ("cbrt", "logaddexp", "heaviside", "nan_to_num", "cumsum", "searchsorted", "tril", "pad"):
        assert callable(getattr(cp, name)), name
    out = cp.zeros(3)
    assert cp.add(cp.ones(3), 1.0, out=out) is out                 # out= gives back the array passed
    assert cp.ascontiguousarray(cp.asarray(2.0)).shape == (1,)     # CuPy's (and NumPy's) rule for 0-d


def test_integer_indices_out_of_bounds_wrap_around_as_in_cupy():
    a = cp.arange(3)
    assert a[[1, 3]].tolist() == [1, 0] and a[cp.asarray([-4, 5])].tolist() == [2, 2]
    b = cp.zeros((2, 3))
    b[:, cp.asarray([4])] = 7.0
    assert b.tolist() == [[0.0, 7.0, 0.0], [0.0, 7.0, 0.0]]
    with pytest.raises(IndexError):
        a[5]                                          # a plain integer raises, as in NumPy and CuPy


def test_every_host_read_is_counted_with_where_it_came_from():
    a = cp.arange(4.0)
    reads = {
        "item()": lambda: a[0].item(), "float()": lambda: float(a[1]), "int()": lambda: int(a[1]),
        "bool()": lambda: bool(a[1] > 0), "get()": a.get, "tolist()": a.tolist, "repr()": lambda: repr(a),
        "str()": lambda: str(a), "format()": lambda: f"{a[0]:.2f}", "cupy.asnumpy": lambda: cp.asnumpy(a),
        "boolean-mask": lambda: a[a > 1], "cupy.nonzero": lambda: cp.nonzero(a), "ndarray.nonzero":
            a.nonzero, "cupy.unique": lambda: cp.unique(a), "synchronize": cp.cuda.Device().synchronize,
    }
    for kind, read in reads.items():
        with record_host_reads() as log:
            read()
        assert len(log) == 1 and kind in log[0] and "test_cuda_emulator.py:" in log[0], (kind, log)
    with record_host_reads() as log:
        b = (a * 2 + 1).sum(axis=0) / cp.float32(3.0)
        c = cp.where(a > 1, a, 0.0)[1:].reshape(3, 1)
        a[a.argmax()] = 0.0                              # an index computed on the device: no read
        _ = len(c), c.shape, b.dtype, list(c)            # sizes and iteration are host-side metadata
    assert log == []


def test_dlpack_shares_device_memory_and_refuses_what_is_not_the_emulators():
    a = cp.arange(4.0)
    assert a.__dlpack_device__() == (2, 0)                 # kDLCUDA, device 0, as CuPy says
    with record_host_reads() as log:
        shared, copied = cp.from_dlpack(a), cp.from_dlpack(a, copy=True)
    assert log == [] and shared.data.ptr == a.data.ptr and copied.data.ptr != a.data.ptr
    shared[0] = 9.0
    assert a[0].item() == 9.0 and copied[0].item() == 0.0
    with pytest.raises((TypeError, ValueError)):            # NumPy would read the device memory unseen
        np.from_dlpack(a)
    with pytest.raises(TypeError, match=r"cannot import a numpy.ndarray \(DLPack device \(1, 0\)\)"):
        cp.from_dlpack(np.arange(3.0))                    # host memory is not the emulator's device memory
    with pytest.raises(BufferError, match="exports no copy to"):
        a.__dlpack__(dl_device=(1, 0))


def test_shape_helpers_read_a_device_array_not_its_data_pointer():
    # a CuPy array's .data is its MemoryPointer, not a Tensor's array: helpers must not unwrap it
    from gpugrad.ops.util import ndim_of, shape_of  # noqa: PLC0415

    a = cp.ones((2, 3))
    assert shape_of(a) == (2, 3) and ndim_of(a) == 2
    assert shape_of(gg.ones(4)) == (4,) and ndim_of(2.0) == 0


def test_uninitialised_memory_is_not_zero():
    assert np.isnan(cp.empty(4).get()).all() and (cp.empty_like(cp.ones(3, np.int64)).get() == -1).all()
    assert np.isnan(cp.ndarray((2, 2), np.float32).get()).all()


def test_erf_reads_nothing_from_the_device():
    # the boolean-mask gathers erf used made the host wait for each piece's size (issue 11, defect 5)
    x = np.concatenate([np.linspace(-7, 7, 101), [0.0, np.inf, -np.inf, np.nan]])
    with record_host_reads() as log:
        y = erf_array(cp, cp.asarray(x))
    assert log == []
    assert_close(y.get(), erf_array(np, x), rtol=0, atol=0, equal_nan=True)


def test_scatters_refuse_the_dtypes_cuda_has_no_atomics_for_as_cupy_does():
    for dtype in (np.int64, np.int16, np.int8, np.uint8, np.bool_):
        with pytest.raises(TypeError, match="cupy.add.at only supports int32, float16, float32, float64"):
            cupyx.scatter_add(cp.zeros(3, dtype), cp.asarray([1, 1]), 1)
    with pytest.raises(TypeError, match="cupy.maximum.at only supports int32, float32"):
        cupyx.scatter_max(cp.zeros(3, np.float16), (cp.asarray([1, 1]),), 1)
    a = cp.zeros(3, np.int64)
    cupyx.scatter_add(a, slice(0, 2), 1)                 # basic indices and a single mask: a plain add
    cupyx.scatter_add(a, cp.asarray([True, False, True]), 2)
    b = cp.zeros(3, np.uint64)
    cupyx.scatter_add(b, cp.asarray([1, 1]), cp.asarray([2, 3], np.uint64))
    assert a.tolist() == [3, 1, 2] and b.tolist() == [0, 5, 0]


@pytest.mark.parametrize("dtype", ["int64", "int32", "int16", "int8", "uint8", "uint16", "bool", "float16"])
def test_backend_scatter_add_sums_every_dtype_on_the_device(monkeypatch, dtype):
    """gpugrad's scatter_add where CuPy's has no atomics: int64 through uint64, the narrow ones in 32 bits."""
    monkeypatch.setattr(backend, "_cupy", cp)
    monkeypatch.setattr(backend, "_cupyx", cupyx)
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype not in ("bool", "float16") else None
    lo, hi = (info.min, info.max) if info else (0, 2)
    start = rng.integers(lo, hi, size=5, endpoint=info is not None).astype(dtype)
    values = rng.integers(lo, hi, size=(7, 2), endpoint=info is not None).astype(dtype)
    if dtype == "int64":
        values[:2] = [[-1, info.min], [info.max, 2]]      # sums that wrap around, as NumPy's do
    index = (np.array([[0], [1], [1], [4], [4], [4], [0]]), np.array([[0, 1]]))
    want = np.zeros((5, 2), dtype)
    want[:, 0] = start
    np.add.at(want, index, values)
    got = cp.zeros((5, 2), dtype)
    got[:, 0] = cp.asarray(start)
    with record_host_reads() as log:
        backend.scatter_add(got, tuple(cp.asarray(i) for i in index), cp.asarray(values))
    assert log == [] and got.dtype == want.dtype
    assert_close(got.get(), want, rtol=0, atol=0)


def test_several_devices_refuse_operands_on_another_one(monkeypatch):
    monkeypatch.setattr(array, "device_total", 2)
    with cp.cuda.Device(1):
        b = cp.ones(3)
        assert b.device.id == 1 and (b + 1).device.id == 1
    with pytest.raises(ValueError, match=r"resides \(1\) is different from the current device \(0\)"):
        b + 1
    with pytest.raises(ValueError, match="Invalid device ID 2: the CUDA emulator has 2 device"):
        cp.cuda.Device(2).use()


def test_what_the_emulator_does_not_pretend_to_have():
    start, end = cp.cuda.Event(), cp.cuda.Event()
    with pytest.raises(RuntimeError, match="no timing"):
        cp.cuda.get_elapsed_time(start, end)
    with pytest.raises(RuntimeError, match="no device memory pool"):
        cp.get_default_memory_pool().used_bytes()
    with pytest.raises(NotImplementedError, match="ElementwiseKernel is not emulated"):
        cp.ElementwiseKernel("T x", "T y", "y = x", "copy")
    assert cp.cuda.runtime.getDeviceProperties(0)["name"] == gg.cuda.emulator.DEVICE_NAME


# ----------------------------------------------------------------------------- kernels


def _binary_module():
    return cp.RawModule(code=kernels.kernel_source("binary_backward.cu"), options=kernels.compile_options())


@needs_gxx
def test_raw_kernels_run_their_cuda_source_and_check_the_arguments():
    fn = _binary_module().get_function("multiply_backward_f32")
    g, x, y = (cp.asarray(np.arange(5, dtype=np.float32) + k) for k in (1, 2, 3))
    gx, gy = cp.empty_like(g), cp.empty_like(g)
    fn((3,), (256,), (g, x, y, gx, gy, np.int64(5)))
    assert_close(gx.get(), (g * y).get(), rtol=0, atol=0)
    assert_close(gy.get(), (g * x).get(), rtol=0, atol=0)
    wrong = {
        "Only numpy.ndarrays of size one": (g, x, y, gx, gy, np.arange(2)),
        "a pointer, but got a numpy.ndarray": (g, x, y, gx, np.zeros(1, np.float32), np.int64(5)),
        "pass a NumPy scalar": (g, x, y, gx, gy, 5),
        "8-byte integer": (g, x, y, gx, gy, np.int32(5)),
        "float64": (g, x, y.astype(np.float64), gx, gy, np.int64(5)),
        "takes 6 arguments": (g, x, y, gx, gy),
        "wrote outside": (*(cp.ones(8, np.float32) for _ in range(3)), gx, gy, np.int64(8)),   # n past gx
    }
    for message, args in wrong.items():
        with pytest.raises((TypeError, RuntimeError), match=message):
            fn((1,), (32,), args)
    for grid, block in (((0,), (32,)), ((1,), (2048,)), ((1, 2), (32,))):
        with pytest.raises((ValueError, NotImplementedError)):
            fn(grid, block, (g, x, y, gx, gy, np.int64(5)))
    with pytest.raises(RuntimeError, match="named symbol not found.*multiply_backward_f32"):
        _binary_module().get_function("nope")


@needs_gxx
def test_compile_errors_name_the_file_and_line():
    source = kernels.kernel_source("binary_backward.cu") + "\nthis is not C++;\n"
    with pytest.raises(host_build.CompileException, match=r"kernels/binary_backward\.cu:\d+"):
        cp.RawModule(code=source, options=kernels.compile_options()).compile()


def test_without_gxx_the_error_says_so(monkeypatch):
    monkeypatch.setattr(host_build, "compiler", lambda: None)
    with pytest.raises(RuntimeError, match=r"for the CPU with g\+\+, which is not on PATH: install g\+\+"):
        _binary_module().compile()


@needs_gxx
def test_the_build_cache_follows_included_headers(tmp_path, monkeypatch):
    # the key is the preprocessed text: a change in an included header alone is a new build
    monkeypatch.setenv("GPUGRAD_EMULATOR_CACHE", str(tmp_path / "cache"))
    code = ('#include "value.cuh"\n'
            'extern "C" __global__ void put(long long* out) { if (threadIdx.x == 0) out[0] = VALUE; }\n')
    results = []
    for value in (1, 2):
        (tmp_path / "value.cuh").write_text(f"#define VALUE {value}\n")
        out = cp.zeros(1, np.int64)
        cp.RawKernel(code, "put", options=(f"-I{tmp_path}",))((1,), (1,), (out,))
        results.append(out.item())
    assert results == [1, 2]
    assert len(list((tmp_path / "cache").glob("*.so"))) == 2


# ============================================================================= 2. switching it on


def _python(code: str, *, env_value: str | None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GPUGRAD_EMULATE_CUDA", "PYTHONPATH")}
    if env_value is not None:
        env["GPUGRAD_EMULATE_CUDA"] = env_value
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_it_is_never_on_unless_the_variable_is_set():
    code = ("import sys, gpugrad as gg\n"
            "assert not gg.cuda.is_emulated()\n"
            "assert 'gpugrad.cuda.emulator.namespace' not in sys.modules\n"
            "print('off')")
    for value in (None, "", "0"):
        proc = _python(code, env_value=value)
        assert proc.returncode == 0 and proc.stdout.strip() == "off", (value, proc.stderr)


def test_a_bad_value_says_what_to_set():
    proc = _python("import gpugrad as gg; print(gg.cuda.unavailable_reason())", env_value="yes")
    assert "GPUGRAD_EMULATE_CUDA='yes': set it to 1" in proc.stdout, proc.stderr


@needs_gxx
def test_another_checkout_gets_the_emulator_from_the_installed_package(tmp_path):
    code = ("import gpugrad as gg\n"
            "from gpugrad.cuda.emulator import host_build\n"
            "assert gg.cuda.is_available() and gg.cuda.is_emulated() and host_build.SHIM.is_file()\n"
            "w = gg.randn(3, device='cuda', requires_grad=True)\n"
            "(w.tanh() * w).sum().backward()\n"
            "print(gg.cuda.get_device_name(), w.grad.device, gg.cuda.device_count())")
    proc = _python(code, env_value="2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{gg.cuda.emulator.DEVICE_NAME} cuda:0 2"


@needs_gxx
def test_two_emulated_devices_run_the_two_gpu_tests():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["GPUGRAD_EMULATE_CUDA"] = "2"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "tests/test_cuda.py", "-k", "two_gpus or second_gpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- gpugrad info


@needs_gxx
def test_info_compiles_every_kernel_file_and_says_it_is_the_emulator():
    proc = _python("from gpugrad.cli import main; raise SystemExit(main(['info']))", env_value="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"cuda: {gg.cuda.emulator.DEVICE_NAME}, 1 device(s) (GPUGRAD_EMULATE_CUDA)" in proc.stdout
    for file in sorted({spec.file for spec in kernels.KERNELS.values()}):
        assert f"kernels/{file}: compiles" in proc.stdout


@needs_gxx
def test_info_reports_each_file_that_does_not_compile(tmp_path):
    # Making a RawModule compiles nothing (CuPy compiles on the first get_function): info said
    # "compiles" for kernels it never compiled, a missing header included (issue 11, defect 2)
    code = ("import shutil, sys\n"
            "from pathlib import Path\n"
            "from gpugrad.cuda import kernels\n"
            f"copy = Path({str(tmp_path)!r}) / 'kernels'\n"
            "shutil.copytree(kernels.kernels_dir(), copy)\n"
            "text = (copy / 'activations.cuh').read_text()\n"
            "(copy / 'activations.cuh').write_text(text.replace('#include \"common.cuh\"', "
            "'#include \"common.cuh\"\\n#include \"missing_header.cuh\"'))\n"
            "kernels.kernels_dir = lambda: copy\n"
            "from gpugrad.cli import main\n"
            "raise SystemExit(main(['info']))\n")
    proc = _python(code, env_value="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    uses_it = {"activation_backward.cu", "bias_activation_backward.cu", "bias_activation_forward.cu"}
    for file in sorted({spec.file for spec in kernels.KERNELS.values()}):
        if file in uses_it:
            report = out.split(f"  kernels/{file}: ", 1)[1].split("\n  kernels/", 1)[0]
            assert report.startswith("FAILED to compile: CompileException"), (file, report)
            assert "activations.cuh" in report and "missing_header.cuh" in report, (file, report)
        else:
            assert f"  kernels/{file}: compiles\n" in out, file


# ============================================================================= 3. gpugrad on the emulator


def _step_factories():
    return {
        "SGD": lambda ps: gg.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        "Adam": lambda ps: gg.optim.Adam(ps, lr=1e-2, amsgrad=True),
        "AdamW": lambda ps: gg.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    }


@emulated_run
@pytest.mark.parametrize("optimizer", list(_step_factories()))
def test_a_training_step_reads_nothing_back_from_the_device(optimizer):
    gg.manual_seed(0)
    emb = gg.nn.Embedding(10, 8, device="cuda")
    model = gg.nn.MLP([8, 16, 16, 4], activation="relu", device="cuda")
    params = list(emb.parameters()) + list(model.parameters())
    opt = _step_factories()[optimizer](params)
    idx, target = gg.randint(0, 10, (12,), device="cuda"), gg.randint(0, 4, (12,), device="cuda")

    def step():
        opt.zero_grad()
        h = F.dropout(emb(idx), p=0.2)
        logits = model(h)
        loss = F.cross_entropy(logits, target, label_smoothing=0.1)
        loss = loss + 0.1 * F.nll_loss(F.log_softmax(logits, dim=1), target) + F.gelu(h).mean() * 0.0
        loss.backward()
        opt.step()
        return loss

    step()                                             # first steps build the kernels and the state
    with record_host_reads() as log:
        for _ in range(2):
            loss = step()
    assert log == [], "\n".join(log)
    assert np.isfinite(loss.item())


@emulated_run
def test_tensor_reads_are_counted_on_the_cuda_path():
    t = gg.arange(4.0, device="cuda")
    for read in (t.sum().item, lambda: float(t[1]), lambda: bool(t[1] > 0), t.numpy, t.tolist, t.cpu,
                 lambda: repr(t)):
        before = gg.cuda.emulator.host_read_count()
        read()
        assert gg.cuda.emulator.host_read_count() == before + 1


def test_stream_capture_records_launches_and_refuses_what_a_graph_cannot_hold():
    """The emulated graph: work into out= and kernel launches are recorded, run at each launch on the
    captured arrays; an allocation, a host read and a cuBLAS call end the capture with an error."""
    a, out, keep = cp.arange(4.0), cp.empty(4), cp.empty(4)
    stream = cp.cuda.Stream(non_blocking=True)
    stream.begin_capture()
    cp.multiply(a, 2, out=out)
    out[0] = -1.0
    view = out.reshape(2, 2)                       # a view: metadata, made at once
    cp.copyto(keep, out)                           # writes its first argument (made before): recorded
    graph = stream.end_capture()
    assert len(graph) == 3 and view.shape == (2, 2)
    out.fill(0)
    graph.launch(stream)
    assert out.tolist() == [-1.0, 2.0, 4.0, 6.0] == keep.tolist()
    a[...] = 1.0                                   # the graph reads the array it captured
    graph.launch(stream)
    assert out.tolist() == [-1.0, 2.0, 2.0, 2.0]
    for refused, match in ((lambda: a * 2, "allocated a new array"), (lambda: cp.empty(3), "allocated"),
                           (lambda: a.sum().item(), "allocated|host read")):
        stream.begin_capture()
        with pytest.raises(RuntimeError, match=match):
            refused()
        assert not stream.is_capturing()               # CUDA invalidated the capture
        with pytest.raises(RuntimeError, match=f"cudaErrorStreamCaptureInvalidated: .*({match})"):
            stream.end_capture()
    stream.begin_capture()
    cp.multiply(a, 3, out=out)
    with pytest.raises(NotImplementedError, match="cuBLAS"):
        cp.matmul(a, a)                                # CuPy refuses before CUDA sees it: capture goes on
    assert stream.is_capturing() and len(stream.end_capture()) == 1
