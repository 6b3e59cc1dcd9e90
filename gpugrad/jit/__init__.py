"""gg.jit: trace a step once, replay its array program from then on.

    step = gg.jit(train_step)        # train_step(x, y): forward, backward, optimizer step
    for x, y in batches:
        loss = step(x, y)            # first call per signature: eager, recorded; then replays

The first call with a new signature (the arguments' structure, shapes, dtypes and devices,
whether grad mode is on) runs ``fn`` eagerly on tracers that record every array call it
makes (``trace``). The recorded program is then built into one generated Python function
of NumPy (or CuPy) calls (``build``): no tensors, no tape, no per-op dispatch; dead values
dropped, repeated calls merged, results written into reused buffers. Later calls with that
signature run it: parameters, gradients and optimizer state change exactly as the eager
step would change them. docs/jit.md says what is frozen at trace time and what is not.
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import backend, engine, tree
from ..tensor import Tensor
from . import program as P
from . import trace
from .codegen import Bail, Replay, build
from .trace import TraceError

__all__ = ["jit", "Jitted", "TraceError"]

_EAGER = "eager"                  # a cache entry: this signature runs eagerly (a one-time warning said why)
MAX_RETRACES = 4                  # retraces of one signature (guards failing) before it stays eager


class _Entry:
    """One signature's replay (or the reason it runs eagerly)."""

    __slots__ = ("replay", "out_spec", "out_kinds", "retraces", "why_eager")

    def __init__(self, replay: Replay | None, out_spec: Any, out_kinds: list, why_eager: str | None) -> None:
        self.replay, self.out_spec, self.out_kinds = replay, out_spec, out_kinds
        self.retraces = 0
        self.why_eager = why_eager


class Jitted:
    """A function traced once per signature and replayed (``gg.jit(fn)``)."""

    def __init__(self, fn: Callable, *, cache_size: int = 8, host_reads: str = "error") -> None:
        if not callable(fn):
            raise TypeError(f"gg.jit: expected a function, got {type(fn).__name__}")
        if host_reads not in ("error", "eager"):
            raise ValueError(f"gg.jit: host_reads must be 'error' or 'eager', got {host_reads!r}")
        if not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"gg.jit: cache_size must be a positive int, got {cache_size!r}")
        self.fn = fn
        self.cache_size = cache_size
        self.host_reads = host_reads
        self._cache: OrderedDict[Any, _Entry] = OrderedDict()
        self._warned: set[str] = set()
        self._one_offs: dict[Any, int] = {}      # signature -> traces that set things up (not cached)
        self.traces = 0                      # how many times fn was traced (for tests and curiosity)
        functools.update_wrapper(self, fn)

    def clear(self) -> None:
        """Forget every trace: the next call traces again."""
        self._cache.clear()
        self._one_offs.clear()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves, spec = tree.flatten((args, kwargs))
        key = _signature(leaves, spec)
        entry = self._cache.get(key)
        if entry is None:
            return self._trace(key, leaves, args, kwargs)
        self._cache.move_to_end(key)
        if entry.replay is None:
            return self.fn(*args, **kwargs)
        try:
            outs = entry.replay.run(leaves)
        except Bail as bail:
            if not bail.safe:
                raise RuntimeError(
                    f"gg.jit: {self._name()}: the replay stopped because {bail.reason}, after it had "
                    "already changed state (parameters, gradients, random numbers); the step is half "
                    "done. Call step.clear() after changing what the function depends on, or move the "
                    "data-dependent part out of the jitted function") from None
            entry.retraces += 1
            if entry.retraces > MAX_RETRACES:
                self._go_eager(key, entry, f"its guards failed {MAX_RETRACES} times ({bail.reason})")
                return self.fn(*args, **kwargs)
            del self._cache[key]
            return self._trace(key, leaves, args, kwargs, retraces=entry.retraces)
        return _results(entry, outs)

    # ------------------------------------------------------------------ tracing
    def _trace(self, key: Any, leaves: list, args: tuple, kwargs: dict, retraces: int = 0) -> Any:
        rec = trace.Recorder(self._name(), self.host_reads, _array_types())
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, Tensor):
                rec.input_tensors[id(leaf)] = i
        self.traces += 1
        with trace.installed(rec):
            result = self.fn(*args, **kwargs)
            out_leaves, out_spec = tree.flatten(result)
            kinds = [_output_kind(rec, leaf) for leaf in out_leaves]
        del result
        rec.release_kept()
        entry = self._compile(rec, out_spec, kinds)
        entry.retraces = retraces
        if rec.one_off and rec.poisoned == entry.why_eager:
            self._one_offs[key] = self._one_offs.get(key, 0) + 1
            if self._one_offs[key] <= MAX_RETRACES:
                return _first_results(out_leaves, out_spec, kinds)  # traced again at the next call
        if entry.why_eager is not None:
            self._warn_eager(entry.why_eager)
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return _first_results(out_leaves, out_spec, kinds)

    def _compile(self, rec: trace.Recorder, out_spec: Any, kinds: list) -> _Entry:
        if rec.poisoned is not None:
            return _Entry(None, out_spec, kinds, rec.poisoned)
        output_slots = [k[1] for k in kinds if k[0] == "slot"]
        replay = build(rec.prog, output_slots, _namespace_of(rec))
        return _Entry(replay, out_spec, kinds, None)

    def _go_eager(self, key: Any, entry: _Entry, why: str) -> None:
        entry.replay = None
        entry.why_eager = why
        self._warn_eager(why)

    def _warn_eager(self, why: str) -> None:
        if why in self._warned:
            return
        self._warned.add(why)
        warnings.warn(f"gg.jit: {self._name()} runs eagerly for this signature: {why}", RuntimeWarning,
                      stacklevel=4)

    def _name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)

    def __repr__(self) -> str:
        return f"<gg.jit of {self._name()}: {len(self._cache)} trace(s)>"

    def launch_report(self) -> list[dict[str, Any]]:
        """Per cached signature on CUDA: graphs captured, work inside them, launches outside, refusals."""
        return [e.replay.launch_report() for e in self._cache.values() if e.replay is not None]

    def replay_source(self) -> list[str]:
        """The generated replay of each cached signature (for reading what the jit does)."""
        return [e.replay.source for e in self._cache.values() if e.replay is not None]


def jit(fn: Callable | None = None, *, cache_size: int = 8, host_reads: str = "error") -> Any:
    """Trace ``fn`` once per signature and replay its array program (``@gg.jit`` or ``gg.jit(fn)``).

    cache_size: how many signatures keep their trace (the oldest is dropped first).
    host_reads: what a host read of a traced value in ``fn`` does (``float(loss)``, ``if t > 0``):
        "error" (default) raises TraceError naming the line; "eager" runs ``fn`` eagerly for that
        signature from then on, with a one-time warning.
    """
    if fn is None:
        return lambda f: Jitted(f, cache_size=cache_size, host_reads=host_reads)
    return Jitted(fn, cache_size=cache_size, host_reads=host_reads)


jit.TraceError = TraceError  # type: ignore[attr-defined]   # gg.jit.TraceError


# ----------------------------------------------------------------------------- signatures


def _signature(leaves: list, spec: Any) -> tuple:
    """What decides which trace a call replays: structure, each tensor's kind, each value, grad mode."""
    parts: list[Any] = [_hashable_spec(spec), engine.grad_mode.enabled]
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            d = leaf.data
            parts.append((type(d), d.shape, d.dtype, leaf._requires_grad,
                          None if type(d) is np.ndarray else backend.device_of(d)))
        else:
            try:
                hash(leaf)
            except TypeError:
                raise TypeError(f"gg.jit: an argument of type {type(leaf).__name__} is neither a Tensor nor "
                                "hashable; pass arrays as gpugrad tensors (gg.tensor(...)) and other values "
                                "as numbers, strings or tuples (they are fixed per trace)") from None
            parts.append((type(leaf), leaf))
    return tuple(parts)


def _hashable_spec(spec: Any) -> Any:
    if spec is None:
        return None
    kind, keys, children = spec
    return (kind, tuple(keys) if keys is not None else None, tuple(_hashable_spec(c) for c in children))


def _array_types() -> tuple[type, ...]:
    types: tuple[type, ...] = (np.ndarray, np.generic)
    if backend._cupy is not None:
        types += (backend._cupy.ndarray,)
    return types


def _namespace_of(rec: trace.Recorder) -> Any:
    """The array module of the program (NumPy, or CuPy when any slot is a device array)."""
    cp = backend._cupy
    if cp is not None and any(isinstance(s.value, cp.ndarray) for s in rec.prog.slots):
        return cp
    return np


# ----------------------------------------------------------------------------- results


def _output_kind(rec: trace.Recorder, leaf: Any) -> tuple:
    """How the replay gives an output: ("slot", slot, tensor or None) for a tensor, ("value", v) else."""
    if isinstance(leaf, Tensor):
        data = leaf.data                          # (a tracer: the hooks are still in place)
        if type(data) is trace.Traced:
            created = id(leaf) not in rec.input_tensors and rec.prog.slots[data._slot].kind == P.FRESH
            return ("slot", data._slot, None if created else leaf)
        return ("value", leaf)
    return ("value", leaf)


def _first_results(out_leaves: list, spec: Any, kinds: list) -> Any:
    """The traced call's own results: tensors the function made are returned detached (as replays)."""
    leaves = []
    for leaf, kind in zip(out_leaves, kinds):
        if kind[0] == "slot" and kind[2] is None:
            leaves.append(Tensor._wrap(leaf.data))
        else:
            leaves.append(leaf)
    return tree.unflatten(spec, leaves)


def _results(entry: _Entry, outs: tuple) -> Any:
    leaves = []
    k = 0
    for kind in entry.out_kinds:
        if kind[0] == "slot":
            leaves.append(Tensor._wrap(outs[k]) if kind[2] is None else kind[2])
            k += 1
        else:
            leaves.append(kind[1])
    return tree.unflatten(entry.out_spec, leaves)
