"""Loss primitives whose PyTorch gradient is not the derivative of their forward: binary cross-entropy.

PyTorch clamps each log at -100 in the forward (so a prediction of exactly 0 or 1 gives
a finite loss) but takes the gradient from the unclamped formula
(x - t) / max(x (1 - x), 1e-12); a composite of clip and log would give 0 * inf = NaN
there instead. The rule is written with names gpugrad provides, so it has create_graph.
"""

from __future__ import annotations

import numpy as np

from .registry import defop
from .samples import Sample, samples, uniform

_LOG_FLOOR = -100.0      # PyTorch's clamp of log(x) and log(1 - x)
_EPSILON = 1e-12         # PyTorch's floor of x (1 - x) in the gradient


def _bce_case(shape: tuple):
    return lambda rng: Sample([uniform(rng, 0.05, 0.95, shape), uniform(rng, 0.0, 1.0, shape)],
                              name=str(shape))


@defop(save=("x", "target"), samples=samples(_bce_case(()), _bce_case((5,)), _bce_case((2, 3))),
       batch="elementwise")
def binary_cross_entropy(xp, x, target):
    """-(t log x + (1 - t) log(1 - x)) elementwise, each log clamped at -100 as PyTorch does."""
    with np.errstate(divide="ignore"):        # log(0) = -inf is expected here: it is clamped
        log_x = xp.maximum(xp.log(x), _LOG_FLOOR)
        log_1mx = xp.maximum(xp.log1p(-x), _LOG_FLOOR)
    return (target - 1) * log_1mx - target * log_x


@binary_cross_entropy.vjp
def _(xp, g, out, x, target, needs):
    gx = gt = None
    if needs[0]:
        gx = g * (x - target) / xp.maximum(x * (1 - x), _EPSILON)
    if needs[1]:
        with np.errstate(divide="ignore"):
            gt = g * (xp.log1p(-x) - xp.log(x))              # unclamped (inf at 0 and 1), as PyTorch
    return (gx, gt)
