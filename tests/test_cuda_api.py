"""gg.cuda and the CPU-only cases of the CUDA backend: no CuPy, or CuPy without a GPU (as in CI)."""

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg

ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(gg.cuda.is_available(), reason="a CUDA device (or the CUDA emulator) is present")
# subprocesses that check CuPy itself run without the CUDA emulator
REAL_CUDA_ENV = {k: v for k, v in os.environ.items() if k != "GPUGRAD_EMULATE_CUDA"}


@no_gpu
def test_without_a_gpu_cuda_is_unavailable_and_says_why():
    assert gg.cuda.is_available() is False and gg.cuda.device_count() == 0
    reason = gg.cuda.unavailable_reason()
    assert reason.startswith("no CUDA device was found")
    with pytest.raises(RuntimeError, match="no CUDA device was found"):
        gg.ones(2).to("cuda")
    with pytest.raises(RuntimeError, match="no CUDA device was found"):
        gg.zeros(2, device="cuda:0")
    with pytest.raises(RuntimeError, match="no CUDA device was found"):
        gg.ones(2).cuda()


def test_import_works_without_cupy():
    code = ("import sys; sys.modules['cupy'] = None\n"       # makes `import cupy` fail
            "import gpugrad as gg\n"
            "assert not gg.cuda.is_available() and gg.cuda.device_count() == 0\n"
            "assert 'CuPy is not installed' in gg.cuda.unavailable_reason()\n"
            "x = gg.arange(3.0, requires_grad=True); (x * x).sum().backward()\n"
            "print(x.grad.tolist())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=REAL_CUDA_ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0.0, 2.0, 4.0]"


def test_import_does_not_import_cupy():
    code = "import sys, gpugrad; print('cupy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=REAL_CUDA_ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_cupy_without_a_driver_is_reported_as_such():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pytest.skip("CuPy is not installed here (CI installs the cuda12 extra to cover this case)")
    if gg.cuda.is_available():
        pytest.skip("a CUDA device (or the CUDA emulator) is present")
    assert "CuPy is installed but cannot use a GPU" in gg.cuda.unavailable_reason()


def test_devices_parse_and_compare():
    assert gg.Device("cuda") == "cuda:0" and str(gg.Device("cuda:1")) == "cuda:1"
    assert gg.device("cpu") == gg.Device("cpu") and gg.ones(1).device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        gg.Device("gpu")
    with pytest.raises(ValueError, match="bad device index"):
        gg.Device("cuda:x")


class _FakeDevice:
    """Stands in for cupy.cuda.Device: records which device each scope made current."""

    entered: list[int] = []

    def __init__(self, index: int) -> None:
        self.id = index

    def __enter__(self) -> None:
        _FakeDevice.entered.append(self.id)

    def __exit__(self, *exc: object) -> None:
        pass


class _FakeGpuArray(np.ndarray):
    """Stands in for cupy.ndarray: a NumPy array with a .device."""

    gpu = 0

    @property
    def device(self) -> _FakeDevice:
        return _FakeDevice(self.gpu)


def _fake_cupy(monkeypatch, n_gpus: int):
    from gpugrad import backend

    fake = types.SimpleNamespace(ndarray=_FakeGpuArray, cuda=types.SimpleNamespace(Device=_FakeDevice))
    monkeypatch.setattr(backend, "_cupy", fake)
    monkeypatch.setattr(backend, "multi_gpu", n_gpus > 1)
    _FakeDevice.entered = []
    return backend, fake


def _on_gpu(index: int, shape=(2,)) -> _FakeGpuArray:
    a = np.zeros(shape).view(_FakeGpuArray)
    a.gpu = index
    return a


def test_common_namespace_and_device_scope_with_one_gpu(monkeypatch):
    backend, fake = _fake_cupy(monkeypatch, n_gpus=1)
    assert backend.common_namespace("add", [_on_gpu(0), _on_gpu(0), 2.0]) is fake
    assert backend.common_namespace("add", [np.zeros(2), 2.0]) is np
    mixed = r"add: tensors on different devices \(cuda:0 \(2,\), cpu \(3,\)\)"
    with pytest.raises(RuntimeError, match=mixed):
        backend.common_namespace("add", [_on_gpu(0), np.zeros(3)])
    with backend.device_scope(_on_gpu(0)):             # the only GPU is always current: no switch
        pass
    assert _FakeDevice.entered == []


def test_common_namespace_and_device_scope_with_several_gpus(monkeypatch):
    backend, fake = _fake_cupy(monkeypatch, n_gpus=2)
    assert backend.common_namespace("mul", [_on_gpu(1), _on_gpu(1)]) is fake
    two_gpus = r"mul: tensors on different devices \(cuda:0 \(2,\), cuda:1 \(2,\)\)"
    with pytest.raises(RuntimeError, match=two_gpus):
        backend.common_namespace("mul", [_on_gpu(0), _on_gpu(1)])
    with backend.device_scope(_on_gpu(1)):
        pass
    with backend.device_scope(np.zeros(2)):            # a host array needs no device
        pass
    assert _FakeDevice.entered == [1]
