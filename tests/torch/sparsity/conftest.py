"""Shared setup of the torch sparsity tests: the zoo and the digits CNN on the path, one thread."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_TORCH_TESTS = Path(__file__).resolve().parents[1]
for _p in (str(_TORCH_TESTS), str(_TORCH_TESTS / "training")):
    if _p not in sys.path:
        sys.path.insert(0, _p)  # `from models import build`, `from qat_digits import DigitsCNN`


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_data():
    from qat_digits import digits_tensors

    return digits_tensors()


@pytest.fixture(scope="session")
def digits_state(digits_data):
    """State dict of a DigitsCNN trained 2 epochs in float (each test builds its own model)."""
    from qat_digits import DigitsCNN, train

    torch.set_num_threads(1)
    x_tr, y_tr, _, _ = digits_data
    model = DigitsCNN()
    train(model, x_tr, y_tr, epochs=2, lr=1e-2)
    return {k: v.clone() for k, v in model.state_dict().items()}
