"""The op functions, gathered in one NumPy-like namespace (``gg.exp``, ``gg.sum``...)."""

from . import conv as conv
from . import loss as loss
from .convert import astype, clone, copy, to_device
from .elementwise import (
    abs,
    absolute,
    add,
    allclose,
    clamp,
    clip,
    cos,
    div,
    divide,
    equal,
    exp,
    expm1,
    greater,
    greater_equal,
    isclose,
    isfinite,
    isinf,
    isnan,
    less,
    less_equal,
    log,
    log1p,
    logical_and,
    logical_not,
    logical_or,
    maximum,
    minimum,
    mul,
    multiply,
    negative,
    not_equal,
    pow,
    power,
    relu,
    sigmoid,
    sign,
    sin,
    sqrt,
    square,
    sub,
    subtract,
    tanh,
    where,
)
from .gather import gather, scatter, scatter_add, scatter_reduce, take_along_axis, take_along_dim
from .index import argwhere, getitem, index_select, masked_fill, masked_select, nonzero
from .index import assign as assign
from .index import parse_index as parse_index
from .layout import (
    chunk,
    diag,
    diagonal,
    flip,
    meshgrid,
    repeat,
    repeat_interleave,
    roll,
    split,
    tile,
    tril,
    triu,
    unflatten,
)
from .linalg import dot, matmul, norm
from .nn import LINEAR_ACTIVATIONS as LINEAR_ACTIVATIONS
from .nn import linear, linear_activation, softmax_cross_entropy
from .reduce import (
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    logsumexp,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)
from .registry import REGISTRY as REGISTRY
from .registry import OpDef as OpDef
from .registry import defop as defop
from .shape import (
    broadcast_to,
    cat,
    concatenate,
    expand_dims,
    flatten,
    permute,
    reshape,
    squeeze,
    stack,
    swapaxes,
    transpose,
    unsqueeze,
)
from .special import erf

__all__ = [
    "astype", "clone", "copy", "to_device",
    "abs", "absolute", "add", "allclose", "clamp", "clip", "cos", "div", "divide", "equal", "exp", "expm1",
    "greater", "greater_equal", "isclose", "isfinite", "isinf", "isnan", "less", "less_equal", "log", "log1p",
    "logical_and", "logical_not", "logical_or", "maximum", "minimum", "mul", "multiply", "negative",
    "not_equal", "pow", "power", "relu", "sigmoid", "sign", "sin", "sqrt", "square", "sub",
    "subtract", "tanh", "where",
    "erf", "getitem", "linear", "linear_activation", "softmax_cross_entropy", "dot", "matmul", "norm",
    "all", "amax", "amin", "any", "argmax", "argmin", "logsumexp", "max", "mean", "min", "prod",
    "std", "sum", "var",
    "broadcast_to", "cat", "concatenate", "expand_dims", "flatten", "permute", "reshape",
    "squeeze", "stack", "swapaxes", "transpose", "unsqueeze",
    "argwhere", "gather", "index_select", "masked_fill", "masked_select", "nonzero", "scatter", "scatter_add",
    "scatter_reduce", "take_along_axis", "take_along_dim",
    "chunk", "diag", "diagonal", "flip", "meshgrid", "repeat", "repeat_interleave", "roll", "split", "tile",
    "tril", "triu", "unflatten",
]
