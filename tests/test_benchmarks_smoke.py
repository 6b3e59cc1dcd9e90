"""The overhead benchmark computes what it claims to (no timing is asserted anywhere)."""

import numpy as np
import pytest

from benchmarks.compare_overhead import (
    N_OPS,
    format_table,
    gpugrad_inputs,
    gpugrad_step,
    input_arrays,
    measure,
)


def _numpy_grad(x: np.ndarray, c: np.ndarray, n_ops: int) -> np.ndarray:
    """d/dx sum(chain(x)), by hand in float64: y <- tanh((y + c) * c), n_ops // 3 times."""
    x, c = x.astype(np.float64), c.astype(np.float64)
    outs = []
    y = x
    for _ in range(n_ops // 3):
        y = np.tanh((y + c) * c)
        outs.append(y)
    g = np.ones_like(x)
    for t in reversed(outs):
        g = g * (1.0 - t * t) * c      # back through tanh, then * c, then + c (identity)
    return g


@pytest.mark.parametrize("n_ops", [3, 12, N_OPS])
def test_workload_gradient_matches_numpy(n_ops):
    x, c = gpugrad_inputs()
    grad = gpugrad_step(x, c, n_ops)
    assert grad is x.grad and grad.dtype == np.float32 and grad.shape == (4, 4)
    expected = _numpy_grad(*input_arrays(), n_ops)
    assert np.all(np.abs(expected) > np.finfo(np.float32).tiny)   # normal float32, no underflow
    np.testing.assert_allclose(grad.data, expected, rtol=1e-4, atol=0)
    # a second step resets x.grad instead of accumulating into it
    np.testing.assert_allclose(gpugrad_step(x, c, n_ops).data, expected, rtol=1e-4, atol=0)


def test_measure_runs_and_formats():
    # PyTorch is left out here: importing it alone takes ~2 s (its path is exercised by
    # benchmarks/bench_overhead.py and by running the script).
    result = measure(rounds=1, target_s=0.0, n_ops=6, include_torch=False)
    assert result["reps"]["gpugrad"] == 1 and len(result["gpugrad_samples_us"]) == 1
    assert result["gpugrad_us_per_op"] > 0
    assert result["torch_us_per_op"] is None and result["ratio"] is None
    table = format_table(result)
    assert table.count("\n") == 2 and "| n/a | n/a |" in table


def test_format_table_with_torch():
    row = format_table({"workload": "w", "gpugrad_us_per_op": 12.345, "torch_us_per_op": 4.0,
                        "ratio": 3.08625}).splitlines()[-1]
    assert row == "| w | 12.35 | 4.00 | 3.1 |"
