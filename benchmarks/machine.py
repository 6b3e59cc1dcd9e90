"""The machine a benchmark runs on: thread limits, the BLAS in use, versions, and how busy it is.

"2 threads" (``THREADS``, the issue's setting): a child process of the comparison gets
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set before it starts
(``child_env``), and sets them again in-process (``configure_threads``): ``torch.set_num_threads``,
and for NumPy's BLAS (which gpugrad, HIPS autograd and the NumPy floor run on)
``threadpoolctl.threadpool_limits`` when threadpoolctl is installed. Elementwise NumPy ufuncs are
single-threaded anyway. jax.jit runs on XLA's own pool, one thread per core unless ``--threads
1`` (then ``XLA_FLAGS`` turns the pool off). Nothing here touches OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE; ``blas_info`` reports which OpenBLAS kernel runs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import time
from typing import Any

THREADS = 2
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

_limits: Any = None               # keeps threadpoolctl's limiter alive


def child_env(threads: int = THREADS, pythonpath: str | None = None) -> dict[str, str]:
    """The environment for a benchmark child process: this one's, with the thread limits set."""
    env = dict(os.environ)
    for var in _THREAD_VARS:
        env[var] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + _XLA_ONE_THREAD).strip()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def configure_threads(n: int = THREADS, *, torch: bool = True) -> dict[str, Any]:
    """Run PyTorch (if installed and ``torch``) and NumPy's BLAS on ``n`` threads; returns what was done."""
    global _limits
    info: dict[str, Any] = {"threads": n}
    if torch and importlib.util.find_spec("torch") is not None:
        import torch as _torch  # noqa: PLC0415 - optional peer

        _torch.set_num_threads(n)
        info["torch_threads"] = _torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        info["numpy_blas"] = "threadpoolctl not installed: NumPy's BLAS on its default threads"
    else:
        _limits = threadpool_limits(limits=n, user_api="blas")
        info["numpy_blas"] = f"threadpoolctl: BLAS limited to {n} threads"
    info["blas"] = blas_info()
    return info


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process (threadpoolctl's view), or [] without it."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - optional
    except ImportError:
        return []
    keep = ("internal_api", "version", "architecture", "num_threads", "prefix")
    return [{k: d.get(k) for k in keep} for d in threadpool_info() if d.get("user_api") == "blas"]


def version(module: str) -> str | None:
    """The installed version of ``module``'s distribution, or None when it is not installed."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def describe(thread_info: dict[str, Any], modules: dict[str, str]) -> list[str]:
    """Markdown lines: the machine, versions (``modules``: label -> module), threads and BLAS kernel."""
    versions = [f"Python {platform.python_version()}"]
    for label, module in modules.items():
        v = version(module)
        versions.append(f"{label} {v}" if v else f"{label} not installed")
    blas = "; ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}, "
                     f"{b['num_threads']} threads"
                     for b in thread_info.get("blas", [])) or "unknown (threadpoolctl not installed)"
    coretype = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return [
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; {', '.join(versions)}",
        f"- threads: {thread_info['threads']} ({', '.join(_THREAD_VARS)} in each child's environment); "
        f"PyTorch {thread_info.get('torch_threads', 'n/a')}; NumPy BLAS: {thread_info['numpy_blas']}; "
        f"jax.jit: XLA's pool, {'1 thread' if thread_info['threads'] == 1 else 'one thread per core'}",
        f"- NumPy BLAS: {blas}; OPENBLAS_CORETYPE/L2_SIZE: {coretype or 'not set'}",
    ]


class CpuLoad:
    """The share of the machine's CPU time that other processes used between ``start`` and ``stop``.

    "Other" excludes this process and the children it has waited for (``os.times``), so a
    parent that runs its measurements in children sees only what the rest of the machine did.
    """

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

    @staticmethod
    def _own_s() -> float:
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
