from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import optional
import pytest

import gpugrad as gg


@pytest.fixture(autouse=True)
def _seed():
    gg.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def torch():
    """PyTorch, for a differential test; the test skips (with the shared reason) without it."""
    return optional.need("torch")


# CI runs the property-based tests on a fixed set of examples, so a landing never depends on
# luck; locally each run explores new ones (pass --hypothesis-seed=N to repeat one).
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:      # hypothesis is a test extra; the suites that need it import it themselves
    pass


# ----------------------------------------------------------------------------- the skip summary

def _skip_reason(report: pytest.TestReport) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per skip reason (how many tests, which files), instead of one per skipped test."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
    if not skipped:
        return
    files: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    for report in skipped:
        reason = _skip_reason(report)
        counts[reason] += 1
        files[reason].add(report.nodeid.split("::")[0].removeprefix("tests/"))
    terminalreporter.section("skipped tests, by reason", sep="-")
    for reason in sorted(counts, key=lambda r: (-counts[r], r)):
        where = sorted(files[reason])
        shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
        terminalreporter.write_line(f"{counts[reason]:5d}  {reason}  [{shown}]")
