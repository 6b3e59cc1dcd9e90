"""Tracing on CUDA: the backend's CuPy and the kernels' launcher as recording stand-ins (gg.jit)."""

from __future__ import annotations

import contextlib
from typing import Any


def real_module(a: Any) -> Any:
    """``a``, or the real CuPy where ``a`` is the trace's stand-in for it."""
    return getattr(a, "_gg_real_module", a)


@contextlib.contextmanager
def installed(rec: Any) -> Any:
    yield
