"""Shared setup of the training-time compression tests: the zoo (``models``) on the path, digits data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TORCH_TESTS = str(Path(__file__).resolve().parent.parent)
if _TORCH_TESTS not in sys.path:
    sys.path.insert(0, _TORCH_TESTS)  # `from models import build, ZOO`


@pytest.fixture(scope="session")
def digits():
    from qat_digits import digits_tensors

    return digits_tensors()


@pytest.fixture(scope="session")
def fp32_digits_state(digits):
    """State dict of a DigitsCNN trained in float (shared: each test builds its own model)."""
    from qat_digits import DigitsCNN, train

    x_tr, y_tr, _, _ = digits
    model = DigitsCNN()
    train(model, x_tr, y_tr, epochs=4, lr=1e-2)
    return {k: v.clone() for k, v in model.state_dict().items()}
