"""The chapter script (gpugrad.chapter) and the command line that runs it (python -m gpugrad)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gpugrad as gg
from gpugrad import chapter, cli

REPO_ROOT = Path(__file__).resolve().parents[1]

EXPECTED_LINES = [
    "y = 2*gg.dot(x, x): tensor(28.)  (expected 28: True)",
    "gradient of 2*x.x at x=[0,1,2,3]: tensor([ 0.,  4.,  8., 12.])  (expected 4x: True)",
    "after x.grad.zero_(), gradient of x.sum(): tensor([1., 1., 1., 1.])  (expected ones: True)",
    "y.backward(gradient=gg.ones_like(y)): tensor([0., 2., 4., 6.])  (expected 2x: True)",
    "u = y.detach(); gradient of (u * x).sum(): tensor([0., 1., 4., 9.])  (expected u: True)",
    "a = random.normal(random.PRNGKey(1), ()): tensor(-1.2550546)  (expected a scalar: True)",
    "gg.grad(f)(a): tensor(102400.)  (expected f(a) / a: True)",
    "a third backward(): RuntimeError  (expected RuntimeError: True)",
]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpugrad", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_chapter_main_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert chapter.main() == 0
    out = capsys.readouterr().out
    for line in EXPECTED_LINES:
        assert line in out
    assert "(expected" in out and ": False)" not in out
    assert f"OK: {out.count(': True)')}/{out.count(': True)')} checks passed" in out


def test_chapter_main_reports_failures(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def wrong() -> list[bool]:
        """A check that fails."""
        return [chapter._show("one is two", 1, "2", 1 == 2)]

    def broken() -> list[bool]:
        """An example that raises."""
        raise ValueError("boom")

    monkeypatch.setattr(chapter, "EXAMPLES", (chapter.worked_example, wrong, broken))
    assert chapter.main() == 1
    out = capsys.readouterr().out
    assert "one is two: 1  (expected 2: False)" in out
    assert "FAILED: broken raised ValueError: boom" in out
    assert "FAILED: 2/4 checks passed" in out


def test_cli_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["chapter"]) == 0
    assert EXPECTED_LINES[1] in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gpugrad {gg.__version__}"
    assert cli.main([]) == 2                  # no command: help on stderr, usage error
    assert cli.main(["no-such-command"]) == 2


def test_python_m_gpugrad_chapter() -> None:
    proc = _run_cli("chapter")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in EXPECTED_LINES:
        assert line in proc.stdout
    assert "checks passed" in proc.stdout and "FAILED" not in proc.stdout


def test_python_m_gpugrad_version() -> None:
    proc = _run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"gpugrad {gg.__version__}"
