#!/usr/bin/env python3
"""The short GPU checks of benchmarks/gpu/check.sh: is a GPU usable, warming the caches, graph capture.

    python3 benchmarks/gpu/probe.py gate              # exit 1, loudly, unless a real GPU works
    python3 benchmarks/gpu/probe.py warm              # compile every kernel, run small training steps
    python3 benchmarks/gpu/probe.py graphs --out DIR  # what CUDA graph capture under CuPy accepts
    python3 benchmarks/gpu/probe.py tests-ran JUNIT   # exit 1 unless some CUDA test passed

gate: CuPy imports, sees a device, runs an op and reads its result; the CUDA emulator
(GPUGRAD_EMULATE_CUDA) does not count. warm: ``gpugrad info``'s compile of every kernels/*.cu
and a few float32/float64 training steps (SGD, Adam), so NVRTC and CuPy's own elementwise
kernels are in CuPy's disk cache before the tests and the benchmark run. graphs: each case
is captured on a fresh non-blocking stream, then the graph is launched and its result
compared with the same work run eagerly; the answers (captured or the error, replayed
right or not) go to DIR/graph_capture.md, one row per case, for a later issue to build on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:                    # run as a script: make gpugrad importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

BANNER = "!" * 78


def _loud(lines: list[str]) -> None:
    print("\n".join([BANNER, *(f"!! {line}" for line in lines), BANNER]), flush=True)


# ----------------------------------------------------------------------------- gate


def gate() -> int:
    """0 when a real GPU is usable through CuPy; else 1, after a banner saying why."""
    import gpugrad as gg  # noqa: PLC0415

    if os.environ.get("GPUGRAD_EMULATE_CUDA", "").strip() not in ("", "0"):
        _loud(["NO GPU CHECK: GPUGRAD_EMULATE_CUDA is set, so 'cuda' would be gpugrad's CPU emulator.",
               "Unset it: this script measures a real GPU."])
        return 1
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        _loud(["NO USABLE GPU: every result below would be a skip, not a check.", reason])
        return 1
    try:
        import cupy as cp  # noqa: PLC0415

        value = float((cp.arange(1000, dtype=cp.float32) * 2).sum())
        if value != 999000.0:
            raise RuntimeError(f"a sum on the GPU gave {value}, not 999000.0")
    except Exception as err:  # noqa: BLE001 - any failure of the first GPU work is the answer
        _loud(["THE GPU DOES NOT RUN WORK:", f"{type(err).__name__}: {err}"])
        return 1
    count = gg.cuda.device_count()
    names = ", ".join(f"cuda:{i} {gg.cuda.get_device_name(i)}" for i in range(count))
    print(f"gate: {count} GPU(s) usable: {names}; CuPy {cp.__version__}")
    return 0


# ----------------------------------------------------------------------------- warm


def warm() -> int:
    """Compile every kernel file and run small training steps; 1 if a kernel file does not compile."""
    import gpugrad as gg  # noqa: PLC0415
    from gpugrad.cuda import kernels  # noqa: PLC0415
    from gpugrad.nn import functional as F  # noqa: PLC0415

    start = time.perf_counter()
    report = kernels.compile_all()
    for file, error in report.items():
        print(f"warm: kernels/{file}: {'compiled' if error is None else 'FAILED: ' + error}", flush=True)
    print(f"warm: kernels compiled in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    for dtype in (gg.float32, gg.float64):
        for make in (lambda ps: gg.optim.Adam(ps, lr=1e-3),
                     lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9)):
            gg.manual_seed(0)
            model = gg.nn.MLP([16, 32, 32, 4], activation="relu", device="cuda", dtype=dtype)
            opt = make(list(model.parameters()))
            x, t = gg.randn(64, 16, device="cuda", dtype=dtype), gg.randint(0, 4, (64,), device="cuda")
            for _ in range(2):
                opt.zero_grad()
                F.cross_entropy(model(x), t, label_smoothing=0.1).backward()
                opt.step()
    gg.cuda.synchronize()
    print(f"warm: training steps (float32, float64; Adam, SGD) in {time.perf_counter() - start:.1f} s")
    return 1 if any(report.values()) else 0


# ----------------------------------------------------------------------------- graphs


def graph_cases(cp: Any) -> list[tuple[str, Callable[[], Callable[[], Any]]]]:
    """(case, setup): setup allocates the inputs and returns work(), run eagerly and inside capture;
    work() returns the arrays to compare (their contents after the replay against the eager run)."""
    import gpugrad as gg  # noqa: PLC0415
    from gpugrad.cuda import kernels  # noqa: PLC0415
    from gpugrad.nn import functional as F  # noqa: PLC0415

    n = 1 << 16
    rs = cp.random.RandomState(0)

    def raw_kernel() -> Callable[[], Any]:
        g, out = rs.standard_normal(n, dtype=cp.float32), cp.tanh(rs.standard_normal(n, dtype=cp.float32))
        dx = cp.empty_like(g)
        fn = kernels.get_kernel("tanh_backward", np.float32)
        return lambda: (kernels.launch(fn, n, (g, out, dx, np.int64(n), np.float32(0))), dx)[1]

    def elementwise() -> Callable[[], Any]:
        a, b = rs.standard_normal(n, dtype=cp.float32), rs.standard_normal(n, dtype=cp.float32)
        c = cp.empty_like(a)
        return lambda: cp.multiply(a, b, out=c)

    def matmul() -> Callable[[], Any]:
        a, b = (rs.standard_normal((256, 256), dtype=cp.float32) for _ in range(2))
        c = cp.empty_like(a)
        return lambda: cp.matmul(a, b, out=c)

    def pool_allocation() -> Callable[[], Any]:
        a = rs.standard_normal(n, dtype=cp.float32)
        return lambda: a * 2 + 1                     # two fresh arrays from CuPy's memory pool

    def reduction() -> Callable[[], Any]:
        a = rs.standard_normal(n, dtype=cp.float32)
        out = cp.empty((), dtype=cp.float32)
        return lambda: cp.sum(a, out=out)

    def gpugrad_backward() -> Callable[[], Any]:
        gg.manual_seed(0)
        model = gg.nn.MLP([32, 64, 10], activation="relu", device="cuda")
        x, t = gg.randn(128, 32, device="cuda"), gg.randint(0, 10, (128,), device="cuda")

        def work() -> Any:
            for p in model.parameters():
                p.grad = None
            F.cross_entropy(model(x), t).backward()
            return model[0].weight.grad.data
        return work

    def gpugrad_adam_step() -> Callable[[], Any]:
        gg.manual_seed(0)
        params = [gg.randn(1000, device="cuda", requires_grad=True) for _ in range(3)]
        for p in params:
            p.grad = gg.randn(1000, device="cuda")
        opt = gg.optim.Adam(params, lr=1e-3)
        opt.step()                                   # the state exists before capture

        def work() -> Any:
            opt.step()
            return params[0].data
        work.stateful = True                         # each step moves its state: not compared
        return work

    return [("RawKernel launch (gpugrad's tanh_backward, preallocated output)", raw_kernel),
            ("elementwise op into a preallocated out= (cupy.multiply)", elementwise),
            ("matmul into a preallocated out= (cuBLAS)", matmul),
            ("reduction into a preallocated out= (cupy.sum)", reduction),
            ("memory-pool allocation (a * 2 + 1: fresh arrays from CuPy's default pool)", pool_allocation),
            ("gpugrad MLP forward + backward (allocations, fused kernels, cuBLAS)", gpugrad_backward),
            ("gpugrad Adam step (the multi-tensor kernel, its struct passed by value)", gpugrad_adam_step)]


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:160]


def probe_graph(cp: Any, setup: Callable[[], Callable[[], Any]]) -> tuple[str, str]:
    """(capture answer, replay answer) of one case."""
    try:
        work = setup()
        expected = work()
        expected = [a.copy() for a in (expected if isinstance(expected, tuple) else (expected,))]
        cp.cuda.Device().synchronize()
    except Exception as err:  # noqa: BLE001
        return f"setup failed: {_first_line(err)}", "not run"
    stream = cp.cuda.Stream(non_blocking=True)
    graph = None
    try:
        with stream:
            stream.begin_capture()
            try:
                got = work()
            finally:
                graph = stream.end_capture()
    except Exception as err:  # noqa: BLE001 - the refusal is the answer
        return f"refused: {_first_line(err)}", "not run"
    stateful = getattr(work, "stateful", False)
    try:
        got = list(got if isinstance(got, tuple) else (got,))
        if not stateful:
            for a in got:
                a.fill(0)                            # the replay must write them again
        graph.launch(stream)
        stream.synchronize()
        ok = all(bool(cp.allclose(a, b, rtol=1e-5, atol=1e-6)) for a, b in zip(got, expected))
    except Exception as err:  # noqa: BLE001
        return "captured", f"replay failed: {_first_line(err)}"
    if stateful:
        return "captured", "replayed (not compared: it updates its own state)"
    return "captured", "replays right" if ok else "replays WRONG (differs from the eager run)"


def graphs(out: str) -> int:
    """Probe every case; write DIR/graph_capture.md. Always 0: each answer is a finding."""
    import gpugrad as gg  # noqa: PLC0415
    from gpugrad import backend  # noqa: PLC0415

    cp = backend.load_cupy()
    lines = ["## CUDA graph capture under CuPy", "",
             f"{gg.cuda.get_device_name()}; CuPy {cp.__version__}. Each case captured on a fresh "
             "non-blocking stream, then replayed and compared with the eager run.", "",
             "| case | capture | replay |", "|---|---|---|"]
    for name, setup in graph_cases(cp):
        capture, replay = probe_graph(cp, setup)
        lines.append(f"| {name} | {capture} | {replay} |")
        print(f"graphs: {name}: {capture}; {replay}", flush=True)
    text = "\n".join(lines) + "\n"
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "graph_capture.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


# ----------------------------------------------------------------------------- tests ran


def tests_ran(junit: str) -> int:
    """0 when the junit file shows at least one CUDA test passed; else 1, loudly."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as err:
        _loud([f"NO TEST RESULTS: cannot read {junit}: {err}"])
        return 1
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    passed = total - skipped - bad
    print(f"tests-ran: {total} CUDA tests, {passed} passed, {skipped} skipped, {bad} failed or errors")
    if passed <= 0:
        _loud([f"NO CUDA TEST RAN: {total} collected, {skipped} skipped, {bad} failed: nothing was checked "
               "on the GPU"])
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gate")
    sub.add_parser("warm")
    g = sub.add_parser("graphs")
    g.add_argument("--out", default=os.environ.get("OUT") or "./gpu-results")
    t = sub.add_parser("tests-ran")
    t.add_argument("junit")
    args = parser.parse_args(argv)
    try:
        if args.command == "gate":
            return gate()
        if args.command == "warm":
            return warm()
        if args.command == "graphs":
            return graphs(args.out)
        return tests_ran(args.junit)
    except Exception:  # noqa: BLE001 - a crash is reported, with its traceback, as a failure
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
