"""gpugrad.testing checks what it claims: gradcheck and gradgradcheck reject wrong gradients.

Every check here plants a bug in an op built for the test (an OpDef that is not registered, so
no global state changes) and shows the checker failing on it, beside the correct op passing.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops.registry import OpDef
from gpugrad.testing import GradcheckError, assert_close, gradcheck, gradgradcheck


def _sin_op(rule, *, name: str = "probe") -> OpDef:
    """sin, with the VJP rule ``rule(xp, g, x)``; the rule also runs on Tensors (create_graph)."""
    def _probe(xp, x):
        return xp.sin(x)

    _probe.__name__ = name
    op = OpDef(_probe, save=("x",), samples=None, differentiable=True, broadcast=False,
               float_inputs=False, fused=None, higher_order=True)
    op.vjp(lambda xp, g, out, x: (rule(xp, g, x),))
    return op


def _right(xp, g, x):
    return g * xp.cos(x)


def _scaled(factor):
    return lambda xp, g, x: g * xp.cos(x) * factor


def _input(shape=(3, 4), seed=0):
    return gg.tensor(np.random.default_rng(seed).uniform(-2, 2, shape), requires_grad=True)


# ----------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (1000,)])
def test_a_right_gradient_passes(shape):
    assert gradcheck(_sin_op(_right), _input(shape)) is True
    assert gradcheck(lambda t: (_sin_op(_right)(t) * t).sum(), _input(shape)) is True


@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (1000,)])
def test_a_gradient_scaled_by_1_001_is_rejected(shape):
    with pytest.raises(GradcheckError, match="gradcheck failed for input 0"):
        gradcheck(_sin_op(_scaled(1.001)), _input(shape))


def test_the_default_tolerance_is_strict():
    """An error of 3 rtol is rejected, so loosening the defaults tenfold is caught here."""
    assert gg.testing.RTOL <= 1e-5 and gg.testing.ATOL <= 1e-8
    with pytest.raises(GradcheckError):
        gradcheck(_sin_op(_scaled(1 + 3 * gg.testing.RTOL)), _input((3, 4)))
    assert gradcheck(_sin_op(_scaled(1 + 1e-9)), _input((3, 4)))      # below what differences resolve


def test_raise_exception_false_returns_false():
    assert gradcheck(_sin_op(_scaled(1.001)), _input(), raise_exception=False) is False
    assert gradcheck(_sin_op(_right), _input(), raise_exception=False) is True
    flat = _sin_op(lambda xp, g, x: xp.reshape(g * xp.cos(x), (1,)), name="flat")
    assert gradcheck(lambda t: flat(t) * 2.0, _input(()), raise_exception=False) is False
    narrow = _sin_op(lambda xp, g, x: (g * xp.cos(x)).astype(np.float32), name="narrow")
    assert gradcheck(narrow, _input(), raise_exception=False) is False
    assert gradgradcheck(_sin_op(_second_order_scaled(1.001)), _input(), raise_exception=False) is False
    assert gradgradcheck(_sin_op(_right), _input(), raise_exception=False) is True


def _second_derivative_off_by(delta):
    """The rule's values are right on both paths; on Tensors its own derivative is off by ``delta``."""
    def rule(xp, g, x):
        if xp is np:
            return g * np.cos(x)
        return g * (gg.cos(x) + delta * (x - gg.stop_gradient(x)))
    return rule


def test_gradcheck_tolerances_are_the_ones_given():
    assert gradcheck(_sin_op(_scaled(1.001)), _input(), rtol=1e-2) is True
    op = _sin_op(_second_derivative_off_by(1e-3))
    assert gradcheck(op, _input()) is True
    with pytest.raises(GradcheckError):
        gradgradcheck(op, _input())
    assert gradgradcheck(op, _input(), rtol=1e-2, atol=1e-2) is True


def _numbers_after(text, title):
    block = text.split(title)[1].split("numeric Jacobian")[0]
    return np.array([float(n) for n in re.findall(r"-?\d+\.\d*", block)])


def test_a_small_mismatch_shows_both_jacobians():
    x = gg.tensor([0.5, 1.0], dtype=gg.float64, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(_sin_op(_scaled(2.0)), x)
    text = str(info.value)
    cos = np.cos([0.5, 1.0])
    assert_close(_numbers_after(text, "analytic Jacobian:"), 2 * np.array([cos[0], 0, 0, cos[1]]), atol=1e-5)
    assert_close(_numbers_after(text, "numeric Jacobian:"), np.array([cos[0], 0, 0, cos[1]]), atol=1e-5)


def _one_wrong_element(index, factor):
    def rule(xp, g, x):
        grad = g * xp.cos(x)
        bump = np.ones(x.shape)
        bump[index] = factor
        return grad * xp.asarray(bump)
    return rule


@pytest.mark.parametrize("seed", range(5))
def test_one_wrong_element_of_a_large_input_is_rejected(seed):
    """Above full_check_limit only random directions run: several of them find one element 1% off."""
    x = gg.tensor(np.random.default_rng(seed).uniform(-1, 1, (50, 40)), requires_grad=True)   # 2,000
    index = tuple(np.random.default_rng(seed).integers(0, (50, 40)))
    op = _sin_op(_one_wrong_element(index, 1.01))
    with pytest.raises(GradcheckError, match="directional derivative"):
        gradcheck(lambda t: op(t).sum(), x, seed=seed)
    with pytest.raises(GradcheckError, match="directional derivative"):
        gradcheck(op, x, seed=seed, directions=16)


def test_one_wrong_element_of_a_small_input_is_found_by_the_full_check():
    x = _input((4, 5))
    with pytest.raises(GradcheckError, match=r"1 of 20 elements .* the most at \(2, 3\)"):
        gradcheck(_sin_op(_one_wrong_element((2, 3), 1.0001)), x, directions=0)


def test_a_gradient_of_the_wrong_shape_is_rejected():
    """A 0-d input's gradient of shape (1,) would broadcast back unseen; gradcheck names the rule."""
    op = _sin_op(lambda xp, g, x: xp.reshape(g * xp.cos(x), (1,)), name="flat")
    with pytest.raises(GradcheckError, match=r"rule of flat returned a gradient of shape \(1,\).*shape \(\)"):
        gradcheck(lambda t: op(t) * 2.0, _input(()))


def test_a_gradient_of_the_wrong_dtype_is_rejected():
    """The engine casts a rule's float32 gradient back to float64; gradcheck refuses it first."""
    op = _sin_op(lambda xp, g, x: (g * xp.cos(x)).astype(np.float32), name="narrow")
    with pytest.raises(GradcheckError, match="rule of narrow returned .* dtype float32 for input 0"):
        gradcheck(op, _input())


def test_a_rule_returning_the_wrong_number_of_gradients_is_rejected():
    def _probe(xp, x):
        return xp.sin(x)

    op = OpDef(_probe, save=("x",), samples=None, differentiable=True, broadcast=False,
               float_inputs=False, fused=None, higher_order=True)
    op.vjp(lambda xp, g, out, x: (g * xp.cos(x), g))
    with pytest.raises(GradcheckError, match="expected a tuple of 1"):
        gradcheck(op, _input())


def test_an_output_narrower_than_float64_is_rejected():
    with pytest.raises(GradcheckError, match="fn returned float32"):
        gradcheck(lambda t: t.astype(gg.float32) * 2, _input())


def test_a_missing_gradient_is_rejected():
    """An input that the function uses, with no gradient reaching it (a stop_gradient bug)."""
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: gg.stop_gradient(t) * t, _input())


def test_inputs_are_checked():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t, gg.ones(3, requires_grad=True))
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda t: t, gg.ones(3, dtype=gg.float64))


def test_the_inputs_are_restored():
    x = _input()
    before = x.detach().numpy().copy()
    gradcheck(_sin_op(_right), x)
    assert_close(x.detach().numpy(), before, rtol=0, atol=0)


# ----------------------------------------------------------------------------- gradgradcheck


def _second_order_scaled(factor):
    """First order right; the same rule run on Tensors (create_graph) is scaled by ``factor``."""
    def rule(xp, g, x):
        return g * xp.cos(x) * (1.0 if xp is np else factor)
    return rule


def test_gradgradcheck_passes_a_right_rule():
    assert gradgradcheck(_sin_op(_right), _input()) is True


def test_gradgradcheck_rejects_a_second_order_scaled_by_1_001():
    op = _sin_op(_second_order_scaled(1.001))
    assert gradcheck(op, _input())                         # first order is right
    with pytest.raises(GradcheckError):
        gradgradcheck(op, _input())


def test_gradgradcheck_rejects_a_rule_whose_own_derivative_is_wrong():
    """g * cos(x) with cos replaced by a function of the same values and the wrong derivative."""
    def rule(xp, g, x):
        if xp is np:
            return g * np.cos(x)
        frozen = gg.stop_gradient(gg.cos(x))               # the values of cos(x), derivative 0
        return g * frozen
    with pytest.raises(GradcheckError):
        gradgradcheck(_sin_op(rule), _input())


def test_gradgradcheck_rejects_a_second_order_gradient_of_the_wrong_shape_or_dtype():
    flat = _sin_op(lambda xp, g, x: g * xp.cos(x) if xp is np else xp.reshape(g * xp.cos(x), (1,)))
    with pytest.raises(GradcheckError, match=r"shape \(1,\)"):
        gradgradcheck(flat, _input(()))
    narrow = _sin_op(lambda xp, g, x: g * xp.cos(x) if xp is np else (g * xp.cos(x)).astype(gg.float32))
    with pytest.raises(GradcheckError, match="float32"):
        gradgradcheck(narrow, _input())


# ----------------------------------------------------------------------------- assert_close


def test_assert_close_passes_equal_values_of_one_shape_and_dtype():
    assert_close(gg.ones(3), np.ones(3, np.float32))
    assert_close(gg.tensor(2.0), 2.0)                   # a Python number has no dtype to compare
    assert_close(gg.arange(3), [0, 1, 2])
    assert_close(np.float64(1.0), 1.0 + 1e-9)          # within float64's default tolerance
    assert_close(gg.tensor([np.nan, 1.0]), [np.nan, 1.0], equal_nan=True)
    assert_close(gg.tensor([np.inf, -np.inf]), [np.inf, -np.inf])


@pytest.mark.parametrize("actual,expected,message", [
    (gg.ones(1), np.ones((), np.float32), r"shapes differ: actual \(1,\), expected \(\)"),
    (gg.ones(()), np.ones(1, np.float32), r"shapes differ: actual \(\), expected \(1,\)"),
    (gg.ones(3), 1.0, r"shapes differ: actual \(3,\), expected \(\)"),        # no broadcasting
    (gg.ones(2), np.ones(2), "dtypes differ: actual float32, expected float64"),
    (gg.arange(3), np.arange(3, dtype=np.int32), "dtypes differ: actual int64, expected int32"),
    (gg.tensor([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 3.0], np.float32),
     r"1 of 3 elements differ .*\nabsolute difference: 0.5 at \(1,\) \(actual 2.0, expected 2.5\)"),
    (gg.tensor([np.nan]), [np.nan], "1 of 1 elements differ"),
    (gg.arange(3), [0, 1, 3], r"rtol=0, atol=0"),                              # integers: exact
])
def test_assert_close_says_what_differs(actual, expected, message):
    with pytest.raises(AssertionError, match=message.replace(r"\nabsolute", r"\ngreatest absolute")):
        assert_close(actual, expected)


def test_assert_close_default_tolerances_follow_the_dtype():
    assert_close(gg.tensor([1.0]), np.array([1.0 + 1e-6], np.float32))             # float32: 1.3e-6
    with pytest.raises(AssertionError):
        assert_close(gg.tensor([1.0], dtype=gg.float64), np.array([1.0 + 1e-6]))  # float64: 1e-7
    with pytest.raises(AssertionError):
        assert_close(gg.tensor([1.0]), np.array([1.0 + 1e-6], np.float32), rtol=1e-7)  # atol is then 0
    assert_close(np.array([2 ** 53 + 1]), np.array([2 ** 53 + 1]))
    with pytest.raises(AssertionError):
        assert_close(np.array([2 ** 53 + 1]), np.array([2 ** 53]))                 # exact, not via float64


def test_assert_close_puts_msg_first():
    with pytest.raises(AssertionError, match="^step 3: shapes differ"):
        assert_close(gg.ones(2), gg.ones(3), msg="step 3")
    with pytest.raises(AssertionError, match=r"^shapes differ"):
        assert_close(gg.ones(2), gg.ones(3))
    with pytest.raises(AssertionError, match=r"^x: 1 of 2 elements differ .*\ngreatest absolute difference: "
                                             r"1 at \(1,\).*\ngreatest relative difference: 0.5 at \(1,\)"):
        assert_close(gg.tensor([1.0, 3.0]), np.array([1.0, 2.0], np.float32), msg="x")
    with pytest.raises(AssertionError, match=r"absolute difference: 1 \(actual"):   # a 0-d pair: no index
        assert_close(gg.tensor(3.0), np.float32(2.0))


def test_assert_close_tolerances_and_nans():
    assert_close(np.array([1.0]), np.array([1.0 + 1e-3]), atol=2e-3)           # giving atol alone...
    with pytest.raises(AssertionError, match="rtol=0, atol=0.001"):
        assert_close(np.array([100.0]), np.array([100.01]), atol=1e-3)         # ...makes rtol 0
    with pytest.raises(AssertionError, match="rtol=0.0001, atol=0"):
        assert_close(np.array([0.0]), np.array([1e-9]), rtol=1e-4)             # and rtol alone, atol 0
    assert_close(np.array([3]), np.array([3.0 + 2e-7]), check_dtype=False)  # int beside float: a tolerance
    with pytest.raises(AssertionError):
        assert_close(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), equal_nan=True)  # NaN on one side only
    with pytest.raises(AssertionError):
        assert_close(np.array([0.0, 1.0]), np.array([np.nan, 1.0]), equal_nan=True)
    assert_close(np.array([1 + 1j]), np.array([1 + 1j + 1e-9]))                # complex compared as complex
    with pytest.raises(AssertionError):
        assert_close(np.array([1 + 1j]), np.array([1 + 2j]))


def test_assert_close_refuses_torch_tensors(torch):
    with pytest.raises(TypeError, match=r"torch.Tensor; convert it explicitly"):
        assert_close(gg.ones(2), torch.ones(2))


def test_assert_close_refuses_what_it_cannot_compare():
    with pytest.raises(TypeError, match="expected is str"):
        assert_close(gg.ones(2), "ab")
    with pytest.raises(TypeError, match="ragged"):
        assert_close(gg.ones(2), [[1.0], [1.0, 2.0]])


def test_assert_close_checks_devices_and_reads_device_arrays_explicitly():
    if not gg.cuda.is_available():
        pytest.skip("needs a CUDA device or GPUGRAD_EMULATE_CUDA=1 (CI's step 3 runs it)")
    x = gg.ones(3, device="cuda")
    assert_close(x, gg.ones(3, device="cuda"))
    assert_close(x.data, gg.ones(3, device="cuda").data)                            # a CuPy array
    with pytest.raises(AssertionError, match="devices differ: actual on cuda:0, expected on cpu"):
        assert_close(x, np.ones(3, np.float32))
    assert_close(x, np.ones(3, np.float32), check_device=False)
