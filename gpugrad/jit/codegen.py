"""From a traced program to its replay: one generated Python function of array calls.

``build(program)`` works out which slots share memory (storages), drops calls nobody
needs (dead values), merges calls made twice on unchanged inputs (cross-entropy's backward
recomputes its forward's log-sum-exp), gives the calls that can take ``out=`` a buffer
(reused when lifetimes do not overlap; an elementwise call writes over an input that dies
there: a chain of them runs in one buffer, with no temporaries), then writes the replay as
Python source: the calls in trace order, the guards, the tensor bindings, the optimizer's
scalar arithmetic. The source is compiled once; a replay is one call of it.
"""

from __future__ import annotations

import gc
import math
import operator
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from . import fuse
from . import program as P
from .graphs import Segment, report


class Bail(Exception):
    """A guard failed at replay: ``safe`` when nothing visible had changed yet (run eagerly instead)."""

    def __init__(self, reason: str, safe: bool) -> None:
        super().__init__(reason)
        self.reason, self.safe = reason, safe


# ----------------------------------------------------------------------------- storages


def owner(a: Any) -> Any:
    """The array that owns ``a``'s memory (``a`` itself when it owns it)."""
    inner = getattr(a, "_a", None)          # the CUDA emulator's device array wraps a NumPy array
    x = inner if isinstance(inner, np.ndarray) else a
    while True:
        b = getattr(x, "base", None)
        if b is None or not hasattr(b, "shape") or not hasattr(b, "dtype"):
            return x
        x = b


class Storage:
    """One buffer of the trace and the slots that live in it."""

    __slots__ = ("index", "kind", "root", "slots", "written", "escapes", "last_use")

    def __init__(self, index: int, kind: str) -> None:
        self.index, self.kind = index, kind
        self.root = -1                   # the slot that owns it (-1: an array the trace never saw)
        self.slots: list[int] = []
        self.written = False             # changed in place after it was made
        self.escapes = False             # outlives the replay (an output, a tensor's data)
        self.last_use = -1


class Info:
    """What each instruction reads, writes and makes, and the storages of the program."""

    def __init__(self, prog: P.Program) -> None:
        self.prog = prog
        self.storages: list[Storage] = []
        keys: dict[int, int] = {}
        for i, slot in enumerate(prog.slots):
            own = owner(slot.value)
            key = id(own)
            s = keys.get(key)
            if s is None:
                s = keys[key] = len(self.storages)
                self.storages.append(Storage(s, slot.kind))
            st = self.storages[s]
            slot.storage = s
            # the first slot that owns the memory (the emulator wraps one NumPy array in many objects)
            slot.root = st.root < 0 and (own is slot.value or own is getattr(slot.value, "_a", None))
            if slot.root:
                st.root = i
                st.kind = slot.kind
            st.slots.append(i)
        self.reads: list[list[int]] = []
        self.writes: list[set[int]] = []
        self.makes: list[list[int]] = []
        for i, ins in enumerate(prog.instrs):
            self.reads.append(_reads(ins))
            w: set[int] = set()
            if type(ins) is P.Call:
                for slot in P.refs(P.mutated_positions(ins.fn, ins.args, ins.kwargs)):
                    w.add(prog.slots[slot].storage)
                self.makes.append([s for s in ins.outs() if prog.slots[s].producer == i])
            elif type(ins) is P.Draw:
                self.makes.append([ins.slot])
            else:
                self.makes.append([])
            self.writes.append(w)

    def storage_of(self, slot: int) -> Storage:
        return self.storages[self.prog.slots[slot].storage]

    def outside(self, storage: int) -> bool:
        return self.storages[storage].kind != P.FRESH


def _reads(ins: Any) -> list[int]:
    t = type(ins)
    if t is P.Call or t is P.CallGuard:
        return ins.reads()
    if t is P.SetData or t is P.ReadGuard:
        return [ins.slot]
    return []


# ----------------------------------------------------------------------------- common calls

_NOT_MERGED = {"empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
               "array", "copy", "ascontiguousarray"}


def merge_common_calls(info: Info) -> dict[int, int]:
    """Calls made twice with the same arguments on unchanged arrays: the second is dropped and its
    results read the first's. Returns the slot replacements (dropped instructions become None)."""
    prog = info.prog
    version = [0] * len(info.storages)
    outside_version = 0
    seen: dict[Any, int] = {}
    replaced: dict[int, int] = {}
    written_later = {s for w in info.writes for s in w}
    for i, ins in enumerate(prog.instrs):
        if type(ins) is P.Call and not info.writes[i]:
            key = _call_key(ins, version, outside_version, replaced, info)
            made = info.makes[i]
            mergeable = (key is not None and made and len(made) == len(ins.outs())
                         and all(prog.slots[s].root and prog.slots[s].storage not in written_later
                                 for s in made))
            if mergeable:
                first = seen.get(key)
                if first is None:
                    seen[key] = i
                else:
                    for a, b in zip(ins.outs(), prog.instrs[first].outs()):
                        replaced[a] = b
                    prog.instrs[i] = None
                    continue
        for s in info.writes[i]:
            version[s] += 1
            if info.outside(s):
                outside_version += 1
    _substitute(prog, replaced)
    return replaced


def _call_key(ins: P.Call, version: list[int], outside_version: int, replaced: dict, info: Info) -> Any:
    name = P.fn_name(ins.fn) if type(ins.fn) is not P.Method else ins.fn.name
    if name in _NOT_MERGED:
        return None
    try:
        key = (id(ins.fn), _freeze(ins.args, version, outside_version, replaced, info),
               _freeze(ins.kwargs, version, outside_version, replaced, info))
        hash(key)
    except TypeError:
        return None
    return key


def _freeze(x: Any, version: list[int], ov: int, replaced: dict, info: Info) -> Any:
    t = type(x)
    if t is P.Ref:
        slot = replaced.get(x.slot, x.slot)
        s = info.prog.slots[slot].storage
        return ("ref", slot, ov if info.outside(s) else version[s])
    if t is tuple or t is list:
        return (t.__name__, tuple(_freeze(v, version, ov, replaced, info) for v in x))
    if t is dict:
        return ("dict", tuple(sorted((k, _freeze(v, version, ov, replaced, info)) for k, v in x.items())))
    if t is slice:
        return ("slice", _freeze((x.start, x.stop, x.step), version, ov, replaced, info))
    if t is float:
        return ("float", repr(x))
    if t is P.SymNode:
        return ("sym", x.id)
    if isinstance(x, np.ndarray):
        raise TypeError("arrays are not keys")
    return (t, x)


def _substitute(prog: P.Program, replaced: dict[int, int]) -> None:
    if not replaced:
        return
    for ins in prog.instrs:
        t = type(ins)
        if t is P.Call or t is P.CallGuard:
            ins.args = _sub(ins.args, replaced)
            ins.kwargs = _sub(ins.kwargs, replaced)
        elif (t is P.SetData or t is P.ReadGuard) and ins.slot in replaced:
            ins.slot = replaced[ins.slot]
    prog.outputs = _sub(prog.outputs, replaced)


def _sub(x: Any, replaced: dict[int, int]) -> Any:
    t = type(x)
    if t is P.Ref:
        return P.Ref(replaced[x.slot]) if x.slot in replaced else x
    if t is tuple or t is list:
        return t([_sub(v, replaced) for v in x])
    if t is dict:
        return {k: _sub(v, replaced) for k, v in x.items()}
    if t is slice:
        return slice(_sub(x.start, replaced), _sub(x.stop, replaced), _sub(x.step, replaced))
    return x


# ----------------------------------------------------------------------------- dead values


def alive_tensor(ref: P.TensorRef) -> bool:
    """Whether a tensor bound by the trace can still be seen: the trace's caller holds the rest."""
    return ref.owner is not None or ref.arg is not None or ref.alive()


def remove_dead(info: Info, output_slots: list[int]) -> None:
    """Drop the instructions whose results nobody reads and that change nothing visible."""
    prog = info.prog
    live_slots = set(output_slots)
    live_storages = {prog.slots[s].storage for s in output_slots}
    for i in range(len(prog.instrs) - 1, -1, -1):
        ins = prog.instrs[i]
        t = type(ins)
        if ins is None:
            continue
        if t is P.SetData:
            keep = alive_tensor(ins.ref)
        elif t is P.SetGrad or t is P.GradGuard:
            keep = alive_tensor(ins.target)
        elif t is P.Call:
            keep = (any(s in live_slots for s in info.makes[i])
                    or any(s in live_storages or info.outside(s) for s in info.writes[i]))
        else:
            keep = True                  # draws, guards, grad bindings, optimizer state writes
        if not keep:
            prog.instrs[i] = None
            continue
        for s in info.reads[i]:
            live_slots.add(s)
            live_storages.add(prog.slots[s].storage)
        for s in info.makes[i]:
            st = prog.slots[s]
            if st.root:
                live_storages.discard(st.storage)


# ----------------------------------------------------------------------------- constants


def fold_constants(info: Info, output_slots: list[int]) -> None:
    """Calls on constants only, or on shapes only (``ones_like``: backward's seed), give the same
    arrays at every replay: their results from the trace become constants, the calls go."""
    prog = info.prog
    written = {s for w in info.writes for s in w}
    outs = set(output_slots)
    const = {i for i, s in enumerate(prog.slots)
             if s.kind == P.EXTERNAL and not isinstance(s.origin, P.TensorRef) and s.storage not in written}
    for i, ins in enumerate(prog.instrs):
        if type(ins) is not P.Call or info.writes[i] or P.sym_nodes((ins.args, ins.kwargs)):
            continue
        made = info.makes[i]
        if not made or len(made) != len(ins.outs()):
            continue
        name = ins.fn.name if type(ins.fn) is P.Method else P.fn_name(ins.fn)
        if not (name in P.SHAPE_ONLY or all(r in const for r in info.reads[i])):
            continue
        if name in _NOT_MERGED - P.SHAPE_ONLY or _random(ins.fn):
            continue
        if any(prog.slots[s].storage in written or s in outs for s in made):
            continue
        for s in made:
            prog.slots[s].kind, prog.slots[s].origin = P.EXTERNAL, None
            const.add(s)
        prog.instrs[i] = None


def _random(fn: Any) -> bool:
    module = getattr(fn, "__module__", None) or ""
    return "random" in module or isinstance(getattr(fn, "__self__", None), np.random.Generator)


# ----------------------------------------------------------------------------- buffers

_ELEMENTWISE_OPERATORS = {f for f in P.OPERATOR_UFUNC if f is not operator.matmul}
_UFUNC_TYPES = {"ufunc", "Ufunc", "_GUFunc"}      # CuPy's ufuncs, the emulator's, CuPy's matmul


def _ufunc_of(fn: Any, xp: Any) -> Any:
    """The ufunc a recorded call is (a ufunc, or an operator on arrays), or None."""
    if isinstance(fn, np.ufunc) or type(fn).__name__ in _UFUNC_TYPES:
        return fn
    name = P.OPERATOR_UFUNC.get(fn)
    return None if name is None else getattr(xp, name, None)


def _planned_form(ins: P.Call, xp: Any) -> tuple[str, Any] | None:
    """How a call writes its result into a given buffer: ("out", fn) / ("copyto", None) / ("empty", None)."""
    fn = ins.fn
    if type(fn) is P.Method:
        if fn.name in P.OUT_METHODS and "out" not in ins.kwargs:
            return ("out", fn)
        if fn.name in P.COPY_METHODS and _copy_args_ok(ins):
            return ("copyto", None)
        return None
    if "out" in ins.kwargs:
        return None
    uf = _ufunc_of(fn, xp)
    if uf is not None:
        if getattr(uf, "nout", 1) != 1 or fn is operator.pow:
            return None
        if fn in P.OPERATOR_UFUNC and not _operands_are_arrays(ins):
            return None
        return ("out", uf)
    name = P.fn_name(fn)
    if name in ("empty_like", "empty"):
        return ("empty", None)
    if name in P.OUT_FUNCTIONS_BY_NAME and getattr(fn, "__module__", "").split(".")[0] in ("numpy", "cupy"):
        return ("out", fn)
    return None


def _copy_args_ok(ins: P.Call) -> bool:
    """``x.astype(dtype)`` / ``x.copy()`` with only arguments that copyto reproduces."""
    if ins.fn.name == "copy":
        return not ins.args[1:] and not ins.kwargs
    extra = set(ins.kwargs) - {"copy"}
    return len(ins.args) == 2 and not extra and ins.kwargs.get("copy", True) is True


def _operands_are_arrays(ins: P.Call) -> bool:
    """An operator is its ufunc when an operand is an array slot (not two Python numbers)."""
    return any(type(a) is P.Ref for a in ins.args)


class Plan:
    """The buffer each storage made by a call is written into (None: the call allocates, as eager)."""

    def __init__(self) -> None:
        self.buffer: dict[int, int] = {}          # storage -> buffer index
        self.buffers: list[Any] = []              # the arrays (made when the replay is built)
        self.form: dict[int, tuple[str, Any]] = {}   # instruction -> how it writes into its buffer


def plan_buffers(info: Info, output_slots: list[int], persistent: set[int], xp: Any) -> Plan:
    """Give every storage a call makes a buffer where the call can write into one.

    Storages that outlive the replay (outputs) keep allocating, so each call returns new
    arrays; ``persistent`` storages (a tensor's data, e.g. a gradient) get a buffer of their
    own, kept across replays. The rest share buffers of one shape and dtype when their
    lifetimes do not overlap, and an elementwise call writes over an input that dies there.
    """
    prog = info.prog
    plan = Plan()
    n = len(prog.instrs)
    for st in info.storages:
        st.last_use = -1
    for i, ins in enumerate(prog.instrs):
        if ins is None:
            continue
        for s in info.reads[i]:
            info.storage_of(s).last_use = i
        for s in info.writes[i]:
            info.storages[s].last_use = max(info.storages[s].last_use, i)
    for s in output_slots:
        info.storage_of(s).escapes = True
    pools: dict[tuple, list[int]] = {}                 # (type, shape, dtype) -> buffers
    busy_until: list[int] = []                         # buffer -> last use of what it holds
    for i, ins in enumerate(prog.instrs):
        if type(ins) is not P.Call:
            continue
        made = [s for s in info.makes[i] if prog.slots[s].root]
        if len(made) != 1:
            continue
        st = info.storage_of(made[0])
        if st.escapes or st.last_use < 0:
            continue
        form = _planned_form(ins, xp)
        if form is None:
            continue
        value = prog.slots[made[0]].value
        if not isinstance(value, _array_types(xp)) or not _contiguous(value):
            continue
        if st.index in persistent:
            plan.buffer[st.index] = _own_buffer(plan, value)
            busy_until.append(n)
            plan.form[i] = form
            continue
        key = (type(value), value.shape, value.dtype)
        buf = _overwritable_input(info, plan, ins, i, key, form)
        if buf is None:
            buf = next((b for b in pools.get(key, ()) if busy_until[b] < i), None)
        if buf is None:
            buf = len(plan.buffers)
            plan.buffers.append(value)             # a template: the replay allocates one like it
            busy_until.append(-1)
            pools.setdefault(key, []).append(buf)
        plan.buffer[st.index] = buf
        plan.form[i] = form
        busy_until[buf] = st.last_use
    return plan


def _own_buffer(plan: Plan, value: Any) -> int:
    plan.buffers.append(value)
    return len(plan.buffers) - 1


def _overwritable_input(info: Info, plan: Plan, ins: P.Call, i: int, key: tuple,
                        form: tuple) -> int | None:
    """The buffer of an input an elementwise call may write its result over (the input dies here)."""
    if form[0] != "out" or (_ufunc_of(ins.fn, None) is None and ins.fn not in _ELEMENTWISE_OPERATORS):
        return None
    if ins.fn is operator.matmul or getattr(ins.fn, "__name__", "") == "matmul":
        return None
    for a in ins.args:
        if type(a) is not P.Ref:
            continue
        slot = info.prog.slots[a.slot]
        st = info.storages[slot.storage]
        if (slot.root and st.kind == P.FRESH and not st.escapes and st.last_use == i
                and st.index in plan.buffer and len(st.slots) == 1
                and (type(slot.value), slot.value.shape, slot.value.dtype) == key):
            return plan.buffer[st.index]
    return None


def _array_types(xp: Any) -> tuple[type, ...]:
    return (np.ndarray,) if xp is np else (xp.ndarray,)


def _contiguous(value: Any) -> bool:
    try:
        return bool(value.flags.c_contiguous)
    except AttributeError:
        return False


# ----------------------------------------------------------------------------- locations

def locations(arr: Any) -> list[tuple[dict, Any]]:
    """The dict entries that hold ``arr`` (an optimizer's state, say), found through the GC."""
    found = []
    for ref in gc.get_referrers(arr):
        if type(ref) is dict:
            for k, v in ref.items():
                if v is arr:
                    found.append((ref, k))
    return found


# ----------------------------------------------------------------------------- the source


class Source:
    """The replay's Python text and the constants it names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: list[Any] = []
        self._const_index: dict[int, int] = {}

    def const(self, value: Any) -> str:
        k = self._const_index.get(id(value))
        if k is None or self.consts[k] is not value:
            k = len(self.consts)
            self.consts.append(value)
            self._const_index[id(value)] = k
        return f"c{k}"

    def literal(self, x: Any) -> str:
        t = type(x)
        if x is None or x is Ellipsis or t is bool or t is int or t is str:
            return repr(x)
        if t is float:
            return repr(x) if math.isfinite(x) else self.const(x)
        if t is tuple:
            inner = ", ".join(self.literal(v) for v in x)
            return f"({inner},)" if len(x) == 1 else f"({inner})"
        if t is list:
            return "[" + ", ".join(self.literal(v) for v in x) + "]"
        if t is dict and all(type(k) is str for k in x):
            return "{" + ", ".join(f"{k!r}: {self.literal(v)}" for k, v in x.items()) + "}"
        if t is slice:
            return f"slice({self.literal(x.start)}, {self.literal(x.stop)}, {self.literal(x.step)})"
        return self.const(x)

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)


def _same(a: Any, b: Any) -> bool:
    """A guard's comparison: equal, and NaN matches NaN."""
    if a == b:
        return True
    try:
        return bool(math.isnan(a) and math.isnan(b))
    except TypeError:
        return False


class Replay:
    """A built program: ``run(leaves)`` replays it; ``segments``: its CUDA graph segments."""

    def __init__(self, fn: Callable, source: str, n_buffers: int, n_instructions: int) -> None:
        self.run = fn
        self.source = source
        self.n_buffers = n_buffers
        self.n_instructions = n_instructions
        self.segments: list[Segment] = []
        self.launches_outside = 0

    def launch_report(self) -> dict[str, Any]:
        """What a replay launches on CUDA (gpugrad.jit.graphs.report)."""
        return report(self.segments, self.launches_outside)


class _Writer:
    """Writes the replay function of a program whose dead code and buffers are worked out."""

    def __init__(self, info: Info, plan: Plan, xp: Any, output_slots: list[int], buffers: list[Any]) -> None:
        self.info, self.plan, self.xp = info, plan, xp
        self.buffers = buffers
        self.graphs = xp is not np                    # on CUDA: device work in graph segments
        self.segment: list[str] | None = None          # the open graph segment's lines
        self.pending: list[tuple[int, Any]] = []       # Python-side instructions behind it
        self.pre: list[str] = []                       # the copies of its arguments, before it
        self.segment_defs: list[tuple[str, list[str]]] = []
        self.static: dict[int, str] = {}               # slot -> the fixed buffer segments read it from
        self.seg_made: set[int] = set()
        self.checked: dict[int, str] = {}              # slot of a tensor's array -> its checked holder
        self.in_segment = False
        self.fixed: dict[int, Any] = {}                # slot -> the array it always is (a buffer, a view)
        self.bound_slot: dict[int, int] = {}           # id(TensorRef) -> the slot last bound to it
        # tensors the trace made and gave to an argument as its .grad: each replay makes its own
        self.argument_grads = {id(ins.grad) for ins in info.prog.instrs if type(ins) is P.SetGrad
                               and ins.grad is not None and ins.grad.owner is None and ins.grad.arg is None
                               and _through_argument(ins.target)}
        self.prog = info.prog
        self.src = Source()
        self.names: dict[int, str] = {}                # slot -> how the source names it
        self.output_slots = output_slots
        self.bails: list[tuple[str, bool]] = []
        self.effects_before: list[bool] = self._effects_before()
        self.sym_done: set[int] = set()
        self.sym_live = self._live_syms()

    # ------------------------------------------------------------------ names
    def name(self, slot: int) -> str:
        if self.in_segment:                        # a segment's function sees constants only
            if slot in self.static:
                return self.static[slot]
            if slot in self.checked:
                return self.checked[slot]
        n = self.names.get(slot)
        if n is None:
            s = self.prog.slots[slot]
            if s.kind == P.EXTERNAL and not isinstance(s.origin, P.TensorRef):
                n = self.src.const(s.value)         # an array the trace found: used as it is
            else:
                n = f"v{slot}"
            self.names[slot] = n
        return n

    def tpl(self, x: Any) -> str:
        t = type(x)
        if t is P.Ref:
            return self.name(x.slot)
        if t is P.SymNode:
            return f"s{x.id}"
        if t is tuple:
            inner = ", ".join(self.tpl(v) for v in x)
            return f"({inner},)" if len(x) == 1 else f"({inner})"
        if t is list:
            return "[" + ", ".join(self.tpl(v) for v in x) + "]"
        if t is dict:
            return "{" + ", ".join(f"{self.src.literal(k)}: {self.tpl(v)}" for k, v in x.items()) + "}"
        if t is slice:
            return f"slice({self.tpl(x.start)}, {self.tpl(x.stop)}, {self.tpl(x.step)})"
        return self.src.literal(x)

    def tensor(self, ref: P.TensorRef) -> str:
        if ref.arg is not None:
            return f"T[{ref.arg}]"
        if ref.owner is not None:
            return f"{self.tensor(ref.owner)}._grad"
        ref.keep()
        return self.src.const(ref.kept)

    # ------------------------------------------------------------------ effects and bails
    def _effects_before(self) -> list[bool]:
        """For each position: whether something visible outside the replay has changed before it."""
        flags, seen = [], False
        for i, ins in enumerate(self.prog.instrs):
            flags.append(seen)
            t = type(ins)
            if t in (P.PySet, P.Draw) or (t is P.SetData and alive_tensor(ins.ref)) or (
                    t is P.SetGrad and alive_tensor(ins.target)):
                seen = True
            elif t is P.Call and any(self.info.outside(s) for s in self.info.writes[i]):
                seen = True
        flags.append(seen)
        return flags

    def bail(self, position: int, reason: str) -> str:
        self.bails.append((reason, not self.effects_before[position]))
        return f"raise c_bail({len(self.bails) - 1})"

    # ------------------------------------------------------------------ symbols
    def _live_syms(self) -> set[int]:
        live: set[int] = set()
        stack = []
        for ins in self.prog.instrs:
            t = type(ins)
            if t is P.Call or t is P.CallGuard:
                stack += P.sym_nodes((ins.args, ins.kwargs))
            elif t is P.SymGuard:
                stack.append(ins.node)
            elif t is P.PySet and type(ins.node) is P.SymNode:
                stack.append(ins.node)
        while stack:
            node = stack.pop()
            if node.id not in live:
                live.add(node.id)
                stack += node.deps()
        return live

    def earliest(self) -> dict[int, int]:
        """Each symbol's earliest position: after the last write of a state entry it reads."""
        writes: list[tuple[int, int, Any]] = [(i, id(ins.container), ins.key)
                                              for i, ins in enumerate(self.prog.instrs)
                                              if type(ins) is P.PySet]
        at: dict[int, int] = {}
        for node in self.prog.syms:
            if node.op == "src":
                container, key, _ = node.args
                pos = 0
                for i, c, k in writes:
                    if i < node.position and c == id(container) and k == key:
                        pos = i + 1
                at[node.id] = pos
            else:
                at[node.id] = max([at[d.id] for d in node.deps()], default=0)
        return at

    def sym_expr(self, node: P.SymNode) -> str:
        op, args = node.op, node.args
        if op == "src":
            container, key, index = args
            text = f"{self.src.const(container)}[{self.src.literal(key)}]"
            return text if index is None else f"{text}[{index}]"
        a = [self.tpl(x) for x in args]
        if op in P.SYM_SOURCE_TEXT:
            return f"({a[0]} {P.SYM_SOURCE_TEXT[op]} {a[1]})"
        if op == "neg":
            return f"(-{a[0]})"
        if op == "abs":
            return f"abs({a[0]})"
        if op == "sqrt":
            return f"c_sqrt({a[0]})"
        if op == "bool":
            return f"bool({a[0]})"
        raise AssertionError(f"unknown symbol op {op}")

    # ------------------------------------------------------------------ the function
    def write(self) -> tuple[str, list[Any]]:
        src = self.src
        self.prologue()
        at = self.earliest()
        by_position: dict[int, list[Any]] = {}
        for node in self.prog.syms:
            if node.id in self.sym_live:
                by_position.setdefault(at[node.id], []).append(node)
        guards_at: dict[int, list[P.SymGuard]] = {}
        for ins in self.prog.instrs:
            if type(ins) is P.SymGuard:
                guards_at.setdefault(at[ins.node.id], []).append(ins)
        for ins in self.prog.instrs:                 # a tensor's .grad at entry: checked first
            if type(ins) is P.GradGuard:
                self.grad_guard(ins)
        for i, ins in enumerate(self.prog.instrs):
            if by_position.get(i) or guards_at.get(i):
                self.flush()                         # (Python arithmetic after the work before it)
            for node in by_position.get(i, ()):
                src.emit(f"s{node.id} = {self.sym_expr(node)}")
            for g in guards_at.get(i, ()):
                self.sym_guard(g, i)
            if ins is None or type(ins) in (P.SymGuard, P.GradGuard):
                continue
            kind = self.classify(i, ins)
            if kind == "capture":
                self.into_segment(i, ins)
            elif kind == "python" and self.segment is not None and type(ins) is not P.Call:
                self.pending.append((i, ins))          # (a Call here only names a view or alias)
            else:
                if kind == "other":
                    self.flush()
                getattr(self, "emit_" + type(ins).__name__)(i, ins)
        self.flush()
        outs = ", ".join(self.name(s) for s in self.output_slots)
        src.emit(f"return ({outs}{',' if len(self.output_slots) == 1 else ''})")
        consts = ", ".join(f"c{k}" for k in range(len(src.consts)))
        head = [f"def make({consts}):" if consts else "def make():"]
        segments = [name for name, _ in self.segment_defs]
        for name, lines in self.segment_defs:
            head += [f"  def {name}_run():", *("  " + line for line in lines),
                     f"  {name} = c_Segment({name}_run, {name!r}, {len(lines)})"]
        head.append("  def replay(T):")
        body = ["  " + line for line in src.lines]
        tail = [f"  return replay, [{', '.join(segments)}]"]
        return "\n".join(head + body + tail) + "\n", src.consts

    # ------------------------------------------------------------------ CUDA graph segments
    def classify(self, i: int, ins: Any) -> str:
        """"capture" (device work a graph can hold), "python" (no device work) or "other"."""
        t = type(ins)
        if t in (P.SetData, P.SetGrad, P.PySet):
            return "python"
        if t is not P.Call or not self.graphs:
            return "other"
        if P.sym_nodes((ins.args, ins.kwargs)):
            return "other"                           # a scalar the replay computes: baked into a graph
        fn = ins.fn
        launch = hasattr(fn, "written")
        if self._alias(ins) is not None:
            return "python"
        if not launch and i not in self.plan.form:
            if self._view_of_fixed(ins) and self._is_view(ins):
                return "python"
            if not self._in_place(i, ins):
                return "other"
        if not launch and _is_blas(fn):               # CuPy refuses cuBLAS during capture
            return "other"
        if launch and type(fn).__name__ == "MultiUpdate":
            return "other"
        for slot in self.info.reads[i]:
            if not self._fixed(slot) and slot not in self.seg_made and self._written_by(i, slot):
                return "other"                       # it would write into a copy of the array
        return "capture"

    def _is_view(self, ins: P.Call) -> bool:
        """Whether the call, on the fixed array, gives a view of it (fold_view makes it once then)."""
        base = self.fixed[ins.args[0].slot]
        try:
            view = ins.fn(base, *ins.args[1:], **ins.kwargs)
        except Exception:  # noqa: BLE001 - then it is not a plain view
            return False
        return owner(view) is owner(base)

    def _in_place(self, i: int, ins: P.Call) -> bool:
        """A call that only writes arrays that exist (``a += b``, ``out=``, ``a[i] = v``), all fixed."""
        if self.info.makes[i] or not self.info.writes[i]:
            return False
        if not (ins.fn in P.INPLACE_UFUNC or ins.fn is operator.setitem or "out" in ins.kwargs):
            return False
        written = [s for s in self.info.reads[i] if self._written_by(i, s)]
        return bool(written) and all(self._fixed(s) for s in written)

    def _view_of_fixed(self, ins: P.Call) -> bool:
        """A view (a slice, a reshape, a transpose: no device work) of a fixed buffer."""
        fn, args = ins.fn, ins.args
        if (type(ins.out) is not P.Ref or not args or type(args[0]) is not P.Ref
                or args[0].slot not in self.fixed):
            return False
        if P.refs((args[1:], ins.kwargs)) or P.sym_nodes((args, ins.kwargs)):
            return False                                 # an index array: a gather, not a view
        return (fn in P.ATTRIBUTE_VIEWS or fn is operator.getitem
                or (type(fn) is P.Method and fn.name in P.VIEW_METHODS))

    def _written_by(self, i: int, slot: int) -> bool:
        return self.prog.slots[slot].storage in self.info.writes[i]

    def _fixed(self, slot: int) -> bool:
        """An array at the same address every replay (a buffer, a constant, a checked tensor's)."""
        s = self.prog.slots[slot]
        return (slot in self.fixed or slot in self.seg_made
                or (s.kind == P.EXTERNAL and (not isinstance(s.origin, P.TensorRef) or s.origin.arg is None)))

    def into_segment(self, i: int, ins: P.Call) -> None:
        if self.segment is None:
            self.segment, self.pending, self.pre = [], [], []
        for slot in self.info.reads[i]:
            if not self._fixed(slot) and slot not in self.static:      # an argument: copied in first
                value = self.prog.slots[slot].value
                buf = self.xp.empty(tuple(value.shape), dtype=value.dtype)
                self.static[slot] = self.src.const(buf)
                self.pre.append(f"{self.src.const(self.xp.copyto)}({self.static[slot]}, {self.name(slot)})")
        saved, self.src.lines = self.src.lines, self.segment
        self.in_segment = True
        try:
            self.emit_Call(i, ins)
        finally:
            self.in_segment = False
            self.src.lines = saved
        self.seg_made.update(self.info.makes[i])

    def flush(self) -> None:
        """Close the open segment: copy its arguments in, launch it, then its Python-side instructions."""
        if self.segment is None:
            return
        segment, pending, pre = self.segment, self.pending, self.pre
        self.segment = None
        if segment:                                  # (its calls may all have only named buffers)
            name = f"g{len(self.segment_defs)}"
            self.segment_defs.append((name, segment))
            for line in pre:
                self.src.emit(line)
            self.src.emit(f"{name}()")
        for i, ins in pending:
            getattr(self, "emit_" + type(ins).__name__)(i, ins)

    def prologue(self) -> None:
        """Read the arguments' arrays, and the tensors' arrays the trace found there; check them."""
        src = self.src
        for d, opt, kind, key in self.prog.dict_paths:
            found = (f"{src.const(opt)}.param_groups[{key}]" if kind == "group" else
                     f"{src.const(opt)}.state.get({src.const(key)})")
            reason = f"the optimizer's {'parameter group' if kind == 'group' else 'state'} was replaced"
            src.emit(f"if {found} is not {src.const(d)}: {self.bail(0, reason)}")
        for i, s in enumerate(self.prog.slots):
            if s.kind == P.INPUT:
                src.emit(f"v{i} = T[{s.origin}].data")
                self.names[i] = f"v{i}"
        for i, s in enumerate(self.prog.slots):
            if s.kind != P.EXTERNAL:
                continue
            if isinstance(s.origin, P.TensorRef):
                name = f"v{i}"
                self.names[i] = name
                src.emit(f"{name} = {self.tensor(s.origin)}.data")
                last = src.const([s.value])
                self.checked[i] = f"{last}[0]"
                check = src.const(_checker(s.value, i, strict=self.graphs))
                src.emit(f"if {name} is not {last}[0]: {check}({name}, {last})")
            elif i in self._written_slots():
                for container, key in locations(s.value)[:1]:
                    src.emit(f"if {src.const(container)}[{src.literal(key)}] is not {self.name(i)}: "
                             f"{self.bail(0, 'the optimizer state the trace updated was replaced')}")

    def _written_slots(self) -> set[int]:
        if not hasattr(self, "_written"):
            self._written = {slot for i, w in enumerate(self.info.writes) if self.prog.instrs[i] is not None
                             for st in w for slot in self.info.storages[st].slots}
        return self._written

    def _alias(self, ins: P.Call) -> int | None:
        """The slot a call only re-wraps (``cupy.asarray(x)`` on the emulator: another object, the same
        memory, shape and dtype), or None."""
        if (P.fn_name(ins.fn) not in ("asarray", "asanyarray") or len(ins.args) != 1 or ins.kwargs
                or type(ins.args[0]) is not P.Ref or type(ins.out) is not P.Ref):
            return None
        a, b = self.prog.slots[ins.args[0].slot], self.prog.slots[ins.out.slot]
        same = a.storage == b.storage and a.shape == b.shape and a.dtype == b.dtype
        return ins.args[0].slot if same and _contiguous(a.value) == _contiguous(b.value) else None

    def emit_Call(self, i: int, ins: P.Call) -> None:
        alias = self._alias(ins)
        if alias is not None:
            self.names[ins.out.slot] = self.name(alias)
            if alias in self.fixed:
                self.fixed[ins.out.slot] = self.fixed[alias]
            if alias in self.checked:
                self.checked[ins.out.slot] = self.checked[alias]
            return
        made = [s for s in self.info.makes[i] if self.prog.slots[s].root]
        storage = self.prog.slots[made[0]].storage if len(made) == 1 else None
        form = self.plan.form.get(i)
        if form is not None and storage in self.plan.buffer:
            index = self.plan.buffer[storage]
            buf = f"b{index}"
            kind, fn = form
            self.fixed[made[0]] = self.buffers[index]
            if kind == "empty":
                self.names[made[0]] = buf
                return
            if self.graphs:                            # (a graph may write the buffer: name it)
                self.names[made[0]] = buf
            target = self.name(made[0])
            if kind == "copyto":
                cast = ", casting='unsafe'" if ins.fn.name == "astype" else ""
                self.src.emit(f"{self.src.const(self._xp_copyto())}({buf}, {self.tpl(ins.args[0])}{cast})")
                if not self.graphs:
                    self.src.emit(f"{target} = {buf}")
                return
            text = self.call_text(fn, ins.args, ins.kwargs, out=buf)
            self.src.emit(text if self.graphs else f"{target} = {text}")
            return
        if self.fold_view(ins):
            return
        text = self.call_text(ins.fn, ins.args, ins.kwargs)
        self.src.emit(self.assign(ins.out, text, set(self.info.makes[i])))

    def fold_view(self, ins: P.Call) -> bool:
        """A view of a fixed buffer (a slice of a scratch array, its reshape) is made once, here."""
        fn, args = ins.fn, ins.args
        if not self._view_of_fixed(ins):
            return False
        base = self.fixed[args[0].slot]
        view = fn(base, *args[1:], **ins.kwargs)
        if owner(view) is not owner(base):
            return False
        self.fixed[ins.out.slot] = view
        self.names[ins.out.slot] = self.src.const(view)
        return True

    def _xp_copyto(self) -> Any:
        return self.xp.copyto

    def assign(self, out: Any, text: str, made: set[int]) -> str:
        """``text`` with its new slots bound (slots it returns that exist already keep their name)."""
        t = type(out)
        if t is P.Ref:
            return f"{self.name(out.slot)} = {text}" if out.slot in made else text
        if not any(s in made for s in P.refs(out)):
            return text
        if (t is tuple or t is list) and out and all(type(o) is P.Ref for o in out):
            names = ", ".join(self.name(o.slot) if o.slot in made else "_" for o in out)
            return f"{names}{',' if len(out) == 1 else ''} = {text}"
        parts = [f"_r = {text}"]
        for path, ref in _paths(out):
            if ref.slot in made:
                parts.append(f"{self.name(ref.slot)} = _r{path}")
        return "; ".join(parts)

    def call_text(self, fn: Any, args: tuple, kwargs: dict, out: str | None = None) -> str:
        reduce = _as_reduce(fn, args, kwargs, self.xp)
        if reduce is not None:
            fn, args, kwargs = reduce
        a = [self.tpl(x) for x in args]
        kw = [f"{k}={self.tpl(v)}" for k, v in kwargs.items()]
        if out is not None:
            kw.append(f"out={out}")
        if fn in P.ATTRIBUTE_VIEWS and len(a) == 1 and not kw:
            return f"{a[0]}.{P.ATTRIBUTE_VIEWS[fn]}"
        if type(fn) is P.Method:
            return f"{a[0]}.{fn.name}({', '.join(a[1:] + kw)})"
        if out is None and not kw:
            if fn in P.OPERATOR_TEXT and len(a) == 2:
                return f"({a[0]} {P.OPERATOR_TEXT[fn]} {a[1]})"
            if fn in P.UNARY_TEXT and len(a) == 1:
                return f"({P.UNARY_TEXT[fn]}{a[0]})"
            if fn is operator.getitem:
                return f"{a[0]}[{a[1]}]"
        if fn in P.INPLACE_UFUNC and len(a) == 2 and not kw and self._array_slot(args[0]):
            uf = self.src.const(getattr(self.xp, P.INPLACE_UFUNC[fn]))
            return f"{uf}({a[0]}, {a[1]}, out={a[0]})"
        return f"{self.src.const(fn)}({', '.join(a + kw)})"

    def _array_slot(self, x: Any) -> bool:
        """Whether ``x`` is a slot holding an array (not a NumPy scalar, which ``+=`` replaces)."""
        return type(x) is P.Ref and isinstance(self.prog.slots[x.slot].value, _array_types(self.xp))

    def emit_Draw(self, i: int, ins: P.Draw) -> None:
        args = ", ".join(self.src.literal(a) for a in ins.args)
        self.src.emit(f"{self.name(ins.slot)} = {self.src.const(ins.fn)}({args})")

    def emit_SetData(self, i: int, ins: P.SetData) -> None:
        self.bound_slot[id(ins.ref)] = ins.slot
        if id(ins.ref) not in self.argument_grads:      # that tensor is an earlier call's argument's
            self.src.emit(f"{self.tensor(ins.ref)}.data = {self.name(ins.slot)}")

    def emit_SetGrad(self, i: int, ins: P.SetGrad) -> None:
        if id(ins.target) in self.argument_grads:
            return
        grad = ins.grad
        if grad is None:
            value = "None"
        elif id(grad) in self.argument_grads and id(grad) in self.bound_slot:
            value = f"c_wrap({self.name(self.bound_slot[id(grad)])})"   # an argument's own new .grad
        else:
            value = self.tensor(grad)
        self.src.emit(f"{self.tensor(ins.target)}._grad = {value}")

    def emit_PySet(self, i: int, ins: P.PySet) -> None:
        value = f"s{ins.node.id}" if type(ins.node) is P.SymNode else self.src.literal(ins.node)
        self.src.emit(f"{self.src.const(ins.container)}[{self.src.literal(ins.key)}] = {value}")

    def emit_ReadGuard(self, i: int, ins: P.ReadGuard) -> None:
        v = self.name(ins.slot)
        read = {"bool": f"bool({v})", "int": f"int({v})", "float": f"float({v})", "index": f"c_index({v})",
                "complex": f"complex({v})", "item": f"{v}.item()", "tolist": f"{v}.tolist()"}[ins.kind]
        reason = f"a value the trace read on the host ({ins.kind}) changed: it was {ins.value!r}"
        if type(ins.value) is bool:
            self.src.emit(f"if {read} is not {ins.value!r}: {self.bail(i, reason)}")
        else:
            self.src.emit(f"if not c_same({read}, {self.src.literal(ins.value)}): {self.bail(i, reason)}")

    def emit_CallGuard(self, i: int, ins: P.CallGuard) -> None:
        text = self.call_text(ins.fn, ins.args, ins.kwargs)
        reason = f"{P.describe_fn(ins.fn)}(...) of traced arrays changed: it was {ins.value!r}"
        self.src.emit(f"if not c_same({text}, {self.src.literal(ins.value)}): {self.bail(i, reason)}")

    def sym_guard(self, ins: P.SymGuard, position: int) -> None:
        reason = "an optimizer setting the trace followed (a comparison of its hyperparameters) changed"
        self.src.emit(f"if bool(s{ins.node.id}) is not {bool(ins.answer)!r}: {self.bail(position, reason)}")

    def grad_guard(self, ins: P.GradGuard) -> None:
        t = self.tensor(ins.target)
        reason = (f"a tensor's .grad was {'None' if ins.was_none else 'set'} when traced and is "
                  f"{'set' if ins.was_none else 'None'} now")
        self.src.emit(f"if ({t}._grad is None) is not {ins.was_none!r}: {self.bail(0, reason)}")


_REDUCE_KWARGS = {"axis", "dtype", "out", "keepdims"}


def _as_reduce(fn: Any, args: tuple, kwargs: dict, xp: Any) -> tuple | None:
    """NumPy's ``x.sum(axis=1)``, ``np.max(x, ...)``... as the one ``ufunc.reduce`` call they make
    (the same result, without the Python layers NumPy wraps around it)."""
    if xp is not np:
        return None
    if type(fn) is P.Method:
        name = fn.name
    elif getattr(np, P.fn_name(fn) or "", None) is fn:
        name = P.fn_name(fn)
    else:
        return None
    ufunc = P.REDUCE_UFUNC.get(name)
    if ufunc is None or len(args) > 2 or not set(kwargs) <= _REDUCE_KWARGS:
        return None
    if "dtype" in kwargs and ufunc not in ("add", "multiply"):
        return None
    kw = dict(kwargs)
    axis = args[1] if len(args) == 2 else kw.pop("axis", None)
    if "axis" in kw:
        return None
    return getattr(np, ufunc).reduce, (args[0],), {"axis": axis, **kw}


_BLAS = {"matmul", "dot", "vdot", "inner", "outer", "tensordot", "einsum"}


def _is_blas(fn: Any) -> bool:
    """A call CuPy makes through cuBLAS (which CuPy refuses to capture)."""
    name = fn.name if type(fn) is P.Method else (getattr(fn, "__name__", "") or "").removeprefix("cupy_")
    return fn is operator.matmul or name in _BLAS


def _paths(out: Any, prefix: str = "") -> list[tuple[str, P.Ref]]:
    found = []
    if type(out) is P.Ref:
        return [(prefix, out)]
    if type(out) in (tuple, list):
        for k, v in enumerate(out):
            found += _paths(v, f"{prefix}[{k}]")
    return found


def _checker(template: Any, slot: int, strict: bool = False) -> Callable[[Any, list], None]:
    """Checks a tensor's array the replay found where the trace found ``template``; remembers it.
    ``strict``: any other array is refused (a CUDA graph holds the address of the one it captured)."""
    kind, shape, dtype = type(template), template.shape, template.dtype

    def check(arr: Any, last: list) -> None:
        if strict:
            raise Bail(f"a tensor the function reads (slot {slot}) holds another array than when its CUDA "
                       "graph was captured", True)
        if type(arr) is not kind or arr.shape != shape or arr.dtype != dtype:
            raise Bail(f"a tensor the function reads (slot {slot}) now holds a {type(arr).__name__} "
                       f"{tuple(getattr(arr, 'shape', ()))} {getattr(arr, 'dtype', '')}, not the "
                       f"{kind.__name__} {tuple(shape)} {dtype} it held when traced", True)
        last[0] = arr
    return check


def build(prog: P.Program, output_slots: list[int], xp: Any) -> Replay:
    """The replay of a traced program."""
    info = Info(prog)
    replaced = merge_common_calls(info)
    replaced_outputs = [replaced.get(s, s) for s in output_slots]
    info = Info(_compact(prog))
    remove_dead(info, replaced_outputs)
    info = Info(_compact(prog))
    fold_constants(info, replaced_outputs)
    info = Info(_compact(prog))
    if xp is not np and fuse.rewrite(info, replaced_outputs, xp):    # CUDA: elementwise chains as kernels
        info = Info(prog)
    persistent = _persistent_storages(info)
    for ins in info.prog.instrs:             # bound to a tensor, without a buffer of its own: new each call
        if type(ins) is P.SetData and alive_tensor(ins.ref):
            st = info.storage_of(ins.slot)
            if st.index not in persistent:
                replaced_outputs.append(ins.slot)
    plan = plan_buffers(info, replaced_outputs, persistent, xp)
    buffers = [_fresh_like(xp, b) if k not in _persistent_indices(plan, persistent) else b
               for k, b in enumerate(plan.buffers)]
    writer = _Writer(info, plan, xp, replaced_outputs[:len(output_slots)], buffers)
    text, consts = writer.write()
    bails = writer.bails

    def c_bail(k: int) -> Bail:
        reason, safe = bails[k]
        return Bail(reason, safe)

    from ..tensor import Tensor  # noqa: PLC0415

    namespace: dict[str, Any] = {"c_bail": c_bail, "c_same": _same, "c_sqrt": math.sqrt,
                                 "c_index": operator.index, "c_wrap": Tensor._wrap, "c_Segment": Segment}
    for k, b in enumerate(buffers):
        namespace[f"b{k}"] = b
    code = compile(text, f"<gg.jit replay of {prog.name}>", "exec")
    exec(code, namespace)  # noqa: S102 - our own generated source
    fn, segments = namespace["make"](*consts)
    n = sum(1 for ins in prog.instrs if ins is not None)
    replay = Replay(fn, text, len(buffers), n)
    replay.segments = segments
    replay.launches_outside = _device_calls(info, writer)
    return replay


def _device_calls(info: Info, writer: _Writer) -> int:
    """How many calls of a replay do device work outside its graph segments (kernels and CuPy calls)."""
    inside = sum(len(lines) for _, lines in writer.segment_defs)
    calls = sum(1 for ins in info.prog.instrs if type(ins) is P.Call and (hasattr(ins.fn, "written")
                                                                         or type(ins.fn) is not P.Method))
    return max(calls - inside, 0)


def _compact(prog: P.Program) -> P.Program:
    """Drop the removed instructions; producers and symbol positions follow the new numbering."""
    new_index, kept = {}, []
    for i, ins in enumerate(prog.instrs):
        new_index[i] = len(kept)
        if ins is not None:
            kept.append(ins)
    new_index[len(prog.instrs)] = len(kept)
    prog.instrs = kept
    for slot in prog.slots:
        if slot.producer >= 0:
            slot.producer = new_index[slot.producer]
    for node in prog.syms:
        node.position = new_index[node.position]
    return prog


def _persistent_storages(info: Info) -> set[int]:
    """Storages bound to live tensors at the end (a gradient): a buffer of their own, unless the
    program also reads those tensors' arrays (it would read its own output), or they belong to
    the call's arguments (a new tensor each call)."""
    read = {id(_base_tensor(s.origin)) for s in info.prog.slots
            if s.kind == P.EXTERNAL and isinstance(s.origin, P.TensorRef)}
    final: dict[int, tuple[P.TensorRef, int]] = {}
    argument_grads = set()
    for ins in info.prog.instrs:
        if type(ins) is P.SetData and alive_tensor(ins.ref):
            final[id(ins.ref)] = (ins.ref, ins.slot)
        elif type(ins) is P.SetGrad and ins.grad is not None and _through_argument(ins.target):
            argument_grads.add(id(ins.grad))
    persistent = set()
    for ref, slot in final.values():
        if id(_base_tensor(ref)) in read or _through_argument(ref) or id(ref) in argument_grads:
            continue
        persistent.add(info.prog.slots[slot].storage)
    return persistent


def _base_tensor(ref: P.TensorRef) -> Any:
    """The tensor a reference starts from (``p`` for ``p._grad``)."""
    while ref.owner is not None:
        ref = ref.owner
    return ref.tensor


def _through_argument(ref: P.TensorRef) -> bool:
    while ref.owner is not None:
        ref = ref.owner
    return ref.arg is not None


def _persistent_indices(plan: Plan, persistent: set[int]) -> set[int]:
    return {plan.buffer[s] for s in persistent if s in plan.buffer}


def _fresh_like(xp: Any, template: Any) -> Any:
    return xp.empty(template.shape, dtype=template.dtype)


__all__ = ["Bail", "Replay", "build", "owner", "weakref"]
