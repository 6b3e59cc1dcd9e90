"""Bad input gets a clear error: the op, the shapes or dtypes, and what to do."""

import pytest

import gpugrad as gg


def test_broadcast_failure_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes cannot be broadcast together.*\(3,\).*\(4,\)"):
        gg.ones(3) + gg.ones(4)
    with pytest.raises(ValueError, match=r"multiply: .*\(2, 3\).*\(2,\)"):
        gg.ones(2, 3, requires_grad=True) * gg.ones(2)


def test_matmul_inner_dimensions():
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: \(3, 4\) @ \(5, 2\)"):
        gg.ones(3, 4) @ gg.ones(5, 2)
    with pytest.raises(ValueError, match="0-d"):
        gg.matmul(gg.tensor(2.0), gg.ones(2))


def test_reshape_sizes():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        gg.ones(2, 3).reshape(4, 2)
    with pytest.raises(ValueError, match="only one dimension can be -1"):
        gg.ones(6).reshape(-1, -1)


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="sum: axis 2 is out of range for a tensor with 2 dimension"):
        gg.ones(2, 3).sum(axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        gg.ones(2, 3).sum(axis=(0, 0))
    with pytest.raises(ValueError, match="squeeze: cannot squeeze axis 1 of size 3"):
        gg.squeeze(gg.ones(2, 3), 1)          # NumPy's squeeze; Tensor.squeeze(1) leaves it, as PyTorch


def test_index_out_of_range():
    with pytest.raises(IndexError, match=r"getitem: index 5 is out of bounds.*\(4,\)"):
        gg.ones(4)[5]
    with pytest.raises(IndexError, match="integer or bool"):
        gg.ones(4)[gg.ones(2)]


def test_backward_errors():
    x = gg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(3,\).*gradient=gg.ones_like"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(2,\) but the output has shape \(3,\)"):
        (x * 2).backward(gradient=gg.ones(2))
    with pytest.raises(TypeError, match="gradient must be floating point"):
        (x * 2).backward(gradient=gg.ones(3, dtype=gg.int64))


def test_requires_grad_on_integers():
    with pytest.raises(TypeError, match=r"int64.*t.to\(gg.float32\)"):
        gg.arange(3).requires_grad_()


def test_numpy_of_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="detach"):
        gg.ones(2, requires_grad=True).numpy()


def test_item_of_many_elements():
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        gg.ones(2).item()


def test_unknown_dtype_and_device():
    with pytest.raises(TypeError, match="unknown dtype"):
        gg.ones(2, dtype="float128x")
    with pytest.raises(ValueError, match="unknown device"):
        gg.ones(2, device="tpu")


def test_cuda_without_a_device_says_why():
    # with no CuPy, or CuPy but no GPU/driver (as in CI), .to("cuda") explains itself
    if gg.cuda.is_emulated():
        pytest.skip("GPUGRAD_EMULATE_CUDA is set: 'cuda' is the CUDA emulator (test_cuda_api.py checks the "
                    "no-GPU errors in a process without it)")
    try:
        import cupy  # noqa: F401
        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a CUDA device is present")
    except Exception:
        pass
    with pytest.raises(RuntimeError, match="no CUDA device was found"):
        gg.ones(2).to("cuda")


def test_concatenate_and_stack_shapes():
    with pytest.raises(ValueError, match="concatenate: shapes"):
        gg.concatenate([gg.ones(2, 3), gg.ones(3, 2)])
    with pytest.raises(ValueError, match="stack: all tensors must have the same shape"):
        gg.stack([gg.ones(2), gg.ones(3)])


def test_dot_of_high_rank_points_to_matmul():
    with pytest.raises(ValueError, match="use matmul"):
        gg.dot(gg.ones(2, 3, 4), gg.ones(2, 4, 3))


# ----------------------------------------------------------------------------- creation: sizes, fill values

@pytest.mark.parametrize("make,name", [
    (lambda: gg.zeros(2**70), "zeros"), (lambda: gg.ones(3, 2**64), "ones"),
    (lambda: gg.full((2**63,), 1.0), "full"), (lambda: gg.eye(2**40), "eye"),
    (lambda: gg.arange(2**62), "arange"), (lambda: gg.randn(2**62), "randn"),
])
def test_a_size_no_array_can_have_names_the_call_and_the_size(make, name):
    with pytest.raises(ValueError, match=rf"^{name}: .*(size|dimension).*\(\d+"):
        make()


@pytest.mark.parametrize("make,name,shape", [
    (lambda: gg.eye(10**6), "eye", r"\(1000000, 1000000\) of float32 \(3\.64 TiB\)"),
    (lambda: gg.zeros(2**48), "zeros", r"\(281474976710656,\) of float32 \(1\.00 PiB\)"),
    (lambda: gg.ones((2**29, 2**30), dtype=gg.float64), "ones", r"\(536870912, 1073741824\) of float64"),
    (lambda: gg.full((2**24, 2**24), 7), "full", r"\(16777216, 16777216\) of int64"),
    (lambda: gg.rand(2**48), "rand", r"\(281474976710656,\) of float32"),
    (lambda: gg.randint(0, 2, (2**48,)), "randint", r"\(281474976710656,\) of int64"),
])
def test_a_size_this_machine_cannot_hold_is_a_memory_error_naming_the_call(make, name, shape):
    with pytest.raises(MemoryError, match=rf"^{name}: not enough memory for size {shape}"):
        make()


@pytest.mark.parametrize("value", ["a", None, [1, 2], 1j, object()])
def test_full_refuses_a_fill_value_that_is_not_a_real_number(value):
    with pytest.raises(TypeError, match=r"^full: fill_value must be a real number .* got "):
        gg.full((2,), value)
    with pytest.raises(TypeError, match=r"^full_like: fill_value must be a real number"):
        gg.full_like(gg.ones(2), value)


def test_full_refuses_a_fill_value_its_dtype_cannot_hold():
    with pytest.raises(OverflowError, match=r"^full: fill_value 1\.26765e\+30 does not fit in int64"):
        gg.full((2,), 2**100)
    with pytest.raises(OverflowError, match=r"^full: fill_value 2147483648 does not fit in int32"):
        gg.full((2,), 2**31, dtype=gg.int32)
    with pytest.raises(OverflowError, match=r"^full: fill_value 1e\+300 is beyond the range of float32"):
        gg.full((2,), 1e300)
    with pytest.raises(OverflowError, match=r"^full: fill_value 70000 is beyond the range of float16"):
        gg.full((2,), 70000, dtype=gg.float16)
    with pytest.raises(ValueError, match=r"^full: fill_value nan cannot be stored in int64"):
        gg.full((2,), float("nan"), dtype=gg.int64)
    with pytest.raises(ValueError, match=r"one-element Tensor, got a Tensor of shape \(2,\)"):
        gg.full((2,), gg.ones(2))


def test_full_keeps_what_pytorch_accepts():
    for value, dtype, expected, kind in [
            (2.7, gg.int64, [2, 2], "i"), (True, None, [True, True], "b"), (3, None, [3, 3], "i"),
            (float("inf"), None, [float("inf")] * 2, "f"), (gg.tensor(2.5), None, [2.5, 2.5], "f"),
            (-1, gg.bool, [True, True], "b")]:
        t = gg.full((2,), value, dtype=dtype)
        assert t.shape == (2,) and t.dtype.kind == kind and t.tolist() == expected


@pytest.mark.parametrize("args,error,message", [
    ((2.5,), TypeError, r"eye: n must be an int, got 2\.5 \(float\)"),
    ((3, "4"), TypeError, r"eye: m must be an int, got '4' \(str\)"),
    ((-1,), ValueError, "eye: n must be >= 0, got -1"),
])
def test_eye_arguments(args, error, message):
    with pytest.raises(error, match=f"^{message}"):
        gg.eye(*args)
    assert gg.eye(2, 3).shape == (2, 3) and gg.eye(0).shape == (0, 0)


# ----------------------------------------------------------------------------- nn and optim arguments

@pytest.mark.parametrize("args,error,message", [
    ((2.5, 3), TypeError, r"Linear: in_features must be an int, got 2\.5 \(float\)"),
    ((2, "3"), TypeError, r"Linear: out_features must be an int, got '3' \(str\)"),
    ((True, 3), TypeError, r"Linear: in_features must be an int, got True \(bool\)"),
    ((-1, 3), ValueError, r"Linear: in_features must be >= 0, got -1"),
])
def test_linear_arguments(args, error, message):
    with pytest.raises(error, match=f"^{message}"):
        gg.nn.Linear(*args)


@pytest.mark.parametrize("opt", ["SGD", "Adam", "AdamW"])
def test_an_optimizer_given_the_parameters_method_says_to_call_it(opt):
    model = gg.nn.Linear(2, 3)
    make = getattr(gg.optim, opt)
    with pytest.raises(TypeError, match=rf"^{opt}: params is the method Linear\.parameters, not what it "
                                        rf"returns; call it: {opt}\(model\.parameters\(\), \.\.\.\)"):
        make(model.parameters, lr=0.1)
    with pytest.raises(TypeError, match=rf"^{opt}: params is a module \(Linear\), not its parameters"):
        make(model, lr=0.1)
    with pytest.raises(TypeError, match=rf"^{opt}: params must be an iterable .* got a dict"):
        make(dict(model.named_parameters()), lr=0.1)
    with pytest.raises(TypeError, match=r"looks like named_parameters\(\): pass model\.parameters\(\)"):
        make(model.named_parameters(), lr=0.1)
    with pytest.raises(TypeError, match=rf"^{opt}: params must be an iterable of Tensors .*, got int;"):
        make(3, lr=0.1)
    with pytest.raises(TypeError, match=rf"^{opt}: param group 0's params is the method Linear\.parameters"):
        make([{"params": model.parameters}], lr=0.1)


# ----------------------------------------------------------------------------- transforms

def test_jvp_tangents_must_match_their_primals():
    x = gg.ones(3)

    def double(v):
        return v * 2

    for tangent in (gg.ones(4), gg.ones(1), 1.0):
        with pytest.raises(ValueError, match=r"^jvp\(double\): tangent 0 has shape \(\d*,?\) but its primal "
                                             r"has shape \(3,\)"):
            gg.jvp(double, (x,), (tangent,))
    with pytest.raises(TypeError, match=r"^jvp\(double\): tangent 0 is float64 but its primal is float32"):
        gg.jvp(double, (x,), (gg.ones(3, dtype=gg.float64),))
    with pytest.raises(TypeError, match=r"tangent 0 is int64 but its primal is float32"):
        gg.jvp(double, (x,), (gg.arange(3),))
    with pytest.raises(ValueError, match=r"^jvp\(<lambda>\): tangent 0 has another structure than primal 0"):
        gg.jvp(lambda d: d["a"] * 2, ({"a": x},), ([x],))
    with pytest.raises(ValueError, match=r"tangent 1, leaf 1, has shape \(2,\) but its primal has shape"):
        gg.jvp(lambda a, b: a * b[0] * b[1], (x, [x, x]), (x, [x, gg.ones(2)]))
    out, tangent = gg.jvp(double, (2.0,), (1.5,))            # numbers are converted, as primals are
    assert tangent.item() == 3.0 and tangent.dtype == gg.float32 and tangent.shape == ()


@pytest.mark.parametrize("args", [(float("inf"),), (0, float("nan")), (1.0, float("-inf"), -1.0)])
def test_arange_of_an_infinite_range(args):
    with pytest.raises(ValueError, match=r"^arange: cannot make a range from .* give finite numbers"):
        gg.arange(*args)
    assert gg.arange(0, 1, float("inf")).tolist() == [0.0]          # one step past the end, as NumPy


def test_transform_errors_name_a_registry_op_by_its_name():
    with pytest.raises(ValueError, match=r"^jvp\(exp\): tangent 0 has shape \(2,\)"):
        gg.jvp(gg.exp, (gg.ones(3),), (gg.ones(2),))
    with pytest.raises(TypeError, match=r"^value_and_grad\(tanh\): gradients are defined only for scalar"):
        gg.grad(gg.tanh)(gg.ones(3))
    assert gg.grad(gg.exp).__name__ == "grad(exp)"
