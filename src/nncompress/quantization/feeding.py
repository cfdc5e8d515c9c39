"""Turning calibration items into arrays for the ONNX and OpenVINO backends (numpy only).

Both runtimes take numpy arrays of the input's exact dtype; items may be numpy arrays or torch
tensors (torch is only touched if the user already imported it).
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from nncompress.errors import DatasetError


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view of an array-like or a torch tensor."""
    if "torch" in sys.modules:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
    return np.asarray(value)


def cast_input(value: Any, want: np.dtype | None, position: int, name: str, backend: str) -> np.ndarray:
    """``value`` as the dtype the model input expects: float to float and int to int are safe
    casts; anything else is an error naming the item and the input."""
    arr = to_numpy(value)
    if want is None or arr.dtype == want:
        return arr
    if (arr.dtype.kind == "f" and want.kind == "f") or (arr.dtype.kind in "iub" and want.kind in "iu"):
        return arr.astype(want)
    raise DatasetError(
        f"Calibration item {position}: input {name} is {arr.dtype}, the {backend} model expects {want}"
    )


def describe_item(item: Any) -> str:
    """A short description of a calibration item for error messages."""
    if isinstance(item, Mapping):
        return "dict with keys " + ", ".join(map(str, list(item)[:8]))
    if isinstance(item, (tuple, list)):
        return f"{type(item).__name__} of {len(item)}"
    arr = to_numpy(item)
    return f"array of shape {arr.shape} and dtype {arr.dtype}"


def statistics_workers() -> int:
    """How many calibration items a statistics pass runs at once: 2 with two cores or more.

    A statistics model reads dozens of intermediate tensors; its small reductions and layout
    changes do not spread over the cores of one inference, two items at a time do (EfficientNet-
    Lite0 with its statistics on 2 cores: ONNX Runtime 11.7 -> 7.8 ms per item, OpenVINO with
    two CPU streams 4.5 -> 3.4 s for the whole PTQ). The results do not depend on which item runs
    beside which: ``run_in_order`` hands them back in item order, and the quantized models were
    bit-identical to one-at-a-time runs (EfficientNet-Lite0, DigitsCNN and silero-vad, OpenVINO).
    """
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def threads_per_worker(workers: int) -> int:
    """Intra-op threads for each of ``workers`` concurrent inferences: the cores, shared."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def max_in_flight(workers: int) -> int:
    """Items ``run_in_order`` has started and not yet handed back, at most (one reusable buffer
    per slot: item ``i`` may use slot ``i % max_in_flight(workers)``)."""
    return 2 * workers


def run_in_order(
    items: Iterable[Any], run: Callable[[int, Any], Any], workers: int
) -> Iterator[tuple[int, Any, Any]]:
    """``(index, item, run(index, item))`` for every item, in item order, computed ``workers`` at
    a time in threads (the runtimes release the GIL while they infer). At most
    ``max_in_flight(workers)`` items are in flight, and item ``i`` is handed back before item
    ``i + max_in_flight(workers)`` starts, so memory does not grow with the number of items; the consumer sees the
    results in the same order as a sequential loop, so the statistics are the same."""
    if workers <= 1:
        for i, item in enumerate(items):
            yield i, item, run(i, item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="nncompress-stats") as pool:
        pending: deque = deque()
        for i, item in enumerate(items):
            pending.append((i, item, pool.submit(run, i, item)))
            if len(pending) >= max_in_flight(workers):
                j, done_item, future = pending.popleft()
                yield j, done_item, future.result()
        while pending:
            j, done_item, future = pending.popleft()
            yield j, done_item, future.result()
