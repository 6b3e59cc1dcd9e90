"""The op functions, gathered in one NumPy-like namespace (``gg.exp``, ``gg.sum``...)."""

from .convert import astype, clone, copy, to_device
from .elementwise import (
    abs, absolute, add, clamp, clip, cos, div, divide, equal, exp, expm1, greater, greater_equal,
    isfinite, isinf, isnan, less, less_equal, log, log1p, logical_and, logical_not, logical_or,
    maximum, minimum, mul, multiply, negative, not_equal, pow, power, relu, sigmoid, sign, sin,
    sqrt, square, sub, subtract, tanh, where,
)
from .index import getitem, plain_index
from .linalg import dot, matmul, norm
from .reduce import (
    all, amax, amin, any, argmax, argmin, logsumexp, max, mean, min, prod, std, sum, var,
)
from .registry import REGISTRY, OpDef, defop
from .shape import (
    broadcast_to, cat, concatenate, expand_dims, flatten, permute, reshape, squeeze, stack,
    swapaxes, transpose, unsqueeze,
)

__all__ = [
    "astype", "clone", "copy", "to_device",
    "abs", "absolute", "add", "clamp", "clip", "cos", "div", "divide", "equal", "exp", "expm1",
    "greater", "greater_equal", "isfinite", "isinf", "isnan", "less", "less_equal", "log", "log1p",
    "logical_and", "logical_not", "logical_or", "maximum", "minimum", "mul", "multiply", "negative",
    "not_equal", "pow", "power", "relu", "sigmoid", "sign", "sin", "sqrt", "square", "sub",
    "subtract", "tanh", "where",
    "getitem", "dot", "matmul", "norm",
    "all", "amax", "amin", "any", "argmax", "argmin", "logsumexp", "max", "mean", "min", "prod",
    "std", "sum", "var",
    "broadcast_to", "cat", "concatenate", "expand_dims", "flatten", "permute", "reshape",
    "squeeze", "stack", "swapaxes", "transpose", "unsqueeze",
]
