"""Input checks made on the device, raised at the next read by the host.

Checking class indices or embedding indices on the host would make it wait for the GPU
on every call. Instead the check runs on the device: a kernel (gg::flag_bad_value in
kernels/common.cuh) or a few array ops write the first bad value into a small flag array,
four int64s {found, value, a, b} per (op, device). The next time gpugrad reads from the
device (``.item()``, ``float()``, ``.numpy()``, ``.tolist()``, printing, ``.cpu()``: the
backend calls raise_pending() first), the armed flags are read, and the first error found
raises as the CPU would have raised it, naming the op and the bad value. Until then the
results computed from the bad input are garbage (NaN losses), never returned as if right.

    flags = checks.flags("cross_entropy", logits, message)   # for a kernel to write into
    checks.record("Embedding", indices, bad_mask, message, a=num_embeddings)   # with array ops
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import backend

# message(value, a, b) -> the error text, as the CPU path words it
Message = Callable[[int, int, int], str]

_flags: dict[tuple[str, int], Any] = {}                  # (op, device index) -> int64 (4,) device array
_armed: dict[tuple[str, int], tuple[Any, Message]] = {}  # written to since the last read


def flags(op: str, like: Any, message: Message) -> Any:
    """The flag array of ``op`` on ``like``'s device, armed: a kernel records a bad value in it."""
    xp = backend.namespace(like)
    device = backend.device_of(like)
    key = (op, device.index)
    buf = _flags.get(key)
    if buf is None:
        with backend.device_scope(like):
            buf = _flags[key] = xp.zeros(4, dtype=xp.int64)
    _armed[key] = (buf, message)
    backend.pending_device_checks = raise_pending
    return buf


def record(op: str, values: Any, bad: Any, message: Message, a: int = 0, b: int = 0) -> None:
    """Record the first of ``values`` where ``bad`` is True (same shapes), with array ops on the device."""
    if values.size == 0:
        return
    xp = backend.namespace(values)
    buf = flags(op, values, message)
    with backend.device_scope(values):
        bad = bad.reshape(-1)
        first = bad.argmax()                                  # 0 when nothing is bad
        write = bad[first] & (buf[0] == 0)                    # a new error, and none kept before
        # device values and Python scalars only: nothing is copied from the host
        for slot, value in enumerate((1, values.reshape(-1)[first], a, b)):
            buf[slot] = xp.where(write, value, buf[slot])


def raise_pending() -> None:
    """Read the armed flags (a host read: callers are about to read anyway); raise the first error."""
    backend.pending_device_checks = None
    while _armed:
        key, (buf, message) = next(iter(_armed.items()))
        del _armed[key]
        found, value, a, b = (int(v) for v in backend.to_numpy(buf))
        if found:
            buf[...] = 0
            if _armed:
                backend.pending_device_checks = raise_pending
            raise IndexError(f"{message(value, a, b)} (found on {backend.device_of(buf)} by a check on the "
                             "device, raised at this read from it; what was computed from it is not valid)")


def pending() -> bool:
    """True while some device check has not been read."""
    return bool(_armed)


__all__ = ["flags", "record", "raise_pending", "pending"]
