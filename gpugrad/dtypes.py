"""Dtypes: gpugrad uses NumPy's dtype objects, with float32 as the default float."""

from __future__ import annotations

from typing import Any

import numpy as np

float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")

default_float = float32

_ALIASES = {
    "float": float32, "float16": float16, "half": float16, "float32": float32,
    "float64": float64, "double": float64, "int": int64, "int32": int32,
    "int64": int64, "long": int64, "bool": bool_,
}


def as_dtype(dtype: Any) -> np.dtype | None:
    """Normalise a dtype spelling (gg.float32, np.float32, "float32", float) to a NumPy dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
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
    if dt.kind not in "fiub":
        raise TypeError(f"dtype {dt} is not supported; use a float, integer or bool dtype")
    return dt


def is_floating(dtype: np.dtype) -> bool:
    return dtype.kind == "f"
