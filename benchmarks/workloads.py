"""The CPU benchmark workloads B1-B5, written once for each runner (a library, or a variant of one).

    B1  chain of 300 add/mul/tanh ops on a (4, 4) tensor, forward + backward     us per op
    B2  MLP 784-512-512-10, ReLU, cross-entropy, SGD, batch 128, one step        ms per step
    B3  MLP 64-64-64-10, same step, batch 32 (the "tiny MLP")                    us per step
    B4  chain of 20,000 add/mul/tanh ops on a (4, 4) tensor, forward + backward  ms
    B5  1,000 B3 steps in a fresh process: peak RSS and RSS growth (step 100 -> 1000)
    U1  the optimizer alone: one SGD step (momentum 0.9) on a 4096x4096 float32 weight  ms per step
    U2  the optimizer alone: one Adam step on a 4096x4096 float32 weight               ms per step

B1-B5 run by default; U1 and U2 when asked for (they measure the update rules against the floor:
``p - lr * g`` into a fresh array costs its page faults on every step).

The runners (``RUNNERS``, one column each in benchmarks/compare.py): gpugrad, PyTorch, HIPS
autograd, the hand-written NumPy floor (benchmarks/floor.py: the same arithmetic with no tape),
jax.jit (benchmarks/jax_jit.py: the MLP steps compiled) and gg.jit (gpugrad's MLP step traced
once and replayed; jax.jit is its peer). A runner names the module it needs and a builder per
workload kind it runs.

Every runner gets the same inputs, made by NumPy from one seed, all float32 (labels int64):

* Chains (B1, B4): ``y = x``, then ``n_ops // 3`` times ``y = y + a; y = y * m; y = tanh(y)``,
  then the sum's gradient with respect to ``x``. B1 uses the existing overhead benchmark's
  arrays (``a = m = c``, see benchmarks/compare_overhead.py); B4 uses an add constant within
  +-1e-6 and a mul constant within [0.999, 1.001], so that after 20,000 ops every element of the
  gradient is still a normal float32 (between about 1e-9 and 5e-3): ``a = m = c`` would drive it
  into subnormals, then zero, which would both skew the timing and leave nothing to check.
* MLPs (B2, B3): weights and biases drawn once from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's
  default Linear init) with ``np.random.default_rng(SEED)``, copied into each runner's model;
  ``N_BATCHES`` batches (standard-normal inputs, uniform labels in 0..9) converted to each
  runner's arrays up front and used in turn. A training step is forward, cross-entropy
  (mean), zero_grad, backward and a plain SGD update (lr 0.01, no momentum): gg.nn.MLP +
  gg.nn.functional.cross_entropy + gg.optim.SGD; torch.nn.Sequential of Linear/ReLU +
  torch.nn.functional.cross_entropy + torch.optim.SGD; HIPS autograd on a hand-written MLP
  (``h @ W.T + b``, ``np.maximum(h, 0)``, a log-sum-exp primitive with a softmax VJP, as
  autograd.scipy.special.logsumexp has) with ``value_and_grad`` and an in-place update
  ``p -= lr * g``. All start from the same weights and see the same batches.

Threads: see benchmarks/machine.py (2 for PyTorch and NumPy's BLAS by default).

``make_step(lib, wid)`` returns a zero-argument callable that runs one unit of a workload (one
chain forward + backward, or one training step) and returns the loss as the runner's scalar;
``one_step(lib, wid)`` runs one unit from the initial state and returns NumPy arrays (loss,
gradients, parameters after the update) for checking the runners against each other.
``b5_run`` is B5, run by ``python -m benchmarks.runner B5 LIB`` in a process of its own.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import gpugrad as gg
from benchmarks import floor, jax_jit
from benchmarks.compare_overhead import input_arrays as _b1_arrays

SEED = 20261128
LR = 0.01
N_BATCHES = 4                     # distinct batches per MLP workload, used in turn

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
    "U1": {"kind": "update", "optimizer": "sgd", "shape": (4096, 4096),
           "desc": "optimizer alone: SGD step, momentum 0.9, on a 4096x4096 weight", "metric": "ms per step"},
    "U2": {"kind": "update", "optimizer": "adam", "shape": (4096, 4096),
           "desc": "optimizer alone: Adam step on a 4096x4096 weight", "metric": "ms per step"},
}
DEFAULT_WORKLOADS = ("B1", "B2", "B3", "B4")     # U1, U2 when asked for (compare --only U1 U2)
# seconds per unit -> the number reported in the metric's unit
SCALE = {"B1": 1e6 / 300, "B2": 1e3, "B3": 1e6, "B4": 1e3, "U1": 1e3, "U2": 1e3}
MOMENTUM = 0.9                    # U1's SGD
ADAM_LR = 1e-3                    # U2's Adam (betas, eps: the defaults)


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


def update_arrays(shape: tuple[int, ...], seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """A parameter and its gradient (standard normal, float32) for the optimizer workloads U1, U2."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)


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


def _mlp_gg_jit(params: list[np.ndarray], batches: list, sizes: tuple[int, ...]) -> Callable[[], Any]:
    """gpugrad's step (the same model, loss and optimizer as ``_mlp_gpugrad``) under ``gg.jit``."""
    eager = _mlp_gpugrad(params, batches, sizes)
    model = eager.model                                            # type: ignore[attr-defined]
    opt = gg.optim.SGD(list(model.parameters()), lr=LR)
    cross_entropy = gg.nn.functional.cross_entropy

    @gg.jit
    def train_step(x: Any, y: Any) -> Any:
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    data = [(gg.tensor(x), gg.tensor(y)) for x, y in batches]
    state = {"i": 0}

    def step() -> Any:
        i = state["i"]
        state["i"] = (i + 1) % len(data)
        return train_step(*data[i])

    step.grads = eager.grads                                       # type: ignore[attr-defined]
    step.params = eager.params                                     # type: ignore[attr-defined]
    step.model = model                                             # type: ignore[attr-defined]
    step.jitted = train_step                                       # type: ignore[attr-defined]
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


# ----------------------------------------------------------------------------- optimizer steps (U1, U2)
# The gradient is set once; each unit is one optimizer step, and returns the parameter's first element.

def _update_gpugrad(p0: np.ndarray, g0: np.ndarray, optimizer: str) -> Callable[[], Any]:
    p = gg.tensor(p0, requires_grad=True)
    p.grad = gg.tensor(g0)
    opt = (gg.optim.SGD([p], lr=LR, momentum=MOMENTUM) if optimizer == "sgd"
           else gg.optim.Adam([p], lr=ADAM_LR))

    def step() -> Any:
        opt.step()
        return p.data[0, 0]

    step.grads = lambda: [p.grad.data]             # type: ignore[attr-defined]
    step.params = lambda: [p.data]                 # type: ignore[attr-defined]
    return step


def _update_torch(p0: np.ndarray, g0: np.ndarray, optimizer: str) -> Callable[[], Any]:
    import torch  # noqa: PLC0415 - optional peer

    p = torch.tensor(p0, requires_grad=True)
    p.grad = torch.tensor(g0)
    opt = (torch.optim.SGD([p], lr=LR, momentum=MOMENTUM) if optimizer == "sgd"
           else torch.optim.Adam([p], lr=ADAM_LR))
    data = p.detach()

    def step() -> Any:
        opt.step()
        return data[0, 0]

    step.grads = lambda: [p.grad.numpy()]          # type: ignore[attr-defined]
    step.params = lambda: [data.numpy()]           # type: ignore[attr-defined]
    return step


def _update_floor(p0: np.ndarray, g0: np.ndarray, optimizer: str) -> Callable[[], Any]:
    if optimizer == "sgd":
        return floor.sgd_momentum_step(p0, g0, lr=LR, momentum=MOMENTUM)
    return floor.adam_step(p0, g0, lr=ADAM_LR)


# ----------------------------------------------------------------------------- public entry points

@dataclass(frozen=True)
class Runner:
    """One column of the comparison: a library, or a variant of one (compiled), running the workloads."""

    label: str                                    # the column title
    module: str | None                            # the module it needs; None: NumPy alone
    builders: dict[str, Callable[..., Callable[[], Any]]]    # workload kind -> builder
    checking: dict[str, Callable[..., Callable[[], Any]]] = field(default_factory=dict)  # for one_step
    note: str = ""                                # what the column is, for the report


def _floor_mlp(params: list, batches: list, sizes: tuple[int, ...]) -> Callable[[], Any]:
    return floor.mlp_step(params, batches, sizes, LR)


def _jax_mlp(params: list, batches: list, sizes: tuple[int, ...], **kw: Any) -> Callable[[], Any]:
    return jax_jit.mlp_step(params, batches, sizes, LR, **kw)


RUNNERS: dict[str, Runner] = {
    "gpugrad": Runner("gpugrad", None,
                      {"chain": _chain_gpugrad, "mlp": _mlp_gpugrad, "update": _update_gpugrad}),
    "torch": Runner("PyTorch", "torch", {"chain": _chain_torch, "mlp": _mlp_torch, "update": _update_torch},
                    note="eager"),
    "autograd": Runner("HIPS autograd", "autograd", {"chain": _chain_autograd, "mlp": _mlp_autograd},
                       note="no optimizer of its own"),
    "floor": Runner("NumPy floor", None,
                    {"chain": floor.chain_step, "mlp": _floor_mlp, "update": _update_floor},
                    note="hand-written NumPy, no tape (benchmarks/floor.py)"),
    "jax-jit": Runner("jax.jit", "jax", {"mlp": _jax_mlp},
                      {"mlp": lambda *a: _jax_mlp(*a, keep_grads=True)},
                      note="the MLP step as one compiled program (benchmarks/jax_jit.py)"),
    "gg-jit": Runner("gg.jit", None, {"mlp": _mlp_gg_jit},
                     note="gpugrad's MLP step traced once and replayed (gg.jit)"),
}
LIBRARIES = tuple(RUNNERS)
LIBRARY_NAMES = {name: r.label for name, r in RUNNERS.items()}


def available(lib: str) -> bool:
    """Whether runner ``lib`` can run here (its module is installed)."""
    if lib not in RUNNERS:
        raise ValueError(f"unknown runner {lib!r}; expected one of {', '.join(RUNNERS)}")
    module = RUNNERS[lib].module
    return module is None or importlib.util.find_spec(module) is not None


def runs(lib: str, wid: str) -> bool:
    """Whether runner ``lib`` has workload ``wid`` (B1-B5; B5 is B3's step)."""
    if wid not in WORKLOADS and wid != "B5":
        raise ValueError(f"unknown workload {wid!r}; expected one of {', '.join(WORKLOADS)}, B5")
    kind = WORKLOADS["B3" if wid == "B5" else wid]["kind"]
    return kind in RUNNERS[lib].builders


def make_step(lib: str, wid: str, *, checking: bool = False) -> Callable[[], Any]:
    """A fresh zero-argument callable running one unit of workload ``wid`` (B1-B4) in runner ``lib``.

    It returns the loss (the runner's own scalar type). It also carries ``grads()`` and
    ``params()``, NumPy views of the last step's gradients and the current parameters
    (``checking``: a runner that would otherwise not keep its gradients, jax.jit, keeps them).
    """
    if not runs(lib, wid):
        raise ValueError(f"runner {lib!r} has no workload {wid}: it runs "
                         f"{', '.join(w for w in WORKLOADS if runs(lib, w))}")
    spec = WORKLOADS[wid]
    runner = RUNNERS[lib]
    builder = (runner.checking if checking else {}).get(spec["kind"]) or runner.builders[spec["kind"]]
    if spec["kind"] == "chain":
        return builder(*chain_arrays(spec["n_ops"]), spec["n_ops"])
    if spec["kind"] == "update":
        return builder(*update_arrays(spec["shape"]), spec["optimizer"])
    params, batches = mlp_arrays(spec["sizes"], spec["batch"])
    return builder(params, batches, spec["sizes"])


def to_float(loss: Any) -> float:
    """A loss from any of the libraries as a Python float."""
    return float(loss.item()) if hasattr(loss, "item") else float(loss)


def one_step(lib: str, wid: str) -> dict[str, Any]:
    """One unit of ``wid`` in ``lib`` from the initial state: loss, gradients and parameters after it."""
    step = make_step(lib, wid, checking=True)
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
    """``steps`` B3 training steps in runner ``lib``; peak RSS and the RSS growth from step ``start`` on.

    Meant to run in a process of its own (``python -m benchmarks.runner B5 LIB``), so the
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
