"""Where B1's time goes: gpugrad's per-op cost split into forward and backward, beside NumPy's own.

    python -m benchmarks.overhead_split [--reps 50] [--rounds 7]

The chain is B1's (benchmarks/compare_overhead.py): 300 ops cycling ``y + c``, ``y * c``,
``tanh(y)`` on (4, 4) float32. Each column is microseconds per op, the second-best of
``--rounds`` batches of ``--reps`` chains, timed with ``time.process_time`` (CPU time of
this process, so other processes on a shared machine disturb it less than wall time):

- numpy fwd: the same 300 NumPy calls on arrays, no gpugrad (the floor of the forward);
- numpy bwd: the NumPy calls the three VJP rules make (add: none, multiply: ``g * c``,
  tanh: ``g - g * out * out``), the floor of the backward;
- no_grad fwd: gpugrad's forward with recording off (dispatch and Tensor creation);
- fwd: the forward with recording (adds the nodes);
- bwd: ``y.sum().backward()`` alone (the walk, the rules and the final accumulation).

Use it to A/B a change to the hot path: run it before and after, and compare the columns.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import gpugrad as gg
from benchmarks.compare_overhead import N_OPS, gpugrad_inputs


def per_op_us(fn: Callable[[], object], reps: int, rounds: int, *, self_timed: bool = False) -> float:
    """Second-best over ``rounds`` of the CPU time per op of ``reps`` calls of ``fn``.

    With ``self_timed``, ``fn`` returns the CPU seconds of the part it times itself.
    """
    results = []
    for _ in range(rounds):
        own = 0.0
        start = time.process_time()
        for _ in range(reps):
            part = fn()                 # a forward's result (and its graph) is dropped at once
            if self_timed:
                own += part
        elapsed = own if self_timed else time.process_time() - start
        results.append(elapsed / reps / N_OPS * 1e6)
    results.sort()
    return results[1] if len(results) > 1 else results[0]


def measure(reps: int = 50, rounds: int = 7) -> dict[str, float]:
    """The five columns described in the module docstring, in microseconds per op."""
    x, c = gpugrad_inputs()
    xa, ca = x.data, c.data
    cycles = N_OPS // 3

    def numpy_fwd() -> None:
        y = xa
        for _ in range(cycles):
            y = np.tanh(np.multiply(np.add(y, ca), ca))

    def numpy_bwd() -> None:
        g, out = np.ones_like(xa), np.tanh(xa)
        for _ in range(cycles):
            g = g - g * out * out
            g = g * ca

    def forward() -> gg.Tensor:
        y = x
        for _ in range(cycles):
            y = gg.tanh((y + c) * c)
        return y

    def forward_no_grad() -> None:
        with gg.no_grad():
            forward()

    def backward_only() -> float:
        x.grad = None
        loss = forward().sum()
        start = time.process_time()
        loss.backward()
        return time.process_time() - start

    return {
        "numpy fwd": per_op_us(numpy_fwd, reps, rounds),
        "numpy bwd": per_op_us(numpy_bwd, reps, rounds),
        "no_grad fwd": per_op_us(forward_no_grad, reps, rounds),
        "fwd": per_op_us(forward, reps, rounds),
        "bwd": per_op_us(backward_only, reps, rounds, self_timed=True),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=50, help="chains per batch")
    parser.add_argument("--rounds", type=int, default=7, help="batches; the second best is shown")
    args = parser.parse_args(argv)
    cols = measure(args.reps, args.rounds)
    print("| " + " | ".join(cols) + " | fwd + bwd |")
    print("|" + "---:|" * (len(cols) + 1))
    print("| " + " | ".join(f"{v:.2f}" for v in cols.values()) + f" | {cols['fwd'] + cols['bwd']:.2f} |")


if __name__ == "__main__":
    main()
