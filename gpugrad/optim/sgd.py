"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's SGD)."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..tensor import Tensor
from .functional import Scratch, update
from .optimizer import Optimizer, ParamsT


class SGD(Optimizer):
    """SGD: ``b = mu * b + (1 - dampening) * g``; ``p -= lr * (g + mu * b if nesterov else b)``."""

    _state_keys = ("momentum_buffer",)
    _multi_name = "sgd"
    _jit_symbolic = True             # gg.jit traces its step with its hyperparameters as symbols

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)
        self._scratch = Scratch()            # the CPU update's work arrays, shared by all parameters

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        super()._check_group(group, index)
        for key in ("momentum", "dampening", "weight_decay"):
            if group[key] < 0:
                raise ValueError(f"SGD: invalid {key}={group[key]!r} in param group {index}; "
                                 "use a value >= 0")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening = 0, param group "
                             f"{index} has momentum={group['momentum']}, dampening={group['dampening']}")

    def _buffer(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> tuple[Any, Any, bool]:
        """(xp, the momentum buffer or None without momentum, whether this is its first step)."""
        xp = backend.namespace(p.data)
        buf = state.get("momentum_buffer")
        first = buf is None
        if group["momentum"] == 0:
            return xp, None, first
        if first:
            buf = state["momentum_buffer"] = xp.empty_like(p.data)
        else:
            self._check_state_device(p, buf)
        return xp, buf, first

    def _hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        return {k: group[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")}

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        xp, buf, first = self._buffer(p, state, group)
        update("sgd", xp, self._scratch, p.data, grad, buf, first_step=first, **self._hyper(group))

    def _multi_entry(self, p: Tensor, grad: Any, state: dict[str, Any],
                     group: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        _, buf, first = self._buffer(p, state, group)
        return (p.data, grad, buf), {"first_step": first}

    def _multi_hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        return self._hyper(group)
