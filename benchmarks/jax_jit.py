"""The compiled peer: the MLP training step (B2, B3) as one ``jax.jit`` program, on jax's CPU backend.

The step is the workloads' (benchmarks/workloads.py): the same initial weights and batches,
``h @ W.T + b``, ReLU, cross-entropy (mean) through ``jax.nn.log_softmax``, ``jax.value_and_grad``
and the SGD update ``w - lr * g``, all inside one jitted function that takes the parameters
and returns the new ones. The parameters are donated (``donate_argnums``): XLA then writes
the update into their buffers, as an in-place step does (on this machine, without donation
B2 takes ~1.5x as long). Each call waits for its result (``block_until_ready``), so the time
is the step's, not its dispatch's. float32 throughout (labels int32: jax's default without x64).

It is the anchor for gg.jit (issue 16): the chains (B1, B4) are not jit workloads (a 20,000-op
trace measures XLA's compiler, not a step), so this runner has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def mlp_step(params: list[np.ndarray], batches: list, sizes: tuple[int, ...], lr: float, *,
             keep_grads: bool = False) -> Callable[[], Any]:
    """The jitted training step; with ``keep_grads`` it also returns the gradients (for checking only)."""
    import jax  # noqa: PLC0415 - optional peer
    import jax.numpy as jnp  # noqa: PLC0415

    n_layers = len(params) // 2

    def loss_fn(ws: list, x: Any, y: Any) -> Any:
        h = x
        for k in range(n_layers):
            h = h @ ws[2 * k].T + ws[2 * k + 1]
            if k < n_layers - 1:
                h = jnp.maximum(h, 0.0)
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def train_step(ws: list, x: Any, y: Any) -> tuple:
        loss, grads = jax.value_and_grad(loss_fn)(ws, x, y)
        new = [w - lr * g for w, g in zip(ws, grads)]
        return (loss, new, grads) if keep_grads else (loss, new)

    compiled = jax.jit(train_step, donate_argnums=(0,))
    data = [(jnp.asarray(x), jnp.asarray(y.astype(np.int32))) for x, y in batches]
    state: dict[str, Any] = {"i": 0, "ws": [jnp.asarray(p) for p in params], "grads": None}

    def step() -> Any:
        i = state["i"]
        state["i"] = (i + 1) % len(data)
        x, y = data[i]
        loss, state["ws"], *rest = compiled(state["ws"], x, y)
        if keep_grads:
            state["grads"] = rest[0]
        return loss.block_until_ready()

    def grads() -> list[np.ndarray]:
        if state["grads"] is None:
            raise RuntimeError("jax-jit: gradients are kept only by a step built with keep_grads=True "
                               "(workloads.make_step(..., checking=True))")
        return [np.asarray(g) for g in state["grads"]]

    step.grads = grads                                              # type: ignore[attr-defined]
    step.params = lambda: [np.asarray(w) for w in state["ws"]]     # type: ignore[attr-defined]
    return step
