"""`gpugrad train` with several processes: `--nproc N` starts them under mpiexec.

"The same training as one process" means, here: every step's batch is the same rows of the same
permutation, shared among the ranks, and DDP averages the ranks' gradients of their share of the
batch mean, so the only difference is float32 summation order (each rank sums its share; MPI adds
the shares). That changes the last bits of each step, about 1e-7 relative; over the two epochs of
this well-conditioned problem the losses stay within rtol 1e-5 of one process's (measured: within
1e-7 at 2 and 3 processes), and no prediction flips, so every accuracy, the best epoch and the test
accuracy are equal. (gpugrad train trains in float32; DDP's float64 equality with one process, to
1e-10, is test_distributed_mpi.py's.) The multi-process tests skip where mpi4py or mpiexec is
missing.
"""

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import optional
import pytest
from test_train import _interrupt_at, quiet

import gpugrad as gg
from gpugrad import train as train_module
from gpugrad.cli import main as cli_main
from gpugrad.distributed import api, launch
from gpugrad.testing import assert_close
from gpugrad.train import TrainConfig, resume, train

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TIMEOUT_S = 300
# SGD: its step is proportional to the gradient (Adam's would hide a wrongly scaled average)
OPTIONS = dict(epochs=2, hidden=(16,), batch_size=32, optimizer="sgd", lr=0.04, device="cpu", progress=False)


def _args(data, **changed):
    """The command-line flags of OPTIONS (with ``changed``) for ``data``."""
    options = {**OPTIONS, **changed}
    args = ["--data", str(data), "--no-progress"]
    for key in ("epochs", "batch_size", "optimizer", "lr", "device"):
        args += [f"--{key.replace('_', '-')}", str(options[key])]
    return args + ["--hidden", ",".join(map(str, options["hidden"]))]


def _blobs(path, n):
    """Five overlapping Gaussian blobs in 16 dimensions: about 90% accuracy, so accuracies tell runs apart."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, n)
    np.savez(path, X=rng.standard_normal((5, 16))[y] + rng.standard_normal((n, 16)), y=y)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    _blobs(path, 3000)
    return path


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The metrics of OPTIONS's run on ``data`` by one process, with its files."""
    out = tmp_path_factory.mktemp("one") / "run"
    return train(TrainConfig(data=str(data), **OPTIONS, out=str(out)), log=quiet), out


def _needs_mpiexec():
    optional.need("mpi4py")
    try:
        launch.mpiexec_command(2)
    except RuntimeError as err:
        pytest.skip(str(err))


def _job(tmp_path, args, **plants):
    """`python -m gpugrad train ARGS` in a fresh process, with tests/rank_faults.py's ``plants`` in
    it and in every rank it starts."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                           "import rank_faults\nrank_faults.install()\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_"))}
    environ.update(plants, PYTHONPATH=os.pathsep.join([str(site), str(ROOT), environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "gpugrad", "train", *args], cwd=ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(proc):
    stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, stdout, stderr


def _same_training(one, other):
    """The same run up to float32 summation order (this module's docstring)."""
    for key in ("train_loss", "val_loss"):
        assert_close(other["history"][key], one["history"][key], rtol=1e-5, msg=key)
    for key in ("train_accuracy", "val_accuracy"):
        assert other["history"][key] == one["history"][key], key
    assert other["best_epoch"] == one["best_epoch"]
    assert other["test_accuracy"] == one["test_accuracy"]
    assert_close(other["test_loss"], one["test_loss"], rtol=1e-5)


def _straight(data, tmp_path):
    return train(TrainConfig(data=str(data), **OPTIONS, out=str(tmp_path / "straight")), log=quiet)


# ----------------------------------------------------------------------------- several processes
def test_two_processes_train_as_one_does_and_rank_0_alone_writes(tmp_path, data, one_process):
    _needs_mpiexec()
    out = tmp_path / "two"
    code, stdout, stderr = _finished(_job(tmp_path, [*_args(data), "--nproc", "2", "--out", str(out)],
                                          GG_TEST_ONLY_RANK0_WRITES=str(out)))
    assert code == 0, stderr
    two = json.loads((out / "metrics.json").read_text())
    one, one_out = one_process
    assert (two["processes"], one["processes"]) == (2, 1)
    _same_training(one, two)
    assert sorted(os.listdir(out)) == sorted(os.listdir(one_out))
    lines = stdout.splitlines()                             # rank 0 alone logs
    assert lines[0].endswith("device: cpu, 2 processes"), stdout
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert lines[-1] == f"test accuracy: {100 * one['test_accuracy']:.2f}%"


def test_ctrl_c_stops_every_rank_and_saves_once(tmp_path):
    _needs_mpiexec()
    big = tmp_path / "big.npz"
    _blobs(big, 12000)                                       # 263 steps an epoch
    run = tmp_path / "run"
    proc = _job(tmp_path, [*_args(big), "--nproc", "2", "--out", str(run)])
    deadline = time.monotonic() + TIMEOUT_S
    while not (run / "last.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)                          # in epoch 2: relayed to both ranks
    code, stdout, stderr = _finished(proc)
    assert code == 130, stdout + stderr
    assert stdout.count("interrupted in epoch") == 1, stdout   # saved once, by rank 0
    assert f"Continue with: python -m gpugrad train --resume {run}" in stdout
    assert not (run / "metrics.json").exists()
    assert gg.load(run / "last.safetensors")["progress"]["processes"] == 2


def test_a_stop_on_one_rank_stops_all_at_one_step_and_one_process_resumes(tmp_path, data, one_process):
    _needs_mpiexec()
    run = tmp_path / "run"
    code, stdout, stderr = _finished(_job(tmp_path, [*_args(data), "--nproc", "2", "--out", str(run)],
                                          GG_TEST_STOP="1:5"))
    assert code == 130, stdout + stderr
    # rank 1 asks during step 5; every rank sees it at the next step's poll, and stops after it
    assert "interrupted in epoch 1, after batch 6 of 66" in stdout, stdout
    lines = []
    resumed = resume(str(run), log=lines.append)             # one process continues
    assert "at epoch 1, batch 7 of 66 (saved by 2 processes, continued by 1)" in lines[0]
    _same_training(one_process[0], resumed)


def test_three_processes_resume_a_run_one_process_stopped_mid_epoch(tmp_path, monkeypatch):
    _needs_mpiexec()
    data = tmp_path / "odd.npz"
    _blobs(data, 3020)
    rows = len(train_module.split(np.load(data)["y"], 0.1, 0.2, 0)[0])
    assert rows % 32 == 1                 # each epoch's last batch is one row: two of three ranks get none
    run = tmp_path / "run"
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(data=str(data), **OPTIONS, out=str(run)), log=quiet)
    monkeypatch.undo()
    code, stdout, stderr = _finished(_job(tmp_path, ["--resume", str(run), "--no-progress", "--nproc", "3"]))
    assert code == 0, stderr
    assert "resuming" in stdout and "(saved by 1 process, continued by 3)" in stdout
    _same_training(_straight(data, tmp_path), json.loads((run / "metrics.json").read_text()))


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path, data):
    _needs_mpiexec()
    start = time.monotonic()
    code, stdout, stderr = _finished(_job(tmp_path, [*_args(data), "--nproc", "2"], GG_TEST_FAIL="1:3"))
    assert code == 1, stdout + stderr
    assert "[rank 1] gpugrad.distributed: rank 1 of 2 failed; aborting the job" in stderr
    assert "[rank 1] RuntimeError: planted failure on rank 1 in step 3" in stderr
    assert "test accuracy" not in stdout
    assert time.monotonic() - start < 60


def test_a_bad_option_on_one_rank_stops_every_rank_with_one_message(tmp_path, data):
    _needs_mpiexec()
    code, stdout, stderr = _finished(_job(tmp_path, [*_args(data), "--nproc", "2"], GG_TEST_BAD_OPTION="1"))
    assert code == 2, stdout + stderr
    assert stderr.count("gpugrad train: error:") == 1, stderr
    assert f"gpugrad train: error: rank 1 of 2: --data {data}: planted: unreadable on rank 1" in stderr


# ----------------------------------------------------------------------------- checked before starting
@pytest.fixture
def no_launch(monkeypatch):
    """Bad options must be caught before any process is started."""
    def refuse(*args):
        raise AssertionError(f"the job was started: {args}")

    monkeypatch.setattr(launch, "run", refuse)


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine with one (pretend) GPU, as far as the option checks ask."""
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1)))
    monkeypatch.setattr(train_module.backend, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(train_module.backend, "load_cupy", lambda: cupy)


@pytest.mark.parametrize("args,message", [
    (["--nproc", "0"], "--nproc 0: must be a whole number of at least 1 (the number of processes"),
    (["--nproc", "-2"], "--nproc -2: must be a whole number of at least 1"),
    (["--nproc", "2", "--batch-size", "1"], "--batch-size 1: each step's batch is shared among the 2 "
                                           "processes; give at least 2"),
    (["--nproc", "3", "--epochs", "0"], "--epochs 0: must be a whole number of at least 1"),
    (["--nproc", "2", "--device", "cuda"], "--device cuda: each process needs its own GPU, and this "
                                          "machine has 1; start at most 1 process(es) per machine, or give "
                                          "--device cpu"),
    (["--nproc", "2", "--device", "cuda:0"], "--device cuda:0: names one GPU, and each of the 2 processes "
                                            "needs its own; give --device cuda"),
])
def test_bad_process_options_are_usage_errors(capsys, data, no_launch, one_gpu, args, message):
    assert cli_main(["train", "--data", str(data), *args]) == 2
    assert message in capsys.readouterr().err


def test_resume_with_other_processes_keeps_its_settings(tmp_path, data, capsys, no_launch):
    run = tmp_path / "run"
    train(TrainConfig(data=str(data), **{**OPTIONS, "epochs": 1}, out=str(run)), log=quiet)
    assert cli_main(["train", "--resume", str(run), "--lr", "0.5", "--nproc", "2"]) == 2
    assert "a resumed run keeps its settings, but --lr 0.5 (the run has 0.04)" in capsys.readouterr().err


def test_nproc_under_a_launcher_must_agree_with_it(data, capsys, no_launch, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert cli_main(["train", "--data", str(data), "--nproc", "3"]) == 2
    assert "--nproc 3: Open MPI started this process as one of 2; give --nproc 2, or leave --nproc out" in \
        capsys.readouterr().err


def test_without_mpi_nproc_says_what_to_install(data, capsys, no_launch, monkeypatch):
    monkeypatch.setattr(api, "is_available", lambda: False)
    assert cli_main(["train", "--data", str(data), "--device", "cpu", "--nproc", "2"]) == 2
    assert '--nproc 2: 2 processes run through MPI, and mpi4py is not installed: pip install ' \
           '"gpugrad[distributed]"' in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(api, "is_available", lambda: True)
    monkeypatch.setattr(launch.shutil, "which", lambda *args, **kwargs: None)
    assert cli_main(["train", "--data", str(data), "--device", "cpu", "--nproc", "2"]) == 2
    assert "2 processes are started by mpiexec, and there is none on PATH" in capsys.readouterr().err


def test_one_process_needs_no_mpi(data, capsys, monkeypatch):
    monkeypatch.setattr(api, "is_available", lambda: False)
    assert cli_main(["train", *_args(data, epochs=1), "--nproc", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test accuracy: ")


def test_the_command_each_process_runs_is_the_command_without_nproc():
    from gpugrad.cli import _train_argv, build_parser

    args = build_parser().parse_args(["train", "--hidden", "", "--lr", "0.001", "--nproc", "4", "--resume",
                                      "runs/x", "--no-progress", "--epochs", "7"])
    assert _train_argv(args) == ["train", "--hidden", "", "--epochs", "7", "--lr", "0.001", "--resume",
                                 "runs/x", "--no-progress"]
