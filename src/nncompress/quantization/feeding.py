"""Turning calibration items into arrays for the ONNX and OpenVINO backends (numpy only).

Both runtimes take numpy arrays of the input's exact dtype; items may be numpy arrays or torch
tensors (torch is only touched if the user already imported it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
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
