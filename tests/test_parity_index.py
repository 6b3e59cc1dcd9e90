"""Indexing and shape ops mean what PyTorch's mean: values, shapes, dtypes and gradients.

Every case runs the same program on gpugrad and on PyTorch, in float32 and float64, and
compares the outputs (shape, dtype, values) and the gradient of every float input. The
same cases are gradchecked and gradgradchecked in float64 without PyTorch, and the
``gg.*`` functions that carry NumPy's names are compared with NumPy. Tests that need
PyTorch skip, saying so, where it is not installed; the rest always run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad.cuda import emulator
from gpugrad.nn import functional as F
from gpugrad.testing import assert_close

try:
    import torch
    import torch.nn.functional as TF
except ImportError:          # the differential comparisons skip; the gpugrad-only checks still run
    torch = TF = None

needs_torch = optional.needs("torch")       # the shared reason: tests/optional.py
DTYPES = ["float32", "float64"]
TOL = {"float32": (2e-5, 1e-6), "float64": (1e-10, 1e-12)}


class Lib:
    """One library's spellings, so that a case is written once for both."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.m = gg if name == "gg" else torch
        self.F = F if name == "gg" else TF

    def ints(self, values: Any) -> Any:
        return self.m.tensor(np.asarray(values, dtype=np.int64))

    def mask(self, values: Any) -> Any:
        return self.m.tensor(np.asarray(values, dtype=bool))

    def floats(self, values: Any, like: Any) -> Any:
        return self.m.tensor(np.asarray(values, dtype=np.float64)).to(like.dtype)


class Case(NamedTuple):
    name: str
    shapes: tuple                    # one shape per float input (drawn uniformly from [-2, 2])
    fn: Callable                     # fn(lib, *inputs) -> a tensor or a tuple of tensors
    smooth: bool = True              # False where the gradient is not the derivative (ties, padding_idx)
    torch_backward: bool = True      # False where PyTorch's own backward fails (then: values only)


def _case(name: str, shapes: Any, fn: Callable, smooth: bool = True, torch_backward: bool = True) -> Case:
    return Case(name, tuple(shapes), fn, smooth, torch_backward)


def _reduce_case(reduce: str, include_self: bool) -> Case:
    return _case(f"scatter_reduce_{reduce}_{'self' if include_self else 'noself'}", [(3, 4), (2, 4)],
                 lambda L, x, s: x.scatter_reduce(0, L.ints([[0, 1, 2, 0], [0, 0, 2, 2]]), s, reduce,
                                                  include_self=include_self))


def _pad_case(mode: str, shape: tuple, amounts: tuple) -> Case:
    return _case(f"pad_{mode}_{shape}_{amounts}", [shape], lambda L, x: L.F.pad(x, amounts, mode=mode))


def _assigned(L: Lib, x: Any, value: Any, index: tuple) -> Any:
    """``x * 1`` (a tensor in the graph; zeros of shape (4, 3) on the value's device when None) after
    ``[index] = value``."""
    base = L.m.zeros((4, 3), dtype=value.dtype, device=value.device) if x is None else x * 1
    base[index] = value
    return base


def _at(L: Lib, x: Any, values: Any) -> Any:
    """The given values (ties, zeros), still differentiable with respect to ``x`` (gradient 1)."""
    return L.floats(values, x) + (x - x.detach())


CASES = [
    # ---- advanced indexing: placement of dimensions, tuples, masks (forward and gradient)
    _case("int_among_arrays", [(2, 3, 4)], lambda L, x: x[0, :, L.ints([1, 3])]),
    _case("array_slice_int", [(2, 3, 4)], lambda L, x: x[L.ints([1, 0, 1]), :, 2]),
    _case("slice_int_array", [(2, 3, 4)], lambda L, x: x[:, 1, L.ints([3, 3, 0])]),
    _case("int_between_arrays", [(2, 3, 4)], lambda L, x: x[L.ints([1, 0]), 2, L.ints([3, 1])]),
    _case("separated_arrays", [(2, 3, 4)], lambda L, x: x[L.ints([[1], [0]]), :, L.ints([0, 3, 3])]),
    _case("arrays_around_none", [(2, 3, 4)], lambda L, x: x[L.ints([1, 0]), None, L.ints([2, 2])]),
    _case("arrays_around_ellipsis", [(2, 3, 4)], lambda L, x: x[L.ints([1, 1]), ..., L.ints([0, 3])]),
    _case("zero_d_index_selects", [(2, 3, 4)], lambda L, x: x[L.ints(1), :, L.ints([0, 2])]),
    _case("tuple_in_index", [(3, 4)], lambda L, x: x[(0, 2), :]),
    _case("tuple_with_list", [(2, 3, 4)], lambda L, x: x[(1, 0), :, [2]]),
    _case("list_index_repeats", [(4, 3)], lambda L, x: x[[3, 0, 3, 3]]),
    _case("bool_list_mask", [(3, 2)], lambda L, x: x[[True, False, True]]),
    _case("mask_after_slice", [(3, 4)], lambda L, x: x[1:, L.mask([True, False, True, True])]),
    _case("mask_2d", [(3, 4)], lambda L, x: x[L.mask(np.arange(12).reshape(3, 4) % 3 == 0)]),
    _case("mask_and_int", [(3, 4, 2)], lambda L, x: x[L.mask([True, False, True]), 1:, 0]),
    _case("true_and_false", [(2, 3)], lambda L, x: (x[True], x[False], x[0, True])),
    # ---- assignment, recorded when the value or the tensor is in a graph
    _case("setitem_value_into_zeros", [(2, 3)], lambda L, v: _assigned(L, None, v, (L.ints([2, 0]),))),
    _case("setitem_broadcast_value", [(3,)], lambda L, v: _assigned(L, None, v, (slice(1, 3),))),
    _case("setitem_into_nonleaf", [(2, 3, 4), (3, 2)], lambda L, x, v: _assigned(L, x, v, (0, slice(None),
                                                                                          L.ints([1, 3])))),
    _case("setitem_mask_scalar", [(2, 3, 4)], lambda L, x: _assigned(L, x, 0.5, (L.mask([True, False]),))),
    _case("setitem_twice", [(3, 4), (4,)], lambda L, x, v: _assigned(L, _assigned(L, x, v, (1,)), v[1:] * 2,
                                                                     (slice(None), 0))),
    # ---- squeeze as PyTorch
    _case("squeeze_size_not_1", [(2, 1, 3)], lambda L, x: x.squeeze(0)),
    _case("squeeze_dim", [(2, 1, 3)], lambda L, x: x.squeeze(1)),
    _case("squeeze_dims", [(2, 1, 1)], lambda L, x: x.squeeze((0, 1))),
    _case("squeeze_0d", [()], lambda L, x: (x.squeeze(0), x.squeeze(-1), x.squeeze())),
    # ---- gathers
    _case("gather_dim1", [(3, 4)], lambda L, x: x.gather(1, L.ints([[0, 0], [3, 1], [2, 2]]))),
    _case("gather_smaller_index", [(3, 4)], lambda L, x: x.gather(0, L.ints([[2, 0, 1]]))),
    _case("gather_longer_along_dim", [(3, 4)], lambda L, x: x.gather(1, L.ints([[0, 1, 1, 3, 3, 2]]))),
    _case("gather_3d", [(2, 3, 4)],
          lambda L, x: L.m.gather(x, -1, L.ints(np.arange(12).reshape(2, 3, 2) % 4))),
    _case("take_along_dim", [(3, 4)], lambda L, x: x.take_along_dim(L.ints([[0], [3], [-1]]), 1)),
    _case("take_along_dim_broadcast", [(3, 4)],
          lambda L, x: L.m.take_along_dim(x, L.ints([[0, 1, 1, 2]]), 0)),
    _case("take_along_dim_flat", [(3, 4)], lambda L, x: x.take_along_dim(L.ints([11, 0, 5, 5]))),
    _case("index_select", [(3, 4)], lambda L, x: x.index_select(1, L.ints([3, 0, 3]))),
    _case("index_select_0d_index", [(3, 4)], lambda L, x: L.m.index_select(x, 0, L.ints(2))),
    _case("masked_fill", [(2, 3)], lambda L, x: x.masked_fill(L.mask([True, False, True]), -1.5)),
    _case("masked_fill_broadcast", [(2, 3)],
          lambda L, x: x.masked_fill(L.mask([[[False, True, True]]]), 2.0)),
    _case("masked_fill_tensor_value", [(2, 3), ()],
          lambda L, x, v: x.masked_fill(L.mask([[True, False, False], [True, True, False]]), v)),
    _case("masked_select", [(2, 3)],
          lambda L, x: x.masked_select(L.mask([[True, False, True], [False, False, True]]))),
    _case("masked_select_broadcast", [(2, 3)],
          lambda L, x: L.m.masked_select(x, L.mask([True, False, True]))),
    # ---- scatters
    _case("scatter_src", [(3, 4), (2, 2)], lambda L, x, s: x.scatter(1, L.ints([[1, 3], [0, 2]]), s)),
    # PyTorch's ScatterBackward returns a gradient of the index's shape for a larger src (and fails)
    _case("scatter_larger_src", [(3, 4), (3, 5)], lambda L, x, s: x.scatter(0, L.ints([[2, 0, 1]]), s),
          torch_backward=False),
    _case("scatter_value", [(3, 4)], lambda L, x: x.scatter(1, L.ints([[1], [2]]), 0.25)),
    _case("scatter_add", [(3, 4), (2, 3)],
          lambda L, x, s: x.scatter_add(1, L.ints([[1, 1, 3], [0, 0, 0]]), s)),
    _case("scatter_add_dim0", [(3, 2), (4, 2)],
          lambda L, x, s: L.m.scatter_add(x, 0, L.ints([[0, 2], [0, 2], [1, 2], [0, 0]]), s)),
    *[_reduce_case(reduce, include_self) for reduce in ("sum", "prod", "mean", "amax", "amin")
      for include_self in (True, False)],
    _case("scatter_reduce_dim1_many", [(2, 3), (2, 7)], lambda L, x, s: x.scatter_reduce(
        1, L.ints([[0, 0, 0, 1, 0, 0, 0], [2, 2, 1, 2, 2, 2, 2]]), s, "prod")),
    _case("scatter_reduce_amax_ties", [(3,), (4,)], lambda L, x, s: _at(L, x, [3, 1, 2]).scatter_reduce(
        0, L.ints([0, 0, 1, 2]), _at(L, s, [3, 3, 0.5, 2]), "amax"), smooth=False),
    _case("scatter_reduce_amin_ties_noself", [(3,), (4,)],
          lambda L, x, s: _at(L, x, [3, 1, 5]).scatter_reduce(
              0, L.ints([0, 0, 0, 2]), _at(L, s, [1, 1, 1, 2]), "amin", include_self=False), smooth=False),
    _case("scatter_reduce_prod_zeros", [(3,), (4,)], lambda L, x, s: _at(L, x, [0, 2, 3]).scatter_reduce(
        0, L.ints([0, 0, 1, 2]), _at(L, s, [0, 4, 5, 0]), "prod"), smooth=False),
    # ---- embedding and padding
    _case("embedding", [(5, 3)], lambda L, w: L.F.embedding(L.ints([[0, 4, 4], [2, 0, 1]]), w)),
    _case("embedding_padding_idx", [(5, 3)],
          lambda L, w: L.F.embedding(L.ints([0, 4, 4, 2]), w, padding_idx=4), smooth=False),
    _case("embedding_negative_padding_idx", [(5, 3)],
          lambda L, w: L.F.embedding(L.ints([0, 4, 1]), w, padding_idx=-1), smooth=False),
    _case("pad_constant", [(2, 3)], lambda L, x: L.F.pad(x, (1, 2))),
    _case("pad_constant_value_2d", [(2, 3)], lambda L, x: L.F.pad(x, (1, 0, 0, 2), value=0.5)),
    _case("pad_constant_crop", [(2, 3, 4)], lambda L, x: L.F.pad(x, (-1, 2, 1, -2, 0, 1))),
    *[_pad_case(mode, shape, amounts)
      for mode in ("reflect", "replicate", "circular")
      for shape, amounts in [((2, 5), (2, 3)), ((1, 2, 5), (4, 1)), ((2, 3, 4), (1, 2, 2, 1)),
                       ((1, 2, 3, 4), (3, 0, 0, 2)), ((1, 1, 2, 3, 4), (1, 1, 2, 1, 1, 0)),
                       ((2, 3, 5), (-1, 2)), ((1, 1, 5), (2, -1)), ((1, 2, 5), (-2, 3)),
                       ((1, 1, 5), (1, -3))]],
    # ---- repeating, reversing, rotating
    _case("repeat", [(2, 3)], lambda L, x: x.repeat(2, 1, 3)),
    _case("repeat_tuple", [(3,)], lambda L, x: x.repeat((2, 2))),
    _case("tile_short", [(2, 3)], lambda L, x: x.tile(2)),
    _case("repeat_interleave_int", [(2, 3)], lambda L, x: x.repeat_interleave(2, dim=1)),
    _case("repeat_interleave_flat", [(2, 3)], lambda L, x: x.repeat_interleave(3)),
    _case("repeat_interleave_counts", [(3, 2)], lambda L, x: x.repeat_interleave(L.ints([2, 0, 3]), dim=0)),
    _case("repeat_interleave_one_count", [(3,)], lambda L, x: L.m.repeat_interleave(x, L.ints([2]))),
    _case("repeat_interleave_output_size", [(3, 2)],
          lambda L, x: x.repeat_interleave(L.ints([2, 0, 3]), dim=0, output_size=5)),
    _case("flip", [(2, 3, 4)], lambda L, x: x.flip(0, 2)),
    _case("flip_list", [(2, 3)], lambda L, x: L.m.flip(x, [1])),
    _case("roll_dims", [(3, 4)], lambda L, x: x.roll((1, -5), (0, 1))),
    _case("roll_flat", [(3, 4)], lambda L, x: L.m.roll(x, 5)),
    # ---- splitting and shaping
    _case("split_size", [(5, 2)], lambda L, x: x.split(2)),
    _case("split_sizes", [(2, 6)], lambda L, x: x.split([1, 0, 5], dim=1)),
    _case("chunk", [(7, 2)], lambda L, x: x.chunk(3)),
    _case("chunk_fewer", [(6,)], lambda L, x: L.m.chunk(x, 4)),
    _case("unflatten", [(2, 6)], lambda L, x: x.unflatten(1, (3, -1))),
    _case("unflatten_neg_dim", [(6, 2)], lambda L, x: L.m.unflatten(x, -2, (2, 3))),
    # ---- triangles, diagonals, grids, windows
    _case("tril", [(3, 4)], lambda L, x: (x.tril(), x.tril(1), x.tril(-2))),
    _case("triu_batched", [(2, 3, 3)], lambda L, x: (x.triu(), x.triu(2), L.m.triu(x, -1))),
    _case("diag_of_vector", [(3,)], lambda L, x: (L.m.diag(x), x.diag(1), x.diag(-2))),
    _case("diag_of_matrix", [(3, 4)], lambda L, x: (L.m.diag(x), x.diag(2), x.diag(-1), x.diag(5))),
    _case("diagonal", [(2, 3, 4)], lambda L, x: (x.diagonal(), x.diagonal(1, 1, 2), x.diagonal(-1, 2, 0))),
    _case("meshgrid_ij", [(2,), (3,), (4,)], lambda L, a, b, c: L.m.meshgrid(a, b, c, indexing="ij")),
    _case("meshgrid_xy", [(2,), (3,)], lambda L, a, b: L.m.meshgrid(a, b, indexing="xy")),
    _case("unfold", [(2, 7)], lambda L, x: x.unfold(1, 3, 2)),
    _case("unfold_dim0", [(5, 2, 3)], lambda L, x: x.unfold(0, 2, 1)),
    _case("unfold_0d", [()], lambda L, x: x.unfold(0, 1, 1)),
]

# integer programs, no gradient: the dtype and values must match
INT_CASES = [
    ("one_hot", lambda L: (L.F.one_hot(L.ints([0, 3, 1]), 5), L.F.one_hot(L.ints([[2], [0]])))),
    ("nonzero", lambda L: L.ints([[0, 3, 0], [1, 0, 2]]).nonzero()),
    ("nonzero_as_tuple", lambda L: L.ints([[0, 3, 0], [1, 0, 2]]).nonzero(as_tuple=True)),
    ("nonzero_0d", lambda L: (L.ints(5).nonzero(), L.ints(0).nonzero())),
    ("nonzero_bool", lambda L: L.mask([True, False, True]).nonzero()),
    ("scatter_reduce_int_mean", lambda L: L.ints([1, 2, 3, 4]).scatter_reduce(
        0, L.ints([0, 0, 1, 2]), L.ints([5, 6, 7, -8]), "mean")),
    ("scatter_reduce_int_mean_noself", lambda L: L.ints([1, 2, 3, 4]).scatter_reduce(
        0, L.ints([0, 0, 1, 2]), L.ints([5, 6, 7, -8]), "mean", include_self=False)),
    ("scatter_reduce_int_prod_amin", lambda L: (
        L.ints([1, 2, 3, 4]).scatter_reduce(0, L.ints([0, 0, 1, 2]), L.ints([5, 6, 7, -8]), "prod"),
        L.ints([1, 2, 3, 4]).scatter_reduce(0, L.ints([0, 0, 1, 2]), L.ints([5, 6, 7, -8]), "amin"))),
    ("scatter_value_cast", lambda L: L.ints([[0, 0, 0]]).scatter(1, L.ints([[2]]), 5.5)),
    ("masked_fill_int", lambda L: L.ints([1, 2, 3]).masked_fill(L.mask([True, False, True]), 2.7)),
    ("pad_int", lambda L: L.F.pad(L.ints([[1, 2]]), (1, 1), value=2.5)),
    ("tril_int_bool", lambda L: (L.ints(np.ones((3, 3))).tril(), L.mask(np.ones((2, 3))).triu(1))),
    ("index_int", lambda L: L.ints(np.arange(24).reshape(2, 3, 4))[0, :, L.ints([1, 2])]),
    ("flip_roll_int", lambda L: (L.ints([1, 2, 3]).flip(0), L.ints([1, 2, 3]).roll(1))),
    ("diag_int", lambda L: L.m.diag(L.ints([1, 2]), 1)),
]


# ----------------------------------------------------------------------------- running a case


def _inputs(case: Case, lib: str, dtype: str) -> list:
    rng = np.random.default_rng(abs(hash(case.name)) % 2**32)
    arrays = [rng.uniform(-2, 2, size=s) for s in case.shapes]
    if lib == "gg":
        return [gg.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    return [torch.tensor(a, dtype=getattr(torch, dtype), requires_grad=True) for a in arrays]


def _outputs(result: Any) -> list:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _numpy(t: Any) -> np.ndarray:
    return t.detach().numpy() if torch is not None and isinstance(t, torch.Tensor) else t.detach().numpy()


def _run(case: Case, lib: str, dtype: str, backward: bool = True) -> tuple[list, list]:
    inputs = _inputs(case, lib, dtype)
    outs = _outputs(case.fn(Lib(lib), *inputs))
    total = None
    for out in outs:
        if out.dtype.is_floating_point if lib == "torch" else out.dtype.kind == "f":
            weight = np.linspace(0.5, 1.5, max(out.numel(), 1))[:out.numel()].reshape(tuple(out.shape))
            w = gg.tensor(weight, dtype=out.dtype) if lib == "gg" else torch.tensor(weight, dtype=out.dtype)
            term = (out * w).sum()
            total = term if total is None else total + term
    if backward and total is not None and total.requires_grad:
        total.backward()
    grads = [None if x.grad is None else _numpy(x.grad) for x in inputs]
    return [_numpy(o) for o in outs], grads


def _same(got: np.ndarray, want: np.ndarray, dtype: str, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, PyTorch {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, PyTorch {want.dtype}"
    rtol, atol = TOL[dtype] if got.dtype.kind == "f" else (0, 0)
    assert_close(got, want, rtol=rtol, atol=atol, msg=what)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_torch(case, dtype):
    g_outs, g_grads = _run(case, "gg", dtype)
    t_outs, t_grads = _run(case, "torch", dtype, case.torch_backward)
    assert len(g_outs) == len(t_outs), f"{len(g_outs)} outputs, PyTorch {len(t_outs)}"
    for i, (g, t) in enumerate(zip(g_outs, t_outs)):
        _same(g, t, dtype, f"{case.name} output {i}")
    for i, (g, t) in enumerate(zip(g_grads, t_grads) if case.torch_backward else ()):
        assert (g is None) == (t is None), f"{case.name}: gradient of input {i} is {g}, PyTorch {t}"
        if g is not None:
            _same(g, t, dtype, f"{case.name} gradient of input {i}")


@needs_torch
@pytest.mark.parametrize("name,fn", INT_CASES, ids=[c[0] for c in INT_CASES])
def test_integer_programs_match_torch(name, fn):
    g_outs, t_outs = _outputs(fn(Lib("gg"))), _outputs(fn(Lib("torch")))
    assert len(g_outs) == len(t_outs)
    for i, (g, t) in enumerate(zip(g_outs, t_outs)):
        _same(g.numpy(), t.numpy(), "float64", f"{name} output {i}")


def _joined(case: Case) -> Callable:
    """The case as one function of its float inputs with one float output (for gradcheck)."""
    def fn(*xs):
        outs = [o for o in _outputs(case.fn(Lib("gg"), *xs)) if o.dtype.kind == "f"]
        return gg.concatenate([o.reshape(-1) for o in outs])
    return fn


SMOOTH = [c for c in CASES if c.smooth]


@pytest.mark.parametrize("case", SMOOTH, ids=[c.name for c in SMOOTH])
def test_gradcheck(case):
    assert gg.testing.gradcheck(_joined(case), *_inputs(case, "gg", "float64"))


@pytest.mark.parametrize("case", SMOOTH, ids=[c.name for c in SMOOTH])
def test_gradgradcheck(case):
    assert gg.testing.gradgradcheck(_joined(case), *_inputs(case, "gg", "float64"))


# The cases whose result's shape depends on the device's values, so the host reads them (as PyTorch
# does); every other case must read nothing from the device (counted on the emulator).
READS_BACK = {
    "zero_d_index_selects": "a 0-d integer index tensor selects as an int",
    **{name: "a boolean mask's number of True entries" for name in (
        "bool_list_mask", "mask_after_slice", "mask_2d", "mask_and_int", "setitem_mask_scalar",
        "masked_select", "masked_select_broadcast")},
    "repeat_interleave_counts": "the output's length, the sum of the counts (output_size= avoids it)",
    "repeat_interleave_one_count": "the one count, the output's length",
}


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cuda_matches_cpu(case):
    reason = gg.cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    cpu = _inputs(case, "gg", "float64")
    dev = [x.detach().cuda().requires_grad_() for x in cpu]

    class CudaLib(Lib):
        def ints(self, values):
            return super().ints(values).cuda()

        def mask(self, values):
            return super().mask(values).cuda()

        def floats(self, values, like):
            return super().floats(values, like).cuda()

    results = []
    for inputs, lib in ((cpu, Lib("gg")), (dev, CudaLib("gg"))):
        with emulator.host_reads() as reads:
            outs = _outputs(case.fn(lib, *inputs))
            floats = [o for o in outs if o.dtype.kind == "f" and o.requires_grad]
            if floats:
                sum(o.sum() * (i + 1) for i, o in enumerate(floats)).backward()
        results.append(outs)
    if gg.cuda.is_emulated():
        assert bool(reads) == (case.name in READS_BACK), f"{case.name}: {reads or 'no read'}"
    for o_cpu, o_dev in zip(*results):
        assert o_dev.device.type == "cuda" and o_dev.shape == o_cpu.shape and o_dev.dtype == o_cpu.dtype
        assert_close(o_dev.detach().cpu().numpy(), o_cpu.detach().numpy(), rtol=1e-12)
    for a, b in zip(cpu, dev):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert b.grad.device.type == "cuda"
            assert_close(b.grad.cpu().numpy(), a.grad.numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- the NumPy-named namespace


def _np_equal(got: Any, want: np.ndarray) -> None:
    got = got.numpy() if isinstance(got, gg.Tensor) else got
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    assert_close(got, want, rtol=0, atol=0)


def test_numpy_named_functions_follow_numpy():
    a = np.arange(24.0).reshape(2, 3, 4)
    x = gg.tensor(a)
    for got, want in zip(gg.split(x, 2, axis=2), np.split(a, 2, axis=2)):
        _np_equal(got, want)
    for got, want in zip(gg.split(x, [1, 5, 2], axis=2), np.split(a, [1, 5, 2], axis=2)):
        _np_equal(got, want)
    _np_equal(gg.repeat(x, 2), np.repeat(a, 2))
    _np_equal(gg.repeat(x, [1, 0, 2], axis=1), np.repeat(a, [1, 0, 2], axis=1))
    _np_equal(gg.tile(x, (2, 1)), np.tile(a, (2, 1)))
    _np_equal(gg.tile(x, (2, 1, 1, 2)), np.tile(a, (2, 1, 1, 2)))
    _np_equal(gg.flip(x), np.flip(a))
    _np_equal(gg.flip(x, 1), np.flip(a, 1))
    _np_equal(gg.roll(x, 3), np.roll(a, 3))
    _np_equal(gg.roll(x, (1, 2), axis=(0, 2)), np.roll(a, (1, 2), axis=(0, 2)))
    _np_equal(gg.roll(x, 1, axis=(0, 2)), np.roll(a, 1, axis=(0, 2)))
    _np_equal(gg.tril(x, 1), np.tril(a, 1))
    _np_equal(gg.triu(x, -1), np.triu(a, -1))
    _np_equal(gg.diag(gg.tensor(a[0])), np.diag(a[0]))
    _np_equal(gg.diag(gg.tensor(a[0, 0]), -2), np.diag(a[0, 0], -2))
    _np_equal(gg.diagonal(x, 1, 2, 1), np.diagonal(a, 1, 2, 1))
    grids = zip(gg.meshgrid(gg.tensor(a[0, 0]), gg.tensor(a[0, :, 0])), np.meshgrid(a[0, 0], a[0, :, 0]))
    for got, want in grids:
        _np_equal(got, want)                               # indexing="xy" by default, as NumPy
    idx = np.array([[[0], [3], [-1]]])
    _np_equal(gg.take_along_axis(x, gg.tensor(idx), 2), np.take_along_axis(a, idx, 2))
    flat = np.array([23, 0])
    _np_equal(gg.take_along_axis(x, gg.tensor(flat), None), np.take_along_axis(a, flat, None))
    for got, want in zip(gg.nonzero(gg.tensor(a > 10)), np.nonzero(a > 10)):
        _np_equal(got, want.astype(np.int64))
    _np_equal(gg.argwhere(gg.tensor(a > 20)), np.argwhere(a > 20))


def test_numpy_squeeze_raises_where_the_tensor_method_leaves_the_dimension():
    x = gg.ones(2, 1, 3)
    with pytest.raises(ValueError, match="squeeze: cannot squeeze axis 0 of size 2"):
        gg.squeeze(x, 0)
    assert x.squeeze(0).shape == (2, 1, 3) and gg.squeeze(x, dim=0).shape == (2, 1, 3)
    assert gg.tensor(1.0).squeeze(0).shape == () and gg.tensor(1.0).squeeze(-1).shape == ()
    with pytest.raises(ValueError, match="out of range"):
        gg.tensor(1.0).squeeze(1)


def test_scatter_reduce_prod_differentiates_through_zeros():
    """Exclusive products, no division: the gradient where a factor is 0 is the product of the others."""
    x = gg.tensor([0.5, 2.0, 3.0], dtype=gg.float64, requires_grad=True)
    s = gg.tensor([0.7, 4.0, 5.0, 0.3], dtype=gg.float64, requires_grad=True)
    index = gg.tensor([0, 0, 1, 2])

    def fn(x, s):       # at these inputs x[0], s[0] and s[3] are exactly 0
        return (x - gg.tensor([0.5, 0, 0], dtype=gg.float64)).scatter_reduce(
            0, index, s - gg.tensor([0.7, 0, 0, 0.3], dtype=gg.float64), "prod")

    assert gg.testing.gradcheck(fn, x, s) and gg.testing.gradgradcheck(fn, x, s)
    fn(x, s).backward(gg.tensor([1.0, 10.0, 100.0], dtype=gg.float64))
    assert x.grad.numpy().tolist() == [0.0, 50.0, 0.0] and s.grad.numpy().tolist() == [0.0, 0.0, 20.0, 300.0]


def test_scatter_reduce_extremes_share_ties_and_ignore_self_when_asked():
    """amax/amin split the gradient evenly among the values equal to the result, as PyTorch. With
    include_self=False an input equal to the result by chance takes no share (PyTorch still counts
    it, halving the source's gradient: a PyTorch quirk we do not copy; gradcheck agrees with us)."""
    x = gg.tensor([3.0, 1.0, 2.0], dtype=gg.float64, requires_grad=True)
    s = gg.tensor([3.0, 3.0, 0.5, 2.0], dtype=gg.float64, requires_grad=True)
    x.scatter_reduce(0, gg.tensor([0, 0, 1, 2]), s, "amax").backward(gg.tensor([3.0, 1.0, 1.0],
                                                                           dtype=gg.float64))
    assert x.grad.numpy().tolist() == [1.0, 1.0, 0.5] and s.grad.numpy().tolist() == [1.0, 1.0, 0.0, 0.5]
    x.grad = s.grad = None
    out = x.scatter_reduce(0, gg.tensor([0, 2]), s[[2, 3]], "amin", include_self=False)
    out.backward(gg.ones(3, dtype=gg.float64))
    assert out.detach().numpy().tolist() == [0.5, 1.0, 2.0]
    assert x.grad.numpy().tolist() == [0.0, 1.0, 0.0] and s.grad.numpy().tolist() == [0.0, 0.0, 1.0, 1.0]
    y = gg.tensor([3.0, 1.0, 2.5], dtype=gg.float64, requires_grad=True)    # no ties: central differences
    assert gg.testing.gradcheck(lambda y, s: y.scatter_reduce(0, gg.tensor([0, 2]), s[[2, 3]], "amin",
                                                              include_self=False), y, s)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call,error,match", [
    (lambda: gg.ones(3)[gg.tensor([True, False])], IndexError, r"mask \(2,\) does not match the shape \(3,"),
    (lambda: gg.ones(3, 2)[gg.tensor([[True, False]])], IndexError, r"mask \(1, 2\) does not match"),
    (lambda: gg.ones(3, 4)[1:, [True, False]], IndexError, "at dimension 1"),
    (lambda: gg.ones(3)[0, 0], IndexError, "too many indices"),
    (lambda: gg.ones(3)[..., ...], IndexError, "single ellipsis"),
    (lambda: gg.ones(3)[[0.5]], IndexError, "integer or bool"),
    (lambda: gg.ones(2, 3)[0, 3], IndexError, r"getitem: index 3 is out of bounds for axis 1 with size 3"),
    (lambda: gg.ones(2, 3)[gg.tensor([0]), 3], IndexError, r"index 3 is out of bounds for axis 1 .*\(2, 3\)"),
    (lambda: gg.ones(3, 4).gather(1, gg.tensor([[4]])), RuntimeError, "index 4 is out of bounds for dim"),
    (lambda: gg.ones(3, 4).gather(1, gg.tensor([[-1]])), RuntimeError, "index -1 is out of bounds"),
    (lambda: gg.ones(3, 4).gather(1, gg.tensor([0])), RuntimeError, "as many dimensions"),
    (lambda: gg.ones(3, 4).gather(1, gg.ones(1, 1)), RuntimeError, "integer index"),
    (lambda: gg.ones(3, 4).gather(1, gg.tensor([[0]] * 4)), RuntimeError, "larger than the input"),
    (lambda: gg.ones(3, 4).scatter(1, gg.tensor([[1]]), gg.ones(1, 1, dtype=gg.float64)), RuntimeError,
     "dtype float32"),
    (lambda: gg.ones(3, 4).scatter(1, gg.tensor([[1, 2]]), gg.ones(1, 1)), RuntimeError, "than the src"),
    (lambda: gg.ones(3, 4).scatter(1, gg.tensor([[1]])), TypeError, "either src"),
    (lambda: gg.ones(3).scatter_reduce(0, gg.tensor([0]), gg.ones(1), "max"), ValueError, "amax"),
    (lambda: gg.ones(3).index_select(0, gg.tensor([3])), IndexError, "index 3 is out of range"),
    (lambda: gg.ones(3).index_select(0, gg.tensor([[0]])), IndexError, "0-d or 1-d"),
    (lambda: gg.ones(3).masked_fill(gg.tensor([1, 0, 1]), 0.0), RuntimeError, "bool tensor"),
    (lambda: gg.ones(3).masked_fill(gg.tensor([True, False]), 0.0), RuntimeError, "does not broadcast"),
    (lambda: gg.ones(3).masked_fill(gg.tensor([True, False, True]), gg.ones(2)), RuntimeError, "0-d tensor"),
    (lambda: F.pad(gg.ones(3), (1,)), ValueError, "divisible by 2"),
    (lambda: F.pad(gg.ones(3), (1, 1, 1, 1)), ValueError, "only 1"),
    (lambda: F.pad(gg.ones(3), (1, 1), mode="reflect"), NotImplementedError, "batched input"),
    (lambda: F.pad(gg.ones(1, 3), (3, 0), mode="reflect"), RuntimeError, "too large"),
    (lambda: F.pad(gg.ones(1, 3), (4, 0), mode="circular"), RuntimeError, "too large"),
    (lambda: F.pad(gg.ones(1, 3), (1, 1), mode="edge"), ValueError, "mode must be"),
    (lambda: F.pad(gg.ones(1, 3), (-2, -2)), RuntimeError, "removes more"),
    (lambda: F.embedding(gg.tensor([5]), gg.ones(5, 2)), IndexError, "index 5 is out of range for 5"),
    (lambda: F.embedding(gg.tensor([0.0]), gg.ones(5, 2)), TypeError, "integer tensor"),
    (lambda: F.embedding(gg.tensor([0]), gg.ones(5, 2), sparse=True), NotImplementedError, "sparse"),
    (lambda: gg.ones(2, 3).repeat(2), RuntimeError, "at least one count per dimension"),
    (lambda: gg.ones(3).repeat_interleave(gg.tensor([1, -1, 2])), ValueError, "negative"),
    (lambda: gg.ones(3).repeat_interleave(gg.tensor([1, 2])), ValueError, "one count per element"),
    (lambda: gg.ones(5).split(0), ValueError, "split_size must be > 0"),
    (lambda: gg.ones(5).split([2, 2]), ValueError, "sum to 5"),
    (lambda: gg.split(gg.ones(5), 2), ValueError, "do not divide"),
    (lambda: gg.ones(6).chunk(0), ValueError, "greater than 0"),
    (lambda: gg.ones(2, 3).unflatten(1, (2, -1)), ValueError, "do not multiply up"),
    (lambda: gg.ones(3).tril(), ValueError, "at least 2 dimensions"),
    (lambda: gg.ones(2, 3).diagonal(0, 1, 1), ValueError, "same axis"),
    (lambda: gg.diag(gg.ones(2, 2, 2)), ValueError, "1-d or 2-d"),
    (lambda: gg.ones(5).unfold(0, 6, 1), ValueError, "size 6 must be between 0 and 5"),
    (lambda: gg.ones(5).unfold(0, 2, 0), ValueError, "step is 0"),
    (lambda: gg.ones(2, 3).roll((1, 2), 0), RuntimeError, "same length"),
    (lambda: gg.ones(2, 3).flip(0, 0), ValueError, "repeated axis"),
    (lambda: gg.meshgrid(gg.ones(2), indexing="yx"), ValueError, "indexing"),
])
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- assignment and in-place


def test_setitem_reads_the_index_as_pytorch():
    x = gg.zeros(2, 3, 4)
    x[0, :, gg.tensor([1, 3])] = gg.tensor(np.arange(6.0).reshape(3, 2), dtype=gg.float32)
    want = np.zeros((2, 3, 4), dtype=np.float32)
    want[0][:, [1, 3]] = np.arange(6.0).reshape(3, 2)
    _np_equal(x, want)
    y = gg.zeros(3, 2)
    y[(0, 2), 1] = 5.0
    assert y.numpy().tolist() == [[0, 5], [0, 0], [0, 5]]
    with pytest.raises(IndexError, match="__setitem__: the shape of the mask"):
        y[gg.tensor([True, False])] = 1.0


def test_recorded_setitem_refuses_what_would_be_silently_wrong():
    w = gg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w[0] = gg.ones((), requires_grad=True)                 # a leaf that requires grad, as PyTorch
    y = w * 2
    view = y[1:]
    with pytest.raises(RuntimeError, match="shares memory with another one"):
        view[0] = w[0]
    with pytest.raises(TypeError, match="cannot be written into a int64 tensor"):
        gg.zeros(3, dtype=gg.int64)[0] = w[0]
    z = gg.exp(w)                                               # exp saves its output for backward
    z[0] = 1.0
    with pytest.raises(RuntimeError, match="changed in place"):
        z.sum().backward()
    with gg.no_grad():                                          # off the tape: a plain write
        y[0] = w[1]
    assert y.grad_fn.name.startswith("multiply") and y.tolist() == [1.0, 2.0, 2.0]


def test_in_place_scatter_and_masked_fill():
    x = gg.zeros(2, 3)
    assert x.scatter_(1, gg.tensor([[2], [0]]), 1.0) is x
    x.masked_fill_(gg.tensor([True, False, False]), 7.0)
    x.scatter_add_(0, gg.tensor([[1, 1, 1]]), gg.ones(1, 3))
    x.scatter_reduce_(1, gg.tensor([[0], [0]]), gg.full((2, 1), 9.0), "amax")
    assert x.numpy().tolist() == [[9, 0, 1], [9, 1, 1]]
    w = gg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="masked_fill_: in-place change"):
        w.masked_fill_(gg.tensor([True, False]), 0.0)


def test_embedding_max_norm_renormalises_the_rows_it_uses():
    w = gg.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], requires_grad=True)
    out = F.embedding(gg.tensor([0, 1, 0]), w, max_norm=1.0)
    assert_close(w.detach().numpy(), [[0.6, 0.8], [0.3, 0.4], [6.0, 8.0]], rtol=1e-6)
    assert_close(out.detach().numpy(), [[0.6, 0.8], [0.3, 0.4], [0.6, 0.8]], rtol=1e-6)


@needs_torch
def test_embedding_max_norm_matches_torch():
    rng = np.random.default_rng(3)
    a = rng.uniform(-2, 2, size=(6, 3))
    idx = [[0, 2, 2], [5, 0, 1]]
    gw, tw = gg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    g_out = F.embedding(gg.tensor(idx), gw, max_norm=1.5, norm_type=1.0)
    t_out = TF.embedding(torch.tensor(idx), tw, max_norm=1.5, norm_type=1.0)
    (g_out * 2).sum().backward()
    (t_out * 2).sum().backward()
    for g, t in [(g_out, t_out), (gw, tw), (gw.grad, tw.grad)]:
        _same(_numpy(g), _numpy(t), "float64", "embedding max_norm")


# ----------------------------------------------------------------------------- no Python loop over elements


def _graph_size(out: gg.Tensor) -> int:
    """How many nodes the tape recorded behind ``out``."""
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or isinstance(node, gg.Tensor):
            continue
        seen.add(id(node))
        stack.extend(node)
    return len(seen)


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
def test_scatter_reduce_records_a_graph_that_grows_with_log_n(reduce):
    """The backward is whole-array work: the tape grows with log2(n) (prod's scan: 7 nodes a step), not n."""
    sizes = {}
    for n in (64, 4096):
        x = gg.randn(n, dtype=gg.float64, requires_grad=True)
        src = gg.randn(4 * n, dtype=gg.float64, requires_grad=True)
        index = gg.tensor(np.random.default_rng(0).integers(0, n, size=4 * n))
        out = x.scatter_reduce(0, index, src, reduce)
        out.sum().backward()
        assert x.grad.shape == (n,) and src.grad.shape == (4 * n,)
        sizes[n] = _graph_size(out)
    assert sizes[4096] <= sizes[64] + 7 * (math.log2(4 * 4096) - math.log2(4 * 64)), sizes


@pytest.mark.parametrize("build", [
    lambda x: x.gather(1, gg.tensor(np.zeros((512, 3), dtype=np.int64))),
    lambda x: F.pad(x[None], (2, 3, 1, 1), mode="reflect"),
    lambda x: x.unfold(0, 4, 2),
    lambda x: x.repeat_interleave(gg.tensor(np.full(512, 2)), dim=0),
    lambda x: gg.diag(x[:, 0]) + x.diagonal().sum(),
], ids=["gather", "pad", "unfold", "repeat_interleave", "diag"])
def test_layout_ops_record_a_few_nodes_whatever_the_size(build):
    x = gg.randn(512, 8, dtype=gg.float64, requires_grad=True)
    out = build(x)
    out.sum().backward()
    assert x.grad.shape == x.shape and _graph_size(out) < 20


# ----------------------------------------------------------------------------- random indexes


def _index_items(draw: Any, st: Any, shape: tuple[int, ...]) -> list:
    """A random index for ``shape``: ints, slices, None, ..., index arrays, masks, lists and tuples."""
    items, d = [], 0
    used_ellipsis = False
    while d < len(shape) and draw(st.booleans()):
        n = shape[d]
        kind = draw(st.sampled_from(["int", "slice", "none", "array", "mask", "list", "ellipsis"]))
        if kind == "int":
            items.append(("int", draw(st.integers(-n, n - 1))))
        elif kind == "slice":
            items.append(("slice", slice(draw(st.integers(-n, n)), draw(st.integers(-n, n)),
                                         draw(st.integers(1, 2)))))
        elif kind == "none":
            items.append(("none", None))
            continue
        elif kind == "array":
            rows = draw(st.sampled_from([(2,), (1,), (2, 1)]))
            items.append(("array", draw(st.lists(st.integers(-n, n - 1), min_size=math.prod(rows),
                                                 max_size=math.prod(rows))), rows))
        elif kind == "mask":
            items.append(("mask", draw(st.lists(st.booleans(), min_size=n, max_size=n))))
        elif kind == "list":
            items.append(("list", tuple(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2)))))
        elif not used_ellipsis:
            used_ellipsis = True
            items.append(("ellipsis", Ellipsis))
            d = max(d, len(shape) - 1)
            continue
        d += 1
    return items


def _build(L: Lib, items: list) -> tuple:
    out = []
    for item in items:
        kind, value = item[0], item[1]
        if kind == "array":
            out.append(L.ints(np.asarray(value).reshape(item[2])))
        elif kind == "mask":
            out.append(L.mask(value))
        else:
            out.append(value)
    return tuple(out)


if torch is not None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_random_indexes_match_torch(data):
        """Any mix of index kinds gives PyTorch's shape, values and gradient (read and write)."""
        shape = (3, 4, 2)
        items = _index_items(data.draw, st, shape)
        a = np.arange(24.0).reshape(shape)
        results = []
        for name in ("gg", "torch"):
            L = Lib(name)
            x = L.m.tensor(a, requires_grad=True)
            try:
                out = x[_build(L, items)]
            except (IndexError, RuntimeError) as err:     # e.g. index arrays that cannot broadcast
                results.append(type(err))
                continue
            (out * (L.m.arange(out.numel(), dtype=out.dtype).reshape(out.shape) + 1)).sum().backward()
            target = L.m.zeros(shape, dtype=x.dtype)
            target[_build(L, items)] = out.detach() * 2
            results.append((_numpy(out), _numpy(x.grad), _numpy(target)))
        g, t = results
        if isinstance(t, type):
            assert isinstance(g, type), f"{items}: PyTorch raises {t.__name__}, gpugrad gives {g[0].shape}"
            return
        assert not isinstance(g, type), f"{items}: gpugrad raises {g.__name__}, PyTorch gives {t[0].shape}"
        for got, want, what in zip(g, t, ("value", "gradient", "assignment")):
            _same(got, want, "float64", f"{items}: {what}")
