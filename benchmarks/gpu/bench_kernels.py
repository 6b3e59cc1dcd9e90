#!/usr/bin/env python3
"""The fused CUDA kernels against a device copy, composed CuPy ops and PyTorch; whole training steps.

    python3 benchmarks/gpu/bench_kernels.py [--out DIR] [--smoke] [--reps 20] [--budget-s 240]

Needs a CUDA GPU and CuPy; PyTorch (CUDA) is optional. Without a usable GPU (the CUDA
emulator is none) it prints ``no CUDA device: <reason>`` and exits 0, so CI can run it as
an import check.

G1, per fused kernel (kernels.KERNELS but NOT_IN_G1), on 2**26 float32 elements (the optimizer kernels on
10M parameters too), each timed with CUDA events, the median of --reps runs after warm-up:

- fused: the kernels.* function (as the backward calls it) and its effective bandwidth,
  the fewest bytes it must move (each input read once, each output written once) / time;
- copy: a device-to-device copy of the same number of bytes (read + written), measured
  just before, by cudaMemcpyAsync and by cupy.copyto (the faster counts): the ceiling.
  frac = fused GB/s / copy GB/s, target >= 0.8;
- cupy: the same VJP composed of CuPy ops, the plain rule with xp = cupy
  (benchmarks/gpu/plain_rules.py): x cupy = cupy time / fused time, target >= 2;
- torch: the same math as PyTorch eager ops (unfused), and, where PyTorch has one, its own
  fused native op (aten::tanh_backward, torch.optim.Adam(fused=True), ...).

Before timing, each row checks that the fused result equals the composed one (and
PyTorch's): the "check" column. A GPU kernel is preceded by ~0.2 ms of GPU busy-work in
every timed run, so the host's launch overhead stays out of the kernel times.

G2: MLP 784-512-512-10, ReLU, cross-entropy, Adam, batch 128: training steps/s, gpugrad
    vs PyTorch eager (the same weights give the same first loss); and the CUDA kernels and
    memory copies one step launches, counted by torch.profiler (CUPTI records every kernel
    of the process, CuPy's included).
G3: the same at batch 8192: steps/s and TFLOP/s (the matmul FLOPs of forward + backward).
G4: 100 tiny ops (add, mul, tanh on 4x4) forward + backward: host microseconds per op.
G5: one Adam step over 10M parameters in 10 tensors: gpugrad vs torch.optim.Adam(fused=True).

The markdown table is printed last and written, with the raw numbers as JSON, to --out
(default: $OUT if set, else ./gpu-results): bench_kernels.md and bench_kernels.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:                    # run as a script: make gpugrad and benchmarks importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import gpugrad as gg  # noqa: E402
from gpugrad import backend  # noqa: E402

F32_BYTES = 4
COLS = 1024                                      # row length of the 2-d kernels (cross-entropy, bias)
MLP_SIZES = (784, 512, 512, 10)
G1_SHARE = 0.6                                   # of the time budget, at most, for the G1 rows
MULTI_PARTS = 10                                 # G1 adam(w)_step_multi: tensors, as in G5
TINY_OPS = 100                                   # G4: 99 chained ops + the final sum
SPIN_US = 200                                    # GPU busy-work before each timed run
TARGET_FRAC, TARGET_SPEEDUP = 0.8, 2.0
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu_tanh", "gelu_erf")   # as kernels.py
# Fused kernels without a G1 row: bias_grad_reduce (the second pass of every bias_*_backward row),
# and kernels/random.cu's generators, which have no composed-CuPy twin to compare bit for bit
# (tests/test_random_keys.py checks them against the host implementation instead).
NOT_IN_G1 = frozenset({"bias_grad_reduce", "threefry_split", "threefry_fold_in", "random_bits",
                       "random_uniform", "random_normal"})
# The G1 rows, most important first (what a training step on CUDA launches, then the rest); the
# time budget skips rows from the end. The optimizer kernels at --opt-params (G5's shape) come
# first, their 2**log2n rows after every other row.
G1_IMPORTANCE = (
    "adam_step_multi", "adamw_step_multi", "sgd_step_multi",              # every optimizer step on CUDA
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",    # F.cross_entropy
    "bias_relu_backward", "bias_tanh_backward", "bias_sigmoid_backward",  # nn.MLP's linear_activation
    "bias_relu_forward", "bias_tanh_forward", "bias_sigmoid_forward",
    "relu_backward", "tanh_backward", "sigmoid_backward", "multiply_backward", "divide_backward",
    "adam_step", "adamw_step", "sgd_step",                                # a parameter on its own
    "gelu_erf_backward", "gelu_tanh_backward", "leaky_relu_backward",     # no op uses these yet
    "bias_gelu_erf_backward", "bias_gelu_tanh_backward", "bias_leaky_relu_backward",
)


# ----------------------------------------------------------------------------- arguments


def default_out() -> str:
    """Where results go by default: the device tool's $OUT when set, else ./gpu-results."""
    return os.environ.get("OUT") or "./gpu-results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_kernels.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=default_out(),
                   help="folder for bench_kernels.md/.json (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and few runs: checks the script works")
    p.add_argument("--reps", type=int, default=None, help="timed runs per measurement (default 20; smoke 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default %(default)s)")
    p.add_argument("--log2n", type=int, default=None,
                   help="elements per kernel = 2**log2n (default 26; smoke 14)")
    p.add_argument("--opt-params", type=int, default=None,
                   help="the optimizer kernels' second size, G5's parameter count (default 10_000_000)")
    p.add_argument("--budget-s", type=float, default=240.0,
                   help="skip what is left once this many seconds have passed (default %(default)s)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--only", default="", help="comma-separated sections to run: g1,g2,g3,g4,g5 (default all)")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 3 if args.smoke else 20
    if args.log2n is None:
        args.log2n = 14 if args.smoke else 26
    if args.opt_params is None:
        args.opt_params = 10_000 if args.smoke else 10_000_000
    sections = {s.strip().lower() for s in args.only.split(",") if s.strip()}
    unknown = sections - {"g1", "g2", "g3", "g4", "g5"}
    if unknown:
        p.error(f"--only: unknown section(s) {sorted(unknown)}; use g1..g5")
    args.sections = sections or {"g1", "g2", "g3", "g4", "g5"}
    return args


# ----------------------------------------------------------------------------- bytes moved


def kernel_bytes(kernel: str, n: int, rows: int = 0, cols: int = 0, itemsize: int = F32_BYTES) -> int:
    """The fewest bytes ``kernel`` must read plus write for n elements (rows x cols for 2-d kernels)."""
    activation = kernel.removeprefix("bias_").removesuffix("_backward")
    if kernel.endswith("_backward") and activation in ACTIVATIONS and kernel.startswith("bias_"):
        # g, saved in; dx out; bias in, db out (small)
        return 3 * n * itemsize + 2 * cols * itemsize
    if kernel.startswith("bias_") and kernel.endswith("_forward"):    # z, bias in; z out, in place
        return 2 * n * itemsize + cols * itemsize
    if kernel in ("multiply_backward", "divide_backward"):
        return 5 * n * itemsize                     # g, a, b in; two gradients out
    if kernel == "softmax_cross_entropy_forward":   # logits, int64 target in; loss, lse out
        return n * itemsize + rows * (8 + 2 * itemsize)
    if kernel == "softmax_cross_entropy_backward":  # logits, target, lse, g in; dlogits out
        return 2 * n * itemsize + rows * (8 + 2 * itemsize)
    if kernel in ("sgd_step", "sgd_step_multi"):    # with momentum: p, g, buf in; p, buf out
        return 5 * n * itemsize
    if kernel in ("adam_step", "adamw_step", "adam_step_multi", "adamw_step_multi"):   # p, g, m, v; p, m, v
        return 7 * n * itemsize
    if kernel.endswith("_backward") and activation in ACTIVATIONS:   # g, saved in; dx out
        return 3 * n * itemsize
    raise ValueError(f"kernel_bytes: no byte count for {kernel!r}")


def mlp_flops(batch: int, sizes: Sequence[int] = MLP_SIZES) -> int:
    """Matmul FLOPs of one training step: forward, dW of every layer, dX of all but the first."""
    weights = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (2 * sum(weights) + sum(weights[1:]))


# ----------------------------------------------------------------------------- tables


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def kernel_table(rows: list[dict[str, Any]]) -> str:
    """The G1 markdown table."""
    head = ("| kernel | n | MB | fused ms | GB/s | copy GB/s | frac (>=0.8) | cupy ms | x cupy (>=2) "
            "| torch ms | x torch | torch native ms | x native | check |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['kernel']} | {r.get('n', '')} | | | | | | | | | | | | {r['skipped']} |")
            continue
        frac, speed = r.get("frac"), r.get("x_cupy")
        low_frac = "" if frac is None or frac >= TARGET_FRAC else " (low)"
        low_speed = "" if speed is None or speed >= TARGET_SPEEDUP else " (low)"
        lines.append(
            f"| {r['kernel']} | {r['n']} | {_fmt(r['bytes'] / 1e6, 4)} | {_fmt(r.get('fused_ms'))} "
            f"| {_fmt(r.get('fused_gbs'), 4)} | {_fmt(r.get('copy_gbs'), 4)} "
            f"| {_fmt(frac, 2)}{low_frac} | {_fmt(r.get('cupy_ms'))} | {_fmt(speed, 3)}{low_speed} "
            f"| {_fmt(r.get('torch_ms'))} | {_fmt(r.get('x_torch'), 3)} | {_fmt(r.get('native_ms'))} "
            f"| {_fmt(r.get('x_native'), 3)} | {r.get('check', '')} |")
    return "\n".join(lines)


def step_table(rows: list[dict[str, Any]]) -> str:
    """The G2-G5 markdown table."""
    lines = ["| benchmark | gpugrad | PyTorch | gpugrad / PyTorch | unit | note |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {_fmt(r.get('gpugrad'), 4)} | {_fmt(r.get('torch'), 4)} "
                     f"| {_fmt(r.get('ratio'), 3)} | {r.get('unit', '')} | {r.get('note', '')} |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    env = result["env"]
    parts = [f"# gpugrad GPU benchmarks, {env['date']}", "",
             f"{env.get('gpu', '?')}; CuPy {env.get('cupy', '?')} "
             f"(CUDA runtime {env.get('cuda_runtime', '?')}, driver {env.get('cuda_driver', '?')}); "
             f"PyTorch {env.get('torch', 'n/a')}; NumPy {env['numpy']}; Python {env['python']}.", ""]
    if result["kernels"]:
        parts += ["## G1: fused kernels (float32; median of "
                  f"{result['args']['reps']} runs; frac = fused GB/s / copy GB/s)", "",
                  kernel_table(result["kernels"]), ""]
    if result["steps"]:
        parts += ["## G2-G5: training steps and overhead", "", step_table(result["steps"]), ""]
    if result["errors"]:
        parts += ["## errors", ""] + [f"- {e}" for e in result["errors"]] + [""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- timing


_SPIN_SRC = r"""
extern "C" __global__ void gg_bench_spin(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}
"""


class Timer:
    """Median GPU times of CuPy or PyTorch work, with CUDA events, after warm-up."""

    def __init__(self, cp: Any, torch: Any | None, reps: int, warmup: int) -> None:
        self.cp, self.torch, self.reps, self.warmup = cp, torch, reps, warmup
        self._spin = cp.RawKernel(_SPIN_SRC, "gg_bench_spin")
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        self._clock_khz = int(props.get("clockRate", 0) or 1_980_000)

    def spin(self) -> None:
        self._spin((1,), (1,), (np.uint64(SPIN_US * 1000),))

    def cupy_ms(self, fn: Callable[[], Any], *, hide_host: bool = True) -> list[float]:
        """GPU milliseconds of fn() per run (hide_host: GPU busy-work first, so launch cost is hidden)."""
        cp = self.cp
        for _ in range(self.warmup):
            fn()
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        samples = []
        for _ in range(self.reps):
            if hide_host:
                self.spin()
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(cp.cuda.get_elapsed_time(start, end))
        return samples

    def torch_ms(self, fn: Callable[[], Any], *, hide_host: bool = True) -> list[float]:
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        samples = []
        for _ in range(self.reps):
            if hide_host:
                torch.cuda._sleep(int(SPIN_US * 1e-6 * self._clock_khz * 1e3))
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        return samples


    def copy_ms(self, nbytes: int) -> tuple[float, str]:
        """Median time of a device-to-device copy moving ``nbytes`` (read + written), the faster way."""
        cp = self.cp
        n = max(1, nbytes // 2 // F32_BYTES)
        src = cp.random.RandomState(1).standard_normal(n, dtype=cp.float32)
        dst = cp.empty_like(src)
        size = src.nbytes
        memcpy = median(self.cupy_ms(lambda: dst.data.copy_from_device_async(src.data, size)))
        copyto = median(self.cupy_ms(lambda: cp.copyto(dst, src)))
        return (memcpy, "cudaMemcpyAsync") if memcpy <= copyto else (copyto, "cupy.copyto")


def median(samples: list[float]) -> float:
    return float(statistics.median(samples))


def _syncs(cp: Any, torch: Any | None, device: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(wait for CuPy's work, wait for PyTorch's work) on ``device`` ("cpu" in the CPU dry runs)."""
    gpu = device != "cpu"
    torch_sync = torch.cuda.synchronize if gpu and torch is not None else (lambda: None)
    return cp.cuda.Device().synchronize, torch_sync


# ----------------------------------------------------------------------------- G1: kernel cases


class Case:
    """One G1 row: the fused call, its composed CuPy twin, PyTorch's versions, and a check."""

    def __init__(self, kernel: str, n: int, nbytes: int, fused: Callable[[], Any], cupy: Callable[[], Any],
                 torch: Callable[[], Any] | None = None, native: Callable[[], Any] | None = None,
                 check: Callable[[], str] | None = None, label: str | None = None) -> None:
        self.kernel, self.n, self.bytes = kernel, n, nbytes
        self.fused, self.cupy, self.torch, self.native, self.check = fused, cupy, torch, native, check
        self.label = label or kernel


def max_rel_err(cp: Any, got: Any, want: Any) -> float:
    """max |got - want| / max(1, max |want|), computed in float64 on the device."""
    got, want = cp.asarray(got).astype(cp.float64), cp.asarray(want).astype(cp.float64)
    if got.shape != want.shape:
        return math.inf
    if got.size == 0:
        return 0.0
    return float(cp.abs(got - want).max() / max(1.0, float(cp.abs(want).max())))


def compare(cp: Any, pairs: list[tuple[str, Any, Any]], tol: float = 1e-4) -> str:
    """'ok', or which results differ by more than ``tol`` (relative to their size)."""
    bad = []
    for name, got, want in pairs:
        err = max_rel_err(cp, got, want)
        if not err <= tol:
            bad.append(f"{name} err {err:.2g}")
    return "ok" if not bad else "MISMATCH: " + "; ".join(bad)


def _as_list(result: Any) -> list[Any]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def g1_cases(cp: Any, torch: Any | None, n: int, opt_sizes: Sequence[int],
             torch_device: str = "cuda") -> list[Callable[[], Case]]:
    """Factories of every G1 case (each allocates its inputs when called, so memory stays bounded).

    tests/test_gpu_scripts.py runs them on the CPU (NumPy for cp, the kernels' CPU emulation,
    torch_device="cpu") to check that every row computes what it claims.
    """
    from benchmarks.gpu import plain_rules as plain  # noqa: PLC0415
    from gpugrad.cuda import kernels  # noqa: PLC0415

    rs = cp.random.RandomState(0)
    T = None if torch is None else torch

    def randn(*shape: int, scale: float = 1.0) -> Any:
        return rs.standard_normal(shape, dtype=cp.float32) * np.float32(scale)

    def tt(a: Any) -> Any:                        # a zero-copy torch view of a CuPy array
        return T.as_tensor(a, device=torch_device)

    def checked(fused: Callable, cupy_fn: Callable, torch_fn: Callable | None, names: Sequence[str]) -> str:
        got, want = _as_list(fused()), _as_list(cupy_fn())
        pairs = [(f"{nm} vs cupy", a, b) for nm, a, b in zip(names, got, want)]
        if torch_fn is not None:
            cp.cuda.Device().synchronize()
            theirs = _as_list(torch_fn())
            pairs += [(f"{nm} vs torch", a, cp.asarray(b)) for nm, a, b in zip(names, got, theirs)]
        return compare(cp, pairs)

    factories: list[Callable[[], Case]] = []

    def add(kernel: str, make: Callable[[], Case], size_rank: int = 0) -> None:
        make.kernel, make.size_rank = kernel, size_rank  # type: ignore[attr-defined]
        factories.append(make)

    # activations: dx from g and the saved output or input
    def torch_activation(act: str, g: Any, s: Any, alpha: float) -> Callable[[], Any]:
        if act == "relu":
            return lambda: g * (s > 0)
        if act == "sigmoid":
            return lambda: g * s * (1 - s)
        if act == "tanh":
            return lambda: g * (1 - s * s)
        if act == "leaky_relu":
            return lambda: T.where(s > 0, g, alpha * g)
        if act == "gelu_tanh":
            def gelu_tanh() -> Any:
                t = T.tanh(math.sqrt(2 / math.pi) * (s + 0.044715 * s * s * s))
                du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * s * s)
                return g * (0.5 * (1 + t) + 0.5 * s * (1 - t * t) * du)
            return gelu_tanh
        def gelu_erf() -> Any:
            cdf = 0.5 * (1 + T.erf(s * (1 / math.sqrt(2))))
            return g * (cdf + s * T.exp(-0.5 * s * s) * (1 / math.sqrt(2 * math.pi)))
        return gelu_erf

    def torch_native_activation(act: str, g: Any, s: Any, alpha: float) -> Callable[[], Any] | None:
        aten = T.ops.aten
        return {
            "relu": lambda: aten.threshold_backward(g, s, 0),
            "sigmoid": lambda: aten.sigmoid_backward(g, s),
            "tanh": lambda: aten.tanh_backward(g, s),
            "leaky_relu": lambda: aten.leaky_relu_backward(g, s, alpha, False),
            "gelu_tanh": lambda: aten.gelu_backward(g, s, approximate="tanh"),
            "gelu_erf": lambda: aten.gelu_backward(g, s, approximate="none"),
        }[act]

    def activation_case(act: str) -> Case:
        alpha = 0.07 if act == "leaky_relu" else 0.0
        x, g = randn(n, scale=2.0), randn(n)
        saved = plain.activation_forward(cp, act, x, alpha) if act in plain.SAVES_OUTPUT else x
        name = f"{act}_backward"
        fused = lambda: kernels.activation_backward(name, g, saved, alpha)  # noqa: E731
        composed = lambda: plain.activation_backward(cp, act, g, saved, alpha)  # noqa: E731
        tfn = native = None
        if T is not None:
            tg, ts = tt(g), tt(saved)
            tfn, native = torch_activation(act, tg, ts, alpha), torch_native_activation(act, tg, ts, alpha)
        return Case(name, n, kernel_bytes(name, n), fused, composed, tfn, native,
                    lambda: checked(fused, composed, tfn, ["dx"]))

    for act in plain.ACTIVATIONS:
        add(f"{act}_backward", lambda act=act: activation_case(act))

    def binary_case(op: str) -> Case:
        g, x = randn(n), randn(n)
        y = rs.uniform(0.5, 2.0, n, dtype=cp.float32)
        name = f"{op}_backward"
        tfn = None
        if op == "multiply":
            fused = lambda: kernels.multiply_backward(g, x, y)  # noqa: E731
            composed = lambda: plain.multiply_backward(cp, g, x, y)  # noqa: E731
            if T is not None:
                tg, tx, ty = tt(g), tt(x), tt(y)
                tfn = lambda: (tg * ty, tg * tx)  # noqa: E731
        else:
            out = x / y
            fused = lambda: kernels.divide_backward(g, y, out)  # noqa: E731
            composed = lambda: plain.divide_backward(cp, g, y, out)  # noqa: E731
            if T is not None:
                tg, ty, to = tt(g), tt(y), tt(out)

                def tfn() -> Any:
                    gx = tg / ty
                    return gx, -gx * to
        return Case(name, n, kernel_bytes(name, n), fused, composed, tfn, None,
                    lambda: checked(fused, composed, tfn, ["grad a", "grad b"]))

    for op in ("multiply", "divide"):
        add(f"{op}_backward", lambda op=op: binary_case(op))

    rows = max(1, n // COLS)
    cols = COLS if n >= COLS else n

    def ce_inputs() -> tuple[Any, Any]:
        x = randn(rows, cols, scale=3.0)
        t = rs.randint(0, cols, size=rows).astype(cp.int64)
        return x, t

    def ce_forward_case() -> Case:
        name = "softmax_cross_entropy_forward"
        x, t = ce_inputs()
        fused = lambda: kernels.cross_entropy_forward(x, t, reduction="none")  # noqa: E731
        composed = lambda: plain.cross_entropy_forward(cp, x, t, reduction="none")  # noqa: E731
        tfn = native = None
        if T is not None:
            tx, tt_ = tt(x), tt(t)

            def tfn() -> Any:
                lse = T.logsumexp(tx, 1)
                return lse - tx.gather(1, tt_[:, None])[:, 0], lse

            native = lambda: T.nn.functional.cross_entropy(tx, tt_, reduction="none")  # noqa: E731
        return Case(name, rows * cols, kernel_bytes(name, rows * cols, rows, cols), fused, composed, tfn,
                    native, lambda: checked(fused, composed, tfn, ["loss", "lse"]),
                    label=f"{name} ({rows}x{cols})")

    def ce_backward_case() -> Case:
        name = "softmax_cross_entropy_backward"
        x, t = ce_inputs()
        g = randn(rows)
        _, lse = kernels.cross_entropy_forward(x, t, reduction="none")
        fused = lambda: kernels.cross_entropy_backward(g, x, t, lse, reduction="none")  # noqa: E731
        composed = lambda: plain.cross_entropy_backward(cp, g, x, t, lse, reduction="none")  # noqa: E731
        tfn = None
        if T is not None:
            tx, tt_, tl, tg = tt(x), tt(t), tt(lse), tt(g)
            ar = T.arange(rows, device=torch_device)

            def tfn() -> Any:
                d = T.exp(tx - tl[:, None])
                d[ar, tt_] -= 1
                d *= tg[:, None]
                return d
        return Case(name, rows * cols, kernel_bytes(name, rows * cols, rows, cols), fused, composed, tfn,
                    None, lambda: checked(fused, composed, tfn, ["dlogits"]), label=f"{name} ({rows}x{cols})")

    add("softmax_cross_entropy_forward", ce_forward_case)
    add("softmax_cross_entropy_backward", ce_backward_case)

    def bias_case(act: str) -> Case:
        name = f"bias_{act}_backward"
        alpha = 0.07 if act == "leaky_relu" else 0.0
        x, g, bias = randn(rows, cols, scale=2.0), randn(rows, cols), randn(cols)
        saved = plain.activation_forward(cp, act, x + bias, alpha) if act in plain.SAVES_OUTPUT else x
        fused = lambda: kernels.bias_activation_backward(act, g, saved, bias, negative_slope=alpha)  # noqa: E731
        composed = lambda: plain.bias_activation_backward(cp, act, g, saved, bias, alpha)  # noqa: E731
        tfn = None
        if T is not None:
            tg, ts, tb = tt(g), tt(saved), tt(bias)
            z = ts if act in plain.SAVES_OUTPUT else None

            def tfn() -> Any:
                dx = torch_activation(act, tg, z if z is not None else ts + tb, alpha)()
                return dx, dx.sum(0)
        return Case(name, rows * cols, kernel_bytes(name, rows * cols, rows, cols), fused, composed, tfn,
                    None, lambda: checked(fused, composed, tfn, ["dx", "db"]),
                    label=f"{name} ({rows}x{cols})")

    for act in plain.ACTIVATIONS:
        add(f"bias_{act}_backward", lambda act=act: bias_case(act))

    def bias_forward_case(act: str) -> Case:
        name = f"bias_{act}_forward"
        z, bias = randn(rows, cols, scale=2.0), randn(cols)
        work = z.copy()                   # the kernel works in place: timed runs reuse this buffer
        fused = lambda: kernels.bias_activation_forward(act, work, bias)  # noqa: E731
        composed = lambda: plain.bias_activation_forward(cp, act, z, bias)  # noqa: E731
        tfn = None
        if T is not None:
            tz, tb, torch_act = tt(z), tt(bias), {"relu": T.relu, "sigmoid": T.sigmoid, "tanh": T.tanh}[act]
            tfn = lambda: torch_act(tz + tb)  # noqa: E731

        def check() -> str:
            work[...] = z                 # from the same product as the others
            return checked(fused, composed, tfn, ["out"])
        return Case(name, rows * cols, kernel_bytes(name, rows * cols, rows, cols), fused, composed, tfn,
                    None, check, label=f"{name} ({rows}x{cols})")

    for act in plain.BIAS_FORWARD_ACTIVATIONS:
        add(f"bias_{act}_forward", lambda act=act: bias_forward_case(act))

    def sgd_case(size: int) -> Case:
        name = "sgd_step"
        lr, mu = 1e-3, 0.9
        p, g, buf = randn(size), randn(size), randn(size)
        fused = lambda: kernels.sgd_step(p, g, buf, lr=lr, momentum=mu)  # noqa: E731
        p2, buf2 = p.copy(), buf.copy()
        composed = lambda: plain.sgd_step(cp, p2, g, buf2, lr=lr, momentum=mu)  # noqa: E731
        tfn = native = None
        if T is not None:
            tp, tg, tb = tt(p.copy()), tt(g), tt(buf.copy())

            def tfn() -> None:                     # torch.optim.SGD's single-tensor path
                tb.mul_(mu).add_(tg)
                tp.add_(tb, alpha=-lr)

            native = _torch_native_optimizer(T, "SGD", tt(p.copy()), tg, lr=lr, momentum=mu)

        def check() -> str:                        # one step from the same state, before any timing
            a, b = [p.copy(), buf.copy()], [p.copy(), buf.copy()]
            kernels.sgd_step(a[0], g, a[1], lr=lr, momentum=mu)
            plain.sgd_step(cp, b[0], g, b[1], lr=lr, momentum=mu)
            pairs = [("param", a[0], b[0]), ("buffer", a[1], b[1])]
            if tfn is not None:
                tfn()
                cp.cuda.Device().synchronize()
                pairs += [("param vs torch", a[0], cp.asarray(tp)), ("buffer vs torch", a[1], cp.asarray(tb))]
            return compare(cp, pairs)

        return Case(name, size, kernel_bytes(name, size), fused, composed, tfn, native, check,
                    label=f"{name} (momentum, {size})")

    def adam_case(size: int, decoupled: bool) -> Case:
        name = "adamw_step" if decoupled else "adam_step"
        b1, b2, lr, wd, eps, step = 0.9, 0.999, 1e-3, 0.01, 1e-8, 10
        kw = dict(step=step, lr=lr, weight_decay=wd, beta1=b1, beta2=b2, eps=eps, decoupled=decoupled)
        p, g = randn(size), randn(size)
        m, v = randn(size, scale=0.1), cp.abs(randn(size, scale=0.1))
        fused = lambda: kernels.adam_step(p, g, m, v, **kw)  # noqa: E731
        state = [p.copy(), m.copy(), v.copy()]
        composed = lambda: plain.adam_step(cp, state[0], g, state[1], state[2], **kw)  # noqa: E731
        tfn = native = None
        if T is not None:
            tp, tg, tm, tv = tt(p.copy()), tt(g), tt(m.copy()), tt(v.copy())
            step_size = lr / (1 - b1 ** step)
            bc2 = math.sqrt(1 - b2 ** step)

            def tfn() -> None:                     # torch.optim.Adam(W)'s single-tensor path
                if decoupled:
                    tp.mul_(1 - lr * wd)
                    grad = tg
                else:
                    grad = tg.add(tp, alpha=wd)
                tm.lerp_(grad, 1 - b1)
                tv.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = (tv.sqrt() / bc2).add_(eps)
                tp.addcdiv_(tm, denom, value=-step_size)

            native = _torch_native_optimizer(T, "AdamW" if decoupled else "Adam", tt(p.copy()), tg, lr=lr,
                                             weight_decay=wd)

        def check() -> str:                        # one step from the same state, before any timing
            a, b = [p.copy(), m.copy(), v.copy()], [p.copy(), m.copy(), v.copy()]
            kernels.adam_step(a[0], g, a[1], a[2], **kw)
            plain.adam_step(cp, b[0], g, b[1], b[2], **kw)
            pairs = [("param", a[0], b[0]), ("exp_avg", a[1], b[1]), ("exp_avg_sq", a[2], b[2])]
            if tfn is not None:
                tfn()
                cp.cuda.Device().synchronize()
                pairs += [(f"{k} vs torch", x, cp.asarray(y))
                          for k, x, y in zip(("param", "exp_avg", "exp_avg_sq"), a, (tp, tm, tv))]
            return compare(cp, pairs)

        return Case(name, size, kernel_bytes(name, size), fused, composed, tfn, native, check,
                    label=f"{name} ({size})")

    def multi_case(name: str, size: int) -> Case:
        # size parameters in MULTI_PARTS tensors, one launch (G5's shape): against one launch per tensor
        parts = [size // MULTI_PARTS] * (MULTI_PARTS - 1) + [size - (MULTI_PARTS - 1) * (size // MULTI_PARTS)]
        if name == "sgd_step_multi":
            kw: dict[str, Any] = dict(lr=1e-3, momentum=0.9)
            tensors = [(randn(k), randn(k), randn(k)) for k in parts]
            multi, single, written = kernels.sgd_step_multi, kernels.sgd_step, {"param": 0, "buf": 2}
        else:
            kw = dict(step=10, lr=1e-3, weight_decay=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                      decoupled=name == "adamw_step_multi")
            tensors = [(randn(k), randn(k), randn(k, scale=0.1), cp.abs(randn(k, scale=0.1)), None)
                       for k in parts]
            multi, single = kernels.adam_step_multi, kernels.adam_step
            written = {"param": 0, "exp_avg": 2, "exp_avg_sq": 3}
        fused = lambda: multi(tensors, **kw)  # noqa: E731

        def one_each() -> None:
            for arrays in tensors:
                single(*arrays, **kw)

        def fresh() -> list[tuple]:               # copies of what the kernels write (not grad, index 1)
            return [tuple(a if i == 1 or a is None else a.copy() for i, a in enumerate(t)) for t in tensors]

        def check() -> str:                        # one step from the same state, before any timing
            a, b = fresh(), fresh()
            multi(a, **kw)
            for arrays in b:
                single(*arrays, **kw)
            return compare(cp, [(f"{k} {i}", x[j], y[j]) for i, (x, y) in enumerate(zip(a, b))
                                for k, j in written.items()], tol=1e-6)

        single_name = name.removesuffix("_multi")
        return Case(name, size, kernel_bytes(name, size), fused, one_each, None, None, check,
                    label=f"{name} ({size} in {MULTI_PARTS} tensors; vs one {single_name} each)")

    for rank, size in enumerate(opt_sizes):
        add("sgd_step", lambda size=size: sgd_case(size), rank)
        add("adam_step", lambda size=size: adam_case(size, False), rank)
        add("adamw_step", lambda size=size: adam_case(size, True), rank)
        for name in ("sgd_step_multi", "adam_step_multi", "adamw_step_multi"):
            add(name, lambda size=size, name=name: multi_case(name, size), rank)
    # most important first: the time budget drops rows from the end
    return sorted(factories, key=lambda f: (f.size_rank, G1_IMPORTANCE.index(f.kernel)))  # type: ignore[attr-defined]


def _torch_native_optimizer(torch: Any, kind: str, param: Any, grad: Any,
                            **kw: Any) -> Callable[[], Any] | None:
    """PyTorch's own fused optimizer step (fused=True) over one tensor, or None where it has none."""
    try:
        p = torch.nn.Parameter(param)
        p.grad = grad
        opt = getattr(torch.optim, kind)([p], fused=True, **kw)
        opt.step()
    except (TypeError, RuntimeError, ValueError):
        return None
    return opt.step


def run_g1(cp: Any, torch: Any | None, timer: Timer, args: argparse.Namespace, deadline: float,
           result: dict[str, Any], device: str = "cuda") -> None:
    n = 1 << args.log2n
    opt_sizes = list(dict.fromkeys([args.opt_params, n]))          # G5's shape first
    pool = cp.get_default_memory_pool()
    sync_cupy, _ = _syncs(cp, torch, device)
    for make in g1_cases(cp, torch, n, opt_sizes, torch_device=device):
        row: dict[str, Any] = {}
        if time.perf_counter() > deadline:
            row.update(kernel=getattr(make, "kernel", "case"), skipped="skipped: time budget")
            result["kernels"].append(row)
            continue
        try:
            case = make()
            row.update(kernel=case.label, n=case.n, bytes=case.bytes)
            row["check"] = case.check() if case.check else ""
            copy, how = timer.copy_ms(case.bytes)
            row.update(copy_ms=copy, copy_how=how, copy_gbs=case.bytes / copy / 1e6)
            samples = timer.cupy_ms(case.fused)
            row.update(fused_ms=median(samples), fused_samples=samples)
            row["fused_gbs"] = case.bytes / row["fused_ms"] / 1e6
            row["frac"] = row["fused_gbs"] / row["copy_gbs"]
            samples = timer.cupy_ms(case.cupy)
            row.update(cupy_ms=median(samples), cupy_samples=samples)
            row["x_cupy"] = row["cupy_ms"] / row["fused_ms"]
            if case.torch is not None:
                sync_cupy()
                samples = timer.torch_ms(case.torch)
                row.update(torch_ms=median(samples), x_torch=median(samples) / row["fused_ms"])
            if case.native is not None:
                samples = timer.torch_ms(case.native)
                row.update(native_ms=median(samples), x_native=median(samples) / row["fused_ms"])
        except Exception as err:  # noqa: BLE001 - one broken row must not lose the others
            row.setdefault("kernel", "?")
            row["check"] = f"ERROR {type(err).__name__}: {err}"
            result["errors"].append(f"G1 {row['kernel']}: {traceback.format_exc(limit=3)}")
        finally:
            case = None
            pool.free_all_blocks()
            if torch is not None and device != "cpu":
                torch.cuda.empty_cache()
        result["kernels"].append(row)
        print(f"  G1 {row.get('kernel')}: fused {_fmt(row.get('fused_ms'))} ms, "
              f"frac {_fmt(row.get('frac'), 2)}, x cupy {_fmt(row.get('x_cupy'), 2)}, "
              f"x torch {_fmt(row.get('x_torch'), 2)}, {row.get('check')}", flush=True)


# ----------------------------------------------------------------------------- G2-G5


def _gg_mlp(batch: int, device: str = "cuda") -> tuple[Any, Any, Any, Any]:
    from gpugrad.nn import functional as F  # noqa: PLC0415

    gg.manual_seed(0)
    model = gg.nn.MLP(list(MLP_SIZES), activation="relu", device=device)
    opt = gg.optim.Adam(model.parameters(), lr=1e-3)
    x = gg.randn(batch, MLP_SIZES[0], device=device)
    t = gg.randint(0, MLP_SIZES[-1], (batch,), device=device)

    def step() -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        return loss
    return model, x, t, step


def _torch_mlp(torch: Any, model: Any, x: Any, t: Any, device: str = "cuda") -> tuple[Any, Callable[[], Any]]:
    """The same MLP in PyTorch, with gpugrad's weights (so the first losses agree), and its step."""
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(MLP_SIZES) - 2:
            layers.append(torch.nn.ReLU())
    tmodel = torch.nn.Sequential(*layers).to(device)
    with torch.no_grad():
        for tp, gp in zip(tmodel.parameters(), model.parameters()):
            tp.copy_(torch.as_tensor(gp.detach().data, device=device))
    opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    tx, tt = torch.as_tensor(x.data, device=device), torch.as_tensor(t.data, device=device)

    def step() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tmodel(tx), tt)
        loss.backward()
        opt.step()
        return loss
    return tmodel, step


def _steps_per_s(sync: Callable[[], None], step: Callable[[], Any], steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - start)


def count_device_events(events: Sequence[Any], steps: int) -> dict[str, float]:
    """Kernels and memory copies/sets per step among profiler ``events`` (those on a CUDA device)."""
    kernels = copies = 0
    for event in events:
        if not str(getattr(event, "device_type", "")).endswith("CUDA"):
            continue
        if str(event.name).lower().startswith(("memcpy", "memset")):
            copies += 1
        else:
            kernels += 1
    return {"kernels": kernels / steps, "copies": copies / steps}


def launches_per_step(torch: Any, step: Callable[[], Any], sync: Callable[[], None],
                      steps: int = 5) -> dict[str, float] | None:
    """CUDA kernels and copies per call of ``step``, seen by torch.profiler; None without it."""
    try:
        from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415
    except ImportError:
        return None
    step()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    return count_device_events(prof.events(), steps)


def launch_row(name: str, torch: Any, ours: Callable[[], Any], theirs: Callable[[], Any],
               sync: Callable[[], None]) -> dict[str, Any]:
    """The row of kernels per training step, gpugrad's ``ours`` against PyTorch's ``theirs``."""
    row: dict[str, Any] = dict(name=f"{name}: CUDA kernels per training step",
                               unit="kernels (lower is better)")
    try:
        counts = {"gpugrad": launches_per_step(torch, ours, sync),
                  "torch": launches_per_step(torch, theirs, sync)}
    except Exception as err:  # noqa: BLE001 - the profiler is optional here
        return row | dict(note=f"profiler failed ({type(err).__name__}: {err})")
    if counts["gpugrad"] is None or counts["torch"] is None:
        return row | dict(note="torch.profiler unavailable")
    mine, peer = counts["gpugrad"], counts["torch"]
    note = f"memory copies/sets per step: gpugrad {mine['copies']:g}, torch {peer['copies']:g}"
    if not mine["kernels"]:
        note += "; no gpugrad kernel seen: the profiler missed CuPy's launches"
    return row | dict(gpugrad=mine["kernels"], torch=peer["kernels"], note=note,
                      ratio=mine["kernels"] / peer["kernels"] if peer["kernels"] else None)


def run_mlp(cp: Any, torch: Any | None, batch: int, steps: int, warmup: int, name: str,
            with_flops: bool, device: str = "cuda", count_launches: bool = False) -> list[dict[str, Any]]:
    from gpugrad.nn import functional as F  # noqa: PLC0415

    model, x, t, step = _gg_mlp(batch, device)
    note = "ReLU, cross-entropy, Adam"
    tstep = None
    if torch is not None:
        _, tstep = _torch_mlp(torch, model, x, t, device)
        with gg.no_grad():
            ours = float(F.cross_entropy(model(x), t).item())
        theirs = float(tstep().item())                    # same weights: the same first loss
        note += f"; first loss {ours:.5f} vs torch {theirs:.5f}"
        if not math.isclose(ours, theirs, rel_tol=1e-4):
            note += " MISMATCH"
    sync_cupy, sync_torch = _syncs(cp, torch, device)
    ours_sps = _steps_per_s(sync_cupy, step, steps, warmup)
    theirs_sps = _steps_per_s(sync_torch, tstep, steps, warmup) if tstep else None
    rows = [dict(name=f"{name}: MLP 784-512-512-10 step, batch {batch}", gpugrad=ours_sps, torch=theirs_sps,
                 ratio=None if theirs_sps is None else ours_sps / theirs_sps, unit="steps/s", note=note)]
    if count_launches and tstep is not None and device == "cuda":
        rows.append(launch_row(name, torch, step, tstep, lambda: (sync_cupy(), sync_torch())))
    if with_flops:
        flops = mlp_flops(batch)
        rows.append(dict(name=f"{name}: matmul TFLOP/s at batch {batch}", gpugrad=ours_sps * flops / 1e12,
                         torch=None if theirs_sps is None else theirs_sps * flops / 1e12,
                         ratio=None if theirs_sps is None else ours_sps / theirs_sps, unit="TFLOP/s",
                         note=f"{flops / 1e9:.2f} GFLOP per step (fwd + dW + dX but the first layer's)"))
    return rows


def run_tiny_ops(cp: Any, torch: Any | None, reps: int, device: str = "cuda") -> dict[str, Any]:
    """G4: host microseconds per op of a chain of tiny ops (forward + backward) on CUDA."""
    rng = np.random.default_rng(0)
    xh = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
    ch = rng.uniform(-1.2, -0.8, (4, 4)).astype(np.float32)
    n_chain = TINY_OPS - 1

    def chain(x: Any, c: Any, tanh: Callable[[Any], Any]) -> Any:
        y = x
        for i in range(n_chain):
            y = (y + c) if i % 3 == 0 else (y * c) if i % 3 == 1 else tanh(y)
        return y.sum()

    x = gg.tensor(xh, device=device, requires_grad=True)
    c = gg.tensor(ch, device=device)
    sync_cupy, sync_torch = _syncs(cp, torch, device)

    def ours() -> None:
        x.grad = None
        chain(x, c, gg.tanh).backward()

    def per_op_us(fn: Callable[[], None], sync: Callable[[], None]) -> float:
        for _ in range(5):
            fn()
        sync()
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        sync()
        return median(samples) / TINY_OPS * 1e6

    row = dict(name=f"G4: {TINY_OPS} tiny ops (4x4 add/mul/tanh) fwd+bwd",
               unit="host us/op (lower is better)", gpugrad=per_op_us(ours, sync_cupy),
               torch=None, ratio=None)
    if torch is not None:
        tx = torch.tensor(xh, device=device, requires_grad=True)
        tc = torch.tensor(ch, device=device)

        def theirs() -> None:
            tx.grad = None
            chain(tx, tc, torch.tanh).backward()

        row["torch"] = per_op_us(theirs, sync_torch)
        row["ratio"] = row["gpugrad"] / row["torch"]
    return row


def run_adam_10m(cp: Any, torch: Any | None, timer: Timer, n_params: int,
                 device: str = "cuda") -> dict[str, Any]:
    """G5: one optimizer step over n_params float32 parameters in 10 tensors, GPU time per step."""
    sizes = [n_params // 10] * 9 + [n_params - 9 * (n_params // 10)]
    gg.manual_seed(0)
    params = [gg.randn(s, device=device, requires_grad=True) for s in sizes]
    for p in params:
        p.grad = gg.randn(p.shape[0], device=device)
    opt = gg.optim.Adam(params, lr=1e-3)
    ours = median(timer.cupy_ms(opt.step, hide_host=False))
    row = dict(name=f"G5: Adam step, {n_params / 1e6:g}M params in 10 tensors", gpugrad=ours, torch=None,
               ratio=None, unit="ms/step (lower is better)",
               note=f"gpugrad {7 * F32_BYTES * n_params / ours / 1e6:.0f} GB/s effective; "
                    "vs torch.optim.Adam(fused=True)")
    if torch is not None:
        tparams = [torch.nn.Parameter(torch.as_tensor(p.detach().data, device=device).clone())
                   for p in params]
        for tp, p in zip(tparams, params):
            tp.grad = torch.as_tensor(p.grad.data, device=device).clone()
        try:
            topt = torch.optim.Adam(tparams, lr=1e-3, fused=True)
        except (RuntimeError, TypeError, ValueError) as err:
            row["note"] += f" (fused=True refused: {err}; the default implementation instead)"
            topt = torch.optim.Adam(tparams, lr=1e-3)
        row["torch"] = median(timer.torch_ms(topt.step, hide_host=False))
        row["ratio"] = ours / row["torch"]
    return row


# ----------------------------------------------------------------------------- main


def environment(cp: Any | None, torch: Any | None) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.timezone.utc)
    env: dict[str, Any] = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
                           "numpy": np.__version__, "gpugrad": gg.__version__}
    if cp is not None:
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        env.update(gpu=name.decode() if isinstance(name, bytes) else str(name), cupy=cp.__version__,
                   cuda_runtime=cp.cuda.runtime.runtimeGetVersion(),
                   cuda_driver=cp.cuda.runtime.driverGetVersion(), sms=props.get("multiProcessorCount"),
                   memory_gib=round(props["totalGlobalMem"] / 2**30, 1))
    if torch is not None:
        env["torch"] = torch.__version__
    return env


def load_torch(disabled: bool) -> tuple[Any | None, str]:
    """PyTorch with CUDA, or None and why not."""
    if disabled:
        return None, "--no-torch"
    try:
        import torch  # noqa: PLC0415
    except ImportError as err:
        return None, f"PyTorch is not installed ({err})"
    if not torch.cuda.is_available():
        return None, "PyTorch has no CUDA device"
    return torch, ""


def write_results(result: dict[str, Any], out: str) -> Path:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_kernels.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    (folder / "bench_kernels.md").write_text(markdown(result), encoding="utf-8")
    return folder


def run_all(cp: Any, torch: Any | None, timer: Any, args: argparse.Namespace, result: dict[str, Any],
            deadline: float, device: str = "cuda") -> None:
    """Every section asked for, into ``result`` (device="cpu": tests/test_gpu_scripts.py's dry run)."""
    if "g1" in args.sections:
        print(f"G1: fused kernels on 2**{args.log2n} float32 elements", flush=True)
        # G1 may take 60% of what is left, so the G2-G5 workloads always get their turn
        now = time.perf_counter()
        run_g1(cp, torch, timer, args, min(deadline, now + G1_SHARE * (deadline - now)), result, device)
    smoke = args.smoke
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("g2", lambda: run_mlp(cp, torch, 128, 5 if smoke else 100, 2 if smoke else 10, "G2", False, device,
                               count_launches=True)),
        ("g3", lambda: run_mlp(cp, torch, 512 if smoke else 8192, 3 if smoke else 20, 1 if smoke else 3, "G3",
                               True, device)),
        ("g4", lambda: [run_tiny_ops(cp, torch, 5 if smoke else 50, device)]),
        ("g5", lambda: [run_adam_10m(cp, torch, timer, args.opt_params, device)]),
    ]
    for key, fn in sections:
        if key not in args.sections:
            continue
        if time.perf_counter() > deadline:
            result["steps"].append(dict(name=key.upper(), note="skipped: time budget"))
            continue
        try:
            rows = fn()
        except Exception:  # noqa: BLE001 - report and go on
            result["errors"].append(f"{key.upper()}: {traceback.format_exc(limit=4)}")
            rows = [dict(name=key.upper(), note="ERROR (see errors)")]
        finally:
            cp.get_default_memory_pool().free_all_blocks()
        result["steps"].extend(rows)
        for r in rows:
            print(f"  {r['name']}: gpugrad {_fmt(r.get('gpugrad'), 4)}, torch {_fmt(r.get('torch'), 4)} "
                  f"{r.get('unit', '')} {r.get('note', '')}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; 0 unless a correctness check failed (1). No GPU: say why, exit 0."""
    args = parse_args(argv)
    reason = gg.cuda.unavailable_reason()
    if reason is None and gg.cuda.is_emulated():
        reason = "GPUGRAD_EMULATE_CUDA is set: 'cuda' is gpugrad's CPU emulator, which has no timing"
    if reason is not None:
        print(f"no CUDA device: {reason}")
        return 0
    cp = backend.load_cupy()
    torch, why_not = load_torch(args.no_torch)
    if torch is None:
        print(f"PyTorch columns left out: {why_not}")
    started = time.perf_counter()
    deadline = started + args.budget_s
    result: dict[str, Any] = {"env": environment(cp, torch),
                              "args": {k: v for k, v in vars(args).items() if k != "sections"},
                              "kernels": [], "steps": [], "errors": []}
    timer = Timer(cp, torch, args.reps, args.warmup)
    run_all(cp, torch, timer, args, result, deadline)
    result["seconds"] = round(time.perf_counter() - started, 1)
    folder = write_results(result, args.out)
    print()
    print(markdown(result))
    print(f"(written to {folder / 'bench_kernels.md'} and bench_kernels.json in {result['seconds']} s)")
    failed = [r for r in result["kernels"] if str(r.get("check", "")).startswith(("MISMATCH", "ERROR"))]
    failed += [r for r in result["steps"] if "MISMATCH" in str(r.get("note", ""))]
    return 1 if failed or result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
