"""Which weights a magnitude level zeroes: importance, and thresholds chosen globally or per layer.

NNCF's rule: the importances are sorted, the threshold is the value at index
``int((n - 1) * level)``, and a weight is kept when its importance is strictly above the
threshold. So a level ``l`` zeroes ``floor((n - 1) * l) + 1`` of ``n`` weights (more on ties):
within one weight of ``l * n``. Level 0 zeroes nothing (NNCF would zero the smallest weight).

- ``normed_abs`` importance is ``|w| / ||w||_2`` of the layer, so one global threshold compares
  layers of different scales; ``abs`` is ``|w|``.
- ``global`` mode: one threshold over the importances of every layer: the model's sparsified
  weights reach the level, layers differ. ``local`` mode: one threshold per layer: every layer
  reaches the level.

Example::

    w = [np.array([0.1, -0.5, 0.2, 0.9]), np.array([3.0, -0.05])]
    thresholds = select_thresholds([importance(x, "abs") for x in w], 0.5, "global")
    [(importance(x, "abs") > t) for x, t in zip(w, thresholds)]  # 3 of 6 weights zeroed
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nncompress.errors import ConfigError

__all__ = ["WEIGHT_IMPORTANCE", "importance", "select_threshold", "select_thresholds"]

WEIGHT_IMPORTANCE = ("normed_abs", "abs")


def importance(weight: np.ndarray, kind: str = "normed_abs") -> np.ndarray:
    """Importance of every weight: ``|w|`` or ``|w| / ||w||_2`` (``normed_abs``)."""
    w = np.abs(np.asarray(weight, dtype=np.float64))
    if kind == "abs":
        return w
    if kind == "normed_abs":
        norm = float(np.sqrt(np.sum(w * w)))
        return w / norm if norm > 0 else w
    raise ConfigError(
        [("params.weight_importance", f"unknown weight importance {kind!r}; use 'abs' or 'normed_abs'")]
    )


def select_threshold(values: np.ndarray, level: float) -> float:
    """The threshold zeroing ``level`` of ``values`` (kept: ``values > threshold``); -inf at level 0."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if level <= 0.0 or flat.size == 0:
        return float("-inf")
    k = int((flat.size - 1) * level)
    return float(np.partition(flat, k)[k])


def select_thresholds(importances: Sequence[np.ndarray], level: float, mode: str = "global") -> list[float]:
    """One threshold per layer: the same for all (``global``) or each layer's own (``local``)."""
    if mode == "global":
        if not importances:
            return []
        t = select_threshold(np.concatenate([np.asarray(v).reshape(-1) for v in importances]), level)
        return [t] * len(importances)
    if mode == "local":
        return [select_threshold(v, level) for v in importances]
    raise ConfigError([("params.sparsity_level_setting_mode", f"must be 'global' or 'local', got {mode!r}")])
