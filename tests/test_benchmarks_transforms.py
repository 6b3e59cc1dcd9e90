"""benchmarks/transforms.py computes what it claims to (no timing is asserted): the 1,994-parameter loss,
gpugrad's Hessian, HVP and per-example gradients against each other and the NumPy floor, and the report."""

from __future__ import annotations

import numpy as np
import optional

from benchmarks import transforms as tr
from gpugrad.testing import assert_close


def test_the_loss_has_1994_parameters_and_gpugrad_agrees_with_itself():
    _, _, theta, v = tr.mlp_loss_arrays()
    assert theta.shape == (1994,) and theta.dtype == np.float32
    hessian = tr.BUILDERS["gpugrad"]("hessian")()
    hvp = tr.BUILDERS["gpugrad"]("hvp")()
    assert hessian.shape == (1994, 1994) and hessian.dtype == np.float32 and hvp.shape == (1994,)
    assert_close(hessian, hessian.T, atol=1e-6)
    assert_close(hessian @ v, hvp, rtol=1e-4, atol=1e-5)


def test_per_example_gradients_match_the_floor_and_the_loop():
    floor = tr.BUILDERS["floor"]("per_example")()
    vmapped = tr.BUILDERS["gpugrad"]("per_example")()
    shapes = [(128, 256, 784), (128, 256), (128, 10, 256), (128, 10)]
    assert [g.shape for g in vmapped] == shapes and all(g.dtype == np.float32 for g in vmapped)
    for ours, hand in zip(vmapped, floor):
        assert_close(ours, hand, rtol=1e-4, atol=1e-6)
    assert tr.fingerprint(floor) == tr.fingerprint(floor)
    assert_close(tr.fingerprint(vmapped), tr.fingerprint(floor), rtol=tr.FINGERPRINT_RTOL, atol=1e-4)


@optional.needs("torch")
def test_torch_func_runs_the_same_workloads():
    ours = tr.fingerprint(tr.BUILDERS["gpugrad"]("hvp")())
    theirs = tr.fingerprint(tr.BUILDERS["torch"]("hvp")())
    assert_close(ours, theirs, rtol=tr.FINGERPRINT_RTOL)


def test_the_report_checks_every_runner_against_gpugrad():
    def run(median, fp):
        return {"median": median, "load": 0.1, "fingerprint": fp}

    runs = {"T3": {"gpugrad": [run(10.0, [1.0, 2.0])], "gpugrad-loop": [run(250.0, [1.0, 2.0])],
                   "torch": [run(12.0, [1.0, 2.0])], "floor": [run(9.0, [1.0, 3.0])]}}
    text = tr.report(runs, ["gpugrad", "gpugrad-loop", "torch", "floor"], processes=1, samples=2, threads=2)
    assert "| T3 |" in text and "0.83 (target <= 1)" in text and "25.0 (target >= 20)" in text
    assert "CHECK FAILED: T3 floor" in text and "CHECK FAILED: T3 torch" not in text
