"""CPU benchmarks B1-B5: gpugrad beside PyTorch, HIPS autograd, the NumPy floor and jax.jit, one process each.

    python -m benchmarks.compare [--quick] [--processes N] [--only B2 B3] [--libs gpugrad torch] [--out F.md]

Prints a markdown table: id, workload, metric, the median for every runner (gpugrad, PyTorch,
HIPS autograd, the hand-written NumPy floor, jax.jit; benchmarks/workloads.py's RUNNERS), the
ratios gpugrad/PyTorch and gpugrad/floor, the target for gpugrad/PyTorch and whether it is met.
The workloads are in benchmarks/workloads.py (same inputs and initial weights for every
runner, float32, 2 threads: benchmarks/machine.py).

Method. Every measurement is a fresh process, ``python -m benchmarks.runner WORKLOAD LIB``
(benchmarks/runner.py): one workload of one runner, never two libraries in one process, since
BLAS and OpenMP threads keep spinning after each call and slow whatever runs next on a small
machine (PyTorch's B2 step took 2.5 ms alone and 3.8 ms next to a gpugrad step; gpugrad's B3
step doubled after a large-matmul workload in the same process), and one library's import-time
objects cost another's garbage collections. There are ``--processes`` rounds; each round runs
every workload once in every runner, rotating which runner goes first, so slow phases of a
shared machine hit them all alike. Inside its process a measurement checks its first step's
loss (from the shared initial state; the parent compares it with gpugrad's), calibrates
batches of repetitions to about ``--target-s`` seconds and times ``--samples`` of them; its
median is one process's figure. The table shows the median over processes. The garbage
collector stays on, as in user code (a full collection runs before each batch, outside the
timing). A runner that is not installed, or has no such workload (jax.jit runs only the MLP
steps), reads n/a, and the report says why.

B5 runs 1,000 B3 training steps in a fresh process per runner (``python -m benchmarks.runner
B5 LIB``): peak RSS (the child's VmHWM; it includes the interpreter and the library's import)
and the RSS growth from step 100 to step 1000. "No growth" is met when gpugrad grows by at
most ``GROWTH_TOL_MIB``.

The machine is shared: the report says how much CPU other processes (invisible to ``ps`` in a
sandbox) took while the measurements ran. PyTorch's OpenMP workers spin-wait between parallel
regions, so with 2 threads on 2 cores and another process busy its times can grow by 10-100x
(``OMP_WAIT_POLICY=PASSIVE`` in the environment of the command avoids that): look at the load
line before trusting a PyTorch column.

A full run takes several minutes (~100 processes); ``--quick`` (2 processes per cell, short
batches, 300 B5 steps) about a minute, for smoke tests.

Adding a runner is an entry in workloads.RUNNERS; its ratio against its peer is an entry in
``RATIOS`` here. gg.jit's peer is jax.jit (``JIT_TARGETS``: the tiny step at or below it, the
784-512-512-10 step within 1.2x), with gg.jit/PyTorch beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import machine
from benchmarks import workloads as wl

# target for the ratio gpugrad / PyTorch (median), per workload
TARGETS = {"B1": 0.8, "B2": 1.1, "B3": 0.8, "B4": 1.0}
# target for the ratio gg.jit / jax.jit (the compiled steps), per workload
JIT_TARGETS = {"B2": 1.2, "B3": 1.0}
# the ratio columns: (numerator runner, denominator runner); the third is JIT_TARGETS'
RATIOS = (("gpugrad", "torch"), ("gpugrad", "floor"), ("gg-jit", "jax-jit"), ("gg-jit", "torch"))
GROWTH_TOL_MIB = 1.0              # B5: growth step 100 -> 1000 at most this counts as "no growth"
LOSS_RTOL = 1e-3                  # first-step losses must agree this closely
CHILD_TIMEOUT_S = 900
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def libraries(include: tuple[str, ...] | None = None) -> list[str]:
    """The runners to time: gpugrad, and each other runner in ``include`` (default: all) that is installed."""
    return [lib for lib in wl.RUNNERS
            if lib == "gpugrad" or ((include is None or lib in include) and wl.available(lib))]


def left_out(libs: list[str], workloads: tuple[str, ...]) -> list[str]:
    """One line per runner not measured, or measured on only some of ``workloads``, saying why."""
    lines = []
    for lib, runner in wl.RUNNERS.items():
        if lib not in libs:
            why = "not installed" if not wl.available(lib) else "not asked for (--libs)"
            lines.append(f"{runner.label}: {why}")
        elif not all(wl.runs(lib, wid) for wid in workloads):
            has = [wid for wid in workloads if wl.runs(lib, wid)]
            lines.append(f"{runner.label}: runs {', '.join(has) or 'none'} of these ({runner.note})")
    return lines


def run_child(args: list[str], threads: int = machine.THREADS, timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Run ``python -m benchmarks.runner ARGS`` in a fresh process; its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.runner", *args, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=machine.child_env(threads, pythonpath=ROOT))
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:]) or "(no output)"
        raise RuntimeError(f"benchmark process `python -m benchmarks.runner {' '.join(args)}` failed "
                           f"(exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(processes: int = 5, *, samples: int = 5, target_s: float = 0.2,
            workloads: tuple[str, ...] = wl.DEFAULT_WORKLOADS, libs: list[str] | None = None,
            threads: int = machine.THREADS, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time ``workloads`` in ``libs``, each measurement in its own process, ``processes`` rounds.

    Returns ``{wid: {lib: {"median": median over processes, "processes": [each process's
    median], "reps": [...], "loss": first-step loss, "load": [other processes' share],
    "threads": the first process's thread setup}}}`` in each workload's unit; a runner
    without the workload is left out of its entry.
    """
    if processes < 1:
        raise ValueError("measure: processes must be >= 1")
    libs = libraries() if libs is None else libs
    plan = {wid: [lib for lib in libs if wl.runs(lib, wid)] for wid in workloads}
    runs: dict[str, dict[str, list[dict]]] = {wid: {lib: [] for lib in plan[wid]} for wid in workloads}
    for r in range(processes):
        for wid in workloads:
            cell = plan[wid]
            k = r % len(cell) if cell else 0
            for lib in cell[k:] + cell[:k]:
                if progress:
                    progress(f"round {r + 1}/{processes}: {wid} {lib}")
                runs[wid][lib].append(run_child([wid, lib, "--samples", str(samples),
                                                 "--target-s", str(target_s)], threads))
    _check_losses(runs)
    return {wid: {lib: {"median": statistics.median(x["median"] for x in rs),
                        "processes": [x["median"] for x in rs], "reps": [x["reps"] for x in rs],
                        "loss": rs[0]["first_loss"], "load": [x["load"] for x in rs],
                        "threads": rs[0]["threads"]}
                  for lib, rs in by_lib.items()}
            for wid, by_lib in runs.items()}


def _check_losses(runs: dict[str, dict[str, list[dict]]]) -> None:
    """Every process's first loss must equal gpugrad's (one initial state), else the workloads differ."""
    for wid, by_lib in runs.items():
        ref_lib = "gpugrad" if "gpugrad" in by_lib else next(iter(by_lib), None)
        if ref_lib is None:
            continue
        ref = by_lib[ref_lib][0]["first_loss"]
        for lib, rs in by_lib.items():
            for x in rs:
                if not math.isclose(x["first_loss"], ref, rel_tol=LOSS_RTOL, abs_tol=1e-6):
                    raise RuntimeError(f"{wid}: {wl.LIBRARY_NAMES[lib]}'s first loss {x['first_loss']!r} "
                                       f"differs from {wl.LIBRARY_NAMES[ref_lib]}'s {ref!r}: the runners do "
                                       "not compute the same workload")


def measure_b5(libs: list[str] | None = None, steps: int = wl.B5_STEPS, start: int = wl.B5_FROM,
               threads: int = machine.THREADS) -> dict[str, dict[str, Any]]:
    """B5 in a fresh process per runner; ``{lib: the child's JSON}`` (``{"error": ...}`` if it failed)."""
    libs = libraries() if libs is None else libs
    out: dict[str, dict[str, Any]] = {}
    for lib in libs:
        if not wl.runs(lib, "B5"):
            continue
        try:
            out[lib] = run_child(["B5", lib, "--steps", str(steps), "--start", str(start)], threads)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            out[lib] = {"error": str(e).splitlines()[-1]}
    return out


# ----------------------------------------------------------------------------- the table

_FORMATS = {"B1": ".2f", "B2": ".2f", "B3": ".0f", "B4": ".0f", "U1": ".1f", "U2": ".1f"}
RATIO_TITLES = [f"{wl.LIBRARY_NAMES[a]}/{wl.LIBRARY_NAMES[b].replace('NumPy ', '')}" for a, b in RATIOS]
HEADER = ("| id | workload | metric | " + " | ".join(wl.LIBRARY_NAMES.values()) + " | "
          + " | ".join(RATIO_TITLES) + " | target | met? |")
SEPARATOR = "|---|---|---|" + "---:|" * (len(wl.RUNNERS) + len(RATIOS)) + "---|---|"


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _ratio(values: dict[str, float | None], a: str, b: str) -> float | None:
    va, vb = values.get(a), values.get(b)
    return va / vb if va is not None and vb else None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_rows(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None) -> list[str]:
    """Markdown rows (no header) for ``measure`` and ``measure_b5`` results."""
    rows = []
    for wid, results in timings.items():
        spec, fmt = wl.WORKLOADS[wid], _FORMATS[wid]
        values = {lib: results[lib]["median"] if lib in results else None for lib in wl.RUNNERS}
        ratios = [_ratio(values, a, b) for a, b in RATIOS]
        goals = [(ratios[0], TARGETS.get(wid), ""), (ratios[2], JIT_TARGETS.get(wid), "jit ")]
        goals = [g for g in goals if g[1] is not None]
        target = "; ".join(f"{what}<= {t}" for _, t, what in goals) or "-"
        met = "; ".join(f"{what}{'n/a' if r is None else 'yes' if r <= t else 'no'}" for r, t, what in goals)
        rows.append(_row([wid, spec["desc"], spec["metric"], *(_fmt(v, fmt) for v in values.values()),
                          *(_fmt(r, ".2f") for r in ratios), target, met or "-"]))
    if b5 is not None:
        def val(lib: str, key: str) -> float | None:
            entry = b5.get(lib)
            return None if entry is None or "error" in entry else entry[key]

        steps = next((e["steps"] for e in b5.values() if "steps" in e), wl.B5_STEPS)
        start = next((e["start"] for e in b5.values() if "start" in e), wl.B5_FROM)
        what = f"{steps} B3 steps, own process"
        peaks = {lib: val(lib, "peak_rss_mib") for lib in wl.RUNNERS}
        rows.append(_row(["B5", what, "peak RSS, MiB", *(_fmt(v, ".1f") for v in peaks.values()),
                          *(_fmt(_ratio(peaks, a, b), ".2f") for a, b in RATIOS), "-", "-"]))
        growth = {lib: val(lib, "growth_mib") for lib in wl.RUNNERS}
        g = growth["gpugrad"]
        met = "n/a" if g is None else ("yes" if g <= GROWTH_TOL_MIB else "no")
        rows.append(_row(["B5", what, f"RSS growth step {start} -> {steps}, MiB",
                          *(_fmt(v, "+.2f") for v in growth.values()), *("-" for _ in RATIOS),
                          f"no growth (<= {GROWTH_TOL_MIB:g})", met]))
    return rows


def format_table(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None = None) -> str:
    return "\n".join([HEADER, SEPARATOR, *table_rows(timings, b5)])


def beats_autograd(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None) -> str:
    """One line: per workload, whether gpugrad's median is below HIPS autograd's."""
    parts = []
    for wid, results in timings.items():
        g = results["gpugrad"]["median"]
        a = results["autograd"]["median"] if "autograd" in results else None
        parts.append(f"{wid} {'n/a' if a is None else ('yes' if g < a else 'NO')}"
                     + ("" if a is None else f" ({g / a:.2f}x)"))
    ok = b5 and all("error" not in b5.get(lib, {"error": 1}) for lib in ("gpugrad", "autograd"))
    if ok:
        g, a = b5["gpugrad"]["peak_rss_mib"], b5["autograd"]["peak_rss_mib"]
        parts.append(f"B5 peak RSS {'yes' if g < a else 'NO'} ({g / a:.2f}x)")
    return "gpugrad faster than HIPS autograd: " + ", ".join(parts)


def details(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None) -> str:
    """Per workload and runner: the processes' medians, repetitions per sample, and the load meanwhile."""
    lines = ["| id | runner | processes | reps/sample | min | median | max | other processes' CPU |",
             "|---|---|---:|---|---:|---:|---:|---|"]
    for wid, results in timings.items():
        fmt = _FORMATS[wid]
        for lib, r in results.items():
            loads = [x for x in r["load"] if x is not None]
            load = f"{min(loads):.0%} - {max(loads):.0%}" if loads else "unknown"
            lo, hi = min(r["reps"]), max(r["reps"])
            lines.append(f"| {wid} | {wl.LIBRARY_NAMES[lib]} | {len(r['processes'])} | "
                         f"{lo if lo == hi else f'{lo}-{hi}'} | "
                         f"{_fmt(min(r['processes']), fmt)} | {_fmt(r['median'], fmt)} | "
                         f"{_fmt(max(r['processes']), fmt)} | {load} |")
    if b5:
        lines += ["", "| B5 runner | RSS before model, MiB | RSS at start, MiB | RSS at end, MiB | "
                  "us per B3 step | RSS samples (step: MiB) |", "|---|---:|---:|---:|---:|---|"]
        for lib, e in b5.items():
            if "error" in e:
                lines.append(f"| {wl.LIBRARY_NAMES[lib]} | {e['error']} | | | | |")
                continue
            samples = ", ".join(f"{k}: {v:.1f}" for k, v in e["rss_samples_mib"].items())
            lines.append(f"| {wl.LIBRARY_NAMES[lib]} | {e['rss_before_mib']:.1f} | "
                         f"{e['rss_start_mib']:.1f} | {e['rss_end_mib']:.1f} | {e['us_per_step']:.0f} | "
                         f"{samples} |")
    return "\n".join(lines)


def _thread_info(timings: dict[str, Any], threads: int) -> dict[str, Any]:
    """The thread setup the children reported: NumPy's BLAS from a NumPy runner, PyTorch's from PyTorch's."""
    info: dict[str, Any] = {"threads": threads, "numpy_blas": "n/a"}
    for results in timings.values():
        for lib, r in results.items():
            if lib in ("gpugrad", "floor", "autograd") and "blas" not in info:
                info.update({k: r["threads"][k] for k in ("numpy_blas", "blas")})
            if lib == "torch":
                info["torch_threads"] = r["threads"].get("torch_threads")
    return info


def report(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None, *, processes: int, samples: int,
           target_s: float, threads: int, foreign: float | None, libs: list[str], elapsed_s: float) -> str:
    """The whole markdown report: method, machine, load, the table, the details."""
    workloads = tuple(timings)
    child_loads = [x for r in timings.values() for e in r.values() for x in e["load"] if x is not None]
    during = f" ({statistics.median(child_loads):.0%} median during the timed batches)" if child_loads else ""
    load = ("unknown" if foreign is None else f"{foreign:.0%} of the machine over the whole run" + during
            + (" (a busy machine: PyTorch's spinning OpenMP threads suffer most)" if foreign > 0.1 else ""))
    skipped = left_out(libs, workloads)
    return "\n".join([
        f"Each figure: the median over {processes} processes (one per workload and runner, rotating "
        f"order) of each process's median of {samples} batches of ~{target_s:g} s; "
        + "; ".join(f"ratio {t} = {wl.LIBRARY_NAMES[a]} / {wl.LIBRARY_NAMES[b]}"
                    for t, (a, b) in zip(RATIO_TITLES, RATIOS)) + ".",
        "",
        *machine.describe(_thread_info(timings, threads),
                          {"NumPy": "numpy", "PyTorch": "torch", "HIPS autograd": "autograd", "jax": "jax"}),
        "- garbage collector: on, in every process; a full collection before each batch, outside the timing",
        f"- other processes' CPU use: {load}",
        *(f"- not measured: {line}" for line in skipped),
        "",
        format_table(timings, b5),
        "",
        beats_autograd(timings, b5),
        "",
        details(timings, b5),
        "",
        f"(took {elapsed_s:.0f} s)",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 processes per cell, 3 batches of 0.03 s each, 300 B5 steps (about a minute)")
    parser.add_argument("--processes", type=int, default=None,
                        help="processes per workload and runner (default 5, --quick 2)")
    parser.add_argument("--samples", type=int, default=None,
                        help="timed batches per process (default 5, --quick 3)")
    parser.add_argument("--target-s", type=float, default=None,
                        help="seconds per batch (default 0.2, --quick 0.03)")
    parser.add_argument("--threads", type=int, default=machine.THREADS,
                        help=f"PyTorch and NumPy BLAS threads (default {machine.THREADS})")
    parser.add_argument("--no-b5", action="store_true", help="skip the B5 memory processes")
    parser.add_argument("--only", nargs="*", choices=list(wl.WORKLOADS),
                        help="time these workloads (default B1-B4; U1, U2: the optimizer steps alone)")
    parser.add_argument("--libs", nargs="*", choices=list(wl.RUNNERS),
                        help="runners besides gpugrad (default: every one installed)")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    args = parser.parse_args(argv)
    processes = args.processes if args.processes is not None else (2 if args.quick else 5)
    samples = args.samples if args.samples is not None else (3 if args.quick else 5)
    target_s = args.target_s if args.target_s is not None else (0.03 if args.quick else 0.2)

    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    libs = libraries(tuple(args.libs) if args.libs is not None else None)
    load = machine.CpuLoad()
    load.start()
    timings = measure(processes, samples=samples, target_s=target_s, libs=libs, threads=args.threads,
                      workloads=tuple(args.only or wl.DEFAULT_WORKLOADS), progress=progress)
    b5 = None
    if not args.no_b5:
        progress("B5 processes")
        b5 = measure_b5(libs, steps=300 if args.quick else wl.B5_STEPS, threads=args.threads)
    text = report(timings, b5, processes=processes, samples=samples, target_s=target_s, threads=args.threads,
                  foreign=load.stop(), libs=libs, elapsed_s=time.perf_counter() - t0)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
