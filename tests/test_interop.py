"""DLPack both ways (NumPy, PyTorch, JAX, CuPy) without copies, torch state dicts into gpugrad models."""

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad import backend, interop
from gpugrad.testing import assert_close


def _aligned(n, align=64):
    """A float32 NumPy array of n elements whose buffer starts on an ``align``-byte boundary."""
    raw = np.zeros(n + align // 4, dtype=np.float32)
    start = (-raw.ctypes.data % align) // 4
    return raw[start:start + n]


# ----------------------------------------------------------------------------- NumPy
def test_numpy_both_ways_share_memory():
    t = gg.arange(6.0).reshape(2, 3)
    a = np.from_dlpack(t)
    assert np.shares_memory(a, t.data) and a.shape == (2, 3) and a.dtype == np.float32
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0

    src = np.arange(5, dtype=np.int32)
    back = gg.from_dlpack(src)
    assert isinstance(back, gg.Tensor) and back.data is not src and np.shares_memory(back.data, src)
    assert back.dtype == np.int32 and back.device == "cpu" and not back.requires_grad


def test_views_and_0d_tensors_keep_strides_and_shape():
    t = gg.arange(12.0).reshape(3, 4)[:, ::2]
    a = np.from_dlpack(t)
    assert a.shape == (3, 2) and a.strides == t.data.strides and np.shares_memory(a, t.data)
    s = gg.tensor(2.5)
    assert np.from_dlpack(s).shape == () and gg.from_dlpack(np.array(1.5)).shape == ()


def test_dlpack_device_and_copy_and_device_arguments():
    t = gg.ones(3)
    assert t.__dlpack_device__() == (1, 0)
    src = np.ones(3)
    assert not np.shares_memory(gg.from_dlpack(src, copy=True).data, src)
    assert np.shares_memory(gg.from_dlpack(src, copy=False).data, src)
    assert np.shares_memory(gg.from_dlpack(src, device="cpu").data, src)
    shared = gg.from_dlpack(t)
    assert shared.data is t.data


def test_a_tensor_that_requires_grad_is_not_exported():
    w = gg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad.*t.detach"):
        np.from_dlpack(w)
    assert np.shares_memory(np.from_dlpack(w.detach()), w.data)


def test_objects_without_dlpack_and_foreign_devices_are_refused():
    with pytest.raises(TypeError, match="from_dlpack: a builtins.list does not implement __dlpack__"):
        gg.from_dlpack([1, 2])

    class OnMetal:
        def __dlpack__(self, **kw):
            raise AssertionError("never asked for its capsule")

        def __dlpack_device__(self):
            return (8, 0)

    with pytest.raises(ValueError, match="lives on a Metal device.*move it to the CPU"):
        gg.from_dlpack(OnMetal())


def test_a_cuda_array_is_imported_through_cupy(monkeypatch):
    """No GPU here: a stand-in CuPy module shows that CUDA DLPack arrays go to cupy.from_dlpack."""
    seen = []

    class FakeCupy:
        @staticmethod
        def from_dlpack(x):
            seen.append(x)
            return np.zeros(2)          # stands in for the CuPy array

    class OnGpu:
        def __dlpack__(self, **kw):
            raise AssertionError("cupy.from_dlpack asks for the capsule itself")

        def __dlpack_device__(self):
            return (interop.KDL_CUDA, 1)

    monkeypatch.setattr(backend, "load_cupy", lambda: FakeCupy)
    producer = OnGpu()
    t = gg.from_dlpack(producer)
    assert seen == [producer] and t.shape == (2,)


def test_without_a_gpu_a_cuda_array_says_why():
    if backend.cuda_unavailable_reason() is None:
        pytest.skip("a GPU is usable here")

    class OnGpu:
        def __dlpack__(self, **kw):
            raise AssertionError

        def __dlpack_device__(self):
            return (interop.KDL_CUDA, 0)

    with pytest.raises(RuntimeError, match="CUDA"):
        gg.from_dlpack(OnGpu())


# ----------------------------------------------------------------------------- PyTorch
def test_torch_both_ways_share_memory():
    torch = optional.need("torch")
    t = gg.arange(6.0).reshape(2, 3)
    for convert in (torch.from_dlpack, torch.as_tensor, torch.asarray):
        x = convert(t)
        assert x.data_ptr() == t.data.ctypes.data and tuple(x.shape) == (2, 3) and x.dtype == torch.float32
    copied = torch.tensor(t)
    assert copied.data_ptr() != t.data.ctypes.data and copied.tolist() == t.tolist()

    src = torch.arange(4.0)
    back = gg.from_dlpack(src)
    assert back.data.ctypes.data == src.data_ptr()
    src[1] = 7.0
    assert back[1].item() == 7.0


def test_torch_tensors_that_cannot_be_shared_say_what_to_do():
    torch = optional.need("torch")
    with pytest.raises(BufferError, match="from_dlpack: torch.Tensor .*detach"):
        gg.from_dlpack(torch.ones(2, requires_grad=True))
    with pytest.raises(RuntimeError, match="dtype.*t.float()"):
        gg.from_dlpack(torch.ones(2, dtype=torch.bfloat16))


def _twins(torch):
    ref = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    return ref, gg.nn.MLP([4, 6, 2], activation="tanh")


def test_load_state_dict_takes_a_torch_state_dict():
    torch = optional.need("torch")
    ref, model = _twins(torch)
    model.load_state_dict(ref.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert_close(model(gg.tensor(x)).detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    model.load_state_dict(ref.state_dict(keep_vars=True))          # Parameters that require grad
    model.load_state_dict(ref.double().state_dict())               # float64 into float32: cast
    ref.load_state_dict({k: torch.from_dlpack(v.detach()) for k, v in model.state_dict().items()})


def test_a_torch_bfloat16_state_dict_is_refused_whole():
    torch = optional.need("torch")
    ref, model = _twins(torch)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r'value for "2.weight" .*cannot be converted.*t.float\(\)'):
        model.load_state_dict({**ref.state_dict(), "2.weight": ref[2].weight.detach().bfloat16()})
    for p, b in zip(model.parameters(), before):
        assert_close(p.detach().numpy(), b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- JAX
def test_jax_both_ways():
    optional.need("jax")
    import jax.numpy as jnp
    j = jnp.arange(6.0)
    t = gg.from_dlpack(j)
    assert t.data.ctypes.data == j.unsafe_buffer_pointer() and t.tolist() == list(range(6))
    # XLA keeps buffers 64-byte aligned: an aligned float32 tensor is shared, others are copied
    a = gg.from_dlpack(_aligned(8))
    back = jnp.from_dlpack(a)
    assert back.unsafe_buffer_pointer() == a.data.ctypes.data and back.shape == (8,)
    model = gg.nn.Linear(2, 2)
    model.load_state_dict({"weight": jnp.eye(2, dtype=jnp.float32), "bias": jnp.zeros(2, dtype=jnp.float32)})
    assert model.weight.tolist() == [[1.0, 0.0], [0.0, 1.0]]


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_cupy_shares_memory_with_cuda_tensors():
    if backend.cuda_unavailable_reason() is not None:
        pytest.skip(backend.cuda_unavailable_reason())
    cp = backend.load_cupy()
    c = cp.arange(4.0)
    t = gg.from_dlpack(c)
    assert t.device.type == "cuda" and t.data.data.ptr == c.data.ptr
    back = cp.from_dlpack(gg.ones(3, device="cuda"))
    assert back.shape == (3,)


@pytest.mark.cuda
def test_torch_cuda_shares_memory_with_cuda_tensors():
    if backend.cuda_unavailable_reason() is not None:
        pytest.skip(backend.cuda_unavailable_reason())
    if gg.cuda.is_emulated():
        pytest.skip("the CUDA emulator's device memory is host memory: PyTorch's CUDA memory cannot be "
                    "shared with it (tests/test_cuda_emulator.py checks that the emulator refuses foreign "
                    "capsules)")
    torch = optional.need("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA")
    x = torch.arange(3.0, device="cuda")
    assert gg.from_dlpack(x).data.data.ptr == x.data_ptr()
    y = gg.arange(3.0, device="cuda")
    assert torch.from_dlpack(y).data_ptr() == y.data.data.ptr


# ----------------------------------------------------------------------------- the array API namespace
def _standardize(x):
    """Code written against the array API standard only: it runs on gpugrad tensors, on the tape."""
    xp = x.__array_namespace__()
    mean = xp.mean(x, axis=0, keepdims=True)
    return xp.concat([(x - mean) / xp.std(x, axis=0, correction=1), xp.permute_dims(x, (0, 1))], axis=1)


def test_array_namespace_runs_standard_code_differentiably():
    import gpugrad.array_api as xp  # noqa: PLC0415

    x = gg.tensor(np.arange(12.0).reshape(4, 3) ** 1.5, requires_grad=True)
    assert x.__array_namespace__() is xp and x.__array_namespace__(api_version="2023.12") is xp
    out = _standardize(x)
    assert out.shape == (4, 6) and out.requires_grad
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == (4, 3)
    expected = np.concatenate([(x.data - x.data.mean(0)) / x.data.std(0, ddof=1), x.data], axis=1)
    assert_close(out.detach().numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="not '1999.01'"):
        x.__array_namespace__(api_version="1999.01")


def test_array_namespace_functions_without_a_gradient_refuse_to_cut_the_graph():
    import gpugrad.array_api as xp  # noqa: PLC0415

    x = gg.tensor([2.5, -1.5, 0.5])
    assert xp.floor(x).tolist() == [2.0, -2.0, 0.0] and isinstance(xp.sort(x), gg.Tensor)
    assert xp.sort(x).tolist() == [-1.5, 0.5, 2.5]
    assert sorted(xp.unique_counts(gg.tensor([1, 1, 2])).counts.tolist()) == [1, 2]
    w = gg.tensor([2.5, -1.5], requires_grad=True)
    with pytest.raises(RuntimeError, match="hypot: gpugrad has no gradient for hypot; call it on t.detach"):
        xp.hypot(w, w)
    with gg.no_grad():
        assert_close(xp.hypot(w, w), np.array([2.5 * 2 ** 0.5, 1.5 * 2 ** 0.5], np.float32))
    assert xp.floor is gg.floor          # where gpugrad has the op, the namespace is gpugrad's own


def test_array_namespace_creation_dtypes_and_info():
    import gpugrad.array_api as xp  # noqa: PLC0415

    a = np.arange(3.0)
    t = xp.asarray(a)
    assert np.shares_memory(t.data, a) and xp.asarray(t) is t
    assert not np.shares_memory(xp.asarray(a, copy=True).data, a)
    with pytest.raises(ValueError, match="copy=False"):
        xp.asarray(a, dtype=xp.float32, copy=False)
    assert xp.asarray([1.0, 2.0]).dtype == xp.float32 and xp.asarray([1, 2]).dtype == xp.int64
    assert xp.isdtype(xp.float32, "real floating") and not xp.isdtype(xp.int8, ("bool", "real floating"))
    assert xp.result_type(t, xp.float32) == xp.float64
    assert xp.finfo(xp.float32).eps == np.finfo(np.float32).eps
    info = xp.__array_namespace_info__()
    assert "complex64" not in info.dtypes() and info.dtypes(kind="integral")["uint8"] == xp.uint8
    assert info.default_dtypes()["real floating"] == xp.float32 and gg.device("cpu") in info.devices()
    assert xp.astype(xp.ones(2), xp.int32).dtype == xp.int32


def test_array_namespace_follows_the_standard_where_gpugrad_differs():
    import gpugrad.array_api as xp  # noqa: PLC0415

    x = gg.tensor([[3.0, 1.0, 2.0]])
    assert xp.sort(x, descending=True).tolist() == [[3.0, 2.0, 1.0]]
    assert xp.argsort(gg.tensor([1, 3, 3, 2]), descending=True).tolist() == [1, 2, 3, 0]   # stable
    assert xp.expand_dims(x, 2).shape == (1, 3, 1) and xp.expand_dims(x, -3).shape == (1, 1, 3)
    assert xp.sum(gg.tensor([200, 100], dtype="int32")).dtype == xp.int64
    assert xp.sum(gg.tensor([1.5, 2.0]), dtype=xp.float64).dtype == xp.float64
    assert xp.concat([gg.tensor(1.0), x], axis=None).tolist() == [1.0, 3.0, 1.0, 2.0]
    assert xp.clip(x, max=2.0).tolist() == [[2.0, 1.0, 2.0]] and xp.clip(x) is not x
    assert xp.eye(2, 3, k=1).tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert isinstance(xp.finfo(xp.float32).eps, float) and isinstance(xp.meshgrid(x, x), list)
    with pytest.raises(ValueError, match="vecdot"):
        xp.vecdot(gg.ones(3), gg.ones(4))
    w = gg.tensor([1.0, 2.0], requires_grad=True)
    xp.sum(xp.clip(xp.expand_dims(w, 0), 0.0, 1.5)).backward()      # the differentiable ones stay so
    assert w.grad.tolist() == [1.0, 0.0]
