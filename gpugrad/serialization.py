"""save / load: nested dicts, lists and tuples of Tensors, arrays and plain values, as safetensors.

The file is a safetensors file (https://huggingface.co/docs/safetensors): every array is one
named tensor, named by its path in the saved object (``model.0.weight``), so
``safetensors.numpy.load_file``, PyTorch and Hugging Face tools read it. The nesting and the
plain values (ints, floats, strings...) live in the header's metadata as JSON
(``gpugrad.structure``), beside a CRC-32 of each tensor's bytes (``gpugrad.checksums``) and one
of the whole description: names, dtypes, shapes and structure (``gpugrad.digest``). Loading
verifies them, so a flipped byte never loads as different numbers or names; a safetensors file
written by another tool (no gpugrad metadata) loads as a flat dict of tensors.

Loading never executes code from the file and never allocates more than the file holds
(safetensors checks every tensor's extent against the file; the header is capped and parsed
with duplicate names refused). Every corrupt file raises ValueError naming the path. Writes
are atomic: a temp file in the same directory, fsync'd, renamed over ``path``, with the mode
the old file had (or the umask's for a new one).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import struct
import zlib
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor

VERSION = 2                  # version 1 was a zip of .npy members (gpugrad 0.1), no longer read
MAX_DEPTH = 64               # containers nested deeper than this are refused on save and load
MAX_HEADER = 64 * 2**20      # bytes of safetensors header (JSON) we are willing to parse
_KEYS = ("gpugrad.version", "gpugrad.structure", "gpugrad.checksums", "gpugrad.digest")
_ARRAY_KINDS = "biufc"       # bool, ints, unsigned ints, floats, complex: plain data, no objects
_COMPLEX_PARTS = {np.dtype(np.complex64): np.dtype("<f4"), np.dtype(np.complex128): np.dtype("<f8")}
# safetensors dtype names NumPy can hold (C64 only in newer safetensors: complex is stored as float pairs)
_NUMPY_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "F32", "F64", "C64"}

PathLike = str | os.PathLike


def _safetensors() -> Any:
    try:
        import safetensors.numpy  # noqa: PLC0415 - a core dependency, imported when first needed
    except ImportError:
        raise ImportError("gg.save / gg.load need the safetensors package: pip install safetensors") from None
    return safetensors


# ---------------------------------------------------------------------------------------------- save
def save(obj: Any, path: PathLike) -> None:
    """Write ``obj`` (a state dict; nested dicts/lists/tuples of Tensors, arrays, scalars) to ``path``."""
    tensors: dict[str, np.ndarray] = {}
    structure = json.dumps(_Encoder(tensors).encode(obj, [], 0), allow_nan=False)
    checksums = json.dumps({name: zlib.crc32(arr) for name, arr in tensors.items()})
    metadata = {"gpugrad.version": str(VERSION), "gpugrad.structure": structure,
                "gpugrad.checksums": checksums,
                "gpugrad.digest": _digest(structure, checksums, tensors)}
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: cannot write {path}: directory {directory} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # created here first: reserves the name and learns the umask's mode (open() applies it to 0o666)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)              # overwriting keeps the old file's mode
        except FileNotFoundError:
            pass
        _safetensors().numpy.save_file(tensors, tmp, metadata=metadata)   # may itself replace tmp
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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


def _digest(structure: str, checksums: str, tensors: dict[str, np.ndarray]) -> str:
    """CRC-32 of everything that describes the tensors: structure, checksums, names, dtypes, shapes."""
    described = [[name, arr.dtype.str, list(arr.shape)] for name, arr in sorted(tensors.items())]
    text = json.dumps([structure, checksums, described])
    return f"{zlib.crc32(text.encode()):08x}"


class _Encoder:
    """Turns an object into its JSON description, collecting its arrays into ``tensors`` by name.

    Plain JSON values stand for themselves (None, bool, int, finite float, str, list); the
    rest are one-key objects: ``{"tuple": [...]}``, ``{"dict": [[key, value], ...]}`` (keeps
    the order, allows any key), ``{"float": "nan"}``, and ``{"tensor" | "array" | "scalar":
    name}`` with ``"complex": true`` for complex data stored as (real, imag) float pairs.
    """

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.active: set[int] = set()

    def encode(self, obj: Any, where: list[str], depth: int) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, np.generic):                 # before float: np.float64 is a float subclass
            return self.array("scalar", np.asarray(obj), where)
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj) if np.isfinite(obj) else {"float": repr(float(obj))}
        if isinstance(obj, Tensor):
            return self.array("tensor", backend.to_numpy(obj.data), where)
        if isinstance(obj, np.ndarray) or (hasattr(obj, "__cuda_array_interface__") and hasattr(obj, "get")):
            return self.array("array", backend.to_numpy(obj), where)
        if isinstance(obj, (list, tuple, dict)):
            return self.container(obj, where, depth)
        raise TypeError(f"save: {_where(where)} is a {type(obj).__module__}.{type(obj).__qualname__}, "
                        "which cannot be saved; supported are Tensor, NumPy array, int, float, str, bool, "
                        "None, and list/tuple/dict (str keys) of those")

    def container(self, obj: Any, where: list[str], depth: int) -> Any:
        if depth >= MAX_DEPTH:
            raise ValueError(f"save: {_where(where)} is nested {MAX_DEPTH} containers deep; gpugrad files "
                             f"hold at most {MAX_DEPTH} levels (flatten the structure)")
        if id(obj) in self.active:
            raise ValueError(f"save: {_where(where)} contains itself (a reference cycle); cycles cannot "
                             "be saved")
        self.active.add(id(obj))
        try:
            if isinstance(obj, dict):
                items = []
                for key, value in obj.items():
                    if not isinstance(key, str):
                        raise TypeError(f"save: {_where(where)} has a key {key!r} of type "
                                        f"{type(key).__name__}; only str keys can be saved (convert them, "
                                        "e.g. with str(key))")
                    items.append([key, self.encode(value, [*where, key], depth + 1)])
                return {"dict": items}
            items = [self.encode(v, [*where, str(i)], depth + 1) for i, v in enumerate(obj)]
            return {"tuple": items} if isinstance(obj, tuple) else items
        finally:
            self.active.discard(id(obj))

    def array(self, kind: str, arr: np.ndarray, where: list[str]) -> dict[str, Any]:
        if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.fields is not None:
            raise TypeError(f"save: {_where(where)} is an array of dtype {arr.dtype}, which cannot be saved "
                            "without pickle; only bool, int, uint, float and complex arrays are supported")
        # contiguous and little-endian, as safetensors stores it (and the checksum sees it)
        # (not ascontiguousarray: it turns a 0-d array into shape (1,))
        arr = arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)
        node: dict[str, Any] = {kind: self.name(where)}
        if arr.dtype.kind == "c":
            arr = arr.reshape(arr.shape + (1,)).view(_COMPLEX_PARTS[arr.dtype.newbyteorder("=")])
            node["complex"] = True
        self.tensors[node[kind]] = arr
        return node

    def name(self, where: list[str]) -> str:
        """The tensor's name: its path joined with dots, made unique (``#1``...) where paths collide."""
        base = ".".join(where) or "tensor"
        name, n = base, 0
        while name in self.tensors or name == "__metadata__":
            n += 1
            name = f"{base}#{n}"
        return name


def _where(path: list[str]) -> str:
    return "obj" + "".join(f"[{p!r}]" for p in path)


# ---------------------------------------------------------------------------------------------- load
def load(path: PathLike, device: Any = None) -> Any:
    """Read what ``save`` wrote; Tensors come back as leaves (no grad) on ``device`` (default: the CPU).

    A safetensors file from another tool (e.g. ``safetensors.torch.save_file(model.state_dict())``)
    comes back as a dict of name -> Tensor, ready for ``Module.load_state_dict``.
    """
    path = os.fspath(path)
    target = backend.as_device(device)
    header = _read_header(path)
    arrays = _read_tensors(path, header)
    meta = header.get("__metadata__") or {}
    if not any(key.startswith("gpugrad.") for key in meta):
        return {name: Tensor._wrap(backend.to_device(arr, target)) for name, arr in arrays.items()}
    return _Decoder(path, meta, arrays, target).decode()


def _corrupt(path: str, what: str) -> ValueError:
    return ValueError(f"load: {path} is corrupt or not a gpugrad file: {what}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Duplicate(sorted({k for k in keys if keys.count(k) > 1}))
    return dict(pairs)


class _Duplicate(ValueError):
    pass


def _parse_json(path: str, text: str | bytes, what: str) -> Any:
    """JSON with duplicate names refused and every parse failure (depth included) a ValueError."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        raise _corrupt(path, f"its {what} names {dup.args[0]} more than once") from None
    except (ValueError, RecursionError) as err:      # JSONDecodeError, bad UTF-8, ints over 4300 digits
        raise _corrupt(path, f"its {what} is not valid JSON ({type(err).__name__}: {err})") from None


def _read_header(path: str) -> dict[str, Any]:
    """The safetensors header, read and parsed here first: bounded, no duplicates, foreign files named."""
    with open(path, "rb") as f:                  # FileNotFoundError / IsADirectoryError name the path
        start = f.read(64)
        if len(start) < 9 or start[8:9] != b"{":     # a safetensors header is JSON right after its size
            raise ValueError(f"load: {path} is not a gpugrad (safetensors) file: {_sniff(start)}")
        size = struct.unpack("<Q", start[:8])[0]
        available = os.fstat(f.fileno()).st_size - 8
        if size > min(MAX_HEADER, available):
            raise _corrupt(path, f"its first 8 bytes give a header of {size} bytes, but the file holds "
                                 f"{available} after them (and headers are capped at {MAX_HEADER})")
        f.seek(8)
        text = f.read(size)
    header = _parse_json(path, text, "header")
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise _corrupt(path, "its __metadata__ is not a map of strings")
    for name, info in header.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if name != "__metadata__" and isinstance(dtype, str) and dtype not in _NUMPY_DTYPES:
            raise ValueError(f"load: {path}: tensor {name!r} has dtype {dtype}, which NumPy (and so "
                             "gpugrad) cannot hold; convert it to float32 before saving (in PyTorch: "
                             "t.float())")
    return header


def _read_tensors(path: str, header: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every tensor, in file order; safetensors checks each one's extent against the file."""
    safetensors = _safetensors()
    try:
        with safetensors.safe_open(path, framework="np") as f:
            names = list(f.keys())
            return {name: f.get_tensor(name) for name in names}
    except safetensors.SafetensorError as err:
        raise _corrupt(path, f"safetensors: {err}") from None
    except (TypeError, KeyError, AttributeError) as err:   # a dtype name safetensors knows but NumPy lacks
        raise _corrupt(path, f"a tensor cannot be converted ({type(err).__name__}: {err})") from None


def _sniff(start: bytes) -> str:
    """What a file that is not safetensors looks like, for the error message."""
    if not start:
        return "the file is empty"
    if start[:2] == b"PK":
        name = start[30:30 + int.from_bytes(start[26:28], "little")] if len(start) >= 30 else b""
        if name == b"gpugrad.json":
            return ("it is a checkpoint in gpugrad 0.1's zip format, which this version no longer reads; "
                    "re-create it, or convert it with gpugrad 0.1 (docs/errors.md, 'Old checkpoints')")
        if name.endswith(b"data.pkl"):
            return ("it is a PyTorch checkpoint (torch.save), which holds pickled code and is never "
                    "unpickled; convert it in PyTorch: safetensors.torch.save_file(torch.load(path, "
                    "weights_only=True), 'model.safetensors')")
        return "it is a zip archive (a NumPy .npz?); read it with numpy.load(path, allow_pickle=False)"
    if start[:1] == b"\x80" or start[:1] in (b"(", b"]", b"}"):
        return "it looks like a pickle (e.g. from pickle.dump or an old torch.save), which is never unpickled"
    if start.startswith(b"\x93NUM"):
        return "it is a bare .npy array; read it with numpy.load(path, allow_pickle=False)"
    if start.startswith(b"\x89HDF"):
        return "it is an HDF5 file"
    return f"it starts with bytes {start[:8]!r}, not a safetensors header"


class _Decoder:
    """Rebuilds the saved object from the metadata, after checking every checksum."""

    def __init__(self, path: str, meta: dict[str, str], arrays: dict[str, np.ndarray],
                 device: backend.Device) -> None:
        self.path, self.arrays, self.device = path, arrays, device
        missing = [k for k in _KEYS if k not in meta]
        if missing:
            raise _corrupt(path, f"its metadata lacks {missing} (it has {sorted(meta)})")
        version = meta["gpugrad.version"]
        if version != str(VERSION):
            newer = version.isdigit() and int(version) > VERSION
            raise ValueError(f"load: {path} is gpugrad format version {version!r}, this gpugrad reads "
                             f"version {VERSION}; " + ("upgrade gpugrad to read it" if newer
                                                       else "the file is corrupt"))
        self.structure = meta["gpugrad.structure"]
        checksums = meta["gpugrad.checksums"]
        if _digest(self.structure, checksums, arrays) != meta["gpugrad.digest"]:
            raise _corrupt(path, "the description of its tensors (names, dtypes, shapes, structure) does not "
                                 "match its checksum")
        sums = _parse_json(path, checksums, "gpugrad.checksums")
        if not isinstance(sums, dict) or set(sums) != set(arrays):
            raise _corrupt(path, "its checksums do not list exactly its tensors")
        for name, arr in arrays.items():
            if zlib.crc32(arr) != sums[name]:
                raise _corrupt(path, f"the bytes of tensor {name!r} do not match their CRC-32")
        self.unused = set(arrays)

    def decode(self) -> Any:
        root = _parse_json(self.path, self.structure, "gpugrad.structure")
        obj = self.build(root, [], 0)
        if self.unused:
            raise _corrupt(self.path, f"tensors {sorted(self.unused)[:5]} are not in its structure")
        return obj

    def fail(self, where: list[str], what: str) -> ValueError:
        return _corrupt(self.path, f"{_where(where)} {what}")

    def build(self, node: Any, where: list[str], depth: int) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if depth >= MAX_DEPTH:
            raise self.fail(where, f"is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, list):
            return [self.build(v, [*where, str(i)], depth + 1) for i, v in enumerate(node)]
        if not isinstance(node, dict) or not node:
            raise self.fail(where, f"has an unknown description {node!r:.60}")
        kind = next(iter(node))
        value = node[kind]
        if kind == "tuple" and len(node) == 1 and isinstance(value, list):
            return tuple(self.build(v, [*where, str(i)], depth + 1) for i, v in enumerate(value))
        if kind == "dict" and len(node) == 1 and isinstance(value, list):
            return self.build_dict(value, where, depth)
        if kind == "float" and len(node) == 1 and value in ("nan", "inf", "-inf"):
            return float(value)
        if kind in ("tensor", "array", "scalar") and set(node) <= {kind, "complex"}:
            arr = self.take(value, node.get("complex") is True, where)
            if kind == "tensor":
                return Tensor._wrap(backend.to_device(arr, self.device))
            return arr if kind == "array" else arr[()]
        raise self.fail(where, f"has an unknown description {node!r:.60} (a newer gpugrad?)")

    def build_dict(self, items: list, where: list[str], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in items:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise self.fail(where, f"has a malformed entry {item!r:.60}")
            if item[0] in out:
                raise self.fail(where, f"has the key {item[0]!r} twice")
            out[item[0]] = self.build(item[1], [*where, item[0]], depth + 1)
        return out

    def take(self, name: Any, is_complex: bool, where: list[str]) -> np.ndarray:
        if name not in self.unused:
            raise self.fail(where, f"refers to tensor {name!r}, which is missing or used twice")
        self.unused.discard(name)
        arr = self.arrays[name]
        if is_complex:
            if arr.dtype not in (np.float32, np.float64) or arr.shape[-1:] != (2,):
                raise self.fail(where, f"is complex but tensor {name!r} is not (..., 2) float pairs")
            arr = arr.view(np.complex64 if arr.dtype == np.float32 else np.complex128)[..., 0]
        return arr
