"""Faults planted in the ranks of a `gpugrad train --nproc N` job, for test_train_distributed.py.

The test puts a ``sitecustomize.py`` that calls ``install()`` on the job's PYTHONPATH, so every
process the job starts (the one given --nproc, and each rank under mpiexec) runs it at startup:

- ``GG_TEST_ONLY_RANK0_WRITES=DIR``: on every rank but 0, creating, opening for writing or
  renaming anything inside DIR raises PermissionError naming the rank and the path (the job then
  fails with that rank's error);
- ``GG_TEST_FAIL=RANK:STEP``: rank RANK raises RuntimeError in its STEP-th training step;
- ``GG_TEST_STOP=RANK:STEP``: rank RANK alone sends itself SIGUSR1 (stop and save) in its STEP-th step;
- ``GG_TEST_BAD_OPTION=RANK``: rank RANK finds a bad option (a UsageError) while checking them.
"""

from __future__ import annotations

import builtins
import os
import signal


def _rank() -> int:
    from gpugrad.distributed import env

    launch = env.from_environment()
    return launch.rank if launch.launcher else -1          # -1: the process that starts the ranks


def install() -> None:
    rank = _rank()
    guarded = os.environ.get("GG_TEST_ONLY_RANK0_WRITES")
    if guarded and rank > 0:
        _refuse_writes(os.path.realpath(guarded), rank)
    for variable, planted in (("GG_TEST_FAIL", _fail), ("GG_TEST_STOP", _stop)):
        value = os.environ.get(variable)
        if value and rank == int(value.split(":")[0]):
            _at_step(int(value.split(":")[1]), planted(rank))
    bad = os.environ.get("GG_TEST_BAD_OPTION")
    if bad and rank == int(bad):
        _bad_option(rank)


def _refuse_writes(directory: str, rank: int) -> None:
    def inside(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and \
            os.path.realpath(os.fspath(path)).startswith(directory + os.sep)

    def refuse(path) -> None:
        raise PermissionError(f"planted: rank {rank} must not write, and wrote {path}")

    real_open, real_os_open, real_replace, real_makedirs = builtins.open, os.open, os.replace, os.makedirs

    def open_(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if inside(dst):
            refuse(dst)
        return real_replace(src, dst, *args, **kwargs)

    def makedirs(name, *args, **kwargs):
        if inside(os.path.join(name, "")) or os.path.realpath(os.fspath(name)) == directory:
            refuse(name)
        return real_makedirs(name, *args, **kwargs)

    builtins.open, os.open, os.replace, os.makedirs = open_, os_open, replace, makedirs


def _fail(rank: int):
    def fail(step: int) -> None:
        raise RuntimeError(f"planted failure on rank {rank} in step {step}")
    return fail


def _stop(rank: int):
    def stop(step: int) -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
    return stop


def _at_step(step: int, action) -> None:
    """Run ``action(step)`` in this rank's ``step``-th training step (counted from 1), after the step."""
    from gpugrad import train

    real = train._Run._step
    steps = []

    def step_then_act(self, *args):
        real(self, *args)
        steps.append(1)
        if len(steps) == step:
            action(step)

    train._Run._step = step_then_act


def _bad_option(rank: int) -> None:
    from gpugrad import train

    def check_world(cfg, world):
        raise train.UsageError(f"--data {cfg.data}: planted: unreadable on rank {rank}")

    train.check_world = check_world
