"""Tracing: run a step once, eagerly, on tracer arrays that record every array call it makes.

While a trace runs (in one thread, one trace at a time), every read of a tensor's ``.data``
gives a ``Traced`` array: a stand-in that holds the concrete array it stands for and its
slot in the program being recorded. Anything done to a tracer (a NumPy function, an array
method, an operator, indexing) runs on the concrete array, as eager would, and is appended
to the program as one call. Writes of tracers into tensors store the concrete array and
record the binding, so tensors never hold tracers. The hooks that make this happen are
installed for the trace and removed after it (``installed``):

- ``Tensor.data`` and ``Tensor._grad`` become properties that trace reads and writes;
- NumPy's conversions (``array``, ``asarray``...) and creations from Python values (``zeros``,
  ``arange``...), which NumPy does not dispatch, are recorded: an array the step makes and fills
  is made again at each replay (one it never changes becomes a constant);
- random draws (``gpugrad.random.draw_hook``) are recorded and drawn again at each replay;
- optimizer steps (``gpugrad.optim.optimizer.jit_hook``) run with their hyperparameters and
  step counts as ``Sym`` scalars, so the replay recomputes them; their updates take the plain
  array rules (``gpugrad.optim.functional.jit_hook``) on a trace-local scratch;
- on CUDA (``cuda_trace``): the backend's CuPy and the fused kernels' launcher.

A host read of a traced value (``bool``, ``float``, ``.item()``...) made by gpugrad's own
code (an op checking its input) becomes a guard that the replay checks again; one made by
the user's function raises ``TraceError`` naming the line (or, with ``host_reads="eager"``,
marks the function to run eagerly). A conversion of a tracer to a NumPy array is an error.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import program as P

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE = os.path.dirname(_HERE)
# files between a host read and the code that asked for it: the read is the caller's
_PASSTHROUGH = {os.path.join(_PACKAGE, f) for f in ("tensor.py", "backend.py")}
# modules of the package that are applications (their host reads are the user's)
_APPLICATIONS = {os.path.join(_PACKAGE, f) for f in ("train.py", "cli.py", "classifier.py", "chapter.py")}


class TraceError(RuntimeError):
    """A function cannot be traced as written (a host read of a traced value, an untraceable call)."""


class _Local(threading.local):
    rec: Recorder | None = None      # the trace running in this thread
    paused = 0                       # > 0 inside a region that must see concrete arrays


_local = _Local()
_trace_lock = threading.RLock()      # one trace at a time: the hooks are process-wide


def active() -> Recorder | None:
    """The recorder of the trace running in this thread (None when none is, or it is paused)."""
    rec = _local.rec
    return None if rec is None or _local.paused else rec


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Run a block on concrete arrays, recording nothing (a random draw, an eager fallback)."""
    _local.paused += 1
    try:
        yield
    finally:
        _local.paused -= 1


# ----------------------------------------------------------------------------- tracers


class Traced:
    """An array while a step is traced: its concrete value and its slot in the program.

    It offers the array interface the ops, rules and optimizers use; every call on it runs
    on the concrete value and is recorded. Once its trace has ended it stays usable as a
    transparent stand-in for its value (should something have kept it).
    """

    __slots__ = ("_rec", "_slot", "_v", "__weakref__")
    __array_priority__ = 1000.0     # above NumPy's and CuPy's: an array's operator leaves it to the tracer

    def __init__(self, rec: Recorder, slot: int, value: Any) -> None:
        self._rec, self._slot, self._v = rec, slot, value
        rec.made.add(self)

    # --- static metadata (part of the signature: frozen, never recorded)
    shape = property(lambda self: self._v.shape)
    dtype = property(lambda self: self._v.dtype)
    ndim = property(lambda self: self._v.ndim)
    size = property(lambda self: self._v.size)
    itemsize = property(lambda self: self._v.itemsize)
    nbytes = property(lambda self: self._v.nbytes)
    strides = property(lambda self: self._v.strides)
    flags = property(lambda self: self._v.flags)
    device = property(lambda self: self._v.device)
    base = property(lambda self: self._v.base)      # versions and the engine ask who owns the memory
    # isinstance(tracer, numpy.ndarray) is True, as for the array it stands for (ops test it)
    __class__ = property(lambda self: type(self._v))  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._v)

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self._v)))

    def __repr__(self) -> str:
        return f"Traced({tuple(self._v.shape)}, {self._v.dtype}, slot {self._slot})"

    __hash__ = object.__hash__

    # --- views that are attributes
    T = property(lambda self: self._call(_attr_T, (self,)))
    mT = property(lambda self: self._call(_attr_mT, (self,)))
    real = property(lambda self: self._call(_attr_real, (self,)))
    imag = property(lambda self: self._call(_attr_imag, (self,)))

    def _call(self, fn: Any, args: tuple, kwargs: dict | None = None) -> Any:
        rec = self._rec
        if rec.finished:
            return _concretely(fn, args, kwargs or {})
        return rec.call(fn, args, kwargs or {})

    # --- NumPy's dispatch: every ufunc and array function given a tracer comes here
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fn = ufunc if method == "__call__" else getattr(ufunc, method)
        return self._call(fn, inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        if func in P.METADATA:                       # answers from shapes and dtypes alone
            return func(*_concrete(args), **_concrete(kwargs))
        return self._call(func, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._v, name)                # AttributeError as the array would raise it
        if not callable(attr):
            return attr
        if name in _HOST_METHODS:
            return _HOST_METHODS[name](self)
        return _BoundMethod(self, P.Method.of(name))

    # --- host reads
    def __bool__(self) -> bool:
        return self._read("bool", bool)

    def __int__(self) -> int:
        return self._read("int", int)

    def __float__(self) -> float:
        return self._read("float", float)

    def __index__(self) -> int:
        return self._read("index", operator.index)

    def __complex__(self) -> complex:
        return self._read("complex", complex)

    def _read(self, kind: str, convert: Callable) -> Any:
        rec = self._rec
        if rec.finished:
            return convert(self._v)
        return rec.host_read(self, kind, convert)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        rec = self._rec
        if rec.finished:
            return np.asarray(self._v, dtype=dtype)
        raise rec.untraceable(f"converts a traced {tuple(self._v.shape)} {self._v.dtype} array to a "
                              "NumPy array (a copy to the host, or code gpugrad does not trace)")

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._rec.untraceable("exports a traced array through DLPack")

    def __reduce__(self) -> Any:
        raise self._rec.untraceable("pickles a traced array")

    # --- indexing
    def __getitem__(self, index: Any) -> Any:
        return self._call(operator.getitem, (self, index))

    def __setitem__(self, index: Any, value: Any) -> None:
        self._call(operator.setitem, (self, index, value))


def _binary(op: Callable) -> Callable:
    def method(self: Traced, other: Any) -> Any:
        return self._call(op, (self, other))
    return method


def _reflected(op: Callable) -> Callable:
    def method(self: Traced, other: Any) -> Any:
        return self._call(op, (other, self))
    return method


def _unary(op: Callable) -> Callable:
    def method(self: Traced) -> Any:
        return self._call(op, (self,))
    return method


for _name, _op in P.BINARY_OPERATORS.items():
    setattr(Traced, f"__{_name}__", _binary(_op))
    if _name in P.REFLECTED:
        setattr(Traced, f"__r{_name}__", _reflected(_op))
for _name, _op in P.INPLACE_OPERATORS.items():
    setattr(Traced, f"__{_name}__", _binary(_op))
for _name, _op in P.UNARY_OPERATORS.items():
    setattr(Traced, f"__{_name}__", _unary(_op))


class _BoundMethod:
    """``tracer.sum`` before it is called."""

    __slots__ = ("tracer", "method")

    def __init__(self, tracer: Traced, method: P.Method) -> None:
        self.tracer, self.method = tracer, method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.tracer._call(self.method, (self.tracer, *args), kwargs)


def _attr_T(x: Any) -> Any:
    return x.T


def _attr_mT(x: Any) -> Any:
    return x.mT


def _attr_real(x: Any) -> Any:
    return x.real


def _attr_imag(x: Any) -> Any:
    return x.imag


P.register_view_functions(_attr_T, _attr_mT, _attr_real, _attr_imag)


def _host_method(kind: str, convert: Callable) -> Callable:
    def bind(tracer: Traced) -> Callable:
        def read(*args: Any) -> Any:
            if args:                                 # item(i): the element, then read
                return tracer[args if len(args) > 1 else args[0]]._read(kind, convert)
            return tracer._read(kind, convert)
        return read
    return bind


def _refuse(what: str) -> Callable:
    def bind(tracer: Traced) -> Callable:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            if tracer._rec.finished:
                return getattr(tracer._v, what)(*args, **kwargs)
            raise tracer._rec.untraceable(f"copies a traced array to the host (.{what}())")
        return refuse
    return bind


_HOST_METHODS: dict[str, Callable] = {
    "item": _host_method("item", lambda v: v.item()),
    "tolist": _host_method("tolist", lambda v: v.tolist()),
    "get": _refuse("get"), "tobytes": _refuse("tobytes"), "tofile": _refuse("tofile"),
}


def _concrete(x: Any) -> Any:
    """``x`` with every tracer (also inside tuples, lists, dicts, slices) replaced by its value."""
    t = type(x)
    if t is Traced:
        return x._v
    if t is Sym:
        return x.value
    if t is tuple or t is list:
        return t([_concrete(v) for v in x])
    if t is dict:
        return {k: _concrete(v) for k, v in x.items()}
    if t is slice:
        return slice(_concrete(x.start), _concrete(x.stop), _concrete(x.step))
    return x


def _concretely(fn: Any, args: tuple, kwargs: dict) -> Any:
    """A call on a tracer whose trace has ended: on the values, recording nothing."""
    return P.call_of(fn)(*_concrete(args), **_concrete(kwargs))


# ----------------------------------------------------------------------------- symbolic scalars


class Sym:
    """A Python number the replay recomputes: an optimizer's hyperparameter, step count, or what
    its update derives from them. Arithmetic on it is recorded; a comparison or conversion gives
    the concrete answer and records a guard the replay checks again."""

    __slots__ = ("rec", "node", "value")

    def __init__(self, rec: Recorder, node: P.SymNode, value: Any) -> None:
        self.rec, self.node, self.value = rec, node, value

    def _make(self, op: str, args: tuple, value: Any) -> Sym:
        return Sym(self.rec, self.rec.sym_node(op, args), value)

    @staticmethod
    def _operand(other: Any) -> tuple[Any, Any] | None:
        """(value, node) of the other operand, or None for one a Sym does not combine with."""
        if type(other) is Sym:
            return other.value, other.node
        if type(other) in (int, float, bool):
            return other, other
        return None

    def _arith(self, op: str, other: Any, swap: bool) -> Any:
        operand = self._operand(other)
        if operand is None:
            return NotImplemented
        ov, on = operand
        a, b = (ov, self.value) if swap else (self.value, ov)
        na, nb = (on, self.node) if swap else (self.node, on)
        return self._make(op, (na, nb), P.SYM_BINARY[op](a, b))

    def _compare(self, op: str, other: Any) -> bool:
        operand = self._operand(other)
        if operand is None:
            return NotImplemented
        ov, on = operand
        answer = P.SYM_BINARY[op](self.value, ov)
        self.rec.sym_guard(self.rec.sym_node(op, (self.node, on)), answer)
        return answer

    def sqrt(self) -> Sym:
        import math  # noqa: PLC0415
        return self._make("sqrt", (self.node,), math.sqrt(self.value))

    def __neg__(self) -> Sym:
        return self._make("neg", (self.node,), -self.value)

    def __pos__(self) -> Sym:
        return self

    def __abs__(self) -> Sym:
        return self._make("abs", (self.node,), abs(self.value))

    def __bool__(self) -> bool:
        answer = bool(self.value)
        self.rec.sym_guard(self.rec.sym_node("bool", (self.node,)), answer)
        return answer

    def _frozen(self, convert: Callable) -> Any:
        answer = convert(self.value)
        self.rec.sym_guard(self.rec.sym_node("eq", (self.node, self.value)), True)
        return answer

    def __float__(self) -> float:
        return self._frozen(float)

    def __int__(self) -> int:
        return self._frozen(int)

    def __index__(self) -> int:
        return self._frozen(operator.index)

    def __hash__(self) -> int:           # as its value: a dict key compares with ==, which is guarded
        return hash(self.value)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fn = ufunc if method == "__call__" else getattr(ufunc, method)
        return self.rec.call(fn, inputs, kwargs)

    def __repr__(self) -> str:
        return f"Sym({self.value!r})"


def _sym_arith(op: str, swap: bool) -> Callable:
    def method(self: Sym, other: Any) -> Any:
        return self._arith(op, other, swap)
    return method


def _sym_compare(op: str) -> Callable:
    def method(self: Sym, other: Any) -> Any:
        return self._compare(op, other)
    return method


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"):
    setattr(Sym, f"__{_op}__", _sym_arith(_op, False))
    setattr(Sym, f"__r{_op}__", _sym_arith(_op, True))
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(Sym, f"__{_op}__", _sym_compare(_op))


# ----------------------------------------------------------------------------- the recorder


class Recorder:
    """Builds one trace's program (``program.Program``) while the step runs on tracers."""

    def __init__(self, fn_name: str, host_reads: str, array_types: tuple[type, ...]) -> None:
        self.prog = P.Program(fn_name)
        self.host_reads = host_reads          # "error" | "eager"
        self.array_types = array_types        # what counts as an array here (NumPy's, CuPy's)
        self.finished = False
        self.slot_of: dict[int, int] = {}     # id(concrete array) -> slot (the array is kept alive)
        self._tracers: weakref.WeakValueDictionary[int, Traced] = weakref.WeakValueDictionary()
        self.made: weakref.WeakSet[Traced] = weakref.WeakSet()     # every tracer, to find those kept
        self.input_tensors: dict[int, int] = {}     # id(argument tensor) -> argument index
        self.grad_owner: dict[int, Any] = {}  # id(tensor read as p._grad) -> p's TensorRef (not yet set)
        self.set_grads: set[int] = set()      # tensors whose _grad this trace has written
        self.bound: dict[int, tuple[weakref.ref, Any]] = {}   # id(tensor) -> (tensor, its tensor ref)
        self.live_sym_dicts: list[tuple[dict, Any, Any]] = []
        self.poisoned: str | None = None      # why this trace cannot be replayed (it still ran)
        self._sym_guarded: set[int] = set()
        self.one_off = False                  # it set things up (optimizer state): trace the next call

    # ------------------------------------------------------------------ slots
    def tracer(self, slot: int) -> Traced:
        t = self._tracers.get(slot)
        if t is None:
            t = Traced(self, slot, self.prog.slots[slot].value)
            self._tracers[slot] = t
        return t

    def _new_slot(self, value: Any, kind: str, origin: Any = None, producer: int = -1) -> int:
        slot = self.prog.add_slot(value, kind, origin, producer)
        self.slot_of[id(value)] = slot
        return slot

    def adopt(self, arr: Any, origin: Any = None) -> Traced:
        """The tracer of a real array met during the trace: a known slot, or a new external one."""
        slot = self.slot_of.get(id(arr))
        if slot is None:
            slot = self._new_slot(arr, P.EXTERNAL, origin)
        return self.tracer(slot)

    def read_tensor_data(self, t: Any, arr: Any) -> Any:
        """``t.data`` while tracing: the tracer of its array (the tensor keeps the array)."""
        if type(arr) is Traced or not isinstance(arr, self.array_types):
            return arr
        slot = self.slot_of.get(id(arr))
        if slot is None:
            index = self.input_tensors.get(id(t))
            if index is not None:
                slot = self._new_slot(arr, P.INPUT, index)
            else:
                slot = self._new_slot(arr, P.EXTERNAL, self._tensor_ref(t))
        return self.tracer(slot)

    def write_tensor_data(self, t: Any, value: Any) -> Any:
        """``t.data = value`` while tracing: record the binding, store the concrete array."""
        if type(value) is Traced and value._rec is self:
            ref = self._tensor_ref(t)
            self.prog.append(P.SetData(ref, value._slot))
            return value._v
        if isinstance(value, self.array_types):
            slot = self.slot_of.get(id(value))
            if slot is not None:
                self.prog.append(P.SetData(self._tensor_ref(t), slot))
        return value

    def _tensor_ref(self, t: Any) -> P.TensorRef:
        entry = self.bound.get(id(t))
        if entry is None or entry[0]() is not t:
            owned = self.grad_owner.get(id(t))
            ref = P.TensorRef(t, owned[1] if owned is not None else None, self.input_tensors.get(id(t)))
            self.bound[id(t)] = (weakref.ref(t), ref)
            return ref
        return entry[1]

    def read_grad(self, t: Any, g: Any) -> Any:
        """``t._grad`` while tracing: before this trace wrote it, the replay must find the same kind."""
        if id(t) not in self.set_grads:
            self.set_grads.add(id(t))             # one guard per tensor, at its first read
            self.prog.append(P.GradGuard(self._tensor_ref(t), g is None))
            if g is not None:
                self.grad_owner[id(g)] = (g, self._tensor_ref(t))   # g held: its id stays its own
        return g

    def write_grad(self, t: Any, g: Any) -> None:
        self.set_grads.add(id(t))
        self.prog.append(P.SetGrad(self._tensor_ref(t), None if g is None else self._tensor_ref(g)))

    # ------------------------------------------------------------------ calls
    def template(self, x: Any) -> Any:
        """``x`` with tracers as slot refs, real arrays adopted, Syms as their nodes."""
        t = type(x)
        if t is Traced:
            if x._rec is not self:
                raise TraceError("a tracer of another trace was used (a value kept from an earlier trace)")
            return P.Ref(x._slot)
        if t is Sym:
            return x.node
        if t is tuple or t is list:
            return t([self.template(v) for v in x])
        if t is dict:
            return {k: self.template(v) for k, v in x.items()}
        if t is slice:
            return slice(self.template(x.start), self.template(x.stop), self.template(x.step))
        if isinstance(x, self.array_types) and not isinstance(x, np.generic):
            return P.Ref(self.adopt(x)._slot)
        return x

    def call(self, fn: Any, args: tuple, kwargs: dict) -> Any:
        """Run ``fn`` on the concrete values and record it; return its result with tracers for arrays."""
        targs, tkw = self.template(args), self.template(kwargs)
        _local.paused += 1                  # NumPy's own Python code runs on arrays, recording nothing
        try:
            result = P.call_of(fn)(*_concrete(args), **_concrete(kwargs))
        finally:
            _local.paused -= 1
        if not _has_array(result, self.array_types) and not P.mutated_positions(fn, targs, tkw):
            return self._non_array_result(fn, targs, tkw, result)   # (a kernel launch, a scatter give None)
        index = len(self.prog.instrs)
        out = self._wrap(result, index)
        self.prog.append(P.Call(fn, targs, tkw, P.Ref.strip(out, Traced)))
        return out

    def _wrap(self, result: Any, producer: int) -> Any:
        t = type(result)
        if t is tuple or t is list:
            return t([self._wrap(r, producer) for r in result])
        if not isinstance(result, self.array_types):
            return result
        if isinstance(result, np.generic):            # a NumPy scalar is a value (True_ is shared)
            return self.tracer(self._new_slot(result, P.FRESH, None, producer))
        slot = self.slot_of.get(id(result))
        if slot is None:
            slot = self._new_slot(result, P.FRESH, None, producer)
        return self.tracer(slot)

    def _non_array_result(self, fn: Any, targs: Any, tkw: Any, result: Any) -> Any:
        """A call on traced values that answered with a Python value: a host read of the data."""
        self._host_read_allowed(f"reads {P.describe_fn(fn)}(...) of a traced array on the host")
        self.prog.append(P.CallGuard(fn, targs, tkw, result))
        return result

    def host_read(self, tracer: Traced, kind: str, convert: Callable) -> Any:
        value = convert(tracer._v)
        self._host_read_allowed(f"reads a traced {tuple(tracer._v.shape)} {tracer._v.dtype} value on the "
                                f"host ({kind}())")
        self.prog.append(P.ReadGuard(tracer._slot, kind, value))
        return value

    def _host_read_allowed(self, what: str) -> None:
        """gpugrad's own reads become guards; the user's raise, or mark the function eager."""
        site, internal = _reader_site()
        if internal:
            return
        if self.host_reads == "eager":
            self.poisoned = self.poisoned or f"it {what} at {site}"
            return
        raise TraceError(
            f"gg.jit: {self.prog.name} {what} at {site}. Python control flow and host reads are frozen "
            "when the function is traced, so the replay could not follow the value. Return the tensor and "
            "read it after the call, use gg.where(...) for a choice that depends on data, or pass "
            "host_reads='eager' to gg.jit to run this function eagerly instead")

    def untraceable(self, what: str) -> TraceError:
        site, _ = _reader_site()
        return TraceError(f"gg.jit: {self.prog.name}: the code at {site} {what}; gg.jit cannot trace "
                          "that. Do it outside the jitted function, or call the function without gg.jit")

    # ------------------------------------------------------------------ random draws
    def draw(self, fn: Callable, args: tuple) -> Traced:
        with paused():
            value = fn(*args)
        index = len(self.prog.instrs)
        slot = self._new_slot(value, P.FRESH, None, index)
        self.prog.append(P.Draw(fn, args, slot))
        return self.tracer(slot)

    # ------------------------------------------------------------------ symbols
    def sym_node(self, op: str, args: tuple) -> P.SymNode:
        return self.prog.sym(op, args)

    def sym_guard(self, node: P.SymNode, answer: Any) -> None:
        if node.id not in self._sym_guarded:
            self._sym_guarded.add(node.id)
            self.prog.append(P.SymGuard(node, answer))

    def source(self, container: dict, key: Any, value: Any, index: int | None = None) -> Sym:
        return Sym(self, self.prog.sym("src", (container, key, index)), value)

    def poison(self, why: str) -> None:
        self.poisoned = self.poisoned or why

    def release_kept(self) -> None:
        """After the trace: tracers something kept (a cache, a list, a graph's node) become their arrays.

        A replay could not update them, so such a trace is one-off: the next call traces again
        (a cache filled now holds an array then, and is read as one); gg.jit gives up, and runs
        the function eagerly, when that keeps happening.
        """
        import gc  # noqa: PLC0415

        kept = list(self.made)
        if not kept:
            return
        where = set()
        for t in kept:
            for ref in gc.get_referrers(t):
                if ref is not kept:
                    where.add(_replace_tracer(ref, t))
        where.discard(None)
        self.one_off = True
        self.poison(f"it keeps traced arrays in Python objects ({', '.join(sorted(where)) or 'unknown'}), "
                    "which replays could not update")


def _replace_tracer(ref: Any, t: Traced) -> str | None:
    """Put ``t``'s array where ``ref`` (a dict, a list, a tuple in a graph node) holds ``t``; what it was."""
    from ..engine import Node  # noqa: PLC0415

    if type(ref) is dict:
        for k, v in list(ref.items()):
            if v is t:
                ref[k] = t._v
        return "a dict"
    if type(ref) is list:
        ref[:] = [t._v if v is t else v for v in ref]
        return "a list"
    if type(ref) is tuple:
        import gc  # noqa: PLC0415

        for owner in gc.get_referrers(ref):
            if type(owner) is Node and owner.inputs is ref:
                owner.inputs = tuple(t._v if v is t else v for v in ref)
                return "a graph node"
        return "a tuple"
    if type(ref) is Node:
        if ref.out is t:
            ref.out = t._v
        return "a graph node"
    if type(ref).__name__ == "frame":
        return None
    return type(ref).__name__


def _has_array(x: Any, types: tuple[type, ...]) -> bool:
    if isinstance(x, types):
        return True
    if type(x) is tuple or type(x) is list:
        return any(_has_array(v, types) for v in x)
    return False


def _reader_site() -> tuple[str, bool]:
    """'file:line' of the code that made a host read, and whether it is gpugrad's own code."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith(_HERE) or name in _PASSTHROUGH):
            break
        frame = frame.f_back
    if frame is None:
        return "<unknown>", False
    path = os.path.abspath(frame.f_code.co_filename)
    internal = path.startswith(_PACKAGE + os.sep) and path not in _APPLICATIONS
    return f"{frame.f_code.co_filename}:{frame.f_lineno}", internal


# ----------------------------------------------------------------------------- the hooks


class _TracedSlot:
    """A Tensor slot during a trace: reads go through the recorder's ``read`` method when a trace runs."""

    read = ""

    def __init__(self, slot: Any) -> None:
        self.slot = slot

    def __get__(self, t: Any, cls: Any = None) -> Any:
        if t is None:
            return self
        value = self.slot.__get__(t, cls)
        rec = active()
        return value if rec is None else getattr(rec, self.read)(t, value)


class _TensorData(_TracedSlot):
    """``Tensor.data`` during a trace: reads give tracers, writes store concrete arrays."""

    read = "read_tensor_data"

    def __set__(self, t: Any, value: Any) -> None:
        rec = active()
        if rec is not None:
            value = rec.write_tensor_data(t, value)
        elif type(value) is Traced:
            value = value._v
        self.slot.__set__(t, value)


class _TensorGrad(_TracedSlot):
    """``Tensor._grad`` during a trace: reads and writes are recorded for the replay."""

    read = "read_grad"

    def __set__(self, t: Any, value: Any) -> None:
        rec = active()
        if rec is not None:
            rec.write_grad(t, value)
        self.slot.__set__(t, value)


def _called_from_array_library(frame: Any) -> bool:
    return frame.f_globals.get("__name__", "").startswith(_ARRAY_LIBRARIES)


def _recording(original: Callable, name: str) -> Callable:
    """A NumPy function NumPy does not dispatch (a conversion, a creation from Python values): recorded
    while this thread traces, so the replay makes the array anew (a constant one is folded)."""
    def record(*args: Any, **kwargs: Any) -> Any:
        rec = active()
        if rec is not None and not _called_from_array_library(sys._getframe(1)):
            return rec.call(original, args, kwargs)   # (NumPy's, CuPy's, the emulator's code calls them too)
        if args and type(args[0]) is Traced:          # a tracer kept from a finished trace
            return original(args[0]._v, *args[1:], **kwargs)
        return original(*args, **kwargs)
    record.__name__ = name
    record.__wrapped__ = original  # type: ignore[attr-defined]
    return record


_ARRAY_LIBRARIES = ("numpy", "cupy", "gpugrad.cuda.emulator")
_NOT_DISPATCHED = ("array", "asarray", "asanyarray", "ascontiguousarray", "zeros", "ones", "empty", "full",
                   "arange", "eye", "identity", "linspace", "tri")


@contextlib.contextmanager
def installed(rec: Recorder) -> Iterator[None]:
    """Make ``rec`` this thread's trace and put the hooks in place for the block."""
    from .. import random as gg_random  # noqa: PLC0415
    from ..optim import functional, optimizer  # noqa: PLC0415
    from ..tensor import Tensor  # noqa: PLC0415
    from . import hooks  # noqa: PLC0415

    with _trace_lock:
        if _local.rec is not None:
            raise TraceError("gg.jit: a jitted function was called while another one is being traced; "
                             "call the inner function without gg.jit (nested jit is not supported)")
        data_slot, grad_slot = Tensor.__dict__["data"], Tensor.__dict__["_grad"]
        originals = {name: getattr(np, name) for name in _NOT_DISPATCHED}
        saved = (gg_random.draw_hook, optimizer.jit_hook, functional.jit_hook)
        cuda = hooks.cuda_trace(rec)
        try:
            type.__setattr__(Tensor, "data", _TensorData(data_slot))
            type.__setattr__(Tensor, "_grad", _TensorGrad(grad_slot))
            for name, fn in originals.items():
                setattr(np, name, _recording(fn, name))
            gg_random.draw_hook = hooks.draw_hook
            optimizer.jit_hook = hooks.optimizer_step
            functional.jit_hook = hooks.optimizer_update
            cuda.__enter__()
            _local.rec = rec
            yield
        finally:
            _local.rec = None
            rec.finished = True
            cuda.__exit__(None, None, None)
            gg_random.draw_hook, optimizer.jit_hook, functional.jit_hook = saved
            for name, fn in originals.items():
                setattr(np, name, fn)
            type.__setattr__(Tensor, "_grad", grad_slot)
            type.__setattr__(Tensor, "data", data_slot)
            rec.finished = True
