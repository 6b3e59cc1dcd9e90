"""save / load: round trips, atomic writes, and rejection of truncated, foreign and pickle files."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.serialization as serialization
from gpugrad.serialization import load, save


def _same(a, b):
    """Structural equality with exact array values and dtypes."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, gg.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
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
        "arrays": [np.arange(6, dtype=np.uint8).reshape(2, 3), np.asfortranarray(np.eye(3)), np.float32(2.5),
                   np.arange(10.0)[::3], np.array([1 + 2j])],
        "meta": ("name", 3, -1.25, True, None, float("inf"), float("nan"), 0.1, 10**30),
        "nested": [[], {}, (), {"a": [1, (2, {"b": None})]}],
        "unicode key ✓": "välue",
    }
    path = tmp_path / "obj.gg"
    save(obj, path)
    back = load(path)
    _same(obj, back)
    assert back["weights"]["scalar"].shape == ()
    assert not back["weights"]["f32"].requires_grad and back["weights"]["f32"].is_leaf
    assert isinstance(back["arrays"][0], np.ndarray) and isinstance(back["meta"], tuple)
    assert back["meta"][7] == 0.1                    # floats keep every bit


def test_parameters_requiring_grad_save_as_plain_tensors(tmp_path):
    w = gg.randn(2, 2, requires_grad=True)
    save({"w": w}, str(tmp_path / "w.gg"))
    back = load(str(tmp_path / "w.gg"))["w"]
    assert not back.requires_grad
    np.testing.assert_array_equal(back.data, w.data)


def test_unsupported_values_name_their_path(tmp_path):
    path = tmp_path / "x.gg"
    with pytest.raises(TypeError, match=r"obj\['a'\]\[1\] has a key 3 of type int"):
        save({"a": [1, {3: 4}]}, path)
    with pytest.raises(TypeError, match=r"obj\['f'\] is a builtins.set"):
        save({"f": {1, 2}}, path)
    with pytest.raises(TypeError, match=r"obj\[0\] is an array of dtype object"):
        save([np.array([{}, 1], dtype=object)], path)
    cyclic = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="contains itself"):
        save(cyclic, path)
    assert os.listdir(tmp_path) == []                # nothing was written


def test_overwrite_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.gg"
    save({"v": gg.ones(3)}, path)
    original = path.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def failing(fp, array, **kw):
        calls.append(1)
        if len(calls) == 2:
            real(fp, array, **kw)
            raise OSError("disk full (simulated)")
        return real(fp, array, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="simulated"):
        save({"a": gg.zeros(100), "b": gg.zeros(100), "c": gg.zeros(100)}, path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["ckpt.gg"]       # the temp file is gone
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path)["v"].data, np.ones(3))


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


def test_missing_file_and_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.gg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(1, tmp_path / "no_dir" / "x.gg")


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.95])
def test_truncated_file_is_rejected(tmp_path, keep):
    path = tmp_path / "t.gg"
    save({"w": gg.randn(64, 64), "b": gg.randn(64)}, path)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(ValueError, match=r"t\.gg is truncated or corrupt"):
        load(path)


def test_corrupted_array_bytes_are_rejected(tmp_path):
    path = tmp_path / "c.gg"
    save({"w": gg.zeros(256)}, path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF                      # inside the array data: CRC mismatch
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt"):
        load(path)


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


def test_pickle_inside_a_gpugrad_archive_is_not_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.gg"
    header = {"format": "gpugrad", "version": 1, "arrays": 1,
              "root": {"type": "array", "index": 0, "dtype": "|O"}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("gpugrad.json", json.dumps(header))
        with zf.open("0.npy", "w") as fh:
            np.lib.format.write_array(fh, np.array([Boom(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot be read without pickle"):
        load(path)
    assert not marker.exists()


def test_foreign_files_are_rejected(tmp_path):
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.ones(3))
    with pytest.raises(ValueError, match=r"arrays\.npz is a zip archive but not a gpugrad file"):
        load(npz)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match="notes.txt is not a gpugrad file"):
        load(text)
    npy = tmp_path / "a.npy"
    np.save(npy, np.ones(2))
    with pytest.raises(ValueError, match="bare .npy"):
        load(npy)
    empty = tmp_path / "empty.gg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load(empty)


def test_torch_checkpoint_is_rejected(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="PyTorch checkpoint"):
        load(path)


def test_format_version_mismatch(tmp_path):
    path = tmp_path / "future.gg"
    with zipfile.ZipFile(path, "w") as zf:
        header = {"format": "gpugrad", "version": 99, "root": {"type": "none"}}
        zf.writestr("gpugrad.json", json.dumps(header))
    with pytest.raises(ValueError, match="version 99.*reads version 1; upgrade gpugrad"):
        load(path)


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
    np.testing.assert_array_equal(cpu.data, t.numpy())
    gpu = load(path, device="cuda")["t"]
    assert gpu.device.type == "cuda"
    np.testing.assert_array_equal(gpu.numpy(), t.numpy())
