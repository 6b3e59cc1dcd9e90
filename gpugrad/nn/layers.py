"""Layers: Linear, Embedding, LayerNorm, Dropout, Flatten, Identity, activations, and the MLP helper."""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import backend, dtypes, ops
from ..dtypes import as_dtype
from ..tensor import Tensor
from . import functional as F
from . import init
from .container import Sequential
from .module import Module
from .parameter import Parameter


def _new_parameter(shape: tuple[int, ...], dtype: Any, device: Any, fill: float | None = None) -> Parameter:
    """An (uninitialised unless ``fill``) float parameter of ``shape`` on ``device``."""
    dtype = as_dtype(dtype) or dtypes.default_float
    if dtype.kind != "f":
        raise TypeError(f"parameters must be floating point, got dtype {dtype}")
    arr = np.empty(shape, dtype=dtype) if fill is None else np.full(shape, fill, dtype=dtype)
    if device is not None:
        arr = backend.to_device(arr, backend.as_device(device))
    return Parameter(Tensor._wrap(arr))


def default_reset(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's initialisation of Linear and convolution layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    # kaiming_uniform_ with a = sqrt(5): gain sqrt(2 / 6), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


def affine_parameters(module: Module, shape: tuple[int, ...], affine: bool, bias: bool, dtype: Any,
                      device: Any) -> None:
    """Register a scale ``weight`` (ones) and a shift ``bias`` (zeros) of ``shape``, or None for either."""
    module.register_parameter("weight", _new_parameter(shape, dtype, device, fill=1.0) if affine else None)
    module.register_parameter("bias", _new_parameter(shape, dtype, device, fill=0.0) if affine and bias
                              else None)


def reset_affine(module: Module) -> None:
    """The scale back to ones and the shift to zeros (those that exist)."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)
def _count(layer: str, name: str, value: Any) -> int:
    """A layer's size argument as an int >= 0; else a TypeError or ValueError naming it and its value."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r} ({type(value).__name__}); "
                        f"pass a whole number of features, e.g. {layer}(2, 3)")
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{layer}: {name} must be >= 0, got {value}")
    return value


# ----------------------------------------------------------------------------- Linear


class Linear(Module):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.in_features = _count("Linear", "in_features", in_features)
        self.out_features = _count("Linear", "out_features", out_features)
        self.weight = _new_parameter((out_features, in_features), dtype, device)
        if bias:
            self.bias = _new_parameter((out_features,), dtype, device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: weight and bias from U(-1/sqrt(in_features), 1/sqrt(in_features))."""
        default_reset(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if not x.shape or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear(in_features={self.in_features}, out_features={self.out_features}): "
                             f"input of shape {x.shape} must have {self.in_features} features in its last "
                             "dimension")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# ----------------------------------------------------------------------------- activations


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments (a placeholder)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x


class ReLU(Module):
    """max(x, 0). ``inplace`` is accepted for compatibility; the result is always a new tensor."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    """x * Phi(x): exact (``approximate='none'``, via erf) or the tanh approximation."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class SiLU(Module):
    """x * sigmoid(x)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class Softmax(Module):
    """softmax along ``dim``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log_softmax along ``dim``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.dim)


# ----------------------------------------------------------------------------- regularisation, shape


class Dropout(Module):
    """Zero elements with probability p while training (scaling the rest by 1/(1-p)); identity in eval."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
    """Merge dimensions start_dim..end_dim (by default all but the batch dimension)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ----------------------------------------------------------------------------- normalisation, lookup


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dimensions, then scale (ones) and shift (zeros)."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        affine_parameters(self, self.normalized_shape, elementwise_affine, bias, dtype, device)

    def reset_parameters(self) -> None:
        reset_affine(self)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


def _index_message(value: int, num_embeddings: int, _: int) -> str:
    return (f"Embedding: index {value} is out of range for {num_embeddings} embeddings (valid indices are "
            f"0..{num_embeddings - 1})")


class Embedding(Module):
    """A lookup table: integer indices of any shape -> rows of ``weight`` (num_embeddings, embedding_dim).

    The weight starts from N(0, 1). Repeated indices add up their gradients. The row
    at ``padding_idx`` (if given) starts at zero and receives no gradient.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 device: Any = None, dtype: Any = None, _weight: Tensor | None = None,
                 _freeze: bool = False) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} must be within num_embeddings "
                                 f"({num_embeddings})")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        if _weight is None:
            self.weight = _new_parameter((num_embeddings, embedding_dim), dtype, device)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: weight shape {tuple(_weight.shape)} does not match "
                                 f"(num_embeddings, embedding_dim) = ({num_embeddings}, {embedding_dim})")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    @classmethod
    def from_pretrained(cls, embeddings: Tensor, freeze: bool = True,
                        padding_idx: int | None = None) -> Embedding:
        """An Embedding whose weight is ``embeddings`` (2-D); frozen (no gradient) by default."""
        if embeddings.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape "
                             f"{embeddings.shape}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx=padding_idx, _weight=embeddings, _freeze=freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, indices: Tensor) -> Tensor:
        idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be an integer tensor (e.g. .long()), got {idx.dtype}")
        if idx.size:
            bad = (idx < 0) | (idx >= self.num_embeddings)
            if isinstance(idx, np.ndarray):
                if bad.any():
                    raise IndexError(_index_message(int(idx.reshape(-1)[bad.reshape(-1).argmax()]),
                                                    self.num_embeddings, 0))
            else:                                      # on a GPU: checked there, raised at the next read
                from ..cuda import checks  # noqa: PLC0415 - only ever reached with CuPy arrays
                checks.record("Embedding", idx, bad, _index_message, self.num_embeddings)
        out = self.weight[idx]                         # gather; the VJP scatter-adds repeated rows
        if self.padding_idx is not None and out.requires_grad:
            pad = Tensor._wrap((idx == self.padding_idx)[..., None])
            out = ops.where(pad, out.detach(), out)     # the padding row gets no gradient
        return out

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


# ----------------------------------------------------------------------------- MLP


ACTIVATIONS: dict[str, Callable[[], Module]] = {
    "relu": ReLU, "leaky_relu": LeakyReLU, "gelu": GELU, "gelu_tanh": lambda: GELU("tanh"),
    "tanh": Tanh, "sigmoid": Sigmoid, "silu": SiLU, "swish": SiLU, "identity": Identity,
}


def _activation_factory(activation: str | Module | Callable[[], Module]) -> Callable[[], Module]:
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation.lower()]
        except KeyError:
            raise ValueError(f"MLP: unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}, "
                             "a Module class, or a function returning a Module") from None
    if isinstance(activation, Module):
        return lambda: copy.deepcopy(activation)            # one fresh copy per layer
    if callable(activation):
        return activation
    raise TypeError(f"MLP: activation must be a name, a Module, or a Module factory, got "
                    f"{type(activation).__name__}")


# activation modules that MLP runs fused with the Linear layer before them (exact types only:
# a subclass may change forward)
_FUSED_ACTIVATIONS: dict[type, str] = {ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid"}


class MLP(Sequential):
    """Linear-activation-[Dropout]-...-Linear through ``sizes``: MLP([64, 128, 10]) has two Linear layers.

    ``activation`` is a name ("relu", "gelu", "tanh"...), a Module class, a function
    returning a Module, or a Module (copied for each layer). No activation follows the
    last layer; ``dropout`` > 0 adds a Dropout after each hidden activation.

    A Linear layer with a bias followed by a ReLU, Tanh or Sigmoid runs as one
    primitive (``F.linear_activation``): the same result, one node instead of two.
    """

    def __init__(self, sizes: Sequence[int], activation: str | Module | Callable[[], Module] = "relu",
                 dropout: float = 0.0, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"MLP: sizes needs at least an input and an output size, got {sizes}")
        make = _activation_factory(activation)
        layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(n_in, n_out, bias=bias, device=device, dtype=dtype))
            if i < len(sizes) - 2:
                act = make()
                if not isinstance(act, Module):
                    raise TypeError(f"MLP: the activation factory returned {type(act).__name__}, "
                                    "not a Module")
                layers.append(act)
                if dropout > 0:
                    layers.append(Dropout(dropout))
        super().__init__(*layers)

    def forward(self, x: Any) -> Any:
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            layer = modules[i]
            activation = _FUSED_ACTIVATIONS.get(type(modules[i + 1])) if i + 1 < len(modules) else None
            if activation is not None and type(layer) is Linear and layer.bias is not None:
                x = F.linear_activation(x, layer.weight, layer.bias, activation)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x
