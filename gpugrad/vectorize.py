"""``gg.vmap``: run a function written for one example on a whole batch, as ``jax.vmap`` does.

    per_example = gg.vmap(f)(xs)                        # f(xs[0]), f(xs[1]), ... stacked
    gg.vmap(f, in_axes=(None, 0))(w, xs)                # w shared, xs mapped over its axis 0
    gg.vmap(gg.grad(loss), in_axes=(None, 0, 0))(params, x, y)   # per-example gradients

The function runs once, on ``BatchedTensor``s (gpugrad.batched): every op it applies runs
its batching rule on the whole batch (gpugrad.ops.batching), so there is no Python loop.
``in_axes`` and ``out_axes`` are an int, None, or a pytree prefix of the arguments and the
result (a tuple with one entry per positional argument, a dict for a dict...). Keyword
arguments are passed through unmapped, as in JAX. vmap nests, and composes with grad, vjp,
jvp, jacobian and hessian in either order.

``randomness`` is torch.func's policy for gpugrad's global generator (gg.randn, gg.rand,
gg.randint, dropout) inside the function: "error" (the default) refuses, "different" draws
independent numbers for every entry, "same" one draw shared by all. Functional keys
(gg.random) need no policy: a batch of keys gives a batch of independent draws.

``fallback="loop"`` lets an op without a batching rule (a user's own OpDef, an
autograd.Function) run once per batch entry instead of raising. ``chunk_size`` runs the batch
in chunks of that many entries, one after another (less memory; arrays that stay in cache).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import batched
from .batched import BatchedTensor, Level
from .ops import registry
from .ops.batching import materialize, move
from .tensor import Tensor
from .tree import flatten, unflatten

RANDOMNESS = ("error", "different", "same")
_counting = threading.Lock()


def vmap(fn: Callable, in_axes: Any = 0, out_axes: Any = 0, *, randomness: str = "error",
         fallback: str | None = None, chunk_size: int | None = None) -> Callable:
    """Vectorise ``fn`` over a batch axis of its arguments (``jax.vmap``, ``torch.func.vmap``)."""
    name = f"vmap({getattr(fn, '__name__', 'f')})"
    if not callable(fn):
        raise TypeError(f"vmap: the function to vectorise must be callable, got {type(fn).__name__}")
    if randomness not in RANDOMNESS:
        raise ValueError(f"{name}: randomness must be one of {', '.join(RANDOMNESS)}, got {randomness!r}")
    if fallback not in (None, "loop"):
        raise ValueError(f"{name}: fallback must be None or 'loop', got {fallback!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"{name}: chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size is not None and randomness == "same":
        raise ValueError(f"{name}: randomness='same' cannot be kept across chunks; drop chunk_size")
    _check_axes_spec(name, "in_axes", in_axes)
    _check_axes_spec(name, "out_axes", out_axes)

    def transformed(*args: Any, **kwargs: Any) -> Any:
        leaves, specs, axes = _mapped_leaves(name, in_axes, args)
        size = _batch_size(name, leaves, axes)
        if chunk_size is None or chunk_size >= size:
            return _run(leaves, specs, axes, size, kwargs)
        parts = []
        for start in range(0, size, chunk_size):
            window = (slice(start, start + chunk_size),)
            chunk = [leaf if a is None else leaf[(slice(None),) * a + window]
                     for leaf, a in zip(leaves, axes)]
            parts.append(_run(chunk, specs, axes, min(chunk_size, size - start), kwargs))
        return _joined(name, parts, out_axes)

    def _run(leaves: list, specs: list, axes: list, size: int, kwargs: dict) -> Any:
        level = Level(batched._next_level(), size, randomness, fallback)
        _enter(level)
        try:
            wrapped = [leaf if a is None else BatchedTensor.of(leaf, a, level.level)
                       for leaf, a in zip(leaves, axes)]
            call_args, i = [], 0
            for spec, n in specs:
                call_args.append(unflatten(spec, wrapped[i:i + n]))
                i += n
            result = fn(*call_args, **kwargs)
            return _unmapped(name, result, out_axes, level)
        finally:
            _leave(level)

    transformed.__name__ = name
    transformed.__doc__ = fn.__doc__
    return transformed


def _joined(name: str, parts: list, out_axes: Any) -> Any:
    """The chunks' results joined along their batch axes (an unmapped output: the first chunk's)."""
    from .ops import concatenate  # noqa: PLC0415

    first, spec = flatten(parts[0])
    axes = _axes_like(name, "out_axes", parts[0], out_axes)
    columns = [flatten(p)[0] for p in parts]
    out = [first[k] if axis is None else concatenate([c[k] for c in columns], axis=axis % first[k].ndim)
           for k, axis in enumerate(axes)]
    return unflatten(spec, out)


def _enter(level: Level) -> None:
    batched.state.levels[level.level] = level
    with _counting:
        registry.vmapping += 1


def _leave(level: Level) -> None:
    del batched.state.levels[level.level]
    with _counting:
        registry.vmapping -= 1


# ----------------------------------------------------------------------------- axes


def _check_axes_spec(name: str, what: str, spec: Any) -> None:
    for a in flatten(spec)[0]:
        if a is not None and (isinstance(a, bool) or not isinstance(a, int)):
            raise TypeError(f"{name}: {what} must be ints or None (or a pytree of them), got {a!r}")


def _axes_like(name: str, what: str, tree: Any, spec: Any) -> list[int | None]:
    """One axis per leaf of ``tree``, from ``spec``: an int or None for a whole subtree, else a prefix."""
    out: list[int | None] = []
    _match(name, what, tree, spec, out)
    return out


def _match(name: str, what: str, tree: Any, spec: Any, out: list) -> None:
    if spec is None or isinstance(spec, int):
        out.extend([spec] * len(flatten(tree)[0]))
        return
    if isinstance(spec, dict) and isinstance(tree, dict):
        if set(spec) != set(tree):
            raise ValueError(f"{name}: {what} has keys {sorted(spec)} where the value has {sorted(tree)}")
        for k in sorted(tree):
            _match(name, what, tree[k], spec[k], out)
        return
    if isinstance(spec, (tuple, list)) and isinstance(tree, (tuple, list)) and len(spec) == len(tree):
        for t, s in zip(tree, spec):
            _match(name, what, t, s, out)
        return
    raise ValueError(f"{name}: {what} {spec!r} does not match the structure of the value it maps "
                     f"(a {type(tree).__name__}); give an int, None, or a pytree of the value's structure")


def _mapped_leaves(name: str, in_axes: Any, args: tuple) -> tuple[list, list, list]:
    """Every argument's leaves, (structure, count) per argument, and each leaf's batch axis."""
    if isinstance(in_axes, (tuple, list)):
        if len(in_axes) != len(args):
            raise ValueError(f"{name}: in_axes has {len(in_axes)} entries but the function got {len(args)} "
                             "positional arguments; give one per argument (None for an unmapped one)")
        per_arg = list(in_axes)
    elif in_axes is None or isinstance(in_axes, int):
        per_arg = [in_axes] * len(args)
    else:
        raise TypeError(f"{name}: in_axes must be an int, None, or a tuple/list with one entry per "
                        f"positional argument, got {type(in_axes).__name__}")
    leaves, specs, axes = [], [], []
    for i, (arg, spec_i) in enumerate(zip(args, per_arg)):
        values, spec = flatten(arg)
        for value, axis in zip(values, _axes_like(name, f"in_axes[{i}]", arg, spec_i)):
            if axis is not None:
                value, axis = _mapped_value(name, i, value, axis)
            leaves.append(value)
            axes.append(axis)
        specs.append((spec, len(values)))
    if all(a is None for a in axes):
        raise ValueError(f"{name}: no argument is mapped (every in_axes entry is None); map at least one "
                         "tensor, e.g. in_axes=0")
    return leaves, specs, axes


def _mapped_value(name: str, i: int, value: Any, axis: int) -> tuple[Tensor, int]:
    if not isinstance(value, Tensor):
        if not hasattr(value, "shape"):
            raise TypeError(f"{name}: argument {i} is mapped (in_axes {axis}) but is a "
                            f"{type(value).__name__}, not a tensor; give its axis as None to pass it "
                            "as it is")
        value = Tensor(value)
    ndim = value.ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: in_axes {axis} for argument {i} of shape {value.shape}: it has no such "
                         f"axis" + (" (a 0-d tensor cannot be mapped)" if ndim == 0 else ""))
    return value, axis % ndim


def _batch_size(name: str, leaves: list, axes: list) -> int:
    sizes = {leaf.shape[a] for leaf, a in zip(leaves, axes) if a is not None}
    if len(sizes) > 1:
        shown = ", ".join(f"{tuple(leaf.shape)} at axis {a}"
                          for leaf, a in zip(leaves, axes) if a is not None)
        raise ValueError(f"{name}: the mapped axes have different sizes: {shown}; they must all be one "
                         "batch size")
    return sizes.pop()


def _unmapped(name: str, result: Any, out_axes: Any, level: Level) -> Any:
    """The result with this level's batch axis placed at ``out_axes`` (unbatched values broadcast)."""
    values, spec = flatten(result)
    axes = _axes_like(name, "out_axes", result, out_axes)
    out = []
    for value, axis in zip(values, axes):
        mine = type(value) is BatchedTensor and value.level == level.level
        if axis is None:
            if mine:
                raise ValueError(f"{name}: out_axes is None for an output that depends on the mapped "
                                 "arguments; give it an axis (out_axes=0)")
            out.append(value)
            continue
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: the function returned a {type(value).__name__} where a tensor was "
                            "expected (out_axes maps every output); give its out_axes as None")
        ndim = value.ndim + 1
        if not -ndim <= axis < ndim:
            raise ValueError(f"{name}: out_axes {axis} is out of range for an output of shape "
                             f"{value.shape} ({ndim} dimensions with the batch)")
        if mine:
            out.append(move(value.value, value.bdim, axis % ndim))
        else:
            out.append(move(materialize(value, None, level.size), 0, axis % ndim))
    return unflatten(spec, out)


__all__ = ["vmap"]
