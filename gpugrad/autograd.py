"""``gg.autograd``: PyTorch's autograd API on gpugrad's engine.

    gg.autograd.grad(outputs, inputs, grad_outputs=None, retain_graph=None,
                     create_graph=False, allow_unused=False) -> tuple
    gg.autograd.backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False)
    class MyOp(gg.autograd.Function): forward(ctx, ...) / backward(ctx, grad) / MyOp.apply(...)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import backend, ops
from .batched import BatchedTensor
from .engine import (
    Node,
    detect_anomaly,
    enable_grad,
    grad_mode,
    inference_mode,
    no_grad,
    run_backward,
    set_grad_enabled,
)
from .ops.batching import loop_function
from .ops.util import sum_to_shape
from .tensor import Tensor, _root_gradient


def _as_list(x: Any, name: str) -> list[Any]:
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError(f"{name} must be a Tensor or a sequence of Tensors, got {type(x).__name__}")


def _seeds(op: str, outputs: list[Tensor], grad_outputs: Any, create_graph: bool) -> list[Any]:
    """The gradient to start from at each output: Tensors with create_graph, arrays otherwise."""
    given = [None] * len(outputs) if grad_outputs is None else _as_list(grad_outputs, "grad_outputs")
    if len(given) != len(outputs):
        raise ValueError(f"{op}: {len(given)} grad_outputs for {len(outputs)} outputs")
    seeds = []
    for out, g in zip(outputs, given):
        if not isinstance(out, Tensor) or not out.requires_grad:
            raise RuntimeError(f"{op}: an output does not require grad (it was computed from no input "
                               "that requires grad, or under gg.no_grad())")
        if create_graph and isinstance(g, Tensor):
            _root_gradient(op, out, g.detach())          # validates shape, dtype, device
            seeds.append(g if g.dtype == out.dtype else g.astype(out.dtype))
            continue
        arr = _root_gradient(op, out, g)
        seeds.append(Tensor._wrap(arr) if create_graph else arr)
    return seeds


def grad(outputs: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor],
         grad_outputs: Any = None, retain_graph: bool | None = None, create_graph: bool = False,
         allow_unused: bool = False) -> tuple[Tensor | None, ...]:
    """The gradients of ``outputs`` with respect to ``inputs``, returned (not accumulated).

    With ``create_graph`` the gradients are recorded, so they can be differentiated again.
    """
    outs = _as_list(outputs, "outputs")
    ins = _as_list(inputs, "inputs")
    for i, t in enumerate(ins):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError(f"autograd.grad: input {i} does not require grad")
    retain = create_graph if retain_graph is None else retain_graph
    found = run_backward(outs, _seeds("autograd.grad", outs, grad_outputs, create_graph),
                         retain_graph=retain, capture=ins, create_graph=create_graph)
    result: list[Tensor | None] = []
    for i, g in enumerate(found):
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"autograd.grad: input {i} was not used to compute the outputs, so it has no "
                    "gradient; pass allow_unused=True to get None for it")
            result.append(None)
        else:
            result.append(g if create_graph else Tensor._wrap(g))
    return tuple(result)


def backward(tensors: Tensor | Sequence[Tensor], grad_tensors: Any = None,
             retain_graph: bool | None = None, create_graph: bool = False) -> None:
    """Accumulate the gradients of ``tensors`` into the ``.grad`` of the leaves they depend on."""
    outs = _as_list(tensors, "tensors")
    retain = create_graph if retain_graph is None else retain_graph
    run_backward(outs, _seeds("backward", outs, grad_tensors, create_graph),
                 retain_graph=retain, create_graph=create_graph)


# ----------------------------------------------------------------------------- custom functions

class FunctionCtx:
    """What ``forward`` leaves for ``backward``: saved tensors and any attributes you set."""

    def __init__(self, needs_input_grad: tuple[bool, ...], input_shapes: tuple = ()) -> None:
        self.needs_input_grad = needs_input_grad
        self._input_shapes = input_shapes      # what each gradient backward returns must fit
        self._saved: tuple[Any, ...] = ()
        self._output: Tensor | None = None     # set while backward runs with create_graph

    def save_for_backward(self, *tensors: Any) -> None:
        self._saved = tensors

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        if self._saved is None:
            raise RuntimeError("saved_tensors were freed by an earlier backward; pass retain_graph=True")
        out = self._output
        return tuple(out if (out is not None and t is _OUTPUT) else t for t in self._saved)


class _OutputMarker:
    def __repr__(self) -> str:
        return "<the forward's output>"


_OUTPUT = _OutputMarker()


class _FunctionOp:
    """Makes a user's Function look like a registry op to the engine."""

    def __init__(self, fn_cls: type) -> None:
        self.fn_cls = fn_cls
        self.name = fn_cls.__name__

    def _call_backward(self, ctx: FunctionCtx, g: Tensor, n_inputs: int) -> tuple:
        grads = self.fn_cls.backward(ctx, g)
        if not isinstance(grads, tuple):
            grads = (grads,)
        if len(grads) != n_inputs:
            raise RuntimeError(f"{self.name}.backward returned {len(grads)} gradient(s) but forward "
                               f"took {n_inputs} input(s); return None for inputs without one")
        return grads

    def _fit(self, xp: Any, grads: tuple, node: Node) -> tuple:
        """Each gradient in its input's shape, as PyTorch: equal, or summed over the dimensions the
        input broadcasts to (a gradient of shape (2, 3) for an input of shape (3,)); else an error."""
        fitted = []
        for k, (gi, parent, shape) in enumerate(zip(grads, node.parents, node.inputs[0]._input_shapes)):
            if gi is not None and parent is not None and tuple(gi.shape) != shape:
                got = tuple(gi.shape)
                if not _broadcasts_to(shape, got):
                    raise RuntimeError(
                        f"{self.name}.backward returned a gradient of shape {got} for input {k}, which has "
                        f"shape {shape}: return a gradient of the input's shape (one it broadcasts to is "
                        "summed to it)")
                gi = sum_to_shape(xp, gi, shape)
            fitted.append(gi)
        return tuple(fitted)

    def run_vjp(self, g: Any, node: Node) -> tuple:
        ctx = node.inputs[0]
        with no_grad():
            ctx._output = Tensor._wrap(node.out)
            try:
                grads = self._call_backward(ctx, Tensor._wrap(g), len(node.parents))
            finally:
                ctx._output = None
        grads = tuple(None if gi is None else _data_of(gi) for gi in grads)
        return self._fit(backend.namespace(g), grads, node)

    def run_vjp_graph(self, g: Tensor, node: Node) -> tuple:
        ctx = node.inputs[0]
        with enable_grad():
            ctx._output = Tensor._wrap(node.out, node)
            try:
                grads = tuple(gi if gi is None or isinstance(gi, Tensor) else Tensor(gi)
                              for gi in self._call_backward(ctx, g, len(node.parents)))
            finally:
                ctx._output = None
            return self._fit(ops, grads, node)


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` (NumPy's rule, read right to left)."""
    return len(shape) <= len(target) and all(n in (1, t) for n, t in zip(reversed(shape), reversed(target)))


def _data_of(g: Any) -> Any:
    return g.data if isinstance(g, Tensor) else backend.namespace(g).asarray(g)


class Function:
    """A differentiable op written by the user, as ``torch.autograd.Function``::

        class Cube(gg.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x ** 3

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return 3 * x ** 2 * g

        y = Cube.apply(x)

    ``forward`` runs without recording; ``backward`` gets one gradient and returns one
    per input of ``forward`` (None where there is none). Written in gpugrad ops, the
    backward works with ``create_graph=True`` too. One output Tensor per Function.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError("a Function subclass must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx: FunctionCtx, *grad_outputs: Tensor) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, grad)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        if any(type(a) is BatchedTensor for a in args):
            return loop_function(cls, args, kwargs)
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = FunctionCtx(needs, tuple(a.shape if isinstance(a, Tensor) else None for a in args))
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(f"{cls.__name__}.forward must return one Tensor, got {type(out).__name__}")
        result = Tensor._wrap(out.data)
        if not (any(needs) and grad_mode.enabled) or out.dtype.kind != "f":
            return result
        ctx._saved = tuple(_OUTPUT if t is out else t for t in ctx._saved)
        op = cls.__dict__.get("_gpugrad_op") or _FunctionOp(cls)
        cls._gpugrad_op = op
        parents = tuple((a if a._node is None else a._node) if need else None
                        for a, need in zip(args, needs))
        result._node = Node(op, out.data, (ctx,), {}, parents, out.dtype)   # type: ignore[arg-type]
        result._requires_grad = True
        return result


__all__ = ["grad", "backward", "Function", "FunctionCtx", "no_grad", "enable_grad", "inference_mode",
           "set_grad_enabled", "detect_anomaly"]
