"""In-place safety: a version number per array buffer, bumped by every in-place change.

A node snapshots the versions of the arrays it saved; backward compares them
and refuses to use an array that changed since, naming the op that saved it and
the source line that changed it. Until the first in-place change in the process
there is nothing to track, so the op path pays nothing.
"""

from __future__ import annotations

import os
import sys
import weakref
from typing import Any

_versions: dict[int, int] = {}      # id(buffer) -> times changed in place (absent: never)
_where: dict[int, str] = {}         # id(buffer) -> where it was last changed
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _buffer(array: Any) -> Any:
    """The array that owns the memory of ``array`` (views share their base's version)."""
    while getattr(array, "base", None) is not None and hasattr(array.base, "shape"):
        array = array.base
    return array


def user_frame() -> str:
    """The innermost caller outside gpugrad, as 'file:line in function'."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def bump(array: Any, what: str) -> None:
    """Record an in-place change of ``array``'s buffer by ``what`` (e.g. 'add_')."""
    buf = _buffer(array)
    key = id(buf)
    if key not in _versions:
        _versions[key] = 0
        weakref.finalize(buf, _forget, key)
    _versions[key] += 1
    _where[key] = f"{what} at {user_frame()}"


def _forget(key: int) -> None:
    _versions.pop(key, None)
    _where.pop(key, None)


def active() -> bool:
    """Whether any buffer has ever been changed in place (and is still alive)."""
    return bool(_versions)


def snapshot(arrays: tuple) -> tuple[int, ...] | None:
    """The current versions of saved arrays, or None when nothing was ever changed in place."""
    if not _versions:
        return None
    return tuple(_versions.get(id(_buffer(a)), 0) if hasattr(a, "shape") else 0 for a in arrays)


def check(node: Any) -> None:
    """Raise if an array saved by ``node`` was changed in place after the node saved it."""
    saved = (node.out, *node.inputs)
    before = node.versions or (0,) * len(saved)
    for i, (a, v) in enumerate(zip(saved, before)):
        if a is None or not hasattr(a, "shape"):
            continue
        key = id(_buffer(a))
        now = _versions.get(key, 0)
        if now != v:
            what = "its output" if i == 0 else f"its input {i - 1}"
            raise RuntimeError(
                f"backward: {node.name} needs {what} (shape {tuple(a.shape)}), which was changed in "
                f"place after {node.op.name} saved it (version {v}, now {now}); last change: "
                f"{_where.get(key, 'unknown')}. Compute a new tensor instead of changing it in place "
                "(e.g. y = y + 1 instead of y.add_(1)), or change it after backward.")
