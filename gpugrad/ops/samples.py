"""Sample inputs that the test suite feeds to every op (PyTorch's OpInfo idea, in small).

A sample is a list of arguments plus keyword parameters. A float64 NumPy array
becomes a differentiable tensor input in the tests; anything wrapped in
``Const`` is passed through unchanged (Python scalars, masks, indices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Sampler = Callable[[np.random.Generator], list["Sample"]]


@dataclass
class Const:
    """An argument that is not differentiated (a Python scalar, a boolean mask...)."""
    value: Any


@dataclass
class Sample:
    args: list[Any]
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""


def uniform(rng: np.random.Generator, lo: float, hi: float, shape: tuple) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape).astype(np.float64)


def unary(low: float = -2.0, high: float = 2.0, **params: Any) -> Sampler:
    """A 0-d, a 1-d and a 2-d input drawn from [low, high]; ``params`` go to the op."""
    def make(rng: np.random.Generator) -> list[Sample]:
        return [Sample([uniform(rng, low, high, s)], dict(params), str(s)) for s in [(), (5,), (2, 3)]]
    return make


def binary(lo: float = -2.0, hi: float = 2.0, lo2: float | None = None, hi2: float | None = None,
           scalar: float = 1.5) -> Sampler:
    """Equal shapes, every kind of broadcasting, and a Python scalar on either side."""
    lo2 = lo if lo2 is None else lo2
    hi2 = hi if hi2 is None else hi2

    def make(rng: np.random.Generator) -> list[Sample]:
        pairs = [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((), (2, 3)), ((4, 1, 3), (2, 1))]
        out = [Sample([uniform(rng, lo, hi, a), uniform(rng, lo2, hi2, b)], name=f"{a}-{b}")
               for a, b in pairs]
        out.append(Sample([uniform(rng, lo, hi, (3,)), Const(scalar)], name="tensor-scalar"))
        out.append(Sample([Const(scalar), uniform(rng, lo2, hi2, (3,))], name="scalar-tensor"))
        return out
    return make


def samples(*cases: Callable[[np.random.Generator], Sample]) -> Sampler:
    """Hand-written samples: each case is a function of the random generator."""
    def make(rng: np.random.Generator) -> list[Sample]:
        return [case(rng) for case in cases]
    return make
