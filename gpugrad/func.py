"""JAX-style function transforms on top of the tape: grad, value_and_grad, stop_gradient."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import backend
from .autograd import enable_grad, run_backward
from .creation import tensor
from .dtypes import is_floating
from .tensor import Tensor


def stop_gradient(x: Any) -> Tensor:
    """``x`` as a constant: the backward pass treats it as having no inputs (``jax.lax.stop_gradient``)."""
    return x.detach() if isinstance(x, Tensor) else tensor(x)


def _leaf(name: str, value: Any, position: int) -> Tensor:
    """A fresh leaf for a differentiated argument: the caller's tensor and its .grad stay untouched."""
    t = Tensor._wrap(value.data) if isinstance(value, Tensor) else tensor(value)
    if not is_floating(t.data.dtype):
        raise TypeError(f"{name}: argument {position} is {t.data.dtype}; gradients are defined for "
                        "floating-point inputs only (pass 3.0, not 3, or cast with .to(gg.float32))")
    t.requires_grad_()
    return t


def _argnums(name: str, argnums: int | Sequence[int], nargs: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in nums:
        if not -nargs <= n < nargs:
            raise ValueError(f"{name}: argnums {argnums} out of range for {nargs} positional argument(s)")
    return tuple(n % nargs for n in nums)


def value_and_grad(f: Callable, argnums: int | Sequence[int] = 0,
                   has_aux: bool = False) -> Callable:
    """Transform scalar-valued ``f`` into a function returning ``(f(*args), df/dargs)``.

    With a tuple ``argnums`` the gradient is a tuple. With ``has_aux``, ``f`` returns
    ``(value, aux)`` and the result is ``((value, aux), grad)``, as in JAX.
    """
    name = f"value_and_grad({getattr(f, '__name__', 'f')})"

    def transformed(*args: Any, **kwargs: Any) -> Any:
        if not args:
            raise TypeError(f"{name}: called with no positional arguments to differentiate")
        nums = _argnums(name, argnums, len(args))
        args_list = list(args)
        leaves = []
        for n in nums:
            args_list[n] = _leaf(name, args_list[n], n)
            leaves.append(args_list[n])
        with enable_grad():
            result = f(*args_list, **kwargs)
        aux = None
        if has_aux:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(f"{name}: with has_aux=True, f must return a pair (value, aux)")
            result, aux = result
        out = _scalar_output(name, result)
        if out._requires_grad:
            seed = backend.namespace(out.data).ones_like(out.data)
            grads = run_backward([out], [seed], capture=leaves)
        else:
            grads = [None] * len(leaves)
        grads = [Tensor._wrap(g) if g is not None else
                 Tensor._wrap(backend.namespace(t.data).zeros_like(t.data))
                 for g, t in zip(grads, leaves)]
        grad_value = grads[0] if isinstance(argnums, int) else tuple(grads)
        value = out.detach()
        return ((value, aux), grad_value) if has_aux else (value, grad_value)

    transformed.__name__ = name
    return transformed


def grad(f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """Transform scalar-valued ``f`` into a function returning its gradient (``jax.grad``)."""
    vg = value_and_grad(f, argnums, has_aux)

    def transformed(*args: Any, **kwargs: Any) -> Any:
        if has_aux:
            (_, aux), g = vg(*args, **kwargs)
            return g, aux
        return vg(*args, **kwargs)[1]

    transformed.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return transformed


def _scalar_output(name: str, result: Any) -> Tensor:
    if not isinstance(result, Tensor):
        raise TypeError(f"{name}: f must return a scalar Tensor, got {type(result).__name__}")
    if result.data.size != 1:
        raise TypeError(
            f"{name}: gradients are defined only for scalar-output functions, but f returned shape "
            f"{result.shape}. Reduce it first (e.g. grad(lambda x: f(x).sum())) or use "
            "y.backward(gradient=...) for a weighted sum")
    if not is_floating(result.data.dtype):
        raise TypeError(f"{name}: f returned {result.data.dtype}; only floating-point outputs have gradients")
    return result
