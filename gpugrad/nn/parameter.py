"""Parameter: a leaf tensor that a Module registers as learnable."""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad by default; assigning one to a Module attribute registers it."""

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            from ..creation import zeros  # noqa: PLC0415
            data = zeros(0)
        if isinstance(data, Tensor):
            arr = data.data                     # shares memory with ``data``, as torch.nn.Parameter
        else:
            from ..creation import as_array  # noqa: PLC0415
            arr = as_array(data)
        self.data = arr
        self._requires_grad = False
        self.grad = None
        self._node = None
        self._hooks = None
        if requires_grad:
            self.requires_grad_()

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
