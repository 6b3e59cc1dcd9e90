"""The main job: `gpugrad train`, end to end, plus parity of a training loop with PyTorch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optional
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad.cli import main as cli_main
from gpugrad.train import TrainConfig, load_data, split, train

ROOT = Path(__file__).resolve().parents[1]
needs_sklearn = optional.needs("sklearn")     # the default data set, scikit-learn's digits


def quiet(_):
    pass


@needs_sklearn
def test_defaults_reach_97_percent_on_digits():
    metrics = train(TrainConfig(progress=False), log=quiet)
    assert metrics["final_test_accuracy"] >= 0.97, metrics["final_test_accuracy"]
    assert metrics["data"] == "digits (8x8)"


@needs_sklearn
def test_same_seed_same_result_and_other_seed_differs():
    a = train(TrainConfig(epochs=3, progress=False, seed=3), log=quiet)
    b = train(TrainConfig(epochs=3, progress=False, seed=3), log=quiet)
    c = train(TrainConfig(epochs=3, progress=False, seed=4), log=quiet)
    assert a["history"] == b["history"]
    assert a["history"] != c["history"]


@needs_sklearn
def test_cli_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "gpugrad", "train", "--epochs", "3", "--hidden", "32,16", "--optimizer", "sgd",
         "--lr", "0.05", "--batch-size", "128", "--device", "cpu", "--out", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ") and last.endswith("%")
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]["test_accuracy"]) == 3
    assert metrics["config"]["hidden"] == [32, 16]
    # the checkpoint restores the model: same test accuracy from a fresh module
    ckpt = gg.load(out / "checkpoint.gg")
    model = nn.MLP([64, 32, 16, 10])
    model.load_state_dict(ckpt["model"])
    X, y, _ = load_data(None)
    _, _, Xte, yte = split(X, y, 0.2, 0)
    Xte = (Xte - ckpt["input_mean"]) / ckpt["input_std"]          # saved as NumPy arrays
    with gg.no_grad():
        acc = (model(gg.tensor(Xte)).argmax(axis=1) == gg.tensor(yte)).mean().item()
    assert abs(acc - metrics["final_test_accuracy"]) < 1e-9
    if (out / "curves.png").exists():
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_own_data_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y)
    assert cli_main(["train", "--data", str(path), "--epochs", "20", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "mine.npz" in out and float(out.strip().splitlines()[-1].split()[-1].rstrip("%")) > 85


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_text("hello"), "not a readable .npz"),
    (lambda p: np.savez(p, A=np.ones((3, 2))), "needs arrays named X and y"),
    (lambda p: np.savez(p, X=np.ones((3, 2)), y=np.ones(4, dtype=int)), "must have shape (3,)"),
    (lambda p: np.savez(p, X=np.ones((3, 2)), y=np.array([0.5, 1, 0])), "integer class labels"),
    (lambda p: np.savez(p, X=np.full((3, 2), np.nan), y=np.array([0, 1, 0])), "NaN"),
])
def test_bad_data_files_give_clear_errors(tmp_path, capsys, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    assert cli_main(["train", "--data", str(path), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "gpugrad train: error:" in err and message in err


def test_bad_options(capsys):
    assert cli_main(["train", "--hidden", "12,x"]) == 2
    assert "--hidden" in capsys.readouterr().err
    assert cli_main(["train", "--device", "cuda", "--epochs", "1"]) in (0, 2)   # 2 without a GPU


def test_info_runs(capsys):
    assert cli_main(["info"]) in (0, 1)
    out = capsys.readouterr().out
    assert out.startswith("gpugrad ") and "numpy" in out and "cuda" in out


# ----------------------------------------------------------------------------- parity with PyTorch

@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_loop_matches_pytorch_in_float64(opt, torch):
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
    np.testing.assert_allclose(curve_g, curve_t, rtol=1e-6)
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
    gg.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.gg")
    expected = [step(model, opt) for _ in range(3)]
    restored = nn.MLP([4, 8, 3])
    ropt = gg.optim.Adam(restored.parameters(), lr=0.01)
    ck = gg.load(tmp_path / "ck.gg")
    restored.load_state_dict(ck["model"])
    ropt.load_state_dict(ck["opt"])
    assert [step(restored, ropt) for _ in range(3)] == expected
