"""The traced program: slots (the arrays of one trace) and the instructions that made or used them.

A slot is one array object the trace met: an argument's data (INPUT), an array that existed
before the trace (EXTERNAL: a parameter, optimizer state, a constant), or one a call made
(FRESH). Arrays share memory when one is a view of another; the unit of memory is a
*storage* (the array that owns the buffer), which ``analyse`` works out from the concrete
arrays. Instructions are calls on slots (``Call``), random draws (``Draw``), bindings of
tensors (``SetData``, ``SetGrad``), Python writes of optimizer state (``PySet``), and guards
(``ReadGuard``, ``CallGuard``, ``SymGuard``, ``GradGuard``) that the replay checks again.
"""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

INPUT, EXTERNAL, FRESH = "input", "external", "fresh"


class Slot:
    """One array of the trace: its concrete value (kept until the program is built) and origin."""

    __slots__ = ("value", "kind", "origin", "producer", "shape", "dtype", "storage", "root")

    def __init__(self, value: Any, kind: str, origin: Any, producer: int) -> None:
        self.value, self.kind, self.origin, self.producer = value, kind, origin, producer
        self.shape, self.dtype = tuple(getattr(value, "shape", ())), getattr(value, "dtype", None)
        self.storage = -1           # set by analyse: the storage it lives in
        self.root = False           # whether it is the array that owns that storage


class Ref:
    """A slot inside an instruction's arguments."""

    __slots__ = ("slot",)

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def __repr__(self) -> str:
        return f"v{self.slot}"

    @staticmethod
    def strip(x: Any, traced: type) -> Any:
        """A call's result with its tracers as Refs."""
        t = type(x)
        if t is traced:
            return Ref(x._slot)
        if t is tuple or t is list:
            return t([Ref.strip(v, traced) for v in x])
        return x


def refs(x: Any) -> list[int]:
    """Every slot a template mentions."""
    out: list[int] = []
    _collect(x, out)
    return out


def _collect(x: Any, out: list[int]) -> None:
    t = type(x)
    if t is Ref:
        out.append(x.slot)
    elif t is tuple or t is list:
        for v in x:
            _collect(v, out)
    elif t is dict:
        for v in x.values():
            _collect(v, out)
    elif t is slice:
        _collect((x.start, x.stop, x.step), out)


def sym_nodes(x: Any) -> list[SymNode]:
    out: list[SymNode] = []
    _collect_syms(x, out)
    return out


def _collect_syms(x: Any, out: list) -> None:
    t = type(x)
    if t is SymNode:
        out.append(x)
    elif t is tuple or t is list:
        for v in x:
            _collect_syms(v, out)
    elif t is dict:
        for v in x.values():
            _collect_syms(v, out)


class TensorRef:
    """A tensor the replay binds or reads: the tensor itself (held weakly until the program is
    built), the call's argument ``arg``, or ``owner._grad`` (whichever tensor holds the owner's
    gradient at replay time) when the trace reached it through ``owner.grad``."""

    __slots__ = ("_ref", "owner", "arg", "kept")

    def __init__(self, tensor: Any, owner: Any = None, arg: int | None = None) -> None:
        self._ref = weakref.ref(tensor)
        self.owner, self.arg = owner, arg
        self.kept = None

    @property
    def tensor(self) -> Any:
        return self._ref()

    def alive(self) -> bool:
        return self._ref() is not None

    def keep(self) -> None:
        """Hold the tensor from now on (the replay binds it)."""
        self.kept = self._ref()


class Method:
    """An array method called on a slot (``x.sum(axis=0)``), by name: one object per name."""

    __slots__ = ("name",)
    _known: dict[str, Method] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def of(cls, name: str) -> Method:
        m = cls._known.get(name)
        if m is None:
            m = cls._known[name] = cls(name)
        return m

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, self.name)(*args, **kwargs)

    def __repr__(self) -> str:
        return f".{self.name}"


def call_of(fn: Any) -> Callable:
    """The callable that runs a recorded function on concrete arrays (a Method calls the method)."""
    return fn


def describe_fn(fn: Any) -> str:
    if type(fn) is Method:
        return f"array.{fn.name}"
    if isinstance(fn, np.ufunc):
        return f"numpy.{fn.__name__}"
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


# ----------------------------------------------------------------------------- instructions


class Call:
    """``out = fn(*args, **kwargs)`` on slots: ``out`` is the result's template (Refs for arrays)."""

    __slots__ = ("fn", "args", "kwargs", "out")

    def __init__(self, fn: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.fn, self.args, self.kwargs, self.out = fn, args, kwargs, out

    def reads(self) -> list[int]:
        return refs((self.args, self.kwargs))

    def outs(self) -> list[int]:
        return refs(self.out)


class Draw:
    """A random draw (dropout's mask, randn...): drawn again at every replay, in the same order."""

    __slots__ = ("fn", "args", "slot")

    def __init__(self, fn: Callable, args: tuple, slot: int) -> None:
        self.fn, self.args, self.slot = fn, args, slot


class SetData:
    """``tensor.data = slot``."""

    __slots__ = ("ref", "slot")

    def __init__(self, ref: TensorRef, slot: int) -> None:
        self.ref, self.slot = ref, slot


class SetGrad:
    """``target._grad = grad`` (a tensor, or None)."""

    __slots__ = ("target", "grad")

    def __init__(self, target: TensorRef, grad: TensorRef | None) -> None:
        self.target, self.grad = target, grad


class PySet:
    """``container[key] = sym``: an optimizer's Python state (its step count) written by the step."""

    __slots__ = ("container", "key", "node")

    def __init__(self, container: dict, key: Any, node: Any) -> None:
        self.container, self.key, self.node = container, key, node


class ReadGuard:
    """The trace read ``kind(slot)`` on the host and got ``value``: the replay must get it again."""

    __slots__ = ("slot", "kind", "value")

    def __init__(self, slot: int, kind: str, value: Any) -> None:
        self.slot, self.kind, self.value = slot, kind, value


class CallGuard:
    """A call on slots that gave a Python value (``numpy.array_equal``...): the same again."""

    __slots__ = ("fn", "args", "kwargs", "value")

    def __init__(self, fn: Any, args: tuple, kwargs: dict, value: Any) -> None:
        self.fn, self.args, self.kwargs, self.value = fn, args, kwargs, value

    def reads(self) -> list[int]:
        return refs((self.args, self.kwargs))


class SymGuard:
    """A comparison of optimizer scalars that Python control flow followed: the same answer again."""

    __slots__ = ("node", "answer")

    def __init__(self, node: SymNode, answer: Any) -> None:
        self.node, self.answer = node, answer


class GradGuard:
    """At its first read in the trace, ``target._grad`` was None (or was not): the same at replay."""

    __slots__ = ("target", "was_none")

    def __init__(self, target: TensorRef, was_none: bool) -> None:
        self.target, self.was_none = target, was_none


GUARDS = (ReadGuard, CallGuard, SymGuard, GradGuard)


# ----------------------------------------------------------------------------- symbolic scalars


class SymNode:
    """One scalar expression: a source ``("src", (container, key, index))`` or an op on nodes."""

    __slots__ = ("op", "args", "position", "id")

    def __init__(self, op: str, args: tuple, position: int, ident: int) -> None:
        self.op, self.args, self.position, self.id = op, args, position, ident

    def deps(self) -> list[SymNode]:
        return [a for a in self.args if type(a) is SymNode] if self.op != "src" else []


SYM_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge,
}
SYM_UNARY: dict[str, Callable[[Any], Any]] = {"neg": operator.neg, "abs": abs, "sqrt": math.sqrt,
                                              "bool": bool}
SYM_SOURCE_TEXT = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
                   "pow": "**", "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


# ----------------------------------------------------------------------------- the program


class Program:
    """The instructions and slots of one trace (what ``trace.Recorder`` builds)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.slots: list[Slot] = []
        self.instrs: list[Any] = []
        self.syms: list[SymNode] = []
        self._sym_index: dict[Any, SymNode] = {}    # (op, args) -> node: one node per expression
        # the optimizer dicts the trace read: (dict, optimizer, "group" | "state", group index | param);
        # the replay checks the optimizer still holds them (load_state_dict makes new ones)
        self.dict_paths: list[tuple[dict, Any, str, Any]] = []
        self.outputs: Any = None              # the result's template (set by the jit)

    def add_slot(self, value: Any, kind: str, origin: Any, producer: int) -> int:
        self.slots.append(Slot(value, kind, origin, producer))
        return len(self.slots) - 1

    def append(self, instr: Any) -> None:
        self.instrs.append(instr)

    def sym(self, op: str, args: tuple) -> SymNode:
        key = (op, tuple(("node", a.id) if type(a) is SymNode else ("id", id(a)) if type(a) is dict
                         else (type(a), repr(a)) for a in args))
        node = self._sym_index.get(key)
        if node is None or (op == "src" and self._written_since(node)):
            node = SymNode(op, args, len(self.instrs), len(self.syms))
            self.syms.append(node)
            self._sym_index[key] = node
        return node

    def _written_since(self, node: SymNode) -> bool:
        """Whether the state entry a source node reads was written after the node was made."""
        container, key, _ = node.args
        return any(type(ins) is PySet and ins.container is container and ins.key == key
                   for ins in self.instrs[node.position:])


# ----------------------------------------------------------------------------- what calls do
# Python's operators as the tracer records them, and the ufunc each one is on arrays (for
# writing results into buffers). ``pow`` has no ufunc here: NumPy's ``a ** 2`` takes fast paths.

BINARY_OPERATORS: dict[str, Callable] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
    "rshift": operator.rshift, "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}
REFLECTED = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
             "lshift", "rshift"}
INPLACE_OPERATORS: dict[str, Callable] = {
    "iadd": operator.iadd, "isub": operator.isub, "imul": operator.imul, "itruediv": operator.itruediv,
    "ifloordiv": operator.ifloordiv, "imod": operator.imod, "ipow": operator.ipow,
    "imatmul": operator.imatmul, "iand": operator.iand, "ior": operator.ior, "ixor": operator.ixor,
}
UNARY_OPERATORS: dict[str, Callable] = {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs,
                                        "invert": operator.invert}

OPERATOR_UFUNC: dict[Callable, str] = {
    operator.add: "add", operator.sub: "subtract", operator.mul: "multiply",
    operator.truediv: "true_divide", operator.floordiv: "floor_divide", operator.mod: "remainder",
    operator.matmul: "matmul", operator.and_: "bitwise_and", operator.or_: "bitwise_or",
    operator.xor: "bitwise_xor", operator.eq: "equal", operator.ne: "not_equal", operator.lt: "less",
    operator.le: "less_equal", operator.gt: "greater", operator.ge: "greater_equal",
    operator.neg: "negative", operator.pos: "positive", operator.abs: "absolute",
    operator.invert: "invert",
}
INPLACE_UFUNC: dict[Callable, str] = {
    operator.iadd: "add", operator.isub: "subtract", operator.imul: "multiply",
    operator.itruediv: "true_divide", operator.ifloordiv: "floor_divide", operator.imod: "remainder",
    operator.iand: "bitwise_and", operator.ior: "bitwise_or", operator.ixor: "bitwise_xor",
}
OPERATOR_TEXT: dict[Callable, str] = {
    operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
    operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@",
    operator.and_: "&", operator.or_: "|", operator.xor: "^", operator.lshift: "<<",
    operator.rshift: ">>", operator.eq: "==", operator.ne: "!=", operator.lt: "<", operator.le: "<=",
    operator.gt: ">", operator.ge: ">=",
}
UNARY_TEXT: dict[Callable, str] = {operator.neg: "-", operator.pos: "+", operator.invert: "~"}
INPLACE_TEXT: dict[Callable, str] = {
    operator.iadd: "+=", operator.isub: "-=", operator.imul: "*=", operator.itruediv: "/=",
    operator.ifloordiv: "//=", operator.imod: "%=", operator.ipow: "**=", operator.imatmul: "@=",
    operator.iand: "&=", operator.ior: "|=", operator.ixor: "^=",
}

# NumPy functions that answer from shapes and dtypes alone (never a host read, never recorded)
METADATA = {np.shape, np.ndim, np.size, np.result_type, np.can_cast, np.min_scalar_type,
            np.iscomplexobj, np.isrealobj, np.isfortran, np.broadcast_shapes, np.may_share_memory,
            np.shares_memory}

# array methods and NumPy functions that write into their first argument
MUTATING_METHODS = {"fill", "sort", "partition", "put", "itemset", "resize", "setfield", "__setitem__",
                    "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                    "__ipow__", "__imatmul__", "__iand__", "__ior__", "__ixor__"}
MUTATING_FUNCTIONS_BY_NAME = {"copyto", "put", "place", "putmask", "put_along_axis", "fill_diagonal",
                              "scatter_add", "scatter_max", "scatter_min"}

# array methods and NumPy functions that take out= with the same result as a fresh array
OUT_METHODS = {"sum", "prod", "max", "min", "mean", "any", "all", "argmax", "argmin", "cumsum", "cumprod",
               "clip"}
OUT_FUNCTIONS_BY_NAME = {"sum", "prod", "max", "amax", "min", "amin", "mean", "any", "all", "argmax",
                         "argmin", "cumsum", "cumprod", "clip", "dot", "take", "concatenate", "around",
                         "round"}
# the methods that make a copy of their array (written into a buffer with copyto)
COPY_METHODS = {"astype", "copy"}

ATTRIBUTE_VIEWS: dict[Callable, str] = {}       # the tracer's x.T (a function) -> "T"


def register_view_functions(*fns: Callable) -> None:
    for fn in fns:
        ATTRIBUTE_VIEWS[fn] = fn.__name__.removeprefix("_attr_")


# array methods that give a view (the replay may make it once, when its array is a fixed buffer)
VIEW_METHODS = {"reshape", "view", "transpose", "swapaxes", "squeeze", "__getitem__"}
# creations whose result depends on their argument's shape and dtype only
SHAPE_ONLY = {"ones_like", "zeros_like", "full_like", "empty_like"}
# reductions that are one ufunc's reduce (NumPy's methods and functions add Python layers around it)
REDUCE_UFUNC = {"sum": "add", "prod": "multiply", "max": "maximum", "amax": "maximum", "min": "minimum",
                "amin": "minimum", "any": "logical_or", "all": "logical_and"}


def fn_name(fn: Any) -> str | None:
    return getattr(fn, "__name__", None)


def mutated_positions(fn: Any, args: tuple, kwargs: dict) -> list[Any]:
    """The argument templates a call writes into (besides ``out=``)."""
    written: list[Any] = []
    if fn in INPLACE_UFUNC or fn is operator.ipow or fn is operator.imatmul or fn is operator.setitem:
        written.append(args[0])
    elif type(fn) is Method and fn.name in MUTATING_METHODS:
        written.append(args[0])
    elif getattr(fn, "__name__", None) == "at" and isinstance(getattr(fn, "__self__", None), np.ufunc):
        written.append(args[0])
    elif fn_name(fn) in MUTATING_FUNCTIONS_BY_NAME and args:
        written.append(args[0])
    elif hasattr(fn, "written"):                        # a kernel launch: the arrays it writes
        written.extend(fn.written(args))
    out = kwargs.get("out")
    if out is not None:
        written.append(out)
    return written
