"""In-place safety: one global clock orders node creations and in-place changes.

Every node takes a stamp from ``clock`` when it is created (its sequence number, which
is also when it saved its arrays), and every in-place change of an array buffer takes
one too. Backward checks that no array a node saved was changed at a later stamp, and
otherwise refuses, naming the op that saved the array and the source line that changed
it. Recording costs nothing beyond the node's sequence number; checking costs one
comparison unless something was changed in place since the node was created.
"""

from __future__ import annotations

import itertools
import os
import sys
import weakref
from typing import Any

clock = itertools.count(1).__next__  # the next stamp (atomic under the GIL)
last_change = 0                      # the stamp of the latest in-place change, anywhere
_changed_at: dict[int, int] = {}     # id(buffer) -> stamp of its last in-place change
_where: dict[int, tuple] = {}        # id(buffer) -> (what changed it, where: a user_site)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _buffer(array: Any) -> Any:
    """The array that owns the memory of ``array`` (a view shares its base's history)."""
    base = getattr(array, "base", None)
    while base is not None and hasattr(base, "shape"):
        array, base = base, getattr(base, "base", None)
    return array


_internal: dict[str, bool] = {}       # code file name -> inside the gpugrad package?


def user_site() -> tuple[str, int, str] | None:
    """The innermost caller outside gpugrad as (file, line, function); cheap enough for every call."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        inside = _internal.get(name)
        if inside is None:
            inside = _internal[name] = os.path.abspath(name).startswith(_PACKAGE_DIR)
        if not inside:
            return name, frame.f_lineno, frame.f_code.co_name
        frame = frame.f_back
    return None


def describe(site: tuple[str, int, str] | None) -> str:
    """'file:line in function' for a site from ``user_site``."""
    return "<unknown>" if site is None else f"{site[0]}:{site[1]} in {site[2]}"


def user_frame() -> str:
    """The innermost caller outside gpugrad, as 'file:line in function'."""
    return describe(user_site())


def bump(array: Any, what: str, site: tuple[str, int, str] | None = None) -> None:
    """Record an in-place change of ``array``'s buffer by ``what`` (e.g. 'add_') at ``site``
    (default: the caller's, from ``user_site``)."""
    global last_change
    buf = _buffer(array)
    key = id(buf)
    if key not in _changed_at:
        weakref.finalize(buf, _forget, key)
    last_change = clock()
    _changed_at[key] = last_change
    _where[key] = (what, site or user_site())  # formatted only if an error needs it


def _forget(key: int) -> None:
    _changed_at.pop(key, None)
    _where.pop(key, None)


def check(node: Any) -> None:
    """Raise if an array saved by ``node`` was changed in place after the node saved it."""
    for i, a in enumerate((node.out, *node.inputs)):
        if a is None or not hasattr(a, "shape"):
            continue
        key = id(_buffer(a))
        changed = _changed_at.get(key)
        if changed is not None and changed > node.seq:
            what = "its output" if i == 0 else f"its input {i - 1}"
            raise RuntimeError(
                f"backward: {node.name} needs {what} (shape {tuple(a.shape)}), which was changed in "
                f"place after {node.op.name} saved it; the change: {_change(key)}. "
                "Compute a new tensor instead of changing it in place (e.g. y = y + 1 instead of "
                "y.add_(1)), or change it after backward.")


def _change(key: int) -> str:
    what, site = _where.get(key, ("unknown", None))
    return f"{what} at {describe(site)}"
