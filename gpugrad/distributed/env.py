"""Where this process stands in the job, as its launcher says: rank, world size, local rank.

mpiexec (Open MPI: OMPI_COMM_WORLD_*; MPICH and Intel MPI's Hydra: PMI_*), Slurm's srun
(SLURM_*) and torchrun-style launchers (RANK, WORLD_SIZE, LOCAL_RANK) each export these
before Python starts, so they can be read without initialising MPI. A process started with
none of them is a job of one.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Launch(NamedTuple):
    """This process's place in the job and the launcher that told us (None: started alone)."""
    rank: int
    world_size: int
    local_rank: int
    launcher: str | None


# (launcher, rank variable, world size variable, local rank variable), most specific first:
# mpiexec inside a Slurm allocation sets both, and the MPI launcher's numbers are the job's.
# Slurm's step size, not SLURM_NTASKS: a batch script (one process) already sees the job's
# task count, and only srun starts the tasks.
_LAUNCHERS = (
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("MPICH/Hydra", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("Slurm srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
)


def from_environment(environ: dict[str, str] | None = None) -> Launch:
    """The rank, world size and local rank the launcher exported (0, 1, 0 when there is none)."""
    env = os.environ if environ is None else environ
    for name, rank_var, size_var, local_var in _LAUNCHERS:
        if rank_var in env and size_var in env:
            rank = _int(env, rank_var)
            size = _int(env, size_var)
            local = _int(env, local_var) if local_var in env else rank
            if size < 1 or not 0 <= rank < size:
                raise RuntimeError(f"the {name} launcher's environment is inconsistent: {rank_var}={rank}, "
                                   f"{size_var}={size}; expected 0 <= rank < world size")
            return Launch(rank, size, local, name)
    return Launch(0, 1, 0, None)


def _int(env: dict[str, str] | os._Environ, var: str) -> int:
    try:
        return int(env[var])
    except ValueError:
        raise RuntimeError(f"the launcher set {var}={env[var]!r}, which is not an integer") from None
