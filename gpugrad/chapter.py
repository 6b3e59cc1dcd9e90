"""The autodiff chapter's examples run with gpugrad (``python -m gpugrad chapter``).

Each example prints its results under a short heading, each with the check against the answer
derived by hand; ``main()`` returns 0 when every check passes. The tutorial docs/autodiff.md
walks through the same examples with prose.
"""

from __future__ import annotations

from collections.abc import Callable

import gpugrad as gg
from gpugrad import random

Example = Callable[[], list[bool]]


def _show(heading: str, value: object, expected: str, ok: object) -> bool:
    """Print one result line (heading, value, check) and return whether the check passed."""
    ok = bool(ok)
    print(f"{heading}: {value}  (expected {expected}: {ok})")
    return ok


def _close(actual: gg.Tensor, expected: gg.Tensor, rtol: float = 1e-5) -> bool:
    """True when every element of ``actual`` is within ``rtol`` (relative) of ``expected``."""
    return bool((gg.abs(actual - expected) <= rtol * gg.abs(expected)).all())


def _raises(error: type[Exception], fn: Callable[[], object]) -> str | None:
    """The message of the ``error`` that ``fn()`` raises, or None when it raises nothing."""
    try:
        fn()
    except error as exc:
        return str(exc)
    return None


def _dot_twice(x: gg.Tensor) -> gg.Tensor:
    """The chapter's running example, y = 2 x.x."""
    return 2 * gg.dot(x, x)


def _square(x: gg.Tensor) -> gg.Tensor:
    """Elementwise x * x (a vector-valued function)."""
    return x * x


def control_flow_f(a: gg.Tensor) -> gg.Tensor:
    """The chapter's f: a data-dependent while loop and branch; f(a) is linear in a."""
    b = a * 2
    while gg.linalg.norm(b) < 1000:
        b = b * 2
    if b.sum() > 0:
        c = b
    else:
        c = 100 * b
    return c


def worked_example() -> list[bool]:
    """A worked example: y = 2 x.x at x = [0, 1, 2, 3]."""
    x = gg.arange(4.0)
    y = _dot_twice(x)
    return [_show("x = gg.arange(4.0)", x, "[0, 1, 2, 3]", x.tolist() == [0.0, 1.0, 2.0, 3.0]),
            _show("y = 2*gg.dot(x, x)", y, "28", y.item() == 28.0)]


def backward_pass() -> list[bool]:
    """Backward pass: the gradient of 2 x.x is 4x, in both styles."""
    x = gg.arange(4.0).requires_grad_()
    ok = [_show("x.grad before backward", x.grad, "None", x.grad is None)]
    _dot_twice(x).backward()
    ok.append(_show("gradient of 2*x.x at x=[0,1,2,3]", x.grad, "4x", (x.grad == 4 * x).all()))
    g = gg.grad(_dot_twice)(x)
    ok.append(_show("gg.grad(2*x.x) at x=[0,1,2,3]", g, "4x", (g == 4 * x).all()))
    ok.append(_show("x.grad after gg.grad (untouched)", x.grad, "still 4x", (x.grad == 4 * x).all()))
    return ok


def resetting() -> list[bool]:
    """Resetting and re-using: gradients accumulate until x.grad.zero_() or x.grad = None."""
    x = gg.arange(4.0).requires_grad_()
    _dot_twice(x).backward()
    _dot_twice(x).backward()
    ok = [_show("two backward passes, no reset", x.grad, "4x + 4x = 8x", (x.grad == 8 * x).all())]
    x.grad.zero_()
    x.sum().backward()
    ok.append(_show("after x.grad.zero_(), gradient of x.sum()", x.grad, "ones", (x.grad == 1).all()))
    x.grad = None
    x.sum().backward()
    ok.append(_show("after x.grad = None, gradient of x.sum()", x.grad, "ones", (x.grad == 1).all()))
    g = gg.grad(lambda x: x.sum())(x)
    ok.append(_show("gg.grad(x.sum())", g, "ones", (g == 1).all()))
    return ok


def non_scalar_output() -> list[bool]:
    """Non-scalar output: y = x * x needs weights (or a sum) before differentiating."""
    x = gg.arange(4.0).requires_grad_()
    y = _square(x)
    message = _raises(RuntimeError, y.backward)
    ok = [_show("y.backward() for a vector y", "RuntimeError" if message else "no error",
                "RuntimeError", message is not None and "scalar" in message)]
    y.backward(gradient=gg.ones_like(y))
    ok.append(_show("y.backward(gradient=gg.ones_like(y))", x.grad, "2x", (x.grad == 2 * x).all()))
    g = gg.grad(lambda x: _square(x).sum())(x)
    ok.append(_show("gg.grad(lambda x: (x * x).sum())", g, "2x", (g == 2 * x).all()))
    return ok


def detaching() -> list[bool]:
    """Detaching: u = (x * x).detach() is a constant, so d(u * x)/dx = u."""
    x = gg.arange(4.0).requires_grad_()
    y = _square(x)
    u = y.detach()
    (u * x).sum().backward()
    ok = [_show("u = y.detach(); gradient of (u * x).sum()", x.grad, "u", (x.grad == u).all())]
    x.grad.zero_()
    y.sum().backward()
    ok.append(_show("gradient around the detached path, of y.sum()", x.grad, "2x", (x.grad == 2 * x).all()))
    u = gg.stop_gradient(_square(x))
    g = gg.grad(lambda x: (u * x).sum())(x)
    ok.append(_show("gg.grad with u = gg.stop_gradient(x * x)", g, "x * x", (g == _square(x)).all()))
    g = gg.grad(lambda x: _square(x).sum())(x)
    ok.append(_show("gg.grad of (x * x).sum()", g, "2x", (g == 2 * x).all()))
    return ok


def control_flow() -> list[bool]:
    """Control flow: f has a data-dependent while and if, and f'(a) = f(a) / a."""
    a = random.normal(random.PRNGKey(1), ())         # the chapter's line, as JAX writes it
    d = control_flow_f(a)
    d_grad = gg.grad(control_flow_f)(a)
    ok = [_show("a = random.normal(random.PRNGKey(1), ())", a, "a scalar", a.shape == ()),
          _show("f(a)", d, "|f(a)| >= 1000, the loop ran", abs(d.item()) >= 1000),
          _show("gg.grad(f)(a)", d_grad, "f(a) / a", _close(d_grad, d / a))]
    a = gg.tensor(-0.3).requires_grad_()
    d = control_flow_f(a)
    d.backward()
    ok.append(_show("a = -0.3 (else branch): a.grad after f(a).backward()", a.grad, "f(a) / a",
                    _close(a.grad, d.detach() / a.detach())))
    return ok


def value_and_grad() -> list[bool]:
    """value_and_grad: the value and the gradient from one forward and backward pass."""
    x = gg.arange(4.0)
    value, g = gg.value_and_grad(_dot_twice)(x)
    return [_show("gg.value_and_grad(2*x.x): value", value, "28", value.item() == 28.0),
            _show("gg.value_and_grad(2*x.x): gradient", g, "4x", (g == 4 * x).all())]


def no_grad() -> list[bool]:
    """no_grad: nothing computed inside a gg.no_grad() block is recorded."""
    x = gg.arange(4.0).requires_grad_()
    with gg.no_grad():
        w = x * 2
    message = _raises(RuntimeError, w.sum().backward)
    return [_show("w = x * 2 under gg.no_grad(): w.requires_grad", w.requires_grad, "False",
                  not w.requires_grad),
            _show("w.sum().backward()", "RuntimeError" if message else "no error", "RuntimeError",
                  message is not None)]


def retain_graph() -> list[bool]:
    """retain_graph: a second backward needs the first to keep the graph."""
    x = gg.arange(4.0).requires_grad_()
    y = _square(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    ok = [_show("backward(retain_graph=True) then backward()", x.grad, "2x + 2x = 4x",
                (x.grad == 4 * x).all())]
    message = _raises(RuntimeError, y.backward)
    ok.append(_show("a third backward()", "RuntimeError" if message else "no error", "RuntimeError",
                    message is not None and "retain_graph" in message))
    return ok


EXAMPLES: tuple[Example, ...] = (
    worked_example, backward_pass, resetting, non_scalar_output, detaching, control_flow,
    value_and_grad, no_grad, retain_graph,
)


def main() -> int:
    """Run every example of the chapter; 0 when all checks pass, 1 otherwise."""
    passed = total = 0
    for example in EXAMPLES:
        title = (example.__doc__ or example.__name__).strip().splitlines()[0].rstrip(".")
        print(f"\n== {title}")
        try:
            results = example()
        except Exception as exc:  # noqa: BLE001 - report the broken example and run the others
            print(f"FAILED: {example.__name__} raised {type(exc).__name__}: {exc}")
            results = [False]
        passed += sum(results)
        total += len(results)
    status = "OK" if passed == total else "FAILED"
    print(f"\n{status}: {passed}/{total} checks passed")
    return 0 if passed == total else 1
