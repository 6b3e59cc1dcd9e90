import numpy as np
import pytest

import gpugrad as gg


@pytest.fixture(autouse=True)
def _seed():
    gg.manual_seed(0)
    np.random.seed(0)
