"""The tests' side of running kernels/*.cu on the CPU: each kernel file built, and a launcher they configure.

gpugrad.cuda.emulator.host_build builds a kernel source with g++ after shim.h and launches
its entry points (HostKernel checks each argument against the C parameter list and guards
every array). build_library() builds one kernel file from the loader's own source text and
options (gpugrad.cuda.kernels.kernel_source), as the emulated RawModule does. HostLauncher
plugs the emulation into gpugrad.cuda.kernels (use_launcher) with plain NumPy arrays as device
memory, so the fused functions run unchanged with a launch configuration the test chooses
(GPUGRAD_EMULATE_CUDA runs the whole CUDA path instead, with one fixed configuration).
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
from gpugrad.cuda.emulator import host_build
from gpugrad.cuda.emulator.host_build import HostKernel, compiler

__all__ = ["HostKernel", "HostLauncher", "build_library", "compiler", "entries_of", "exported_entries"]


def entries_of(file: str) -> list[str]:
    """The entry points gpugrad.cuda.kernels.KERNELS lists for one .cu file."""
    return [e for spec in kernels.KERNELS.values() if spec.file == file for e in spec.entries]


def build_library(cu_file: str) -> tuple[Path, tuple[str, ...]]:
    """kernels/<cu_file> built for the CPU from the loader's source and options: (library, entry points)."""
    lib, entries = host_build.build(kernels.kernel_source(cu_file), kernels.compile_options(), name=cu_file)
    return Path(lib._name), entries


def exported_entries(lib_path: Path) -> set[str]:
    """Every kernel entry point (NAME_f32/_f64/_f16, NAME_u32/_u64) the compiled library defines, from nm."""
    nm = shutil.which("nm")
    if nm is None:
        raise RuntimeError("nm (binutils) is needed to list a library's symbols")
    out = subprocess.run([nm, "-D", "--defined-only", str(lib_path)], capture_output=True, text=True,
                         check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    return {n for n in names if n.rsplit("_", 1)[-1] in ("f16", "f32", "f64", "u32", "u64")
            and not n.startswith("gg_")}


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
