"""Conversions that keep the graph: dtype casts, copies and device moves."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..batched import BatchedTensor
from ..dtypes import as_dtype, is_floating
from ..tensor import Tensor
from .registry import defop
from .samples import Sample, samples, uniform


# NOTE: finite differences need float64 throughout, so the sample casts to float64;
# casts between float widths are tested in tests/test_tensor.py.
@defop(samples=samples(lambda rng: Sample([uniform(rng, -2, 2, (2, 3))], {"dtype": as_dtype("float64")})),
       batch="elementwise")
def _astype(xp, x, *, dtype):
    return x.astype(dtype)


@_astype.vjp
def _(xp, g, out, x, *, dtype):
    return (g,)        # the engine casts gradients to each input's own dtype


@defop(samples=samples(lambda rng: Sample([uniform(rng, -2, 2, (2, 3))])), batch="elementwise")
def alias(xp, x):
    """The same array as a new graph node (no copy): how gg.grad stays attached to an outer graph."""
    return x


@alias.vjp
def _(xp, g, out, x):
    return (g,)


@defop(samples=samples(lambda rng: Sample([uniform(rng, -2, 2, (2, 3))])), batch="elementwise")
def clone(xp, x):
    return x.copy()


@clone.vjp
def _(xp, g, out, x):
    return (g,)


copy = clone


@defop(batch="elementwise")
def _to_device(xp, x, *, device, source):
    return backend.to_device(x, device)


@_to_device.vjp
def _(xp, g, out, x, *, device, source):
    if isinstance(g, Tensor):                 # create_graph: a recorded move back
        return (to_device(g, source),)
    return (backend.to_device(g, source),)


def astype(x: Any, dtype: Any) -> Tensor:
    """Cast to ``dtype``; differentiable between float dtypes, a constant otherwise."""
    dtype = as_dtype(dtype)
    if dtype is None:
        raise TypeError("astype: give a dtype, e.g. gg.float32")
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if x.data.dtype == dtype:
        return x
    if not is_floating(dtype):
        if type(x) is BatchedTensor:           # under vmap: the whole batch cast (no gradient either way)
            return BatchedTensor.of(astype(x.value, dtype), x.bdim, x.level)
        return Tensor._wrap(x.data.astype(dtype))
    return _astype(x, dtype=dtype)


def to_device(x: Tensor, device: backend.Device) -> Tensor:
    """Move ``x`` to ``device``; gradients flow back to the source device."""
    source = x.device
    if source == device:
        return x
    return _to_device(x, device=device, source=source)
