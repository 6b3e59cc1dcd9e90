"""Elementwise chains as generated CUDA kernels (gg.jit on CUDA).

In a CUDA program, consecutive elementwise calls on arrays of one shape (CuPy ufuncs, their
operators, ``where``, ``astype``) become one kernel: its source is written from the calls
(``kernel_source``), one C expression per call, in the dtype each call computed in, so
intermediates live in registers and only the values something later reads are stored. An
operand may be the whole array, one that repeats along the leading dimensions (a bias:
``x[i % cols]``), a 0-d device array or a number (a Python number, or an optimizer's symbol,
passed at each launch). The kernel is a CuPy RawKernel compiled with ``-fmad=false`` (no
contraction of a multiply and an add that CuPy's separate kernels would round twice); under
the CUDA emulator it runs as a g++ build, like kernels/*.cu. ``check`` runs a kernel against
the calls it replaces on random inputs (tests/test_jit_cuda.py checks every one the training
tests generate).

A chain ends at anything else: a matmul, a reduction, a kernel of kernels/, an allocation,
a guard. Bindings of tensors in between (``SetData``...) move behind it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from . import program as P

MIN_CHAIN = 2                 # shorter chains stay CuPy's own kernels

_C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.bool_): "bool",
            np.dtype(np.int64): "long long", np.dtype(np.int32): "int"}
_INFIX = {"add": "+", "subtract": "-", "multiply": "*", "true_divide": "/", "divide": "/"}
_COMPARE = {"greater": ">", "greater_equal": ">=", "less": "<", "less_equal": "<=", "equal": "==",
            "not_equal": "!="}
_LOGICAL = {"logical_and": "&&", "logical_or": "||"}
_BITWISE = {"bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^"}      # on bools only
_FLOAT_UNARY = {"exp": "gg::exp_({})", "log": "gg::log_({})", "tanh": "gg::tanh_({})",
                "sqrt": "gg::sqrt_({})", "log1p": "gg_jit_log1p({})", "expm1": "gg_jit_expm1({})",
                "sin": "gg_jit_sin({})", "cos": "gg_jit_cos({})", "floor": "gg_jit_floor({})",
                "ceil": "gg_jit_ceil({})"}
_UNARY = {"negative": "(-({}))", "positive": "(+({}))", "absolute": "gg_jit_abs({})",
          "square": "(({0}) * ({0}))", "logical_not": "(!({}))"}
_BINARY_FN = {"maximum": "gg::max_({}, {})", "minimum": "gg_jit_min({}, {})"}
SUPPORTED = (set(_INFIX) | set(_COMPARE) | set(_LOGICAL) | set(_BITWISE) | set(_FLOAT_UNARY) | set(_UNARY)
             | set(_BINARY_FN) | {"where", "astype"})

_HELPERS = """
template <class A> GG_FN A gg_jit_min(A a, A b) { return (a < b || a != a) ? a : b; }
GG_FN float gg_jit_abs(float x) { return fabsf(x); }
GG_FN double gg_jit_abs(double x) { return fabs(x); }
GG_FN long long gg_jit_abs(long long x) { return x < 0 ? -x : x; }
GG_FN float gg_jit_log1p(float x) { return log1pf(x); }
GG_FN double gg_jit_log1p(double x) { return log1p(x); }
GG_FN float gg_jit_expm1(float x) { return expm1f(x); }
GG_FN double gg_jit_expm1(double x) { return expm1(x); }
GG_FN float gg_jit_sin(float x) { return sinf(x); }
GG_FN double gg_jit_sin(double x) { return sin(x); }
GG_FN float gg_jit_cos(float x) { return cosf(x); }
GG_FN double gg_jit_cos(double x) { return cos(x); }
GG_FN float gg_jit_floor(float x) { return floorf(x); }
GG_FN double gg_jit_floor(double x) { return floor(x); }
GG_FN float gg_jit_ceil(float x) { return ceilf(x); }
GG_FN double gg_jit_ceil(double x) { return ceil(x); }
"""


def op_name(fn: Any) -> str | None:
    """The ufunc a recorded call is (``add`` for cupy.add, ``+`` and ``+=``), "where", "astype"; else None."""
    if fn in P.OPERATOR_UFUNC:
        return P.OPERATOR_UFUNC[fn]
    if fn in P.INPLACE_UFUNC:
        return P.INPLACE_UFUNC[fn]
    if type(fn) is P.Method:
        return "astype" if fn.name == "astype" else None
    name = getattr(fn, "__name__", None)
    if name is None:
        return None
    name = name.removeprefix("cupy_")
    if name == "where" or type(fn).__name__ in ("ufunc", "Ufunc"):
        return name
    return None


# ----------------------------------------------------------------------------- the kernels


class FusedKernel:
    """One generated kernel: ``launch(n, args, block, per_block)`` as kernels/ launches are recorded.

    ``args`` holds the input arrays, the output arrays, then the scalars (Python numbers from
    the optimizer's symbols, passed as double). ``steps`` keeps what it computes, to check it.
    """

    def __init__(self, source: str, name: str, inputs: list[tuple], outputs: list[tuple], n_scalars: int,
                 steps: list[Any]) -> None:
        self.source, self.name = source, name
        self.inputs, self.outputs = inputs, outputs          # (slot, shape, dtype) of each parameter
        self.n_inputs, self.n_outputs, self.n_scalars = len(inputs), len(outputs), n_scalars
        self.steps = steps                                   # the calls it replaces (templates on slots)
        # bool arrays go to the kernel as bytes (its unsigned char parameters)
        self._bools = {j for j, (_, _, dtype) in enumerate(inputs + outputs) if dtype == np.bool_}
        self.__name__ = name
        self._functions: dict[int, Any] = {}

    def function(self) -> Any:
        from .. import backend  # noqa: PLC0415
        from ..cuda import kernels  # noqa: PLC0415

        cp = backend.load_cupy()
        device = cp.cuda.runtime.getDevice()
        fn = self._functions.get(device)
        if fn is None:
            module = cp.RawModule(code=self.source, options=(*kernels.compile_options(), "--fmad=false"))
            fn = self._functions[device] = module.get_function(self.name)
        return fn

    def __call__(self, n: int, args: tuple, block: int = 256, per_block: int | None = None) -> None:
        from ..cuda import kernels  # noqa: PLC0415

        k = self.n_inputs + self.n_outputs
        arrays = [a.view(np.uint8) if j in self._bools else a for j, a in enumerate(args[:k])]
        scalars = tuple(np.float64(s) for s in args[k:])
        kernels.launch(self.function(), n, (*arrays, *scalars, np.int64(n)), block=block)

    def written(self, args: tuple) -> list[Any]:
        return list(args[1][self.n_inputs:self.n_inputs + self.n_outputs])

    def __repr__(self) -> str:
        return f"<generated kernel {self.name}>"


GENERATED: dict[str, FusedKernel] = {}      # every kernel made in this process, by name (for checking)


class _Operand:
    __slots__ = ("slot", "mode", "param", "dtype")

    def __init__(self, slot: int, mode: str, param: str, dtype: np.dtype) -> None:
        self.slot, self.mode, self.param, self.dtype = slot, mode, param, dtype


class _Writer:
    """Writes one chain's kernel: parameters, one C statement per call, the stores."""

    def __init__(self, prog: P.Program, shape: tuple, size: int) -> None:
        self.prog, self.shape, self.size = prog, shape, size
        self.inputs: list[_Operand] = []
        self.by_slot: dict[int, _Operand] = {}
        self.scalars: list[Any] = []               # SymNodes
        self.reg: dict[int, tuple[str, np.dtype]] = {}     # storage -> (C variable, dtype) of its value now
        self.lines: list[str] = []
        self.count = 0

    def operand(self, x: Any, dtype: np.dtype) -> str:
        """C text for operand ``x`` converted to ``dtype``."""
        ctype = _C_TYPES[dtype]
        if type(x) is P.Ref:
            slot = self.prog.slots[x.slot]
            if slot.storage in self.reg:
                var, _ = self.reg[slot.storage]
                return f"(({ctype}){var})"
            op = self.by_slot.get(x.slot)
            if op is None:
                scalar = not slot.shape or math.prod(slot.shape) == 1
                mode = "full" if slot.shape == self.shape else ("scalar" if scalar else "rows")
                op = _Operand(x.slot, mode, f"in{len(self.inputs)}", slot.dtype)
                self.inputs.append(op)
                self.by_slot[x.slot] = op
            index = {"full": "i", "scalar": "0", "rows": f"i % {math.prod(slot.shape)}"}[op.mode]
            return f"(({ctype}){op.param}[{index}])"
        if type(x) is P.SymNode:
            if x not in self.scalars:
                self.scalars.append(x)
            return f"(({ctype})s{self.scalars.index(x)})"
        return f"(({ctype}){_literal(x, dtype)})"

    def step(self, name: str, args: tuple, out_dtype: np.dtype, operand_dtype: np.dtype) -> str:
        """The C expression of one call (its operands converted to ``operand_dtype``)."""
        a = [self.operand(x, operand_dtype) for x in args]
        if name in _INFIX:
            return f"({a[0]} {_INFIX[name]} {a[1]})"
        if name in _COMPARE:
            return f"({a[0]} {_COMPARE[name]} {a[1]})"
        if name in _LOGICAL:
            return f"({a[0]} {_LOGICAL[name]} {a[1]})"
        if name in _BITWISE:
            return f"({a[0]} {_BITWISE[name]} {a[1]})"
        if name in _FLOAT_UNARY:
            return _FLOAT_UNARY[name].format(a[0])
        if name in _UNARY:
            return _UNARY[name].format(a[0])
        if name in _BINARY_FN:
            return _BINARY_FN[name].format(a[0], a[1])
        if name == "astype":
            return a[0]
        raise AssertionError(f"fuse: no C for {name}")

    def where(self, args: tuple, out_dtype: np.dtype) -> str:
        cond = self.operand(args[0], np.dtype(np.bool_))
        a, b = self.operand(args[1], out_dtype), self.operand(args[2], out_dtype)
        return f"({cond} ? {a} : {b})"

    def assign(self, storage: int, expr: str, dtype: np.dtype) -> None:
        var = f"t{self.count}"
        self.count += 1
        self.lines.append(f"    const {_C_TYPES[dtype]} {var} = {expr};")
        self.reg[storage] = (var, dtype)


def _literal(x: Any, dtype: np.dtype) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return f"{int(x)}LL" if dtype.kind in "iu" else f"{float(x)!r}"
    value = float(x)
    if math.isnan(value):
        return f"gg::nan<{_C_TYPES.get(dtype, 'double') if dtype.kind == 'f' else 'double'}>()"
    if math.isinf(value):
        return ("" if value > 0 else "-") + "gg::inf<double>()"
    return repr(value)


# ----------------------------------------------------------------------------- finding chains


def _candidate(ins: Any, prog: P.Program) -> tuple[str, tuple] | None:
    """(ufunc name, output shape) of an elementwise call the kernels can take, else None."""
    if type(ins) is not P.Call:
        return None
    name = op_name(ins.fn)
    if name is None or name not in SUPPORTED:
        return None
    kwargs = dict(ins.kwargs)
    out = kwargs.pop("out", None)
    if type(out) is tuple and len(out) == 1:
        out = out[0]
    if kwargs and not (name == "astype" and set(kwargs) <= {"copy"}):
        return None
    if out is not None and type(out) is not P.Ref:
        return None
    result = ins.out if out is None else out
    if type(result) is not P.Ref:
        return None
    rslot = prog.slots[result.slot]
    if not rslot.root or rslot.dtype not in _C_TYPES or not _contiguous(rslot.value):
        return None
    args = ins.args[1:] if name == "astype" else ins.args
    if name == "astype" and (len(ins.args) != 2 or type(ins.args[0]) is not P.Ref):
        return None
    refs = [a for a in (ins.args[:1] if name == "astype" else args) if type(a) is P.Ref]
    if not refs:
        return None
    for a in (ins.args[:1] if name == "astype" else args):
        if type(a) is P.Ref:
            s = prog.slots[a.slot]
            if (not s.root or s.dtype not in _C_TYPES or not _contiguous(s.value)
                    or not (s.shape == rslot.shape or math.prod(s.shape) == 1
                            or (len(s.shape) < len(rslot.shape)
                                and tuple(rslot.shape[-len(s.shape):]) == s.shape))):
                return None
        elif type(a) is not P.SymNode and not isinstance(a, (bool, int, float, np.bool_, np.integer,
                                                             np.floating)):
            return None
    if name in _BITWISE and rslot.dtype != np.bool_:
        return None
    if name in _FLOAT_UNARY and rslot.dtype.kind != "f":
        return None
    return name, rslot.shape


def _contiguous(value: Any) -> bool:
    try:
        return bool(value.flags.c_contiguous)
    except AttributeError:
        return False


_PYTHON_SIDE = (P.SetData, P.SetGrad, P.PySet, P.SymGuard, P.GradGuard)


def chains(prog: P.Program) -> list[list[int]]:
    """Runs of elementwise calls of one output shape (Python-side instructions between them allowed)."""
    found: list[list[int]] = []
    current: list[int] = []
    shape = None
    for i, ins in enumerate(prog.instrs):
        c = _candidate(ins, prog)
        if c is not None and (not current or c[1] == shape):
            current.append(i)
            shape = c[1]
            continue
        if type(ins) in _PYTHON_SIDE and current:
            continue
        if len(current) >= MIN_CHAIN:
            found.append(current)
        current, shape = ([i], c[1]) if c is not None else ([], None)
    if len(current) >= MIN_CHAIN:
        found.append(current)
    return found


def rewrite(info: Any, output_slots: list[int], xp: Any) -> bool:
    """Replace each chain of ``info.prog`` by its kernel (allocations for what it stores, then one
    launch); returns whether anything changed. ``info`` must be fresh (codegen.Info)."""
    prog = info.prog
    groups = chains(prog)
    if not groups:
        return False
    reads_after = _readers(prog, info)
    outputs = set(output_slots)
    replacement: dict[int, list[Any]] = {}
    removed: set[int] = set()
    for group in groups:
        made = _fuse(prog, info, group, reads_after, outputs, xp)
        if made is None:
            continue
        replacement[group[0]] = made
        removed.update(group[1:])
    if not replacement:
        return False
    new, index = [], {}
    moved: list[Any] = []
    for i, ins in enumerate(prog.instrs):
        index[i] = len(new)
        if i in replacement:
            new.extend(replacement[i])
            continue
        if i in removed:
            continue
        new.append(ins)
    index[len(prog.instrs)] = len(new)
    prog.instrs = new + moved
    for node in prog.syms:
        node.position = index.get(node.position, len(new))
    _renumber_producers(prog)
    return True


def _renumber_producers(prog: P.Program) -> None:
    """Each slot's producer: the first instruction that gives it as a result (the rest write into it)."""
    seen: set[int] = set()
    for slot in prog.slots:
        if slot.producer >= 0:
            slot.producer = -2                         # made by a call; found again below
    for i, ins in enumerate(prog.instrs):
        made = ins.outs() if type(ins) is P.Call else [ins.slot] if type(ins) is P.Draw else []
        for s in made:
            if s not in seen:
                seen.add(s)
                if prog.slots[s].producer == -2:
                    prog.slots[s].producer = i


def _readers(prog: P.Program, info: Any) -> dict[int, int]:
    """storage -> the last instruction that reads it."""
    last: dict[int, int] = {}
    for i, reads in enumerate(info.reads):
        for s in reads:
            last[prog.slots[s].storage] = i
    return last


def _fuse(prog: P.Program, info: Any, group: list[int], last_read: dict[int, int], outputs: set[int],
          xp: Any) -> list[Any] | None:
    """The instructions replacing ``group`` (the group's own and the Python-side ones between), or None."""
    calls = [i for i in group if type(prog.instrs[i]) is P.Call]
    first = prog.instrs[calls[0]]
    name0, shape = _candidate(first, prog)
    size = math.prod(shape)
    w = _Writer(prog, shape, size)
    written_slot: dict[int, int] = {}                  # storage -> the (root) slot its value belongs to
    broadcast_read: set[int] = set()
    steps = []
    for i in calls:
        ins = prog.instrs[i]
        name, _ = _candidate(ins, prog)
        out = ins.kwargs.get("out")
        if type(out) is tuple:
            out = out[0]
        result = ins.out if out is None else out
        rslot = prog.slots[result.slot]
        for a in ins.args:
            if type(a) is P.Ref and prog.slots[a.slot].shape != shape:
                broadcast_read.add(prog.slots[a.slot].storage)
        out_dtype = rslot.dtype
        if name == "where":
            expr = w.where(ins.args, out_dtype)
        elif name in _COMPARE or name in _LOGICAL:
            expr = w.step(name, ins.args, out_dtype, _operand_dtype(prog, ins.args))
        elif name == "astype":
            expr = w.step(name, ins.args[:1], out_dtype, out_dtype)
        else:
            expr = w.step(name, ins.args, out_dtype, out_dtype)
        w.assign(rslot.storage, expr, out_dtype)
        written_slot[rslot.storage] = result.slot
        steps.append(ins)
    if broadcast_read & set(written_slot):
        return None                                    # a thread would read what another one wrote
    end = group[-1]
    stored: list[tuple[int, int]] = []                 # (storage, slot) written back, in order
    for storage, slot in written_slot.items():
        st = info.storages[storage]
        made_here = prog.slots[slot].producer in group
        needed = (not made_here or st.kind != P.FRESH or last_read.get(storage, -1) > end
                  or slot in outputs or any(s in outputs for s in st.slots)
                  or any(type(x) in (P.SetData,) and x.slot in st.slots for x in prog.instrs[end + 1:]))
        set_here = any(type(prog.instrs[k]) is P.SetData and prog.instrs[k].slot in st.slots for k in group)
        if needed or set_here:
            stored.append((storage, slot))
    inputs = list(w.inputs)
    outs_params = []
    for k, (storage, slot) in enumerate(stored):
        var, dtype = w.reg[storage]
        outs_params.append((slot, dtype))
        w.lines.append(f"    out{k}[i] = {var};")
    source, kname = kernel_source(w, inputs, outs_params)
    kernel = GENERATED.get(kname)
    if kernel is None:
        kernel = GENERATED[kname] = FusedKernel(
            source, kname, [(op.slot, prog.slots[op.slot].shape, op.dtype) for op in inputs],
            [(slot, prog.slots[slot].shape, dtype) for slot, dtype in outs_params], len(w.scalars),
            [P.Call(ins.fn, ins.args, ins.kwargs, ins.out) for ins in steps])
    made_slots = [slot for slot, _ in outs_params if prog.slots[slot].producer in group]
    new: list[Any] = []
    for slot in made_slots:                            # the arrays the kernel stores into: made first
        s = prog.slots[slot]
        new.append(P.Call(xp.empty, (s.shape,), {"dtype": s.dtype}, P.Ref(slot)))
    args = tuple([P.Ref(op.slot) for op in inputs] + [P.Ref(slot) for slot, _ in outs_params] + w.scalars)
    new.append(P.Call(kernel, (size, args, 256, None), {}, None))
    new.extend(prog.instrs[k] for k in group if type(prog.instrs[k]) in _PYTHON_SIDE)
    return new


def _operand_dtype(prog: P.Program, args: tuple) -> np.dtype:
    """The dtype a comparison compares in: the arrays' common dtype (a Python number takes theirs)."""
    dtypes = [prog.slots[a.slot].dtype for a in args if type(a) is P.Ref]
    return np.result_type(*dtypes) if dtypes else np.dtype(np.float64)


def _element(dtype: np.dtype) -> str:
    """The C type of an array's elements (bools as bytes: NumPy's and CuPy's bool is one byte)."""
    return "unsigned char" if dtype == np.bool_ else _C_TYPES[dtype]


def kernel_source(w: _Writer, inputs: list[_Operand], outs: list[tuple[int, np.dtype]]) -> tuple[str, str]:
    """The CUDA source of a chain's kernel and its entry point's name (a hash of the body)."""
    params = [f"const {_element(op.dtype)}* __restrict__ {op.param}" for op in inputs]
    params += [f"{_element(dtype)}* __restrict__ out{k}" for k, (_, dtype) in enumerate(outs)]
    params += [f"double s{k}" for k in range(len(w.scalars))]
    params.append("long long n")
    body = "\n".join(w.lines)
    digest = hashlib.sha1(("\n".join(params) + body).encode()).hexdigest()[:12]
    name = f"gg_jit_{digest}"
    source = (f"// generated by gpugrad.jit.fuse from a traced program\n#include \"common.cuh\"\n{_HELPERS}\n"
              f"extern \"C\" __global__ void {name}({', '.join(params)}) {{\n"
              f"  GG_GRID_STRIDE(i, n) {{\n{body}\n  }}\n}}\n")
    return source, name


# ----------------------------------------------------------------------------- checking a kernel


def check(kernel: FusedKernel, xp: Any, rng: np.random.Generator) -> None:
    """Run ``kernel`` against the calls it replaces, on random inputs; AssertionError if they differ.

    Inputs take the shapes and dtypes the trace saw (floats from [-2, 2], then from [0.25, 2] so
    logs and roots see their domain); the calls run as recorded (CuPy's, or the emulator's
    NumPy), the kernel on copies of the same inputs; every array it stores is compared: shape,
    dtype, and values (NaN where the calls give NaN).
    """
    from ..testing import assert_close  # noqa: PLC0415 - (testing imports the engine, which imports jit)

    for low in (-2.0, 0.25):
        host = {slot: _random(rng, shape, dtype, low) for slot, shape, dtype in kernel.inputs}
        scalars = [float(rng.uniform(0.5, 1.5)) for _ in range(kernel.n_scalars)]
        env = {slot: xp.asarray(a.copy()) for slot, a in host.items()}
        for step in kernel.steps:
            _run_step(step, env, scalars, kernel)
        mine = {slot: xp.asarray(a.copy()) for slot, a in host.items()}
        outs = [mine[slot] if slot in mine else xp.empty(shape, dtype=dtype)
                for slot, shape, dtype in kernel.outputs]
        size = math.prod(kernel.outputs[0][1]) if kernel.outputs else 0
        kernel(size, (*[mine[slot] for slot, _, _ in kernel.inputs], *outs, *scalars))
        for (slot, shape, dtype), got in zip(kernel.outputs, outs):
            if tuple(got.shape) != tuple(shape) or got.dtype != dtype:
                raise AssertionError(f"{kernel.name}: stores {tuple(got.shape)} {got.dtype}, the trace "
                                     f"recorded {tuple(shape)} {dtype}")
            rtol = {"f": 4e-6 if dtype == np.float32 else 1e-13}.get(dtype.kind, 0)
            assert_close(got, env[slot], rtol=rtol, atol=rtol, equal_nan=True,
                         msg=f"{kernel.name} against the calls it replaces:\n{kernel.source}")


def _random(rng: np.random.Generator, shape: tuple, dtype: np.dtype, low: float) -> np.ndarray:
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 5, size=shape).astype(dtype)
    return rng.uniform(low, 2.0, size=shape).astype(dtype)


def _run_step(step: P.Call, env: dict, scalars: list, kernel: FusedKernel) -> None:
    nodes: list[Any] = []
    for x in (step.args, step.kwargs):
        nodes += P.sym_nodes(x)

    def value(x: Any) -> Any:
        t = type(x)
        if t is P.Ref:
            return env[x.slot]
        if t is P.SymNode:
            return scalars[_scalar_index(kernel, x, scalars)]
        if t is tuple or t is list:
            return t([value(v) for v in x])
        if t is dict:
            return {k: value(v) for k, v in x.items()}
        return x
    result = step.fn(*value(step.args), **value(step.kwargs))
    out = step.kwargs.get("out")
    target = step.out if out is None else (out[0] if type(out) is tuple else out)
    env[target.slot] = result if out is None else env[target.slot]


def _scalar_index(kernel: FusedKernel, node: Any, scalars: list) -> int:
    order = []
    for step in kernel.steps:
        for n in P.sym_nodes((step.args, step.kwargs)):
            if n not in order:
                order.append(n)
    return order.index(node)


__all__ = ["FusedKernel", "GENERATED", "MIN_CHAIN", "chains", "check", "kernel_source", "op_name", "rewrite"]
