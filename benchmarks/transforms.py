"""Transform benchmarks T1-T3: gpugrad's Hessian, HVP and per-example gradients beside torch.func and HIPS
autograd, each measurement in a process of its own.

    python -m benchmarks.transforms [--quick] [--processes N] [--only T1 T3] [--libs gpugrad torch]
                                    [--out F.md]
    python -m benchmarks.transforms --child T1 torch [--samples 5] [--target-s 0.2] [--threads 2]

    T1  the full Hessian of a 1,994-parameter tanh MLP loss                      ms
    T2  a Hessian-vector product of the same loss                                ms
    T3  per-example gradients of a batch of 128, MLP 784-256-10 (tanh), CE        ms

The loss of T1/T2 is the mean squared error of a 20-64-10 tanh MLP (20*64 + 64 + 64*10 + 10 =
1,994 parameters, one flat vector) over 32 examples. T3's model starts from PyTorch's default
Linear initialisation. All float32, the same inputs for every runner (NumPy, one seed).

Runners (one column each): gpugrad (``gg.hessian``; the HVP as the gradient of <grad f, v>;
``gg.vmap(gg.grad(loss), in_axes=(None, 0, 0))`` with ``gg.func.functional_call``), gpugrad-loop
(T3: a Python loop of ``gg.grad`` over the examples), torch (``torch.func.hessian``,
``torch.func.jvp`` of ``grad``, ``torch.func.vmap(grad)`` with ``functional_call``), HIPS
autograd (``autograd.hessian``, ``hessian_tensor_product``; T3: a loop of ``grad``: it has no
vmap) and the NumPy floor (T3: the per-example gradients by hand).

Method, as benchmarks/compare.py: every measurement is a fresh process (``--child``), rounds
rotate which runner goes first, a process calibrates its repetitions to ``--target-s`` and
reports the median of ``--samples`` batches; the table shows the median over processes and
the share of the machine other processes used. Each child also returns a fingerprint of its
result, and the parent checks every runner against gpugrad's. Targets: gpugrad/torch <= 1 on
each; T3's loop at least 20 times slower than gpugrad's vmap.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import machine
from benchmarks.runner import timed

SEED = 20261201
SIZES_T12 = (20, 64, 10)
N_T12 = 32
SIZES_T3 = (784, 256, 10)
BATCH_T3 = 128
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKLOADS: dict[str, dict[str, str]] = {
    "T1": {"kind": "hessian", "desc": "Hessian of a 1,994-parameter tanh MLP loss", "metric": "ms"},
    "T2": {"kind": "hvp", "desc": "Hessian-vector product, same loss", "metric": "ms"},
    "T3": {"kind": "per_example", "desc": "per-example gradients, batch 128, MLP 784-256-10", "metric": "ms"},
}
LABELS = {"gpugrad": "gpugrad", "gpugrad-loop": "gpugrad loop", "torch": "torch.func",
          "autograd": "HIPS autograd", "floor": "NumPy floor"}
MODULES = {"gpugrad": None, "gpugrad-loop": None, "torch": "torch", "autograd": "autograd", "floor": None}
FINGERPRINT_RTOL = 2e-3


# ----------------------------------------------------------------------------- shared inputs

def mlp_loss_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """T1/T2: inputs x (32, 20), targets y (32, 10), the flat parameters theta (1994,), a direction v."""
    rng = np.random.default_rng(SEED)
    n_in, n_hidden, n_out = SIZES_T12
    n = n_in * n_hidden + n_hidden + n_hidden * n_out + n_out
    assert n == 1994
    x = rng.standard_normal((N_T12, n_in)).astype(np.float32)
    y = rng.standard_normal((N_T12, n_out)).astype(np.float32)
    theta = (rng.standard_normal(n) / np.sqrt(n_in)).astype(np.float32)
    v = rng.standard_normal(n).astype(np.float32)
    return x, y, theta, v


def unpack(t: Any) -> tuple[Any, Any, Any, Any]:
    """W1 (64, 20), b1, W2 (10, 64), b2 from the flat vector (any array library's slicing)."""
    n_in, n_hidden, n_out = SIZES_T12
    a = n_in * n_hidden
    b = a + n_hidden
    c = b + n_hidden * n_out
    return t[:a].reshape(n_hidden, n_in), t[a:b], t[b:c].reshape(n_out, n_hidden), t[c:]


def per_example_arrays() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """T3: [W1, b1, W2, b2] (PyTorch's default Linear init), inputs (128, 784), labels (128,)."""
    rng = np.random.default_rng(SEED + 1)
    params = []
    for n_in, n_out in zip(SIZES_T3[:-1], SIZES_T3[1:]):
        bound = 1 / np.sqrt(n_in)
        params += [rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),
                   rng.uniform(-bound, bound, (n_out,)).astype(np.float32)]
    x = rng.standard_normal((BATCH_T3, SIZES_T3[0])).astype(np.float32)
    labels = rng.integers(0, SIZES_T3[-1], BATCH_T3).astype(np.int64)
    return params, x, labels


# ----------------------------------------------------------------------------- gpugrad


def _gpugrad(kind: str, loop: bool = False) -> Callable[[], Any]:
    import gpugrad as gg  # noqa: PLC0415

    if kind in ("hessian", "hvp"):
        x, y, theta, v = (gg.tensor(a) for a in mlp_loss_arrays())

        def loss(t: Any) -> Any:
            w1, b1, w2, b2 = unpack(t)
            return ((gg.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

        if kind == "hessian":
            hessian = gg.hessian(loss)
            return lambda: hessian(theta).numpy()
        hvp = gg.grad(lambda t: gg.dot(gg.grad(loss)(t), v))
        return lambda: hvp(theta).numpy()
    arrays, xs, labels = per_example_arrays()
    model = gg.nn.MLP(list(SIZES_T3), activation="tanh")
    names = [n for n, _ in model.named_parameters()]
    params = {n: gg.tensor(a) for n, a in zip(names, arrays)}
    x, y = gg.tensor(xs), gg.tensor(labels)
    cross_entropy = gg.nn.functional.cross_entropy

    def example_loss(p: dict, xi: Any, yi: Any) -> Any:
        return cross_entropy(gg.func.functional_call(model, p, (xi,)), yi)

    if loop:
        one = gg.grad(example_loss)

        def per_example_loop() -> list:
            grads = [one(params, x[i], y[i]) for i in range(BATCH_T3)]
            return [np.stack([g[n].numpy() for g in grads]) for n in names]
        return per_example_loop
    per_example = gg.vmap(gg.grad(example_loss), in_axes=(None, 0, 0))

    def step() -> list:
        grads = per_example(params, x, y)
        return [grads[n].numpy() for n in names]
    return step


# ----------------------------------------------------------------------------- torch.func


def _torch(kind: str) -> Callable[[], Any]:
    import torch  # noqa: PLC0415 - optional peer
    from torch import func  # noqa: PLC0415

    if kind in ("hessian", "hvp"):
        x, y, theta, v = (torch.from_numpy(a.copy()) for a in mlp_loss_arrays())

        def loss(t: Any) -> Any:
            w1, b1, w2, b2 = unpack(t)
            return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

        if kind == "hessian":
            hessian = func.hessian(loss)
            return lambda: hessian(theta).numpy()
        return lambda: func.jvp(func.grad(loss), (theta,), (v,))[1].numpy()
    arrays, xs, labels = per_example_arrays()
    n_in, n_hidden, n_out = SIZES_T3
    model = torch.nn.Sequential(torch.nn.Linear(n_in, n_hidden), torch.nn.Tanh(),
                                torch.nn.Linear(n_hidden, n_out))
    names = [n for n, _ in model.named_parameters()]
    params = {n: torch.from_numpy(a.copy()) for n, a in zip(names, arrays)}
    x, y = torch.from_numpy(xs.copy()), torch.from_numpy(labels.copy())

    def example_loss(p: dict, xi: Any, yi: Any) -> Any:
        return torch.nn.functional.cross_entropy(func.functional_call(model, p, (xi,)), yi)

    per_example = func.vmap(func.grad(example_loss), in_dims=(None, 0, 0))

    def step() -> list:
        grads = per_example(params, x, y)
        return [grads[n].numpy() for n in names]
    return step


# ----------------------------------------------------------------------------- HIPS autograd


def _autograd(kind: str) -> Callable[[], Any]:
    import autograd  # noqa: PLC0415 - optional peer
    import autograd.numpy as anp  # noqa: PLC0415

    if kind in ("hessian", "hvp"):
        x, y, theta, v = mlp_loss_arrays()

        def loss(t: Any) -> Any:
            w1, b1, w2, b2 = unpack(t)
            return anp.mean((anp.dot(anp.tanh(anp.dot(x, w1.T) + b1), w2.T) + b2 - y) ** 2)

        if kind == "hessian":
            hessian = autograd.hessian(loss)
            return lambda: np.asarray(hessian(theta))
        hvp = autograd.hessian_tensor_product(loss)
        return lambda: np.asarray(hvp(theta, v))
    params, xs, labels = per_example_arrays()

    def example_loss(p: list, xi: Any, yi: Any) -> Any:
        h = anp.tanh(anp.dot(p[0], xi) + p[1])
        z = anp.dot(p[2], h) + p[3]
        zmax = anp.max(z)
        return zmax + anp.log(anp.sum(anp.exp(z - zmax))) - z[yi]

    one = autograd.grad(example_loss)

    def step() -> list:
        grads = [one(params, xs[i], labels[i]) for i in range(BATCH_T3)]
        return [np.stack([g[k] for g in grads]) for k in range(4)]
    return step


# ----------------------------------------------------------------------------- the NumPy floor (T3)


def _floor(kind: str) -> Callable[[], Any]:
    """Per-example gradients by hand: the batch forward, then each example's outer products at once."""
    (w1, b1, w2, b2), xs, labels = per_example_arrays()
    rows = np.arange(BATCH_T3)

    def step() -> list:
        h = np.tanh(xs @ w1.T + b1)
        z = h @ w2.T + b2
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[rows, labels] -= 1.0                        # d loss_i / d z_i = softmax - onehot
        dh = (p @ w2) * (1 - h * h)
        return [dh[:, :, None] * xs[:, None, :], dh, p[:, :, None] * h[:, None, :], p]
    return step


BUILDERS: dict[str, Callable[[str], Callable[[], Any]]] = {
    "gpugrad": _gpugrad, "gpugrad-loop": lambda kind: _gpugrad(kind, loop=True), "torch": _torch,
    "autograd": _autograd, "floor": _floor,
}
RUNS = {"gpugrad": ("T1", "T2", "T3"), "gpugrad-loop": ("T3",), "torch": ("T1", "T2", "T3"),
        "autograd": ("T1", "T2", "T3"), "floor": ("T3",)}


def available(lib: str) -> bool:
    module = MODULES[lib]
    return module is None or importlib.util.find_spec(module) is not None


def fingerprint(result: Any) -> list[float]:
    """A few numbers that tell two results apart: per array, its sum, its sum of squares, one entry."""
    arrays = result if isinstance(result, list) else [result]
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        out += [float(a.sum()), float((a * a).sum()), float(a.reshape(-1)[a.size // 3])]
    return out


# ----------------------------------------------------------------------------- one process


def time_one(wid: str, lib: str, samples: int, target_s: float) -> dict[str, Any]:
    """Build and time workload ``wid`` in runner ``lib`` in this process."""
    step = BUILDERS[lib](WORKLOADS[wid]["kind"])
    result = step()
    reps, times, load = timed(step, samples, target_s, 1e3, warmup=1)
    return {"workload": wid, "lib": lib, "reps": reps, "samples": times, "median": statistics.median(times),
            "load": load, "fingerprint": fingerprint(result)}


def run_child(wid: str, lib: str, samples: int, target_s: float, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.transforms", "--child", wid, lib, "--samples", str(samples),
           "--target-s", str(target_s), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800,
                          env=machine.child_env(threads, pythonpath=ROOT))
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:]) or "(no output)"
        raise RuntimeError(f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the comparison


def measure(processes: int, samples: int, target_s: float, workloads: tuple[str, ...], libs: list[str],
            threads: int, progress: Callable[[str], None] = print) -> dict[str, dict[str, list[dict]]]:
    runs: dict[str, dict[str, list[dict]]] = {w: {lib: [] for lib in libs if w in RUNS[lib]}
                                              for w in workloads}
    for r in range(processes):
        for wid in workloads:
            cell = list(runs[wid])
            k = r % len(cell)
            for lib in cell[k:] + cell[:k]:
                progress(f"round {r + 1}/{processes}: {wid} {lib}")
                runs[wid][lib].append(run_child(wid, lib, samples, target_s, threads))
    return runs


def check(runs: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Every runner's result against gpugrad's (the fingerprints of each first process)."""
    problems = []
    for wid, cells in runs.items():
        ref = cells.get("gpugrad")
        if not ref:
            continue
        want = np.array(ref[0]["fingerprint"])
        for lib, results in cells.items():
            got = np.array(results[0]["fingerprint"])
            if got.shape != want.shape or not np.allclose(got, want, rtol=FINGERPRINT_RTOL, atol=1e-4):
                problems.append(f"{wid} {lib}: result differs from gpugrad's ({got[:3]} vs {want[:3]})")
    return problems


def _median(results: list[dict]) -> float | None:
    return statistics.median(r["median"] for r in results) if results else None


def report(runs: dict[str, dict[str, list[dict]]], libs: list[str], processes: int, samples: int,
           threads: int) -> str:
    header = ["id", "workload", "metric", *(LABELS[lib] for lib in libs), "gpugrad / torch.func",
              "loop / gpugrad"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for wid, cells in runs.items():
        med = {lib: _median(cells.get(lib, [])) for lib in libs}
        ratio = med["gpugrad"] / med["torch"] if med.get("gpugrad") and med.get("torch") else None
        speedup = (med["gpugrad-loop"] / med["gpugrad"]
                   if med.get("gpugrad-loop") and med.get("gpugrad") else None)
        row = [wid, WORKLOADS[wid]["desc"], WORKLOADS[wid]["metric"],
               *("n/a" if med[lib] is None else f"{med[lib]:.3g}" for lib in libs),
               "n/a" if ratio is None else f"{ratio:.2f} (target <= 1)",
               "n/a" if speedup is None else f"{speedup:.1f} (target >= 20)"]
        lines.append("| " + " | ".join(row) + " |")
    loads = [r["load"] for cells in runs.values() for rs in cells.values() for r in rs
             if r["load"] is not None]
    lines += ["", f"- {processes} process(es) per cell, {samples} samples each, {threads} thread(s); "
              f"other processes used {100 * max(loads, default=0):.0f}% of the machine at most",
              f"- python -m benchmarks.transforms --processes {processes} --samples {samples} "
              f"--threads {threads}"]
    problems = check(runs)
    lines += [f"- CHECK FAILED: {p}" for p in problems] or ["- every runner's result matches gpugrad's"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "LIB"),
                        help="one measurement, in this process")
    parser.add_argument("--quick", action="store_true",
                        help="1 process per cell, short batches (a smoke run)")
    parser.add_argument("--processes", type=int, default=None, help="rounds of processes (default 5)")
    parser.add_argument("--samples", type=int, default=None, help="timed batches per process (default 5)")
    parser.add_argument("--target-s", type=float, default=None, help="seconds per batch (default 0.2)")
    parser.add_argument("--threads", type=int, default=machine.THREADS)
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--libs", nargs="*", choices=list(BUILDERS), default=None)
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    args = parser.parse_args(argv)
    quick = args.quick
    samples = args.samples or (2 if quick else 5)
    target_s = args.target_s if args.target_s is not None else (0.05 if quick else 0.2)
    if args.child:
        wid, lib = args.child
        if lib == "torch":
            import torch  # noqa: F401, PLC0415 - loaded before threadpoolctl's limits, so its threads are set
        threads = machine.configure_threads(args.threads, torch=lib == "torch")
        result = time_one(wid, lib, samples, target_s)
        result["threads"] = threads
        print(json.dumps(result))
        return
    libs = [lib for lib in (args.libs or list(BUILDERS)) if available(lib)]
    if "gpugrad" not in libs:
        libs.insert(0, "gpugrad")
    processes = args.processes or (1 if quick else 5)
    runs = measure(processes, samples, target_s, tuple(args.only), libs, args.threads,
                   progress=lambda m: print(m, file=sys.stderr))
    text = report(runs, libs, processes, samples, args.threads)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
