"""Shared setup of the knowledge-distillation tests: small models and scikit-learn's digits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from kd_models import DigitsNet, TwoHeads  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """``(x, y)``: the first 512 standardized digits as ``N x 1 x 8 x 8`` float32, labels int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.images[:512].astype(np.float32)
    x = (x - x.mean()) / x.std()
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(data.target[:512].astype(np.int64))


@pytest.fixture(scope="session")
def digits_net():
    return DigitsNet


@pytest.fixture(scope="session")
def two_heads():
    return TwoHeads
