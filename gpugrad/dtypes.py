"""Dtypes: gpugrad uses NumPy's dtype objects, with float32 as the default float.

Type promotion follows PyTorch (and, for tensors of one kind, JAX): Python scalars are
"weak" (they take the tensor's dtype when their kind allows, and a Python float turns an
integer tensor into the default float), and a 0-d tensor only decides the result when it
is of a higher kind (bool < integer < floating) than every tensor with dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int8 = np.dtype("int8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
uint8 = np.dtype("uint8")
bool_ = np.dtype("bool")

default_float = float32        # read it as dtypes.default_float: set_default_dtype rebinds it

_ALIASES = {
    "float": float32, "float16": float16, "half": float16, "float32": float32,
    "float64": float64, "double": float64, "int": int64, "int8": int8, "int16": int16,
    "int32": int32, "int64": int64, "long": int64, "short": int16, "uint8": uint8, "bool": bool_,
}


# Why no bfloat16 (see docs/semantics.md): NumPy computes it through ml_dtypes' emulated loops
# (slower than float32 on a CPU, and less precise), its dtype kind is "V", not "f", and CuPy's
# support is experimental (no cupyx.scatter_add, which getitem's gradient uses).
BFLOAT16_UNSUPPORTED = ("bfloat16 is not supported: on the CPU NumPy would emulate it (slower and less "
                        "precise than float32) and CuPy's bfloat16 is experimental; use gg.float16 or "
                        "gg.float32 (a bfloat16 checkpoint converts exactly to float32)")


def as_dtype(dtype: Any) -> np.dtype | None:
    """Normalise a dtype spelling (gg.float32, np.float32, "float32", float) to a NumPy dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype == "bfloat16":
            raise TypeError(BFLOAT16_UNSUPPORTED)
        try:
            return _ALIASES[dtype]
        except KeyError:
            raise TypeError(f"unknown dtype {dtype!r}; use one of {sorted(_ALIASES)}") from None
    if dtype is float:
        return default_float
    if not isinstance(dtype, (np.dtype, type)) and hasattr(dtype, "shape"):
        # np.dtype() would quietly take a tensor's or an array's dtype
        raise TypeError(f"expected a dtype such as gg.float32, got a {type(dtype).__name__}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}; use gg.float32, gg.float64, gg.int64, ...") from None
    if dt.name == "bfloat16":
        raise TypeError(BFLOAT16_UNSUPPORTED)
    if dt.kind not in "fiub":
        raise TypeError(f"dtype {dt} is not supported; use a float, integer or bool dtype")
    return dt


def is_floating(dtype: np.dtype) -> bool:
    return dtype.kind == "f"


def set_default_dtype(dtype: Any) -> None:
    """Make ``dtype`` (float16, float32 or float64) the dtype of Python floats and new float tensors."""
    global default_float
    dt = as_dtype(dtype)
    if dt is None or dt.kind != "f":
        raise TypeError(f"set_default_dtype: only floating-point dtypes can be the default, got {dtype!r}; "
                        "use gg.float32 or gg.float64")
    default_float = dt


def get_default_dtype() -> np.dtype:
    """The dtype of Python floats and of new float tensors (float32 unless set_default_dtype changed it)."""
    return default_float


# ----------------------------------------------------------------------------- promotion

_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2}


def promote_types(a: np.dtype | None, b: np.dtype | None) -> np.dtype | None:
    """PyTorch's promote_types: an integer or bool meeting a float gives that float (NumPy widens)."""
    if a is None or a is b:
        return b
    if b is None:
        return a
    fa, fb = a.kind == "f", b.kind == "f"
    if fa != fb:
        return a if fa else b
    return np.promote_types(a, b)


def _combine(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    """The operands of one priority class (``higher``) decide unless ``lower`` is of a higher kind."""
    if higher is None:
        return lower
    if lower is None or _KIND_RANK[higher.kind] >= _KIND_RANK[lower.kind]:
        return higher
    return promote_types(higher, lower)


def result_type(operands: Any) -> np.dtype:
    """The dtype PyTorch gives an op on ``operands`` (arrays, NumPy scalars, Python numbers).

    Three classes, highest priority first: arrays with dimensions, 0-d arrays and NumPy
    scalars, Python numbers (bool, int as int64, float as the default float).
    """
    dims = zero = weak = None
    for d in operands:
        if type(d) is bool:
            weak = promote_types(weak, bool_)
        elif type(d) is int:
            weak = promote_types(weak, int64)
        elif isinstance(d, float):              # a Python float, or np.float64 (a float subclass)
            weak = promote_types(weak, default_float)
        elif d.ndim == 0:
            zero = promote_types(zero, d.dtype)
        else:
            dims = promote_types(dims, d.dtype)
    return _combine(dims, _combine(zero, weak))
