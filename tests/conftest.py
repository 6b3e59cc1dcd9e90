import os

import numpy as np
import pytest

import gpugrad as gg


@pytest.fixture(autouse=True)
def _seed():
    gg.manual_seed(0)
    np.random.seed(0)


# CI runs the property-based tests on a fixed set of examples, so a landing never depends on
# luck; locally each run explores new ones (pass --hypothesis-seed=N to repeat one).
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:      # hypothesis is a test extra; the suites that need it import it themselves
    pass
