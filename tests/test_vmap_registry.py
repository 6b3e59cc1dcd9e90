"""Every op in the registry under vmap equals a Python loop over the batch: values, and gradients both ways.

For each op and each sample it declares (the same samples the gradcheck uses; ops without
a gradient get theirs from NONDIFF_SAMPLES below), the sampler is drawn BATCH times to make
one batch per tensor input, and the op is vmapped

* with every tensor input batched at axis 0, then at another axis (the last);
* with one tensor input batched and the others shared (each input in turn);

and compared with the loop that calls the op once per entry: shape, dtype and values. For
differentiable ops, the per-entry gradients of <op(inputs), cotangent> with respect to every
tensor input, batched or shared, are compared with the loop's in both orders of the
transforms: ``vmap(grad(f))`` (the logical VJP, batched) and ``grad(f o vmap)`` (the
physical one). Adding an op with samples adds its test here.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops.registry import REGISTRY
from gpugrad.ops.samples import Const, Sample, binary, samples, unary, uniform
from gpugrad.testing import assert_close

BATCH = 3

# ops without a gradient declare no samples (the gradcheck skips them): theirs are here
_INTS = np.array([[5, 3, 12], [7, 0, 9]])


def _int_binary(rng):
    return Sample([rng.integers(0, 16, (2, 3)), rng.integers(0, 4, (3,))], name="ints")


def _int_unary(rng):
    return Sample([rng.integers(-8, 8, (2, 3))], name="ints")


def _with(sampler, **params):
    def make(rng):
        out = sampler(rng)
        for s in out:
            s.params = {**s.params, **params}
        return out
    return make


def _one_axis(**params):
    def make(rng):
        return [Sample([uniform(rng, -2, 2, (3, 4))], {"axis": 1, **params}, "axis1"),
                Sample([uniform(rng, -2, 2, (2, 3, 4))], {"axis": 0, **params}, "axis0"),
                Sample([uniform(rng, -2, 2, (5,))], {"axis": 0, **params}, "1-d")]
    return make


def _argext(rng):
    return [Sample([uniform(rng, -2, 2, (3, 4))], {"axis": 1, "keepdims": False}, "axis1"),
            Sample([uniform(rng, -2, 2, (3, 4))], {"axis": 0, "keepdims": True}, "axis0-keep"),
            Sample([uniform(rng, -2, 2, (3, 4))], {"axis": None, "keepdims": False}, "flat"),
            Sample([uniform(rng, -2, 2, (2, 3))], {"axis": None, "keepdims": True}, "flat-keep")]


def _logical(rng):
    return [Sample([uniform(rng, -1, 1, (2, 3)) > 0, uniform(rng, -1, 1, (3,)) > 0], name="bools")]


def _reduce_bools(rng):
    return [Sample([uniform(rng, -1, 1, (2, 3, 4)) > 0], {"axis": (0, 2), "keepdims": False}, "02"),
            Sample([uniform(rng, -1, 1, (2, 3)) > 0], {"axis": (1,), "keepdims": True}, "1-keep")]


def _pool_hit(rng):
    from gpugrad.ops.conv import _POOL_GEOMETRIES
    return [Sample([uniform(rng, -2, 2, (2, c) + w.size)], {"windows": w}, str(w.kernel))
            for c, w in _POOL_GEOMETRIES]


NONDIFF_SAMPLES = {
    **{name: binary() for name in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")},
    "logical_and": _logical, "logical_or": _logical,
    **{name: unary() for name in ("logical_not", "isnan", "isinf", "isfinite", "isposinf", "isneginf")},
    **{name: samples(_int_binary) for name in ("bitwise_and", "bitwise_or", "bitwise_xor", "left_shift",
                                               "right_shift")},
    "bitwise_not": samples(_int_unary),
    "isclose": _with(binary(), rtol=1e-5, atol=0.5, equal_nan=False),
    "argmax": _argext, "argmin": _argext,
    "all": _reduce_bools, "any": _reduce_bools,
    "cum_extreme_indices": _one_axis(largest=True),
    "argsort": _one_axis(descending=False),
    "first_max_hit": _pool_hit,
}
# ops checked elsewhere, and why
ELSEWHERE = {
    "to_device": "moves between devices: tests/test_vmap.py checks it on the emulated GPU",
}
RANDOM_OPS = {name for name in REGISTRY if name.startswith("random_") or name.startswith("threefry")}


def _sampler(op):
    return op.samples if op.samples is not None else NONDIFF_SAMPLES.get(op.name)


def _cases():
    for name, op in sorted(REGISTRY.items()):
        sampler = _sampler(op)
        if sampler is None:
            continue
        for k, sample in enumerate(sampler(np.random.default_rng(7))):
            yield pytest.param(op, k, id=f"{name}[{sample.name}]")


def _draws(op, k):
    """BATCH draws of sample k of ``op``: [entry][argument] and the (shared) params."""
    sampler = _sampler(op)
    draws = [sampler(np.random.default_rng(100 + b))[k] for b in range(BATCH)]
    return [d.args for d in draws], draws[0].params


def _tensor(a):
    return gg.tensor(a, dtype=gg.float64) if a.dtype.kind == "f" else gg.tensor(a)


def _entry_args(args, shared_from):
    """One entry's arguments: tensors for arrays, Consts as they are (always the first draw's)."""
    return [c.value if isinstance(c, Const) else _tensor(a)
            for a, c in zip(args, shared_from)]


def _batched(entries, positions, axis):
    """The per-argument inputs of a vmapped call: a stacked batch at ``axis`` or the first entry."""
    out, axes = [], []
    first = entries[0]
    for i, a in enumerate(first):
        if isinstance(a, Const):
            out.append(a.value)
            axes.append(None)
        elif i in positions:
            stacked = np.stack([np.asarray(e[i]) for e in entries])
            ax = axis if axis == 0 else stacked.ndim - 1
            out.append(_tensor(np.moveaxis(stacked, 0, ax)))
            axes.append(ax)
        else:
            out.append(_tensor(np.asarray(a)))
            axes.append(None)
    return out, tuple(axes)


def _loop_inputs(entries, positions):
    """Per entry, the arguments the loop uses: an entry's own for batched positions, else the first's."""
    first = entries[0]
    per = []
    for e in entries:
        per.append([first[i].value if isinstance(first[i], Const) else
                    _tensor(np.asarray(e[i] if i in positions else first[i])) for i in range(len(first))])
    return per


def _same(actual, expected, what):
    """Shape, dtype, device and values (floats to float64 rounding, the rest exactly; nan where the loop's is:
    a mean over only ignored targets is 0/0, as in PyTorch)."""
    tolerances = {"rtol": 1e-10, "atol": 1e-12} if actual.dtype.kind == "f" else {}
    assert_close(actual, expected, msg=what, equal_nan=True, **tolerances)


def _variants(n_args, tensor_positions):
    yield "all@0", set(tensor_positions), 0
    yield "all@last", set(tensor_positions), -1
    if len(tensor_positions) > 1:
        for i in tensor_positions:
            yield f"only{i}@0", {i}, 0


@pytest.mark.parametrize("op,k", list(_cases()))
def test_vmap_equals_a_loop(op, k):
    entries, params = _draws(op, k)
    tensor_positions = [i for i, a in enumerate(entries[0]) if not isinstance(a, Const)]
    for label, positions, axis in _variants(len(entries[0]), tensor_positions):
        args, axes = _batched(entries, positions, axis)
        out = gg.vmap(lambda *xs: op(*xs, **params), in_axes=axes)(*args)
        loop = [op(*xs, **params) for xs in _loop_inputs(entries, positions)]
        _same(out, gg.stack(loop), f"{op.name} {label} values")
        if op.differentiable and out.dtype.kind == "f":
            _check_gradients(op, params, entries, positions, args, axes, label)


def _check_gradients(op, params, entries, positions, args, axes, label):
    rng = np.random.default_rng(5)
    loop_inputs = _loop_inputs(entries, positions)
    out_shape = op(*loop_inputs[0], **params).shape
    cots = [gg.tensor(rng.standard_normal(out_shape)) for _ in range(BATCH)]
    wrt = tuple(i for i, a in enumerate(args) if isinstance(a, gg.Tensor) and a.dtype.kind == "f")
    if not wrt:
        return

    def f(*xs):
        *inputs, cot = xs
        return (op(*inputs, **params) * cot).sum()

    per_entry = [gg.grad(f, argnums=wrt)(*xs, cot) for xs, cot in zip(loop_inputs, cots)]
    # vmap of grad: every input's gradient per entry, the shared ones too (per-example gradients)
    batched_cot = gg.stack(cots)
    inner = gg.vmap(gg.grad(f, argnums=wrt), in_axes=(*axes, 0))(*args, batched_cot)
    for j, i in enumerate(wrt):
        expected = gg.stack([g[j] for g in per_entry])
        _same(inner[j], expected, f"{op.name} {label} vmap(grad) wrt {i}")
    # grad of vmap: batched inputs get their entries' gradients, shared ones the sum over entries

    def total(*xs):
        *inputs, cot = xs
        return (gg.vmap(lambda *ys: op(*ys, **params), in_axes=axes)(*inputs) * cot).sum()

    outer = gg.grad(total, argnums=wrt)(*args, batched_cot)
    for j, i in enumerate(wrt):
        if axes[i] is None:
            expected = sum(g[j] for g in per_entry)
        else:
            expected = gg.tensor(np.moveaxis(np.stack([g[j].numpy() for g in per_entry]), 0, axes[i]))
        _same(outer[j], expected, f"{op.name} {label} grad(vmap) wrt {i}")


def test_every_op_has_a_batching_rule():
    assert sorted(n for n, op in REGISTRY.items() if op.batch_rule is None) == []


def test_every_op_is_checked_under_vmap():
    unchecked = {n for n, op in REGISTRY.items() if _sampler(op) is None}
    assert unchecked == set(ELSEWHERE) | RANDOM_OPS
