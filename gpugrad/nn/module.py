"""Module: the base class of layers, with PyTorch's semantics for parameters, buffers and children.

Assigning a Parameter, a Module or (via ``register_buffer``) a Tensor to an attribute
registers it; ``parameters()``, ``state_dict()`` and ``to()`` then walk the tree in
registration order (the module's own entries first, then each child's, depth first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from .. import backend, versions
from ..dtypes import as_dtype, is_floating
from ..tensor import Tensor
from .parameter import Parameter


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` did not match."""
    missing_keys: list[str]
    unexpected_keys: list[str]


def _indent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])


def _is_device_name(spec: str) -> bool:
    return spec.partition(":")[0] in ("cpu", "cuda")


def _type_name(value: Any) -> str:
    return type(value).__module__ + "." + type(value).__qualname__


class Module:
    """Base class for layers and models: subclass it, assign sub-layers and Parameters, define forward."""

    training: bool
    _parameters: dict[str, Parameter | None]
    _buffers: dict[str, Tensor | None]
    _modules: dict[str, Module | None]
    _non_persistent_buffers: set[str]

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", {})

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}: define forward(self, ...) in the subclass")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ registration
    def _check_init(self, what: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() is called; call "
                                 f"super().__init__() first in {type(self).__name__}.__init__")

    def _check_name(self, kind: str, name: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"{kind} name can't be empty or contain '.', got {name!r}")
        if hasattr(self, name) and name not in self._parameters and name not in self._buffers \
                and name not in self._modules:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a None placeholder) under ``name``."""
        self._check_init("parameters")
        self._check_name("parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{_type_name(param)}' as parameter '{name}' "
                            "(gpugrad.nn.Parameter or None expected); wrap it: nn.Parameter(tensor)")
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a tensor that is state but not a parameter (saved in state_dict unless not persistent)."""
        self._check_init("buffers")
        self._check_name("buffer", name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{_type_name(tensor)}' as buffer '{name}' "
                            "(gpugrad.Tensor or None expected)")
        if isinstance(tensor, Parameter):
            raise TypeError(f"register_buffer: '{name}' is a Parameter; use register_parameter")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module under ``name``."""
        self._check_init("submodules")
        self._check_name("module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_type_name(module)} is not a Module subclass")
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            self._check_init("parameters")
            d.pop(name, None)
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            params[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as parameter '{name}' "
                                "(gpugrad.nn.Parameter or None expected); wrap it: nn.Parameter(tensor)")
            params[name] = None
        elif isinstance(value, Module):
            self._check_init("submodules")
            d.pop(name, None)
            params.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as child module '{name}' "
                                "(gpugrad.nn.Module or None expected)")
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{_type_name(value)}' as buffer '{name}' "
                                "(gpugrad.Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: parameters, buffers and children live in dicts
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            entries = d.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ------------------------------------------------------------------ walking the tree
    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, with dotted names ('' for this one)."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct children, each once."""
        seen: set[int] = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def _named_members(self, table: str, prefix: str, recurse: bool,
                       remove_duplicate: bool) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for mod_prefix, mod in mods:
            for name, value in getattr(mod, table).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                if remove_duplicate:
                    seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs in registration order; a shared parameter appears once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        """The descendant at dotted path ``target`` ('' is this module)."""
        mod: Module = self
        if not target:
            return mod
        walked = []
        for item in target.split("."):
            child = mod._modules.get(item)
            if child is None:
                where = ".".join(walked) or type(self).__name__
                raise AttributeError(f"get_submodule: {where} has no submodule {item!r} "
                                     f"(it has {list(mod._modules)})")
            walked.append(item)
            mod = child
        return mod

    def num_parameters(self, only_trainable: bool = False) -> int:
        """How many scalars the (distinct) parameters hold."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    # ------------------------------------------------------------------ modes and bulk changes
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant; returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"train: mode should be a bool, got {mode!r}")
        object.__setattr__(self, "training", mode)
        for child in self.children():
            child.train(mode)           # through each child's own train(), which it may override
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off...): ``train(False)``."""
        return self.train(False)

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every descendant (children first) and then on this module; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Turn gradient tracking of every parameter on or off (freezing); returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default) or to zeros in place."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.data[...] = 0

    def to(self, *args: Any, device: Any = None, dtype: Any = None, non_blocking: bool = False) -> Module:
        """Move (``to("cuda")``) and/or cast (``to(gg.float64)``) parameters, their grads and buffers.

        In place: every parameter keeps its identity (optimizers holding it stay valid);
        only its ``.data`` (and its ``.grad``'s) is replaced. Casts apply to floating-point
        tensors only; integer buffers just move.
        """
        for a in args:
            if isinstance(a, backend.Device) or (isinstance(a, str) and _is_device_name(a)):
                device = a
            elif isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            else:
                dtype = a
        if dtype is not None:
            dtype = as_dtype(dtype)
            if not is_floating(dtype):
                raise TypeError(f"Module.to only accepts floating-point dtypes, got {dtype}; "
                                "integer buffers are never cast")
        if device is not None:
            device = backend.as_device(device)

        def convert(arr: Any) -> Any:
            if dtype is not None and is_floating(arr.dtype) and arr.dtype != dtype:
                arr = arr.astype(dtype)
            if device is not None:
                arr = backend.to_device(arr, device)
            return arr

        return self._apply_to_tensors(convert)

    def _apply_to_tensors(self, convert: Callable[[Any], Any]) -> Module:
        seen: set[int] = set()
        for m in self.modules():
            for t in [*m._parameters.values(), *m._buffers.values()]:
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                t.data = convert(t.data)
                if t.grad is not None:
                    t.grad.data = convert(t.grad.data)
        return self

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> Module:
        return self.to(f"cuda:{device}" if isinstance(device, int) else (device or "cuda"))

    def float(self) -> Module:
        return self.to("float32")

    def double(self) -> Module:
        return self.to("float64")

    def half(self) -> Module:
        return self.to("float16")

    # ------------------------------------------------------------------ state
    def state_dict(self, destination: Any = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict[str, Tensor]:
        """name -> tensor for every parameter and persistent buffer; detached, sharing data."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters and buffers in place (cast to each one's dtype and device).

        Values may be gpugrad Tensors, NumPy or CuPy arrays, or any array with ``__dlpack__``
        (a PyTorch ``state_dict()``, JAX arrays), shared without a copy where possible.
        Everything is checked before anything is copied: every key, shape and dtype, and each
        value is converted to its target's dtype and device first; with missing or unexpected
        keys (under ``strict``), a shape mismatch, or a value that cannot be converted (strings,
        objects, complex into real, floats into integers), a RuntimeError lists every problem
        and the module is left unchanged. Returns the missing and unexpected keys.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: expected a mapping of names to tensors, got "
                            f"{type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        staged = {}
        for key, target in own.items():
            if key in state_dict:
                arr = _staged_value(key, state_dict[key], target, problems)
                if arr is not None:
                    staged[key] = arr
        if strict:
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
            if unexpected:
                problems.insert(1 if missing else 0, "Unexpected key(s) in state_dict: "
                                + ", ".join(f'"{k}"' for k in unexpected))
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__} "
                               "(nothing was loaded):\n\t" + "\n\t".join(problems))
        for key, arr in staged.items():      # same shape, dtype and device: these copies cannot fail
            target = own[key]
            target.data[...] = arr
            versions.bump(target.data, "load_state_dict")
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in its repr (override in layers)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for name, child in self._modules.items():
            lines.append(f"({name}): " + _indent(repr(child), 2))
        if not lines:
            return f"{self._get_name()}()"
        if len(lines) == 1 and not self._modules:
            return f"{self._get_name()}({lines[0]})"
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"


def _staged_value(key: str, value: Any, target: Tensor, problems: list[str]) -> Any:
    """``value`` as an array of ``target``'s shape, dtype and device, or None after noting the problem."""
    from ..interop import from_dlpack  # noqa: PLC0415
    what = f'value for "{key}"'
    if isinstance(value, Tensor):
        arr = value.data
    elif isinstance(value, np.ndarray) or backend.namespace(value) is not np:     # NumPy or CuPy
        arr = value
    elif hasattr(value, "__dlpack__"):                                        # PyTorch, JAX...
        if getattr(value, "requires_grad", False) and hasattr(value, "detach"):
            value = value.detach()                                            # a torch Parameter
        try:
            arr = from_dlpack(value).data
        except (RuntimeError, TypeError, BufferError, ValueError) as err:
            problems.append(f"{what} ({type(value).__module__}.{type(value).__qualname__}) cannot be "
                            f"converted: {err}")
            return None
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            arr = np.asarray(None)
        if arr.dtype.kind not in "biuf":
            problems.append(f"{what} is a {type(value).__name__}, not a tensor")
            return None
    if tuple(arr.shape) != target.shape:
        problems.append(f'size mismatch for "{key}": copying a value of shape {tuple(arr.shape)} '
                        f"from the state dict, the shape in the current model is {target.shape}")
        return None
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "biufc":
        problems.append(f"{what} holds {dtype} values, not numbers; give a numeric tensor or array")
        return None
    if not np.can_cast(dtype, target.dtype, "same_kind"):
        problems.append(f"{what} has dtype {dtype}, which cannot be loaded into {target.dtype} without "
                        f"losing information; convert it first (e.g. value.astype({str(target.dtype)!r}))")
        return None
    try:
        return backend.to_device(arr, target.device).astype(target.dtype, copy=False)
    except (RuntimeError, ValueError, TypeError, MemoryError) as err:
        problems.append(f"{what} cannot be moved to {target.device} as {target.dtype}: {err}")
        return None
