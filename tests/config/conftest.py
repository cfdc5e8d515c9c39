"""Shared fixtures of the configuration tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

# A small valid config every test can start from; each test gets its own copy.
BASE_CONFIG: dict[str, Any] = {
    "model": "resnet18",
    "input_info": {"sample_size": [1, 3, 32, 32]},
    "compression": [
        {"algorithm": "quantization"},
        {"algorithm": "filter_pruning", "params": {"pruning_target": 0.3}},
    ],
}


@pytest.fixture
def base_config() -> dict[str, Any]:
    return copy.deepcopy(BASE_CONFIG)
