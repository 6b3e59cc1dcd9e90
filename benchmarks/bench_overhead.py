"""Per-op overhead benchmark: gpugrad vs PyTorch on a chain of tiny ops, forward + backward.

    python -m pytest benchmarks/bench_overhead.py --benchmark-only --benchmark-enable

(``--benchmark-enable`` because pyproject.toml's addopts carry ``--benchmark-disable``, which
pytest-benchmark refuses to combine with ``--benchmark-only`` on its own.)

Both benchmarks run the same workload (see benchmarks/compare_overhead.py): N_OPS = 300 ops
cycling ``y + c``, ``y * c``, ``tanh(y)`` on a (4, 4) float32 tensor that requires grad, ``c`` a
constant (4, 4) float32 tensor, then ``y.sum().backward()``. They share the group "overhead",
so pytest-benchmark prints them side by side; ``extra_info`` holds microseconds per op
(one forward + backward divided by N_OPS). PyTorch is skipped when it is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.compare_overhead import (
    N_OPS,
    TORCH_THREADS,
    gpugrad_inputs,
    gpugrad_step,
    torch_inputs,
    torch_step,
)
from gpugrad.testing import assert_close


def _record_per_op(benchmark) -> None:
    benchmark.extra_info["n_ops"] = N_OPS
    meta = benchmark.stats            # None under --benchmark-disable
    if not meta:
        return
    for key in ("min", "median", "mean"):
        benchmark.extra_info[f"us_per_op_{key}"] = round(getattr(meta.stats, key) / N_OPS * 1e6, 3)


@pytest.fixture
def torch_one_thread():
    torch = pytest.importorskip("torch")
    prev = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    yield torch
    torch.set_num_threads(prev)


@pytest.mark.benchmark(group="overhead")
def test_overhead_gpugrad(benchmark):
    x, c = gpugrad_inputs()
    grad = benchmark(gpugrad_step, x, c)
    _record_per_op(benchmark)
    assert grad is not None and grad.shape == x.shape and np.isfinite(grad.data).all()


@pytest.mark.benchmark(group="overhead")
def test_overhead_torch(benchmark, torch_one_thread):
    x, c = torch_inputs()
    benchmark.extra_info["torch_threads"] = TORCH_THREADS
    # same workload: the gradient must match gpugrad's before the timing means anything
    expected = gpugrad_step(*gpugrad_inputs()).data
    grad = benchmark(torch_step, x, c)
    _record_per_op(benchmark)
    assert_close(grad.numpy(), expected, rtol=1e-4, atol=0)
