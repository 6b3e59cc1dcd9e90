"""Adam and AdamW (PyTorch's formulas, including amsgrad and maximize)."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..tensor import Tensor
from .functional import Scratch, update
from .optimizer import Optimizer, ParamsT


class Adam(Optimizer):
    """Adam: bias-corrected moment estimates; ``weight_decay`` adds ``wd * p`` to the gradient (L2)."""

    _state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False
    _multi_name = "adam"
    _jit_symbolic = True             # gg.jit traces its step with its hyperparameters as symbols

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize)
        super().__init__(params, defaults)
        self._scratch = Scratch()            # the CPU update's work arrays, shared by all parameters

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        super()._check_group(group, index)
        name = type(self).__name__
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{name}: invalid betas={betas!r} in param group {index}; use two numbers in "
                             "[0, 1), e.g. (0.9, 0.999)")
        group["betas"] = tuple(betas)
        if group["eps"] < 0:
            raise ValueError(f"{name}: invalid eps={group['eps']!r} in param group {index}; use a value >= 0")
        if group["weight_decay"] < 0:
            raise ValueError(f"{name}: invalid weight_decay={group['weight_decay']!r} in param group "
                             f"{index}; use a value >= 0")

    def _advance(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Any:
        """Create the moments on the first step, count this step; returns the array module."""
        xp = backend.namespace(p.data)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        else:
            self._check_state_device(p, state["exp_avg"])
        if group["amsgrad"] and state.get("max_exp_avg_sq") is None:
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        return xp

    def _hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                    weight_decay=group["weight_decay"], amsgrad=group["amsgrad"], maximize=group["maximize"])

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        xp = self._advance(p, state, group)
        amsgrad = group["amsgrad"]
        update("adam", xp, self._scratch, p.data, grad, state["exp_avg"], state["exp_avg_sq"],
               state.get("max_exp_avg_sq") if amsgrad else None, step=state["step"],
               decoupled_weight_decay=self._decoupled, **self._hyper(group))

    def _multi_entry(self, p: Tensor, grad: Any, state: dict[str, Any],
                     group: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        self._advance(p, state, group)
        arrays = (p.data, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"))
        return arrays, {"step": state["step"]}

    def _multi_hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        return {**self._hyper(group), "decoupled": self._decoupled}


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, ``p *= 1 - lr * wd`` before the Adam step."""

    _decoupled = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)
