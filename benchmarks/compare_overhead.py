"""Per-op overhead of gpugrad against PyTorch (CPU), measured interleaved in one process.

    python -m benchmarks.compare_overhead [--rounds 7] [--target-s 0.2]

The workload is a chain of ``N_OPS`` tiny ops, cycling ``y = y + c; y = y * c; y = tanh(y)``
on a (4, 4) float32 tensor ``x`` that requires grad, with ``c`` a constant (4, 4) float32
tensor that does not require grad, then ``y.sum().backward()``. At this size the arithmetic
is negligible, so the time is the framework's per-op cost: dispatch, graph recording and the
backward walk. "us/op" is the time of one whole forward + backward divided by ``N_OPS``
(the final sum and the backward call are amortised into it).

Each round times gpugrad and PyTorch back to back (alternating which goes first) over a
repetition count calibrated to take about ``target_s`` seconds; the table shows the median
over rounds. PyTorch is optional: without it its column reads "n/a". The garbage collector
stays on, as in user code. PyTorch runs on ``TORCH_THREADS`` intra-op threads, matching
NumPy's single-threaded elementwise ufuncs (at (4, 4) PyTorch does not split work anyway).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import gpugrad as gg
from gpugrad.testing import assert_close

N_OPS = 300                 # ops in the chain: N_OPS // 3 cycles of add, mul, tanh
SHAPE = (4, 4)
TORCH_THREADS = 1
WORKLOAD = f"add/mul/tanh chain, {N_OPS} ops, {SHAPE[0]}x{SHAPE[1]} float32, fwd+bwd"


def input_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The starting point ``x`` and the constant ``c`` as float32 arrays.

    With c in [-1.2, -0.8] the chain neither saturates tanh nor lets the gradient underflow:
    after 300 ops every element of dL/dx lies in about [4e-16, 3e-12], normal float32 numbers
    (subnormals would slow the arithmetic down and skew the timing).
    """
    n = SHAPE[0] * SHAPE[1]
    x = np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(SHAPE)
    c = np.linspace(-1.2, -0.8, n, dtype=np.float32).reshape(SHAPE)
    return x, c


# ----------------------------------------------------------------------------- the workload

def gpugrad_inputs() -> tuple[gg.Tensor, gg.Tensor]:
    x, c = input_arrays()
    return gg.tensor(x, requires_grad=True), gg.tensor(c)


def gpugrad_step(x: gg.Tensor, c: gg.Tensor, n_ops: int = N_OPS) -> gg.Tensor:
    """One forward + backward of the chain; returns ``x.grad`` (reset first, so it never accumulates)."""
    x.grad = None
    y = x
    for _ in range(n_ops // 3):
        y = y + c
        y = y * c
        y = gg.tanh(y)
    y.sum().backward()
    return x.grad


def torch_inputs() -> tuple[Any, Any]:
    import torch  # noqa: PLC0415 - optional dependency

    x, c = input_arrays()
    return torch.tensor(x, requires_grad=True), torch.tensor(c)


def torch_step(x: Any, c: Any, n_ops: int = N_OPS) -> Any:
    """The same chain in PyTorch."""
    import torch  # noqa: PLC0415 - optional dependency; a cached import costs ~0.1 us

    x.grad = None
    y = x
    for _ in range(n_ops // 3):
        y = y + c
        y = y * c
        y = torch.tanh(y)
    y.sum().backward()
    return x.grad


def _import_torch() -> Any:
    try:
        import torch  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return torch


# ----------------------------------------------------------------------------- timing

def _calibrate(step: Callable[[], Any], target_s: float, warmup: int = 3) -> int:
    """Repetitions of ``step`` that take about ``target_s`` seconds (at least 1).

    The time per call is the best of three batches, so one slow batch (a full garbage
    collection, another process taking the CPU) does not shrink the repetition count.
    """
    for _ in range(warmup):
        step()
    k = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(k):
            step()
        elapsed = time.perf_counter() - t0
        if elapsed >= min(target_s / 10, 0.02):
            break
        k *= 2
    if target_s <= 0:
        return 1
    per_call = elapsed / k
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(k):
            step()
        per_call = min(per_call, (time.perf_counter() - t0) / k)
    return max(1, round(target_s / per_call))


def _us_per_op(step: Callable[[], Any], reps: int, n_ops: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps / n_ops * 1e6


def measure(rounds: int = 7, *, target_s: float = 0.2, n_ops: int = N_OPS,
            include_torch: bool = True) -> dict:
    """Time gpugrad and (if installed and ``include_torch``) PyTorch, interleaved, ``rounds`` times.

    Returns a dict with the medians in microseconds per op (``gpugrad_us_per_op``,
    ``torch_us_per_op``), their ``ratio`` (gpugrad / PyTorch), the per-round samples and the
    repetition counts; the PyTorch entries are None when it is absent or not requested.
    Before timing, the two frameworks' gradients are checked against each other.
    """
    if rounds < 1 or n_ops < 3 or n_ops % 3:
        raise ValueError("measure: rounds must be >= 1 and n_ops a positive multiple of 3")
    gx, gc = gpugrad_inputs()

    def run_gg() -> Any:
        return gpugrad_step(gx, gc, n_ops)

    runners: dict[str, Callable[[], Any]] = {"gpugrad": run_gg}
    torch = _import_torch() if include_torch else None
    prev_threads = None
    if torch is not None:
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(TORCH_THREADS)
        tx, tc = torch_inputs()

        def run_torch() -> Any:
            return torch_step(tx, tc, n_ops)

        runners["torch"] = run_torch
    try:
        if torch is not None:
            assert_close(run_gg().data, run_torch().numpy(), rtol=1e-4, atol=0,
                         msg="gpugrad and PyTorch disagree on the workload's gradient")
        reps = {name: _calibrate(fn, target_s) for name, fn in runners.items()}
        samples: dict[str, list[float]] = {name: [] for name in runners}
        order = list(runners)
        for _ in range(rounds):
            for name in order:
                samples[name].append(_us_per_op(runners[name], reps[name], n_ops))
            order.reverse()          # alternate who goes first, so neither always runs on a warmer cache
    finally:
        if prev_threads is not None:
            torch.set_num_threads(prev_threads)

    gg_med = statistics.median(samples["gpugrad"])
    t_med = statistics.median(samples["torch"]) if torch is not None else None
    return {
        "workload": WORKLOAD if n_ops == N_OPS else WORKLOAD.replace(f"{N_OPS} ops", f"{n_ops} ops"),
        "n_ops": n_ops,
        "rounds": rounds,
        "gpugrad_us_per_op": gg_med,
        "torch_us_per_op": t_med,
        "ratio": gg_med / t_med if t_med else None,
        "gpugrad_samples_us": samples["gpugrad"],
        "torch_samples_us": samples.get("torch"),
        "reps": {"gpugrad": reps["gpugrad"], "torch": reps.get("torch")},
        "torch_version": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else TORCH_THREADS,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(result: dict) -> str:
    """The markdown table for one ``measure`` result."""
    return "\n".join([
        "| workload | gpugrad us/op (median) | PyTorch us/op (median) | ratio gpugrad/PyTorch |",
        "|---|---:|---:|---:|",
        f"| {result['workload']} | {_fmt(result['gpugrad_us_per_op'], '.2f')} | "
        f"{_fmt(result['torch_us_per_op'], '.2f')} | {_fmt(result['ratio'], '.1f')} |",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--target-s", type=float, default=0.2,
                        help="seconds per framework per round (default 0.2)")
    parser.add_argument("--no-torch", action="store_true", help="time gpugrad only")
    args = parser.parse_args(argv)
    result = measure(args.rounds, target_s=args.target_s, include_torch=not args.no_torch)
    print(format_table(result))
    samples = ", ".join(f"{s:.2f}" for s in result["gpugrad_samples_us"])
    print(f"\ngpugrad samples (us/op): {samples}  [{result['reps']['gpugrad']} reps/round]")
    if result["torch_samples_us"] is not None:
        samples = ", ".join(f"{s:.2f}" for s in result["torch_samples_us"])
        print(f"PyTorch {result['torch_version']} samples (us/op, {result['torch_threads']} thread): "
              f"{samples}  [{result['reps']['torch']} reps/round]")
    else:
        print("PyTorch: not installed or not requested")


if __name__ == "__main__":
    main()
