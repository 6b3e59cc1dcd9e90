"""Stream capture in the CUDA emulator: what ``stream.begin_capture()`` ... ``end_capture()`` records.

Between the two calls a real GPU runs nothing: each launch goes into a graph, with the
arguments it had (device pointers included, which is why a graph must run on the arrays it
was captured with), and ``graph.launch()`` runs them all, in order, each time. The emulator
models that launch sequence, not its timing: while a stream captures,

- a RawKernel launch, and a CuPy operation that writes into ``out=`` (or into an array, by
  ``a[...] = v``), is recorded, not run; ``Graph.launch`` runs the recorded work in order;
- a view (reshape, a slice, a transpose) is made at once: it is metadata, no device work;
- an allocation (a CuPy call that makes a new array, ``cupy.empty``...) raises: memory from
  the pool during capture belongs to the pool again after it, so a graph must not take any;
- a host read or synchronisation raises, as CUDA's cudaErrorStreamCaptureUnsupported;
  either of these invalidates the capture, as in CUDA: the stream leaves capture mode and
  ``end_capture`` raises cudaErrorStreamCaptureInvalidated, naming what did it;
- matmul, dot and the other cuBLAS calls raise NotImplementedError, as CuPy's cuBLAS
  wrappers do during capture, before CUDA sees anything: the capture goes on, and
  ``end_capture`` gives the graph of the work before (benchmarks/gpu/probe.py asks a real GPU).

``cupy.cuda.Graph`` objects come from ``end_capture``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

# NumPy names CuPy computes through cuBLAS
CUBLAS = {"matmul", "dot", "vdot", "inner", "outer", "tensordot", "einsum", "kron"}


class Graph:
    """``cupy.cuda.Graph``: the work captured on a stream, launched as one."""

    def __init__(self) -> None:
        self.work: list[tuple[str, Callable[[], Any]]] = []     # (what, run it)

    def launch(self, stream: Any = None) -> None:
        for _, run in self.work:
            run()

    def upload(self, stream: Any = None) -> None:
        pass

    def __len__(self) -> int:
        return len(self.work)

    def __repr__(self) -> str:
        return f"<emulated CUDA graph of {len(self.work)} launch(es)>"


class _State(threading.local):
    graph: Graph | None = None          # the graph this thread's current stream is capturing
    invalidated: str | None = None      # what ended the last capture before end_capture


_state = _State()


def begin() -> None:
    if _state.graph is not None:
        raise RuntimeError("cudaErrorIllegalState: the stream is already capturing")
    _state.graph, _state.invalidated = Graph(), None


def end() -> Graph:
    graph, _state.graph = _state.graph, None
    invalidated, _state.invalidated = _state.invalidated, None
    if invalidated is not None:
        raise RuntimeError(f"cudaErrorStreamCaptureInvalidated: the capture was invalidated by {invalidated}")
    if graph is None:
        raise RuntimeError("cudaErrorIllegalState: end_capture without begin_capture")
    return graph


def capturing() -> bool:
    return _state.graph is not None


def record(what: str, run: Callable[[], Any]) -> None:
    """Add device work to the graph being captured (it runs at each launch, not now)."""
    _state.graph.work.append((what, run))  # type: ignore[union-attr]


def refuse(what: str) -> RuntimeError:
    """The error for work a graph cannot hold (an allocation, a host read)."""
    graph, _state.graph = _state.graph, None          # CUDA invalidates the capture
    _state.invalidated = what
    n = len(graph.work) if graph is not None else 0
    return RuntimeError(f"cudaErrorStreamCaptureUnsupported: {what} while a stream is being captured "
                        f"(after {n} captured launch(es)); the capture is invalidated")


def refuse_cublas(name: str) -> NotImplementedError:
    """CuPy's refusal, in Python: the capture itself goes on."""
    return NotImplementedError(f"cupy.{name}: cuBLAS calls are not supported during stream capture "
                               "(CuPy's cuBLAS wrappers refuse them); capture the work around them")


# operations that write into an array they are given, without out= (recorded, not run now)
_MUTATING = {"fill", "sort", "partition", "put", "itemset", "copyto", "place", "putmask", "fill_diagonal",
             "put_along_axis", "scatter_add", "scatter_max", "scatter_min", "at"}


def call(name: str, run: Callable[[], Any], out: Any, owns_fresh_memory: Callable[[Any], bool]) -> Any:
    """A CuPy operation while a stream captures: recorded (into ``out=``, or in place), made at once (a
    view), or refused (cuBLAS, an allocation). ``run()`` does the operation on the emulator's memory."""
    short = name.rsplit(".", 1)[-1]
    if short in CUBLAS:
        raise refuse_cublas(name)
    if out is not None or short in _MUTATING:
        record(name, run)
        return out
    result = run()
    if owns_fresh_memory(result):
        raise refuse(f"cupy.{name} allocated a new array")
    return result
