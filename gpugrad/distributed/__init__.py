"""``gg.distributed``: process groups and collectives with PyTorch's names, on MPI and NCCL.

    # mpiexec -n 4 python train.py
    import gpugrad.distributed as dist
    dist.init_process_group("mpi")            # or "nccl": GPU collectives, one GPU per process
    dist.all_reduce(t, op=dist.ReduceOp.AVG)  # in place, on every rank
    model = gg.nn.parallel.DistributedDataParallel(model)

Backends: "mpi" (mpi4py on the launcher's MPI; CPU and CUDA tensors) and "nccl" (CuPy's
NCCL, unique id over MPI). Importing this package loads neither mpi4py nor CuPy. See
docs/distributed.md for launching on one machine and on a cluster.
"""

from .api import (
    all_gather,
    all_gather_into_tensor,
    all_gather_object,
    all_reduce,
    barrier,
    broadcast,
    broadcast_object_list,
    destroy_process_group,
    get_backend,
    get_local_rank,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    reduce_scatter,
    reduce_scatter_tensor,
)
from .group import ReduceOp, Work
from .info import describe
from .training import AnyRankFlag, is_main_process, rank_zero_only, reduce_metrics

__all__ = [
    "init_process_group", "destroy_process_group", "is_initialized", "is_available",
    "get_rank", "get_world_size", "get_backend", "get_local_rank",
    "all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
    "reduce_scatter_tensor", "barrier", "all_gather_object", "broadcast_object_list",
    "ReduceOp", "Work", "describe", "is_main_process", "rank_zero_only", "reduce_metrics", "AnyRankFlag",
]
