"""CPU benchmarks B1-B5: gpugrad against PyTorch (CPU) and HIPS autograd, interleaved in one process.

    python -m benchmarks.compare [--rounds N] [--quick] [--out FILE.md]

Prints a markdown table: id, workload, metric, the median for gpugrad, PyTorch and HIPS
autograd, the ratio gpugrad/PyTorch, the target for that ratio and whether it is met. The
workloads are in benchmarks/workloads.py (same inputs and initial weights for every library,
float32, 2 threads).

B1-B4: every round times each workload in each library, one after the other, rotating which
library goes first, so slow phases of this shared machine hit all of them alike; each sample
is a batch of repetitions calibrated to take about ``--target-s`` seconds (at least one call);
the table shows the median over rounds. Before timing, the first step's loss of every library
is checked against gpugrad's (they start from the same state). The garbage collector stays
on, as in user code; a full collection runs before each batch, outside the timing. The objects
alive before timing starts (mostly PyTorch's ~170,000 import-time objects) are frozen with
``gc.freeze`` (``--no-freeze`` turns that off), see ``measure``.

B5 runs 1,000 B3 training steps in a fresh subprocess per library (``python -m
benchmarks.workloads b5 LIB``), so peaks are separate: peak RSS (the child's VmHWM; it includes
the interpreter and the library's import; getrusage's ru_maxrss is also recorded, but Linux
carries it over from this parent across fork + exec, see workloads.b5_run) and the RSS growth
from step 100 to step 1000 (/proc/self/statm). "No growth" is met when gpugrad grows by at most
``GROWTH_TOL_MIB``.

The machine is shared: the report says how much CPU other processes (invisible to ``ps`` in
this sandbox) took while the timings ran. PyTorch's OpenMP workers spin-wait between parallel
regions, so with 2 threads on 2 cores and another process busy, its times can grow by 10-100x
(``OMP_WAIT_POLICY=PASSIVE`` in the environment of the command avoids that); look at the load
line before trusting a PyTorch column.

PyTorch and HIPS autograd are optional: their columns read n/a when missing. A default run
takes about a minute or two; ``--quick`` (3 rounds, short batches, 300 B5 steps) a fraction.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import workloads as wl
from benchmarks.compare_overhead import _calibrate

# target for the ratio gpugrad / PyTorch (median), per workload
TARGETS = {"B1": 0.8, "B2": 1.1, "B3": 0.8, "B4": 1.0}
GROWTH_TOL_MIB = 1.0              # B5: growth step 100 -> 1000 at most this counts as "no growth"
LOSS_RTOL = 1e-3                  # first-step losses must agree this closely before timing


class CpuLoad:
    """The share of the machine's CPU time that other processes used between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ncpu = os.cpu_count() or 1
        self._t0: tuple[float, float, float] | None = None
        self.foreign: float | None = None

    @staticmethod
    def _busy_s(hz: int) -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)       # idle + iowait
        return (sum(fields[:8]) - idle) / hz

    def _own_s(self) -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        busy = self._busy_s(self.hz)
        self._t0 = None if busy is None else (busy, self._own_s(), time.perf_counter())

    def stop(self) -> float | None:
        """Other processes' CPU time as a fraction of all cores' time (0..1), or None without /proc."""
        busy = self._busy_s(self.hz)
        if self._t0 is None or busy is None:
            return None
        b0, o0, w0 = self._t0
        wall = time.perf_counter() - w0
        other = (busy - b0) - (self._own_s() - o0)
        # /proc/stat counts in clock ticks (10 ms), so a short window can read above 1: clamp
        self.foreign = min(1.0, max(0.0, other) / (wall * self.ncpu)) if wall > 0 else None
        return self.foreign


def libraries(include: tuple[str, ...] = wl.LIBRARIES) -> list[str]:
    """The libraries to time: gpugrad and each peer in ``include`` that is installed."""
    return [lib for lib in wl.LIBRARIES if lib == "gpugrad" or (lib in include and wl.available(lib))]


def _time_batch(step: Callable[[], Any], reps: int) -> float:
    """Seconds per call of ``step``, over ``reps`` calls."""
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps


def measure(rounds: int = 9, *, target_s: float = 0.25, workloads: tuple[str, ...] = ("B1", "B2", "B3", "B4"),
            libs: list[str] | None = None, progress: Callable[[str], None] | None = None,
            freeze_gc: bool = True) -> dict[str, Any]:
    """Time ``workloads`` in ``libs`` interleaved over ``rounds`` rounds.

    With ``freeze_gc`` the objects alive once every library is imported and every workload
    built are moved to the garbage collector's permanent generation (``gc.freeze``) for the
    timing: the collector stays on, but its full passes no longer re-scan the ~170,000
    objects that importing PyTorch creates, a cost that a process using only one of these
    libraries does not pay (it hits the libraries whose graphs are Python objects: a full
    pass scans them all, so one B4 chain of gpugrad took ~135 ms instead of ~80 ms).

    Returns ``{wid: {lib: {"median": value in the workload's unit, "samples": [...], "reps": n}}}``.
    """
    if rounds < 1:
        raise ValueError("measure: rounds must be >= 1")
    libs = libraries() if libs is None else libs
    steps: dict[tuple[str, str], Callable[[], Any]] = {}
    reps: dict[tuple[str, str], int] = {}
    for wid in workloads:
        losses = {}
        for lib in libs:
            step = wl.make_step(lib, wid)
            losses[lib] = wl.to_float(step())          # the first step, from the shared initial state
            steps[(wid, lib)] = step
        for lib, loss in losses.items():
            if not math.isclose(loss, losses["gpugrad"], rel_tol=LOSS_RTOL, abs_tol=1e-6):
                raise AssertionError(f"{wid}: {wl.LIBRARY_NAMES[lib]}'s first loss {loss!r} differs from "
                                     f"gpugrad's {losses['gpugrad']!r}: the workloads are not the same")
        for lib in libs:
            if progress:
                progress(f"calibrating {wid} {lib}")
            reps[(wid, lib)] = _calibrate(steps[(wid, lib)], target_s, warmup=2)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    if freeze_gc:
        gc.collect()
        gc.freeze()
    try:
        for r in range(rounds):
            if progress:
                progress(f"round {r + 1}/{rounds}")
            order = libs[r % len(libs):] + libs[:r % len(libs)]
            for wid in workloads:
                for lib in order:
                    seconds = _time_batch(steps[(wid, lib)], reps[(wid, lib)])
                    samples[(wid, lib)].append(seconds * wl.SCALE[wid])
    finally:
        if freeze_gc:
            gc.unfreeze()
    return {wid: {lib: {"median": statistics.median(samples[(wid, lib)]),
                        "samples": samples[(wid, lib)], "reps": reps[(wid, lib)]} for lib in libs}
            for wid in workloads}


def measure_b5(libs: list[str] | None = None, steps: int = wl.B5_STEPS, start: int = wl.B5_FROM,
               timeout: float = 600, threads: int = wl.THREADS) -> dict[str, dict[str, Any]]:
    """B5 in one subprocess per library; ``{lib: the child's JSON}`` (``{"error": ...}`` on failure)."""
    libs = libraries() if libs is None else libs
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out: dict[str, dict[str, Any]] = {}
    for lib in libs:
        cmd = [sys.executable, "-m", "benchmarks.workloads", "b5", lib, "--steps", str(steps),
               "--start", str(start), "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=timeout)
        if proc.returncode != 0:
            out[lib] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            continue
        out[lib] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- the table

_FORMATS = {"B1": ".2f", "B2": ".2f", "B3": ".0f", "B4": ".0f"}
HEADER = ("| id | workload | metric | gpugrad | PyTorch | HIPS autograd | ratio gpugrad/PyTorch | target "
          "| met? |")


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _median(results: dict[str, Any], lib: str) -> float | None:
    entry = results.get(lib)
    return None if entry is None else entry["median"]


def table_rows(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None) -> list[str]:
    """Markdown rows (no header) for ``measure`` and ``measure_b5`` results."""
    rows = []
    for wid, results in timings.items():
        spec, fmt = wl.WORKLOADS[wid], _FORMATS[wid]
        g, t, a = (_median(results, lib) for lib in wl.LIBRARIES)
        ratio = g / t if g is not None and t else None
        met = "n/a" if ratio is None else ("yes" if ratio <= TARGETS[wid] else "no")
        rows.append(f"| {wid} | {spec['desc']} | {spec['metric']} | {_fmt(g, fmt)} | {_fmt(t, fmt)} | "
                    f"{_fmt(a, fmt)} | {_fmt(ratio, '.2f')} | <= {TARGETS[wid]} | {met} |")
    if b5 is not None:
        def val(lib: str, key: str) -> float | None:
            entry = b5.get(lib)
            return None if entry is None or "error" in entry else entry[key]

        steps = next((e["steps"] for e in b5.values() if "steps" in e), wl.B5_STEPS)
        start = next((e["start"] for e in b5.values() if "start" in e), wl.B5_FROM)
        g, t, a = (val(lib, "peak_rss_mib") for lib in wl.LIBRARIES)
        ratio = g / t if g is not None and t else None
        rows.append(f"| B5 | {steps} B3 steps, own process | peak RSS, MiB | {_fmt(g, '.1f')} | "
                    f"{_fmt(t, '.1f')} | {_fmt(a, '.1f')} | {_fmt(ratio, '.2f')} | - | - |")
        g, t, a = (val(lib, "growth_mib") for lib in wl.LIBRARIES)
        met = "n/a" if g is None else ("yes" if g <= GROWTH_TOL_MIB else "no")
        rows.append(f"| B5 | {steps} B3 steps, own process | RSS growth step {start} -> {steps}, MiB | "
                    f"{_fmt(g, '+.2f')} | {_fmt(t, '+.2f')} | {_fmt(a, '+.2f')} | - | "
                    f"no growth (<= {GROWTH_TOL_MIB:g}) | {met} |")
    return rows


def format_table(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None = None) -> str:
    sep = "|---|---|---|---:|---:|---:|---:|---|---|"
    return "\n".join([HEADER, sep, *table_rows(timings, b5)])


def beats_autograd(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None) -> str:
    """One line: per workload, whether gpugrad's median is below HIPS autograd's."""
    parts = []
    for wid, results in timings.items():
        g, a = _median(results, "gpugrad"), _median(results, "autograd")
        parts.append(f"{wid} {'n/a' if a is None else ('yes' if g < a else 'NO')}"
                     + ("" if a is None else f" ({g / a:.2f}x)"))
    if b5 is not None and "autograd" in b5 and "error" not in b5["autograd"] and "error" not in b5.get(
            "gpugrad", {"error": 1}):
        g, a = b5["gpugrad"]["peak_rss_mib"], b5["autograd"]["peak_rss_mib"]
        parts.append(f"B5 peak RSS {'yes' if g < a else 'NO'} ({g / a:.2f}x)")
    return "gpugrad faster than HIPS autograd: " + ", ".join(parts)


def details(timings: dict[str, Any], b5: dict[str, dict[str, Any]] | None) -> str:
    """Per workload and library: repetitions per sample and the spread of the samples."""
    lines = ["| id | library | reps/sample | min | median | max |", "|---|---|---:|---:|---:|---:|"]
    for wid, results in timings.items():
        fmt = _FORMATS[wid]
        for lib, r in results.items():
            lines.append(f"| {wid} | {wl.LIBRARY_NAMES[lib]} | {r['reps']} | "
                         f"{_fmt(min(r['samples']), fmt)} | {_fmt(r['median'], fmt)} | "
                         f"{_fmt(max(r['samples']), fmt)} |")
    if b5:
        lines += ["", "| B5 library | RSS before model, MiB | RSS at start, MiB | RSS at end, MiB | "
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


def environment(thread_info: dict[str, Any]) -> str:
    """Versions, threads and the BLAS kernel, as a few markdown lines."""
    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for lib in ("torch", "autograd"):
        if wl.available(lib):
            try:
                version = importlib.metadata.version(lib)
            except importlib.metadata.PackageNotFoundError:
                version = "?"
            versions.append(f"{wl.LIBRARY_NAMES[lib]} {version}")
        else:
            versions.append(f"{wl.LIBRARY_NAMES[lib]} not installed")
    blas = "; ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}, "
                     f"{b['num_threads']} threads"
                     for b in thread_info.get("blas", [])) or "unknown (threadpoolctl not installed)"
    coretype = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return "\n".join([
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; {', '.join(versions)}",
        f"- threads: PyTorch {thread_info.get('torch_threads', 'n/a')}; "
        f"NumPy BLAS: {thread_info['numpy_blas']}",
        f"- NumPy BLAS: {blas}; OPENBLAS_CORETYPE/L2_SIZE: {coretype or 'not set'}",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 9, --quick 3)")
    parser.add_argument("--target-s", type=float, default=None,
                        help="seconds per sample and library (default 0.25, --quick 0.05)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, short samples, 300 B5 steps")
    parser.add_argument("--threads", type=int, default=wl.THREADS,
                        help=f"PyTorch and NumPy BLAS threads (default {wl.THREADS}, the issue's setting)")
    parser.add_argument("--no-b5", action="store_true", help="skip the B5 memory subprocesses")
    parser.add_argument("--only", nargs="*", choices=list(wl.WORKLOADS), help="time only these of B1-B4")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--no-freeze", action="store_true",
                        help="time without gc.freeze(): full GC passes then re-scan every import-time object")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 9)
    target_s = args.target_s if args.target_s is not None else (0.05 if args.quick else 0.25)

    t0 = time.perf_counter()
    libs = libraries()
    if "torch" in libs:
        import torch  # noqa: F401, PLC0415 - loaded before threadpoolctl's limits
    thread_info = wl.configure_threads(args.threads)

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    load = CpuLoad()
    load.start()
    timings = measure(rounds, target_s=target_s, workloads=tuple(args.only or wl.WORKLOADS), libs=libs,
                      progress=progress, freeze_gc=not args.no_freeze)
    foreign = load.stop()
    b5 = None
    if not args.no_b5:
        progress("B5 subprocesses")
        b5 = measure_b5(libs, steps=300 if args.quick else wl.B5_STEPS, threads=args.threads)
    report = "\n".join([
        f"Medians over {rounds} interleaved rounds ({target_s:g} s samples); ratio = gpugrad / PyTorch.",
        "",
        environment(thread_info),
        "- garbage collector: on; "
        + ("objects alive before timing not frozen (--no-freeze)" if args.no_freeze else
           "objects alive before timing frozen (gc.freeze), so full passes skip the libraries' "
           "import-time objects"),
        "- other processes' CPU use while B1-B4 ran: "
        + ("unknown" if foreign is None else f"{foreign:.0%} of the machine"
           + (" (a busy machine: PyTorch's spinning OpenMP threads suffer most)" if foreign > 0.1 else "")),
        "",
        format_table(timings, b5),
        "",
        beats_autograd(timings, b5),
        "",
        details(timings, b5),
        "",
        f"(took {time.perf_counter() - t0:.0f} s)",
    ])
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
