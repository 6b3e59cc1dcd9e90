"""Start a command as a job of N processes under mpiexec, for ``gpugrad train --nproc N``.

The job runs in its own session, so the terminal's Ctrl-C reaches this process alone, which
relays it: the first Ctrl-C sends mpiexec SIGUSR1, which Open MPI's mpiexec forwards to every
rank (as MPICH's Hydra is meant to; not checked here), and gpugrad train takes it as "stop after
this step and save"; a second one sends SIGINT, on which mpiexec ends the job at once. SIGTERM
is passed on as it is.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from typing import Any

from . import api
from .mpi import INSTALL_HINT

TERMINAL_VARIABLE = "GPUGRAD_TERMINAL"     # "1": the launching process's stderr is a terminal


def mpiexec_command(nproc: int) -> list[str]:
    """``mpiexec -n N`` with Open MPI's flags for more ranks than cores and for root; RuntimeError
    saying what to install when mpi4py or mpiexec is missing."""
    if not api.is_available():
        raise RuntimeError(f"{nproc} processes run through MPI, and mpi4py is not installed: {INSTALL_HINT}")
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    exe = shutil.which("mpiexec", path=search)
    if exe is None:
        raise RuntimeError(f"{nproc} processes are started by mpiexec, and there is none on PATH or beside "
                           f"{sys.executable}: {INSTALL_HINT}, or load your cluster's MPI")
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        text = (version.stdout + version.stderr).lower()
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(f"{exe} --version failed ({err}); is it a working MPI launcher?") from None
    flags: list[str] = []
    if "open mpi" in text or "open-mpi" in text or "prte" in text:
        flags.append("--oversubscribe")                 # a slot per process even past the core count
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--allow-run-as-root")
    return [exe, *flags, "-n", str(nproc)]


def run(mpiexec: list[str], command: list[str]) -> int:
    """Run ``command`` under ``mpiexec`` (``mpiexec_command(N)``) and return the job's exit code (128 + N
    for signal N), relaying Ctrl-C as the module says."""
    environ = dict(os.environ)
    if sys.stderr.isatty():
        environ[TERMINAL_VARIABLE] = "1"
    proc: subprocess.Popen | None = None
    interrupts = 0

    def relay(signum: int, frame: Any) -> None:
        nonlocal interrupts
        if signum == signal.SIGINT:
            interrupts += 1
            signum = signal.SIGUSR1 if interrupts == 1 else signal.SIGINT
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    # the handlers first: from the moment the job exists, no Ctrl-C may leave it running alone
    main = threading.current_thread() is threading.main_thread()     # where signals can be handled
    previous = {s: signal.signal(s, relay) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        proc = subprocess.Popen([*mpiexec, *command], env=environ, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        if interrupts:                                  # Ctrl-C while it was being started
            proc.send_signal(signal.SIGINT)
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code
