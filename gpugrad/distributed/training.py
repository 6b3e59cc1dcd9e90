"""What a training loop needs around DDP: rank 0 alone writes, and metrics are combined over ranks.

Each works without a process group too (a job of one), so a loop calls them unconditionally:

    if dist.is_main_process():
        gg.save(checkpoint, path)
    final = dist.reduce_metrics({"test_loss": loss, "test_accuracy": acc}, weight=len(test_shard))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from . import api
from .group import ReduceOp, as_reduce_op

F = TypeVar("F", bound=Callable[..., Any])


def is_main_process() -> bool:
    """True on rank 0, and in a process that joined no process group."""
    return not api.is_initialized() or api.get_rank() == 0


def rank_zero_only(fn: F) -> F:
    """Decorate ``fn`` to run on rank 0 only (other ranks get None): logging, progress bars, files."""
    @functools.wraps(fn)
    def on_rank_zero(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if is_main_process() else None

    return on_rank_zero  # type: ignore[return-value]


def reduce_metrics(metrics: Mapping[str, float], weight: float = 1.0,
                   op: ReduceOp | str = ReduceOp.AVG) -> dict[str, float]:
    """Every rank's ``metrics`` combined, on every rank: their mean weighted by ``weight`` (AVG;
    e.g. the number of samples a rank evaluated), or their SUM, MAX or MIN. One collective.

    Every rank must pass the same names. Without a process group the metrics come back as floats.
    """
    op = as_reduce_op(op, "reduce_metrics")
    if op is ReduceOp.PRODUCT:
        raise ValueError("reduce_metrics: use ReduceOp.AVG, SUM, MAX or MIN")
    names = list(metrics)
    try:
        values = [float(metrics[k]) for k in names]
    except (TypeError, ValueError):
        shown = {k: type(v).__name__ for k, v in metrics.items()}
        raise TypeError(f"reduce_metrics: every metric must be a number, got {shown}") from None
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"reduce_metrics: weight must be a finite number >= 0, got {weight!r}")
    if not api.is_initialized():
        return dict(zip(names, values))
    # a few numbers per rank: gathered as objects (any backend, GPU or not), combined in rank
    # order, so every rank computes the same bits
    gathered = api.default_group("reduce_metrics").all_gather_object((names, values, weight))
    if any(other != names for other, _, _ in gathered):
        raise ValueError(f"reduce_metrics: the ranks passed different metrics: {[g[0] for g in gathered]}")
    table = np.array([v for _, v, _ in gathered], dtype=np.float64).reshape(len(gathered), len(names))
    if op is ReduceOp.AVG:
        weights = np.array([w for _, _, w in gathered])
        if weights.sum() == 0:
            raise ValueError("reduce_metrics: the weights sum to 0 over all ranks; nothing to average")
        combined = (table * weights[:, None]).sum(axis=0) / weights.sum()
    else:
        combined = {ReduceOp.SUM: np.sum, ReduceOp.MAX: np.max, ReduceOp.MIN: np.min}[op](table, axis=0)
    return {k: float(v) for k, v in zip(names, combined)}
