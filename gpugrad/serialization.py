"""save / load: nested dicts, lists and tuples of Tensors, arrays and plain Python values.

The file is a zip archive (like NumPy's .npz): each array is a ``.npy`` member written and
read with ``allow_pickle=False``, and ``gpugrad.json`` describes the structure. Loading
never executes code from the file. Writes are atomic: a temp file in the same directory,
fsync'd, then renamed over ``path``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor

FORMAT = "gpugrad"
VERSION = 1
HEADER = "gpugrad.json"
_ARRAY_KINDS = "biufc"      # bool, ints, unsigned ints, floats, complex: plain data, no objects

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------- save
def save(obj: Any, path: PathLike) -> None:
    """Write ``obj`` (a state dict; nested dicts/lists/tuples of Tensors, arrays, scalars) to ``path``."""
    arrays: list[np.ndarray] = []
    root = _encode(obj, "obj", arrays, set())       # all type errors surface before any file is touched
    header = json.dumps({"format": FORMAT, "version": VERSION, "arrays": len(arrays), "root": root})
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: cannot write {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.writestr(HEADER, header)
                for i, arr in enumerate(arrays):
                    with zf.open(f"{i}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode(obj: Any, where: str, arrays: list[np.ndarray], active: set[int]) -> dict[str, Any]:
    """The JSON description of ``obj``; arrays are appended to ``arrays`` and referred to by index."""
    if obj is None:
        return {"type": "none"}
    if isinstance(obj, np.generic):                 # before float: np.float64 is a float subclass
        arr = _plain_array(np.asarray(obj), where)
        arrays.append(arr)
        return {"type": "scalar", "index": len(arrays) - 1, "dtype": arr.dtype.str}
    if isinstance(obj, bool):
        return {"type": "bool", "value": obj}
    if isinstance(obj, int):
        return {"type": "int", "value": int(obj)}
    if isinstance(obj, float):
        return {"type": "float", "value": repr(float(obj))}     # repr keeps nan/inf and every bit
    if isinstance(obj, str):
        return {"type": "str", "value": str(obj)}
    if isinstance(obj, Tensor):
        arr = _plain_array(backend.to_numpy(obj.data), where)
        arrays.append(arr)
        return {"type": "tensor", "index": len(arrays) - 1, "dtype": arr.dtype.str}
    if isinstance(obj, np.ndarray) or (hasattr(obj, "__cuda_array_interface__") and hasattr(obj, "get")):
        arr = _plain_array(backend.to_numpy(obj), where)
        arrays.append(arr)
        return {"type": "array", "index": len(arrays) - 1, "dtype": arr.dtype.str}
    if isinstance(obj, (list, tuple, dict)):
        if id(obj) in active:
            raise ValueError(f"save: {where} contains itself (a reference cycle); cycles cannot be saved")
        active.add(id(obj))
        try:
            if isinstance(obj, dict):
                items = []
                for key, value in obj.items():
                    if not isinstance(key, str):
                        raise TypeError(f"save: {where} has a key {key!r} of type {type(key).__name__}; "
                                        "only str keys can be saved (convert them, e.g. with str(key))")
                    items.append([key, _encode(value, f"{where}[{key!r}]", arrays, active)])
                return {"type": "dict", "items": items}
            kind = "tuple" if isinstance(obj, tuple) else "list"
            items = [_encode(v, f"{where}[{i}]", arrays, active) for i, v in enumerate(obj)]
            return {"type": kind, "items": items}
        finally:
            active.discard(id(obj))
    raise TypeError(f"save: {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which cannot be "
                    "saved; supported are Tensor, NumPy array, int, float, str, bool, None, and "
                    "list/tuple/dict (str keys) of those")


def _plain_array(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.fields is not None:
        raise TypeError(f"save: {where} is an array of dtype {arr.dtype}, which cannot be saved without "
                        "pickle; only bool, int, uint, float and complex arrays are supported")
    return arr


# ---------------------------------------------------------------------------------------------- load
def load(path: PathLike, device: Any = None) -> Any:
    """Read what ``save`` wrote; Tensors come back as leaves (no grad) on ``device`` (default: the CPU)."""
    path = os.fspath(path)
    target = backend.as_device(device)
    with open(path, "rb") as f:                  # FileNotFoundError names the path
        magic = f.read(4)
        if magic[:2] != b"PK":
            raise ValueError(f"load: {path} is not a gpugrad file: {_sniff(magic)}; gpugrad.load reads "
                             "files written by gpugrad.save (a zip archive)")
        try:
            with zipfile.ZipFile(f) as zf:
                return _decode_archive(zf, path, target)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, json.JSONDecodeError,
                UnicodeDecodeError) as err:
            raise ValueError(f"load: {path} is truncated or corrupt ({type(err).__name__}: {err}); "
                             "save it again") from None


def _sniff(magic: bytes) -> str:
    """What a file that is not a zip archive looks like, for the error message."""
    if not magic:
        return "the file is empty"
    if magic[:1] == b"\x80" or magic[:1] in (b"(", b"]", b"}"):
        return "it looks like a pickle (e.g. from pickle.dump or an old torch.save), which is never unpickled"
    if magic.startswith(b"\x93NUM"):
        return "it is a bare .npy array; read it with numpy.load(path, allow_pickle=False)"
    if magic.startswith(b"\x89HDF"):
        return "it is an HDF5 file"
    return f"it starts with bytes {magic!r}, not a zip archive"


def _decode_archive(zf: zipfile.ZipFile, path: str, device: backend.Device) -> Any:
    names = set(zf.namelist())
    if HEADER not in names:
        shown = sorted(names)[:5]
        hint = " (a PyTorch checkpoint?)" if any(n.endswith("data.pkl") for n in names) else ""
        raise ValueError(f"load: {path} is a zip archive but not a gpugrad file{hint}: it has no "
                         f"'{HEADER}' member (members: {shown}); gpugrad.load reads files written by "
                         "gpugrad.save")
    header = json.loads(zf.read(HEADER).decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"load: {path} has a '{HEADER}' member that is not a gpugrad header")
    version = header.get("version")
    if version != VERSION:
        raise ValueError(f"load: {path} is gpugrad format version {version!r}, this gpugrad reads version "
                         f"{VERSION}; " + ("upgrade gpugrad to read it" if isinstance(version, int)
                                           and version > VERSION else "the file is not supported"))
    cache: dict[int, np.ndarray] = {}

    def read(index: Any, dtype: Any, where: str) -> np.ndarray:
        member = f"{index}.npy"
        if not isinstance(index, int) or member not in names:
            raise ValueError(f"load: {path} is corrupt: {where} refers to a missing array {member!r}")
        if index not in cache:
            with zf.open(member) as fh:
                try:
                    cache[index] = np.lib.format.read_array(fh, allow_pickle=False)
                except ValueError as err:
                    raise ValueError(f"load: {path}: array {member!r} for {where} cannot be read without "
                                     f"pickle or is truncated ({err})") from None
        arr = cache[index]
        if arr.dtype.str != dtype:
            raise ValueError(f"load: {path} is corrupt: {where} should have dtype {dtype} but its array "
                             f"has {arr.dtype.str}")
        return arr

    def build(node: Any, where: str) -> Any:
        kind = node.get("type") if isinstance(node, dict) else None
        if kind == "none":
            return None
        if kind in ("bool", "int", "str"):
            value = node.get("value")
            expected = {"bool": bool, "int": int, "str": str}[kind]
            if type(value) is not expected:
                raise ValueError(f"load: {path} is corrupt: {where} should be a {kind}, found {value!r}")
            return value
        if kind == "float":
            value = node.get("value")
            if not isinstance(value, str):
                raise ValueError(f"load: {path} is corrupt: {where} should be a float, found {value!r}")
            return float(value)
        if kind == "tensor":
            arr = read(node.get("index"), node.get("dtype"), where)
            return Tensor._wrap(backend.to_device(arr, device))
        if kind == "array":
            return read(node.get("index"), node.get("dtype"), where)
        if kind == "scalar":
            return read(node.get("index"), node.get("dtype"), where)[()]
        if kind in ("list", "tuple"):
            items = [build(v, f"{where}[{i}]") for i, v in enumerate(node["items"])]
            return tuple(items) if kind == "tuple" else items
        if kind == "dict":
            return {key: build(v, f"{where}[{key!r}]") for key, v in node["items"]}
        raise ValueError(f"load: {path} is corrupt or from a newer gpugrad: {where} has unknown type "
                         f"{kind!r}")

    try:
        return build(header.get("root"), "obj")
    except (KeyError, TypeError) as err:
        raise ValueError(f"load: {path} is corrupt: malformed structure description ({err})") from None
