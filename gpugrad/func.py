"""JAX-style function transforms on the tape: grad, value_and_grad, vjp, jvp, jacobian,
hessian, stop_gradient.

Arguments may be pytrees (nested tuples, lists, dicts) of tensors. Transforms
compose: inside an enclosing transform, an argument that takes part in the
enclosing graph makes the inner transform record its backward pass
(create_graph), so ``grad(grad(f))``, ``jacobian(grad(f))`` and ``hessian`` work to
any order. At top level every argument is a plain value, as in JAX: a tensor the
user marked with requires_grad is differentiated from scratch and left untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import backend
from .creation import tensor
from .dtypes import is_floating
from .engine import enable_grad, grad_mode, run_backward
from .ops import reshape, stack
from .ops.convert import alias
from .tensor import Tensor
from .tree import flatten, tree_map, unflatten


def stop_gradient(x: Any) -> Tensor:
    """``x`` as a constant: the backward pass treats it as having no inputs (``jax.lax.stop_gradient``)."""
    return x.detach() if isinstance(x, Tensor) else tensor(x)


# ----------------------------------------------------------------------------- differentiated inputs

class _Depth(threading.local):
    value = 0


_depth = _Depth()        # how many transforms are evaluating their function right now


@contextmanager
def _tracing() -> Iterator[None]:
    """Mark the evaluation of a transformed function (and record it)."""
    _depth.value += 1
    try:
        with enable_grad():
            yield
    finally:
        _depth.value -= 1


def _in_enclosing_graph(value: Any) -> bool:
    return _depth.value > 0 and grad_mode.enabled and isinstance(value, Tensor) and value.requires_grad


def _leaf(name: str, value: Any, position: int) -> Tensor:
    """The tensor that a transform differentiates with respect to.

    Normally a fresh leaf sharing the argument's data, so the caller's tensor and its
    ``.grad`` stay untouched. When the argument belongs to an enclosing transform's graph,
    an ``alias`` node instead, so the result stays attached to that graph and can be
    differentiated again.
    """
    if _in_enclosing_graph(value):
        return alias(value)
    t = Tensor._wrap(value.data) if isinstance(value, Tensor) else tensor(value)
    if not is_floating(t.data.dtype):
        raise TypeError(f"{name}: argument {position} is {t.data.dtype}; gradients are defined for "
                        "floating-point inputs only (pass 3.0, not 3, or cast with .to(gg.float32))")
    t.requires_grad_()
    return t


def _argnums(name: str, argnums: int | Sequence[int], nargs: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in nums:
        if not -nargs <= n < nargs:
            raise ValueError(f"{name}: argnums {argnums} out of range for {nargs} positional argument(s)")
    return tuple(n % nargs for n in nums)


class _Inputs:
    """The differentiated arguments of one call: pytrees of fresh leaves, and their structure."""

    def __init__(self, name: str, args: tuple, nums: tuple[int, ...]) -> None:
        self.args = list(args)
        self.specs = []
        self.leaves: list[Tensor] = []
        self.counts = []
        for n in nums:
            values, spec = flatten(args[n])
            leaves = [_leaf(name, v, n) for v in values]
            self.args[n] = unflatten(spec, leaves)
            self.specs.append(spec)
            self.counts.append(len(leaves))
            self.leaves.extend(leaves)
        self.nested = any(not t.is_leaf for t in self.leaves)

    def regroup(self, flat: list[Any]) -> list[Any]:
        """Per differentiated argument, a pytree shaped like it (from flat per-leaf values)."""
        out, i = [], 0
        for spec, count in zip(self.specs, self.counts):
            out.append(unflatten(spec, flat[i:i + count]))
            i += count
        return out


def _gradients(outputs: list[Tensor], seeds: list[Any], inputs: _Inputs, create_graph: bool,
               retain_graph: bool = False) -> list[Tensor]:
    """d outputs / d inputs.leaves, zeros where an input was not used."""
    live = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
    found: list[Any] = [None] * len(inputs.leaves)
    if live:
        found = run_backward([o for o, _ in live], [s for _, s in live], retain_graph=retain_graph,
                             capture=inputs.leaves, create_graph=create_graph)
    result = []
    for g, t in zip(found, inputs.leaves):
        if g is None:
            g = Tensor._wrap(backend.namespace(t.data).zeros_like(t.data))
        elif not create_graph:
            g = Tensor._wrap(g)
        result.append(g)
    return result


def _seed(out: Tensor, graph: bool) -> Any:
    ones = backend.namespace(out.data).ones_like(out.data)
    return Tensor._wrap(ones) if graph else ones


# ----------------------------------------------------------------------------- grad

def value_and_grad(f: Callable, argnums: int | Sequence[int] = 0,
                   has_aux: bool = False) -> Callable:
    """Transform scalar-valued ``f`` into a function returning ``(f(*args), df/dargs)``.

    With a tuple ``argnums`` the gradient is a tuple. With ``has_aux``, ``f`` returns
    ``(value, aux)`` and the result is ``((value, aux), grad)``, as in JAX. Each
    gradient has the pytree structure of its argument.
    """
    name = f"value_and_grad({getattr(f, '__name__', 'f')})"

    def transformed(*args: Any, **kwargs: Any) -> Any:
        if not args:
            raise TypeError(f"{name}: called with no positional arguments to differentiate")
        inputs = _Inputs(name, args, _argnums(name, argnums, len(args)))
        with _tracing():
            result = f(*inputs.args, **kwargs)
        aux = None
        if has_aux:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(f"{name}: with has_aux=True, f must return a pair (value, aux)")
            result, aux = result
        out = _scalar_output(name, result)
        graph = inputs.nested
        grads = inputs.regroup(_gradients([out], [_seed(out, graph)], inputs, graph, retain_graph=graph))
        grad_value = grads[0] if isinstance(argnums, int) else tuple(grads)
        value = out if graph else out.detach()
        if has_aux and not graph:           # aux is data, not part of any graph the caller can use
            aux = tree_map(lambda v: v.detach() if isinstance(v, Tensor) else v, aux)
        return ((value, aux), grad_value) if has_aux else (value, grad_value)

    transformed.__name__ = name
    return transformed


def grad(f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """Transform scalar-valued ``f`` into a function returning its gradient (``jax.grad``)."""
    vg = value_and_grad(f, argnums, has_aux)

    def transformed(*args: Any, **kwargs: Any) -> Any:
        if has_aux:
            (_, aux), g = vg(*args, **kwargs)
            return g, aux
        return vg(*args, **kwargs)[1]

    transformed.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return transformed


def _scalar_output(name: str, result: Any) -> Tensor:
    if not isinstance(result, Tensor):
        raise TypeError(f"{name}: f must return a scalar Tensor, got {type(result).__name__}")
    if result.data.size != 1:
        raise TypeError(
            f"{name}: gradients are defined only for scalar-output functions, but f returned shape "
            f"{result.shape}. Reduce it first (e.g. grad(lambda x: f(x).sum())) or use "
            "y.backward(gradient=...) for a weighted sum")
    if not is_floating(result.data.dtype):
        raise TypeError(f"{name}: f returned {result.data.dtype}; only floating-point outputs have gradients")
    return result


# ----------------------------------------------------------------------------- vjp, jvp

def vjp(f: Callable, *primals: Any) -> tuple[Any, Callable]:
    """``(f(*primals), vjp_fn)``: ``vjp_fn(cotangent)`` returns one gradient per primal (a tuple).

    ``f`` may return a Tensor or a pytree of Tensors; the cotangent has the same
    structure. ``vjp_fn`` can be called any number of times.
    """
    name = f"vjp({getattr(f, '__name__', 'f')})"
    inputs = _Inputs(name, primals, tuple(range(len(primals))))
    with _tracing():
        result = f(*inputs.args)
    outs, out_spec = flatten(result)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"{name}: f must return Tensors, got {type(o).__name__}")

    def vjp_fn(cotangent: Any) -> tuple:
        cots, spec = flatten(cotangent)
        if spec != out_spec:
            raise ValueError(f"{name}: the cotangent's structure differs from f's output")
        seeds = []
        graph = inputs.nested or any(isinstance(c, Tensor) and c.requires_grad for c in cots)
        for o, c in zip(outs, cots):
            c = c if isinstance(c, Tensor) else tensor(c, dtype=o.dtype)
            if tuple(c.shape) != o.shape:
                raise ValueError(f"{name}: cotangent shape {c.shape} differs from output shape {o.shape}")
            seeds.append(c.astype(o.dtype) if graph else c.data.astype(o.dtype, copy=False))
        grads = _gradients(outs, seeds, inputs, graph, retain_graph=True)
        return tuple(inputs.regroup(grads))

    value = result if inputs.nested else unflatten(out_spec, [o.detach() for o in outs])
    return value, vjp_fn


def jvp(f: Callable, primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Forward mode: ``(f(*primals), J @ tangents)`` for a Tensor-valued ``f``.

    Computed exactly by the double-VJP trick: u -> vjp(u) = Jᵀu is linear in the
    cotangent u, so the gradient of <Jᵀu, t> with respect to u is J t.
    """
    name = f"jvp({getattr(f, '__name__', 'f')})"
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"{name}: {len(primals)} primals but {len(tangents)} tangents")
    for i, (p, t) in enumerate(zip(primals, tangents)):
        _check_tangent(name, i, p, t)
    nested = _recorded(primals) or _recorded(tangents)
    out, vjp_fn = vjp(f, *primals)
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}: f must return a single Tensor")
    xp = backend.namespace(out.data)
    u = Tensor._wrap(xp.zeros_like(out.data)).requires_grad_()
    total = None
    with enable_grad():
        for pulled, tangent in zip(vjp_fn(u), tangents):
            for g, t in zip(flatten(pulled)[0], flatten(tangent)[0]):
                term = (g * (t if isinstance(t, Tensor) else tensor(t, dtype=g.dtype))).sum()
                total = term if total is None else total + term
    if total is None or not total.requires_grad:
        return out, Tensor._wrap(xp.zeros_like(out.data))
    (tangent_out,) = run_backward([total], [_seed(total, nested)], capture=[u], create_graph=nested)
    if tangent_out is None:
        return out, Tensor._wrap(xp.zeros_like(out.data))
    return out, tangent_out if nested else Tensor._wrap(tangent_out)


def _check_tangent(name: str, i: int, primal: Any, tangent: Any) -> None:
    """A tangent has its primal's structure, shapes and (where it has one) floating dtype, as in JAX."""
    p_leaves, p_spec = flatten(primal)
    t_leaves, t_spec = flatten(tangent)
    if p_spec != t_spec:
        raise ValueError(f"{name}: tangent {i} has another structure than primal {i} (a "
                         f"{type(tangent).__name__} for a {type(primal).__name__}); give each tangent "
                         "the structure of its primal")
    for j, (p, t) in enumerate(zip(p_leaves, t_leaves)):
        where = f"tangent {i}" + (f", leaf {j}," if p_spec is not None else "")
        p_shape, p_dtype = _shape_and_dtype(p)
        t_shape, t_dtype = _shape_and_dtype(t)
        if t_shape != p_shape:
            raise ValueError(f"{name}: {where} has shape {t_shape} but its primal has shape {p_shape}; "
                             "give each tangent its primal's shape")
        if hasattr(t, "dtype") and (not is_floating(t_dtype) or t_dtype != p_dtype):
            raise TypeError(f"{name}: {where} is {t_dtype} but its primal is {p_dtype}; give each tangent "
                            "its primal's floating dtype (t.astype(...))")


def _shape_and_dtype(value: Any) -> tuple[tuple[int, ...], Any]:
    if not hasattr(value, "dtype"):
        value = tensor(value)           # a Python number or nested list: as a transform sees it
    return tuple(value.shape), value.dtype


def _recorded(tree: Any) -> bool:
    """Whether a tensor in ``tree`` belongs to an enclosing graph (so results must be recorded)."""
    return any(_in_enclosing_graph(v) for v in flatten(tree)[0])


# ----------------------------------------------------------------------------- jacobian, hessian

def jacobian(f: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """Reverse-mode Jacobian: for x of shape S and f(x) of shape T, a Tensor of shape T + S.

    With a tuple ``argnums``, a tuple of Jacobians (one per argument). ``f`` may return
    a pytree of Tensors; the result then has that structure, with the per-argument
    Jacobians inside (as ``jax.jacrev``).
    """
    name = f"jacobian({getattr(f, '__name__', 'f')})"

    def transformed(*args: Any) -> Any:
        nums = _argnums(name, argnums, len(args))

        def restricted(*chosen: Any) -> Any:
            full = list(args)
            for n, c in zip(nums, chosen):
                full[n] = c
            return f(*full)

        out, vjp_fn = vjp(restricted, *[args[n] for n in nums])
        outs, spec = flatten(out)
        zeros = [Tensor._wrap(backend.namespace(o.data).zeros_like(o.data)) for o in outs]
        per_output = []
        for k, o in enumerate(outs):
            xp = backend.namespace(o.data)
            rows: list[list[Tensor]] = [[] for _ in nums]
            for j in range(o.numel()):
                basis = xp.zeros(o.numel(), dtype=o.dtype)
                basis[j] = 1
                cotangent = list(zeros)
                cotangent[k] = Tensor._wrap(basis.reshape(o.shape))
                for i, g in enumerate(vjp_fn(unflatten(spec, cotangent))):
                    rows[i].append(g)
            jacs = []
            for i, n in enumerate(nums):
                shape = tuple(getattr(args[n], "shape", ()))
                jacs.append(reshape(stack(rows[i]), o.shape + shape) if rows[i] else
                            Tensor._wrap(xp.zeros(o.shape + shape, dtype=o.dtype)))
            per_output.append(jacs[0] if isinstance(argnums, int) else tuple(jacs))
        return unflatten(spec, per_output)

    transformed.__name__ = name
    return transformed


def hessian(f: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """The Hessian of scalar-valued ``f``: the Jacobian of its gradient (shape S + S).

    With a tuple ``argnums``, nested tuples: ``H[i][j]`` is d²f / d arg_i d arg_j.
    """
    return jacobian(grad(f, argnums), argnums)


__all__ = ["grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "stop_gradient"]
