"""What gpugrad's random draws and optimizers do while a step is traced (their hooks call these).

- ``draw_hook`` (gpugrad.random): the draw is made for real and recorded as a ``Draw``, so
  every replay draws again from the generator, in the same order: the generator's state
  moves exactly as in eager mode.
- ``optimizer_step`` (Optimizer.step): the step runs with every number in its parameter
  groups and state (learning rate, betas, step count...) replaced by a ``Sym``, so what the
  update computes from them is recorded as arithmetic the replay redoes, and a changed
  learning rate or a new step count is seen. The step counts it writes back become ``PySet``
  instructions. An optimizer that creates its state in this call (its first step) makes the
  trace one-off: the next call, with state, is traced again and replayed from then on.
- ``optimizer_update`` (optim.functional): on the CPU the update takes the plain array rule
  on trace-local scratch arrays, with the state arrays adopted as tracers; on CUDA the
  multi-tensor kernel call is recorded whole (the eager step's kernels, so the replay's
  arithmetic is the eager step's), its hyperparameters as symbols.
- ``cuda_trace``: on CUDA, the backend's CuPy and the kernels' launcher become recording
  stand-ins for the trace (gpugrad.jit.cuda_trace).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from . import program as P
from . import trace


def draw_hook(fn: Callable, *args: Any) -> Any:
    """A random draw during a trace: recorded (returns a tracer); None outside a trace."""
    rec = trace.active()
    if rec is None:
        return None
    return rec.draw(fn, _host_args(args))


def _host_args(args: tuple) -> tuple:
    """A draw's arguments as the replay will pass them (the real CuPy, not the trace's stand-in)."""
    from . import cuda_trace  # noqa: PLC0415

    return tuple(cuda_trace.real_module(a) for a in args)


class _Inside(threading.local):
    step = False


_inside = _Inside()
_NUMBER = (int, float, bool)


def optimizer_step(opt: Any, closure: Any) -> Any:
    """Optimizer.step during a trace: run it with symbolic scalars (NotImplemented: run it as usual)."""
    rec = trace.active()
    if rec is None or _inside.step:
        return NotImplemented
    if not getattr(type(opt), "_jit_symbolic", False):
        rec.poison(f"{type(opt).__name__}.step keeps Python state that gg.jit does not trace (only "
                   "gpugrad's SGD, Adam and AdamW are traced with their hyperparameters as symbols)")
        return NotImplemented
    wrapped = _symbolic(rec, opt)
    states_before = {id(p): set(opt.state[p]) for p in opt.state}
    _inside.step = True
    try:
        return opt.step(closure)
    finally:
        _inside.step = False
        _concrete_again(rec, wrapped)
        _check_new_state(rec, opt, states_before)


def _symbolic(rec: trace.Recorder, opt: Any) -> list[tuple[dict, Any, Any, Any]]:
    """Replace the numbers of ``opt``'s groups and state by Syms; returns (dict, key, value, sym)."""
    wrapped = []
    known = {id(entry[0]) for entry in rec.prog.dict_paths}
    paths = [(g, opt, "group", i) for i, g in enumerate(opt.param_groups)]
    paths += [(s, opt, "state", p) for p, s in opt.state.items()]
    rec.prog.dict_paths += [entry for entry in paths if id(entry[0]) not in known]
    for d, *_ in paths:
        for key, value in list(d.items()):
            if key == "params":
                continue
            if type(value) in _NUMBER:
                sym = rec.source(d, key, value)
            elif type(value) is tuple and value and all(type(v) in _NUMBER for v in value):
                sym = tuple(rec.source(d, key, v, i) for i, v in enumerate(value))
            else:
                continue
            d[key] = sym
            wrapped.append((d, key, value, sym))
    return wrapped


def _concrete_again(rec: trace.Recorder, wrapped: list) -> None:
    """Put numbers back; a Sym the step wrote (a new step count) becomes a PySet the replay redoes."""
    for d, key, value, sym in wrapped:
        now = d.get(key)
        if now is sym:
            d[key] = value
        elif type(now) is trace.Sym:
            rec.prog.append(P.PySet(d, key, now.node))
            d[key] = now.value
        elif type(now) is tuple and any(type(v) is trace.Sym for v in now):
            rec.poison(f"the optimizer wrote a tuple of symbols into its {key!r}")
            d[key] = tuple(v.value if type(v) is trace.Sym else v for v in now)
        elif now is not value:
            rec.prog.append(P.PySet(d, key, now))


def _check_new_state(rec: trace.Recorder, opt: Any, before: dict[int, set]) -> None:
    """State created in this step (the first one) holds tracers: give it arrays; the trace is one-off."""
    for p, state in opt.state.items():
        if before.get(id(p), set()) == set(state):
            continue
        for key, value in state.items():
            if type(value) is trace.Traced:
                state[key] = value._v
            elif type(value) is trace.Sym:
                state[key] = value.value
        rec.one_off = True
        rec.poison(f"{type(opt).__name__} created its state in this call (its first step)")


class OptimizerUpdates:
    """optim.functional's hook during a trace (``functional.jit_hook``)."""

    @staticmethod
    def update(fn: Callable, xp: Any, arrays: tuple, hyper: dict) -> Any:
        """One parameter's update: the reference rule on tracers (NotImplemented outside a trace).

        The CPU's eager step runs this rule too; it writes into trace-local scratch arrays, which
        the replay gets buffers for."""
        rec = trace.active()
        if rec is None:
            return NotImplemented
        from ..optim.functional import Scratch  # noqa: PLC0415

        adopted = tuple(a if a is None or type(a) is trace.Traced else rec.adopt(a) for a in arrays)
        fn(xp, *adopted, scratch=Scratch(), **hyper)
        return None

    @staticmethod
    def multi(kernel: Callable) -> Callable:
        """A multi-tensor update (CUDA's eager path): recorded as one call, so the replay makes it with
        the hyperparameters of its time (the kernel function computes its launch scalars from them)."""
        def update(tensors: list, **hyper: Any) -> None:
            rec = trace.active()
            if rec is None:
                return kernel(tensors, **hyper)
            rec.call(MultiUpdate(kernel), (tensors,), hyper)
            return None
        return update


class MultiUpdate:
    """A recorded multi-tensor update: it writes every array of each tensor's tuple but the gradient."""

    def __init__(self, kernel: Callable) -> None:
        self.kernel = kernel
        self.__name__ = getattr(kernel, "__name__", "multi_update")

    def __call__(self, tensors: list, **hyper: Any) -> None:
        self.kernel(tensors, **hyper)

    def written(self, args: tuple) -> list[Any]:
        return [a for arrays in args[0] for k, a in enumerate(arrays) if k != 1 and a is not None]


optimizer_update = OptimizerUpdates()


@contextlib.contextmanager
def _nothing() -> Any:
    yield


def cuda_trace(rec: trace.Recorder) -> Any:
    """The CUDA stand-ins for the trace (nothing to do while CuPy is not loaded)."""
    from .. import backend  # noqa: PLC0415

    if not backend.cuda_active:
        return _nothing()
    from . import cuda_trace as ct  # noqa: PLC0415

    return ct.installed(rec)
