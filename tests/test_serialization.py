"""save / load on safetensors: round trips, checksums, atomic writes and modes, hostile and foreign files."""

import json
import os
import pickle
import stat
import struct
import zipfile
import zlib

import numpy as np
import optional
import pytest
import safetensors.numpy as safetensors_numpy  # a dependency of gpugrad: never skipped

import gpugrad as gg
import gpugrad.serialization as serialization
from gpugrad.serialization import load, save
from gpugrad.testing import assert_close


def _same(a, b):
    """Structural equality with exact array values and dtypes."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, gg.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert_close(a.numpy(), b.numpy(), rtol=0, atol=0)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=") and a.shape == b.shape
        assert_close(a, b, rtol=0, atol=0, check_dtype=False)      # the byte order may differ
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def test_round_trip_nested_structures_and_dtypes(tmp_path):
    obj = {
        "weights": {
            "f32": gg.randn(3, 4),
            "f64": gg.randn(2, dtype=gg.float64),
            "f16": gg.tensor([1.5, -2.25, 65504.0], dtype=gg.float16),
            "i64": gg.tensor([2**62, -3, 0], dtype=gg.int64),
            "i32": gg.arange(5, dtype=gg.int32),
            "bool": gg.tensor([True, False, True]),
            "scalar": gg.tensor(3.5),
            "empty": gg.zeros(0, 3),
        },
        "arrays": [np.arange(6, dtype=np.uint8).reshape(2, 3), np.asfortranarray(np.eye(3) + np.arange(3)),
                   np.float32(2.5), np.arange(10.0)[::3], np.array([1 + 2j, -3j]),
                   np.array([[1 - 1j]], dtype=np.complex64), np.array(2 + 1j), np.arange(3, dtype=">i4"),
                   np.int16(-7)],
        "meta": ("name", 3, -1.25, True, None, float("inf"), float("-inf"), float("nan"), 0.1, 10**30,
                 -2**70),
        "nested": [[], {}, (), {"a": [1, (2, {"b": None})]}, [{"tuple": 1, "dict": [2], "tensor": "x"}]],
        "unicode key ✓": "välue",
        "__metadata__": gg.ones(2),                  # the name safetensors reserves for its metadata
        "a.b": gg.zeros(1), "a": {"b": gg.ones(1)},  # two paths that join to the same name
    }
    path = tmp_path / "obj.safetensors"
    save(obj, path)
    back = load(path)
    _same(obj, back)
    assert back["weights"]["scalar"].shape == ()
    assert not back["weights"]["f32"].requires_grad and back["weights"]["f32"].is_leaf
    assert isinstance(back["arrays"][0], np.ndarray) and isinstance(back["meta"], tuple)
    assert isinstance(back["arrays"][2], np.float32) and isinstance(back["arrays"][8], np.int16)
    assert back["meta"][8] == 0.1                    # floats keep every bit
    assert back["weights"]["f32"].data.flags.writeable


@pytest.mark.parametrize("obj", [gg.ones(2, 2), 3, None, "text", [], {}, np.float64(1.5)])
def test_round_trip_of_a_bare_value(tmp_path, obj):
    save(obj, tmp_path / "v")
    _same(obj, load(tmp_path / "v"))


def test_the_file_is_plain_safetensors_with_paths_as_names(tmp_path):
    model = gg.nn.MLP([3, 4, 2])
    path = tmp_path / "ckpt.safetensors"
    save({"model": model.state_dict(), "epoch": 7, "c": np.array([1 + 2j])}, path)
    flat = safetensors_numpy.load_file(path)
    assert sorted(flat) == ["c", "model.0.bias", "model.0.weight", "model.2.bias", "model.2.weight"]
    assert_close(flat["model.0.weight"], model[0].weight.detach().numpy(), rtol=0, atol=0)
    assert_close(flat["c"], [[1.0, 2.0]], rtol=0, atol=0)           # complex: (real, imag) pairs
    import safetensors  # noqa: PLC0415

    with safetensors.safe_open(path, framework="np") as f:
        meta = f.metadata()
    assert meta["gpugrad.version"] == "2" and '"epoch", 7' in meta["gpugrad.structure"]


def test_a_file_from_another_tool_loads_as_a_flat_dict(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors_numpy.save_file({"w": np.ones((2, 3), np.float32), "b": np.arange(3)}, path,
                                metadata={"format": "pt"})
    back = load(path)
    assert isinstance(back, dict) and set(back) == {"w", "b"}
    assert isinstance(back["w"], gg.Tensor) and back["w"].shape == (2, 3) and back["b"].dtype == np.int64


def test_parameters_requiring_grad_save_as_plain_tensors(tmp_path):
    w = gg.randn(2, 2, requires_grad=True)
    save({"w": w}, str(tmp_path / "w.gg"))
    back = load(str(tmp_path / "w.gg"))["w"]
    assert not back.requires_grad
    assert_close(back.data, w.data, rtol=0, atol=0)


def test_unsupported_values_name_their_path(tmp_path):
    path = tmp_path / "x.gg"
    with pytest.raises(TypeError, match=r"obj\['a'\]\['1'\] has a key 3 of type int"):
        save({"a": [1, {3: 4}]}, path)
    with pytest.raises(TypeError, match=r"obj\['f'\] is a builtins.set"):
        save({"f": {1, 2}}, path)
    with pytest.raises(TypeError, match=r"obj\['0'\] is an array of dtype object"):
        save([np.array([{}, 1], dtype=object)], path)
    with pytest.raises(TypeError, match="dtype <U1"):
        save([np.array(["a"])], path)
    cyclic = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="contains itself"):
        save(cyclic, path)
    deep = []
    for _ in range(serialization.MAX_DEPTH):
        deep = [deep]
    with pytest.raises(ValueError, match="nested 64 containers deep"):
        save(deep, path)                                 # 65 levels, the empty list innermost
    assert os.listdir(tmp_path) == []                # nothing was written


def test_overwrite_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.gg"
    save({"v": gg.ones(3)}, path)
    original = path.read_bytes()

    def failing(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors_numpy, "save_file", failing)
    with pytest.raises(OSError, match="simulated"):
        save({"a": gg.zeros(100)}, path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["ckpt.gg"]       # the temp file is gone
    monkeypatch.undo()
    assert_close(load(path)["v"], np.ones(3, np.float32), rtol=0, atol=0)


def test_fsync_failure_also_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.gg"
    save([1, 2], path)

    def boom(fd):
        raise OSError("fsync failed (simulated)")

    monkeypatch.setattr(serialization.os, "fsync", boom)
    with pytest.raises(OSError, match="fsync failed"):
        save([3], path)
    monkeypatch.undo()
    assert load(path) == [1, 2] and os.listdir(tmp_path) == ["ckpt.gg"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_new_file_gets_the_umask_mode_and_an_overwrite_keeps_the_old_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        save([1], tmp_path / "new")
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o666 & ~umask
        for mode in (0o644, 0o640, 0o600):
            os.chmod(tmp_path / "new", mode)
            save([2], tmp_path / "new")
            assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == mode
    finally:
        os.umask(old)


def test_missing_file_and_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.gg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(1, tmp_path / "no_dir" / "x.gg")


# ----------------------------------------------------------------------------- corrupt files
def _small_checkpoint(path):
    save({"w": gg.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": gg.tensor([0.5, -1.0]), "step": 3,
          "opt": {"lr": 0.1, "betas": (0.9, 0.999)}}, path)
    return path.read_bytes()


@pytest.mark.parametrize("keep", [0.0, 0.05, 0.3, 0.7, 0.95])
def test_truncated_file_is_rejected(tmp_path, keep):
    path = tmp_path / "t.gg"
    save({"w": gg.randn(64, 64), "b": gg.randn(64)}, path)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(ValueError, match=rf"{path}"):
        load(path)


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_is_an_error_naming_the_path(tmp_path, flip):
    """A changed byte anywhere (size, header, names, shapes, structure, data) never loads."""
    path = tmp_path / "c.gg"
    blob = _small_checkpoint(path)
    assert len(blob) > 300
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= flip
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError) as info:
            load(path)
        assert str(path) in str(info.value), (i, info.value)


def _raw(path, header, data=b""):
    """A safetensors file written byte by byte: the 8-byte size, the JSON header, the data."""
    text = header if isinstance(header, str) else json.dumps(header)
    path.write_bytes(struct.pack("<Q", len(text.encode())) + text.encode() + data)
    return path


def _gpugrad_raw(path, structure, tensors, checksums=None):
    """A file with gpugrad metadata whose digest is right, so loading reaches the structure."""
    arrays = {name: np.asarray(a) for name, a in tensors.items()}
    if checksums is None:
        checksums = json.dumps({name: zlib.crc32(a) for name, a in arrays.items()})
    meta = {"gpugrad.version": "2", "gpugrad.structure": structure, "gpugrad.checksums": checksums,
            "gpugrad.digest": serialization._digest(structure, checksums, arrays)}
    safetensors_numpy.save_file(arrays, path, metadata=meta)
    return path


def _f32(*shape_and_offsets):
    *shape, begin, end = shape_and_offsets
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


HOSTILE = {
    "2**40 elements claimed": lambda p: _raw(p, {"a": _f32(2**40, 0, 2**42)}, b"\0" * 8),
    "shape overflowing 64 bits": lambda p: _raw(p, {"a": _f32(2**62, 2**62, 0, 0)}),
    "a header size of 2**40": lambda p: p.write_bytes(struct.pack("<Q", 2**40) + b"{}"),
    "a header size past the end": lambda p: p.write_bytes(struct.pack("<Q", 100) + b"{}"),
    "header not JSON": lambda p: _raw(p, "{not json}"),
    "header a list": lambda p: _raw(p, '{"a": [1, 2]}'),
    "header nested 100000 deep": lambda p: _raw(p, '{"a": ' + "[" * 100000 + "]" * 100000 + "}"),
    "duplicate tensor names": lambda p: _raw(
        p, '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
           '"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8),
    "duplicate metadata keys": lambda p: _raw(
        p, '{"__metadata__": {"gpugrad.version": "2", "gpugrad.version": "2"}}'),
    "metadata not strings": lambda p: _raw(p, {"__metadata__": {"gpugrad.version": 2}}),
    "bfloat16 tensor": lambda p: _raw(p, {"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
                                      b"\0" * 4),
    "float8 tensor": lambda p: _raw(p, {"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}},
                                    b"\0" * 2),
    "overlapping tensors": lambda p: _raw(p, {"a": _f32(2, 0, 8), "b": _f32(2, 0, 8)}, b"\0" * 8),
    "only part of the gpugrad metadata": lambda p: _raw(p, {"__metadata__": {"gpugrad.structure": "null"}}),
    "structure not JSON": lambda p: _gpugrad_raw(p, "{[", {}),
    "structure nested 100000 deep": lambda p: _gpugrad_raw(p, "[" * 100000 + "]" * 100000, {}),
    "structure nested past the cap": lambda p: _gpugrad_raw(p, "[" * 65 + "]" * 65, {}),
    "structure with a duplicate JSON name": lambda p: _gpugrad_raw(p, '{"tuple": [], "tuple": []}', {}),
    "structure with a duplicate dict key": lambda p: _gpugrad_raw(p, '{"dict": [["k", 1], ["k", 2]]}', {}),
    "structure with a malformed dict": lambda p: _gpugrad_raw(p, '{"dict": [["k"]]}', {}),
    "structure with an unknown kind": lambda p: _gpugrad_raw(p, '{"pickle": "os.system"}', {}),
    "tensor used twice": lambda p: _gpugrad_raw(p, '[{"tensor": "a"}, {"tensor": "a"}]', {"a": np.ones(2)}),
    "tensor missing": lambda p: _gpugrad_raw(p, '{"tensor": "b"}', {"a": np.ones(2)}),
    "tensor not in the structure": lambda p: _gpugrad_raw(p, "[]", {"a": np.ones(2)}),
    "complex flag on a plain tensor": lambda p: _gpugrad_raw(p, '{"array": "a", "complex": true}',
                                                             {"a": np.ones(3)}),
    "checksums not listing the tensors": lambda p: _gpugrad_raw(p, '{"tensor": "a"}', {"a": np.ones(2)},
                                                                "{}"),
    "checksums not JSON": lambda p: _gpugrad_raw(p, '{"tensor": "a"}', {"a": np.ones(2)}, "{"),
    "checksums with a duplicate": lambda p: _gpugrad_raw(p, '{"tensor": "a"}', {"a": np.ones(2)},
                                                         '{"a": 1, "a": 1}'),
    "wrong tensor checksum": lambda p: _gpugrad_raw(p, '{"tensor": "a"}', {"a": np.ones(2)}, '{"a": 1}'),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_files_raise_one_error_type_naming_the_path(tmp_path, case):
    path = tmp_path / "hostile.safetensors"
    HOSTILE[case](path)
    with pytest.raises(ValueError) as info:          # never MemoryError, RecursionError, KeyError...
        load(path)
    assert type(info.value) is ValueError and str(path) in str(info.value)


def test_a_header_over_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.safetensors"
    save({"w": gg.ones(3)}, path)
    monkeypatch.setattr(serialization, "MAX_HEADER", 64)
    with pytest.raises(ValueError, match="capped at 64"):
        load(path)


def test_format_version_mismatch(tmp_path):
    path = tmp_path / "future.safetensors"
    safetensors_numpy.save_file({}, path, metadata={k: "99" for k in serialization._KEYS})
    with pytest.raises(ValueError, match="version '99'.*reads version 2; upgrade gpugrad"):
        load(path)


# ----------------------------------------------------------------------------- foreign formats
class Boom:
    """Unpickling this creates the directory ``marker``: proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_file_is_rejected_and_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"a": Boom(marker)}))

    def no_unpickling(*a, **k):
        raise AssertionError("load must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(ValueError, match="looks like a pickle"):
        load(path)
    assert not marker.exists()


def test_foreign_files_are_rejected(tmp_path):
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.ones(3))
    with pytest.raises(ValueError, match=r"arrays\.npz is not a gpugrad .* a zip archive \(a NumPy .npz"):
        load(npz)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is text\n")
    with pytest.raises(ValueError, match="notes.txt is not a gpugrad"):
        load(text)
    npy = tmp_path / "a.npy"
    np.save(npy, np.ones(2))
    with pytest.raises(ValueError, match="bare .npy"):
        load(npy)
    empty = tmp_path / "empty.gg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load(empty)


def test_an_old_zip_checkpoint_says_how_to_convert_it(tmp_path):
    path = tmp_path / "checkpoint.gg"                # the layout gpugrad 0.1 wrote
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("gpugrad.json", json.dumps({"format": "gpugrad", "version": 1, "root": {"type": "none"}}))
    with pytest.raises(ValueError, match="gpugrad 0.1's zip format.*Old checkpoints"):
        load(path)


def test_torch_checkpoint_is_rejected(tmp_path):
    torch = optional.need("torch")
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="PyTorch checkpoint.*safetensors.torch.save_file"):
        load(path)


def _twin_models(torch):
    """The same MLP in PyTorch and gpugrad (same parameter names), with different weights."""
    ref = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return ref, gg.nn.MLP([5, 8, 3])


def test_a_torch_state_dict_saved_with_safetensors_loads_into_gpugrad_and_back(tmp_path):
    torch = optional.need("torch")
    import safetensors.torch as safetensors_torch
    ref, model = _twin_models(torch)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    safetensors_torch.save_file(ref.state_dict(), tmp_path / "torch.safetensors")
    model.load_state_dict(load(tmp_path / "torch.safetensors"))
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert_close(model(gg.tensor(x)).detach().numpy(), expected, rtol=1e-6, atol=1e-6)

    back, _ = _twin_models(torch)                    # and back: gpugrad's file into a fresh torch model
    save(model.state_dict(), tmp_path / "gg.safetensors")
    back.load_state_dict(safetensors_torch.load_file(tmp_path / "gg.safetensors"))
    with torch.no_grad():
        assert_close(back(torch.from_numpy(x)).numpy(), expected, rtol=0, atol=0)


def test_load_to_a_device_argument(tmp_path):
    path = tmp_path / "d.gg"
    save({"t": gg.ones(2)}, path)
    assert load(path, device="cpu")["t"].device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        load(path, device="tpu")


@pytest.mark.cuda
def test_cuda_tensors_round_trip(tmp_path):
    try:
        t = gg.randn(3, 2).to("cuda")
    except RuntimeError:
        pytest.skip("no CUDA device")
    path = tmp_path / "gpu.gg"
    save({"t": t}, path)
    cpu = load(path)["t"]
    assert cpu.device == "cpu"
    assert_close(cpu.data, t.numpy(), rtol=0, atol=0)
    gpu = load(path, device="cuda")["t"]
    assert gpu.device.type == "cuda"
    assert_close(gpu.numpy(), t.numpy(), rtol=0, atol=0)


# ----------------------------------------------------------------------------- load_state_dict
def _params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("bad", [
    np.array([["a", "b", "c", "d"]] * 2),                          # strings of the right shape
    np.array([[None, 1.0, 2.0, 3.0]] * 2, dtype=object),          # an object array with None
    np.ones((2, 4), dtype=np.complex64),                           # complex into real
    np.array([[1 + 0j] * 4] * 2, dtype=object),
])
def test_load_state_dict_checks_every_value_before_copying_any(bad):
    model = gg.nn.MLP([4, 3, 2])
    other = gg.nn.MLP([4, 3, 2]).state_dict()
    before = _params(model)
    state = {**other, "2.weight": bad[:, :3]}                      # shape (2, 3): only the dtype is wrong
    with pytest.raises(RuntimeError, match=r'nothing was loaded[\s\S]*"2.weight"'):
        model.load_state_dict(state)                               # "2.weight" comes after the others
    for k, v in _params(model).items():
        assert_close(v, before[k], rtol=0, atol=0)


def test_load_state_dict_refuses_floats_into_integer_buffers_and_accepts_casts_that_keep_values():
    model = gg.nn.Linear(2, 1)
    model.register_buffer("count", gg.tensor(0))
    with pytest.raises(RuntimeError, match='"count" has dtype float64, which cannot be loaded into int64'):
        model.load_state_dict({**model.state_dict(), "count": np.array(2.5)})
    model.load_state_dict({"weight": np.ones((1, 2), np.float64), "bias": [0.5], "count": np.int32(3)})
    assert model.count.item() == 3 and model.bias.tolist() == [0.5] and model.weight.dtype == np.float32


def test_load_state_dict_is_an_in_place_change_that_backward_notices():
    model = gg.nn.Linear(2, 1)
    loss = model(gg.ones(1, 2)).sum()
    model.load_state_dict(gg.nn.Linear(2, 1).state_dict())
    with pytest.raises(RuntimeError, match="changed in place.*load_state_dict"):
        loss.backward()


def test_the_deepest_structure_allowed_round_trips(tmp_path):
    deep = []
    for _ in range(serialization.MAX_DEPTH - 1):       # 64 containers: the limit, not past it
        deep = [deep]
    save(deep, tmp_path / "deep.gg")
    loaded = load(tmp_path / "deep.gg")
    for _ in range(serialization.MAX_DEPTH - 1):
        assert isinstance(loaded, list) and len(loaded) == 1
        loaded = loaded[0]
    assert loaded == []
