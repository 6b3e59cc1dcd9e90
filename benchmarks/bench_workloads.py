"""pytest-benchmark suite for the CPU workloads B1-B4, one benchmark per workload and runner.

    python -m pytest benchmarks/bench_workloads.py --benchmark-only --benchmark-enable
    python -m pytest benchmarks/bench_workloads.py --benchmark-only --benchmark-enable -k B3

(``--benchmark-enable`` because pyproject.toml's addopts carry ``--benchmark-disable``.) The
workloads are benchmarks/workloads.py's: the same inputs and initial weights for every
runner (gpugrad, PyTorch, HIPS autograd, the NumPy floor, jax.jit), float32, 2 threads (see
benchmarks/machine.py). Each workload is one pytest-benchmark group ("B1" ... "B4"), so the
runners print side by side; one that is not installed, or has no such workload, is skipped.
``extra_info`` holds the median in the workload's own unit (us per op for B1, ms per step for
B2, ...). All of them run in this one pytest process, one after the other, so a runner's
threads and garbage can slow the next one: for figures to compare (each workload of each
runner in its own process, ratios, targets, B5), run ``python -m benchmarks.compare``.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import machine
from benchmarks import workloads as wl

_configured: dict = {}


@pytest.fixture(scope="module")
def threads() -> dict:
    """Two threads for PyTorch and NumPy's BLAS, once per module (PyTorch imported first if present)."""
    if not _configured:
        if wl.available("torch"):
            import torch  # noqa: F401, PLC0415 - loaded before threadpoolctl's limits
        _configured.update(machine.configure_threads(machine.THREADS))
    return _configured


def _record(benchmark, wid: str) -> None:
    spec = wl.WORKLOADS[wid]
    benchmark.extra_info["workload"] = spec["desc"]
    meta = benchmark.stats             # None under --benchmark-disable
    if meta:
        benchmark.extra_info[spec["metric"].replace(" ", "_") + "_median"] = round(
            meta.stats.median * wl.SCALE[wid], 3)


@pytest.mark.parametrize("lib", wl.LIBRARIES)
@pytest.mark.parametrize("wid", list(wl.WORKLOADS))
def test_workload(benchmark, threads, wid: str, lib: str) -> None:
    if not wl.available(lib):
        pytest.skip(f"{wl.LIBRARY_NAMES[lib]} is not installed")
    if not wl.runs(lib, wid):
        pytest.skip(f"{wl.LIBRARY_NAMES[lib]} has no {wid} ({wl.RUNNERS[lib].note})")
    benchmark.group = wid
    benchmark.name = f"{wid}-{lib}"
    step = wl.make_step(lib, wid)
    step()                                         # the first call builds caches; not timed
    if wid == "B4":                                # 0.1-1 s per call: a few rounds are enough
        loss = benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    else:
        loss = benchmark(step)
    _record(benchmark, wid)
    assert math.isfinite(wl.to_float(loss))
