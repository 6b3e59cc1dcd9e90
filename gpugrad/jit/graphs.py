"""CUDA graphs for replays: a run of device work captured once and launched as one.

The replay's generated code (gpugrad.jit.codegen) puts each run of capturable work (kernel
launches, CuPy calls into fixed buffers) in a function of its own and calls it through a
``Segment``. The first call runs it as it is (CuPy compiles its kernels, cuBLAS makes its
handle); the second captures it on a side stream and launches the graph; from then on each
replay launches the graph. Whatever capture refuses (CuPy's cuBLAS wrappers do, during
capture) leaves the segment eager for good, with the reason kept in ``error``.

A graph replays the device pointers it was captured with, so the code around a segment
copies arguments into fixed buffers first and checks that tensors still hold the arrays
they held (a changed one makes the replay trace again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WARMUP_CALLS = 1           # eager runs of a segment before it is captured


class Segment:
    """One capturable run of a replay's device work."""

    __slots__ = ("fn", "label", "graph", "calls", "error", "size")

    def __init__(self, fn: Callable[[], None], label: str, size: int) -> None:
        self.fn, self.label, self.size = fn, label, size     # size: instructions in it
        self.graph: Any = None
        self.calls = 0
        self.error: str | None = None

    def __call__(self) -> None:
        graph = self.graph
        if graph is not None:
            graph.launch(_current_stream())
            return
        self.calls += 1
        if self.error is not None or self.calls <= WARMUP_CALLS:
            self.fn()
            return
        self._capture()

    def _capture(self) -> None:
        from .. import backend  # noqa: PLC0415

        cp = backend.load_cupy()
        stream = cp.cuda.Stream(non_blocking=True)
        graph, refusal = None, None
        with stream:
            try:
                stream.begin_capture()
                self.fn()
            except Exception as err:  # noqa: BLE001 - what capture refuses is an answer, not a failure
                refusal = err
            try:
                graph = stream.end_capture()            # (it leaves capture mode, refused or not)
            except Exception as err:  # noqa: BLE001
                refusal = refusal or err                # (the first error says why)
        if refusal is not None:
            self.error = f"{type(refusal).__name__}: {str(refusal).splitlines()[0] if str(refusal) else ''}"
            self.fn()                                 # nothing ran during the capture: run it now
            return
        self.graph = graph
        graph.launch(_current_stream())

    def __repr__(self) -> str:
        state = ("captured" if self.graph is not None
                 else f"eager ({self.error})" if self.error else "warming up")
        return f"<graph segment {self.label}: {self.size} instruction(s), {state}>"


def _current_stream() -> Any:
    from .. import backend  # noqa: PLC0415

    return backend.load_cupy().cuda.get_current_stream()


def report(segments: list[Segment], eager_launches: int) -> dict[str, Any]:
    """What one replay launches: graphs, work outside them, segments capture refused (and why)."""
    captured = [s for s in segments if s.graph is not None]
    return {"graphs": len(captured),
            "work_in_graphs": sum(len(s.graph) if hasattr(s.graph, "__len__") else s.size for s in captured),
            "launches_outside_graphs": eager_launches + sum(s.size for s in segments if s.graph is None),
            "refused": [f"{s.label}: {s.error}" for s in segments if s.error is not None]}
