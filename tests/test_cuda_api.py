"""gg.cuda and the CPU-only cases of the CUDA backend: no CuPy, or CuPy without a GPU (as in CI)."""

import subprocess
import sys
from pathlib import Path

import pytest

import gpugrad as gg

ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(gg.cuda.is_available(), reason="a CUDA device is present")


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
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0.0, 2.0, 4.0]"


def test_import_does_not_import_cupy():
    code = "import sys, gpugrad; print('cupy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_cupy_without_a_driver_is_reported_as_such():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pytest.skip("CuPy is not installed here (CI installs the cuda12 extra to cover this case)")
    if gg.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert "CuPy is installed but cannot use a GPU" in gg.cuda.unavailable_reason()


def test_devices_parse_and_compare():
    assert gg.Device("cuda") == "cuda:0" and str(gg.Device("cuda:1")) == "cuda:1"
    assert gg.device("cpu") == gg.Device("cpu") and gg.ones(1).device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        gg.Device("gpu")
    with pytest.raises(ValueError, match="bad device index"):
        gg.Device("cuda:x")
