"""gpugrad.nn.functional and the erf op: gradients (gradcheck, gradgradcheck), parity with PyTorch in
float64, numerics at extreme inputs, and error messages."""

import math

import numpy as np
import optional
import pytest

import gpugrad as gg
import gpugrad.nn.functional as F
from gpugrad.ops import special as _erf
from gpugrad.ops.registry import REGISTRY
from gpugrad.ops.samples import Const
from gpugrad.testing import assert_close

try:
    import torch
    import torch.nn.functional as TF
except ImportError:   # the parity tests skip; everything else runs
    torch = None


# ----------------------------------------------------------------------------- erf

def _erf_points():
    rng = np.random.default_rng(7)
    return np.concatenate([
        rng.uniform(-7, 7, 50_000), rng.normal(0, 1.5, 50_000), np.linspace(-6.5, 6.5, 20_001),
        10.0 ** rng.uniform(-310, 0, 5_000), -(10.0 ** rng.uniform(-30, 1, 5_000)),
        np.nextafter([1.0, 2.0, 3.5, 6.0], 0), [1.0, 2.0, 3.5, 6.0, 0.0, 5.92, 5.93, 27.0, 1e300],
    ])


def test_erf_matches_math_erf_to_a_few_ulp():
    x = _erf_points()
    got = _erf.erf_array(np, x)
    ref = np.array([math.erf(v) for v in x])
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    assert rel.max() < 1e-15, f"worst at x={x[np.argmax(rel)]!r}: rel error {rel.max():.3g}"
    assert_close(_erf.erf_array(np, -x), -got, rtol=0, atol=0)          # exactly odd


def test_erf_matches_high_precision_reference():
    mpmath = optional.need("mpmath")
    x = _erf_points()[::50]
    ref = np.array([float(mpmath.erf(mpmath.mpf(float(v)))) for v in x])
    got = _erf.erf_array(np, x)
    assert (np.abs(got - ref) <= 3 * np.spacing(np.abs(ref))).all()       # within 3 ulp everywhere


def test_erf_special_values_and_dtypes():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])
    out = _erf.erf_array(np, x)
    assert_close(out[:4], [0.0, -0.0, 1.0, -1.0], rtol=0, atol=0)
    assert np.signbit(out[1]) and np.isnan(out[4])
    for dtype in (np.float16, np.float32):
        xs = np.linspace(-4, 4, 101).astype(dtype)
        got = _erf.erf_array(np, xs)
        assert got.dtype == dtype
        ref = np.array([math.erf(v) for v in xs.astype(np.float64)]).astype(dtype)
        assert_close(got, ref, rtol=0, atol=0)                            # correctly rounded
    assert _erf.erf(gg.arange(3)).dtype == gg.float32                       # integers -> default float
    assert _erf.erf(gg.tensor(0.5, dtype=gg.float64)).shape == ()
    assert _erf.erf(gg.zeros(0, 3)).shape == (0, 3)


def test_erf_tables_are_what_derive_tables_computes():
    optional.need("mpmath")
    small, pieces = _erf.derive_tables()
    assert small == _erf._SMALL
    assert pieces == _erf._PIECES


def _registry_samples(name):
    op = REGISTRY[name]
    for sample in op.samples(np.random.default_rng(0)):
        args = [a.value if isinstance(a, Const) else gg.tensor(a, dtype=gg.float64, requires_grad=True)
                for a in sample.args]
        yield op, args, sample.params


def test_erf_is_a_registered_op_with_samples():
    assert "erf" in REGISTRY and REGISTRY["erf"].samples is not None and REGISTRY["erf"].higher_order


def test_erf_gradcheck_and_gradgradcheck_on_its_samples():
    for op, args, params in _registry_samples("erf"):
        def fn(*xs, op=op, params=params):
            return op(*xs, **params)
        assert gg.testing.gradcheck(fn, *args)
        assert gg.testing.gradgradcheck(fn, *args)


def test_erf_third_derivative():
    x = gg.tensor([-1.3, 0.2, 2.1], dtype=gg.float64, requires_grad=True)
    (g1,) = gg.autograd.grad(_erf.erf(x).sum(), x, create_graph=True)
    (g2,) = gg.autograd.grad(g1.sum(), x, create_graph=True)
    (g3,) = gg.autograd.grad(g2.sum(), x)
    v = x.detach().numpy()
    c = 2 / math.sqrt(math.pi)
    assert_close(g1.detach().numpy(), c * np.exp(-v * v), rtol=1e-14)
    assert_close(g2.detach().numpy(), -2 * v * c * np.exp(-v * v), rtol=1e-14)
    assert_close(g3.numpy(), (4 * v * v - 2) * c * np.exp(-v * v), rtol=1e-13)


# ----------------------------------------------------------------------------- the cases

class Lib:
    """What a case needs from a library: its functional module and a constant-tensor maker."""

    def __init__(self, name):
        self.name = name
        self.F = F if name == "gg" else TF

    def const(self, a):
        return gg.tensor(a) if self.name == "gg" else torch.tensor(a)

    def erf(self, x):
        return _erf.erf(x) if self.name == "gg" else torch.erf(x)


def _u(lo, hi, shape, seed=0):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape)


_T = np.array([2, 0, 4, 4, 1])                           # class targets for (5, 5) scores
_T_IGN = np.array([2, -100, 4, 4, -100])
_T_IGN3 = np.array([2, 3, 4, 3, 1])
_W = np.array([0.5, 1.0, 2.0, 1.5, 0.25])
_T_SPATIAL = np.random.default_rng(3).integers(0, 4, size=(2, 3, 2))
_T_SPATIAL[0, 1, 1] = -100
_PROBS = np.random.default_rng(4).dirichlet(np.ones(5), size=4)

# (id, float inputs (differentiated), fn(lib, *tensors))
CASES = [
    ("erf", [_u(-5, 5, (4, 5))], lambda L, x: L.erf(x)),
    ("relu", [_u(-2, 2, (3, 4))], lambda L, x: L.F.relu(x)),
    ("leaky_relu", [_u(-2, 2, (3, 4))], lambda L, x: L.F.leaky_relu(x)),
    ("leaky_relu-0.2", [_u(-2, 2, (3, 4))], lambda L, x: L.F.leaky_relu(x, 0.2)),
    ("gelu", [_u(-6, 6, (4, 5))], lambda L, x: L.F.gelu(x)),
    ("gelu-tanh", [_u(-6, 6, (4, 5))], lambda L, x: L.F.gelu(x, approximate="tanh")),
    ("sigmoid", [_u(-8, 8, (3, 4))], lambda L, x: L.F.sigmoid(x)),
    ("tanh", [_u(-3, 3, (3, 4))], lambda L, x: L.F.tanh(x)),
    ("silu", [_u(-4, 4, (3, 4))], lambda L, x: L.F.silu(x)),
    ("logsigmoid", [_u(-30, 30, (3, 4))], lambda L, x: L.F.logsigmoid(x)),
    ("softplus", [_u(-30, 30, (3, 4))], lambda L, x: L.F.softplus(x)),
    ("softplus-beta", [_u(-4, 4, (3, 4))], lambda L, x: L.F.softplus(x, beta=2.0, threshold=3.0)),
    ("softmax", [_u(-3, 3, (3, 4))], lambda L, x: L.F.softmax(x, dim=-1)),
    ("softmax-dim0", [_u(-3, 3, (3, 4))], lambda L, x: L.F.softmax(x, dim=0)),
    ("softmax-3d", [_u(-3, 3, (2, 3, 4))], lambda L, x: L.F.softmax(x, dim=1)),
    ("log_softmax", [_u(-3, 3, (3, 4))], lambda L, x: L.F.log_softmax(x, dim=-1)),
    ("log_softmax-3d", [_u(-3, 3, (2, 3, 4))], lambda L, x: L.F.log_softmax(x, dim=1)),
    ("linear", [_u(-1, 1, (5, 3)), _u(-1, 1, (4, 3)), _u(-1, 1, (4,))],
     lambda L, x, w, b: L.F.linear(x, w, b)),
    ("linear-nobias-3d", [_u(-1, 1, (2, 5, 3)), _u(-1, 1, (4, 3))], lambda L, x, w: L.F.linear(x, w)),
    ("layer_norm", [_u(-2, 2, (3, 5)), _u(0.5, 1.5, (5,)), _u(-1, 1, (5,))],
     lambda L, x, w, b: L.F.layer_norm(x, (5,), w, b)),
    ("layer_norm-2d", [_u(-2, 2, (2, 3, 4)), _u(0.5, 1.5, (3, 4)), _u(-1, 1, (3, 4))],
     lambda L, x, w, b: L.F.layer_norm(x, (3, 4), w, b, eps=1e-3)),
    ("layer_norm-plain", [_u(-2, 2, (4, 6))], lambda L, x: L.F.layer_norm(x, (6,))),
    ("mse_loss", [_u(-2, 2, (3, 4)), _u(-2, 2, (3, 4), 1)], lambda L, x, y: L.F.mse_loss(x, y)),
    ("mse_loss-sum", [_u(-2, 2, (3, 4)), _u(-2, 2, (3, 4), 1)],
     lambda L, x, y: L.F.mse_loss(x, y, reduction="sum")),
    ("mse_loss-none", [_u(-2, 2, (3, 4)), _u(-2, 2, (3, 4), 1)],
     lambda L, x, y: L.F.mse_loss(x, y, reduction="none")),
    ("l1_loss", [_u(-2, 2, (3, 4)), _u(-2, 2, (3, 4), 1)], lambda L, x, y: L.F.l1_loss(x, y)),
    ("l1_loss-sum", [_u(-2, 2, (3, 4)), _u(-2, 2, (3, 4), 1)],
     lambda L, x, y: L.F.l1_loss(x, y, reduction="sum")),
    ("l1_loss-none", [_u(-2, 2, (3, 4)), _u(-2, 2, (3, 4), 1)],
     lambda L, x, y: L.F.l1_loss(x, y, reduction="none")),
    ("bce_logits", [_u(-4, 4, (3, 4)), _u(0, 1, (3, 4), 1)],
     lambda L, x, t: L.F.binary_cross_entropy_with_logits(x, t)),
    ("bce_logits-extreme", [_u(-60, 60, (3, 4)), _u(0, 1, (3, 4), 1)],
     lambda L, x, t: L.F.binary_cross_entropy_with_logits(x, t, reduction="sum")),
    ("bce_logits-weights", [_u(-4, 4, (3, 4)), _u(0, 1, (3, 4), 1)],      # torch: weights are constants
     lambda L, x, t: L.F.binary_cross_entropy_with_logits(x, t, weight=L.const(_u(0.5, 2, (3, 1), 2)),
                                                          pos_weight=L.const(_u(0.5, 3, (4,), 3)))),
    ("bce_logits-none", [_u(-4, 4, (3, 4)), _u(0, 1, (3, 4), 1)],
     lambda L, x, t: L.F.binary_cross_entropy_with_logits(x, t, pos_weight=L.const(np.full(4, 2.0)),
                                                          reduction="none")),
    ("nll_loss", [_u(-3, 0, (5, 5))], lambda L, x: L.F.nll_loss(x, L.const(_T))),
    ("nll_loss-weight-ignore", [_u(-3, 0, (5, 5))],
     lambda L, x: L.F.nll_loss(x, L.const(_T_IGN3), weight=L.const(_W), ignore_index=3)),
    ("nll_loss-sum", [_u(-3, 0, (5, 5))], lambda L, x: L.F.nll_loss(x, L.const(_T_IGN), reduction="sum")),
    ("nll_loss-none", [_u(-3, 0, (5, 5))],
     lambda L, x: L.F.nll_loss(x, L.const(_T_IGN), weight=L.const(_W), reduction="none")),
    ("nll_loss-spatial", [_u(-3, 0, (2, 4, 3, 2))], lambda L, x: L.F.nll_loss(x, L.const(_T_SPATIAL))),
    ("nll_loss-unbatched", [_u(-3, 0, (5,))], lambda L, x: L.F.nll_loss(x, L.const(np.array(3)))),
    ("cross_entropy", [_u(-3, 3, (5, 5))], lambda L, x: L.F.cross_entropy(x, L.const(_T))),
    ("cross_entropy-ignore", [_u(-3, 3, (5, 5))], lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN))),
    ("cross_entropy-weight", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T), weight=L.const(_W))),
    ("cross_entropy-weight-ignore", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN), weight=L.const(_W))),
    ("cross_entropy-sum", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN), weight=L.const(_W), reduction="sum")),
    ("cross_entropy-none", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN), weight=L.const(_W), reduction="none")),
    ("cross_entropy-smoothing", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T), label_smoothing=0.1)),
    ("cross_entropy-smoothing-ignore", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN), label_smoothing=0.2)),
    ("cross_entropy-smoothing-weight-ignore", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN), weight=L.const(_W), label_smoothing=0.3)),
    ("cross_entropy-smoothing-sum", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN), weight=L.const(_W), label_smoothing=0.3,
                                    reduction="sum")),
    ("cross_entropy-smoothing-none", [_u(-3, 3, (5, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_IGN), weight=L.const(_W), label_smoothing=0.3,
                                    reduction="none")),
    ("cross_entropy-spatial", [_u(-3, 3, (2, 4, 3, 2))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T_SPATIAL), label_smoothing=0.1)),
    ("cross_entropy-unbatched", [_u(-3, 3, (5,))],
     lambda L, x: L.F.cross_entropy(x, L.const(np.array(1)), label_smoothing=0.1)),
    ("cross_entropy-large-logits", [_u(-500, 500, (4, 5))],
     lambda L, x: L.F.cross_entropy(x, L.const(_T[:4]))),
    ("cross_entropy-probs", [_u(-3, 3, (4, 5)), _PROBS], lambda L, x, p: L.F.cross_entropy(x, p)),
    ("cross_entropy-probs-weight-smoothing", [_u(-3, 3, (4, 5)), _PROBS],
     lambda L, x, p: L.F.cross_entropy(x, p, weight=L.const(_W), label_smoothing=0.2)),
    ("cross_entropy-probs-none", [_u(-3, 3, (4, 5)), _PROBS],
     lambda L, x, p: L.F.cross_entropy(x, p, reduction="none")),
    ("cross_entropy-probs-sum", [_u(-3, 3, (4, 5)), _PROBS],
     lambda L, x, p: L.F.cross_entropy(x, p, weight=L.const(_W), reduction="sum")),
]
_IDS = [c[0] for c in CASES]
GG = Lib("gg")


def _gg_inputs(arrays):
    return [gg.tensor(a, dtype=gg.float64, requires_grad=True) for a in arrays]


@pytest.mark.parametrize("name,arrays,fn", CASES, ids=_IDS)
def test_gradcheck(name, arrays, fn):
    assert gg.testing.gradcheck(lambda *xs: fn(GG, *xs), *_gg_inputs(arrays))


@pytest.mark.parametrize("name,arrays,fn", CASES, ids=_IDS)
def test_gradgradcheck(name, arrays, fn):
    """Composites of primitives are differentiable twice with no rule of their own."""
    assert gg.testing.gradgradcheck(lambda *xs: fn(GG, *xs), *_gg_inputs(arrays))


def test_dropout_gradcheck_with_a_fixed_mask():
    def fn(x):
        gg.manual_seed(5)                    # the same mask on every evaluation
        return F.dropout(x, 0.3)
    assert gg.testing.gradcheck(fn, *_gg_inputs([_u(-1, 1, (4, 5))]))


def _run(lib, fn, arrays):
    if lib.name == "torch":
        inputs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    else:
        inputs = _gg_inputs(arrays)
    out = fn(lib, *inputs)
    weight = np.linspace(0.5, 1.5, out.numel()).reshape(tuple(out.shape))
    (out * lib.const(weight)).sum().backward()
    return out.detach().numpy(), [i.grad.numpy() for i in inputs]


@optional.needs("torch")
@pytest.mark.parametrize("name,arrays,fn", CASES, ids=_IDS)
def test_matches_torch(name, arrays, fn):
    g_out, g_grads = _run(GG, fn, arrays)
    t_out, t_grads = _run(Lib("torch"), fn, arrays)
    assert g_out.shape == t_out.shape
    assert_close(g_out, t_out, rtol=1e-10, atol=1e-13)
    for g, t in zip(g_grads, t_grads):
        assert_close(g, t, rtol=1e-10, atol=1e-13)


@optional.needs("torch")
def test_float32_activations_match_torch():
    x = _u(-6, 6, (200,)).astype(np.float32)
    pairs = [(F.gelu, TF.gelu), (lambda v: F.gelu(v, "tanh"), lambda v: TF.gelu(v, approximate="tanh")),
             (F.silu, TF.silu), (F.logsigmoid, TF.logsigmoid)]
    for gfn, tfn in pairs:
        out = gfn(gg.tensor(x))
        assert out.dtype == gg.float32
        assert_close(out.numpy(), tfn(torch.tensor(x)).numpy(), rtol=2e-6, atol=1e-6)


@optional.needs("torch")
def test_one_hot_matches_torch():
    t = np.array([[0, 3], [2, 2]])
    assert_close(F.one_hot(gg.tensor(t)).numpy(), TF.one_hot(torch.tensor(t)).numpy(), rtol=0, atol=0)
    assert_close(F.one_hot(gg.tensor(t), 6).numpy(), TF.one_hot(torch.tensor(t), 6).numpy(), rtol=0, atol=0)
    assert F.one_hot(gg.tensor(t)).dtype == gg.int64


# ----------------------------------------------------------------------------- numerics and semantics


def test_stable_at_extreme_logits():
    x = gg.tensor([[1000.0, 0.0, -1000.0]], dtype=gg.float64, requires_grad=True)
    assert_close(F.log_softmax(x).detach().numpy(), [[0.0, -1000.0, -2000.0]])
    assert_close(F.softmax(x).detach().numpy(), [[1.0, 0.0, 0.0]])
    loss = F.cross_entropy(x, gg.tensor([2]))
    loss.backward()
    assert loss.item() == 2000.0 and np.isfinite(x.grad.numpy()).all()
    z = gg.tensor([-800.0, 800.0], dtype=gg.float64)
    assert_close(F.logsigmoid(z).numpy(), [-800.0, 0.0])
    bce = F.binary_cross_entropy_with_logits(z, gg.tensor([1.0, 0.0], dtype=gg.float64), reduction="none")
    assert_close(bce.numpy(), [800.0, 800.0])


def test_softmax_with_minus_inf_entries():
    x = gg.tensor([[0.0, -np.inf, 1.0]], dtype=gg.float64, requires_grad=True)
    p = F.softmax(x)
    (p * gg.tensor([[1.0, 2.0, 3.0]], dtype=gg.float64)).sum().backward()
    assert p.detach().numpy()[0, 1] == 0.0 and np.isfinite(x.grad.numpy()).all()


def test_cross_entropy_mean_with_every_target_ignored_is_nan():
    x = gg.randn(3, 4, dtype=gg.float64)
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.cross_entropy(x, gg.tensor([-100, -100, -100])).item())
    assert F.nll_loss(x, gg.tensor([-100, -100, -100]), reduction="sum").item() == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [2, -1, -100])
def test_cross_entropy_by_hand(reduction, ignore_index):
    """Values and gradient against the formula: -log softmax(x)[t], over the rows whose t is kept."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4))
    t = np.array([0, 2, 3, 2, 1, 0])
    if ignore_index == -1:
        t[[1, 4]] = -1
    kept = t != ignore_index
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    rows = np.where(kept, -logp[np.arange(6), np.where(kept, t, 0)], 0.0)
    softmax_minus_onehot = np.exp(logp) - np.eye(4)[np.where(kept, t, 0)]
    grad_rows = np.where(kept[:, None], softmax_minus_onehot, 0.0)      # d rows[i] / d x[i]
    if reduction == "mean":
        expected, grad = rows.sum() / kept.sum(), grad_rows / kept.sum()
    elif reduction == "sum":
        expected, grad = rows.sum(), grad_rows
    else:
        expected, grad = rows, grad_rows * np.linspace(0.5, 1.5, 6)[:, None]
    xt = gg.tensor(x, requires_grad=True)
    loss = F.cross_entropy(xt, gg.tensor(t), ignore_index=ignore_index, reduction=reduction)
    assert_close(loss, np.asarray(expected), rtol=1e-12, atol=1e-14)
    (loss * gg.tensor(np.linspace(0.5, 1.5, 6)) if reduction == "none" else loss).sum().backward()
    assert_close(xt.grad, grad, rtol=1e-12, atol=1e-14)


def test_logsigmoid_gradient_at_zero_is_one_half():
    x = gg.tensor(0.0, dtype=gg.float64, requires_grad=True)
    F.logsigmoid(x).backward()
    assert x.grad.item() == 0.5


def test_leaky_relu_and_relu_subgradients_at_zero_match_torch():
    x = gg.tensor([0.0], requires_grad=True)
    F.leaky_relu(x, 0.1).backward()
    assert x.grad.item() == pytest.approx(0.1)     # PyTorch: x > 0 ? g : slope * g
    x.grad = None
    F.relu(x).sum().backward()
    assert x.grad.item() == 0.0


def test_dropout_statistics_and_scaling():
    gg.manual_seed(0)
    x = gg.ones(200_000)
    y = F.dropout(x, 0.3).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.005
    assert_close(y[kept], np.full(kept.sum(), 1 / 0.7, np.float32), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.01                               # inverted dropout keeps the mean
    assert F.dropout(x, 0.3, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert (F.dropout(x, 1.0).numpy() == 0).all()


def test_dropout_gradient_is_the_mask_and_reproducible_under_a_seed():
    gg.manual_seed(1)
    x = gg.ones(1000, requires_grad=True)
    y = F.dropout(x, 0.5)
    y.sum().backward()
    assert_close(x.grad.numpy(), y.detach().numpy(), rtol=0, atol=0)
    gg.manual_seed(1)
    assert_close(F.dropout(gg.ones(1000), 0.5).numpy(), y.detach().numpy(), rtol=0, atol=0)


def test_gelu_float32_near_zero_and_large():
    x = gg.tensor([-40.0, -1e-30, 0.0, 1e-30, 40.0])
    assert_close(F.gelu(x).numpy(), np.array([-0.0, -5e-31, 0.0, 5e-31, 40.0], np.float32), rtol=0, atol=0)


def test_layer_norm_output_is_normalised():
    x = gg.randn(4, 10, dtype=gg.float64) * 3 + 7
    y = F.layer_norm(x, 10, eps=0.0).numpy()
    assert_close(y.mean(axis=-1), np.zeros(4), atol=1e-12)
    assert_close(y.var(axis=-1), np.ones(4), rtol=1e-12)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call,exc,match", [
    (lambda: F.cross_entropy(gg.randn(3, 4), gg.tensor([0, 4, 1])), IndexError,
     "target 4 is out of bounds for 4"),
    (lambda: F.cross_entropy(gg.randn(3, 4), gg.tensor([0, 1])), ValueError,
     r"target must have shape \(3,\)"),
    (lambda: F.cross_entropy(gg.randn(3, 4), gg.tensor([0.0, 1.0, 2.0])), ValueError, "probability targets"),
    (lambda: F.cross_entropy(gg.randn(3, 4), gg.rand(3, 4), ignore_index=1), ValueError, "ignore_index"),
    (lambda: F.cross_entropy(gg.randn(3, 4), gg.tensor([0, 1, 2]), weight=gg.ones(3)), ValueError,
     r"weight must have one entry per class, shape \(4,\)"),
    (lambda: F.cross_entropy(gg.randn(3, 4), gg.tensor([0, 1, 2]), reduction="avg"), ValueError, "reduction"),
    (lambda: F.cross_entropy(gg.randn(3, 4), gg.tensor([0, 1, 2]), label_smoothing=1.5), ValueError,
     "label_smoothing"),
    (lambda: F.nll_loss(gg.randn(3, 4), gg.tensor([0.0, 1.0, 2.0])), TypeError, "integer tensor"),
    (lambda: F.linear(gg.randn(2, 5), gg.randn(3, 4)), ValueError, "has 5 features"),
    (lambda: F.layer_norm(gg.randn(2, 5), (4,)), ValueError, r"normalized_shape \(4,\) must match"),
    (lambda: F.dropout(gg.randn(2), 1.5), ValueError, "between 0 and 1"),
    (lambda: F.gelu(gg.randn(2), "fast"), ValueError, "approximate"),
    (lambda: F.binary_cross_entropy_with_logits(gg.randn(2, 3), gg.rand(3)), ValueError, "target size"),
    (lambda: F.one_hot(gg.tensor([0, 5]), 3), ValueError, r"\[0, 3\)"),
    (lambda: F.one_hot(gg.tensor([0.0])), TypeError, "integer"),
])
def test_errors_name_the_op_and_the_problem(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_mse_loss_warns_when_shapes_differ():
    with pytest.warns(UserWarning, match="mse_loss: target shape"):
        F.mse_loss(gg.randn(3, 1), gg.randn(3))
