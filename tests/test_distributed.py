"""gg.distributed and DDP in one process: the engine's hooks, the launcher environment, the sampler,
DDP's bucketing on a stand-in group, the NCCL backend's logic on a stand-in communicator and on the
CUDA emulator's NCCL, and the NCCL path of init_process_group, the collectives and DDP at world
size 1 on a real GPU or under GPUGRAD_EMULATE_CUDA=1 (skipped with neither). The multi-process
tests, through mpiexec, are in test_distributed_mpi.py."""

from __future__ import annotations

import ctypes
import gc
import sys
import types

import numpy as np
import optional
import pytest

import gpugrad as gg
import gpugrad.distributed as dist
from gpugrad import engine, nn
from gpugrad.data import DataLoader, DistributedSampler, TensorDataset
from gpugrad.distributed import api, env, faults
from gpugrad.distributed.group import ProcessGroup, ReduceOp, Work
from gpugrad.distributed.nccl import NcclGroup
from gpugrad.nn import functional as F
from gpugrad.nn.parallel import DistributedDataParallel
from gpugrad.testing import assert_close

# ----------------------------------------------------------------------------- the engine's hooks

def _two_layer():
    w1 = gg.randn(3, 4, dtype=gg.float64).requires_grad_()
    w2 = gg.randn(4, 2, dtype=gg.float64).requires_grad_()
    x = gg.randn(5, 3, dtype=gg.float64)
    return w1, w2, x


def test_post_accumulate_hook_runs_as_soon_as_the_gradient_is_final():
    w1, w2, x = _two_layer()
    seen = []

    def on_w2(t):      # w2's consumers run first in backward: w1's gradient is not delivered yet
        seen.append(("w2", t.grad.numpy().copy(), w1.grad))

    def on_w1(t):
        seen.append(("w1", t.grad.numpy().copy(), None))

    w2.register_post_accumulate_grad_hook(on_w2)
    w1.register_post_accumulate_grad_hook(on_w1)
    loss = (gg.tanh(x @ w1) @ w2).square().sum() + (w2 * w2).sum()   # w2 used twice: one final sum
    loss.backward()
    assert [s[0] for s in seen] == ["w2", "w1"]
    assert seen[0][2] is None
    expect = [w.grad.numpy().copy() for w in (w2, w1)]
    w1.grad = w2.grad = None
    for w in (w1, w2):
        engine._post_accumulate.pop(id(w))
    loss2 = (gg.tanh(x @ w1) @ w2).square().sum() + (w2 * w2).sum()
    loss2.backward()                                 # no hooks: the plain walk gives the same gradients
    assert_close(seen[0][1], w2.grad.numpy(), rtol=0, atol=0)
    assert_close(seen[1][1], w1.grad.numpy(), rtol=0, atol=0)
    assert_close(expect[0], w2.grad.numpy(), rtol=0, atol=0)


def test_post_accumulate_hook_skips_unused_leaves_and_can_be_removed():
    w1, w2, x = _two_layer()
    unused = gg.zeros(2, dtype=gg.float64).requires_grad_()
    calls = []
    unused.register_post_accumulate_grad_hook(lambda t: calls.append("unused"))
    handle = w2.register_post_accumulate_grad_hook(lambda t: calls.append("w2"))
    (x @ w1 @ w2).sum().backward()
    assert calls == ["w2"] and unused.grad is None
    handle.remove()
    (x @ w1 @ w2).sum().backward()
    assert calls == ["w2"]


def test_post_accumulate_hook_rejects_non_leaves_and_constants():
    w1, w2, x = _two_layer()
    with pytest.raises(RuntimeError, match="only a leaf tensor"):
        (w1 * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.register_post_accumulate_grad_hook(print)


def test_post_accumulate_hook_sees_the_leaf_hooks_result_and_not_gg_grad():
    w1, w2, x = _two_layer()
    w2.register_hook(lambda g: g * 0)               # a gradient hook runs before accumulation
    got = []
    w2.register_post_accumulate_grad_hook(lambda t: got.append(float(t.grad.abs().sum())))
    (x @ w1 @ w2).sum().backward()
    assert got == [0.0]
    gg.grad(lambda w: (x @ w1 @ w).sum())(w2)      # captured, not accumulated: no hook
    assert got == [0.0]


def test_post_accumulate_hooks_with_create_graph():
    w = gg.tensor([1.0, 2.0], dtype=gg.float64).requires_grad_()
    got = []
    w.register_post_accumulate_grad_hook(lambda t: got.append(t.grad.requires_grad))
    (w ** 3).sum().backward(create_graph=True)
    assert got == [True]
    assert_close(w.grad.detach().numpy(), [3.0, 12.0])


def test_post_accumulate_hooks_go_with_their_leaf():
    w = gg.ones(2).requires_grad_()
    w.register_post_accumulate_grad_hook(print)
    key = id(w)
    assert key in engine._post_accumulate
    del w
    gc.collect()
    assert key not in engine._post_accumulate


def test_queue_callback_runs_after_every_gradient_is_delivered():
    w1, w2, x = _two_layer()
    order = []

    def at_end():
        order.append(("end", w1.grad is not None and w2.grad is not None))
        engine.queue_callback(lambda: order.append(("queued by a callback", True)))

    w2.register_post_accumulate_grad_hook(lambda t: engine.queue_callback(at_end))
    (x @ w1 @ w2).sum().backward()
    assert order == [("end", True), ("queued by a callback", True)]
    with pytest.raises(RuntimeError, match="no backward pass is running"):
        engine.queue_callback(print)


# ----------------------------------------------------------------------------- launcher environment

@pytest.mark.parametrize("environ, expect", [
    ({}, (0, 1, 0, None)),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0"},
     (2, 4, 0, "Open MPI")),
    ({"PMI_RANK": "1", "PMI_SIZE": "3", "MPI_LOCALRANKID": "1"}, (1, 3, 1, "MPICH/Hydra")),
    ({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1"}, (5, 8, 1, "Slurm srun")),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, (0, 1, 0, None)),      # a batch script: one process
    ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2, 1, "torchrun")),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "SLURM_PROCID": "7",
      "SLURM_STEP_NUM_TASKS": "1"}, (1, 2, 1, "Open MPI")),             # mpiexec inside an allocation
])
def test_launcher_environment(environ, expect):
    assert tuple(env.from_environment(environ)) == expect


def test_launcher_environment_errors():
    with pytest.raises(RuntimeError, match="inconsistent: PMI_RANK=3, PMI_SIZE=2"):
        env.from_environment({"PMI_RANK": "3", "PMI_SIZE": "2"})
    with pytest.raises(RuntimeError, match="RANK='x'"):
        env.from_environment({"RANK": "x", "WORLD_SIZE": "2"})


# ----------------------------------------------------------------------------- without a process group

def test_functions_need_a_process_group():
    assert not dist.is_initialized()
    for fn, args in [(dist.get_rank, ()), (dist.get_world_size, ()), (dist.barrier, ()),
                     (dist.all_reduce, (gg.ones(2),)), (dist.destroy_process_group, ())]:
        with pytest.raises(ValueError, match="not been initialized; call gg.distributed.init_process_group"):
            fn(*args)
    with pytest.raises(ValueError, match="DistributedDataParallel: the default process group"):
        DistributedDataParallel(nn.Linear(2, 2))


def test_training_helpers_work_without_a_process_group():
    assert dist.is_main_process()
    assert dist.rank_zero_only(lambda a: a + 1)(1) == 2
    assert dist.reduce_metrics({"loss": np.float32(0.5), "acc": 1}) == {"loss": 0.5, "acc": 1.0}
    with pytest.raises(TypeError, match="every metric must be a number"):
        dist.reduce_metrics({"loss": "low"})
    with pytest.raises(ValueError, match="weight must be a finite number"):
        dist.reduce_metrics({"loss": 1.0}, weight=-1)
    with pytest.raises(ValueError, match="use ReduceOp.AVG, SUM, MAX or MIN"):
        dist.reduce_metrics({"loss": 1.0}, op="product")
    with pytest.raises(ValueError, match="unknown reduce op 'mean'"):
        dist.reduce_metrics({"loss": 1.0}, op="mean")


def test_init_process_group_checks_its_arguments_and_the_launcher():
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.init_process_group("gloo")
    group = ProcessGroup()
    group.size, group.rank = 2, 0
    with pytest.raises(RuntimeError, match=r"\(Slurm srun\) started 4 processes, but MPI sees 2.*--mpi=pmix"):
        api._check_agrees(env.Launch(0, 4, 0, "Slurm srun"), group, None, None)
    with pytest.raises(ValueError, match="world_size=3, but the job has 2"):
        api._check_agrees(env.Launch(0, 2, 0, "Open MPI"), group, 3, None)
    with pytest.raises(ValueError, match="rank=1, but the launcher made this process rank 0"):
        api._check_agrees(env.Launch(0, 2, 0, "Open MPI"), group, 2, 1)


def test_describe_starts_nothing():
    lines = dist.describe()
    assert [line.split(":")[0] for line in lines] == ["mpi", "nccl", "launcher"]
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        assert not mpi.Is_initialized()
        assert "mpi4py" in lines[0] and "CUDA-aware" in lines[0]
    else:
        assert "unavailable" in lines[0]


def test_a_failing_rank_prints_its_traceback_and_aborts(capsys):
    aborted = []
    before = sys.excepthook
    faults.install(1, 3, lambda: aborted.append(True))
    try:
        try:
            raise ValueError("planted")
        except ValueError:
            sys.excepthook(*sys.exc_info())
    finally:
        faults.uninstall()
    assert sys.excepthook is before and aborted == [True]
    err = capsys.readouterr().err
    assert "[rank 1] gpugrad.distributed: rank 1 of 3 failed" in err
    assert "[rank 1] ValueError: planted" in err


# ----------------------------------------------------------------------------- DistributedSampler

def _indices(n, replicas, **kw):
    return [list(DistributedSampler(range(n), num_replicas=replicas, rank=r, **kw)) for r in range(replicas)]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 12])
@pytest.mark.parametrize("replicas", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shards_as_pytorch_does(n, replicas, drop_last):
    shards = _indices(n, replicas, shuffle=False, drop_last=drop_last)
    torch = optional.need("torch")       # the reference is torch.utils.data.DistributedSampler
    from torch.utils.data import DistributedSampler as TorchSampler
    expect = [list(TorchSampler(range(n), num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last))
              for r in range(replicas)]
    assert shards == expect
    assert len(DistributedSampler(range(n), replicas, 0, drop_last=drop_last)) == len(expect[0])
    del torch


def test_sampler_shuffles_per_epoch_the_same_on_every_rank():
    n, replicas = 11, 3
    epoch0 = _indices(n, replicas, seed=5)
    assert epoch0 == _indices(n, replicas, seed=5)              # every rank draws the same permutation
    flat = sorted(i for shard in epoch0 for i in shard)
    assert len(flat) == 12 and set(flat) == set(range(n))       # padded by one repeat
    samplers = [DistributedSampler(range(n), replicas, r, seed=5) for r in range(replicas)]
    for s in samplers:
        s.set_epoch(1)
    epoch1 = [list(s) for s in samplers]
    assert epoch1 != epoch0 and sorted(i for shard in epoch1 for i in shard) != []
    assert _indices(n, replicas, seed=6) != epoch0


def test_sampler_errors_and_its_defaults_need_a_group():
    with pytest.raises(ValueError, match=r"invalid rank 3, rank should be in the interval \[0, 2\]"):
        DistributedSampler(range(4), num_replicas=3, rank=3)
    with pytest.raises(ValueError, match="num_replicas must be >= 1"):
        DistributedSampler(range(4), num_replicas=0, rank=0)
    with pytest.raises(TypeError, match="rank must be an int"):
        DistributedSampler(range(4), num_replicas=2, rank=1.0)
    with pytest.raises(ValueError, match="has not been initialized"):
        DistributedSampler(range(4))


def test_data_loader_takes_a_sampler():
    ds = TensorDataset(gg.arange(10.0), gg.arange(10))
    sampler = DistributedSampler(ds, num_replicas=3, rank=1, shuffle=False)
    loader = DataLoader(ds, batch_size=2, sampler=sampler)
    assert len(loader) == 2
    assert [b[1].tolist() for b in loader] == [[1, 4], [7, 0]]
    with pytest.raises(ValueError, match="sampler and shuffle=True cannot be combined"):
        DataLoader(ds, sampler=sampler, shuffle=True)
    with pytest.raises(TypeError, match="sampler must be an iterable of indices with a length"):
        DataLoader(ds, sampler=3)


# ----------------------------------------------------------------------------- DDP on a stand-in group

class EchoGroup(ProcessGroup):
    """``size`` ranks that all hold this rank's values (so averages change nothing), with a log.

    ``models`` (optional) is what all_gather_object returns, to plant other ranks' models.
    """

    backend = "mpi"

    def __init__(self, size=2, models=None):
        self.size, self.rank = size, 0
        self.log = []
        self.models = models

    def all_reduce(self, array, op):
        assert op is ReduceOp.SUM
        self.log.append(("all_reduce", array.size))
        array *= self.size
        return Work()

    def broadcast(self, array, src):
        self.log.append(("broadcast", array.shape))
        return Work()

    def all_gather_object(self, obj):
        return self.models if self.models is not None else [obj] * self.size


@pytest.fixture
def echo():
    group = EchoGroup()
    api._group = group
    yield group
    api._group = None


def _mlp(seed=0, sizes=(6, 8, 8, 3)):
    gg.manual_seed(seed)
    return nn.MLP(list(sizes)).double()


def _batch(n=10):
    rng = np.random.default_rng(1)
    return gg.tensor(rng.normal(size=(n, 6))), gg.tensor(rng.integers(0, 3, n))


def test_ddp_gradients_are_the_average_and_backward_waits_for_every_bucket(echo):
    model, plain = _mlp(), _mlp()
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.0003)      # 314 bytes: a bucket per tensor or two
    assert [k for k, _ in echo.log] == ["broadcast"] * 6           # rank 0's parameters, at construction
    echo.log.clear()
    x, y = _batch()
    F.cross_entropy(ddp(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    for p, q in zip(model.parameters(), plain.parameters()):
        assert p.grad.shape == q.grad.shape and p.grad.dtype == q.grad.dtype
        assert_close(p.grad.numpy(), q.grad.numpy(), rtol=1e-14, atol=1e-15)
    sizes = [b.flat.size for b in ddp.reducer.buckets]
    assert [s for _, s in echo.log] == sizes and sum(sizes) == model.num_parameters()
    assert [b.names for b in ddp.reducer.buckets] == [                # the last layer's gradients first
        ["4.bias", "4.weight", "2.bias"], ["2.weight"], ["0.bias"], ["0.weight"]]
    assert list(ddp.state_dict())[0] == "module.0.weight"


def test_ddp_starts_buckets_while_backward_runs(echo):
    model = _mlp()
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.0003)
    events = []
    first_weight = model[0].weight
    first_weight.register_post_accumulate_grad_hook(lambda t: events.append("first layer's gradient"))
    echo.all_reduce = lambda a, op: (events.append("bucket starts"), Work())[1]
    x, y = _batch()
    F.cross_entropy(ddp(x), y).backward()
    assert events.index("bucket starts") < events.index("first layer's gradient")
    assert len(events) == len(ddp.reducer.buckets) + 1


def test_ddp_default_buckets_and_size_cap(echo):
    assert len(DistributedDataParallel(_mlp()).reducer.buckets) == 1
    big = DistributedDataParallel(_mlp(sizes=(6, 40, 3)), bucket_cap_mb=0.001)   # 1048 bytes
    assert [b.names for b in big.reducer.buckets] == [["2.bias", "2.weight"], ["0.bias"], ["0.weight"]]


def test_ddp_names_unused_parameters(echo):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 4).double()
            self.spare = nn.Linear(4, 2).double()

        def forward(self, x):
            return self.body(x)

    model = TwoHeads()
    ddp = DistributedDataParallel(model)
    x, _ = _batch()
    with pytest.raises(RuntimeError, match=r"received no gradient.*spare.bias \(2,\), spare.weight \(2, 4\)"
                                           r".*find_unused_parameters=True"):
        ddp(x).sum().backward()
    with pytest.raises(RuntimeError, match="gg.grad and autograd.grad return gradients instead"):
        gg.autograd.grad(ddp(x).sum(), list(model.body.parameters()))
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    model.zero_grad()
    ddp(x).sum().backward()
    assert model.spare.weight.grad is None and model.body.weight.grad is not None


def test_ddp_no_sync_accumulates_locally(echo):
    ddp = DistributedDataParallel(_mlp())
    echo.log.clear()
    x, y = _batch()
    with ddp.no_sync():
        F.cross_entropy(ddp(x), y).backward()
    assert echo.log == []
    F.cross_entropy(ddp(x), y).backward()
    assert [k for k, _ in echo.log] == ["all_reduce"]
    with gg.no_grad():
        ddp(x)                      # evaluation: nothing to synchronise
    assert len(echo.log) == 1


def test_ddp_broadcasts_buffers_each_training_forward(echo):
    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 2).double()
            self.register_buffer("scale", gg.ones(2, dtype=gg.float64))

        def forward(self, x):
            return self.lin(x) * self.scale

    ddp = DistributedDataParallel(WithBuffer())
    echo.log.clear()
    x, _ = _batch()
    ddp(x).sum().backward()
    assert echo.log[0] == ("broadcast", (2,))
    echo.log.clear()
    ddp.eval()
    ddp(x).sum().backward()
    assert [k for k, _ in echo.log] == ["all_reduce"]


def test_ddp_detects_a_different_model_on_another_rank():
    mine = _mlp()
    other = _mlp(sizes=(6, 9, 8, 3))
    models = [[("parameter", n, p.shape, str(p.dtype), True) for n, p in m.named_parameters()]
              for m in (mine, other)]
    api._group = EchoGroup(models=models)
    try:
        with pytest.raises(RuntimeError, match=r"differs across ranks: rank 1 has parameter '0.weight' of "
                                               r"shape \(9, 6\) float64, where rank 0 has parameter "
                                               r"'0.weight' of shape \(8, 6\) float64"):
            DistributedDataParallel(mine)
        api._group = EchoGroup(models=[models[0], models[0][:-1]])
        with pytest.raises(RuntimeError, match="rank 1 has 5 parameters and buffers, where rank 0 has 6"):
            DistributedDataParallel(mine)
    finally:
        api._group = None


def test_ddp_argument_errors(echo):
    with pytest.raises(TypeError, match="expected a gpugrad.nn.Module, got builtin_function"):
        DistributedDataParallel(print)
    with pytest.raises(ValueError, match="bucket_cap_mb must be > 0"):
        DistributedDataParallel(_mlp(), bucket_cap_mb=0)
    with pytest.raises(ValueError, match="device_ids/output_device say cuda:0, the model is on cpu"):
        DistributedDataParallel(_mlp(), device_ids=[0])


def test_ddp_works_with_every_optimizer(echo):
    for make in (lambda p: gg.optim.SGD(p, lr=0.1, momentum=0.9), lambda p: gg.optim.Adam(p, lr=0.01),
                 lambda p: gg.optim.AdamW(p, lr=0.01)):
        model, plain = _mlp(), _mlp()
        ddp = DistributedDataParallel(model, bucket_cap_mb=0.0005)
        opts = [make(model.parameters()), make(plain.parameters())]
        x, y = _batch()
        for _ in range(3):
            for m, opt in zip((ddp, plain), opts):
                opt.zero_grad()
                F.cross_entropy(m(x), y).backward()
                opt.step()
        for p, q in zip(model.parameters(), plain.parameters()):
            assert_close(p.numpy() if not p.requires_grad else p.detach().numpy(),
                                       q.detach().numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- NCCL on a stand-in

class DeviceArray(np.ndarray):
    """A host array that shows a CuPy-like ``.data.ptr``: the NCCL group only reads pointers."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _device(values, dtype):
    return np.array(values, dtype=dtype).view(DeviceArray)            # a copy, C-contiguous


class Stream:
    ptr = 0xABC

    def __init__(self):
        self.waited = []

    def record(self):
        return types.SimpleNamespace(done=True, stream=self)

    def wait_event(self, event):
        self.waited.append(event)

    def synchronize(self):
        pass


class StandInNccl:
    """NCCL's calls over host memory for ``size`` ranks, where rank k contributes (k + 1) times this
    rank's data (so every reduction has a known result); checks each call's arguments."""

    NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_UINT32, NCCL_INT64, NCCL_UINT64 = 0, 1, 2, 3, 4, 5
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 6, 7, 8
    NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = 0, 1, 2, 3, 4
    _NP = {0: np.int8, 1: np.uint8, 2: np.int32, 3: np.uint32, 4: np.int64, 5: np.uint64,
           6: np.float16, 7: np.float32, 8: np.float64}

    def __init__(self, size):
        self.size = size
        self.calls = []

    def _host(self, ptr, count, dtype):
        itemsize = np.dtype(self._NP[dtype]).itemsize
        buf = (ctypes.c_char * max(count * itemsize, 1)).from_address(ptr)
        return np.frombuffer(buf, dtype=self._NP[dtype], count=count)

    def _reduce(self, x, op):
        parts = [x * (k + 1) for k in range(self.size)]
        fn = {self.NCCL_SUM: np.sum, self.NCCL_PROD: np.prod, self.NCCL_MAX: np.max, self.NCCL_MIN: np.min,
              self.NCCL_AVG: np.mean}[op]
        return fn(np.stack(parts), axis=0).astype(x.dtype)

    def allReduce(self, send, recv, count, dtype, op, stream):          # noqa: N802 - NCCL's names
        self.calls.append(("allReduce", count, dtype, op, stream))
        self._host(recv, count, dtype)[:] = self._reduce(self._host(send, count, dtype).copy(), op)

    def broadcast(self, send, recv, count, dtype, root, stream):
        self.calls.append(("broadcast", count, dtype, root, stream))
        self._host(recv, count, dtype)[:] = self._host(send, count, dtype) * (root + 1)

    def allGather(self, send, recv, count, dtype, stream):              # noqa: N802
        self.calls.append(("allGather", count, dtype, stream))
        x = self._host(send, count, dtype).copy()
        parts = [x * (k + 1) for k in range(self.size)]
        self._host(recv, count * self.size, dtype)[:] = np.concatenate(parts)

    def reduceScatter(self, send, recv, count, dtype, op, stream):      # noqa: N802
        self.calls.append(("reduceScatter", count, dtype, op, stream))
        x = self._host(send, count * self.size, dtype).copy()
        self._host(recv, count, dtype)[:] = self._reduce(x, op)[:count]    # this is rank 0's block


def _nccl_group(size=3, with_avg=True):
    comm = StandInNccl(size)
    constants = StandInNccl if with_avg else types.SimpleNamespace(
        **{k: v for k, v in vars(StandInNccl).items() if k.startswith("NCCL_") and k != "NCCL_AVG"})
    stream = Stream()
    return NcclGroup(comm, 0, size, 0, constants=constants, current_stream=lambda: stream), comm, stream


@pytest.mark.parametrize("with_avg", [True, False], ids=["NCCL_AVG", "sum-then-divide"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8])
def test_nccl_group_all_reduce_on_a_stand_in(dtype, shape, with_avg):
    group, comm, stream = _nccl_group(with_avg=with_avg)
    x = np.arange(1, 1 + int(np.prod(shape)), dtype=dtype).reshape(shape)
    ops = [ReduceOp.SUM, ReduceOp.PRODUCT, ReduceOp.MAX, ReduceOp.MIN]
    ops += [ReduceOp.AVG] if np.dtype(dtype).kind == "f" else []
    expect = {ReduceOp.SUM: x * 6, ReduceOp.PRODUCT: x ** 3 * 6, ReduceOp.MAX: x * 3, ReduceOp.MIN: x,
              ReduceOp.AVG: x * 2}
    for op in ops:
        buf = _device(x, dtype)
        work = group.all_reduce(buf, op)
        assert comm.calls[-1][1] == x.size and comm.calls[-1][-1] == Stream.ptr    # on the current stream
        work.wait()
        assert stream.waited and buf.shape == x.shape and buf.dtype == x.dtype
        assert_close(np.asarray(buf), expect[op].astype(dtype), msg=str(op), rtol=0, atol=0)
    if not with_avg and ops[-1] is ReduceOp.AVG:
        assert comm.calls[-1][3] == StandInNccl.NCCL_SUM       # summed, then divided on the stream


def test_nccl_group_other_collectives_on_a_stand_in():
    group, comm, _ = _nccl_group(size=3)
    x = _device([1.0, 2.0], np.float32)
    group.broadcast(x, 2).wait()
    assert_close(x, [3.0, 6.0], rtol=0, atol=0)
    out = _device(np.zeros(6), np.float32)
    group.all_gather(out, _device([1.0, 2.0], np.float32)).wait()
    assert_close(out, [1, 2, 2, 4, 3, 6], rtol=0, atol=0)
    mine = _device(np.zeros(2), np.float64)
    group.reduce_scatter(mine, _device(np.arange(6.0), np.float64), ReduceOp.AVG).wait()
    assert_close(mine, [0.0, 2.0], rtol=0, atol=0)
    assert [c[0] for c in comm.calls] == ["broadcast", "allGather", "reduceScatter"]
    assert comm.calls[1][1] == 2 and comm.calls[2][1] == 2          # counts per rank
    flags = _device([True, False, True], np.bool_)
    group.all_reduce(flags.view(np.uint8).view(DeviceArray), ReduceOp.MAX)
    group.all_reduce(flags, ReduceOp.SUM)                           # bool as uint8: or is max
    assert comm.calls[-1][2:4] == (StandInNccl.NCCL_UINT8, StandInNccl.NCCL_MAX)
    with pytest.raises(TypeError, match="no collective for complex128 tensors"):
        group.all_reduce(_device([1j], np.complex128), ReduceOp.SUM)
    assert group.all_gather_object("me") == ["me"] and group.broadcast_object(5, 0) == 5


# ----------------------------------------------------------------------------- NCCL on the CUDA emulator

def _emulated_nccl_group(monkeypatch, devices=1):
    """The nccl group on the CUDA emulator's cupy.cuda.nccl (a communicator of one rank)."""
    from gpugrad.cuda.emulator import array
    from gpugrad.cuda.emulator import nccl as emulated
    from gpugrad.cuda.emulator.namespace import cupy as cp

    monkeypatch.setattr(array, "device_total", devices)
    comm = emulated.NcclCommunicator(1, emulated.get_unique_id(), 0)
    return NcclGroup(comm, 0, 1, 0, constants=emulated, current_stream=cp.cuda.get_current_stream), cp, \
        emulated


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, bool])
def test_nccl_group_on_the_emulated_nccl(monkeypatch, dtype):
    group, cp, _ = _emulated_nccl_group(monkeypatch)
    for shape in ((), (0,), (5,), (2, 3)):
        x = (np.arange(int(np.prod(shape))).reshape(shape) % 4 + 1).astype(dtype)
        ops = [ReduceOp.SUM, ReduceOp.PRODUCT, ReduceOp.MAX, ReduceOp.MIN]
        for op in ops + ([ReduceOp.AVG] if np.dtype(dtype).kind == "f" else []):
            buf = cp.asarray(x)
            group.all_reduce(buf, op).wait()                 # one rank: every reduction is the identity
            _same_device_array(buf, x, f"all_reduce {op}")
        out = cp.full((1, *shape), 7, dtype)                 # out of place: the buffers must be right
        group.all_gather(out, cp.asarray(x)).wait()
        _same_device_array(out, x[None], "all_gather")
        mine = cp.full(shape, 7, dtype)
        group.reduce_scatter(mine, cp.asarray(x[None]), ReduceOp.SUM).wait()
        _same_device_array(mine, x, "reduce_scatter")
        buf = cp.asarray(x)
        group.broadcast(buf, 0).wait()
        _same_device_array(buf, x, "broadcast")
    group.barrier()
    group.destroy()


def _same_device_array(a, expected, what):
    got = a.get()
    assert got.shape == expected.shape and got.dtype == expected.dtype, (what, got.shape, got.dtype)
    assert_close(got, expected, rtol=0, atol=0, msg=what)


def test_the_emulated_nccl_checks_what_a_gpu_would_fault_on(monkeypatch):
    group, cp, emulated = _emulated_nccl_group(monkeypatch, devices=2)
    comm, stream = group.comm, cp.cuda.get_current_stream().ptr
    x, short = cp.arange(4.0), cp.zeros(2)
    with pytest.raises(emulated.NcclError, match=r"NCCL_ERROR_UNHANDLED_CUDA_ERROR: .*allGather: the receive "
                                                 r"buffer, 32 bytes .* not inside one live device array"):
        comm.allGather(x.data.ptr, short.data.ptr, 4, emulated.NCCL_FLOAT64, stream)
    with pytest.raises(emulated.NcclError, match=r"allReduce: the send buffer, 64 bytes"):
        comm.allReduce(x.data.ptr, x.data.ptr, 8, emulated.NCCL_FLOAT64, emulated.NCCL_SUM, stream)
    host = np.zeros(4)
    with pytest.raises(emulated.NcclError, match="the receive buffer, 32 bytes"):
        comm.allReduce(x.data.ptr, host.ctypes.data, 4, emulated.NCCL_FLOAT64, emulated.NCCL_SUM, stream)
    with pytest.raises(emulated.NcclError, match="NCCL_ERROR_INVALID_ARGUMENT: .*unknown datatype 11"):
        comm.allReduce(x.data.ptr, x.data.ptr, 4, 11, emulated.NCCL_SUM, stream)
    with pytest.raises(emulated.NcclError, match="unknown reduction op 7"):
        comm.allReduce(x.data.ptr, x.data.ptr, 4, emulated.NCCL_FLOAT64, 7, stream)
    with pytest.raises(emulated.NcclError, match="root 1 in a communicator of 1 rank"):
        comm.broadcast(x.data.ptr, x.data.ptr, 4, emulated.NCCL_FLOAT64, 1, stream)
    with cp.cuda.Device(1):
        other = cp.zeros(4)
    with pytest.raises(emulated.NcclError, match="the receive buffer is on device 1, the communicator on "
                                                 "device 0"):
        comm.allGather(x.data.ptr, other.data.ptr, 4, emulated.NCCL_FLOAT64, stream)
    with pytest.raises(emulated.NcclError, match="a communicator of 2 ranks: the emulator runs one process"):
        emulated.NcclCommunicator(2, emulated.get_unique_id(), 0)
    with pytest.raises(emulated.NcclError, match="commId must be the 128-byte tuple"):
        emulated.NcclCommunicator(1, (1, 2), 0)
    assert (comm.size(), comm.rank_id(), comm.device_id()) == (1, 0, 0)
    unique = emulated.get_unique_id()
    assert len(unique) == 128 and all(-128 <= b < 128 for b in unique) and unique != emulated.get_unique_id()
    comm.destroy()
    with pytest.raises(emulated.NcclError, match="the communicator was destroyed"):
        comm.allReduce(x.data.ptr, x.data.ptr, 4, emulated.NCCL_FLOAT64, emulated.NCCL_SUM, stream)


def test_nccl_backend_on_a_gpu_or_the_emulator_at_world_size_1():
    try:
        from gpugrad.distributed.nccl import load_nccl
        cp, _ = load_nccl()
    except RuntimeError as err:
        pytest.skip(f"no usable CuPy NCCL here: {err}")
    dist.init_process_group("nccl")
    try:
        device = f"cuda:{api._group.device_id}"
        for dtype in (gg.float32, gg.float64, gg.int64):
            for shape in ((), (0,), (3, 2)):
                t = gg.ones(*shape, dtype=dtype, device=device) * 3
                for op in ("sum", "max", "min", "product") + (("avg",) if dtype != gg.int64 else ()):
                    dist.all_reduce(t, op=op)
                    assert t.shape == shape and t.dtype == dtype and t.device == device
                    assert_close(t.numpy(), np.full(shape, 3, dtype), rtol=0, atol=0)
        t = gg.arange(4.0, device=device)
        out = gg.zeros(4, device=device)
        dist.all_gather_into_tensor(out, t)
        dist.broadcast(t, 0)
        dist.reduce_scatter_tensor(t, out, op="avg")
        assert_close(t.numpy(), np.arange(4, dtype=np.float32), rtol=0, atol=0)
        dist.barrier()
        with pytest.raises(RuntimeError, match="the nccl backend runs collectives on cuda"):
            dist.all_reduce(gg.ones(2))
        model = nn.MLP([4, 8, 2]).to(device)
        plain = nn.MLP([4, 8, 2]).to(device)
        plain.load_state_dict(model.state_dict())
        ddp = DistributedDataParallel(model, bucket_cap_mb=0.0001)        # a bucket per parameter
        x = gg.randn(5, 4).to(device)
        ddp(x).square().sum().backward()
        plain(x).square().sum().backward()
        for p, q in zip(model.parameters(), plain.parameters()):     # one rank: the average is its own
            assert p.grad.device == device
            assert_close(p.grad, q.grad, rtol=0, atol=0)
        cp.cuda.get_current_stream().synchronize()
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- MPI with CUDA stand-ins

class FakeStream:
    def __init__(self):
        self.log = []

    def synchronize(self):
        self.log.append("synchronize")

    def record(self):
        self.log.append("record")
        return types.SimpleNamespace(done=False, synchronize=lambda: self.log.append("event synchronize"))


class FakeCudaArray:
    """A 'device' array: only get/set move data to and from the host, as with CuPy."""

    def __init__(self, values, stream):
        self._a = np.array(values)
        self.shape, self.dtype, self.size = self._a.shape, self._a.dtype, self._a.size
        self._stream = stream

    def get(self, stream=None, out=None, blocking=True):
        assert stream is self._stream and out.flags.c_contiguous and not blocking
        stream.log.append("down")
        out[...] = self._a
        return out

    def set(self, host, stream=None):
        assert stream is self._stream
        stream.log.append("up")
        self._a[...] = host


class FakeComm:
    """Two ranks that hold the same values, behind mpi4py's calls; records what it was handed."""

    Iallgather = None                                   # looked up, not called, by all_gather

    def __init__(self, mpi):
        self.mpi, self.seen = mpi, []

    def Dup(self):                                      # noqa: N802 - mpi4py's names
        return self

    def Set_errhandler(self, handler):                  # noqa: N802
        pass

    def Get_rank(self):                                 # noqa: N802
        return 0

    def Get_size(self):                                 # noqa: N802
        return 2

    def _reduce(self, buf):
        self.seen.append(type(buf))
        target = buf._a if isinstance(buf, FakeCudaArray) else buf
        target *= 2

    def Allreduce(self, inplace, buf, op):              # noqa: N802
        assert inplace is self.mpi.IN_PLACE
        self._reduce(buf)

    def Iallreduce(self, inplace, buf, op):             # noqa: N802
        self.Allreduce(inplace, buf, op)
        return types.SimpleNamespace(Wait=lambda: None, Test=lambda: True)

    def Allgather(self, send, recv):                    # noqa: N802
        self.seen.append(type(send))
        recv.reshape(2, -1)[...] = send.reshape(1, -1)


def _fake_cuda(monkeypatch, aware):
    from gpugrad import backend
    from gpugrad.distributed.mpi import MpiGroup

    stream = FakeStream()
    cupy = types.SimpleNamespace(ndarray=FakeCudaArray,
                                 cuda=types.SimpleNamespace(get_current_stream=lambda: stream))
    monkeypatch.setattr(backend, "_cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(empty_pinned=np.empty))
    monkeypatch.setenv("GPUGRAD_MPI_CUDA_AWARE", "1" if aware else "0")
    mpi = types.SimpleNamespace(IN_PLACE=object(), SUM="sum", MAX="max", ERRORS_RETURN=None,
                                Exception=RuntimeError, Is_initialized=lambda: True)
    mpi.COMM_WORLD = FakeComm(mpi)
    return MpiGroup(mpi), mpi.COMM_WORLD, stream


def test_mpi_stages_cuda_arrays_through_pinned_memory(monkeypatch):
    group, comm, stream = _fake_cuda(monkeypatch, aware=False)
    assert "not CUDA-aware" in group.describe()
    x = FakeCudaArray([1.0, 2.0, 3.0], stream)
    group.all_reduce(x, ReduceOp.AVG, async_op=False)
    assert comm.seen == [np.ndarray]                        # MPI got a host buffer
    assert stream.log == ["down", "synchronize", "up", "record"]    # one sync, the copy up is async
    assert_close(x._a, [1.0, 2.0, 3.0], rtol=0, atol=0)    # the average of two equal ranks
    assert len(group._staged) == 1                          # kept until the copy up is done
    work = group.all_reduce(x, ReduceOp.SUM)            # nonblocking: copied up by wait()
    assert_close(x._a, [1.0, 2.0, 3.0], rtol=0, atol=0)
    work.wait()
    assert_close(x._a, [2.0, 4.0, 6.0], rtol=0, atol=0)
    out = FakeCudaArray(np.zeros(6), stream)
    stream.log.clear()
    group.all_gather(out, x, async_op=False)
    assert stream.log == ["down", "synchronize", "up", "record"]    # only the input goes down
    assert_close(out._a, [2, 4, 6, 2, 4, 6], rtol=0, atol=0)


def test_mpi_hands_cuda_arrays_to_a_cuda_aware_library(monkeypatch):
    group, comm, stream = _fake_cuda(monkeypatch, aware=True)
    assert "(CUDA-aware, GPUGRAD_MPI_CUDA_AWARE=1)" in group.describe()
    x = FakeCudaArray([1.0, 2.0], stream)
    group.all_reduce(x, ReduceOp.SUM, async_op=False)
    assert comm.seen == [FakeCudaArray] and stream.log == ["synchronize"]   # no copies, one sync
    assert_close(x._a, [2.0, 4.0], rtol=0, atol=0)
