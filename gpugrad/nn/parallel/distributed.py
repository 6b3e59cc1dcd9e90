"""DistributedDataParallel: one model replica per process, gradients averaged over the ranks.

    dist.init_process_group("mpi")
    model = DistributedDataParallel(nn.MLP([784, 512, 512, 10]))
    loss = F.cross_entropy(model(x_shard), y_shard)
    loss.backward()                 # .grad is now the average over ranks of each rank's gradient
    opt.step()                      # any optimizer: every rank takes the same step
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ... import backend, tree
from ...distributed import api
from ...engine import is_grad_enabled
from ...tensor import Tensor
from ..module import Module
from .reducer import Reducer


class DistributedDataParallel(Module):
    """Wrap ``module`` so that backward averages its gradients over all ranks of the process group.

    At construction every rank checks that the models agree (names, shapes, dtypes) and takes
    rank 0's parameters and buffers. Each forward outside ``no_sync()`` (with grad enabled)
    arms the next backward: gradients are bucketed (``bucket_cap_mb`` MiB each) and every
    bucket is all-reduced as soon as its last gradient is ready, while backward goes on.
    A parameter that gets no gradient is an error naming it, unless ``find_unused_parameters``.
    With ``broadcast_buffers``, each training forward first copies rank 0's buffers everywhere.
    """

    def __init__(self, module: Module, device_ids: list[int] | None = None, output_device: Any = None,
                 broadcast_buffers: bool = True, bucket_cap_mb: float = 25.0,
                 find_unused_parameters: bool = False) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError("DistributedDataParallel: expected a gpugrad.nn.Module, got "
                            f"{type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb!r}")
        group = api.default_group("DistributedDataParallel")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.bucket_cap_mb = bucket_cap_mb
        object.__setattr__(self, "_group", group)
        object.__setattr__(self, "_sync", True)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        _check_devices(module, group, device_ids, output_device)
        _check_same_model(module, group)
        _make_contiguous(module)
        _broadcast_from_rank0(group, [t.data for t in [*module.parameters(), *module.buffers()]])
        reducer = Reducer(named, group, int(bucket_cap_mb * 2**20), self.find_unused_parameters) \
            if named else None
        object.__setattr__(self, "reducer", reducer)

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        synchronise = self.reducer is not None and self._sync and is_grad_enabled()
        if synchronise and self.broadcast_buffers and self.module.training:
            buffers = [b.data for b in self.module.buffers()]
            if buffers:
                _broadcast_from_rank0(self._group, buffers)
        if synchronise:
            self.reducer.prepare()
        out = self.module(*inputs, **kwargs)
        if synchronise:
            # the reducer's end-of-backward callback is queued when backward reaches an output,
            # so a rank whose parameters all go unused still takes part in the reduction
            for leaf in tree.flatten(out)[0]:
                if isinstance(leaf, Tensor) and leaf.grad_fn is not None:
                    leaf.register_hook(self._output_reached)
        return out

    def _output_reached(self, grad: Tensor) -> None:
        self.reducer.queue_finish()

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Inside, forward/backward accumulate gradients locally; the first synchronised backward
        after it averages the accumulated ``.grad`` over ranks (gradient accumulation)."""
        previous = self._sync
        object.__setattr__(self, "_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_sync", previous)

    def extra_repr(self) -> str:
        return (f"world_size={self._group.size}, bucket_cap_mb={self.bucket_cap_mb}, "
                f"buckets={0 if self.reducer is None else len(self.reducer.buckets)}")


def _check_same_model(module: Module, group: Any) -> None:
    """Every rank must hold the same parameters and buffers: a clear error, on every rank, if not."""
    mine = [("parameter", n, p.shape, str(p.dtype), p.requires_grad) for n, p in module.named_parameters()]
    mine += [("buffer", n, b.shape, str(b.dtype), False) for n, b in module.named_buffers()]
    if group.size == 1:
        return
    models = group.all_gather_object(mine)
    problems = []
    for rank, theirs in enumerate(models):
        if theirs == models[0]:
            continue
        reference = models[0]
        first = next((k for k, (a, b) in enumerate(zip(reference, theirs)) if a != b), None)
        if first is None:
            problem = f"{len(theirs)} parameters and buffers, where rank 0 has {len(reference)}"
        else:
            problem = f"{_entry(theirs[first])}, where rank 0 has {_entry(reference[first])}"
        problems.append(f"rank {rank} has {problem}")
    if problems:
        raise RuntimeError("DistributedDataParallel: the model differs across ranks: " + "; ".join(problems)
                           + ". Every rank must build the same model (same layers, sizes and dtypes)")


def _entry(entry: tuple) -> str:
    kind, name, shape, dtype, grad = entry
    return f"{kind} {name!r} of shape {shape} {dtype}" + ("" if grad or kind == "buffer" else " (frozen)")


def _check_devices(module: Module, group: Any, device_ids: list[int] | None, output_device: Any) -> None:
    devices = {str(t.device) for t in [*module.parameters(), *module.buffers()]}
    if len(devices) > 1:
        raise ValueError(f"DistributedDataParallel: the module's tensors are on several devices "
                         f"({sorted(devices)}); one process drives one device: move the model with .to(...)")
    device = next(iter(devices), "cpu")
    if group.backend == "nccl" and device != f"cuda:{group.device_id}":
        raise ValueError(f"DistributedDataParallel: the nccl backend of this rank runs on "
                         f"cuda:{group.device_id}, the model is on {device}; move it with "
                         f".to('cuda:{group.device_id}') first")
    for given in (*(device_ids or ()), *(() if output_device is None else (output_device,))):
        wanted = backend.as_device(f"cuda:{given}" if isinstance(given, int) else given)
        if str(wanted) != device:
            raise ValueError(f"DistributedDataParallel: device_ids/output_device say {wanted}, the model "
                             f"is on {device}; move the model there first (gpugrad never moves it for you)")


def _make_contiguous(module: Module) -> None:
    """Collectives need contiguous memory: give any strided parameter or buffer a contiguous copy."""
    for t in [*module.parameters(), *module.buffers()]:
        if not t.data.flags.c_contiguous:
            t.data = backend.namespace(t.data).ascontiguousarray(t.data)


def _broadcast_from_rank0(group: Any, arrays: list[Any]) -> None:
    works = [group.broadcast(a, 0) for a in arrays]     # all in flight at once
    for w in works:
        w.wait()
