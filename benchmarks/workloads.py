"""The CPU benchmark workloads B1-B5, written once for each library: gpugrad, PyTorch, HIPS autograd.

    B1  chain of 300 add/mul/tanh ops on a (4, 4) tensor, forward + backward     us per op
    B2  MLP 784-512-512-10, ReLU, cross-entropy, SGD, batch 128, one step        ms per step
    B3  MLP 64-64-64-10, same step, batch 32                                     us per step
    B4  chain of 20,000 add/mul/tanh ops on a (4, 4) tensor, forward + backward  ms
    B5  1,000 B3 steps in a fresh process: peak RSS and RSS growth (step 100 -> 1000)

Every library gets the same inputs, made by NumPy from one seed, all float32 (labels int64):

* Chains (B1, B4): ``y = x``, then ``n_ops // 3`` times ``y = y + a; y = y * m; y = tanh(y)``,
  then the sum's gradient with respect to ``x``. B1 uses the existing overhead benchmark's
  arrays (``a = m = c``, see benchmarks/compare_overhead.py); B4 uses an add constant within
  +-1e-6 and a mul constant within [0.999, 1.001], so that after 20,000 ops every element of the
  gradient is still a normal float32 (between about 1e-9 and 5e-3): ``a = m = c`` would drive it
  into subnormals, then zero, which would both skew the timing and leave nothing to check.
* MLPs (B2, B3): weights and biases drawn once from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's
  default Linear init) with ``np.random.default_rng(SEED)``, copied into each library's model;
  ``N_BATCHES`` batches (standard-normal inputs, uniform labels in 0..9) converted to each
  library's tensors up front and used in turn. A training step is forward, cross-entropy
  (mean), zero_grad, backward and a plain SGD update (lr 0.01, no momentum): gg.nn.MLP +
  gg.nn.functional.cross_entropy + gg.optim.SGD; torch.nn.Sequential of Linear/ReLU +
  torch.nn.functional.cross_entropy + torch.optim.SGD; HIPS autograd on a hand-written MLP
  (``h @ W.T + b``, ``np.maximum(h, 0)``, a log-sum-exp primitive with a softmax VJP, as
  autograd.scipy.special.logsumexp has) with ``value_and_grad`` and an in-place update
  ``p -= lr * g``. All three start from the same weights and see the same batches.

"2 threads" (``configure_threads``): ``torch.set_num_threads(2)``; for NumPy's BLAS (which both
gpugrad and HIPS autograd run on) ``threadpoolctl.threadpool_limits(2, user_api="blas")`` when
threadpoolctl is installed, else NumPy's default (one thread per core: 2 on the project's
machine). Elementwise NumPy ufuncs are single-threaded anyway. Nothing here touches
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE; ``blas_info`` reports which OpenBLAS kernel runs.

``make_step(lib, wid)`` returns a zero-argument callable that runs one unit of a workload (one
chain forward + backward, or one training step) and returns the loss as the library's scalar;
``one_step(lib, wid)`` runs one unit from the initial state and returns NumPy arrays (loss,
gradients, parameters after the update) for checking the libraries against each other.
``python -m benchmarks.workloads b5 LIB [--steps N]`` is B5's child process (prints JSON).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import gpugrad as gg
from benchmarks.compare_overhead import input_arrays as _b1_arrays

SEED = 20261128
THREADS = 2
LR = 0.01
N_BATCHES = 4                     # distinct batches per MLP workload, used in turn

LIBRARIES = ("gpugrad", "torch", "autograd")
LIBRARY_NAMES = {"gpugrad": "gpugrad", "torch": "PyTorch", "autograd": "HIPS autograd"}

# id -> (kind, parameters, description, unit of the reported number)
WORKLOADS: dict[str, dict[str, Any]] = {
    "B1": {"kind": "chain", "n_ops": 300,
           "desc": "chain of 300 add/mul/tanh ops, (4, 4), fwd + bwd", "metric": "us per op"},
    "B2": {"kind": "mlp", "sizes": (784, 512, 512, 10), "batch": 128,
           "desc": "MLP 784-512-512-10, ReLU, CE, SGD, batch 128", "metric": "ms per step"},
    "B3": {"kind": "mlp", "sizes": (64, 64, 64, 10), "batch": 32,
           "desc": "MLP 64-64-64-10, ReLU, CE, SGD, batch 32", "metric": "us per step"},
    "B4": {"kind": "chain", "n_ops": 20_000,
           "desc": "chain of 20,000 add/mul/tanh ops, (4, 4), fwd + bwd", "metric": "ms per chain"},
}
# seconds per unit -> the number reported in the metric's unit
SCALE = {"B1": 1e6 / 300, "B2": 1e3, "B3": 1e6, "B4": 1e3}


def available(lib: str) -> bool:
    """Whether ``lib`` can run here (gpugrad always can)."""
    if lib == "gpugrad":
        return True
    if lib not in LIBRARIES:
        raise ValueError(f"unknown library {lib!r}; expected one of {LIBRARIES}")
    return importlib.util.find_spec(lib) is not None


# ----------------------------------------------------------------------------- threads and BLAS

_limits: Any = None               # keeps threadpoolctl's limiter alive


def configure_threads(n: int = THREADS, *, torch: bool = True) -> dict[str, Any]:
    """Run PyTorch (if installed and ``torch``) and NumPy's BLAS on ``n`` threads; returns what was done."""
    global _limits
    info: dict[str, Any] = {"threads": n}
    if torch and available("torch"):
        import torch as _torch  # noqa: PLC0415 - optional peer

        _torch.set_num_threads(n)
        info["torch_threads"] = _torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        info["numpy_blas"] = "threadpoolctl not installed: NumPy's default BLAS threads"
    else:
        _limits = threadpool_limits(limits=n, user_api="blas")
        info["numpy_blas"] = f"threadpoolctl: BLAS limited to {n} threads"
    info["blas"] = blas_info()
    return info


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process (threadpoolctl's view), or [] without it."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - optional
    except ImportError:
        return []
    keep = ("internal_api", "version", "architecture", "num_threads", "prefix")
    return [{k: d.get(k) for k in keep} for d in threadpool_info() if d.get("user_api") == "blas"]


# ----------------------------------------------------------------------------- shared inputs

def chain_arrays(n_ops: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x``, the add constant ``a`` and the mul constant ``m`` for a chain of ``n_ops`` ops."""
    if n_ops <= 300:
        x, c = _b1_arrays()
        return x, c, c
    n = 16
    x = np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(4, 4)
    a = np.linspace(-1e-6, 1e-6, n, dtype=np.float32).reshape(4, 4)
    m = np.linspace(1.001, 0.999, n, dtype=np.float32).reshape(4, 4)
    return x, a, m


def mlp_arrays(sizes: tuple[int, ...], batch: int, n_batches: int = N_BATCHES,
               seed: int = SEED) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Initial parameters [W1, b1, W2, b2, ...] (W of shape (out, in)) and ``n_batches`` (x, labels)."""
    rng = np.random.default_rng(seed)
    params: list[np.ndarray] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(n_in)
        params.append(rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, (n_out,)).astype(np.float32))
    batches = [(rng.standard_normal((batch, sizes[0])).astype(np.float32),
                rng.integers(0, sizes[-1], batch).astype(np.int64)) for _ in range(n_batches)]
    return params, batches


# ----------------------------------------------------------------------------- chains

def _chain_gpugrad(x0: np.ndarray, a0: np.ndarray, m0: np.ndarray, n_ops: int) -> Callable[[], Any]:
    x = gg.tensor(x0, requires_grad=True)
    a, m = gg.tensor(a0), gg.tensor(m0)
    tanh = gg.tanh

    def step() -> Any:
        x.grad = None
        y = x
        for _ in range(n_ops // 3):
            y = y + a
            y = y * m
            y = tanh(y)
        loss = y.sum()
        loss.backward()
        return loss

    step.grads = lambda: [x.grad.numpy()]          # type: ignore[attr-defined]
    step.params = lambda: [x.data]                 # type: ignore[attr-defined]
    return step


def _chain_torch(x0: np.ndarray, a0: np.ndarray, m0: np.ndarray, n_ops: int) -> Callable[[], Any]:
    import torch  # noqa: PLC0415 - optional peer

    x = torch.tensor(x0, requires_grad=True)
    a, m = torch.tensor(a0), torch.tensor(m0)
    tanh = torch.tanh

    def step() -> Any:
        x.grad = None
        y = x
        for _ in range(n_ops // 3):
            y = y + a
            y = y * m
            y = tanh(y)
        loss = y.sum()
        loss.backward()
        return loss

    step.grads = lambda: [x.grad.numpy()]          # type: ignore[attr-defined]
    step.params = lambda: [x.detach().numpy()]     # type: ignore[attr-defined]
    return step


def _chain_autograd(x0: np.ndarray, a0: np.ndarray, m0: np.ndarray, n_ops: int) -> Callable[[], Any]:
    import autograd  # noqa: PLC0415 - optional peer
    import autograd.numpy as anp  # noqa: PLC0415

    x, a, m = x0.copy(), a0.copy(), m0.copy()

    def f(x: Any) -> Any:
        y = x
        for _ in range(n_ops // 3):
            y = y + a
            y = y * m
            y = anp.tanh(y)
        return anp.sum(y)

    value_and_grad = autograd.value_and_grad(f)
    out: dict[str, Any] = {}

    def step() -> Any:
        loss, out["grad"] = value_and_grad(x)
        return loss

    step.grads = lambda: [out["grad"]]             # type: ignore[attr-defined]
    step.params = lambda: [x]                      # type: ignore[attr-defined]
    return step


# ----------------------------------------------------------------------------- MLP training steps

def _mlp_gpugrad(params: list[np.ndarray], batches: list, sizes: tuple[int, ...]) -> Callable[[], Any]:
    model = gg.nn.MLP(list(sizes), activation="relu")
    model_params = list(model.parameters())
    assert [tuple(p.shape) for p in model_params] == [p.shape for p in params]
    with gg.no_grad():
        for p, src in zip(model_params, params):
            p.copy_(gg.tensor(src))
    opt = gg.optim.SGD(model_params, lr=LR)
    data = [(gg.tensor(x), gg.tensor(y)) for x, y in batches]
    cross_entropy = gg.nn.functional.cross_entropy
    state = {"i": 0}

    def step() -> Any:
        i = state["i"]
        state["i"] = (i + 1) % len(data)
        x, y = data[i]
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    step.grads = lambda: [p.grad.numpy() for p in model_params]    # type: ignore[attr-defined]
    step.params = lambda: [p.data for p in model_params]           # type: ignore[attr-defined]
    step.model = model                                             # type: ignore[attr-defined]
    return step


def _mlp_torch(params: list[np.ndarray], batches: list, sizes: tuple[int, ...]) -> Callable[[], Any]:
    import torch  # noqa: PLC0415 - optional peer

    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    model_params = list(model.parameters())
    with torch.no_grad():
        for p, src in zip(model_params, params):
            p.copy_(torch.from_numpy(src))
    opt = torch.optim.SGD(model_params, lr=LR)
    data = [(torch.from_numpy(x.copy()), torch.from_numpy(y.copy())) for x, y in batches]
    cross_entropy = torch.nn.functional.cross_entropy
    state = {"i": 0}

    def step() -> Any:
        i = state["i"]
        state["i"] = (i + 1) % len(data)
        x, y = data[i]
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    step.grads = lambda: [p.grad.numpy() for p in model_params]          # type: ignore[attr-defined]
    step.params = lambda: [p.detach().numpy() for p in model_params]     # type: ignore[attr-defined]
    step.model = model                                                   # type: ignore[attr-defined]
    return step


_AUTOGRAD_LSE: Any = None


def _autograd_logsumexp() -> Any:
    """Row-wise log-sum-exp (keepdims) as one autograd primitive whose VJP is ``g * softmax``."""
    global _AUTOGRAD_LSE
    if _AUTOGRAD_LSE is None:
        from autograd.extend import defvjp, primitive  # noqa: PLC0415 - optional peer

        @primitive
        def logsumexp_rows(z: np.ndarray) -> np.ndarray:
            zmax = np.max(z, axis=1, keepdims=True)
            return zmax + np.log(np.sum(np.exp(z - zmax), axis=1, keepdims=True))

        defvjp(logsumexp_rows, lambda ans, z: lambda g: g * np.exp(z - ans))
        _AUTOGRAD_LSE = logsumexp_rows
    return _AUTOGRAD_LSE


def _mlp_autograd(params: list[np.ndarray], batches: list, sizes: tuple[int, ...]) -> Callable[[], Any]:
    import autograd  # noqa: PLC0415 - optional peer
    import autograd.numpy as anp  # noqa: PLC0415

    logsumexp_rows = _autograd_logsumexp()
    weights = [p.copy() for p in params]
    data = [(x.copy(), y.copy()) for x, y in batches]
    n_layers = len(weights) // 2

    def loss_fn(ws: list, x: np.ndarray, y: np.ndarray) -> Any:
        h = x
        for k in range(n_layers):
            h = anp.dot(h, ws[2 * k].T) + ws[2 * k + 1]
            if k < n_layers - 1:
                h = anp.maximum(h, 0.0)
        logp = h - logsumexp_rows(h)
        return -anp.mean(logp[np.arange(y.shape[0]), y])

    value_and_grad = autograd.value_and_grad(loss_fn)
    state: dict[str, Any] = {"i": 0, "grads": None}

    def step() -> Any:
        i = state["i"]
        state["i"] = (i + 1) % len(data)
        x, y = data[i]
        loss, grads = value_and_grad(weights, x, y)
        for p, g in zip(weights, grads):
            p -= LR * g
        state["grads"] = grads
        return loss

    step.grads = lambda: list(state["grads"])          # type: ignore[attr-defined]
    step.params = lambda: weights                      # type: ignore[attr-defined]
    return step


# ----------------------------------------------------------------------------- public entry points

_BUILDERS = {
    ("chain", "gpugrad"): _chain_gpugrad, ("chain", "torch"): _chain_torch,
    ("chain", "autograd"): _chain_autograd,
    ("mlp", "gpugrad"): _mlp_gpugrad, ("mlp", "torch"): _mlp_torch, ("mlp", "autograd"): _mlp_autograd,
}


def make_step(lib: str, wid: str) -> Callable[[], Any]:
    """A fresh zero-argument callable running one unit of workload ``wid`` (B1-B4) in ``lib``.

    It returns the loss (the library's own scalar type). It also carries ``grads()`` and
    ``params()``, NumPy views of the last step's gradients and the current parameters.
    """
    spec = WORKLOADS[wid]
    builder = _BUILDERS[(spec["kind"], lib)]
    if spec["kind"] == "chain":
        return builder(*chain_arrays(spec["n_ops"]), spec["n_ops"])
    params, batches = mlp_arrays(spec["sizes"], spec["batch"])
    return builder(params, batches, spec["sizes"])


def to_float(loss: Any) -> float:
    """A loss from any of the libraries as a Python float."""
    return float(loss.item()) if hasattr(loss, "item") else float(loss)


def one_step(lib: str, wid: str) -> dict[str, Any]:
    """One unit of ``wid`` in ``lib`` from the initial state: loss, gradients and parameters after it."""
    step = make_step(lib, wid)
    loss = to_float(step())
    return {"loss": loss,
            "grads": [np.array(g, copy=True) for g in step.grads()],      # type: ignore[attr-defined]
            "params": [np.array(p, copy=True) for p in step.params()]}    # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- B5 (its own process)

B5_STEPS = 1000
B5_FROM = 100                     # growth is measured from this step to the last


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_hwm_bytes() -> int | None:
    """This process's peak RSS since its exec (``VmHWM`` in /proc/self/status), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def b5_run(lib: str, steps: int = B5_STEPS, start: int = B5_FROM) -> dict[str, Any]:
    """``steps`` B3 training steps; peak RSS and the RSS growth from step ``start`` to the end.

    Meant to run in a process of its own (``python -m benchmarks.workloads b5 LIB``), so the
    peak belongs to one library; in-process it still measures growth, but the peak is the
    whole process's. ``peak_rss_mib`` is VmHWM (/proc/self/status), the peak of this process's
    own address space. ``getrusage_maxrss_mib`` is resource.getrusage's ru_maxrss, which Linux
    carries across fork + exec: in a child started by a big parent (compare.py with PyTorch
    loaded) it reports at least the parent's RSS at the fork, whatever the child does, so it is
    kept for reference only (where /proc is missing it stands in for VmHWM).
    """
    if not 0 < start < steps:
        raise ValueError(f"b5_run: need 0 < start < steps, got start={start}, steps={steps}")
    rss_before = _rss_bytes()
    step = make_step(lib, "B3")
    samples: dict[int, int] = {}
    checkpoints = {start, steps, *range(start, steps + 1, max(1, (steps - start) // 9))}
    t0 = time.perf_counter()
    loss = None
    for i in range(1, steps + 1):
        loss = step()
        if i in checkpoints:
            samples[i] = _rss_bytes()
    elapsed = time.perf_counter() - t0
    mib = 1024 * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # KiB on Linux
    hwm = _vm_hwm_bytes()
    return {
        "lib": lib, "steps": steps, "start": start,
        "peak_rss_mib": (hwm if hwm is not None else maxrss) / mib,
        "getrusage_maxrss_mib": maxrss / mib,
        "rss_before_mib": rss_before / mib,
        "rss_start_mib": samples[start] / mib,
        "rss_end_mib": samples[steps] / mib,
        "growth_mib": (samples[steps] - samples[start]) / mib,
        "rss_samples_mib": {str(k): round(v / mib, 3) for k, v in sorted(samples.items())},
        "us_per_step": elapsed / steps * 1e6,
        "final_loss": to_float(loss),
    }


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="B5 child: peak RSS and RSS growth over B3 steps")
    parser.add_argument("what", choices=["b5"])
    parser.add_argument("lib", choices=LIBRARIES)
    parser.add_argument("--steps", type=int, default=B5_STEPS)
    parser.add_argument("--start", type=int, default=B5_FROM)
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args(argv)
    if not available(args.lib):
        print(json.dumps({"lib": args.lib, "error": "not installed"}))
        return
    if args.lib == "torch":
        import torch  # noqa: F401, PLC0415 - loaded before the limits so its threads are set too
    configure_threads(args.threads, torch=args.lib == "torch")
    if args.lib == "autograd":
        import autograd  # noqa: F401, PLC0415 - imported before the first RSS reading
    json.dump(b5_run(args.lib, args.steps, args.start), sys.stdout)
    print()


if __name__ == "__main__":
    _main()
