"""The optional packages some tests need. Without one, exactly the tests that need it skip, all with
the one reason given here (so the skip summary groups them), and everything else still runs.

    torch = optional.need("torch")              # inside a test (or use the `torch` fixture)
    @optional.needs("torch")                    # on a test that uses a module-level import
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

WHY = {
    "torch": "PyTorch is not installed (the differential tests compare against it: pip install torch)",
    "autograd": "HIPS autograd is not installed (a benchmark peer: pip install autograd)",
    "jax": "JAX is not installed (a benchmark peer: pip install jax)",
    "mpi4py": "mpi4py is not installed (multi-process tests: pip install \"gpugrad[distributed]\")",
    "safetensors": "safetensors is not installed (pip install safetensors)",
    "mpmath": "mpmath is not installed (the erf reference: pip install mpmath)",
    "sklearn": "scikit-learn is not installed (the default data set: pip install 'gpugrad[train]')",
    "tqdm": "tqdm is not installed (the progress bar: pip install tqdm)",
}


def find(name: str) -> ModuleType | None:
    """The module, or None where it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def need(name: str) -> ModuleType:
    """The module; skips the calling test (with WHY's reason) where it is not installed."""
    return pytest.importorskip(name, reason=WHY[name])


def needs(name: str) -> pytest.MarkDecorator:
    """A mark that skips the test (with WHY's reason) where ``name`` is not installed."""
    return pytest.mark.skipif(find(name) is None, reason=WHY[name])
