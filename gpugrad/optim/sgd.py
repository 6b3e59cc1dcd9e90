"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's SGD)."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..tensor import Tensor
from .functional import pick
from .optimizer import Optimizer, ParamsT


class SGD(Optimizer):
    """SGD: ``b = mu * b + (1 - dampening) * g``; ``p -= lr * (g + mu * b if nesterov else b)``."""

    _state_keys = ("momentum_buffer",)

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        super()._check_group(group, index)
        for key in ("momentum", "dampening", "weight_decay"):
            if group[key] < 0:
                raise ValueError(f"SGD: invalid {key}={group[key]!r} in param group {index}; "
                                 "use a value >= 0")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening = 0, param group "
                             f"{index} has momentum={group['momentum']}, dampening={group['dampening']}")

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        xp = backend.namespace(p.data)
        momentum = group["momentum"]
        buf = state.get("momentum_buffer")
        first = buf is None
        if momentum != 0:
            if first:
                buf = state["momentum_buffer"] = xp.empty_like(p.data)
            else:
                self._check_state_device(p, buf)
        pick("sgd", xp)(xp, p.data, grad, buf if momentum != 0 else None, lr=group["lr"], momentum=momentum,
                        dampening=group["dampening"], weight_decay=group["weight_decay"],
                        nesterov=group["nesterov"], maximize=group["maximize"], first_step=first)
