"""gg.distributed and DDP across processes: each test starts a job of 2 or 3 ranks with mpiexec.

The workers are this file's ``worker_*`` functions: ``python tests/test_distributed_mpi.py NAME``
runs one on every rank, and each rank prints ``OK NAME`` at the end. A worker that fails
raises, and the fault handler ends the job with that rank's traceback. Skipped where mpi4py
or mpiexec is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gpugrad.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


# ----------------------------------------------------------------------------- launching jobs

def launch(worker: str, n: int) -> subprocess.CompletedProcess:
    import optional
    import pytest

    from gpugrad.distributed.launch import mpiexec_command

    optional.need("mpi4py")
    try:
        mpiexec = mpiexec_command(n)        # with Open MPI's flags for CI: root, more ranks than cores
    except RuntimeError as err:
        pytest.skip(str(err))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_"))}
    environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")]))
    return subprocess.run([*mpiexec, sys.executable, str(Path(__file__).resolve()), worker],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=TIMEOUT_S)


def run_ok(worker: str, n: int) -> None:
    proc = launch(worker, n)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.count(f"OK {worker}") == n, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- the tests

def test_every_collective_on_2_ranks():
    run_ok("collectives", 2)


def test_every_collective_on_3_ranks():
    run_ok("collectives", 3)


def test_ddp_equals_full_batch_training_on_2_ranks():
    run_ok("ddp", 2)


def test_ddp_equals_full_batch_training_on_3_ranks():
    run_ok("ddp", 3)


def test_a_failing_rank_ends_the_job_with_its_error():
    start = time.monotonic()
    proc = launch("failing_rank", 2)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "[rank 1] ValueError: planted failure on rank 1" in proc.stderr, proc.stderr
    assert "[rank 1] gpugrad.distributed: rank 1 of 2 failed; aborting the job" in proc.stderr
    assert "OK failing_rank" not in proc.stdout
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end"


# ----------------------------------------------------------------------------- workers (run by mpiexec)

def _values(rank: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Rank ``rank``'s input: small integers (exact in every dtype and under every op)."""
    base = (np.arange(int(np.prod(shape))).reshape(shape) % 4 + 1 + rank)
    return (base % 2 == 0) if dtype == np.bool_ else base.astype(dtype)


def _expected(op: str, stacked: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return stacked.any(axis=0) if op in ("sum", "max") else stacked.all(axis=0)
    wide = stacked.astype(np.float64)
    result = {"sum": wide.sum(0), "product": wide.prod(0), "max": wide.max(0), "min": wide.min(0),
              "avg": wide.mean(0)}[op]
    return result.astype(dtype)


def worker_collectives() -> None:
    import pytest

    import gpugrad as gg
    import gpugrad.distributed as dist

    dist.init_process_group("mpi")
    rank, n = dist.get_rank(), dist.get_world_size()
    assert dist.is_initialized() and dist.get_backend() == "mpi" and dist.is_main_process() == (rank == 0)
    for dtype in map(np.dtype, (np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_)):
        for shape in ((), (0,), (5,), (2, 3)):
            mine = _values(rank, shape, dtype)
            everyone = np.stack([_values(r, shape, dtype) for r in range(n)])
            ops = ["sum", "product", "max", "min"] + (["avg"] if dtype.kind == "f" else [])
            for op in ops:
                for async_op in (False, True):
                    t = gg.tensor(mine.copy())
                    work = dist.all_reduce(t, op=getattr(dist.ReduceOp, op.upper()), async_op=async_op)
                    if async_op:
                        assert isinstance(work, dist.Work) and work.wait() and work.is_completed()
                    else:
                        assert work is None
                    _same(t, _expected(op, everyone, dtype), f"all_reduce {op} {dtype} {shape}")
            for src in range(n):
                t = gg.tensor(mine.copy())
                dist.broadcast(t, src)
                _same(t, everyone[src], f"broadcast from {src}")
            outs = [gg.tensor(np.zeros(shape, dtype)) for _ in range(n)]
            dist.all_gather(outs, gg.tensor(mine.copy()))
            for r in range(n):
                _same(outs[r], everyone[r], f"all_gather {dtype} {shape}")
            gathered = gg.tensor(np.zeros((n, *shape), dtype))
            dist.all_gather_into_tensor(gathered, gg.tensor(mine.copy()))
            _same(gathered, everyone, "all_gather_into_tensor")
            # reduce_scatter: rank k contributes blocks derived from its values; rank r gets block r
            blocks = np.stack([_values(rank + 7 * b, shape, dtype) for b in range(n)])
            all_blocks = np.stack([np.stack([_values(k + 7 * b, shape, dtype) for b in range(n)])
                                   for k in range(n)])
            for op in ops:
                out = gg.tensor(np.zeros(shape, dtype))
                dist.reduce_scatter(out, [gg.tensor(b) for b in blocks], op=op)
                _same(out, _expected(op, all_blocks[:, rank], dtype), f"reduce_scatter {op} {dtype} {shape}")
                out = gg.tensor(np.zeros(shape, dtype))
                dist.reduce_scatter_tensor(out, gg.tensor(blocks.copy()), op=op)
                _same(out, _expected(op, all_blocks[:, rank], dtype), f"reduce_scatter_tensor {op}")

    # bad input: a clear error on every rank, before any collective starts
    with pytest.raises(TypeError, match=r"ReduceOp.AVG needs a floating-point tensor, got int64"):
        dist.all_reduce(gg.tensor([1, 2]), op="avg")
    with pytest.raises(ValueError, match=r"tensor \(shape \(3, 2\)\) is not contiguous"):
        dist.all_reduce(gg.ones(2, 3).T)
    with pytest.raises(ValueError, match=f"src={n} is not a rank of this job"):
        dist.broadcast(gg.ones(2), n)
    with pytest.raises(ValueError, match=f"tensor_list must be a list of world_size={n} tensors, got a list"):
        dist.all_gather([gg.ones(2)], gg.ones(2))
    with pytest.raises(ValueError, match=r"tensor_list\[0\] is \(3,\) float32; every entry must be \(2,\)"):
        dist.all_gather([gg.ones(3)] * n, gg.ones(2))
    with pytest.raises(ValueError, match=f"output_tensor has 2 elements .* it needs {2 * n}"):
        dist.all_gather_into_tensor(gg.ones(2), gg.ones(2))
    with pytest.raises(ValueError, match="share one device and dtype, got cpu float32, cpu float64"):
        dist.all_gather_into_tensor(gg.ones(2 * n), gg.ones(2, dtype=gg.float64))
    with pytest.raises(TypeError, match="tensor must be a gpugrad Tensor, got ndarray"):
        dist.all_reduce(np.ones(2))

    # an in-place collective on a tensor saved for backward is caught by backward
    x = gg.tensor([1.0, 2.0]).requires_grad_()
    y = x * x                           # multiply saves its inputs
    with gg.no_grad():
        dist.all_reduce(x)
    with pytest.raises(RuntimeError, match="changed in place.*all_reduce"):
        y.sum().backward()

    objects = [None] * n
    dist.all_gather_object(objects, {"rank": rank})
    assert objects == [{"rank": r} for r in range(n)]
    sent = ["from", rank] if rank == n - 1 else [None, None]
    dist.broadcast_object_list(sent, src=n - 1)
    assert sent == ["from", n - 1]
    metrics = dist.reduce_metrics({"acc": float(rank), "loss": 1.0}, weight=rank + 1)
    weights = np.arange(1, n + 1)
    assert metrics == {"acc": float((np.arange(n) * weights).sum() / weights.sum()), "loss": 1.0}
    assert dist.reduce_metrics({"acc": float(rank)}, op="max") == {"acc": float(n - 1)}
    with pytest.raises(ValueError, match="the ranks passed different metrics"):
        dist.reduce_metrics({f"m{rank}": 1.0})
    dist.barrier()
    dist.destroy_process_group()
    dist.init_process_group("mpi", world_size=n, rank=rank)       # again, with the launcher's numbers
    dist.destroy_process_group()
    print("OK collectives", flush=True)


def _same(t, expected: np.ndarray, what: str) -> None:
    arr = t.numpy()
    assert arr.shape == expected.shape and arr.dtype == expected.dtype, \
        f"{what}: {arr.shape} {arr.dtype} != {expected.shape} {expected.dtype}"
    assert_close(arr, expected, msg=what, rtol=0, atol=0)


def worker_ddp() -> None:
    import pytest

    import gpugrad as gg
    import gpugrad.distributed as dist
    from gpugrad import nn
    from gpugrad.data import DataLoader, DistributedSampler, TensorDataset
    from gpugrad.nn import functional as F
    from gpugrad.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("mpi")
    rank, n = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(0)
    count = 23                          # 2 ranks: 12 each (one padded), batches 5, 5, 2; 3 ranks: 8, as 5, 3
    X, Y = rng.normal(size=(count, 6)), rng.integers(0, 3, count)
    ds = TensorDataset(gg.tensor(X), gg.tensor(Y))

    def mlp(seed: int, hidden: int = 8) -> nn.Module:
        gg.manual_seed(seed)
        return nn.MLP([6, hidden, hidden, 3]).double()

    def shards(epoch: int) -> list[list[np.ndarray]]:
        """Every rank's batches of indices for this epoch, as its DataLoader makes them."""
        out = []
        for r in range(n):
            s = DistributedSampler(ds, num_replicas=n, rank=r, seed=3)
            s.set_epoch(epoch)
            idx = np.array(list(s))
            out.append([idx[i:i + 5] for i in range(0, len(idx), 5)])
        return out

    optimizers = {"sgd": lambda p: gg.optim.SGD(p, lr=0.1, momentum=0.9),
                  "adam": lambda p: gg.optim.Adam(p, lr=0.01)}
    for name, make in optimizers.items():
        for cap in (0.0004, 25.0):
            model = mlp(seed=rank)                                   # ranks start apart: DDP must align them
            ddp = DDP(model, bucket_cap_mb=cap)
            ref = mlp(seed=0)
            _close(model, ref, 0.0, "after construction: rank 0's parameters")
            opt, ref_opt = make(model.parameters()), make(ref.parameters())
            sizes = []
            for epoch in range(2):
                sampler = DistributedSampler(ds, seed=3)
                sampler.set_epoch(epoch)
                loader = DataLoader(ds, batch_size=5, sampler=sampler)
                for (xb, yb), *everyone in zip(loader, *shards(epoch)):
                    opt.zero_grad()
                    F.cross_entropy(ddp(xb), yb).backward()
                    opt.step()
                    union = np.concatenate(everyone)                 # the full batch, one process
                    ref_opt.zero_grad()
                    F.cross_entropy(ref(gg.tensor(X[union])), gg.tensor(Y[union])).backward()
                    ref_opt.step()
                    sizes.append(len(xb))
            assert sizes[-1] < 5, sizes                              # an uneven last batch took part
            _close(model, ref, 1e-10, f"{name}, bucket_cap_mb={cap}")

    # gradient accumulation: two local backwards inside no_sync, then one that averages
    model, ref = mlp(0), mlp(0)
    ddp = DDP(model, bucket_cap_mb=0.0004)
    batches = shards(0)
    with ddp.no_sync():
        xb = gg.tensor(X[batches[rank][0]])
        F.cross_entropy(ddp(xb), gg.tensor(Y[batches[rank][0]])).backward()
    local = [None] * n
    dist.all_gather_object(local, model[0].weight.grad.numpy())
    assert not np.allclose(local[0], local[-1]), "no_sync must not average"
    F.cross_entropy(ddp(gg.tensor(X[batches[rank][1]])), gg.tensor(Y[batches[rank][1]])).backward()
    for step in (0, 1):
        union = np.concatenate([b[step] for b in batches])
        F.cross_entropy(ref(gg.tensor(X[union])), gg.tensor(Y[union])).backward()
    _close_grads(model, ref, 1e-12, "no_sync accumulation")

    # parameters used on some ranks only, and on none
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.extra, self.never = nn.Linear(6, 3).double(), nn.Linear(3, 3).double(), \
                nn.Linear(3, 3).double()

        def forward(self, x, use_extra):
            h = self.body(x)
            return self.extra(h) if use_extra else h

    gg.manual_seed(0)
    heads = Heads()
    ddp = DDP(heads, find_unused_parameters=True)
    xb = gg.tensor(X[:4])
    ddp(xb, use_extra=rank > 0).square().sum().backward()
    gg.manual_seed(0)
    alone = Heads()
    for _ in range(1, n):           # what the other ranks computed: the extra head's gradient
        alone(xb, use_extra=True).square().sum().backward()
    assert_close(heads.extra.weight.grad.numpy(), alone.extra.weight.grad.numpy() / n,
                               rtol=1e-12, atol=1e-14)
    assert heads.never.weight.grad is None and heads.never.bias.grad is None
    ddp = DDP(Heads())
    with pytest.raises(RuntimeError, match=r"received no gradient in this backward: .*never\.weight \(3, 3\)"
                                           r".*find_unused_parameters=True"):
        ddp(xb, use_extra=True).sum().backward()
    heads2 = Heads()
    heads2.never.requires_grad_(False)
    ddp = DDP(heads2)                # frozen: not synchronised, not an error
    ddp(xb, use_extra=True).sum().backward()
    assert heads2.never.weight.grad is None

    # buffers: rank 0's, at construction
    model = mlp(0)
    model.register_buffer("counts", gg.full((2,), float(rank)))
    DDP(model)
    assert_close(model.counts.numpy(), [0.0, 0.0], rtol=0, atol=0)

    # a model that differs across ranks: caught at construction, the same error on every rank
    with pytest.raises(RuntimeError, match=r"the model differs across ranks: rank 1 has parameter '0.weight' "
                                           r"of shape \(9, 6\) float64, where rank 0 has .*\(8, 6\) float64"):
        DDP(mlp(0, hidden=8 + (rank == 1)))
    dist.destroy_process_group()
    print("OK ddp", flush=True)


def _close(model, ref, tol: float, what: str) -> None:
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        diff = np.abs(p.detach().numpy() - q.detach().numpy()).max()
        assert diff <= tol, f"{what}: {name} differs by {diff:.3g}"


def _close_grads(model, ref, tol: float, what: str) -> None:
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        diff = np.abs(p.grad.numpy() - q.grad.numpy()).max()
        assert diff <= tol, f"{what}: {name}'s gradient differs by {diff:.3g}"


def worker_failing_rank() -> None:
    import gpugrad as gg
    import gpugrad.distributed as dist

    dist.init_process_group("mpi")
    if dist.get_rank() == 1:
        raise ValueError("planted failure on rank 1")
    dist.all_reduce(gg.ones(3))          # rank 0 waits here for a rank that will never come
    print("OK failing_rank", flush=True)


if __name__ == "__main__":
    globals()[f"worker_{sys.argv[1]}"]()
