"""Pytrees: nested tuples, lists and dicts whose leaves are tensors (or numbers, arrays).

The walks are module-level functions that pass their state along, not closures that call
themselves: a recursive closure is a reference cycle (function -> cell -> function), and one
per call would leave garbage for the cycle collector on every transform call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Spec = Any   # ("tuple" | "list" | "dict", keys-or-None, [child specs]) or None for a leaf


def flatten(tree: Any) -> tuple[list[Any], Spec]:
    """The leaves of ``tree`` in a fixed order (dicts by sorted key) and its structure."""
    leaves: list[Any] = []
    return leaves, _flatten(tree, leaves)


def _flatten(node: Any, leaves: list[Any]) -> Spec:
    if isinstance(node, (tuple, list)) and not hasattr(node, "_fields"):
        return ("tuple" if isinstance(node, tuple) else "list", None, [_flatten(c, leaves) for c in node])
    if isinstance(node, dict):
        keys = sorted(node)
        return ("dict", keys, [_flatten(node[k], leaves) for k in keys])
    leaves.append(node)
    return None


def unflatten(spec: Spec, leaves: list[Any]) -> Any:
    """Rebuild a tree of ``spec``'s structure from ``leaves`` (in ``flatten``'s order)."""
    return _build(spec, iter(leaves))


def _build(spec: Spec, leaves: Iterator[Any]) -> Any:
    if spec is None:
        return next(leaves)
    kind, keys, children = spec
    built = [_build(c, leaves) for c in children]
    if kind == "dict":
        return dict(zip(keys, built))
    return tuple(built) if kind == "tuple" else built


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    leaves, spec = flatten(tree)
    return unflatten(spec, [fn(leaf) for leaf in leaves])
