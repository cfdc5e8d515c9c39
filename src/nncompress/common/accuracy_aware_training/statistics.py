"""What the accuracy-aware loop reports: its own outcome, and compression statistics as JSON.

``statistics_to_dict(ctrl.statistics())`` turns the per-algorithm statistics objects into plain
JSON values (dataclass fields plus public properties), so every epoch can be written as one JSON
line without each algorithm having to provide a serializer.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nncompress.api.compression import NNCFStatistics, Statistics

__all__ = ["TrainingLoopStatistics", "statistics_to_dict", "to_jsonable"]

logger = logging.getLogger("nncompress")


@dataclass
class TrainingLoopStatistics(Statistics):
    """The loop's result (NNCF's fields, plus whether the accuracy criterion was met).

    ``accuracy_drop`` is absolute (metric units), ``relative_accuracy_drop`` in percent of the
    uncompressed accuracy, ``accuracy_budget`` is ``compressed - minimal tolerable accuracy``
    (negative: the budget is exceeded).
    """

    uncompressed_accuracy: float
    compression_rate: float
    compressed_accuracy: float
    accuracy_drop: float
    relative_accuracy_drop: float
    accuracy_budget: float
    criterion_met: bool = False

    def to_str(self) -> str:
        return "\n".join(
            [
                f"Uncompressed model accuracy: {self.uncompressed_accuracy:.4f}",
                f"Compression rate: {self.compression_rate:.4f}",
                f"Compressed model accuracy: {self.compressed_accuracy:.4f}",
                f"Absolute accuracy drop: {self.accuracy_drop:.4f}",
                f"Relative accuracy drop: {self.relative_accuracy_drop:.2f}%",
                f"Accuracy budget: {self.accuracy_budget:.4f}",
                f"Accuracy criterion met: {'yes' if self.criterion_met else 'no'}",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` as JSON data: numbers (NaN/inf as None), strings, lists and string-keyed dicts.

    Numpy scalars and arrays, tuples, sets, enums and dataclasses are converted; anything else
    becomes its ``str``. Deep nesting is cut at 20 levels (as a string).
    """
    if _depth > 20:
        return str(value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _depth + 1) if not isinstance(value, int) else int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays/scalars, tensors
        try:
            return to_jsonable(value.tolist(), _depth + 1)
        except Exception:  # a tensor on a device that cannot be read, for example
            return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _object_dict(value, _depth + 1)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v, _depth + 1) for v in items]
    return str(value)


def _public_properties(obj: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for cls in reversed(type(obj).__mro__):
        for name, attr in vars(cls).items():
            if isinstance(attr, property) and not name.startswith("_"):
                found[name] = attr
    values: dict[str, Any] = {}
    for name in sorted(found):
        try:
            values[name] = getattr(obj, name)
        except Exception as exc:  # best effort: one broken property must not lose the others
            logger.debug("statistics property %s.%s failed: %s", type(obj).__name__, name, exc)
    return values


def _object_dict(obj: Any, depth: int) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        data = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    else:
        data = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    data.update({k: v for k, v in _public_properties(obj).items() if k not in data})
    return {str(k): to_jsonable(v, depth) for k, v in data.items()}


def _one_statistics_dict(stats: Any) -> dict[str, Any]:
    to_dict = getattr(stats, "to_dict", None)
    if callable(to_dict):
        result = to_jsonable(to_dict())
        if isinstance(result, dict):
            return result
    if dataclasses.is_dataclass(stats) or hasattr(stats, "__dict__"):
        return _object_dict(stats, 0)
    return {"text": stats.to_str() if isinstance(stats, Statistics) else str(stats)}


def statistics_to_dict(statistics: NNCFStatistics | Statistics | None) -> dict[str, dict[str, Any]]:
    """``{algorithm name: {field: JSON value}}`` for ``ctrl.statistics()``.

    A single (non-container) ``Statistics`` is returned under the key ``"statistics"``.
    """
    if statistics is None:
        return {}
    if isinstance(statistics, NNCFStatistics):
        return {name: _one_statistics_dict(stats) for name, stats in statistics}
    return {"statistics": _one_statistics_dict(statistics)}
