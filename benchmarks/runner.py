"""One measurement in a process of its own: ``python -m benchmarks.runner WORKLOAD LIB``.

    python -m benchmarks.runner B3 gpugrad [--samples 5] [--target-s 0.2] [--threads 2]
    python -m benchmarks.runner B5 torch [--steps 1000] [--start 100]

benchmarks/compare.py starts one of these per measurement, so that no library runs after
another in the same process (BLAS and OpenMP threads keep spinning after a call and slow
whatever runs next; one library's import-time objects cost another's garbage collections).
It prints one JSON line on stdout.

B1-B4: build the workload in runner LIB (benchmarks/workloads.py's RUNNERS), run its first
unit from the shared initial state (``first_loss``, which the parent compares across
runners), calibrate the repetitions per sample to about ``--target-s`` seconds (warm-up
calls, then the best of three batches), then time ``--samples`` batches, a full garbage
collection before each (outside the timing). Reported: each sample in the workload's unit,
their median, and the share of the machine that other processes used meanwhile.
B5: ``workloads.b5_run`` (peak RSS and RSS growth over B3 steps).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from typing import Any

from benchmarks import machine
from benchmarks import workloads as wl
from benchmarks.compare_overhead import _calibrate


def time_workload(lib: str, wid: str, samples: int = 5, target_s: float = 0.2) -> dict[str, Any]:
    """Time ``samples`` batches of workload ``wid`` (B1-B4) in runner ``lib``, in this process."""
    if samples < 1:
        raise ValueError(f"time_workload: samples must be >= 1, got {samples}")
    step = wl.make_step(lib, wid)
    first_loss = wl.to_float(step())               # the first unit, from the shared initial state
    reps, times, load = timed(step, samples, target_s, wl.SCALE[wid])
    return {"workload": wid, "lib": lib, "first_loss": first_loss, "reps": reps, "samples": times,
            "median": statistics.median(times), "load": load}


def timed(step: Any, samples: int, target_s: float, scale: float, warmup: int = 2) -> tuple[int, list, Any]:
    """(repetitions per sample, ``samples`` times per call in the unit ``scale`` gives, other processes'
    share of the machine): batches calibrated to ``target_s``, a full collection before each."""
    reps = _calibrate(step, target_s, warmup=warmup)
    load = machine.CpuLoad()
    load.start()
    times = []
    for _ in range(samples):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        times.append((time.perf_counter() - t0) / reps * scale)
    return reps, times, load.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=[*wl.WORKLOADS, "B5"])
    parser.add_argument("lib", choices=list(wl.RUNNERS))
    parser.add_argument("--samples", type=int, default=5, help="timed batches (default 5)")
    parser.add_argument("--target-s", type=float, default=0.2, help="seconds per batch (default 0.2)")
    parser.add_argument("--threads", type=int, default=machine.THREADS,
                        help=f"PyTorch and NumPy BLAS threads (default {machine.THREADS})")
    parser.add_argument("--steps", type=int, default=wl.B5_STEPS, help="B5: training steps")
    parser.add_argument("--start", type=int, default=wl.B5_FROM, help="B5: growth is measured from this step")
    args = parser.parse_args(argv)
    runner = wl.RUNNERS[args.lib]
    if not wl.runs(args.lib, args.workload):
        parser.error(f"{runner.label} has no {args.workload}: it runs "
                     f"{', '.join(w for w in wl.WORKLOADS if wl.runs(args.lib, w))}")
    if not wl.available(args.lib):
        parser.error(f"{runner.label} needs {runner.module!r}, which is not installed here")
    if args.lib == "torch":
        import torch  # noqa: F401, PLC0415 - loaded before threadpoolctl's limits, so its threads are set too
    threads = machine.configure_threads(args.threads, torch=args.lib == "torch")
    if runner.module:
        __import__(runner.module)                  # imported before B5's first RSS reading
    if args.workload == "B5":
        result = wl.b5_run(args.lib, args.steps, args.start)
    else:
        result = time_workload(args.lib, args.workload, args.samples, args.target_s)
    result["threads"] = threads
    json.dump(result, sys.stdout)
    print()
    return result


if __name__ == "__main__":
    main()
