"""Accuracy-aware training tests: one torch thread per module that uses torch (tiny batches)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny batches: more threads only add synchronization (and stall on a busy machine)
    if "torch" not in sys.modules:  # modules without torch do not pay for importing it
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
