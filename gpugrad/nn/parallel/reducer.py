"""Gradient buckets for DistributedDataParallel: averaged over ranks while backward still runs.

Parameters are packed, in reverse registration order (roughly the order backward finishes
their gradients), into flat buckets of about ``cap_bytes`` each, one dtype and device per
bucket. When backward has accumulated a parameter's gradient (its post-accumulate hook),
the gradient is divided by the world size into its bucket slot; when a bucket's last slot
is filled, its all-reduce (sum) starts, asynchronously, and the rest of backward runs
meanwhile (each later hook also tests the started ones: without a progress thread, an MPI
library advances a nonblocking collective only inside MPI calls). Buckets start strictly
in order (bucket k only after buckets 0..k-1), so every rank issues the same collectives in
the same order whatever order its gradients arrive in. At the end of backward (an engine
callback) the reducer waits for every bucket and copies the averages back into ``.grad``.

With ``find_unused_parameters`` a parameter that got no gradient contributes its current
``.grad`` (or zeros), and each bucket carries one extra element per parameter, 1 where this
rank has a gradient for it: after the reduction, a parameter no rank had a gradient for
keeps ``.grad = None``, as in PyTorch, at no extra collective.
"""

from __future__ import annotations

import weakref
from typing import Any

from ... import backend, engine
from ...distributed.group import ProcessGroup, ReduceOp, Work
from ...tensor import Tensor
from ..parameter import Parameter


class Bucket:
    """Flat storage for some parameters' gradients (plus their has-gradient flags), reduced as one."""

    def __init__(self, params: list[Parameter], names: list[str], with_flags: bool) -> None:
        self.params = params
        self.names = names
        self.offsets = []
        total = 0
        for p in params:
            self.offsets.append(total)
            total += p.numel()
        self.numel = total
        first = params[0].data
        xp = backend.namespace(first)
        with backend.device_scope(first):
            self.flat = xp.zeros(total + (len(params) if with_flags else 0), dtype=first.dtype)
        self.filled = [False] * len(params)
        self.pending = len(params)
        self.work: Work | None = None

    def reset(self) -> None:
        self.filled = [False] * len(self.params)
        self.pending = len(self.params)
        self.work = None

    def slot(self, i: int) -> Any:
        start = self.offsets[i]
        return self.flat[start:start + self.params[i].numel()]


class Reducer:
    """The buckets of one DDP model and the state of the backward pass being synchronised."""

    def __init__(self, named_params: list[tuple[str, Parameter]], group: ProcessGroup, cap_bytes: int,
                 find_unused_parameters: bool) -> None:
        self.group = group
        self.find_unused = find_unused_parameters
        self.buckets = _pack(list(reversed(named_params)), cap_bytes, find_unused_parameters)
        self.where = {id(p): (b, i) for b in self.buckets for i, p in enumerate(b.params)}
        self.armed = False          # the next backward's gradients are to be synchronised
        self.finishing = False      # the end-of-backward callback is queued
        self.next = 0               # the next bucket to start
        me = weakref.ref(self)      # hooks live on the parameters; they must not keep the reducer alive
        self.handles = [p.register_post_accumulate_grad_hook(_ready_hook(me)) for _, p in named_params]

    def prepare(self) -> None:
        """Called by each synchronised forward: the next backward reduces the gradients."""
        for b in self.buckets:
            if b.work is not None:
                b.work.wait()       # a backward abandoned midway (an exception): drain it
            b.reset()
        self.next = 0
        self.armed = True
        self.finishing = False

    def queue_finish(self) -> None:
        if self.armed and not self.finishing:
            self.finishing = True
            engine.queue_callback(self.finish)

    def grad_ready(self, param: Parameter) -> None:
        """A post-accumulate hook: put the gradient, divided by the world size, into its bucket."""
        if not self.armed:
            return
        self.queue_finish()
        bucket, i = self.where[id(param)]
        if bucket.filled[i]:
            return
        self._fill(bucket, i, param.grad.data)
        for started in self.buckets[:self.next]:
            started.work.is_completed()     # MPI advances a nonblocking collective only when asked

    def finish(self) -> None:
        """The end of backward: start what is left, wait for every bucket, write the averages back."""
        self.armed = False
        missing = [(b, i) for b in self.buckets[self.next:] for i, done in enumerate(b.filled) if not done]
        if missing and not self.find_unused:
            names = ", ".join(f"{b.names[i]} {b.params[i].shape}" for b, i in missing)
            none_reached = len(missing) == sum(len(b.params) for b in self.buckets)
            raise RuntimeError(
                f"DistributedDataParallel: these parameters received no gradient in this backward: "
                f"{names}. Pass find_unused_parameters=True if they are legitimately unused in some "
                "steps, or freeze them (requires_grad_(False)) before wrapping the model"
                + ("; gg.grad and autograd.grad return gradients instead of accumulating .grad, so "
                   "DDP cannot average them: use backward(), or differentiate model.module" if none_reached
                   else ""))
        for b, i in missing:
            grad = b.params[i].grad
            self._fill(b, i, None if grad is None else grad.data)
        for b in self.buckets:
            b.work.wait()
            self._write_back(b)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    # ------------------------------------------------------------------ the machinery
    def _fill(self, bucket: Bucket, i: int, grad: Any) -> None:
        slot = bucket.slot(i)
        xp = backend.namespace(slot)
        with backend.device_scope(slot):
            if grad is None:
                slot.fill(0)
            else:
                xp.divide(grad.reshape(-1), self.group.size, out=slot)
            if self.find_unused:
                bucket.flat[bucket.numel + i] = grad is not None
        bucket.filled[i] = True
        bucket.pending -= 1
        while self.next < len(self.buckets) and self.buckets[self.next].pending == 0:
            ready = self.buckets[self.next]
            ready.work = self.group.all_reduce(ready.flat, ReduceOp.SUM)
            self.next += 1

    def _write_back(self, bucket: Bucket) -> None:
        flags = bucket.flat[bucket.numel:] if self.find_unused else None
        used = None if flags is None else backend.to_numpy(flags) > 0    # one small copy per bucket
        for i, p in enumerate(bucket.params):
            averaged = bucket.slot(i).reshape(p.shape)
            if p.grad is not None:
                p.grad.data[...] = averaged
            elif used is not None and used[i]:
                p.grad = Tensor._wrap(averaged.copy())     # no rank here had one, some rank did


def _ready_hook(reducer: weakref.ref) -> Any:
    def on_accumulated(param: Parameter) -> None:
        r = reducer()
        if r is not None:
            r.grad_ready(param)
    return on_accumulated


def _pack(named_params: list[tuple[str, Parameter]], cap_bytes: int, with_flags: bool) -> list[Bucket]:
    """Group parameters, in the given order, into buckets of one dtype and device, each at most
    ``cap_bytes`` (a larger parameter gets a bucket of its own), in the order they were opened."""
    open_by_kind: dict[tuple, int] = {}          # (dtype, device) -> index in groups of the open one
    groups: list[list[tuple[str, Parameter]]] = []
    sizes: list[int] = []
    for name, p in named_params:
        kind = (p.dtype, str(p.device))
        nbytes = p.numel() * p.dtype.itemsize
        k = open_by_kind.get(kind)
        if k is None or (sizes[k] and sizes[k] + nbytes > cap_bytes):
            open_by_kind[kind] = k = len(groups)
            groups.append([])
            sizes.append(0)
        groups[k].append((name, p))
        sizes[k] += nbytes
    return [Bucket([p for _, p in g], [n for n, _ in g], with_flags) for g in groups]
