"""The overhead benchmark computes what it claims to (no timing is asserted anywhere)."""

import numpy as np
import optional
import pytest

from benchmarks import compare, workloads
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


# ----------------------------------------------------------------------------- B1-B5 (workloads.py)
# The workloads that benchmarks/compare.py times must compute the same thing in every library:
# one step from the shared initial state gives the same loss, gradients and updated parameters.


def _assert_same_step(actual: dict, expected: dict, what: str) -> None:
    np.testing.assert_allclose(actual["loss"], expected["loss"], rtol=1e-4, err_msg=f"{what}: loss")
    for key, rtol, scale in (("grads", 1e-3, 1e-4), ("params", 1e-5, 1e-6)):
        assert len(actual[key]) == len(expected[key]), f"{what}: number of {key}"
        for i, (a, e) in enumerate(zip(actual[key], expected[key])):
            assert a.shape == e.shape and a.dtype == np.float32, f"{what}: {key}[{i}] {a.shape} {a.dtype}"
            np.testing.assert_allclose(a, e, rtol=rtol, atol=scale * float(np.abs(e).max()),
                                       err_msg=f"{what}: {key}[{i}]")


@pytest.fixture(scope="module")
def gpugrad_steps() -> dict:
    return {wid: workloads.one_step("gpugrad", wid) for wid in workloads.WORKLOADS}


@pytest.mark.parametrize("wid", list(workloads.WORKLOADS))
def test_workload_matches_torch(wid, gpugrad_steps):
    optional.need("torch")
    _assert_same_step(gpugrad_steps[wid], workloads.one_step("torch", wid), f"{wid} gpugrad vs PyTorch")


@pytest.mark.parametrize("wid", list(workloads.WORKLOADS))
def test_workload_matches_hips_autograd(wid, gpugrad_steps):
    optional.need("autograd")
    _assert_same_step(gpugrad_steps[wid], workloads.one_step("autograd", wid),
                      f"{wid} gpugrad vs HIPS autograd")


def _numpy_chain_grad(x: np.ndarray, a: np.ndarray, m: np.ndarray, n_ops: int) -> np.ndarray:
    """d/dx sum(chain(x)) in float64: y <- tanh((y + a) * m), n_ops // 3 times."""
    x, a, m = (v.astype(np.float64) for v in (x, a, m))
    outs, y = [], x
    for _ in range(n_ops // 3):
        y = np.tanh((y + a) * m)
        outs.append(y)
    g = np.ones_like(x)
    for t in reversed(outs):
        g = g * (1.0 - t * t) * m
    return g


@pytest.mark.parametrize("wid", ["B1", "B4"])
def test_chain_gradients_are_normal_and_right(wid, gpugrad_steps):
    n_ops = workloads.WORKLOADS[wid]["n_ops"]
    expected = _numpy_chain_grad(*workloads.chain_arrays(n_ops), n_ops)
    # every element stays a normal float32: no subnormals to slow the timing, nothing underflows
    assert np.all(np.abs(expected) > 1e3 * np.finfo(np.float32).tiny)
    (grad,) = gpugrad_steps[wid]["grads"]
    np.testing.assert_allclose(grad, expected, rtol=5e-3 if wid == "B4" else 1e-4, atol=0)


def test_mlp_step_repeats_batches_and_trains():
    step = workloads.make_step("gpugrad", "B3")
    losses = [workloads.to_float(step()) for _ in range(3 * workloads.N_BATCHES)]
    assert all(np.isfinite(losses))
    # the same batch comes back every N_BATCHES steps, with a slightly lower loss each time
    first, later = losses[0], losses[2 * workloads.N_BATCHES]
    assert later < first


def test_b5_run_in_process():
    result = workloads.b5_run("gpugrad", steps=12, start=4)
    assert result["steps"] == 12 and result["start"] == 4
    assert result["peak_rss_mib"] >= result["rss_end_mib"] > 0
    assert set(result["rss_samples_mib"]) >= {"4", "12"}
    assert np.isfinite(result["growth_mib"]) and np.isfinite(result["final_loss"])
    with pytest.raises(ValueError, match="start"):
        workloads.b5_run("gpugrad", steps=5, start=5)


def test_compare_measure_and_table_gpugrad_only():
    timings = compare.measure(rounds=1, target_s=0.0, workloads=("B1", "B3"), libs=["gpugrad"])
    assert set(timings) == {"B1", "B3"} and timings["B3"]["gpugrad"]["median"] > 0
    table = compare.format_table(timings)
    lines = table.splitlines()
    assert lines[0] == compare.HEADER and len(lines) == 4
    assert lines[2].startswith("| B1 |") and lines[2].endswith("| n/a | n/a | n/a | <= 0.8 | n/a |")
    assert "B1 n/a" in compare.beats_autograd(timings, None)


def test_compare_table_ratios_and_b5_rows():
    timings = {"B2": {"gpugrad": {"median": 5.0}, "torch": {"median": 4.0}, "autograd": {"median": 10.0}}}
    b5 = {"gpugrad": {"steps": 1000, "start": 100, "peak_rss_mib": 40.0, "growth_mib": 0.5},
          "torch": {"steps": 1000, "start": 100, "peak_rss_mib": 300.0, "growth_mib": 0.0},
          "autograd": {"error": "not installed"}}
    rows = compare.table_rows(timings, b5)
    assert rows[0].endswith("| 5.00 | 4.00 | 10.00 | 1.25 | <= 1.1 | no |")
    assert rows[1] == ("| B5 | 1000 B3 steps, own process | peak RSS, MiB | 40.0 | 300.0 | n/a | 0.13 "
                       "| - | - |")
    assert rows[2].endswith("| +0.50 | +0.00 | n/a | - | no growth (<= 1) | yes |")
    assert "B2 yes (0.50x)" in compare.beats_autograd(timings, b5)


def test_cpu_load_is_a_fraction():
    load = compare.CpuLoad()
    load.start()
    sum(i * i for i in range(10_000))
    foreign = load.stop()
    assert foreign is None or 0.0 <= foreign <= 1.0


def test_overhead_split_reports_every_column(capsys):
    from benchmarks import overhead_split

    overhead_split.main(["--reps", "1", "--rounds", "2"])
    header, _, values = capsys.readouterr().out.strip().splitlines()
    assert header.count("|") == values.count("|") == 7
    numbers = [float(v) for v in values.strip("| ").split(" | ")]
    assert all(v > 0 for v in numbers) and numbers[-1] == pytest.approx(numbers[3] + numbers[4], abs=0.011)
