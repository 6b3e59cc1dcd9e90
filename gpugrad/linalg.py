"""``gg.linalg``: the linear-algebra namespace, as numpy.linalg."""

from .ops.linalg import norm

__all__ = ["norm"]
