"""``gg.linalg``: the linear-algebra namespace, as numpy.linalg (plus torch.linalg.vector_norm)."""

from .ops.linalg import norm, vector_norm

__all__ = ["norm", "vector_norm"]
