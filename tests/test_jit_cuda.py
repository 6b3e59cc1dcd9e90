"""gg.jit on CUDA: what its trace reads from the kernels, and its replays (the emulator in CI).

The training and registry tests (test_jit.py, test_jit_registry.py) run on "cuda" too; here:
the arrays each kernel launch writes, as gg.jit reads them from kernels/*.cu (its own parse
of the declarations), equal the kernels' C signatures as g++ compiles them.
"""

from __future__ import annotations

import pytest

from gpugrad.cuda import kernels
from gpugrad.cuda.emulator import host_build
from gpugrad.jit import cuda_trace


def _entries():
    for name, spec in sorted(kernels.KERNELS.items()):
        for entry in spec.entries:
            yield pytest.param(name, spec.file, entry, id=entry)


@pytest.fixture(scope="module")
def libraries():
    if host_build.compiler() is None:
        pytest.skip("g++ is not on PATH: the kernels' C signatures cannot be built")
    built = {}

    def library(file):
        if file not in built:
            built[file] = host_build.build(kernels.kernel_source(file), kernels.compile_options(), name=file)[0]
        return built[file]
    return library


@pytest.mark.parametrize("name,file,entry", list(_entries()))
def test_written_parameters_match_the_kernel_signature(libraries, name, file, entry):
    params = host_build.HostKernel(libraries(file), entry).params
    written = tuple(i for i, (kind, _, _) in enumerate(params) if kind == host_build.KIND_PTR)
    assert cuda_trace.written_parameters(name, entry) == written
