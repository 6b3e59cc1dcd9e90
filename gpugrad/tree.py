"""Pytrees: nested tuples, lists and dicts whose leaves are tensors (or numbers, arrays)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Spec = Any   # ("tuple" | "list" | "dict", keys-or-None, [child specs]) or None for a leaf


def flatten(tree: Any) -> tuple[list[Any], Spec]:
    """The leaves of ``tree`` in a fixed order (dicts by sorted key) and its structure."""
    leaves: list[Any] = []

    def walk(node: Any) -> Spec:
        if isinstance(node, (tuple, list)) and not hasattr(node, "_fields"):
            return ("tuple" if isinstance(node, tuple) else "list", None, [walk(c) for c in node])
        if isinstance(node, dict):
            keys = sorted(node)
            return ("dict", keys, [walk(node[k]) for k in keys])
        leaves.append(node)
        return None

    return leaves, walk(tree)


def unflatten(spec: Spec, leaves: list[Any]) -> Any:
    """Rebuild a tree of ``spec``'s structure from ``leaves`` (in ``flatten``'s order)."""
    it = iter(leaves)

    def build(s: Spec) -> Any:
        if s is None:
            return next(it)
        kind, keys, children = s
        built = [build(c) for c in children]
        if kind == "dict":
            return dict(zip(keys, built))
        return tuple(built) if kind == "tuple" else built

    return build(spec)


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    leaves, spec = flatten(tree)
    return unflatten(spec, [fn(leaf) for leaf in leaves])
