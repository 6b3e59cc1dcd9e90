"""Optimizer: parameter groups, per-parameter state, zero_grad, state_dict (PyTorch's layout)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import backend
from ..engine import enable_grad
from ..tensor import Tensor
from ..versions import bump as _bump_version
from ..versions import user_site
from .functional import pick_multi

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]
# gg.jit, while it traces a function: jit_hook(optimizer, closure) runs the step with its numbers as
# symbols and returns its result (NotImplemented when this thread is not tracing)
jit_hook: Any = None


def _listed(name: str, params: Any, what: str) -> list[Any]:
    """``params`` as a list; a TypeError naming what was given (a method, a module, a set...) otherwise."""
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{name}: {what} must be an ordered iterable (a set's order changes between "
                        "runs, which breaks state_dict); pass a list")
    if callable(getattr(params, "parameters", None)):
        raise TypeError(f"{name}: {what} is a module ({type(params).__name__}), not its parameters; pass "
                        f"model.parameters(): {name}(model.parameters(), ...)")
    try:
        return list(params)
    except TypeError:
        if callable(params):
            owner = getattr(params, "__self__", None)
            called = (f"method {type(owner).__name__}.{params.__name__}" if owner is not None else
                      f"function {getattr(params, '__qualname__', repr(params))}")
            raise TypeError(f"{name}: {what} is the {called}, not what it returns; call it: "
                            f"{name}(model.parameters(), ...), not {name}(model.parameters, ...)") from None
        raise TypeError(f"{name}: {what} must be an iterable of Tensors or of dicts, got "
                        f"{type(params).__name__}; pass model.parameters() or a list of tensors") from None


class Optimizer:
    """Base class: holds ``param_groups`` (dicts of params + options) and ``state`` (per parameter)."""

    # state keys this optimizer keeps per parameter; arrays among them have the parameter's shape
    _state_keys: tuple[str, ...] = ()

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors or of dicts, got a single "
                            "Tensor; pass [tensor] or model.parameters()")
        if isinstance(params, dict):
            raise TypeError(f"{name}: params must be an iterable of Tensors or of dicts, got a dict; pass "
                            "model.parameters(), or a list of param groups [{'params': [...], ...}]")
        groups = _listed(name, params, "params")
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list; pass model.parameters() of a model "
                             "that has parameters, or a list of tensors")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: ``{"params": [...], "lr": ...}``; options missing from it take the defaults."""
        name = type(self).__name__
        index = len(self.param_groups)
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: param group {index} must be a dict with a 'params' entry, got "
                            f"{type(param_group).__name__}; give either all Tensors or all dicts")
        if "params" not in param_group:
            raise ValueError(f"{name}: param group {index} has no 'params' entry; give "
                             "{'params': [tensors], ...options}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        else:
            params = _listed(name, params, f"param group {index}'s params")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for j, p in enumerate(params):
            if not isinstance(p, Tensor):
                named = isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                raise TypeError(f"{name}: param group {index}, item {j} is a {type(p).__name__}, not a "
                                "Tensor; an optimizer updates Tensors (e.g. model.parameters())"
                                + ("; that looks like named_parameters(): pass model.parameters()"
                                   if named else ""))
            if not p.is_leaf:
                raise ValueError(f"{name}: param group {index}, item {j} (shape {p.shape}) is not a leaf "
                                 "tensor (it was computed by an op); optimize the leaf, or use "
                                 "t.detach().requires_grad_() to make one")
            if p.dtype.kind != "f":
                raise TypeError(f"{name}: param group {index}, item {j} has dtype {p.dtype}; only "
                                "floating-point tensors can be optimized")
            if id(p) in seen:
                raise ValueError(f"{name}: param group {index}, item {j} (shape {p.shape}) appears more "
                                 "than once among the optimizer's parameters; give each parameter once")
            seen.add(id(p))
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        group["params"] = params
        self._check_group(group, index)
        self.param_groups.append(group)

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        """Validate a group's options (ValueError naming the option); subclasses extend."""
        lr = group.get("lr")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate lr={lr!r} in param group "
                             f"{index}; use a number >= 0")

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad``: to None (default), or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.requires_grad:            # a recorded gradient (create_graph): cut it off
                        p.grad = p.grad.detach()
                    p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()`` (run with grad on) if given."""
        if jit_hook is not None and (traced := jit_hook(self, closure)) is not NotImplemented:
            return traced
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        site = user_site()               # where the step was called, for in-place error messages
        for group in self.param_groups:
            items = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                if tuple(grad.shape) != tuple(p.data.shape):
                    raise RuntimeError(f"{type(self).__name__}.step: a parameter of shape {p.shape} has a "
                                       f"gradient of shape {tuple(grad.shape)}; .grad must match the "
                                       "parameter")
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {}
                items.append((p, grad, state))
            self._update_group(items, group)
            for p, _, _ in items:
                _bump_version(p.data, f"{type(self).__name__}.step", site)
        return loss

    # the optimizer's name in optim.functional.FUSED_MULTI, for those with a multi-tensor kernel
    _multi_name: str | None = None

    def _update_group(self, items: list[tuple[Tensor, Any, dict[str, Any]]], group: dict[str, Any]) -> None:
        """Update the parameters of one group that have a gradient: (param, grad array, state) each.

        Where a multi-tensor kernel exists (CUDA arrays of an optimizer with ``_multi_name``),
        parameters that share dtype, device and the per-call arguments ``_multi_entry`` gives
        (Adam's step count, SGD's first momentum step) are updated together, one launch per
        32; every other parameter gets its own ``_update``.
        """
        batches: dict[tuple, tuple[Callable[..., None], dict[str, Any], list]] = {}
        for p, grad, state in items:
            multi = pick_multi(self._multi_name, backend.namespace(p.data)) if self._multi_name else None
            if multi is None:
                self._update(p, grad, state, group)
                continue
            arrays, per_call = self._multi_entry(p, grad, state, group)
            key = (p.data.dtype, backend.device_of(p.data), tuple(sorted(per_call.items())))
            batches.setdefault(key, (multi, per_call, []))[2].append(arrays)
        for multi, per_call, tensors in batches.values():
            multi(tensors, **per_call, **self._multi_hyper(group))

    def _multi_entry(self, p: Tensor, grad: Any, state: dict[str, Any],
                     group: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """Prepare one parameter's state for the multi-tensor kernel: (its arrays, per-call arguments)."""
        raise NotImplementedError(f"{type(self).__name__} sets _multi_name but not _multi_entry")

    def _multi_hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        """The multi-tensor kernel's hyperparameters for ``group``."""
        raise NotImplementedError(f"{type(self).__name__} sets _multi_name but not _multi_hyper")

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Update one parameter in place; subclasses implement their algorithm here."""
        raise NotImplementedError(f"{type(self).__name__} must implement _update")

    @staticmethod
    def _check_state_device(p: Tensor, buf: Any) -> None:
        if backend.device_of(buf) != backend.device_of(p.data):
            raise RuntimeError(
                f"optimizer state is on {backend.device_of(buf)} but its parameter (shape {p.shape}) is on "
                f"{backend.device_of(p.data)}; move the model before creating the optimizer, or "
                "round-trip with opt.load_state_dict(opt.state_dict()) after moving it")

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:
        """A snapshot: ``{"state": {"<index>": {...}}, "param_groups": [{..., "params": [indices]}]}``.

        Parameters are numbered across groups in order; arrays are copied into Tensors on their
        device, so later steps do not change the snapshot. The result can be passed to gg.save.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {}
        for p, st in self.state.items():
            if id(p) in index and st:
                state[str(index[id(p)])] = {k: _export(v) for k, v in st.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore options and state saved by ``state_dict`` (same groups, same parameter counts)."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}: expected a dict with 'state' and 'param_groups' (from "
                             f"optimizer.state_dict()), got {_describe(state_dict)}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the state dict has {len(saved_groups)} parameter group(s), this "
                             f"optimizer has {len(self.param_groups)}; build the optimizer with the same "
                             "groups as the one that was saved")
        params: dict[int, Tensor] = {}
        new_groups = []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"{name}: saved param group {i} is not a dict with 'params'")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}: param group {i} has {len(saved['params'])} parameter(s) in the "
                                 f"state dict but {len(group['params'])} in this optimizer; build the "
                                 "optimizer over the same parameters as the one that was saved")
            missing = [k for k in self.defaults if k not in saved]
            if missing:
                raise ValueError(f"{name}: saved param group {i} lacks option(s) {missing}; was it saved "
                                 f"from a different optimizer than {type(self).__name__}?")
            for saved_index, p in zip(saved["params"], group["params"]):
                params[int(saved_index)] = p
            new_group = {**{k: v for k, v in saved.items() if k != "params"}, "params": group["params"]}
            if "betas" in new_group:
                new_group["betas"] = tuple(new_group["betas"])
            self._check_group(new_group, i)
            new_groups.append(new_group)
        new_state: dict[Tensor, dict[str, Any]] = {}
        for key, saved_state in dict(state_dict["state"]).items():
            try:
                p = params[int(key)]
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"{name}: state entry {key!r} names no parameter; the saved groups "
                                 f"number parameters 0..{len(params) - 1}") from None
            new_state[p] = {k: self._import(name, key, k, v, p) for k, v in dict(saved_state).items()}
        self.param_groups[:] = new_groups          # all checks passed: commit
        self.state = new_state

    def _import(self, name: str, index: Any, key: str, value: Any, p: Tensor) -> Any:
        """One saved state value, checked against its parameter and moved to its device and dtype."""
        if key not in self._state_keys:
            raise ValueError(f"{name}: state for parameter {index} has key {key!r}, which "
                             f"{type(self).__name__} does not use (it keeps {list(self._state_keys)}); "
                             "was it saved from a different optimizer?")
        if key == "step":
            return int(value.item() if hasattr(value, "item") else value)
        if value is None:
            return None
        arr = value.data if isinstance(value, Tensor) else value
        if not hasattr(arr, "shape"):
            raise ValueError(f"{name}: state {key!r} of parameter {index} is a {type(value).__name__}, "
                             "expected a Tensor or array")
        if tuple(arr.shape) != p.shape:
            raise ValueError(f"{name}: state {key!r} of parameter {index} has shape {tuple(arr.shape)} but "
                             f"the parameter has shape {p.shape}; the optimizer's parameters must be in "
                             "the same order as when it was saved")
        arr = backend.to_device(arr, backend.device_of(p.data))
        return arr.astype(p.dtype, copy=True)     # a fresh array: training never writes into the dict

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={v!r}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} params, {opts}")
        return "\n".join(lines) + "\n)"


def _export(value: Any) -> Any:
    """A state value for state_dict: arrays become Tensors holding a copy."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return Tensor._wrap(value.copy())
    return value


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {list(obj)[:6]}"
    return type(obj).__name__
