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
            source = kernels.kernel_source(file)
            built[file] = host_build.build(source, kernels.compile_options(), name=file)[0]
        return built[file]
    return library


@pytest.mark.parametrize("name,file,entry", list(_entries()))
def test_written_parameters_match_the_kernel_signature(libraries, name, file, entry):
    params = host_build.HostKernel(libraries(file), entry).params
    written = tuple(i for i, (kind, _, _) in enumerate(params) if kind == host_build.KIND_PTR)
    assert cuda_trace.written_parameters(name, entry) == written


@pytest.fixture
def cuda():
    import gpugrad as gg

    if not gg.cuda.is_available():
        pytest.skip(f"no CUDA device: {gg.cuda.unavailable_reason()}")
    return gg.backend.load_cupy()


@pytest.mark.cuda
def test_every_generated_kernel_equals_the_calls_it_replaces(cuda):
    """Train a few steps with every activation and optimizer (dropout on), then check each kernel
    gg.jit generated against the plain calls it replaced, on random inputs (fuse.check)."""
    import numpy as np
    from test_jit import OPTIMIZERS, _run

    import gpugrad as gg
    from gpugrad.jit import fuse
    from gpugrad.nn.layers import ACTIVATIONS

    for activation in sorted(ACTIVATIONS):
        _run(3, True, device="cuda", dtype=gg.float32, activation=activation, dropout=0.25)
    for optimizer in sorted(OPTIMIZERS):
        _run(3, True, device="cuda", dtype=gg.float64, optimizer=optimizer, activation="gelu", dropout=0.1)
    assert len(fuse.GENERATED) >= 5
    rng = np.random.default_rng(0)
    for kernel in fuse.GENERATED.values():
        fuse.check(kernel, cuda, rng)


@pytest.mark.cuda
def test_replays_run_as_cuda_graphs_around_the_matmuls(cuda):
    """On CUDA the replay's device work between cuBLAS calls runs as captured graphs (CuPy refuses to
    capture cuBLAS), from the second replay on; the numbers stay the eager ones (test_jit.py)."""
    from test_jit import _run

    import gpugrad as gg

    run = _run(6, True, device="cuda", dtype=gg.float32, activation="gelu", dropout=0.2)[4]
    (report,) = run.launch_report()
    assert report["graphs"] >= 3 and report["work_in_graphs"] >= 10
    assert report["refused"] == []
    assert report["launches_outside_graphs"] >= 6          # the matmuls, the optimizer's kernel...
