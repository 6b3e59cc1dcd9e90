"""What ``gpugrad info`` says about multi-process support: the MPI and NCCL this process can use."""

from __future__ import annotations

import importlib.metadata

from . import env


def describe() -> list[str]:
    """Lines for ``gpugrad info``: mpi4py and its MPI library, CUDA-awareness, NCCL, the launcher.

    Starts neither MPI nor a GPU context: safe to call outside mpiexec.
    """
    return [f"mpi: {_mpi_line()}", f"nccl: {_nccl_line()}", f"launcher: {_launcher_line()}"]


def _mpi_line() -> str:
    from .mpi import cuda_aware, load_mpi  # noqa: PLC0415

    try:
        MPI = load_mpi(initialize=False)
    except RuntimeError as err:
        return f"unavailable: {err}"
    library = MPI.Get_library_version().strip().splitlines()[0].split(",")[0]
    major, minor = MPI.Get_version()
    aware, how = cuda_aware(MPI)
    return (f"mpi4py {_version('mpi4py')}, {library} (MPI {major}.{minor}); CUDA-aware: "
            f"{ {True: 'yes', False: 'no', None: 'unknown'}[aware] } ({how})")


def _nccl_line() -> str:
    from .nccl import nccl_version  # noqa: PLC0415

    return nccl_version()


def _launcher_line() -> str:
    try:
        launch = env.from_environment()
    except RuntimeError as err:
        return str(err)
    if launch.launcher is None:
        return "none (a single process; start several with mpiexec -n N or srun)"
    return f"{launch.launcher}: rank {launch.rank} of {launch.world_size}, local rank {launch.local_rank}"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"
