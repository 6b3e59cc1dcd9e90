"""A rank that raises ends the whole job, with its own traceback, instead of leaving the others waiting.

In a job of several processes an uncaught exception on one rank would leave every other
rank blocked in its next collective forever. While a process group is up, the handler
installed here prints the traceback (each line prefixed with the rank, since the ranks'
output interleaves) and then aborts the job through the backend (MPI_Abort), so the
launcher stops every rank and exits with an error.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

_previous: list[Any] = []       # the excepthook to restore when the group is destroyed


def install(rank: int, size: int, abort: Callable[[], None]) -> None:
    """Make an uncaught exception print its traceback, prefixed with the rank, then call ``abort``."""
    def abort_job(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        report_and_abort(rank, size, err, abort)

    if not _previous:
        _previous.append(sys.excepthook)
    sys.excepthook = abort_job


def report_and_abort(rank: int, size: int, err: BaseException, abort: Callable[[], None]) -> None:
    """Print ``err``'s traceback, each line prefixed with the rank, then end the job with ``abort``."""
    try:
        lines = "".join(traceback.format_exception(type(err), err, err.__traceback__)).splitlines()
        prefix = f"[rank {rank}] "
        sys.stderr.write(f"{prefix}gpugrad.distributed: rank {rank} of {size} failed; aborting the job\n")
        sys.stderr.write("".join(f"{prefix}{line}\n" for line in lines))
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        abort()


def uninstall() -> None:
    """Restore the excepthook that was in place before ``install``."""
    if _previous:
        sys.excepthook = _previous.pop()
