"""The op table: each primitive declared once, with its forward, its VJP and its test samples.

    @defop(save=("out",), samples=unary(-4, 4))
    def tanh(xp, x):
        return xp.tanh(x)

    @tanh.vjp
    def _(xp, g, out, x):
        return (g * (1 - out * out),)

Forward and VJP are written against ``xp``, the array namespace (numpy or
cupy), so no op is written twice. ``save`` names what the VJP needs ("out" or
input names); everything else reaches the rule as None, so the tape keeps
only what backward reads. Calling the OpDef applies the op to tensors and
records it on the tape.

The batching rule (for ``gg.vmap``) is declared with the op too: ``batch="elementwise"`` (or
another family of ``ops.batching``) in ``defop``, or ``@op.batch`` beside ``@op.vjp``:

    @reshape.batch
    def _(batch, x, *, shape):             # batch[i]: operand i's batch axis (None: unbatched)
        return reshape(batching.to_front(x, batch[0]), shape=(batch.size, *shape)), 0
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import backend, dtypes, engine, versions
from ..engine import Node, grad_mode
from ..tensor import Tensor

REGISTRY: dict[str, OpDef] = {}
vmapping = 0        # how many gg.vmap calls are running, in any thread (0: an op pays one test for vmap)


class OpDef:
    """A primitive op: forward(xp, *inputs, **params) and vjp(xp, g, out, *inputs, **params)."""

    __slots__ = ("name", "forward", "vjp_rule", "save_out", "save_inputs", "save_all_inputs",
                 "differentiable", "broadcast", "float_inputs", "samples", "vjp_takes_needs",
                 "fused", "higher_order", "dtype_rule", "batch_rule")

    def __init__(self, forward: Callable, *, save: Sequence[str], samples: Callable | None,
                 differentiable: bool, broadcast: bool, float_inputs: bool,
                 fused: str | None, higher_order: bool, dtype_rule: str | None = None,
                 batch: str | None = None) -> None:
        self.name = forward.__name__.lstrip("_")
        self.forward = forward
        self.vjp_rule: Callable | None = None
        self.vjp_takes_needs = False
        self.differentiable = differentiable
        self.broadcast = broadcast
        self.float_inputs = float_inputs
        self.samples = samples
        self.fused = fused
        self.higher_order = higher_order
        if dtype_rule not in (None, "promote", "same"):
            raise ValueError(f"defop {self.name}: dtype_rule must be None, 'promote' or 'same', "
                             f"got {dtype_rule!r}")
        self.dtype_rule = _PROMOTE if dtype_rule == "promote" else _SAME if dtype_rule == "same" else 0
        sig = list(inspect.signature(forward).parameters.values())[1:]   # drop xp
        positional = [p for p in sig if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = [p for p in sig if p.kind == p.VAR_POSITIONAL]
        names = [p.name for p in positional]
        unknown = set(save) - set(names) - {"out"} - {p.name for p in varargs}
        if unknown:
            raise TypeError(f"defop {self.name}: save names {sorted(unknown)} are not inputs")
        self.save_out = "out" in save
        self.save_inputs = tuple(i for i, n in enumerate(names) if n in save)
        self.save_all_inputs = (bool(varargs) and varargs[0].name in save) or (
            not varargs and bool(names) and len(self.save_inputs) == len(names))
        family = batch if batch is not None else "elementwise" if broadcast else None
        self.batch_rule: Callable | None = (None if family is None else
                                            batching.family(self.name, family, self))

    @property
    def __name__(self) -> str:      # read like a function's: gg.grad(gg.exp) is named "grad(exp)"
        return self.name

    def vjp(self, rule: Callable) -> Callable:
        """Decorator: register the VJP rule, ``rule(xp, g, out, *inputs, **params) -> tuple``."""
        self.vjp_rule = rule
        self.vjp_takes_needs = "needs" in inspect.signature(rule).parameters
        return rule

    def batch(self, rule: Callable) -> Callable:
        """Decorator: register the batching rule for vmap, ``rule(batch, *inputs, **params) -> (out, axis)``.

        ``batch`` holds each input's batch axis (None where it is not batched), ``batch.size`` the
        batch size. The rule computes the whole batch with ops and says where its batch axis is.
        """
        self.batch_rule = rule
        return rule

    def __call__(self, *args: Any, **params: Any) -> Tensor:
        """Run the op on ``args`` (tensors or constants); record it if a gradient is needed.

        This is the per-op hot path: one pass over the arguments, no node and no
        bookkeeping at all when no input requires grad. Unary and binary ops with no
        parameters (most ops) call their forward with plain arguments, because a
        CPython ``f(*args, **kw)`` call costs about 130 ns more than ``f(a, b)``. Binary
        ops with ``dtype_rule`` check dtypes with one identity test in the usual cases.
        Inside ``gg.vmap`` (any thread), an op given a batched tensor runs its batching rule.
        """
        if vmapping and (batching.any_batched(args) or params and batching.batched_params(params)):
            return batching.apply(self, args, params)
        rule = self.dtype_rule
        n_args = len(args)
        # NOTE: each operand's unwrapping is written out in place (twice here, once for one operand,
        # once in the loop): a helper function would cost a call per operand on every op.
        if n_args == 2:                         # most ops: one or two operands, no loop, no appends
            a, b = args
            if isinstance(a, Tensor):
                x = a.data
                pa = (a if a._node is None else a._node) if a._requires_grad else None
                both = tensor_first = True
            else:                               # a Python number or an array: a constant
                x = a if type(a) in _SCALARS or hasattr(a, "dtype") else _constant(self.name, 0, a)
                pa = None
                both = tensor_first = False
            if isinstance(b, Tensor):
                y = b.data
                pb = (b if b._node is None else b._node) if b._requires_grad else None
            else:
                y = b if type(b) in _SCALARS or hasattr(b, "dtype") else _constant(self.name, 1, b)
                pb = None
                both = False
            datas = [x, y]
            parents = [pa, pb]
            needs_grad = pa is not None or pb is not None
            if rule == 2:                       # one dtype (matmul)
                rule = 0
                if getattr(x, "dtype", None) is not getattr(y, "dtype", None):
                    _check_same_dtype(self.name, datas)
        elif n_args == 1:
            a = args[0]
            if isinstance(a, Tensor):
                x = a.data
                pa = (a if a._node is None else a._node) if a._requires_grad else None
            else:
                x = a if type(a) in _SCALARS or hasattr(a, "dtype") else _constant(self.name, 0, a)
                pa = None
            if self.float_inputs and getattr(x, "dtype", _FLOAT64).kind in "biu":
                x = x.astype(dtypes.default_float)
            datas = [x]
            parents = [pa]
            needs_grad = pa is not None
            rule = 0                            # dtype rules are for two or more operands
        else:
            datas = []
            parents = []                        # one per input: its node, the leaf itself, or None
            needs_grad = False
            for a in args:
                if isinstance(a, Tensor):
                    datas.append(a.data)
                    if a._requires_grad:
                        needs_grad = True
                        parents.append(a if a._node is None else a._node)
                        continue
                elif type(a) in _SCALARS or hasattr(a, "dtype"):
                    datas.append(a)
                else:
                    datas.append(_constant(self.name, len(datas), a))
                parents.append(None)
            if rule == 2:                       # one dtype (linear)
                rule = 0
                first = datas[0].dtype
                try:
                    for d in datas:
                        if d.dtype is not first:
                            _check_same_dtype(self.name, datas)
                except AttributeError:          # a Python number among the operands
                    _check_same_dtype(self.name, datas)
            elif rule:                          # where: its last two operands
                x, y = datas[-2], datas[-1]
                both = type(x) is type(y) and type(y) not in _SCALARS
                tensor_first = False
        if rule:                                # PyTorch's promotion: the common cases take one test
            if both:
                if x.dtype is not y.dtype:
                    _promote(datas)
            elif tensor_first and type(y) is float:
                kind = x.dtype
                if kind is not _FLOAT32 and kind is not _FLOAT64 and kind.kind != "f":   # identity: cheap
                    _promote(datas)
            elif not tensor_first or type(y) is not int:
                if _needs_promotion(x, y):
                    _promote(datas)
        xp = backend.common_namespace(self.name, datas) if backend.cuda_active else np
        if self.float_inputs and n_args != 1:
            for i, d in enumerate(datas):
                if getattr(d, "dtype", _FLOAT64).kind in "biu":
                    datas[i] = d.astype(dtypes.default_float)
        forward = self.forward
        try:
            if xp is not np and backend.multi_gpu:      # run on the operands' GPU, whichever is current
                with backend.device_scope(next(d for d in datas if isinstance(d, xp.ndarray))):
                    out = forward(xp, *datas, **params)
            elif params:
                out = forward(xp, *datas, **params)
            elif n_args == 2:
                out = forward(xp, datas[0], datas[1])
            elif n_args == 1:
                out = forward(xp, datas[0])
            else:
                out = forward(xp, *datas)
        except (ValueError, TypeError, IndexError, OverflowError) as err:
            raise op_error(self.name, args, err) from None
        if type(out) is not xp.ndarray:          # numpy returns scalars for 0-d results; a device move
            out = backend.namespace(out).asarray(out)      # returns the other device's array
        if engine.anomaly_threads and grad_mode.anomaly:
            engine.check_finite(f"the output of {self.name}", out, versions.user_frame())
        result = _new(Tensor)
        result.data = out
        result._grad = None
        result._hooks = None
        if not (needs_grad and self.differentiable and grad_mode.enabled):
            result._requires_grad = False
            result._node = None
            return result

        if self.broadcast:                       # explicit broadcast_to nodes: rules see equal shapes
            shape = out.shape
            for i, a in enumerate(args):
                if parents[i] is not None and a.data.shape != shape:
                    wide = _broadcast_to(a, shape=shape)
                    promoted = datas[i].dtype
                    parents[i] = wide._node
                    datas[i] = wide.data if wide.data.dtype is promoted else wide.data.astype(promoted)
        if self.save_all_inputs:
            saved = tuple(datas)
        elif self.save_inputs:
            keep = self.save_inputs
            saved = tuple([d if i in keep else None for i, d in enumerate(datas)])
        else:
            saved = _NOTHING_SAVED[len(datas)] if len(datas) < 4 else (None,) * len(datas)
        node = _new_list(Node)                   # Node's fields set here: a constructor call costs more
        node += parents
        node.op = self
        node.out = out if self.save_out else None
        node.inputs = saved
        node.params = params
        node.dtype = out.dtype
        node.hooks = None
        node.seq = versions.clock()
        if engine.anomaly_threads and grad_mode.anomaly:
            node.where = versions.user_site()
        result._requires_grad = True
        result._node = node
        return result

    def __repr__(self) -> str:
        return f"<op {self.name}>"

    def run_vjp(self, g: Any, node: Node) -> tuple:
        """Run the VJP rule for one recorded application (first-order, on arrays)."""
        xp = backend.namespace(g) if backend.cuda_active else np
        if xp is not np:
            with backend.device_scope(g):       # the rule runs on the gradient's GPU
                return self._run_vjp_cuda(xp, g, node)
        inputs = node.inputs
        rule = self.vjp_rule
        if not node.params:                     # plain calls where they fit: see __call__ on f(*args)
            if len(inputs) == 2:
                if self.vjp_takes_needs:
                    return rule(xp, g, node.out, inputs[0], inputs[1], needs=_needs(node))
                return rule(xp, g, node.out, inputs[0], inputs[1])
            if len(inputs) == 1 and not self.vjp_takes_needs:
                return rule(xp, g, node.out, inputs[0])
        if self.vjp_takes_needs:
            return rule(xp, g, node.out, *inputs, needs=_needs(node), **node.params)
        return rule(xp, g, node.out, *inputs, **node.params)

    def _run_vjp_cuda(self, xp: Any, g: Any, node: Node) -> tuple:
        if self.fused is not None:                         # one fused kernel where it applies
            from ..cuda import kernels  # noqa: PLC0415 - only ever reached with CuPy arrays
            grads = kernels.fused_vjp(self.fused, g, node.out, *node.inputs, needs=_needs(node),
                                      **node.params)
            if grads is not None:
                return grads
        if self.vjp_takes_needs:
            return self.vjp_rule(xp, g, node.out, *node.inputs, needs=_needs(node), **node.params)
        return self.vjp_rule(xp, g, node.out, *node.inputs, **node.params)

    def run_vjp_graph(self, g: Tensor, node: Node) -> tuple:
        """Run the same VJP rule on Tensors, through gpugrad's namespace, recording it (create_graph).

        Saved arrays become Tensors attached to the graph where they came from (the
        output to this node, each input to its parent), so the result can be
        differentiated again with respect to them.
        """
        if not self.higher_order:
            raise NotImplementedError(
                f"{self.name}: create_graph=True (higher-order gradients) is not supported for this op; "
                "its VJP rule uses array operations that gpugrad cannot differentiate")
        import gpugrad  # noqa: PLC0415 - the package namespace is the rules' xp here

        out = None if node.out is None else Tensor._wrap(node.out, node)
        inputs = tuple(_as_graph_tensor(d, p) for d, p in zip(node.inputs, node.parents))
        if self.vjp_takes_needs:
            return self.vjp_rule(gpugrad, g, out, *inputs, needs=_needs(node), **node.params)
        return self.vjp_rule(gpugrad, g, out, *inputs, **node.params)


_SCALARS = {int, float, bool}
_PROMOTE, _SAME = 1, 2        # OpDef.dtype_rule: promote the last two operands, or require one dtype
# (__call__ compares with the literal 1: a global lookup costs more than the test)
_FLOAT64 = np.dtype(np.float64)   # what a Python scalar operand counts as
_FLOAT32 = np.dtype(np.float32)
_new = object.__new__
_new_list = list.__new__
_NOTHING_SAVED = ((), (None,), (None, None), (None, None, None))   # shared: no allocation per op


def _needs(parents: tuple) -> tuple[bool, ...]:
    """Which inputs of a node want a gradient (a rule's ``needs``)."""
    if len(parents) == 2:
        return (parents[0] is not None, parents[1] is not None)
    return tuple([p is not None for p in parents])


def _needs_promotion(x: Any, y: Any) -> bool:
    """False where NumPy already gives PyTorch's result dtype: a weak scalar of the array's kind."""
    tx, ty = type(x), type(y)
    if ty in _SCALARS:
        return tx in _SCALARS or (ty is float and x.dtype.kind != "f")
    if tx in _SCALARS:
        return tx is float and y.dtype.kind != "f"
    return x.dtype is not y.dtype


def _promote(datas: list) -> None:
    """Cast the last two operands in place to PyTorch's result dtype (see dtypes.result_type)."""
    start = len(datas) - 2
    operands = datas[start:]
    dtype = dtypes.result_type(operands)
    for i, d in enumerate(operands, start):
        if isinstance(d, float):
            datas[i] = float(d)                 # np.float64 counts as a Python float, and stays weak
        elif type(d) is not int and type(d) is not bool and d.dtype != dtype:
            datas[i] = d.astype(dtype)
    if not any(hasattr(d, "dtype") for d in operands):
        datas[start] = np.asarray(datas[start], dtype=dtype)   # two Python numbers: gg.add(1, 0.5)


def _check_same_dtype(op_name: str, datas: list) -> None:
    """PyTorch's matmul and linear refuse operands of different dtypes (NumPy would promote).

    Called when a quick identity test found two dtype objects; raises if they differ in value.
    """
    kinds = [d.dtype for d in datas if hasattr(d, "dtype")]
    if any(k != kinds[0] for k in kinds):
        shown = ", ".join(str(k) for k in kinds)
        raise RuntimeError(f"{op_name}: expected operands of one dtype, got {shown}; cast the input to "
                           "the parameters' dtype (e.g. x.float() for a float32 model) or the model "
                           "with .to(dtype)")


def _constant(op_name: str, position: int, value: Any) -> Any:
    """A list or tuple operand as an array; anything else that is not numeric is a TypeError."""
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except ValueError as err:
            raise ValueError(f"{op_name}: operand {position} is a ragged sequence: {err}") from None
        if arr.dtype.kind in "fiub":
            return arr
    raise TypeError(f"{op_name}: operand {position} is {type(value).__name__}; expected a Tensor, an "
                    "array or a number")


def _as_graph_tensor(saved: Any, parent: Any) -> Any:
    """A saved input as a Tensor that leads back to where it came from in the graph."""
    if saved is None or not hasattr(saved, "dtype") or isinstance(saved, np.generic):
        return saved                        # not saved, or a Python or NumPy scalar constant (no device)
    if parent is None:
        return Tensor._wrap(saved)          # a constant
    if type(parent) is Node:
        return Tensor._wrap(saved, parent)  # the output of the parent node
    return parent                           # the leaf tensor itself


def defop(*, save: Sequence[str] = (), samples: Callable | None = None,
          differentiable: bool = True, broadcast: bool = False, float_inputs: bool = False,
          fused: str | None = None, higher_order: bool = True,
          dtype_rule: str | None = None, batch: str | None = None) -> Callable[[Callable], OpDef]:
    """Declare a primitive op.

    broadcast: the op broadcasts its inputs like a NumPy ufunc; the engine records
        an explicit ``broadcast_to`` for each input whose shape differs from the
        output, so VJP rules see equal shapes and never unbroadcast.
    float_inputs: integer or bool inputs are cast to the default float dtype first
        (``gg.exp(gg.arange(3))`` is float32, as in PyTorch and JAX).
    differentiable: False for ops whose outputs carry no gradient (comparisons, argmax).
    higher_order: False when the VJP rule cannot run on Tensors (create_graph raises for it).
    dtype_rule: "promote" casts the last two operands to PyTorch's result dtype (Python scalars
        weak, 0-d tensors below tensors with dimensions); "same" refuses operands of different
        dtypes, as PyTorch's matmul and linear do.
    batch: the family of the op's batching rule for vmap (``ops.batching.FAMILIES``: "elementwise",
        "reduction", "scan"); ``broadcast=True`` ops are "elementwise" unless told otherwise. An op
        with its own rule declares it with ``@op.batch``; an op with neither cannot be vmapped.
    """
    def wrap(forward: Callable) -> OpDef:
        op = OpDef(forward, save=save, samples=samples, differentiable=differentiable,
                   broadcast=broadcast, float_inputs=float_inputs, fused=fused,
                   higher_order=higher_order, dtype_rule=dtype_rule, batch=batch)
        if op.name in REGISTRY:
            raise ValueError(f"op {op.name!r} is defined twice")
        REGISTRY[op.name] = op
        return op
    return wrap


# ----------------------------------------------------------------------------- applying an op

def _describe(args: Sequence[Any]) -> str:
    parts = []
    for a in args:
        data = a.data if isinstance(a, Tensor) else a
        if hasattr(data, "shape") and hasattr(data, "dtype"):
            parts.append(f"{tuple(data.shape)} {data.dtype}")
        else:
            parts.append(type(a).__name__)
    return ", ".join(parts)


def op_error(op_name: str, args: Sequence[Any], err: Exception) -> Exception:
    """Re-raise a library error with the op's name and its operands' shapes and dtypes."""
    msg = str(err)
    if "could not be broadcast" in msg:
        msg = "shapes cannot be broadcast together"
    big = [a for a in args if type(a) is int]
    if isinstance(err, OverflowError) and big:
        msg = (f"the Python int {big[0]} does not fit in the tensor's dtype; use a float, or a wider "
               f"dtype (NumPy: {msg})")
    return type(err)(f"{op_name}: {msg} (operands: {_describe(args)})")


from . import batching  # noqa: E402 - the batching machinery applies OpDefs and reads this module
from .shape import _broadcast_to  # noqa: E402 - shape ops are themselves defined with defop
