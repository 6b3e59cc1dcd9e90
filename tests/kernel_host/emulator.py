"""Run kernels/*.cu on the CPU: g++ compiles a kernel file after shim.h; ctypes launches it.

build_library() writes a small C++ file that includes shim.h, then the .cu file, then one
generic launcher and one signature function per entry point, and compiles it into a
shared library. HostKernel launches an entry point with the same argument tuple CuPy's
RawKernel would get (NumPy arrays for CuPy arrays, NumPy scalars), and checks it first
against the kernel's real parameter list: arity, pointer or scalar, element size and
kind, const-ness. Each array is run in a copy with guard bytes on both sides, so a
kernel that writes out of bounds, or writes through a const pointer, fails the test.
HostLauncher plugs the emulation into gpugrad.cuda.kernels (use_launcher), so the fused
functions run unchanged on NumPy arrays, with a launch configuration the test chooses.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from gpugrad.cuda import kernels

SHIM_DIR = Path(__file__).resolve().parent
GUARD = 256                    # guard bytes on each side of every array a kernel gets
_FILL = 0xFF                   # NaN in every float format (and -1 as int64)

_KIND_SCALAR_INT, _KIND_CONST_PTR, _KIND_PTR, _KIND_SCALAR_FLOAT, _KIND_STRUCT = 0, 1, 2, 3, 4
F16 = np.dtype(np.float16)


def compiler() -> str | None:
    return shutil.which("g++")


def entries_of(file: str) -> list[str]:
    """The entry points gpugrad.cuda.kernels.KERNELS lists for one .cu file."""
    return [e for spec in kernels.KERNELS.values() if spec.file == file for e in spec.entries]


def generated_source(cu_path: Path, entries: list[str]) -> str:
    lines = [
        '#include "shim.h"',
        f'#include "{cu_path.as_posix()}"',
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


def build_library(cu_file: str, out_dir: Path, opt: str = "-O1") -> Path:
    """Compile kernels/<cu_file> for the CPU into out_dir; raise with g++'s output if it fails."""
    cu_path = kernels.kernels_dir() / cu_file
    stem = cu_path.stem
    src = out_dir / f"{stem}_host.cpp"
    lib = out_dir / f"lib{stem}_host.so"
    src.write_text(generated_source(cu_path, entries_of(cu_file)))
    cmd = [compiler() or "g++", "-std=c++17", opt, "-shared", "-fPIC", "-pthread", "-Wall",
           "-Wno-unused-function", f"-I{SHIM_DIR}", f"-I{kernels.kernels_dir()}", str(src), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed on {cu_file}:\n{' '.join(cmd)}\n{proc.stderr}")
    return lib


def exported_entries(lib_path: Path) -> set[str]:
    """Every kernel entry point (NAME_f32/_f64/_f16) the compiled library defines, from nm."""
    nm = shutil.which("nm")
    if nm is None:
        raise RuntimeError("nm (binutils) is needed to list a library's symbols")
    out = subprocess.run([nm, "-D", "--defined-only", str(lib_path)], capture_output=True, text=True,
                         check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    return {n for n in names if n.rsplit("_", 1)[-1] in ("f16", "f32", "f64") and not n.startswith("gg_")}


class HostKernel:
    """One entry point of an emulated library, called like a CuPy RawKernel."""

    def __init__(self, lib: ctypes.CDLL, entry: str) -> None:
        self.entry = entry
        self._launch = getattr(lib, f"gg_launch__{entry}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        sig = getattr(lib, f"gg_signature__{entry}")
        kind, size, floating = (ctypes.c_int * 32)(), (ctypes.c_int * 32)(), (ctypes.c_int * 32)()
        n = sig(kind, size, floating)
        self.params = [(kind[i], size[i], floating[i]) for i in range(n)]

    def check(self, args: tuple) -> None:
        """Raise TypeError where an argument does not match the C parameter it lands in."""
        if len(args) != len(self.params):
            raise TypeError(f"{self.entry}: takes {len(self.params)} arguments, got {len(args)}")
        for i, (a, (kind, size, floating)) in enumerate(zip(args, self.params)):
            where = f"{self.entry}: argument {i}"
            if kind in (_KIND_CONST_PTR, _KIND_PTR):
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{where} is a pointer; got {type(a).__name__}")
                if not a.flags.c_contiguous:
                    raise TypeError(f"{where}: array is not C-contiguous")
                # floating: 1 float/double, 0 an integer, 2 another type (gg::f16_t)
                want = {1: "f", 0: "iu", 2: "f"}[floating]
                if a.itemsize != size or a.dtype.kind not in want or (floating == 2) != (a.dtype == F16):
                    raise TypeError(f"{where}: element of {size} bytes (floating={floating}); got {a.dtype}")
                if kind == _KIND_PTR and not a.flags.writeable:
                    raise TypeError(f"{where}: the kernel writes it, but the array is read-only")
            elif kind == _KIND_STRUCT:
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
                want = "f" if kind == _KIND_SCALAR_FLOAT else "iub"
                if a.dtype.itemsize != size or a.dtype.kind not in want:
                    raise TypeError(f"{where}: {size}-byte {'float' if want == 'f' else 'integer'} scalar; "
                                    f"got {a.dtype}")

    def __call__(self, grid: int, block: int, args: tuple) -> None:
        self.check(args)
        argv = (ctypes.c_void_p * max(1, len(args)))()
        keep: list[Any] = []
        boxes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, bool]] = {}
        for i, (a, (kind, _, _)) in enumerate(zip(args, self.params)):
            if kind in (_KIND_CONST_PTR, _KIND_PTR):
                key = (a.ctypes.data, a.nbytes)
                if key not in boxes:
                    box = np.full(a.nbytes + 2 * GUARD, _FILL, dtype=np.uint8)
                    box[GUARD:GUARD + a.nbytes] = a.reshape(-1).view(np.uint8)
                    boxes[key] = (a, box, kind == _KIND_CONST_PTR)
                else:
                    a0, box, const = boxes[key]
                    boxes[key] = (a0, box, const and kind == _KIND_CONST_PTR)
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
                raise AssertionError(f"{self.entry}: wrote outside an array of {a.shape} {a.dtype}")
            if const:
                if (body != a.reshape(-1).view(np.uint8)).any():
                    raise AssertionError(f"{self.entry}: changed an array it reads through a const pointer")
            else:
                a.reshape(-1).view(np.uint8)[:] = body


class HostLauncher:
    """gpugrad.cuda.kernels' launcher interface on the CPU emulation, for kernels.use_launcher().

    Every launch runs with this launcher's own (grid, block): the kernels must be right
    for any configuration. max_blocks is what the fused functions size their work by.
    Launches are recorded as (entry, n, block asked for, per_block).
    """

    def __init__(self, libs: dict[str, ctypes.CDLL], grid: int = 1, block: int = 1,
                 max_blocks: int | None = None) -> None:
        self.libs = libs
        self.grid, self.block = grid, block
        self._max_blocks = max_blocks if max_blocks is not None else grid
        self.launches: list[tuple[str, int, int, int | None]] = []
        self._kernels: dict[str, HostKernel] = {}

    def xp(self) -> Any:
        return np

    def device(self, array: Any) -> Any:
        return contextlib.nullcontext()

    def pointer(self, array: Any) -> int:
        return array.ctypes.data

    def max_blocks(self) -> int:
        return self._max_blocks

    def kernel(self, name: str, dtype: Any) -> HostKernel:
        spec = kernels.KERNELS[name]
        entry = spec.entry(dtype)
        k = self._kernels.get(entry)
        if k is None:
            k = self._kernels[entry] = HostKernel(self.libs[spec.file], entry)
        return k

    def launch(self, kernel: HostKernel, n: int, args: tuple, *, block: int = kernels.BLOCK,
               per_block: int | None = None) -> None:
        self.launches.append((kernel.entry, n, block, per_block))
        if block > kernels.MAX_ROW_BLOCK and per_block == 1:
            raise AssertionError(f"{kernel.entry}: a row kernel's block is {block}, "
                                 f"over {kernels.MAX_ROW_BLOCK}")
        if kernels.grid_size(n, block, 1 << 30, per_block) == 0:
            kernel.check(tuple(args))                 # nothing launched for n == 0, as on the GPU
            return
        kernel(self.grid, self.block, tuple(args))
