"""Multi-process benchmarks: all-reduce bandwidth, and a DDP training step against PyTorch's.

    python -m benchmarks.bench_distributed allreduce [--nproc 2] [--rounds 3] [--quick]
    python -m benchmarks.bench_distributed ddp [--nproc 1,2] [--rounds 3] [--quick]

allreduce: in-place sum all-reduce of float32 buffers from 4 KiB to 64 MiB, through
``gg.distributed.all_reduce`` (on a gg.Tensor) and through mpi4py's own
``comm.Allreduce(MPI.IN_PLACE, buf)`` on the same NumPy buffers (mpi4py is the floor:
gpugrad's goal is within 5% of it). Prints the median time per call (the slowest rank's),
the bus bandwidth 2(N-1)/N * bytes / time (what a ring all-reduce moves per rank) and the
ratio gpugrad / mpi4py.

ddp: one training step (forward, cross-entropy, zero_grad, backward with the gradients
averaged over ranks, SGD) of the MLP 784-512-512-10, float32, batch 128 per rank (weak
scaling), for gpugrad DistributedDataParallel (mpi backend), PyTorch DistributedDataParallel
(gloo backend, rendezvous over TCP on localhost), and the floor: the same step written by hand
in NumPy with one mpi4py Allreduce of all gradients. Prints the median step time (slowest
rank) at each process count and the ratio gpugrad / PyTorch.

Every measurement of every library is its own mpiexec job (a fresh set of processes), the
libraries' order rotates from round to round, and the table shows medians over rounds. BLAS
threads per rank: the machine's cores divided by the ranks (at least 1), for every library.
Run it on a quiet machine; the numbers of a loaded one are noise.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES_BYTES = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]
MLP_SIZES = (784, 512, 512, 10)
BATCH = 128
LR = 0.01
SEED = 20261201


# ----------------------------------------------------------------------------- launching

def mpiexec_prefix() -> list[str]:
    exe = shutil.which("mpiexec")
    if exe is None:
        raise SystemExit("bench_distributed: no mpiexec on PATH; pip install \"gpugrad[distributed]\"")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.lower()
    open_mpi = "open mpi" in version or "prte" in version
    return [exe, *(["--allow-run-as-root", "--oversubscribe"] if open_mpi else [])]


def run_job(nproc: int, args: list[str]) -> dict[str, Any]:
    """Run ``python -m benchmarks.bench_distributed worker ...`` on ``nproc`` ranks; rank 0's JSON."""
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    environ = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [*mpiexec_prefix(), "-n", str(nproc), sys.executable, "-m", "benchmarks.bench_distributed",
           "worker", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    return json.loads(line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rotated(libs: list[str], round_: int) -> list[str]:
    k = round_ % len(libs)
    return libs[k:] + libs[:k]


# ----------------------------------------------------------------------------- drivers

def bench_allreduce(nproc: int, rounds: int, quick: bool) -> str:
    sizes = SIZES_BYTES[:3] if quick else SIZES_BYTES
    libs = ["gpugrad", "mpi4py"]
    samples: dict[str, dict[int, list[float]]] = {lib: {s: [] for s in sizes} for lib in libs}
    for r in range(rounds):
        for lib in rotated(libs, r):
            result = run_job(nproc, ["allreduce", lib, ",".join(map(str, sizes)), "1" if quick else "0"])
            for s in sizes:
                samples[lib][s].append(result[str(s)])
    rows = [f"all-reduce (sum, in place, float32), {nproc} processes, median of {rounds} jobs per library",
            "", "| bytes | gpugrad us | mpi4py us | gpugrad bus GB/s | mpi4py bus GB/s | gpugrad / mpi4py |",
            "|---:|---:|---:|---:|---:|---:|"]
    factor = 2 * (nproc - 1) / nproc
    for s in sizes:
        g, m = (statistics.median(samples[lib][s]) for lib in libs)
        rows.append(f"| {s} | {g * 1e6:.1f} | {m * 1e6:.1f} | {factor * s / g / 1e9:.2f} | "
                    f"{factor * s / m / 1e9:.2f} | {g / m:.3f} |")
    return "\n".join(rows)


def bench_ddp(nprocs: list[int], rounds: int, quick: bool) -> str:
    libs = ["gpugrad", "torch", "numpy"]
    steps = "10" if quick else "40"
    median: dict[tuple[str, int], float] = {}
    for n in nprocs:
        samples: dict[str, list[float]] = {lib: [] for lib in libs}
        for r in range(rounds):
            for lib in rotated(libs, r):
                result = run_job(n, ["ddp", lib, steps, str(free_port())])
                samples[lib].append(result["step_s"])
        for lib in libs:
            median[(lib, n)] = statistics.median(samples[lib])
    rows = [f"DDP step, MLP 784-512-512-10 float32, batch {BATCH} per rank, median of {rounds} jobs",
            "", "| processes | gpugrad ms | PyTorch (gloo) ms | NumPy + mpi4py floor ms "
            "| gpugrad / PyTorch |",
            "|---:|---:|---:|---:|---:|"]
    for n in nprocs:
        g, t, f = (median[(lib, n)] * 1e3 for lib in libs)
        rows.append(f"| {n} | {g:.2f} | {t:.2f} | {f:.2f} | {g / t:.3f} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- workers (one per rank)

def worker_allreduce(lib: str, sizes: list[int], quick: bool) -> dict[str, float]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if lib == "gpugrad":
        import gpugrad as gg
        import gpugrad.distributed as dist

        dist.init_process_group("mpi")
    out: dict[str, float] = {}
    for size in sizes:
        buf = np.ones(size // 4, dtype=np.float32)
        if lib == "gpugrad":
            call = functools.partial(dist.all_reduce, gg.Tensor(buf))
        else:
            call = functools.partial(comm.Allreduce, MPI.IN_PLACE, buf, op=MPI.SUM)
        iters = max(3, min(1000, (2 if quick else 20) * (1 << 20) // size))
        for _ in range(3):
            call()
        best = []
        for _ in range(3 if quick else 7):
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(iters):
                call()
            best.append((time.perf_counter() - start) / iters)
        out[str(size)] = comm.allreduce(statistics.median(best), op=MPI.MAX)
    return out


def mlp_init(sizes: tuple[int, ...] = MLP_SIZES) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(n_in)
        params += [rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),
                   rng.uniform(-bound, bound, (n_out,)).astype(np.float32)]
    return params, rng.standard_normal((BATCH, sizes[0])).astype(np.float32), \
        rng.integers(0, sizes[-1], BATCH).astype(np.int64)


def worker_ddp(lib: str, steps: int, port: int) -> dict[str, float]:
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))
    params, x, y = mlp_init()
    x = x + np.float32(rank)                     # each rank its own batch
    step, barrier, slowest = {"gpugrad": _gpugrad_ddp, "torch": _torch_ddp, "numpy": _numpy_ddp}[lib](
        params, x, y, rank, size, port)
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        barrier()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result = {"step_s": slowest(statistics.median(times))}
    if lib == "torch":      # gloo's threads abort the process at exit unless the group is destroyed
        import torch.distributed as tdist
        tdist.destroy_process_group()
    return result


def _training_step(model, cross_entropy, opt, x, y):
    """One step, the same text for gpugrad and PyTorch (their APIs agree)."""
    def step():
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _gpugrad_ddp(params, x, y, rank, size, port):
    import gpugrad as gg
    import gpugrad.distributed as dist

    dist.init_process_group("mpi")
    model = gg.nn.MLP(list(MLP_SIZES))
    with gg.no_grad():
        for p, src in zip(model.parameters(), params):
            p.copy_(gg.tensor(src))
    ddp = gg.nn.parallel.DistributedDataParallel(model)
    opt = gg.optim.SGD(model.parameters(), lr=LR)
    step = _training_step(ddp, gg.nn.functional.cross_entropy, opt, gg.tensor(x), gg.tensor(y))

    def slowest(v):
        return dist.reduce_metrics({"t": v}, op="max")["t"]

    return step, dist.barrier, slowest


def _torch_ddp(params, x, y, rank, size, port):
    import torch
    import torch.distributed as tdist

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(MLP_SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p, src in zip(model.parameters(), params):
            p.copy_(torch.from_numpy(src))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    step = _training_step(ddp, torch.nn.functional.cross_entropy, opt, torch.from_numpy(x),
                          torch.from_numpy(y))

    def slowest(v):
        t = torch.tensor([v], dtype=torch.float64)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return float(t)

    return step, tdist.barrier, slowest


def flat_buffer(params: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One float32 buffer for all gradients, and a view of it shaped like each parameter."""
    flat = np.empty(sum(p.size for p in params), np.float32)
    views, at = [], 0
    for p in params:
        views.append(flat[at:at + p.size].reshape(p.shape))
        at += p.size
    return flat, views


def numpy_mlp_gradients(params: list[np.ndarray], x: np.ndarray, onehot: np.ndarray,
                        out: list[np.ndarray]) -> None:
    """The mean cross-entropy's gradients of a ReLU MLP ([W1, b1, ...], W of shape (out, in)) into ``out``."""
    acts = [x]
    for i in range(0, len(params), 2):
        h = acts[-1] @ params[i].T + params[i + 1]
        acts.append(np.maximum(h, 0) if i < len(params) - 2 else h)
    logits = acts[-1]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    g = (e / e.sum(axis=1, keepdims=True) - onehot) / len(x)      # d mean CE / d logits
    for i in range(len(params) - 2, -1, -2):
        np.matmul(g.T, acts[i // 2], out=out[i])
        g.sum(axis=0, out=out[i + 1])
        if i:
            g = (g @ params[i]) * (acts[i // 2] > 0)                # back through W and the ReLU


def _numpy_ddp(params, x, y, rank, size, port):
    """The floor: the step by hand in NumPy, all gradients in one flat buffer, one Allreduce."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    flat, views = flat_buffer(params)
    onehot = np.eye(MLP_SIZES[-1], dtype=np.float32)[y]

    def step():
        numpy_mlp_gradients(params, x, onehot, views)
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        np.divide(flat, size, out=flat)
        for p, gp in zip(params, views):
            p -= LR * gp

    return step, comm.Barrier, lambda v: comm.allreduce(v, op=MPI.MAX)


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        kind, lib, *rest = argv[1:]
        if kind == "allreduce":
            result = worker_allreduce(lib, [int(s) for s in rest[0].split(",")], rest[1] == "1")
        else:
            result = worker_ddp(lib, int(rest[0]), int(rest[1]))
        if int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0"))) == 0:
            print(json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_distributed",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["allreduce", "ddp"])
    parser.add_argument("--nproc", default=None,
                        help="processes (allreduce: one count, default 2; ddp: a list, default 1,2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps: proves it runs")
    args = parser.parse_args(argv)
    if args.what == "allreduce":
        print(bench_allreduce(int(args.nproc or 2), args.rounds, args.quick))
    else:
        print(bench_ddp([int(n) for n in (args.nproc or "1,2").split(",")], args.rounds, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
