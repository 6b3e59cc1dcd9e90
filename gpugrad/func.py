"""JAX-style function transforms on the tape: grad, value_and_grad, vjp, jvp, jacobian (jacrev),
jacfwd, hessian, vmap, functional_call, stop_gradient (``gg.func``, as ``torch.func``).

Arguments may be pytrees (nested tuples, lists, dicts) of tensors. Transforms
compose: inside an enclosing transform, an argument that takes part in the
enclosing graph makes the inner transform record its backward pass
(create_graph), so ``grad(grad(f))``, ``jacobian(grad(f))`` and ``hessian`` work to
any order. At top level every argument is a plain value, as in JAX: a tensor the
user marked with requires_grad is differentiated from scratch and left untouched.

Inside ``vmap`` the gradients flow backward as tensors (batched where the values are), so
``vmap(grad(f))`` gives one gradient per batch entry. ``jacobian``, ``jacfwd`` and
``hessian`` are vmaps over basis vectors: one batched backward (or forward) pass gives every
row, and the graph is walked and pruned once, not once per row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import batched
from .batched import BatchedTensor
from .creation import eye, ones_like, tensor, zeros, zeros_like
from .dtypes import is_floating
from .engine import enable_grad, grad_mode, iter_graph, run_backward
from .ops import reshape
from .ops.batching import move
from .ops.convert import alias
from .tensor import Tensor
from .tree import flatten, tree_map, unflatten
from .vectorize import vmap


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
    if type(value) is BatchedTensor:            # inside vmap: a leaf of the logical (one-entry) value
        if not is_floating(value.dtype):
            raise TypeError(f"{name}: argument {position} is {value.dtype}; gradients are defined for "
                            "floating-point inputs only")
        return value.logical_leaf()
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


def _vmapping() -> bool:
    """Whether a vmap is running in this thread (then gradients flow as tensors, maybe batched)."""
    return bool(batched.state.levels)


def _gradients(outputs: list[Tensor], seeds: list[Any], inputs: _Inputs, create_graph: bool,
               retain_graph: bool = False) -> list[Tensor]:
    """d outputs / d inputs.leaves, zeros where an input was not used.

    Seeds are Tensors when ``create_graph`` or inside vmap (``_as_tensors``), arrays otherwise.
    """
    live = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
    found: list[Any] = [None] * len(inputs.leaves)
    as_tensors = create_graph or _vmapping()
    if live:
        found = run_backward([o for o, _ in live], [s for _, s in live], retain_graph=retain_graph,
                             capture=inputs.leaves, create_graph=create_graph, tensors=as_tensors)
    result = []
    for g, t in zip(found, inputs.leaves):
        if g is None:
            g = zeros_like(t)
        elif not as_tensors:
            g = Tensor._wrap(g)
        result.append(g)
    return result


def _as_tensors(graph: bool) -> bool:
    """Whether the walk carries Tensors: to record it (create_graph), or to batch it (inside vmap)."""
    return graph or _vmapping()


def _seed(out: Tensor, graph: bool) -> Any:
    ones = ones_like(out)
    return ones if _as_tensors(graph) else ones.data


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
            seeds.append(c.astype(o.dtype) if _as_tensors(graph) else c.data.astype(o.dtype, copy=False))
        grads = _gradients(outs, seeds, inputs, graph, retain_graph=True)
        return tuple(inputs.regroup(grads))

    value = result if inputs.nested else unflatten(out_spec, [o.detach() for o in outs])
    vjp_fn.outputs = outs                # type: ignore[attr-defined]   (the graph it pulls back through)
    return value, vjp_fn


def jvp(f: Callable, primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Forward mode: ``(f(*primals), J @ tangents)``; ``f`` returns a Tensor or a pytree of them.

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
    outs, spec = flatten(out)
    us = [zeros_like(o).requires_grad_() for o in outs]
    total = None
    with enable_grad():
        for pulled, tangent in zip(vjp_fn(unflatten(spec, us)), tangents):
            for g, t in zip(flatten(pulled)[0], flatten(tangent)[0]):
                term = (g * (t if isinstance(t, Tensor) else tensor(t, dtype=g.dtype))).sum()
                total = term if total is None else total + term
    found: list[Any] = [None] * len(us)
    if total is not None and total.requires_grad:
        found = run_backward([total], [_seed(total, nested)], capture=us, create_graph=nested,
                             tensors=_as_tensors(nested))
    result = []
    for g, o in zip(found, outs):
        if g is None:
            g = zeros_like(o)
        elif not _as_tensors(nested):
            g = Tensor._wrap(g)
        result.append(g)
    return out, unflatten(spec, result)


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


def _restricted(f: Callable, args: tuple, nums: tuple[int, ...]) -> Callable:
    """``f`` as a function of the differentiated arguments only (the others fixed)."""
    def restricted(*chosen: Any) -> Any:
        full = list(args)
        for n, c in zip(nums, chosen):
            full[n] = c
        return f(*full)
    restricted.__name__ = getattr(f, "__name__", "f")
    return restricted


def jacobian(f: Callable, argnums: int | Sequence[int] = 0, *, chunk_size: int | None = None) -> Callable:
    """Reverse-mode Jacobian (``jax.jacrev``): for x of shape S and f(x) of shape T, shape T + S.

    With a tuple ``argnums``, a tuple of Jacobians (one per argument); an argument that is a
    pytree gives a pytree of Jacobians. ``f`` may return a pytree of Tensors; the result then
    has that structure, with the per-argument Jacobians inside. The rows come from a vmapped
    VJP over the basis of the output: batched backward passes of ``chunk_size`` rows each. By
    default the chunk is chosen from the largest array in f's graph so that each batched array
    holds about 2^20 elements (they stay in cache); pass an int to choose it.
    """
    name = f"jacobian({getattr(f, '__name__', 'f')})"
    _check_chunk(name, chunk_size)

    def transformed(*args: Any) -> Any:
        nums = _argnums(name, argnums, len(args))
        out, vjp_fn = vjp(_restricted(f, args, nums), *[args[n] for n in nums])
        outs, spec = flatten(out)
        rows_per_pass = chunk_size or _rows_per_pass(vjp_fn.outputs)
        per_output = []
        for k, o in enumerate(outs):
            n = o.numel()
            basis = reshape(eye(n, dtype=o.dtype, device=o.device), (n, *o.shape))

            def pull(row: Tensor, k: int = k) -> tuple:
                cotangent = [row if j == k else zeros_like(other) for j, other in enumerate(outs)]
                return vjp_fn(unflatten(spec, cotangent))

            rows = vmap(pull, chunk_size=rows_per_pass)(basis) if n else \
                tuple(tree_map(_no_rows, args[m]) for m in nums)
            jacs = [tree_map(lambda r, o=o: reshape(r, (*o.shape, *r.shape[1:])), r) for r in rows]
            per_output.append(jacs[0] if isinstance(argnums, int) else tuple(jacs))
        return unflatten(spec, per_output)

    transformed.__name__ = name
    return transformed


_ROW_BUDGET = 2 ** 20      # elements per batched array that a Jacobian's chunk of rows aims at


def _check_chunk(name: str, chunk_size: Any) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"{name}: chunk_size must be a positive int or None, got {chunk_size!r}")


def _rows_per_pass(outs: list) -> int:
    """How many rows a batched pass takes: the budget over the largest array the graph saved."""
    largest = 1
    for node in _graph_nodes(outs):
        for a in (node.out, *node.inputs) if node.inputs is not None else ():
            size = getattr(a, "size", 1) if not isinstance(a, Tensor) else a.numel()
            if isinstance(size, int):
                largest = max(largest, size)
    return max(1, _ROW_BUDGET // largest)


def _graph_nodes(outs: list) -> Any:
    """Every node of the graphs behind ``outs`` (each once)."""
    seen: set = set()
    for o in outs:
        node = getattr(o, "_node", None)
        if node is not None and node not in seen:
            for n in iter_graph(node):
                if n not in seen:
                    seen.add(n)
                    yield n


def _no_rows(like: Any) -> Tensor:
    """No rows of a Jacobian (an empty output or input): shape (0, *like's shape)."""
    t = like if isinstance(like, Tensor) else tensor(like)
    return zeros((0, *t.shape), dtype=t.dtype, device=t.device)


def jacfwd(f: Callable, argnums: int | Sequence[int] = 0, *, chunk_size: int | None = None) -> Callable:
    """Forward-mode Jacobian (``jax.jacfwd``): the same result as ``jacobian``, column by column.

    A vmapped JVP over the basis of the inputs: one batched pass (or one per ``chunk_size``
    columns). Better than ``jacobian`` when the inputs are fewer than the outputs.
    """
    name = f"jacfwd({getattr(f, '__name__', 'f')})"
    _check_chunk(name, chunk_size)

    def transformed(*args: Any) -> Any:
        nums = _argnums(name, argnums, len(args))
        primals = [_as_primal(name, args[n], n) for n in nums]
        leaves = [flatten(p) for p in primals]
        flat = [leaf for values, _ in leaves for leaf in values]
        total = sum(leaf.numel() for leaf in flat)
        like = flat[0] if flat else tensor(0.0)
        identity = eye(total, dtype=like.dtype, device=like.device)
        tangents, start = [], 0
        for values, spec in leaves:        # the basis, cut into one block per input leaf
            blocks = []
            for leaf in values:
                n = leaf.numel()
                blocks.append(reshape(identity[:, start:start + n], (total, *leaf.shape)).astype(leaf.dtype))
                start += n
            tangents.append(unflatten(spec, blocks))
        restricted = _restricted(f, args, nums)

        def push(*ts: Any) -> Any:
            return jvp(restricted, primals, ts)[1]

        columns = vmap(push, chunk_size=chunk_size)(*tangents) if total else \
            tree_map(_no_rows, restricted(*primals))
        out_values, out_spec = flatten(columns)
        per_output = []
        for col in out_values:             # (total, *T): split per input leaf, moved behind T
            jacs, start = [], 0
            for values, spec in leaves:
                blocks = []
                for leaf in values:
                    n = leaf.numel()
                    block = col[start:start + n]
                    block = reshape(move(block, 0, block.ndim - 1), (*col.shape[1:], *leaf.shape))
                    blocks.append(block)
                    start += n
                jacs.append(unflatten(spec, blocks))
            per_output.append(jacs[0] if isinstance(argnums, int) else tuple(jacs))
        return unflatten(out_spec, per_output)

    transformed.__name__ = name
    return transformed


def _as_primal(name: str, value: Any, position: int) -> Any:
    """An argument as jacfwd differentiates it: tensors (numbers and arrays made into tensors)."""
    def convert(v: Any) -> Tensor:
        t = v if isinstance(v, Tensor) else tensor(v)
        if not is_floating(t.dtype):
            raise TypeError(f"{name}: argument {position} is {t.dtype}; Jacobians are defined for "
                            "floating-point inputs only")
        return t
    return tree_map(convert, value)


def hessian(f: Callable, argnums: int | Sequence[int] = 0, *, chunk_size: int | None = None) -> Callable:
    """The Hessian of scalar-valued ``f``: the Jacobian of its gradient (shape S + S).

    With a tuple ``argnums``, nested tuples: ``H[i][j]`` is d²f / d arg_i d arg_j. The gradient
    is recorded once, and the rows of the Hessian come from batched walks back through it
    (``chunk_size`` rows each; by default chosen as for ``jacobian``).
    """
    return jacobian(grad(f, argnums), argnums, chunk_size=chunk_size)


# ----------------------------------------------------------------------------- functional_call


def functional_call(module: Any, parameters_and_buffers: Any, args: Any = (), kwargs: dict | None = None, *,
                    strict: bool = False) -> Any:
    """Call ``module`` with some parameters and buffers replaced by the given tensors (``torch.func``).

    ``parameters_and_buffers`` maps dotted names (as ``module.named_parameters()`` gives them)
    to tensors; a tuple of such dicts is merged. ``args`` is a tuple of positional arguments or a
    single one. The module itself is unchanged afterwards. A tensor shared under several names
    (tied weights) is replaced under all of them. ``strict``: every parameter and buffer must be
    given. Per-example gradients of a model::

        loss = lambda p, x, y: F.cross_entropy(functional_call(model, p, (x[None],)), y[None])
        grads = gg.vmap(gg.grad(loss), in_axes=(None, 0, 0))(dict(model.named_parameters()), x, y)
    """
    given = _merged(parameters_and_buffers)
    places = _tensor_places(module)
    by_name = {name: key for key, entries in places.items() for name, _, _ in entries}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ValueError(f"functional_call: no parameter or buffer named {', '.join(map(repr, unknown))} in "
                         f"{type(module).__name__}; its names are {', '.join(sorted(by_name)) or '(none)'}")
    if strict:
        missing = sorted(set(by_name) - set(given))
        if missing:
            raise ValueError(f"functional_call: strict=True but no value for {', '.join(missing)}")
    replacement: dict[int, Any] = {}
    for name, value in given.items():
        key = by_name[name]
        if key in replacement and replacement[key][1] is not value:
            raise ValueError(f"functional_call: {name!r} and {replacement[key][0]!r} are one tied tensor "
                             "but were given different values")
        replacement[key] = (name, value)
    saved = []
    try:
        for key, (_, value) in replacement.items():
            for _, table, attr in places[key]:
                saved.append((table, attr, table[attr]))
                table[attr] = value
        call_args = args if isinstance(args, tuple) else (args,)
        return module(*call_args, **(kwargs or {}))
    finally:
        for table, attr, original in reversed(saved):
            table[attr] = original


def _merged(tables: Any) -> dict:
    if isinstance(tables, dict):
        return dict(tables)
    if isinstance(tables, (tuple, list)) and all(isinstance(t, dict) for t in tables):
        merged: dict = {}
        for t in tables:
            for k, v in t.items():
                if k in merged:
                    raise ValueError(f"functional_call: {k!r} is given in more than one dict")
                merged[k] = v
        return merged
    raise TypeError(f"functional_call: parameters_and_buffers must be a dict of name -> tensor (or a tuple "
                    f"of them), got {type(tables).__name__}")


def _tensor_places(module: Any) -> dict[int, list[tuple[str, dict, str]]]:
    """Every parameter and buffer of ``module``, by identity: (dotted name, its table, its key) each."""
    places: dict[int, list[tuple[str, dict, str]]] = {}
    for prefix, mod in module.named_modules(remove_duplicate=False):
        for table in (mod._parameters, mod._buffers):
            for attr, value in table.items():
                if value is not None:
                    name = f"{prefix}.{attr}" if prefix else attr
                    places.setdefault(id(value), []).append((name, table, attr))
    return places


__all__ = ["grad", "value_and_grad", "vjp", "jvp", "jacobian", "jacrev", "jacfwd", "hessian", "vmap",
           "functional_call", "stop_gradient"]

jacrev = jacobian
