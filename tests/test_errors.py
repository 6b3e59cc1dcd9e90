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
        gg.ones(2, 3).squeeze(1)


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
