import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
# One thread: tiny tensors are far slower with two threads on a loaded 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield
