"""CUDA C++ run on the CPU: g++ builds a kernel source after shim.h; ctypes launches its entry points.

build(code, options) writes the source (a RawModule's ``code``, with its ``#line`` so errors
name the .cu file), preprocesses it after shim.h to find its ``extern "C"`` entry points,
then compiles it with one generic launcher and one signature function per entry point
into a shared library, cached on disk under a hash of the preprocessed text (so an edited
header is a new library, unlike CuPy's cache key). HostKernel launches an entry point with
the argument tuple CuPy's RawKernel would get (NumPy arrays standing for device arrays,
NumPy scalars, structs as NumPy arrays of size one), checks it first against the kernel's
C parameter list (arity, pointer or scalar, element size and kind, const-ness), and runs
every array in a copy with guard bytes on both sides, so a kernel that writes out of
bounds, or through a const pointer, raises.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

SHIM = Path(__file__).resolve().parent / "shim.h"
GUARD = 256                    # guard bytes on each side of every array a kernel gets
_FILL = 0xFF                   # NaN in every float format (and -1 as int64)
_MARK = "gg_emulator_source_begins"

KIND_SCALAR_INT, KIND_CONST_PTR, KIND_PTR, KIND_SCALAR_FLOAT, KIND_STRUCT = 0, 1, 2, 3, 4
POINTER_KINDS = (KIND_CONST_PTR, KIND_PTR)
_F16 = np.dtype(np.float16)
_ENTRY = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(')


class CompileException(RuntimeError):
    """A kernel source did not build (g++'s messages, which name the .cu file and line)."""


def compiler() -> str | None:
    """The C++ compiler the emulator builds kernels with (g++), or None when there is none."""
    return shutil.which("g++")


def _need_compiler() -> str:
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("the CUDA emulator (GPUGRAD_EMULATE_CUDA) builds each CUDA kernel for the CPU "
                           "with g++, which is not on PATH: install g++ (apt-get install g++), or unset "
                           "GPUGRAD_EMULATE_CUDA")
    return cxx


def cache_dir() -> Path:
    """Where built libraries are kept: $GPUGRAD_EMULATOR_CACHE, else ~/.cache/gpugrad/emulator."""
    env = os.environ.get("GPUGRAD_EMULATOR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gpugrad" / "emulator"


def compile_flags(options: tuple[str, ...]) -> list[str]:
    """g++ flags for NVRTC options: include folders and macro definitions are kept, the rest dropped."""
    flags = []
    for opt in options:
        if opt.startswith(("-I", "-D", "-U")):
            flags.append(opt)
        elif opt.startswith(("--include-path=", "--define-macro=")):
            flags.append(("-I" if opt.startswith("--include-path=") else "-D") + opt.split("=", 1)[1])
    return flags


def _host_source(source: Path, entries: list[str]) -> str:
    lines = [
        '#include "shim.h"',
        f"static int {_MARK};",
        f'#include "{source.as_posix()}"',
        "",
        'extern "C" float gg_test_half_to_float(unsigned short h) { return gg_shim_half_to_float(h); }',
        'extern "C" unsigned short gg_test_float_to_half(float f) { return gg_shim_float_to_half(f); }',
    ]
    for e in entries:
        lines += [
            f'extern "C" int gg_launch__{e}(unsigned grid, unsigned block, void** argv) '
            f"{{ return gg_shim_launch({e}, grid, block, argv); }}",
            f'extern "C" int gg_signature__{e}(int* kind, int* size, int* floating) '
            f"{{ return gg_shim_signature({e}, kind, size, floating); }}",
        ]
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileException(f"{what}: g++ failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout


_built: dict[str, tuple[ctypes.CDLL, tuple[str, ...]]] = {}
_build_lock = threading.Lock()


def build(code: str, options: tuple[str, ...] = (), name: str = "kernel", opt: str = "-O1",
          out_dir: Path | None = None) -> tuple[ctypes.CDLL, tuple[str, ...]]:
    """The loaded library of ``code`` built for the CPU, and its entry points (extern "C" functions).

    ``name`` labels the build in error messages. Libraries are cached in ``out_dir``
    (default: cache_dir()) under a hash of the preprocessed source, the flags and shim.h.
    """
    cxx = _need_compiler()
    flags = ["-std=c++17", opt, "-pthread", "-Wall", "-Wno-unused-function", "-Wno-unused-variable",
             f"-I{SHIM.parent}", *compile_flags(tuple(options))]
    with tempfile.TemporaryDirectory(prefix="gg-emulator-") as tmp:
        source = Path(tmp) / "source.cu"
        source.write_text(code, encoding="utf-8")
        probe = Path(tmp) / "probe.cpp"
        probe.write_text(_host_source(source, []), encoding="utf-8")
        text = _run([cxx, "-E", "-P", *flags, str(probe)], name)
        user = text.split(_MARK, 1)[-1]
        entries = tuple(dict.fromkeys(_ENTRY.findall(user)))
        key = hashlib.sha256("\0".join([user, *flags, cxx, SHIM.read_text()]).encode()).hexdigest()[:32]
        with _build_lock:
            if key in _built:
                return _built[key]
        folder = Path(out_dir) if out_dir is not None else cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        lib = folder / f"gg_{key}.so"
        if not lib.is_file():
            host = Path(tmp) / "host.cpp"
            host.write_text(_host_source(source, list(entries)), encoding="utf-8")
            partial = folder / f".{lib.name}.{os.getpid()}.{threading.get_ident()}"   # renamed: atomic
            _run([cxx, *flags, "-shared", "-fPIC", str(host), "-o", str(partial)], name)
            os.replace(partial, lib)
        loaded = ctypes.CDLL(str(lib))
    with _build_lock:
        return _built.setdefault(key, (loaded, entries))


class HostKernel:
    """One entry point of a built library, called like a CuPy RawKernel on NumPy arrays."""

    def __init__(self, lib: ctypes.CDLL, entry: str) -> None:
        self.entry = entry
        try:
            self._launch = getattr(lib, f"gg_launch__{entry}")
            sig = getattr(lib, f"gg_signature__{entry}")
        except AttributeError:
            raise AttributeError(f"no kernel named {entry!r} in the emulated module (its extern \"C\" "
                                 "__global__ functions are the kernels)") from None
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        kind, size, floating = (ctypes.c_int * 64)(), (ctypes.c_int * 64)(), (ctypes.c_int * 64)()
        n = sig(kind, size, floating)
        self.params = [(kind[i], size[i], floating[i]) for i in range(n)]

    def check(self, args: tuple) -> None:
        """Raise TypeError where an argument does not match the C parameter it lands in."""
        if len(args) != len(self.params):
            raise TypeError(f"{self.entry}: takes {len(self.params)} arguments, got {len(args)}")
        for i, (a, (kind, size, floating)) in enumerate(zip(args, self.params)):
            where = f"{self.entry}: argument {i}"
            if kind in POINTER_KINDS:
                if a is None:
                    continue                          # a null pointer, as CuPy passes None
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{where} is a pointer; got {type(a).__name__}")
                if not a.flags.c_contiguous:
                    raise TypeError(f"{where}: array is not C-contiguous")
                # floating: 1 float/double, 0 an integer, 2 another type (gg::f16_t)
                want = {1: "f", 0: "iu", 2: "f"}[floating]
                if a.itemsize != size or a.dtype.kind not in want or (floating == 2) != (a.dtype == _F16):
                    raise TypeError(f"{where}: element of {size} bytes (floating={floating}); got {a.dtype}")
                if kind == KIND_PTR and not a.flags.writeable:
                    raise TypeError(f"{where}: the kernel writes it, but the array is read-only")
            elif kind == KIND_STRUCT:
                # a struct by value: a NumPy array of size one with a structured dtype of the C
                # struct's size (CuPy passes such an array's bytes by value). Addresses inside it
                # are used as they are: no guard bytes.
                if not (isinstance(a, np.ndarray) and a.size == 1 and a.dtype.names
                        and a.dtype.itemsize == size):
                    raise TypeError(f"{where} is a {size}-byte struct; pass a NumPy array of size one with "
                                    f"a structured dtype of that size, got {type(a).__name__} "
                                    f"{getattr(a, 'dtype', '')}")
            else:
                if not isinstance(a, np.generic):
                    raise TypeError(f"{where} is a {size}-byte scalar; pass a NumPy scalar, got "
                                    f"{type(a).__name__} (CuPy would pack a Python number as 8 bytes)")
                want = "f" if kind == KIND_SCALAR_FLOAT else "iub"
                if a.dtype.itemsize != size or a.dtype.kind not in want:
                    raise TypeError(f"{where}: {size}-byte {'float' if want == 'f' else 'integer'} scalar; "
                                    f"got {a.dtype}")

    def __call__(self, grid: int, block: int, args: tuple) -> None:
        self.check(args)
        argv = (ctypes.c_void_p * max(1, len(args)))()
        keep: list[Any] = []
        boxes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, bool]] = {}
        for i, (a, (kind, _, _)) in enumerate(zip(args, self.params)):
            if kind in POINTER_KINDS and a is None:
                slot = np.zeros(1, dtype=np.uintp)
            elif kind in POINTER_KINDS:
                key = (a.ctypes.data, a.nbytes)
                if key not in boxes:
                    box = np.full(a.nbytes + 2 * GUARD, _FILL, dtype=np.uint8)
                    box[GUARD:GUARD + a.nbytes] = a.reshape(-1).view(np.uint8)
                    boxes[key] = (a, box, kind == KIND_CONST_PTR)
                else:
                    a0, box, const = boxes[key]
                    boxes[key] = (a0, box, const and kind == KIND_CONST_PTR)
                slot = np.array([box.ctypes.data + GUARD], dtype=np.uintp)
            else:
                slot = np.array(a)                    # the scalar's bytes, as CuPy packs them
            keep.append(slot)
            argv[i] = slot.ctypes.data
        rc = self._launch(grid, block, argv)
        if rc != 0:
            raise RuntimeError(f"{self.entry}: a __syncthreads() was not reached by every thread of a block")
        for a, box, const in boxes.values():
            body = box[GUARD:GUARD + a.nbytes]
            if (box[:GUARD] != _FILL).any() or (box[GUARD + a.nbytes:] != _FILL).any():
                raise RuntimeError(f"{self.entry}: wrote outside an array of {a.shape} {a.dtype} (on a GPU: "
                                   "an illegal address, or another array's memory)")
            if const:
                if (body != a.reshape(-1).view(np.uint8)).any():
                    raise RuntimeError(f"{self.entry}: changed an array it reads through a const pointer")
            else:
                a.reshape(-1).view(np.uint8)[:] = body
