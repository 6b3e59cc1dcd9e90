"""gpugrad: a small tensor autodiff engine on NumPy (CPU) and CuPy (NVIDIA GPUs).

    import gpugrad as gg
    x = gg.arange(4.0).requires_grad_()
    y = 2 * gg.dot(x, x)
    y.backward()
    x.grad              # tensor([ 0.,  4.,  8., 12.])
"""

from . import autograd, cuda, data, distributed, dtypes, func, linalg, nn, optim, random, testing
from .backend import Device
from .backend import Device as device
from .creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    tensor,
    zeros,
    zeros_like,
)
from .dtypes import (
    bool_,
    float16,
    float32,
    float64,
    get_default_dtype,
    int8,
    int16,
    int32,
    int64,
    set_default_dtype,
    uint8,
)
from .engine import (
    detect_anomaly,
    enable_grad,
    inference_mode,
    is_anomaly_enabled,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .func import grad, hessian, jacfwd, jacobian, jacrev, jvp, stop_gradient, value_and_grad, vjp, vmap
from .interop import from_dlpack
from .jit import jit
from .ops import *  # noqa: F403 - the NumPy-like op namespace
from .ops import __all__ as _op_names
from .random import manual_seed, rand, randn
from .random import torch_randint as randint
from .serialization import load, save
from .tensor import Tensor

bool = bool_  # noqa: A001 - gg.bool, as torch.bool

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "bfloat16":
        raise AttributeError(dtypes.BFLOAT16_UNSUPPORTED)
    raise AttributeError(f"module 'gpugrad' has no attribute {name!r}")

__all__ = [
    "Tensor", "Device", "device", "tensor", "as_tensor", "from_numpy", "arange", "zeros", "ones",
    "full", "zeros_like", "ones_like", "full_like", "eye", "linspace", "randn", "rand", "randint",
    "empty", "empty_like", "set_default_dtype", "get_default_dtype", "int8", "int16", "uint8", "dtypes",
    "manual_seed", "grad", "value_and_grad", "vjp", "jvp", "jacobian", "jacrev", "jacfwd", "hessian", "vmap",
    "stop_gradient", "func", "random",
    "no_grad", "enable_grad", "inference_mode", "detect_anomaly", "is_anomaly_enabled",
    "set_grad_enabled", "is_grad_enabled", "float16", "float32", "float64", "int32", "int64",
    "bool", "autograd", "cuda", "data", "distributed", "linalg", "nn", "optim", "testing", "save", "load",
    "from_dlpack", "jit",
    *_op_names,
]
