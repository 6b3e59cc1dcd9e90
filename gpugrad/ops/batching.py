"""Batching rules for ``gg.vmap``: how an op applied to batched tensors runs, and the shared rules.

The registry sends an op whose operands include a ``BatchedTensor`` here (``apply``). The
innermost vmap level among the operands is handled: its batched operands are unwrapped to
their physical values, the op's batching rule computes the whole batch with ops (which
may dispatch again, for an outer level), and the result is wrapped as a batched tensor of
that level. A rule is ``rule(batch, *inputs, **params) -> (out, out_axis)``: ``batch`` gives
each input's batch axis (None where it is not batched), the batch size and the level;
``out_axis`` is where the result keeps its batch.

When an operand requires grad, the op is also recorded on the tape as itself, on the
logical (one-entry) values: a node whose rule runs with batched gradients (``LogicalOp``).
That is what makes ``vmap(grad(f))`` give per-example gradients of an unbatched parameter
(its gradient is batched, entry by entry), where the physical computation alone would sum
them. The physical ops a rule runs are recorded too, for gradients taken outside the vmap.

Families shared by many ops (``defop(batch=...)``): ``elementwise`` (the batch axis leads,
so NumPy broadcasting lines the entries up), ``reduction`` and ``scan`` (the reduced or
scanned axes are renumbered around the batch axis). The rest is declared with each op
(``@op.batch``) next to its VJP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import dtypes, versions
from ..batched import BatchedTensor, current
from ..engine import Node, grad_mode
from ..tensor import Tensor
from .registry import _PROMOTE


class Batch(tuple):
    """The batch axis of each operand of one op application (None: not batched), and the batch's size."""

    size: int
    level: int

    def __new__(cls, axes: Sequence[int | None], size: int, level: int) -> Batch:
        t = tuple.__new__(cls, axes)
        t.size = size
        t.level = level
        return t


# ----------------------------------------------------------------------------- dispatch


def any_batched(args: tuple) -> bool:
    """Whether an op's operands include a batched tensor (the registry asks only inside vmap)."""
    for a in args:
        if type(a) is BatchedTensor:
            return True
    return False


def batched_params(params: dict) -> list[int]:
    """The levels of the batched tensors inside an op's parameters (index arrays of getitem...)."""
    found: list[int] = []
    stack = list(params.values())
    while stack:
        p = stack.pop()
        if type(p) is BatchedTensor:
            found.append(p.level)
        elif isinstance(p, (tuple, list)):
            stack.extend(p)
    return found


def apply(op: Any, args: tuple, params: dict) -> Tensor:
    """Run ``op`` on operands of which some are batched: its batching rule, and the logical node."""
    levels = [a.level for a in args if type(a) is BatchedTensor]
    if params:
        levels += batched_params(params)
    level = max(levels)
    running = current(level, op.name)
    values, dims = [], []
    for a in args:
        if type(a) is BatchedTensor and a.level == level:
            values.append(a.value)
            dims.append(a.bdim)
        else:
            values.append(a)
            dims.append(None)
    batch = Batch(dims, running.size, level)
    rule = op.batch_rule
    running.quiet += 1                 # the rule's own ops at this level are part of this op: not recorded
    try:
        if rule is not None:
            out, out_axis = rule(batch, *values, **params)
        elif running.fallback == "loop":
            out, out_axis = _loop(op, batch, values, params)
        else:
            raise NotImplementedError(
                f"vmap: {op.name} has no batching rule, so it cannot run on batched tensors; declare one "
                f"with @{op.name}.batch (gpugrad.ops.batching), or pass fallback='loop' to vmap to run it "
                "once per batch entry")
    finally:
        running.quiet -= 1
    result = BatchedTensor.of(out, out_axis, level)
    if running.quiet == 0 and op.differentiable and grad_mode.enabled:
        for a in args:
            if isinstance(a, Tensor) and a._requires_grad:
                _record(op, args, params, result)
                break
    return result


def _loop(op: Any, batch: Batch, values: list, params: dict) -> tuple[Tensor, int]:
    """``fallback="loop"``: the op once per batch entry, the results stacked (slow, but any op runs)."""
    from .shape import stack  # noqa: PLC0415

    results = []
    for i in range(batch.size):
        picked = [v if a is None else entry(v, a, i) for v, a in zip(values, batch)]
        results.append(op(*picked, **params))
    return stack(results), 0


def loop_function(cls: type, args: tuple, kwargs: dict) -> Tensor:
    """An autograd.Function applied to batched tensors: with fallback="loop", once per batch entry."""
    level = max(a.level for a in args if type(a) is BatchedTensor)
    running = current(level, cls.__name__)
    if running.fallback != "loop":
        raise NotImplementedError(
            f"vmap: the autograd.Function {cls.__name__} has no batching rule; pass fallback='loop' to vmap "
            "to run it once per batch entry (its forward and backward then see one entry at a time)")
    results = []
    for i in range(running.size):
        picked = [entry(a.value, a.bdim, i) if type(a) is BatchedTensor and a.level == level else a
                  for a in args]
        results.append(cls.apply(*picked, **kwargs))
    from .shape import stack  # noqa: PLC0415
    return BatchedTensor.of(stack(results), 0, level)


def entry(x: Tensor, axis: int, i: int) -> Tensor:
    """Batch entry ``i`` of ``x`` (batched at ``axis``)."""
    from .index import _getitem  # noqa: PLC0415
    return _getitem(x, index=(slice(None),) * axis + (i,))


# ----------------------------------------------------------------------------- the logical node


class LogicalOp:
    """The op of a node recorded on batched tensors: the registry's op, and where its output's batch is.

    The node's saved inputs are the operand tensors themselves (batched or not), so its VJP rule
    runs on them through gpugrad's namespace, and every op of the rule is batched in turn.
    """

    __slots__ = ("op", "bdim", "level")

    def __init__(self, op: Any, bdim: int, level: int) -> None:
        self.op = op
        self.bdim = bdim
        self.level = level

    @property
    def name(self) -> str:
        return self.op.name

    def run_vjp(self, g: Any, node: Node) -> tuple:
        raise RuntimeError(f"backward through {self.op.name} on batched tensors without a gradient "
                           "transform: inside vmap, take gradients with gg.grad or gg.vjp (tensors flow "
                           "backward batched); outside, call backward() on vmap's result")

    def run_vjp_graph(self, g: Tensor, node: Node) -> tuple:
        op = self.op
        if not op.higher_order:
            raise NotImplementedError(f"{op.name}: its VJP rule cannot run on tensors, so it cannot be "
                                      "differentiated inside vmap")
        import gpugrad  # noqa: PLC0415 - the package namespace is the rules' xp here

        out = None
        if node.out is not None:
            out = BatchedTensor.of(node.out, self.bdim, self.level)
            out._requires_grad = True
            out._node = node
        if op.vjp_takes_needs:
            needs = tuple([p is not None for p in node])
            return op.vjp_rule(gpugrad, g, out, *node.inputs, needs=needs, **node.params)
        return op.vjp_rule(gpugrad, g, out, *node.inputs, **node.params)


def _record(op: Any, args: tuple, params: dict, result: BatchedTensor) -> None:
    """Record ``op`` on the logical operands, as OpDef.__call__ records it on arrays."""
    from .convert import astype  # noqa: PLC0415
    from .shape import _broadcast_to  # noqa: PLC0415

    operands = [a if isinstance(a, Tensor) or not isinstance(a, (list, tuple)) else Tensor(a) for a in args]
    dtype = result.dtype
    # the forward computed with cast operands (PyTorch's promotion, integers as floats): so does the rule
    promote = op.dtype_rule == _PROMOTE
    casts = range(len(operands)) if op.float_inputs else \
        range(len(operands) - 2, len(operands)) if promote else ()
    for i in casts:
        a = operands[i]
        if isinstance(a, Tensor) and a.dtype != dtype and (promote or a.dtype.kind in "biu"):
            operands[i] = astype(a, dtype if promote else dtypes.default_float)
    if op.broadcast:                           # rules of broadcasting ops see their output's shape
        shape = result.shape
        for i, a in enumerate(operands):
            if isinstance(a, Tensor) and a._requires_grad and a.shape != shape:
                operands[i] = _broadcast_to(a, shape=shape)
    parents = [(a if a._node is None else a._node) if isinstance(a, Tensor) and a._requires_grad else None
               for a in operands]
    keep = range(len(operands)) if op.save_all_inputs else op.save_inputs
    saved = tuple(_saved(a) if i in keep else None for i, a in enumerate(operands))
    node = Node.__new__(Node)
    node += parents
    node.op = LogicalOp(op, result.bdim, result.level)
    node.out = result.value if op.save_out else None
    node.inputs = saved
    node.params = params
    node.dtype = dtype
    node.hooks = None
    node.seq = versions.clock()
    result._requires_grad = True
    result._node = node


def _saved(a: Any) -> Any:
    """A saved operand as the rule will get it: a tensor stays, an array becomes a constant tensor."""
    if isinstance(a, Tensor) or not hasattr(a, "dtype"):
        return a
    return Tensor._wrap(a)


# ----------------------------------------------------------------------------- helpers for rules


def ndim_of(x: Any, axis: int | None) -> int:
    """The logical number of dimensions of an operand batched at ``axis`` (0 for a Python number)."""
    n = len(getattr(x, "shape", ()))
    return n - 1 if axis is not None else n


def logical_shape(x: Any, axis: int | None) -> tuple[int, ...]:
    shape = tuple(getattr(x, "shape", ()))
    return shape if axis is None else shape[:axis] + shape[axis + 1:]


def move(x: Tensor, source: int, target: int) -> Tensor:
    """``x`` with axis ``source`` moved to position ``target`` (a recorded transpose; none if in place)."""
    if source == target:
        return x
    from .shape import _transpose  # noqa: PLC0415
    order = [d for d in range(x.ndim) if d != source]
    order.insert(target, source)
    return _transpose(x, axes=tuple(order))


def to_front(x: Any, axis: int | None) -> Any:
    """``x`` with its batch axis first (an unbatched operand as it is)."""
    return x if axis is None else move(x, axis, 0)


def materialize(x: Any, axis: int | None, size: int) -> Tensor:
    """``x`` batched at axis 0: the batch axis moved first, or an unbatched ``x`` broadcast to ``size``."""
    from .shape import _broadcast_to, _reshape  # noqa: PLC0415

    if axis is not None:
        return move(x, axis, 0)
    if not isinstance(x, Tensor):
        x = Tensor(x)
    return _broadcast_to(_reshape(x, shape=(1, *x.shape)), shape=(size, *x.shape))


def padded_front(x: Tensor, axis: int, ndim: int) -> Tensor:
    """``x`` batched at 0 with size-1 axes after the batch axis, to ``ndim`` logical dimensions: NumPy
    broadcasting then lines batch entries up against unbatched operands (which align from the right)."""
    from .shape import _reshape  # noqa: PLC0415

    x = move(x, axis, 0)
    missing = ndim - (x.ndim - 1)
    if missing <= 0:
        return x
    return _reshape(x, shape=(x.shape[0],) + (1,) * missing + tuple(x.shape[1:]))


def physical_axis(axis: int, bdim: int) -> int:
    """Where logical axis ``axis`` is in a value batched at ``bdim``."""
    return axis if axis < bdim else axis + 1


def decompose(batch: Batch, fn: Callable[..., Tensor], *values: Any) -> tuple[Tensor, int]:
    """Run ``fn`` (a composition of ops) on the logical operands: each rule of its ops batches them."""
    logical = [v if a is None else BatchedTensor.of(v, a, batch.level) for v, a in zip(values, batch)]
    out = fn(*logical)
    if type(out) is BatchedTensor and out.level == batch.level:
        return out.value, out.bdim
    return materialize(out, None, batch.size), 0


# ----------------------------------------------------------------------------- families


def elementwise(op: Any) -> Callable:
    """The rule of an elementwise (broadcasting) op: batch axes first, padded to a common rank."""
    def rule(batch: Batch, *values: Any, **params: Any) -> tuple[Tensor, int]:
        batched = [i for i, a in enumerate(batch) if a is not None]
        if len(batched) == 1:                      # one batched operand: others must not need aligning
            i = batched[0]
            # the others are numbers (or 0-d, for an op whose rule sees broadcast shapes anyway)
            if all(j == i or not getattr(v, "shape", ()) and (not isinstance(v, Tensor) or op.broadcast
                                                              or not op.differentiable)
                   for j, v in enumerate(values)):
                return op(*values, **params), batch[i]
        rank = max(ndim_of(v, a) for v, a in zip(values, batch))
        aligned = [v if a is None else padded_front(v, a, rank) for v, a in zip(values, batch)]
        if op.differentiable and not op.broadcast:     # its rule needs equal shapes: broadcast explicitly
            from .shape import _broadcast_to  # noqa: PLC0415
            shape = np.broadcast_shapes(*(tuple(v.shape) for v in aligned if hasattr(v, "shape")))
            aligned = [_broadcast_to(v, shape=shape) if isinstance(v, Tensor) and v.shape != shape else v
                       for v in aligned]
        return op(*aligned, **params), 0
    return rule


def reduction(op: Any) -> Callable:
    """The rule of a reduction over ``axis`` (a tuple of axes) with ``keepdims``: the axes renumbered."""
    def rule(batch: Batch, x: Tensor, *, axis: tuple[int, ...], keepdims: bool, **rest: Any) -> tuple:
        bdim = batch[0]
        out = op(x, axis=tuple(physical_axis(a, bdim) for a in axis), keepdims=keepdims, **rest)
        return out, bdim if keepdims else bdim - sum(a < bdim for a in axis)
    return rule


def scan(op: Any) -> Callable:
    """The rule of an op along one ``axis`` that keeps the shape (cumsum, argsort...)."""
    def rule(batch: Batch, x: Tensor, *, axis: int, **rest: Any) -> tuple:
        return op(x, axis=physical_axis(axis, batch[0]), **rest), batch[0]
    return rule


FAMILIES: dict[str, Callable[[Any], Callable]] = {
    "elementwise": elementwise, "reduction": reduction, "scan": scan}


def family(op_name: str, name: str, op: Any) -> Callable:
    """The batching rule of family ``name`` for ``op`` (defop's ``batch=``)."""
    try:
        return FAMILIES[name](op)
    except KeyError:
        raise ValueError(f"defop {op_name}: unknown batching family {name!r}; one of "
                         f"{', '.join(FAMILIES)}, or declare the rule with @{op_name}.batch") from None

