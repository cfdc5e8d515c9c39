"""Readers of the small JSON files a report renders (formats in the package docstring).

Each reader returns plain Python data and raises :class:`ReportInputError` naming the file, the
line (JSON lines) and the JSON path of the first wrong value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nncompress.errors import NNCompressError

__all__ = [
    "LATENCY_JSON",
    "QUANTIZER_RANGES_JSON",
    "STATS_JSONL",
    "SUMMARY_JSON",
    "ReportInputError",
    "read_latency",
    "read_quantizer_ranges",
    "read_stats_jsonl",
    "read_summary",
]

STATS_JSONL = "compression_stats.jsonl"
SUMMARY_JSON = "summary.json"
LATENCY_JSON = "latency.json"
QUANTIZER_RANGES_JSON = "quantizer_ranges.json"


class ReportInputError(NNCompressError, ValueError):
    """A file to report on is unreadable or not in its documented format."""


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _load_json(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc


def _need(cond: bool, path: Path, where: str, message: str) -> None:
    if not cond:
        raise ReportInputError(f"{path}: {where}: {message}")


def read_stats_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a ``compression_stats.jsonl`` (blank lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportInputError(f"{path}: line {number}: not valid JSON: {exc.msg}") from exc
        where = f"line {number}"
        _need(isinstance(rec, dict), path, where, f"expected a JSON object, got {type(rec).__name__}")
        _need(
            isinstance(rec.get("epoch"), int) and not isinstance(rec.get("epoch"), bool),
            path,
            f"{where}: epoch",
            f"expected an integer, got {rec.get('epoch')!r}",
        )
        for key in ("compression_rate", "accuracy", "accuracy_drop"):
            value = rec.get(key)
            _need(
                value is None or _is_number(value),
                path,
                f"{where}: {key}",
                f"expected a number or null, got {value!r}",
            )
        _need(
            isinstance(rec.get("is_best", False), bool),
            path,
            f"{where}: is_best",
            f"expected true or false, got {rec.get('is_best')!r}",
        )
        _need(
            isinstance(rec.get("statistics", {}), dict),
            path,
            f"{where}: statistics",
            "expected an object keyed by algorithm",
        )
        records.append(rec)
    return records


def read_summary(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = _load_json(path)
    _need(isinstance(data, dict), path, "<root>", f"expected a JSON object, got {type(data).__name__}")
    _need(
        isinstance(data.get("title", ""), str), path, "title", f"expected a string, got {data.get('title')!r}"
    )
    return data


def read_latency(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = _load_json(path)
    _need(isinstance(data, dict), path, "<root>", f"expected a JSON object, got {type(data).__name__}")
    models = data.get("models")
    _need(isinstance(models, list) and bool(models), path, "models", "expected a non-empty list of models")
    for i, m in enumerate(models):
        where = f"models[{i}]"
        _need(isinstance(m, dict), path, where, "expected an object")
        _need(
            isinstance(m.get("name"), str), path, f"{where}.name", f"expected a string, got {m.get('name')!r}"
        )
        _need(
            _is_number(m.get("median_ms")) and m["median_ms"] >= 0,
            path,
            f"{where}.median_ms",
            f"expected a non-negative number, got {m.get('median_ms')!r}",
        )
        if "group" in m:
            _need(
                isinstance(m["group"], str), path, f"{where}.group", f"expected a string, got {m['group']!r}"
            )
        if "throughput" in m:
            _need(
                _is_number(m["throughput"]),
                path,
                f"{where}.throughput",
                f"expected a number, got {m['throughput']!r}",
            )
    _need(isinstance(data.get("unit", "ms"), str), path, "unit", "expected a string")
    return data


def _range_values(value: Any) -> list[float] | None:
    if _is_number(value):
        return [float(value)]
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return [float(v) for v in value]
    return None


def read_quantizer_ranges(path: str | Path) -> dict[str, Any]:
    """The ranges, with ``low`` and ``high`` always lists (one value per channel)."""
    path = Path(path)
    data = _load_json(path)
    _need(isinstance(data, dict), path, "<root>", f"expected a JSON object, got {type(data).__name__}")
    quantizers = data.get("quantizers")
    _need(isinstance(quantizers, list) and bool(quantizers), path, "quantizers", "expected a non-empty list")
    out = []
    for i, q in enumerate(quantizers):
        where = f"quantizers[{i}]"
        _need(isinstance(q, dict), path, where, "expected an object")
        _need(
            isinstance(q.get("name"), str), path, f"{where}.name", f"expected a string, got {q.get('name')!r}"
        )
        kind = q.get("kind", "activation")
        _need(
            kind in ("weight", "activation"),
            path,
            f"{where}.kind",
            f"expected 'weight' or 'activation', got {kind!r}",
        )
        low, high = _range_values(q.get("low")), _range_values(q.get("high"))
        _need(
            low is not None,
            path,
            f"{where}.low",
            f"expected a number or a list of numbers, got {q.get('low')!r}",
        )
        _need(
            high is not None,
            path,
            f"{where}.high",
            f"expected a number or a list of numbers, got {q.get('high')!r}",
        )
        assert low is not None and high is not None
        _need(len(low) == len(high), path, where, f"'low' has {len(low)} values but 'high' has {len(high)}")
        _need(all(a <= b for a, b in zip(low, high)), path, where, "'low' is above 'high'")
        out.append({**q, "kind": kind, "low": low, "high": high})
    return {**data, "quantizers": out}
