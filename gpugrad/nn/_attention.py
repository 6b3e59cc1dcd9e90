"""scaled_dot_product_attention: softmax(q kᵀ * scale + mask) v, composed from matmuls and a softmax."""

from __future__ import annotations

import math

import numpy as np

from .. import backend, ops
from ..tensor import Tensor
from . import functional as F

__all__ = ["scaled_dot_product_attention"]


def _softmax_or_zero(scores: Tensor) -> Tensor:
    """softmax along the last axis; a row that is -inf everywhere (all masked) gives zeros, as PyTorch."""
    top = ops.max(scores, axis=-1, keepdims=True).detach()
    top = ops.where(ops.isfinite(top), top, 0.0)
    weights = ops.exp(scores - top)
    total = ops.sum(weights, axis=-1, keepdims=True)
    return weights / ops.where(ops.equal(total, 0), 1.0, total)


def _repeat_heads(x: Tensor, groups: int) -> Tensor:
    """(..., H, S, E) -> (..., H * groups, S, E), each head repeated ``groups`` times in a row."""
    shape = x.shape
    wide = ops.broadcast_to(ops.expand_dims(x, -3), shape[:-2] + (groups,) + shape[-2:])
    return ops.reshape(wide, shape[:-3] + (shape[-3] * groups,) + shape[-2:])


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """Attention of queries (..., L, E) over keys (..., S, E) and values (..., S, Ev).

    ``attn_mask`` is boolean (True: may attend) or a float bias added to the scores;
    ``is_causal`` masks the upper triangle; ``dropout_p`` drops attention weights.
    """
    q, k, v = F._tensor(query), F._tensor(key), F._tensor(value)
    if not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        raise RuntimeError(f"scaled_dot_product_attention: expected query, key and value to have one "
                           f"floating dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if min(q.ndim, k.ndim, v.ndim) < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: expected query (..., L, E), key (..., S, E) and "
                           f"value (..., S, Ev), got shapes {q.shape}, {k.shape} and {v.shape}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        if q.shape[-3] % k.shape[-3] or q.shape[-3] % v.shape[-3]:
            raise RuntimeError(f"scaled_dot_product_attention: with enable_gqa, the query heads "
                               f"({q.shape[-3]}) must be a multiple of the key and value heads "
                               f"({k.shape[-3]}, {v.shape[-3]})")
        k = _repeat_heads(k, q.shape[-3] // k.shape[-3])
        v = _repeat_heads(v, q.shape[-3] // v.shape[-3])
    length, source = q.shape[-2], k.shape[-2]
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * factor
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError("scaled_dot_product_attention: an explicit attn_mask should not be set when "
                               "is_causal=True")
        xp = backend.namespace(q.data)
        attn_mask = Tensor._wrap(xp.tri(length, source, dtype=bool))      # lower triangle: may attend
    if attn_mask is not None:
        mask = F._tensor(attn_mask)
        if mask.dtype == np.bool_:
            scores = ops.where(mask, scores, -math.inf)
        elif mask.dtype == q.dtype:
            scores = scores + mask
        else:
            raise RuntimeError(f"scaled_dot_product_attention: expected attn_mask dtype to be bool or to "
                               f"match the query dtype {q.dtype}, got {mask.dtype}")
    weights = _softmax_or_zero(scores)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p, training=True)
    return ops.matmul(weights, v)
