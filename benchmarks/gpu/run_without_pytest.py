#!/usr/bin/env python3
"""Run the tests marked ``cuda`` in some test files with plain Python, where pytest is missing.

    python3 benchmarks/gpu/run_without_pytest.py [-x] [-k TEXT] tests/test_cuda.py tests/test_kernels_cpu.py

benchmarks/gpu/check.sh falls back to this on a GPU machine without pytest. It puts a
small stand-in ``pytest`` module in sys.modules (marks, parametrize and pytest.param,
fixtures that take no arguments, autouse fixtures of the module and of its folder's
conftest.py, skip, xfail, fail, raises, approx, importorskip), imports each file, and runs
every test marked cuda, each parametrized case on its own. It prints one line per test and
a summary, and exits 1 if any test failed. With pytest installed it still uses the stand-in
(the real module's fixtures cannot be called directly); the tests are written to need no more.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import itertools
import math
import re
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- the stand-in pytest


class Skipped(Exception):
    """pytest.skip() was called."""


class XFailed(Exception):
    """pytest.xfail() was called."""


class Mark:
    """One mark: a name and the arguments it was given."""

    def __init__(self, name: str, args: tuple = (), kwargs: dict | None = None) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs or {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and (inspect.isfunction(args[0]) or inspect.isclass(args[0])):
            target = args[0]
            target.pytestmark = [*getattr(target, "pytestmark", []), self]
            return target
        return Mark(self.name, args, kwargs)


class _MarkGenerator:
    def __getattr__(self, name: str) -> Mark:
        return Mark(name)


class ParameterSet:
    def __init__(self, values: tuple, id: str | None = None, marks: Any = ()) -> None:
        self.values, self.id, self.marks = values, id, marks


def param(*values: Any, id: str | None = None, marks: Any = ()) -> ParameterSet:  # noqa: A002
    return ParameterSet(values, id, marks)


def fixture(fn: Callable | None = None, *, scope: str = "function", params: Any = None, autouse: bool = False,
            ids: Any = None, name: str | None = None) -> Any:
    def mark(f: Callable) -> Callable:
        f._fixture = {"autouse": autouse, "params": params, "name": name or f.__name__}  # type: ignore[attr-defined]
        return f
    return mark(fn) if fn is not None else mark


def skip(reason: str = "", **_: Any) -> None:
    raise Skipped(reason)


def xfail(reason: str = "") -> None:
    raise XFailed(reason)


def fail(reason: str = "", pytrace: bool = True) -> None:
    raise AssertionError(reason)


def importorskip(modname: str, minversion: str | None = None, reason: str | None = None) -> Any:
    try:
        return importlib.import_module(modname)
    except ImportError as err:
        raise Skipped(reason or f"could not import {modname!r}: {err}") from None


class _ExceptionInfo:
    value: BaseException | None = None
    type: type | None = None


@contextlib.contextmanager
def raises(expected: Any, *, match: str | None = None) -> Iterator[_ExceptionInfo]:
    info = _ExceptionInfo()
    try:
        yield info
    except expected as err:
        info.value, info.type = err, type(err)
        if match is not None and not re.search(match, str(err)):
            raise AssertionError(f"raised {type(err).__name__}({err!s}) does not match {match!r}") from err
        return
    raise AssertionError(f"DID NOT RAISE {expected}")


class approx:  # noqa: N801 - pytest's name
    def __init__(self, expected: float, rel: float | None = None, abs: float | None = None) -> None:  # noqa: A002
        self.expected = expected
        self.rel = 1e-6 if rel is None and abs is None else (rel or 0.0)
        self.abs = 1e-12 if abs is None else abs

    def __eq__(self, actual: object) -> bool:
        return math.isclose(float(actual), float(self.expected), rel_tol=self.rel, abs_tol=self.abs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"approx({self.expected!r})"


def make_module() -> types.ModuleType:
    """The stand-in ``pytest`` module."""
    mod = types.ModuleType("pytest")
    mod.__doc__ = "A stand-in for pytest (benchmarks/gpu/run_without_pytest.py)."
    mod.mark = _MarkGenerator()
    for obj in (param, fixture, skip, xfail, fail, importorskip, raises, approx):
        setattr(mod, obj.__name__, obj)
    mod.skip.Exception = Skipped  # type: ignore[attr-defined]
    return mod


# ----------------------------------------------------------------------------- collecting and running


def _marks(obj: Any) -> list[Mark]:
    marks = getattr(obj, "pytestmark", [])
    return list(marks) if isinstance(marks, (list, tuple)) else [marks]


def _cases(fn: Callable, marks: list[Mark]) -> list[tuple[str, dict[str, Any]]]:
    """(id, arguments) of every parametrized case of fn (one case without parametrize)."""
    axes = []
    for m in reversed([m for m in marks if m.name == "parametrize"]):   # the nearest decorator: fastest
        names, values = m.args[0], m.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        ids = m.kwargs.get("ids")
        axis = []
        for i, v in enumerate(values):
            vals = v.values if isinstance(v, ParameterSet) else (tuple(v) if len(names) > 1 else (v,))
            if isinstance(v, ParameterSet) and v.id is not None:
                label = v.id
            elif callable(ids):
                label = "-".join(str(ids(x)) for x in vals)
            elif isinstance(ids, (list, tuple)):
                label = str(ids[i])
            else:
                label = "-".join(str(x) if isinstance(x, (int, float, str, bool)) else f"{n}{i}"
                                 for n, x in zip(names, vals))
            axis.append((label, dict(zip(names, vals))))
        axes.append(axis)
    cases = []
    for combo in itertools.product(*reversed(axes)) if axes else [()]:
        label = "-".join(c[0] for c in combo)
        kwargs: dict[str, Any] = {}
        for _, kw in combo:
            kwargs.update(kw)
        cases.append((f"{fn.__name__}[{label}]" if combo else fn.__name__, kwargs))
    return cases


def _load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _fixtures(*modules: types.ModuleType) -> dict[str, Callable]:
    found: dict[str, Callable] = {}
    for mod in modules:                                   # later modules (the test file) win
        for obj in vars(mod).values():
            info = getattr(obj, "_fixture", None)
            if info is not None and callable(obj):
                found[info["name"]] = obj
    return found


@contextlib.contextmanager
def _fixture_values(names: Sequence[str], fixtures: dict[str, Callable]) -> Iterator[dict[str, Any]]:
    """Set up the named fixtures (generator fixtures are torn down after the test)."""
    values: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for name in names:
            fn = fixtures[name]
            if inspect.signature(fn).parameters:
                raise Skipped(f"fixture {name!r} takes arguments, which the stand-in pytest does not provide")
            if inspect.isgeneratorfunction(fn):
                values[name] = stack.enter_context(contextlib.contextmanager(fn)())
            else:
                values[name] = fn()
        yield values


def run_file(path: Path, *, stop_first: bool, keyword: str, counts: dict[str, int],
             collect_only: bool = False) -> bool:
    """Run the cuda tests of one file; False once a test failed and stop_first is set."""
    folder = path.resolve().parent
    for p in (str(ROOT), str(folder)):
        if p not in sys.path:
            sys.path.insert(0, p)
    conftests = []
    if (folder / "conftest.py").is_file():
        conftests.append(_load(folder / "conftest.py", f"conftest_{abs(hash(folder))}"))
    try:
        module = _load(path, path.stem)
    except Skipped as err:
        print(f"SKIP  {path}: {err}")
        counts["skipped"] += 1
        return True
    fixtures = _fixtures(*conftests, module)
    autouse = [n for n, f in fixtures.items() if f._fixture["autouse"]]
    module_marks = _marks(module)
    for name, fn in list(vars(module).items()):
        if not (name.startswith("test") and inspect.isfunction(fn)):
            continue
        marks = module_marks + _marks(fn)
        if not any(m.name == "cuda" for m in marks):
            continue
        for case_id, kwargs in _cases(fn, marks):
            if keyword and keyword not in case_id:
                continue
            if collect_only:
                counts["collected"] += 1
                print(f"{path.name}::{case_id}")
                continue
            skipif = [m for m in marks if m.name == "skipif" and m.args and m.args[0]]
            started = time.perf_counter()
            try:
                if skipif:
                    raise Skipped(skipif[0].kwargs.get("reason", "skipif"))
                wanted = [p for p in inspect.signature(fn).parameters if p not in kwargs]
                missing = [p for p in wanted if p not in fixtures]
                if missing:
                    raise Skipped(f"needs pytest fixture(s) {missing}")
                with _fixture_values(autouse + [p for p in wanted if p not in autouse], fixtures) as values:
                    fn(**kwargs, **{p: values[p] for p in wanted})
            except Skipped as err:
                counts["skipped"] += 1
                print(f"SKIP  {path.name}::{case_id}: {err}")
                continue
            except XFailed as err:
                counts["xfailed"] += 1
                print(f"XFAIL {path.name}::{case_id}: {err}")
                continue
            except Exception:  # noqa: BLE001 - a failing test is reported, not raised
                counts["failed"] += 1
                print(f"FAIL  {path.name}::{case_id}\n{traceback.format_exc()}")
                if stop_first:
                    return False
                continue
            counts["passed"] += 1
            print(f"PASS  {path.name}::{case_id} ({time.perf_counter() - started:.2f} s)")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("-x", action="store_true", help="stop at the first failure")
    parser.add_argument("-k", default="", help="run only the tests whose id contains this text")
    parser.add_argument("--collect-only", action="store_true", help="list the test ids, run nothing")
    args = parser.parse_args(argv)
    sys.modules["pytest"] = make_module()
    counts = {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0, "collected": 0}
    started = time.perf_counter()
    for path in args.files:
        if not run_file(path, stop_first=args.x, keyword=args.k, counts=counts,
                        collect_only=args.collect_only):
            break
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    print(f"== {summary or 'no tests ran'} in {time.perf_counter() - started:.1f} s (without pytest) ==")
    ran = counts["passed"] or counts["skipped"] or counts["xfailed"] or counts["collected"]
    return 1 if counts["failed"] or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
