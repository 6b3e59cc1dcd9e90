"""Tensor creation, dtypes, conversions, operators and display."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.testing import assert_close


def test_arange_float_is_float32_and_int_is_int64():
    assert gg.arange(4.0).dtype == gg.float32
    assert gg.arange(4).dtype == gg.int64
    assert gg.arange(4.0).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert gg.arange(1, 7, 2).tolist() == [1, 3, 5]


@pytest.mark.parametrize("data,dtype", [
    ([1.0, 2.0], gg.float32), ([1, 2], gg.int64), ([True, False], gg.bool), (2.5, gg.float32),
    (np.array([1.0], dtype=np.float64), gg.float64), (np.array([1.0], dtype=np.float16), gg.float16),
])
def test_tensor_dtype_inference(data, dtype):
    assert gg.tensor(data).dtype == dtype


def test_tensor_copies_its_data():
    a = np.zeros(3)
    t = gg.tensor(a)
    a[0] = 5
    assert t[0].item() == 0


@pytest.mark.parametrize("make", [
    lambda **kw: gg.zeros(2, 3, **kw), lambda **kw: gg.ones((2, 3), **kw),
    lambda **kw: gg.full((2, 3), 7.0, **kw), lambda **kw: gg.randn(2, 3, **kw),
    lambda **kw: gg.rand(size=(2, 3), **kw), lambda **kw: gg.eye(2, 3, **kw),
    lambda **kw: gg.zeros_like(gg.ones(2, 3), **kw), lambda **kw: gg.ones_like(gg.ones(2, 3), **kw),
    lambda **kw: gg.full_like(gg.ones(2, 3), 2.0, **kw),
])
def test_creation_takes_dtype_device_requires_grad(make):
    t = make(dtype=gg.float64, device="cpu", requires_grad=True)
    assert t.shape == (2, 3) and t.dtype == gg.float64 and t.device == "cpu" and t.requires_grad
    assert make().dtype == gg.float32


def test_linspace_and_eye():
    assert gg.linspace(0, 1, 5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert gg.linspace(0, 1, steps=3, dtype=gg.float64).dtype == gg.float64
    assert_close(gg.eye(3), np.eye(3, dtype=np.float32), rtol=0, atol=0)


def test_randn_shapes_and_seed():
    gg.manual_seed(1)
    a = gg.randn(size=(), device=None)
    gg.manual_seed(1)
    b = gg.randn(size=())
    assert a.shape == () and a.item() == b.item()
    assert gg.randn(2, 3).shape == (2, 3) and gg.randn((4,)).shape == (4,)
    assert gg.randn(3, dtype=gg.float16).dtype == gg.float16


def test_full_infers_dtype_from_value():
    assert gg.full((2,), 1).dtype == gg.int64
    assert gg.full((2,), 1.0).dtype == gg.float32
    assert gg.full((2,), True).dtype == gg.bool


def test_metadata_and_conversions():
    t = gg.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == gg.float32 and str(t.device) == "cpu"
    assert t.size() == (2, 3) and t.size(1) == 3 and t.numel() == 6 and len(t) == 2
    assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert isinstance(t.numpy(), np.ndarray)
    assert t.sum().item() == 21.0 and isinstance(t.sum().item(), float)
    assert t.to(gg.float64).dtype == gg.float64 and t.astype("float16").dtype == gg.float16
    assert t.to("cpu", gg.float64).dtype == gg.float64
    assert t.to(dtype=gg.int64).dtype == gg.int64
    assert float(t[0, 1]) == 2.0 and int(gg.tensor(3)) == 3
    assert_close(np.asarray(t), t.numpy(), rtol=0, atol=0)
    assert [row.tolist() for row in t] == t.tolist()


def test_bool_of_one_element_and_comparisons():
    b = gg.tensor([1.0, -2.0])
    assert (b.sum() > -2) and not (b.sum() > 0)
    assert (b > 0).dtype == gg.bool
    assert (b == b).all() and not (b != b).any()
    assert ((b >= 1) | (b <= -2)).all() and not ((b > 0) & (b < 0)).any()
    assert (~(b > 0)).tolist() == [False, True]
    with pytest.raises(ValueError, match="ambiguous"):
        bool(b > 0)


def test_numpy_scalars_on_the_left_give_tensors():
    t = gg.ones(2)
    assert isinstance(np.float32(2) * t, gg.Tensor)
    assert isinstance(np.ones(2) + t, gg.Tensor)


def test_python_scalars_keep_float32():
    x = gg.ones(3)
    for y in (2 * x, x * 2.5, x / 3, 1 - x, x ** 2, 2 ** x, -x, x + True):
        assert y.dtype == gg.float32


def test_float_functions_of_integers_are_float32():
    assert gg.exp(gg.arange(3)).dtype == gg.float32
    assert (gg.arange(3) / 2).dtype == gg.float32
    assert gg.arange(3).mean().dtype == gg.float32
    assert (gg.arange(3) * 2).dtype == gg.int64


def test_pytorch_promotion_between_tensors():
    assert (gg.ones(2, dtype=gg.float16) + gg.ones(2, dtype=gg.float64)).dtype == gg.float64
    assert (gg.ones(2, dtype=gg.float16) + gg.ones(2, dtype=gg.float32)).dtype == gg.float32
    assert (gg.ones(2, dtype=gg.int64) + gg.ones(2, dtype=gg.float32)).dtype == gg.float32   # NumPy: float64


def test_repr():
    assert repr(gg.arange(4.0)) == "tensor([0., 1., 2., 3.])"
    assert repr(gg.tensor(28.0)) == "tensor(28.)"
    assert "requires_grad=True" in repr(gg.ones(2, requires_grad=True))
    assert "grad_fn=<multiplyBackward>" in repr(gg.ones(2, requires_grad=True) * 2)
    assert "dtype=float64" in repr(gg.ones(2, dtype=gg.float64))


def test_methods_mirror_functions():
    x = gg.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    assert_close(x.exp().numpy(), gg.exp(x).numpy())
    assert x.T.shape == (3, 2) and x.transpose().shape == (3, 2) and x.transpose(0, 1).shape == (3, 2)
    assert x.reshape(3, 2).shape == (3, 2) and x.reshape((6,)).shape == (6,) and x.view(-1).shape == (6,)
    assert x.unsqueeze(0).shape == (1, 2, 3) and x.unsqueeze(0).squeeze(0).shape == (2, 3)
    assert x.flatten().shape == (6,) and x.permute(1, 0).shape == (3, 2)
    assert x.sum(dim=1, keepdim=True).shape == (2, 1) and x.mean(axis=0).shape == (3,)
    assert x.max().item() == 4.0 and x.argmax().item() == 4 and x.argmax(axis=1).tolist() == [2, 1]
    assert x.clamp(min=0).min().item() == 0.0
    assert x.expand(4, 2, 3).shape == (4, 2, 3) and x[:1].expand(-1, 3).shape == (1, 3)
    assert_close(x.var().item(), np.var(x.numpy(), ddof=1), rtol=1e-6)   # unbiased, as PyTorch
    assert_close(x.var(correction=0).item(), np.var(x.numpy()), rtol=1e-6)
    assert_close(x.std(dim=1).numpy(), np.std(x.numpy(), axis=1, ddof=1), rtol=1e-6)
    assert_close(gg.var(x).item(), np.var(x.numpy()), rtol=1e-6)          # gg.var: NumPy's


def test_shape_functions_match_numpy():
    a = np.arange(24.0).reshape(2, 3, 4)
    x = gg.tensor(a)
    assert_close(gg.transpose(x, (2, 0, 1)).numpy(), np.transpose(a, (2, 0, 1)), rtol=0, atol=0)
    assert_close(gg.swapaxes(x, 0, 2).numpy(), np.swapaxes(a, 0, 2), rtol=0, atol=0)
    assert_close(gg.expand_dims(x, (0, 2)).numpy(), np.expand_dims(a, (0, 2)), rtol=0, atol=0)
    assert_close(gg.concatenate([x, x], axis=1).numpy(), np.concatenate([a, a], 1), rtol=0, atol=0)
    assert_close(gg.stack([x, x], axis=-1).numpy(), np.stack([a, a], -1), rtol=0, atol=0)
    assert_close(gg.broadcast_to(x[:, :1], (2, 3, 4)).numpy(),
                                  np.broadcast_to(a[:, :1], (2, 3, 4)), rtol=0, atol=0)
    assert_close(x.flatten(1).numpy(), a.reshape(2, 12), rtol=0, atol=0)
    assert_close(x[..., 1:3][:, [0, 2]].numpy(), a[..., 1:3][:, [0, 2]], rtol=0, atol=0)
    assert_close(x[x > 10].numpy(), a[a > 10], rtol=0, atol=0)


def test_reductions_match_numpy():
    a = np.random.default_rng(0).standard_normal((3, 4, 5))
    x = gg.tensor(a)
    for name in ("sum", "mean", "max", "min", "prod", "var", "std"):
        for axis in (None, 1, (0, 2), -1):
            assert_close(getattr(gg, name)(x, axis=axis).numpy(),
                                       getattr(np, name)(a, axis=axis), rtol=1e-12)
    assert_close(gg.logsumexp(x, axis=1).numpy(), np.log(np.exp(a).sum(axis=1)), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_logsumexp_is_stable():
    x = gg.tensor([1000.0, 1000.0])
    assert abs(gg.logsumexp(x).item() - (1000 + np.log(2))) < 1e-3
    assert gg.logsumexp(gg.tensor([-np.inf, -np.inf])).item() == -np.inf


def test_linalg_norm_matches_numpy():
    a = np.random.default_rng(0).standard_normal((3, 4))
    x = gg.tensor(a)
    for ord_ in (None, "fro", 1, -1, np.inf, -np.inf):
        assert_close(gg.linalg.norm(x, ord_).numpy(), np.linalg.norm(a, ord_), rtol=1e-12)
    for ord_ in (None, 1, 2, 3, 0, np.inf, -np.inf):
        assert_close(gg.linalg.norm(x, ord_, axis=1).numpy(),
                                   np.linalg.norm(a, ord_, axis=1), rtol=1e-12)
    with pytest.raises(ValueError, match="singular values"):
        gg.linalg.norm(x, 2)


def test_matmul_and_dot_follow_numpy():
    rng = np.random.default_rng(0)
    for sa, sb in [((3, 4), (4, 2)), ((4,), (4,)), ((4,), (4, 2)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)),
                   ((2, 1, 3, 4), (5, 4, 2))]:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        assert_close((gg.tensor(a) @ gg.tensor(b)).numpy(), a @ b, rtol=1e-12)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    assert_close(gg.dot(gg.tensor(a), gg.tensor(b)).numpy(), a.dot(b), rtol=1e-12)
    assert gg.dot(gg.tensor(2.0), gg.tensor([1.0, 2.0])).tolist() == [2.0, 4.0]


def test_in_place_ops_without_grad():
    t = gg.zeros(3)
    t.fill_(2.0).add_(1.0).mul_(2.0).sub_(gg.ones(3)).div_(5.0)
    assert t.tolist() == [1.0, 1.0, 1.0]
    t[1] = 7.0
    t.clamp_(max=5.0)
    assert t.tolist() == [1.0, 5.0, 1.0]
    t.copy_(gg.tensor([3.0, 2.0, 1.0]))
    assert t.zero_().tolist() == [0.0, 0.0, 0.0]


def test_augmented_assignment():
    x = gg.arange(4.0, requires_grad=True)
    (x * x).sum().backward()
    with gg.no_grad():
        x -= 0.5 * x.grad              # in place: x stays the same leaf
    assert x.requires_grad and x.is_leaf and x.tolist() == [0.0, 0.0, 0.0, 0.0]
    y = x * 1.0
    y += 2.0                           # recorded: gradients still flow
    y *= 3.0
    y.sum().backward()
    assert x.grad.tolist() == [3.0, 5.0, 7.0, 9.0]
    t = gg.ones(2)
    t /= 4
    assert t.tolist() == [0.25, 0.25]


def test_isclose_and_allclose():
    a = gg.tensor([1.0, 2.0])
    assert gg.allclose(a, a + 1e-9) and a.allclose(gg.tensor([1.0, 2.0]))
    assert not gg.allclose(a, a + 1)
    assert gg.isclose(a, gg.tensor([1.0, 3.0])).tolist() == [True, False]


def test_to_accepts_dtype_names_and_device_strings():
    t = gg.ones(2)
    assert t.to("float64").dtype == gg.float64 and t.to("cpu").device == "cpu"
    assert t.to("cpu", "float16").dtype == gg.float16


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod", "argmax", "std"])
@pytest.mark.parametrize("operand", [[[1.0, 2.0], [3.0, 5.0]], [4.0, 1.0], [[2.0, 7.0]], (1, 2, 3)])
def test_reductions_of_python_sequences_read_them_as_numpy_does(name, operand):
    ours, numpys = getattr(gg, name), getattr(np, name)
    # the mean of integers is in the default float (float32, as jax.numpy's), NumPy's in float64
    floats = name in ("mean", "std") and isinstance(operand, tuple)
    for kwargs in ({}, {"axis": 0}, {"axis": -1, "keepdims": name != "argmax"}):
        result, expected = ours(operand, **kwargs), numpys(operand, **kwargs)
        assert_close(result, expected.astype(np.float32) if floats else expected)


def test_empty_list_reductions_and_norms_as_numpy():
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.mean([])
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):    # NumPy's warning, as NumPy
        mean = gg.mean([])
    assert mean.shape == () and np.isnan(mean.item())
    assert_close(gg.sum([]), np.sum([]))
    assert_close(gg.linalg.norm([], 0), np.linalg.norm([], 0))
    assert_close(gg.linalg.norm([3, 4]), np.linalg.norm([3, 4]))
    assert_close(gg.linalg.norm([[1.0, -2.0], [3.0, 4.0]], 1), np.linalg.norm([[1.0, -2.0], [3.0, 4.0]], 1))
    assert np.isnan(expected)
