"""`gpugrad train` / `eval` / `predict` end to end: checked input, resume, parity with PyTorch."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad import train as train_module
from gpugrad.classifier import load_classifier
from gpugrad.cli import main as cli_main
from gpugrad.testing import assert_close
from gpugrad.train import TrainConfig, UsageError, resume, train

ROOT = Path(__file__).resolve().parents[1]
needs_sklearn = optional.needs("sklearn")     # the default data set, scikit-learn's digits
FAST = ["--epochs", "3", "--hidden", "32", "--batch-size", "128", "--device", "cpu", "--no-progress"]
BLOBS = ["--epochs", "10", "--hidden", "16", "--lr", "0.02", "--batch-size", "32", "--device", "cpu",
         "--no-progress"]


def quiet(_):
    pass


def _last_line(text):
    return text.strip().splitlines()[-1]


def _blobs(path, n=300, classes=(0, 1, 2), features=4, seed=0, kind="npz"):
    """A separable data set: one Gaussian blob per class, saved as .npz, .csv or an .npy pair."""
    rng = np.random.default_rng(seed)
    y = np.asarray(classes)[rng.integers(0, len(classes), n)]
    centers = rng.standard_normal((max(len(classes), 1), features)) * 4
    X = centers[np.searchsorted(np.unique(classes), y)] + rng.standard_normal((n, features))
    if kind == "npz":
        np.savez(path, X=X, y=y)
    elif kind == "csv":
        header = ",".join([f"f{i}" for i in range(features)] + ["label"])
        np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="")
    else:
        np.save(path, X)
        np.save(str(path).replace(".npy", "_labels.npy"), y)
    return X, y


@needs_sklearn
def test_defaults_reach_97_percent_on_digits():
    metrics = train(TrainConfig(progress=False), log=quiet)
    assert metrics["test_accuracy"] >= 0.97, metrics["test_accuracy"]
    assert metrics["data"] == "digits (8x8)" and len(metrics["history"]["val_accuracy"]) == 40
    val_loss = metrics["history"]["val_loss"]           # the best epoch: the lowest validation loss
    assert metrics["best_epoch"] == 1 + int(np.argmin(val_loss)) < 40
    assert metrics["best_val_loss"] == min(val_loss)


@needs_sklearn
def test_same_seed_same_result_and_other_seed_differs():
    a = train(TrainConfig(epochs=3, progress=False, seed=3), log=quiet)
    b = train(TrainConfig(epochs=3, progress=False, seed=3), log=quiet)
    c = train(TrainConfig(epochs=3, progress=False, seed=4), log=quiet)
    assert a["history"] == b["history"]
    assert a["history"] != c["history"]


def test_validation_and_test_sets_are_disjoint_stratified_and_seeded():
    y = np.repeat(np.arange(4), [50, 30, 20, 100])
    parts = train_module.split(y, 0.1, 0.2, seed=1)
    assert sum(len(p) for p in parts) == len(y)
    assert len(np.unique(np.concatenate(parts))) == len(y)
    for label, count in zip(range(4), [50, 30, 20, 100]):
        assert [int((y[p] == label).sum()) for p in parts] == [count - round(count * .3), round(count * .1),
                                                               round(count * .2)]
    assert all(np.array_equal(a, b) for a, b in zip(parts, train_module.split(y, 0.1, 0.2, seed=1)))


# ----------------------------------------------------------------------------- outputs, eval, predict
@needs_sklearn
def test_cli_end_to_end_then_eval_and_predict_from_the_checkpoint_alone(tmp_path, capsys):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "gpugrad", "train", *FAST, "--optimizer", "sgd", "--lr", "0.05"]
    proc = subprocess.run([*command, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = _last_line(proc.stdout)
    assert last.startswith("test accuracy: ") and last.endswith("%")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gpugrad_version"] == gg.__version__ and metrics["started"].endswith("+00:00")
    assert metrics["device"] == "cpu" and metrics["device_name"] and 1 <= metrics["best_epoch"] <= 3
    assert len(metrics["history"]["val_accuracy"]) == 3 and metrics["config"]["hidden"] == [32]
    assert metrics["samples"] == {"train": 1259, "validation": 179, "test": 359}
    if (out / "curves.png").exists():
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # gpugrad eval: the run's own test set, rebuilt from the checkpoint's config: the same figure
    assert cli_main(["eval", "--checkpoint", str(out), "--device", "cpu"]) == 0
    assert _last_line(capsys.readouterr().out) == last

    # a one-line load; its predictions are what predict writes
    clf = load_classifier(out)
    from sklearn.datasets import load_digits  # noqa: PLC0415

    X, y = load_digits(return_X_y=True)
    data = tmp_path / "digits.npz"
    np.savez(data, X=X / 16.0)                                   # features only: predict needs no labels
    assert cli_main(["predict", "--checkpoint", str(out), "--data", str(data), "--out",
                     str(tmp_path / "preds.npz")]) == 0
    with np.load(tmp_path / "preds.npz") as preds:
        assert_close(preds["labels"], clf.predict(X / 16.0), rtol=0, atol=0)
        assert preds["probabilities"].shape == (1797, 10)
        total = preds["probabilities"].sum(axis=1)
        assert_close(total, np.ones(1797, total.dtype), rtol=1e-5)
    assert (clf.predict(X / 16.0) == y).mean() > 0.8

    # the checkpoint is plain safetensors
    import safetensors.numpy  # noqa: PLC0415

    assert "model.0.weight" in safetensors.numpy.load_file(out / "best.safetensors")


def test_csv_and_npy_pairs_and_sparse_labels(tmp_path, capsys):
    _blobs(tmp_path / "d.csv", kind="csv")
    assert cli_main(["train", "--data", str(tmp_path / "d.csv"), *BLOBS]) == 0
    assert float(_last_line(capsys.readouterr().out).split()[-1].rstrip("%")) > 90

    _blobs(tmp_path / "f.npy", kind="npy")
    assert cli_main(["train", "--data", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "f_labels.npy"),
                     *BLOBS]) == 0
    capsys.readouterr()

    X, y = _blobs(tmp_path / "sparse.npz", classes=(-1, 1000))
    sparse = str(tmp_path / "sparse.npz")
    assert cli_main(["train", "--data", sparse, *BLOBS, "--out", str(tmp_path / "s")]) == 0
    text = capsys.readouterr().out
    assert "warning" in text and "not 0..1 but 2 distinct values (-1, 1000)" in text and "2 classes" in text
    assert set(load_classifier(tmp_path / "s").predict(X)) <= {-1, 1000}
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "s"), "--data", sparse]) == 0
    assert float(_last_line(capsys.readouterr().out).split()[-1].rstrip("%")) > 90


def test_predict_on_a_csv_that_still_has_its_label_column(tmp_path, capsys):
    X, y = _blobs(tmp_path / "d.csv", kind="csv")
    assert cli_main(["train", "--data", str(tmp_path / "d.csv"), *BLOBS, "--out", str(tmp_path / "run")]) == 0
    assert cli_main(["predict", "--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "d.csv"),
                     "--out", str(tmp_path / "p.npz")]) == 0
    assert "the last is taken as the label and ignored" in capsys.readouterr().out
    with np.load(tmp_path / "p.npz") as preds:
        assert (preds["labels"] == y).mean() > 0.9


# ----------------------------------------------------------------------------- bad input: exit code 2
def _write_text(p):
    p.write_text("hello, I am text\n")


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "no such file"),
    (_write_text, "not a .npz archive (it starts with b'hello, I'"),
    (lambda p: np.savez(p, A=np.ones((3, 2))), "needs arrays named X and y"),
    (lambda p: np.savez(p, X=np.ones((3, 2))), "the .npz file needs an array named y"),
    (lambda p: np.savez(p, X=np.ones((3, 2)), y=np.ones(4, dtype=int)), "must have shape (3,)"),
    (lambda p: np.savez(p, X=np.ones((3, 2)), y=np.array([0.5, 1, 0])), "integer class labels"),
    (lambda p: np.savez(p, X=np.full((3, 2), np.nan), y=np.array([0, 1, 0])), "NaN"),
    (lambda p: np.savez(p, X=np.ones((30, 2)), y=np.full(30, 3)), "all 30 samples have the label 3"),
    (lambda p: np.savez(p, X=np.ones((4, 2)), y=np.array([0, 1, 0, 1])), "the validation set would be empty"),
    (lambda p: np.savez(p, X=np.array([{}, {}], dtype=object), y=np.array([0, 1])), "not a readable .npz"),
])
def test_bad_data_files_give_clear_errors(tmp_path, capsys, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    assert cli_main(["train", "--data", str(path), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"gpugrad train: error: --data {path}" in err and message in err, err


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs 0: must be a whole number of at least 1"),
    (["--batch-size", "-3"], "--batch-size -3: must be a whole number"),
    (["--device", "tpu"], "--device tpu: unknown device; gpugrad runs on the CPU and on NVIDIA GPUs"),
    (["--device", "mps"], "--device mps: unknown device"),
    (["--device", "CPU"], "--device CPU: unknown device; did you mean --device cpu?"),
    (["--device", "cuda:x"], "--device cuda:x: unknown device; did you mean --device cuda?"),
    (["--lr", "nan"], "--lr nan: the learning rate must be a finite number above 0"),
    (["--lr", "0"], "--lr 0.0: the learning rate must be a finite number above 0"),
    (["--weight-decay", "-1"], "--weight-decay -1.0: must be a finite number, 0 or more"),
    (["--seed", "-1"], "--seed -1: must be a whole number from 0 to 2**63 - 1"),
    (["--val-fraction", "0"], "--val-fraction 0.0: must be a fraction between 0 and 1"),
    (["--test-fraction", "0.6", "--val-fraction", "0.4"], "--test-fraction 0.6: with --val-fraction 0.4"),
    (["--hidden", "12,x"], "--hidden '12,x': give layer sizes as integers"),
    (["--hidden", "0"], "--hidden '0': layer sizes must be positive"),
    (["--labels", "y.npy"], "--labels y.npy: labels in their own file go with --data FEATURES.npy"),
    (["--resume", "nowhere"], "--resume nowhere: no last.safetensors there"),
])
def test_bad_options_name_the_flag_the_value_and_what_to_do(capsys, args, message):
    assert cli_main(["train", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_a_text_file_with_an_unknown_extension_is_named(tmp_path, capsys):
    path = tmp_path / "x.txt"
    path.write_text("1,2\n")
    assert cli_main(["train", "--data", str(path)]) == 2
    assert f"--data {path}: unknown file type '.txt'" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_a_usage_error(capsys):
    if gg.cuda.is_available():
        pytest.skip("a GPU is usable here")
    assert cli_main(["train", "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device" in capsys.readouterr().err


@needs_sklearn
def test_out_must_be_a_writable_directory_without_another_run(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("")
    assert cli_main(["train", *FAST, "--out", str(afile)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert cli_main(["train", *FAST, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert cli_main(["train", *FAST, "--out", str(tmp_path / "run")]) == 2
    assert f"already holds a run (last.safetensors); continue it with --resume {tmp_path / 'run'}" in \
        capsys.readouterr().err


def test_help_shows_every_default_and_choice(capsys):
    assert cli_main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 40)", "(default: 64)", "(default: 0.001)", "(default: 256)", "(default: relu)",
                  "(default: adam", "(default: auto)", "(default: 0.1)", "(default: 0.2)", "(default: 0)",
                  "{sgd,adam,adamw}", "gelu", "leaky_relu", "cpu, cuda or cuda:N", "--resume DIR"):
        assert shown in text, shown


@needs_sklearn
def test_a_diverging_run_stops_with_exit_code_1_and_says_what_to_do(capsys):
    with np.errstate(all="ignore"):
        assert cli_main(["train", *FAST, "--optimizer", "sgd", "--lr", "1e4"]) == 1
    err = capsys.readouterr().err
    assert "training diverged: the loss is nan in epoch 1; lower --lr (it is 10000.0)" in err


def test_info_runs_and_reports_mpi_and_nccl(capsys):
    """Exit code 0; 1 would mean a kernel failed to compile (checked where CUDA, or its emulator, runs)."""
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpugrad ") and "numpy" in out and "cuda" in out
    if gg.cuda.is_available():
        assert "kernels/optimizer.cu: compiles" in out and "FAILED" not in out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[2:5]] == ["mpi", "nccl", "launcher"], out
    assert lines[2:5] == gg.distributed.describe()


# ----------------------------------------------------------------------------- interrupt and resume
def _comparable(metrics):
    return {k: metrics[k] for k in ("history", "test_accuracy", "test_loss", "best_epoch", "best_val_loss")}


def test_kill_int_then_resume_gives_the_metrics_of_an_uninterrupted_run(tmp_path):
    data = tmp_path / "blobs.npz"
    _blobs(data, n=6000, classes=range(5), features=16)
    args = ["--data", str(data), "--epochs", "4", "--hidden", "16", "--batch-size", "16", "--device", "cpu",
            "--no-progress"]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gpugrad", "train", *args, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)                  # somewhere in epoch 2, between two steps
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted in epoch" in stdout
    assert f"Continue with: python -m gpugrad train --resume {out}" in stdout
    assert not (out / "metrics.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "gpugrad", "train", "--resume", str(out),
                              "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    straight = train(TrainConfig(data=str(data), epochs=4, hidden=(16,), batch_size=16, device="cpu",
                                 progress=False, out=str(tmp_path / "straight")), log=quiet)
    assert _comparable(json.loads((out / "metrics.json").read_text())) == _comparable(straight)
    assert _last_line(resumed.stdout) == f"test accuracy: {100 * straight['test_accuracy']:.2f}%"


def _interrupt_at(monkeypatch, step):
    """Send this process a real SIGINT during the ``step``-th training step (counted from 1)."""
    real = train_module._Run._step
    calls = []

    def step_then_signal(self, *args):
        real(self, *args)
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_module._Run, "_step", step_then_signal)


@pytest.mark.parametrize("step", [5, 10, 13])      # mid-epoch, the last batch of an epoch, an epoch's first
@needs_sklearn
def test_interrupt_at_any_step_then_resume_is_bit_identical(tmp_path, monkeypatch, step):
    cfg = dict(epochs=3, hidden=(16,), batch_size=128, device="cpu", progress=False)   # 10 batches an epoch
    straight = train(TrainConfig(**cfg, out=str(tmp_path / "a")), log=quiet)
    _interrupt_at(monkeypatch, step)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg, out=str(tmp_path / "b")), log=lines.append)
    assert any("interrupted in epoch" in line for line in lines)
    monkeypatch.undo()
    assert _comparable(resume(str(tmp_path / "b"), log=quiet)) == _comparable(straight)
    for name in ("best.safetensors", "last.safetensors"):
        a, b = gg.load(tmp_path / "a" / name), gg.load(tmp_path / "b" / name)
        for key in a["model"]:
            assert_close(a["model"][key].numpy(), b["model"][key].numpy(), rtol=0, atol=0)


@needs_sklearn
def test_resume_can_extend_a_run_and_refuses_to_change_its_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(["train", *FAST, "--out", str(run)]) == 0
    assert cli_main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
    assert "--lr 0.5 (the run has 0.001)" in capsys.readouterr().err
    assert cli_main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "already trained 3 epochs" in capsys.readouterr().err
    extended = resume(str(run), log=quiet, epochs=5, out=str(tmp_path / "more"))
    straight = train(TrainConfig(epochs=5, hidden=(32,), batch_size=128, device="cpu", progress=False),
                     log=quiet)
    assert _comparable(extended) == _comparable(straight)
    assert (tmp_path / "more" / "best.safetensors").exists()


@needs_sklearn
def test_ctrl_c_without_out_saves_nothing_and_says_so(monkeypatch):
    _interrupt_at(monkeypatch, 3)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(epochs=2, hidden=(8,), device="cpu", progress=False), log=lines.append)
    assert lines[-1] == "interrupted; nothing saved (no --out)"


# ----------------------------------------------------------------------------- progress and device reads
class _Terminal(io.StringIO):
    def isatty(self):
        return True


@needs_sklearn
def test_one_progress_bar_for_the_whole_run_with_loss_and_validation_accuracy(monkeypatch):
    tqdm = optional.need("tqdm")
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setattr(train_module._Bar, "REFRESH_S", 0.0)
    shown = []
    real = tqdm.tqdm.set_postfix
    def spy(self, ordered_dict=None, refresh=True, **kw):
        shown.append(dict(ordered_dict))
        real(self, ordered_dict, refresh)

    monkeypatch.setattr(tqdm.tqdm, "set_postfix", spy)
    train(TrainConfig(epochs=4, hidden=(16,), batch_size=256, device="cpu"), log=quiet)
    text = screen.getvalue()
    assert text.count("\n") <= 1                    # one bar, redrawn in place: not one per epoch
    assert "epoch 4/4" in text and "loss=" in text and "val_acc=" in text
    first_epoch = [p for p in shown if "val_acc" not in p]
    assert len(first_epoch) == 5 and all(float(p["loss"]) > 0 for p in first_epoch)   # updated within it
    assert all(float(p["loss"]) > 0 for p in shown)


@needs_sklearn
def test_the_loop_reads_the_device_per_epoch_not_per_batch(monkeypatch):
    reads = []
    for name in ("item", "__bool__", "numpy"):          # float() and int() go through item()
        real = getattr(gg.Tensor, name)

        def counted(self, *a, _real=real, _name=name):
            reads.append(_name)
            return _real(self, *a)

        monkeypatch.setattr(gg.Tensor, name, counted)
    epochs, batches = 3, 20                           # 1259 samples, batch 64
    train(TrainConfig(epochs=epochs, hidden=(16,), device="cpu", progress=False), log=quiet)
    # per epoch: the loss sum and the correct count, and validation's two figures; then the test's two
    assert len(reads) <= 4 * epochs + 2 < epochs * batches, reads


# ----------------------------------------------------------------------------- parity with PyTorch
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_loop_matches_pytorch_in_float64(opt):
    torch = optional.need("torch")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 20))
    y = rng.integers(0, 5, size=256)
    model = nn.MLP([20, 32, 16, 5], activation="relu", dtype=gg.float64)
    ref = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
                              torch.nn.ReLU(), torch.nn.Linear(16, 5)).double()
    with torch.no_grad():
        for p, q in zip(model.parameters(), ref.parameters()):
            q.copy_(torch.tensor(p.detach().numpy()))
    if opt == "sgd":
        ours = gg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        theirs = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    else:
        ours = gg.optim.Adam(model.parameters(), lr=1e-2)
        theirs = torch.optim.Adam(ref.parameters(), lr=1e-2)
    batches = [rng.choice(256, size=32, replace=False) for _ in range(50)]
    curve_g, curve_t = [], []
    for idx in batches:
        loss = nn.functional.cross_entropy(model(gg.tensor(X[idx])), gg.tensor(y[idx]))
        ours.zero_grad()
        loss.backward()
        ours.step()
        curve_g.append(loss.item())
        tloss = torch.nn.functional.cross_entropy(ref(torch.tensor(X[idx])), torch.tensor(y[idx]))
        theirs.zero_grad()
        tloss.backward()
        theirs.step()
        curve_t.append(tloss.item())
    assert_close(curve_g, curve_t, rtol=1e-6)
    assert curve_g[-1] < curve_g[0]


def test_model_and_optimizer_state_round_trip(tmp_path):
    model = nn.MLP([4, 8, 3])
    opt = gg.optim.Adam(model.parameters(), lr=0.01)
    x, y = gg.randn(16, 4), gg.randint(0, 3, (16,))

    def step(m, o):
        loss = nn.functional.cross_entropy(m(x), y)
        o.zero_grad()
        loss.backward()
        o.step()
        return loss.item()

    for _ in range(3):
        step(model, opt)
    gg.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.safetensors")
    expected = [step(model, opt) for _ in range(3)]
    restored = nn.MLP([4, 8, 3])
    ropt = gg.optim.Adam(restored.parameters(), lr=0.01)
    ck = gg.load(tmp_path / "ck.safetensors")
    restored.load_state_dict(ck["model"])
    ropt.load_state_dict(ck["opt"])
    assert [step(restored, ropt) for _ in range(3)] == expected


def test_usage_errors_are_value_errors_for_python_callers():
    with pytest.raises(UsageError, match="--epochs 0"):
        train(TrainConfig(epochs=0))
    assert issubclass(UsageError, ValueError)
