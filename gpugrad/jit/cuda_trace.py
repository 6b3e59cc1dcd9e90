"""Tracing on CUDA: the backend's CuPy and the fused kernels' launcher as recording stand-ins.

On the CPU, NumPy's own dispatch brings every call on a tracer to ``Traced``. CuPy has no
such dispatch, so for a trace the backend's ``cupy`` (and ``cupyx``) becomes a module whose
functions record when given tracers (or when they create arrays), and
``gpugrad.cuda.kernels`` gets a launcher that records each kernel launch with the arrays it
writes (the kernel's non-const pointer parameters). Tracers pass ``isinstance(x,
cupy.ndarray)`` (see ``Traced.__class__``), so the backend sees them as device arrays and
hands them this module. Everything is put back when the trace ends.
"""

from __future__ import annotations

import contextlib
import re
import types
from collections.abc import Callable, Iterator
from typing import Any

from . import trace

# CuPy functions that make arrays from Python values: recorded, so replays make them anew
_CREATIONS = {"zeros", "ones", "empty", "full", "arange", "eye", "identity", "linspace", "array", "asarray",
              "ascontiguousarray", "tri"}
# submodules whose functions take arrays (recorded); the others (cuda, random...) are CuPy's own
_ARRAY_SUBMODULES = {"linalg", "fft"}


def real_module(a: Any) -> Any:
    """``a``, or the real CuPy where ``a`` is the trace's stand-in for it."""
    return getattr(a, "_gg_real_module", a)


def _has_traced(x: Any) -> bool:
    t = type(x)
    if t is trace.Traced:
        return True
    if t is tuple or t is list:
        return any(_has_traced(v) for v in x)
    if t is dict:
        return any(_has_traced(v) for v in x.values())
    return False


class _Recorded:
    """A CuPy function during a trace: recorded when it is given tracers or makes an array."""

    __slots__ = ("fn", "creates")

    def __init__(self, fn: Callable, creates: bool) -> None:
        self.fn, self.creates = fn, creates

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rec = trace.active()
        if rec is not None and (self.creates or _has_traced(args) or _has_traced(kwargs)):
            return rec.call(self.fn, args, kwargs)
        return self.fn(*trace._concrete(args), **trace._concrete(kwargs))

    def __getattr__(self, name: str) -> Any:          # a ufunc's reduce, at, outer...
        attr = getattr(self.fn, name)
        return _Recorded(attr, False) if callable(attr) and not isinstance(attr, type) else attr


class TracingCupy(types.ModuleType):
    """CuPy (or cupyx, or a submodule) as the backend sees it during a trace."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__)
        self._gg_real_module = real

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._gg_real_module, name)
        if isinstance(attr, types.ModuleType):
            value: Any = TracingCupy(attr) if name in _ARRAY_SUBMODULES else attr
        elif isinstance(attr, type) or not callable(attr):
            value = attr
        else:
            value = _Recorded(attr, name in _CREATIONS)
        setattr(self, name, value)
        return value


# ----------------------------------------------------------------------------- kernel launches

_POINTER = re.compile(r"\*")


class KernelLaunch:
    """A recorded launch of one compiled kernel: ``launch(n, args, block, per_block)``.

    ``writes`` are the positions of the arguments the kernel writes (non-const pointers); the
    program reads them from ``written``. Launching goes through gpugrad.cuda.kernels.launch, so a
    replay sizes its grid as the eager launch did.
    """

    def __init__(self, kernel: Any, name: str, writes: tuple[int, ...] | None) -> None:
        self.kernel, self.name, self.writes = kernel, name, writes
        self.__name__ = f"launch_{name}"

    def __call__(self, n: int, args: tuple, block: int, per_block: int | None) -> None:
        from ..cuda import kernels  # noqa: PLC0415

        kernels.launch(self.kernel, n, args, block=block, per_block=per_block)

    def written(self, args: tuple) -> list[Any]:
        launch_args = args[1]
        if self.writes is None:
            return list(launch_args)
        return [launch_args[k] for k in self.writes if k < len(launch_args)]

    def __repr__(self) -> str:
        return f"<launch {self.name}>"


_signatures: dict[str, tuple[int, ...] | None] = {}
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+([\w#]+)\s*\(')


def written_parameters(name: str, entry: str) -> tuple[int, ...] | None:
    """The positions of ``entry``'s non-const pointer parameters, read from its source (None: unknown).

    The sources declare entry points through macros (``NAME##_##SFX(const T* g, T* dx, ...)``):
    each declared name is matched as a pattern (NAME and SFX standing for any word).
    """
    key = f"{name}:{entry}"
    if key not in _signatures:
        from ..cuda import kernels  # noqa: PLC0415

        try:
            source = kernels.kernel_source(kernels._spec(name).file).replace("\\\n", " ")
        except (KeyError, OSError, ValueError):
            source = ""
        _signatures[key] = _parse_written(source, entry)
    return _signatures[key]


def _parse_written(source: str, entry: str) -> tuple[int, ...] | None:
    """The non-const pointer positions of the declaration that matches ``entry`` most specifically
    (``bias_grad_reduce_##SFX`` before ``NAME##_##SFX``)."""
    best: tuple[int, tuple[int, ...]] | None = None
    for m in _ENTRY.finditer(source):
        declared = m.group(1)
        pattern = "".join(r"\w+" if part in ("NAME", "SFX") else re.escape(part)
                          for part in re.split(r"(NAME|SFX|##)", declared) if part != "##")
        if re.fullmatch(pattern, entry) is None:
            continue
        literal = len(declared.replace("NAME", "").replace("SFX", "").replace("##", ""))
        depth, i = 1, m.end()
        while i < len(source) and depth:
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        params = [p.strip() for p in source[m.end():i - 1].split(",")]
        written = tuple(k for k, p in enumerate(params) if "*" in p and not p.startswith("const"))
        if best is None or literal > best[0]:
            best = (literal, written)
    return None if best is None else best[1]


class TracingLauncher:
    """gpugrad.cuda.kernels' launcher during a trace: each launch is recorded, then made."""

    def __init__(self, inner: Any, xp: Any) -> None:
        self.inner, self._xp = inner, xp
        self._names: dict[int, tuple[str, str]] = {}

    def xp(self) -> Any:
        return self._xp

    def device(self, array: Any) -> Any:
        return self.inner.device(array)

    def pointer(self, array: Any) -> int:
        if type(array) is trace.Traced:
            raise trace.TraceError("gg.jit: a kernel took the address of a traced array (a multi-tensor "
                                   "launch); gg.jit traces the single-tensor updates instead")
        return self.inner.pointer(array)

    def kernel(self, name: str, dtype: Any) -> Any:
        from ..cuda import kernels  # noqa: PLC0415

        k = self.inner.kernel(name, dtype)
        self._names[id(k)] = (name, f"{name}_{kernels._SUFFIX.get(kernels.np.dtype(dtype), '')}")
        return k

    def max_blocks(self) -> int:
        return self.inner.max_blocks()

    def launch(self, kernel: Any, n: int, args: tuple, *, block: int = 256,
               per_block: int | None = None) -> None:
        rec = trace.active()
        if rec is None or not _has_traced(args):
            self.inner.launch(kernel, n, trace._concrete(args), block=block, per_block=per_block)
            return
        name, entry = self._names.get(id(kernel), ("kernel", ""))
        fn = KernelLaunch(kernel, entry or name, written_parameters(name, entry) if entry else None)
        rec.call(fn, (n, args, block, per_block), {})


@contextlib.contextmanager
def installed(rec: Any) -> Iterator[None]:
    """The stand-ins in the backend and the kernels module for the block."""
    from .. import backend  # noqa: PLC0415
    from ..cuda import kernels  # noqa: PLC0415

    cupy, cupyx, launcher = backend._cupy, backend._cupyx, kernels._launcher
    facade = TracingCupy(cupy)
    backend._cupy = facade
    if cupyx is not None:
        backend._cupyx = TracingCupy(cupyx)
    kernels._launcher = TracingLauncher(launcher, facade)
    try:
        yield
    finally:
        backend._cupy, backend._cupyx, kernels._launcher = cupy, cupyx, launcher
