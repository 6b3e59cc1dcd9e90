"""The benchmarks compute what they claim to, and the harness runs (no timing is asserted anywhere)."""

import json

import numpy as np
import optional
import pytest

from benchmarks import compare, machine, runner, workloads
from benchmarks.compare_overhead import (
    N_OPS,
    format_table,
    gpugrad_inputs,
    gpugrad_step,
    input_arrays,
    measure,
)
from gpugrad.testing import assert_close


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
    assert_close(grad.data, expected, rtol=1e-4, atol=0, check_dtype=False)      # float64 reference
    # a second step resets x.grad instead of accumulating into it
    assert_close(gpugrad_step(x, c, n_ops).data, expected, rtol=1e-4, atol=0, check_dtype=False)


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
    assert_close(actual["loss"], expected["loss"], rtol=1e-4, msg=f"{what}: loss")
    for key, rtol, scale in (("grads", 1e-3, 1e-4), ("params", 1e-5, 1e-6)):
        assert len(actual[key]) == len(expected[key]), f"{what}: number of {key}"
        for i, (a, e) in enumerate(zip(actual[key], expected[key])):
            assert a.shape == e.shape and a.dtype == np.float32, f"{what}: {key}[{i}] {a.shape} {a.dtype}"
            assert_close(a, e, rtol=rtol, atol=scale * float(np.abs(e).max()),
                                       msg=f"{what}: {key}[{i}]")


@pytest.fixture(scope="module", autouse=True)
def small_updates():
    """U1 and U2 on a (48, 40) weight here: the same code as 4096x4096, without 64 MiB arrays in the tests."""
    with pytest.MonkeyPatch.context() as mp:
        for wid in ("U1", "U2"):
            mp.setitem(workloads.WORKLOADS[wid], "shape", (48, 40))
        yield


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
    if not workloads.runs("autograd", wid):
        pytest.skip(f"HIPS autograd has no {wid} ({workloads.RUNNERS['autograd'].note})")
    _assert_same_step(gpugrad_steps[wid], workloads.one_step("autograd", wid),
                      f"{wid} gpugrad vs HIPS autograd")


@pytest.mark.parametrize("wid", list(workloads.WORKLOADS))
def test_numpy_floor_computes_the_same_step(wid, gpugrad_steps):
    """The floor is the same arithmetic written by hand: same loss, gradients and updated parameters."""
    _assert_same_step(gpugrad_steps[wid], workloads.one_step("floor", wid), f"{wid} gpugrad vs NumPy floor")


@pytest.mark.parametrize("wid", ["B2", "B3"])
def test_jax_jit_computes_the_same_step(wid, gpugrad_steps):
    optional.need("jax")
    _assert_same_step(gpugrad_steps[wid], workloads.one_step("jax-jit", wid), f"{wid} gpugrad vs jax.jit")
    step = workloads.make_step("jax-jit", wid)          # the timed step keeps no gradients, and says so
    step()
    with pytest.raises(RuntimeError, match="keep_grads"):
        step.grads()


@pytest.mark.parametrize("wid", ["B2", "B3"])
def test_gg_jit_steps_equal_gpugrad_steps(wid):
    """The gg.jit runner's steps (the trace, then replays) are gpugrad's eager steps, bit for bit."""
    jitted, eager = workloads.make_step("gg-jit", wid), workloads.make_step("gpugrad", wid)
    for _ in range(5):                          # every batch, and the first again
        assert jitted().item() == eager().item()
    for a, b in zip(jitted.params(), eager.params()):
        assert_close(a, b, rtol=0, atol=0)
    assert jitted.jitted.traces == 2              # the first step found no .grad to clear: traced again


def test_runners_say_what_they_run():
    assert workloads.LIBRARIES == ("gpugrad", "torch", "autograd", "floor", "jax-jit", "gg-jit")
    assert [w for w in workloads.WORKLOADS if workloads.runs("jax-jit", w)] == ["B2", "B3"]
    assert [w for w in workloads.WORKLOADS if workloads.runs("gg-jit", w)] == ["B2", "B3"]
    assert workloads.runs("floor", "B5") and not workloads.runs("jax-jit", "B4")
    with pytest.raises(ValueError, match="has no workload B1"):
        workloads.make_step("jax-jit", "B1")
    with pytest.raises(ValueError, match="unknown runner"):
        workloads.available("tensorflow")
    with pytest.raises(ValueError, match="unknown workload"):
        workloads.runs("gpugrad", "B9")


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
    assert_close(grad, expected, rtol=5e-3 if wid == "B4" else 1e-4, atol=0, check_dtype=False)   # float64


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


def test_runner_times_in_process_and_prints_json(capsys):
    result = runner.main(["B1", "floor", "--samples", "2", "--target-s", "0"])
    assert json.loads(capsys.readouterr().out.strip()) == result
    assert result["workload"] == "B1" and result["lib"] == "floor" and result["reps"] == 1
    assert len(result["samples"]) == 2 and result["median"] > 0 and result["threads"]["threads"] == 2
    assert result["first_loss"] == pytest.approx(workloads.one_step("gpugrad", "B1")["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="samples"):
        runner.time_workload("floor", "B1", samples=0)


def test_runner_refuses_what_it_cannot_run(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        runner.main(["B4", "jax-jit"])
    assert "jax.jit has no B4: it runs B2, B3" in capsys.readouterr().err
    monkeypatch.setattr(workloads, "available", lambda lib: lib != "torch")
    with pytest.raises(SystemExit):
        runner.main(["B3", "torch"])
    assert "needs 'torch', which is not installed" in capsys.readouterr().err


def test_compare_measures_each_runner_in_its_own_process():
    # one process per (workload, runner) and round (the rotation is tested below, without processes)
    timings = compare.measure(1, samples=2, target_s=0.0, workloads=("B3",), libs=["gpugrad", "floor"])
    assert set(timings) == {"B3"} and set(timings["B3"]) == {"gpugrad", "floor"}
    entry = timings["B3"]["gpugrad"]
    assert len(entry["processes"]) == 1 and entry["median"] > 0 and entry["reps"] == [1]
    load = entry["load"][0]
    assert entry["threads"]["threads"] == 2 and (load is None or 0 <= load <= 1)
    assert entry["loss"] == pytest.approx(timings["B3"]["floor"]["loss"], rel=1e-5)
    table = compare.format_table(timings)
    lines = table.splitlines()
    assert lines[0] == compare.HEADER and len(lines) == 3
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    g, f = entry["median"], timings["B3"]["floor"]["median"]
    assert cells[:3] == ["B3", workloads.WORKLOADS["B3"]["desc"], "us per step"]
    assert cells[3:13] == [f"{g:.0f}", "n/a", "n/a", f"{f:.0f}", "n/a", "n/a", "n/a", f"{g / f:.2f}", "n/a",
                           "n/a"]
    assert cells[13:] == ["<= 0.8; jit <= 1.0", "n/a; jit n/a"]
    assert "B3 n/a" in compare.beats_autograd(timings, None)
    with pytest.raises(RuntimeError, match="(?s)benchmarks.runner B9 gpugrad.*invalid choice"):
        compare.run_child(["B9", "gpugrad"])


def test_compare_rotates_the_order_and_takes_the_median_over_processes(monkeypatch):
    calls = []

    def fake_child(args, threads):
        wid, lib = args[:2]
        calls.append((wid, lib))
        n = sum(1 for c in calls if c == (wid, lib))
        return {"median": {1: 5.0, 2: 1.0, 3: 3.0}[n], "reps": n, "first_loss": 2.0, "load": None,
                "threads": {}}

    monkeypatch.setattr(compare, "run_child", fake_child)
    timings = compare.measure(3, workloads=("B1", "B2"), libs=["gpugrad", "floor", "jax-jit"])
    # jax.jit has no B1; each round starts one runner later, and a process never holds two runners
    g, f, j = "gpugrad", "floor", "jax-jit"
    assert calls == [("B1", g), ("B1", f), ("B2", g), ("B2", f), ("B2", j),
                     ("B1", f), ("B1", g), ("B2", f), ("B2", j), ("B2", g),
                     ("B1", g), ("B1", f), ("B2", j), ("B2", g), ("B2", f)]
    assert set(timings["B1"]) == {"gpugrad", "floor"}
    assert timings["B2"][j]["processes"] == [5.0, 1.0, 3.0] and timings["B2"][j]["median"] == 3.0
    assert timings["B2"]["jax-jit"]["reps"] == [1, 2, 3]
    with pytest.raises(ValueError, match="processes"):
        compare.measure(0)


def test_compare_checks_that_every_process_computed_the_same_loss():
    runs = {"B3": {"gpugrad": [{"first_loss": 2.0}], "floor": [{"first_loss": 2.0}, {"first_loss": 2.5}]}}
    with pytest.raises(RuntimeError, match="B3: NumPy floor's first loss 2.5 differs from gpugrad's 2.0"):
        compare._check_losses(runs)
    runs["B3"]["floor"].pop()
    compare._check_losses(runs)


def test_compare_table_ratios_and_b5_rows():
    assert compare.HEADER == ("| id | workload | metric | gpugrad | PyTorch | HIPS autograd | NumPy floor "
                              "| jax.jit | gg.jit | gpugrad/PyTorch | gpugrad/floor | gg.jit/jax.jit | "
                              "gg.jit/PyTorch | target | met? |")
    timings = {"B2": {"gpugrad": {"median": 5.0}, "torch": {"median": 4.0}, "autograd": {"median": 10.0},
                      "floor": {"median": 2.0}, "jax-jit": {"median": 3.0}, "gg-jit": {"median": 2.4}}}
    b5 = {"gpugrad": {"steps": 1000, "start": 100, "peak_rss_mib": 40.0, "growth_mib": 0.5},
          "torch": {"steps": 1000, "start": 100, "peak_rss_mib": 300.0, "growth_mib": 0.0},
          "autograd": {"error": "not installed"}}
    rows = compare.table_rows(timings, b5)
    assert rows[0].endswith("| 5.00 | 4.00 | 10.00 | 2.00 | 3.00 | 2.40 | 1.25 | 2.50 | 0.80 | 0.60 "
                            "| <= 1.1; jit <= 1.2 | no; jit yes |")
    assert rows[1] == ("| B5 | 1000 B3 steps, own process | peak RSS, MiB | 40.0 | 300.0 | n/a | n/a | n/a "
                       "| n/a | 0.13 | n/a | n/a | n/a | - | - |")
    assert rows[2].endswith("| +0.50 | +0.00 | n/a | n/a | n/a | n/a | - | - | - | - "
                            "| no growth (<= 1) | yes |")
    assert "B2 yes (0.50x)" in compare.beats_autograd(timings, b5)


def test_compare_report_says_what_was_left_out():
    threads = {"threads": 2, "numpy_blas": "x", "blas": []}
    timings = {"B1": {"gpugrad": {"median": 3.0, "processes": [3.0, 3.1], "reps": [10, 12], "loss": 1.0,
                                  "load": [0.0, None], "threads": threads}}}
    text = compare.report(timings, None, processes=2, samples=3, target_s=0.03, threads=2, foreign=0.25,
                          libs=["gpugrad"], elapsed_s=1.0)
    assert "median over 2 processes" in text and "other processes' CPU use: 25% of the machine" in text
    assert "| B1 | gpugrad | 2 | 10-12 | 3.00 | 3.00 | 3.10 | 0% - 0% |" in text
    left = compare.left_out(["gpugrad", "floor", "jax-jit"], ("B1", "B2"))
    assert any(line.startswith("jax.jit: runs B2 of these") for line in left)
    assert not any(line.startswith("NumPy floor") for line in left)


def test_cpu_load_is_a_fraction():
    load = machine.CpuLoad()
    load.start()
    sum(i * i for i in range(10_000))
    foreign = load.stop()
    assert foreign is None or 0.0 <= foreign <= 1.0


def test_child_env_sets_the_thread_limits():
    env = machine.child_env(1, pythonpath="/x")
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert "intra_op_parallelism_threads=1" in env["XLA_FLAGS"] and env["PYTHONPATH"].startswith("/x")
    assert "intra_op_parallelism_threads" not in machine.child_env(2).get("XLA_FLAGS", "")


def test_overhead_split_reports_every_column(capsys):
    from benchmarks import overhead_split

    overhead_split.main(["--reps", "1", "--rounds", "2"])
    header, _, values = capsys.readouterr().out.strip().splitlines()
    assert header.count("|") == values.count("|") == 7
    numbers = [float(v) for v in values.strip("| ").split(" | ")]
    assert all(v > 0 for v in numbers) and numbers[-1] == pytest.approx(numbers[3] + numbers[4], abs=0.011)
