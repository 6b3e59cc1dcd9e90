"""PyTorch's torch.distributed functions on gpugrad Tensors, over the default process group.

One process group per job (all ranks), created by ``init_process_group``. Collectives
check their Tensors (type, contiguity, device, dtype, sizes), run on the group, and wait
for the result unless ``async_op=True`` (then they return a Work to ``wait()`` on).
They change tensors in place, as PyTorch's do, and record it for backward's checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend, versions
from ..tensor import Tensor
from . import env, faults
from .group import ProcessGroup, ReduceOp, Work, as_reduce_op, check_reducible

BACKENDS = ("mpi", "nccl")
_group: ProcessGroup | None = None


# ----------------------------------------------------------------------------- the process group

def init_process_group(backend: str = "mpi", *, world_size: int | None = None, rank: int | None = None,
                       device_id: int | None = None) -> None:
    """Join this job's process group: "mpi" (CPU and CUDA tensors) or "nccl" (CUDA tensors).

    Rank and world size come from the launcher (mpiexec, srun); ``world_size`` and
    ``rank``, if given, must agree with it. With "nccl" this process drives GPU
    ``device_id`` (default: its local rank modulo the GPUs it sees), made current here.
    """
    global _group
    if _group is not None:
        raise RuntimeError(f"init_process_group: already initialized ({_group.describe()}); call "
                           "destroy_process_group() first")
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: unknown backend {backend!r}; use 'mpi' or 'nccl'")
    launch = env.from_environment()
    group = _create(backend, launch, device_id)
    try:
        _check_agrees(launch, group, world_size, rank)
    except (RuntimeError, ValueError):
        group.destroy()
        raise
    _group = group
    if group.size > 1:
        faults.install(group.rank, group.size, group.abort)


def _create(name: str, launch: env.Launch, device_id: int | None) -> ProcessGroup:
    from .mpi import MpiGroup, load_mpi  # noqa: PLC0415 - mpi4py and CuPy load only when asked for

    if name == "mpi":
        return MpiGroup(load_mpi())
    from .nccl import NcclGroup, load_nccl  # noqa: PLC0415

    cp, _ = load_nccl()
    count = cp.cuda.runtime.getDeviceCount()
    if device_id is None:
        device_id = launch.local_rank % count
    elif not 0 <= device_id < count:
        raise ValueError(f"init_process_group: device_id={device_id}, but this process sees {count} GPU(s)")
    return NcclGroup.create(device_id, load_mpi() if launch.world_size > 1 else None)


def _check_agrees(launch: env.Launch, group: ProcessGroup, world_size: int | None, rank: int | None) -> None:
    if launch.world_size > 1 and launch.world_size != group.size:
        raise RuntimeError(
            f"init_process_group: the launcher ({launch.launcher}) started {launch.world_size} processes, "
            f"but MPI sees {group.size}. mpi4py uses a different MPI than the launcher (compare `which "
            "mpiexec` with mpi4py's library), or srun started the tasks without PMI (srun --mpi=pmix)")
    if world_size is not None and world_size != group.size:
        raise ValueError(f"init_process_group: world_size={world_size}, but the job has {group.size} "
                         f"process(es); start {world_size} with the launcher (mpiexec -n {world_size} ...)")
    if rank is not None and rank != group.rank:
        raise ValueError(f"init_process_group: rank={rank}, but the launcher made this process rank "
                         f"{group.rank}; ranks are the launcher's to assign")


def destroy_process_group() -> None:
    """Leave the process group and release its communicators (``init_process_group`` may follow)."""
    global _group
    group = default_group("destroy_process_group")
    _group = None
    faults.uninstall()
    group.destroy()


def is_initialized() -> bool:
    return _group is not None


def is_available() -> bool:
    """Whether mpi4py is installed (gpugrad's process groups all rendezvous through MPI)."""
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("mpi4py") is not None


def default_group(fn: str) -> ProcessGroup:
    """The group ``init_process_group`` made; a ValueError (as PyTorch's) if there is none."""
    if _group is None:
        raise ValueError(f"{fn}: the default process group has not been initialized; call "
                         "gg.distributed.init_process_group() first (and launch with mpiexec or srun)")
    return _group


def get_rank() -> int:
    return default_group("get_rank").rank


def get_world_size() -> int:
    return default_group("get_world_size").size


def get_backend() -> str:
    return default_group("get_backend").backend


def get_local_rank() -> int:
    """This process's index among the job's processes on its machine (from the launcher)."""
    return env.from_environment().local_rank


# ----------------------------------------------------------------------------- collectives

def all_reduce(tensor: Tensor, op: ReduceOp | str = ReduceOp.SUM, async_op: bool = False) -> Work | None:
    """Combine ``tensor`` over all ranks with ``op``; every rank gets the result, in place."""
    group = default_group("all_reduce")
    op = as_reduce_op(op, "all_reduce")
    (data,) = _arrays("all_reduce", group, tensor=tensor)
    check_reducible("all_reduce", data.dtype, op)
    versions.bump(data, "all_reduce")
    return _done(group.all_reduce(data, op, async_op), async_op)


def broadcast(tensor: Tensor, src: int = 0, async_op: bool = False) -> Work | None:
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every other rank."""
    group = default_group("broadcast")
    _check_rank("broadcast", group, src)
    (data,) = _arrays("broadcast", group, tensor=tensor)
    versions.bump(data, "broadcast")
    return _done(group.broadcast(data, src, async_op), async_op)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor,
                           async_op: bool = False) -> Work | None:
    """``output_tensor`` (world_size times ``input_tensor``'s elements) gets every rank's input, in order."""
    group = default_group("all_gather_into_tensor")
    out, data = _arrays("all_gather_into_tensor", group, output_tensor=output_tensor,
                        input_tensor=input_tensor)
    _check_size("all_gather_into_tensor", out, "output_tensor", data.size * group.size)
    versions.bump(out, "all_gather_into_tensor")
    return _done(group.all_gather(out, data, async_op), async_op)


def all_gather(tensor_list: list[Tensor], tensor: Tensor, async_op: bool = False) -> Work | None:
    """Fill ``tensor_list`` (one tensor per rank, each like ``tensor``) with every rank's ``tensor``.

    Gathered into one buffer, then copied into the list's tensors; all_gather_into_tensor
    avoids that copy.
    """
    group = default_group("all_gather")
    outs = _tensor_list("all_gather", group, "tensor_list", tensor_list, like=tensor)
    (data,) = _arrays("all_gather", group, tensor=tensor, same_device_as=outs)
    gathered = backend.namespace(data).empty((group.size, *data.shape), data.dtype)
    work = group.all_gather(gathered, data, async_op)

    def copy_out() -> None:
        work.wait()
        for out, part in zip(outs, gathered):
            out[...] = part
            versions.bump(out, "all_gather")

    return _done(Work(copy_out), async_op)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op: ReduceOp | str = ReduceOp.SUM,
                          async_op: bool = False) -> Work | None:
    """Reduce ``input`` (world_size blocks of ``output``'s size) over ranks; rank r gets block r."""
    group = default_group("reduce_scatter_tensor")
    op = as_reduce_op(op, "reduce_scatter_tensor")
    out, data = _arrays("reduce_scatter_tensor", group, output=output, input=input)
    _check_size("reduce_scatter_tensor", data, "input", out.size * group.size)
    check_reducible("reduce_scatter_tensor", data.dtype, op)
    versions.bump(out, "reduce_scatter_tensor")
    return _done(group.reduce_scatter(out, data, op, async_op), async_op)


def reduce_scatter(output: Tensor, input_list: list[Tensor], op: ReduceOp | str = ReduceOp.SUM,
                   async_op: bool = False) -> Work | None:
    """Reduce ``input_list[r]`` over ranks into ``output`` on rank r (inputs copied into one buffer)."""
    group = default_group("reduce_scatter")
    op = as_reduce_op(op, "reduce_scatter")
    (out,) = _arrays("reduce_scatter", group, output=output)
    ins = _tensor_list("reduce_scatter", group, "input_list", input_list, like=output)
    check_reducible("reduce_scatter", out.dtype, op)
    xp = backend.namespace(out)
    stacked = xp.stack(ins)
    versions.bump(out, "reduce_scatter")
    return _done(group.reduce_scatter(out, stacked, op, async_op), async_op)


def barrier() -> None:
    """Wait until every rank has reached this call (with "nccl", after its GPU work is done)."""
    default_group("barrier").barrier()


def all_gather_object(object_list: list[Any], obj: Any) -> None:
    """Fill ``object_list`` (world_size entries) with every rank's picklable ``obj``, in rank order."""
    group = default_group("all_gather_object")
    if not isinstance(object_list, list) or len(object_list) != group.size:
        raise ValueError(f"all_gather_object: object_list must be a list of world_size={group.size} "
                         f"entries, got {_describe_list(object_list)}")
    object_list[:] = group.all_gather_object(obj)


def broadcast_object_list(object_list: list[Any], src: int = 0) -> None:
    """Replace every rank's ``object_list`` entries by rank ``src``'s (picklable objects)."""
    group = default_group("broadcast_object_list")
    _check_rank("broadcast_object_list", group, src)
    if not isinstance(object_list, list):
        raise TypeError("broadcast_object_list: object_list must be a list, got "
                        f"{type(object_list).__name__}")
    received = group.broadcast_object(list(object_list), src)
    if len(received) != len(object_list):
        raise ValueError(f"broadcast_object_list: rank {src} sent {len(received)} objects, and this rank's "
                         f"list has {len(object_list)}; give every rank a list of the same length")
    object_list[:] = received


# ----------------------------------------------------------------------------- argument checks

def _done(work: Work, async_op: bool) -> Work | None:
    if async_op:
        return work
    work.wait()
    return None


def _check_rank(fn: str, group: ProcessGroup, src: Any) -> None:
    if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src < group.size:
        raise ValueError(f"{fn}: src={src!r} is not a rank of this job (0 to {group.size - 1})")


def _check_size(fn: str, array: Any, name: str, expected: int) -> None:
    if array.size != expected:
        raise ValueError(f"{fn}: {name} has {array.size} elements (shape {tuple(array.shape)}); it needs "
                         f"{expected} (world_size times the other tensor's)")


def _arrays(fn: str, group: ProcessGroup, same_device_as: Sequence[Any] = (), **tensors: Any) -> list[Any]:
    """The tensors' arrays, after checking each is a contiguous Tensor that the group can reach and
    that all share one device and dtype."""
    arrays = []
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a gpugrad Tensor, got {type(t).__name__}")
        data = t.data
        if not data.flags.c_contiguous:
            raise ValueError(f"{fn}: {name} (shape {t.shape}) is not contiguous; collectives work in "
                             "place on contiguous memory: use c = t.clone(), then t.copy_(c) if needed")
        arrays.append(data)
    _check_devices(fn, group, [*arrays, *same_device_as], list(tensors))
    return arrays


def _tensor_list(fn: str, group: ProcessGroup, name: str, tensors: Any, like: Tensor) -> list[Any]:
    """The arrays of a list of world_size tensors, each with ``like``'s shape, dtype and device."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) != group.size:
        raise ValueError(f"{fn}: {name} must be a list of world_size={group.size} tensors, got "
                         f"{_describe_list(tensors)}")
    arrays = _arrays(fn, group, **{f"{name}[{i}]": t for i, t in enumerate(tensors)})
    if not isinstance(like, Tensor):
        raise TypeError(f"{fn}: expected a gpugrad Tensor, got {type(like).__name__}")
    for i, a in enumerate(arrays):
        if tuple(a.shape) != like.shape or a.dtype != like.dtype:
            raise ValueError(f"{fn}: {name}[{i}] is {tuple(a.shape)} {a.dtype}; every entry must be "
                             f"{like.shape} {like.dtype}, like the tensor")
    return arrays


def _check_devices(fn: str, group: ProcessGroup, arrays: list[Any], names: list[str]) -> None:
    devices = {str(backend.device_of(a)) for a in arrays}
    dtypes = {str(a.dtype) for a in arrays}
    if len(devices) > 1 or len(dtypes) > 1:
        shown = ", ".join(f"{backend.device_of(a)} {a.dtype}" for a in arrays)
        raise ValueError(f"{fn}: the tensors must share one device and dtype, got {shown}")
    device = backend.device_of(arrays[0])
    if group.backend == "nccl" and str(device) != f"cuda:{group.device_id}":  # type: ignore[attr-defined]
        raise RuntimeError(f"{fn}: the nccl backend runs collectives on cuda:{group.device_id}, "  # type: ignore[attr-defined]
                           f"and {names[0]} is on {device}; move it there with .to(...), or use the "
                           "mpi backend for CPU tensors")


def _describe_list(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
