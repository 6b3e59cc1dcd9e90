"""Mutation testing: bugs put in on purpose, and whether the test suite catches them.

Not collected by pytest and not run in CI (it is slow). Two parts:

    python tests/mutation/run.py planted                # issue 18's table of planted bugs (~3 min)
    python tests/mutation/run.py planted --only sgd-dampening-python
    python tests/mutation/run.py mutmut engine optim    # mutmut's mutants of core modules, and the score
    python tests/mutation/run.py mutmut --list          # the modules and the tests run against each

``planted``: each bug is an explicit patch (a file, the text it replaces, the replacement),
applied to a copy of the working tree; the tests chosen for it run there, *without PyTorch*
(as CI's first step, the README's command, runs them), and the bug is caught when they fail.
The unpatched copy runs the same tests first: a selection that fails without the bug proves
nothing.

``mutmut``: mutmut 3 mutates every undecorated function of the chosen modules (its
operators: numbers, comparisons, boolean operators, arguments, return values...) in a
``mutants/`` copy and runs, for each mutant, the tests of that module's selection that
reach the mutated function. The score is killed / (killed + survived); mutants with no
covering test count as survived. docs/testing.md records the last run and the survivors
judged harmless. mutmut skips decorated functions, so the ops' forward and VJP rules
(``@defop``, ``@op.vjp``) are not mutated: the planted table and the registry's gradcheck
cover them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Planted:
    """One planted bug: ``old`` (which must occur exactly once in ``path``) becomes ``new``."""
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


PLANTED = [
    Planted("gradcheck-always-true", "gg.testing.gradcheck always returns True", "gpugrad/testing.py",
            "    positions = _checked_inputs(inputs)\n    rng = np.random.default_rng(seed)\n",
            "    return True\n"
            "    positions = _checked_inputs(inputs)\n    rng = np.random.default_rng(seed)\n",
            ("tests/test_testing.py",)),
    Planted("gradcheck-tolerance-10x", "gradcheck's tolerances 10x looser", "gpugrad/testing.py",
            "RTOL = 1e-5\nATOL = 1e-8\n", "RTOL = 1e-4\nATOL = 1e-7\n", ("tests/test_testing.py",)),
    Planted("fused-activation-0d", "a fused activation backward returns shape (1,) for a 0-d input",
            "gpugrad/cuda/kernels.py",
            "        L.launch(L.kernel(name, g.dtype), g.size, (g, saved, dx, np.int64(g.size), "
            "_scalar(g.dtype, alpha)))\n    return dx\n",
            "        L.launch(L.kernel(name, g.dtype), g.size, (g, saved, dx, np.int64(g.size), "
            "_scalar(g.dtype, alpha)))\n    return dx if dx.ndim else dx.reshape(1)\n",
            ("tests/test_kernels_cpu.py", "-k", "activation or zero_dimensional")),
    Planted("fused-cross-entropy-loss-shape", "the fused cross-entropy loss returns (1,) instead of ()",
            "gpugrad/cuda/kernels.py",
            "        loss = xp.asarray(loss).astype(logits.dtype)\n",
            "        loss = xp.asarray(loss).astype(logits.dtype)\n"
            "        loss = loss if reduction == \"none\" else loss.reshape(1)\n",
            ("tests/test_kernels_cpu.py", "-k", "cross_entropy")),
    Planted("linalg-norm-shape", "linalg.norm returns (1,) instead of ()", "gpugrad/ops/linalg.py",
            "        return _norm2(x, axis=axes, keepdims=keepdims)\n    a = ew.absolute(x)\n",
            "        out = _norm2(x, axis=axes, keepdims=keepdims)\n"
            "        return out.reshape(1) if out.ndim == 0 else out\n    a = ew.absolute(x)\n",
            ("tests/test_tensor.py", "tests/test_parity_core.py", "-k", "norm")),
    Planted("cross-entropy-ignore-index", "F.cross_entropy drops a non-default ignore_index",
            "gpugrad/nn/functional.py",
            "        return ops.softmax_cross_entropy(x, target, ignore_index=ignore_index,\n",
            "        return ops.softmax_cross_entropy(x, target, ignore_index=-100,\n",
            ("tests/test_nn_functional.py", "tests/test_nn.py", "tests/test_parity_nn.py", "-k",
             "cross_entropy or CrossEntropy")),
    Planted("sgd-dampening-python", "SGD skips dampening (Python path), without PyTorch installed",
            "gpugrad/optim/functional.py",
            "            if dampening != 0:                           # (no Nesterov then",
            "            if False:                                    # (no Nesterov then",
            ("tests/test_optim.py", "tests/test_optim_inplace.py")),
    Planted("tanh-vjp", "tanh's VJP wrong", "gpugrad/ops/elementwise.py",
            "    return (g - g * out * out,)\n", "    return (g - g * out,)\n",
            ("tests/test_registry_gradcheck.py", "-k", "tanh")),
    Planted("sgd-kernel-dampening", "the SGD kernel's dampening", "kernels/optimizer.cu",
            "        b = momentum * gg::load(buf, i) + (A(1) - dampening) * d;\n",
            "        b = momentum * gg::load(buf, i) + d;\n",
            ("tests/test_kernels_cpu.py", "-k", "sgd")),
    Planted("in-place-check-off", "the in-place check off", "gpugrad/versions.py",
            '    """Raise if an array saved by ``node`` was changed in place after the node saved it."""\n',
            '    """Raise if an array saved by ``node`` was changed in place after the node saved it."""\n'
            "    return\n",
            ("tests/test_engine.py", "tests/test_reliability.py", "tests/test_optim_inplace.py")),
]


# ----------------------------------------------------------------------------- a copy to break

def _tree_copy() -> Path:
    """The working tree's files (tracked and untracked, not ignored) in a temporary directory."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    dest = Path(tempfile.mkdtemp(prefix="gg-mutation-"))
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    # without PyTorch: `import torch` raises ModuleNotFoundError and find_spec("torch") is None
    (dest / ".no-torch").mkdir()
    (dest / ".no-torch" / "sitecustomize.py").write_text('import sys\n\nsys.modules["torch"] = None\n')
    return dest


def _pytest(tree: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """Run the tests in ``tree`` (its gpugrad, not the installed one) without PyTorch."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / ".no-torch"), str(tree)]), "CI": "1"}
    env.pop("GPUGRAD_EMULATE_CUDA", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=tree, env=env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines() or [proc.stderr.strip()[-300:]]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return proc.returncode, (failed[0][:150] + " ... " if failed else "") + lines[-1]


def _apply(tree: Path, bug: Planted) -> None:
    path = tree / bug.path
    text = path.read_text(encoding="utf-8")
    if text.count(bug.old) != 1:
        raise SystemExit(f"{bug.name}: the text to replace occurs {text.count(bug.old)} times in {bug.path} "
                         "(the code moved: update the patch in tests/mutation/run.py)")
    path.write_text(text.replace(bug.old, bug.new), encoding="utf-8")


def planted(only: list[str]) -> int:
    bugs = [b for b in PLANTED if not only or b.name in only]
    unknown = set(only) - {b.name for b in PLANTED}
    if unknown:
        raise SystemExit(f"unknown planted bugs {sorted(unknown)}; known: {[b.name for b in PLANTED]}")
    print(f"{'planted bug':<64} {'caught?':<8} first failure (tests run without PyTorch)")
    missed = 0
    for bug in bugs:
        tree = _tree_copy()
        try:
            code, summary = _pytest(tree, bug.tests)
            if code != 0:
                print(f"{bug.what:<64} {'-':<8} the unpatched tests fail (exit {code}): {summary}")
                missed += 1
                continue
            _apply(tree, bug)
            started = time.perf_counter()
            code, summary = _pytest(tree, bug.tests)
            caught = code == 1                  # tests failed; 2-5 are usage/collection problems
            missed += not caught
            print(f"{bug.what:<64} {'yes' if caught else 'NO':<8} {summary} "
                  f"[{time.perf_counter() - started:.0f} s, {' '.join(bug.tests)}]", flush=True)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
    print(f"\n{len(bugs) - missed} of {len(bugs)} planted bugs caught")
    return 1 if missed else 0


# ----------------------------------------------------------------------------- mutmut

# module -> (the files mutmut mutates, the tests that run against their mutants)
CORE = {
    # the engine's in-place checks and anomaly mode are tested in test_reliability.py; the registry's
    # dispatch to vmap in test_vmap_registry.py, its forward values in test_registry_reference.py
    "engine": (["gpugrad/engine.py", "gpugrad/versions.py"],
               ["tests/test_engine.py", "tests/test_optim_inplace.py", "tests/test_reliability.py"]),
    "registry": (["gpugrad/ops/registry.py", "gpugrad/ops/util.py"],
                 ["tests/test_registry_gradcheck.py", "tests/test_registry_reference.py",
                  "tests/test_vmap_registry.py", "tests/test_engine.py"]),
    "optim": (["gpugrad/optim/functional.py", "gpugrad/optim/sgd.py", "gpugrad/optim/adam.py"],
              ["tests/test_optim.py", "tests/test_optim_inplace.py"]),
    "kernels": (["gpugrad/cuda/kernels.py"], ["tests/test_kernels_cpu.py"]),
    "serialization": (["gpugrad/serialization.py"], ["tests/test_serialization.py"]),
    "testing": (["gpugrad/testing.py"], ["tests/test_testing.py"]),
}


def _mutmut_config(files: list[str], tests: list[str]) -> str:
    quoted = ", ".join(f'"{t}"' for t in tests)
    sources = ", ".join(f'"{f}"' for f in files)
    return ("\n[tool.mutmut]\n"
            'source_paths = ["gpugrad"]\n'
            f"only_mutate = [{sources}]\n"
            f"pytest_add_cli_args_test_selection = [{quoted}]\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
            'also_copy = ["kernels", "benchmarks", "docs", "README.md"]\n')


def _results(tree: Path) -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=tree,
                          capture_output=True, text=True)
    found: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        if ":" in line:
            name, status = line.rsplit(":", 1)
            found.setdefault(status.strip(), []).append(name.strip())
    return found


def run_mutmut(modules: list[str], max_children: int) -> int:
    unknown = set(modules) - set(CORE)
    if unknown or not modules:
        raise SystemExit(f"name one or more of {sorted(CORE)} (got {sorted(unknown) or 'none'})")
    print(f"{'module':<14} {'killed':>7} {'survived':>9} {'no tests':>9} {'other':>6} {'score':>7}")
    for module in modules:
        files, tests = CORE[module]
        tree = _tree_copy()
        try:
            with (tree / "pyproject.toml").open("a", encoding="utf-8") as f:
                f.write(_mutmut_config(files, tests))
            env = {**os.environ, "PYTHONPATH": str(tree / ".no-torch"), "CI": "1"}
            env.pop("GPUGRAD_EMULATE_CUDA", None)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
                           cwd=tree, env=env, capture_output=True, text=True)
            found = _results(tree)
            killed = len(found.get("killed", [])) + len(found.get("timeout", []))
            survived = found.get("survived", [])
            untested = found.get("no tests", [])
            other = sum(len(v) for k, v in found.items() if k not in ("killed", "timeout", "survived",
                                                                         "no tests"))
            total = killed + len(survived) + len(untested)
            score = f"{100 * killed / total:.0f}%" if total else "-"
            print(f"{module:<14} {killed:>7} {len(survived):>9} {len(untested):>9} {other:>6} {score:>7}"
                  f"   [{time.perf_counter() - started:.0f} s]", flush=True)
            for name in survived + untested:
                diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=tree,
                                      capture_output=True, text=True).stdout
                changed = [ln for ln in diff.splitlines() if ln.startswith(("-", "+"))
                           and not ln.startswith(("---", "+++"))]
                status = "survived" if name in survived else "no tests"
                print(f"    {status}: {name}: {' | '.join(changed)[:200]}")
        finally:
            shutil.rmtree(tree, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("planted", help="the table of planted bugs: caught or not")
    p.add_argument("--only", nargs="*", default=[], help="names of planted bugs (default: all)")
    m = sub.add_parser("mutmut", help="mutmut's mutants of core modules, and the mutation score")
    m.add_argument("modules", nargs="*", default=[])
    m.add_argument("--list", action="store_true", help="the modules, their files and their tests")
    m.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel")
    args = parser.parse_args(argv)
    if args.command == "planted":
        return planted(args.only)
    if args.list:
        for name, (files, tests) in CORE.items():
            print(f"{name:<14} {' '.join(files)}\n{'':<14} tests: {' '.join(tests)}")
        return 0
    return run_mutmut(args.modules, args.max_children)


if __name__ == "__main__":
    sys.exit(main())
