"""The record of removed channels: plain JSON that replays pruning onto a fresh model.

A pruned model is saved as its ``state_dict`` plus this record, never by pickling the model::

    {
      "format": "nncompress.pruning_record",
      "version": 1,
      "model": "ResNet",
      "layers": {
        "layer1.0.conv1": {"out": {"size": 8, "keep": [0, 2, 3, 6]}},
        "layer1.0.bn1":   {"out": {"size": 8, "keep": [0, 2, 3, 6]}},
        "layer1.0.conv2": {"in":  {"size": 8, "keep": [0, 2, 3, 6]}}
      }
    }

Keys are module paths (``Node.module_scope``); ``out`` is the layer's output channels (filters,
BatchNorm features, embedding dimensions), ``in`` its input channels (input features of a
linear layer, after a flatten). ``size`` is the count before pruning, checked on replay; ``keep``
the kept indices, ascending. Layers left whole are not listed. A backend replays a record with
its own function (torch: ``nncompress.torch.pruning.apply_pruning_record``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.errors import PruningError
from nncompress.pruning.channels import ChannelDependencies

__all__ = ["RECORD_FORMAT", "RECORD_VERSION", "AxisKeep", "PruningRecord", "build_record"]

RECORD_FORMAT = "nncompress.pruning_record"
RECORD_VERSION = 1
AXES = ("out", "in")


@dataclass(frozen=True)
class AxisKeep:
    """Kept indices along one axis of a layer, out of ``size``."""

    size: int
    keep: tuple[int, ...]

    @property
    def removed(self) -> int:
        return self.size - len(self.keep)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "keep": list(self.keep)}


@dataclass
class PruningRecord:
    """Module path -> axis ("out"/"in") -> kept channels (see the module docstring)."""

    layers: dict[str, dict[str, AxisKeep]] = field(default_factory=dict)
    model: str = ""

    # -- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "model": self.model,
            "layers": {
                path: {axis: keep.to_dict() for axis, keep in axes.items()}
                for path, axes in self.layers.items()
            },
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningRecord:
        """Validate and read a record; ``PruningError`` names the first problem and its place."""
        if not isinstance(data, Mapping) or data.get("format") != RECORD_FORMAT:
            raise PruningError(f'not a pruning record: expected a dict with "format": "{RECORD_FORMAT}"')
        if data.get("version") != RECORD_VERSION:
            raise PruningError(
                f"pruning record version {data.get('version')!r} is not supported (expected 1)"
            )
        layers: dict[str, dict[str, AxisKeep]] = {}
        raw = data.get("layers")
        if not isinstance(raw, Mapping):
            raise PruningError("pruning record: 'layers' must be a dict of module path -> axes")
        for path, axes in raw.items():
            if not isinstance(axes, Mapping) or not axes or set(axes) - set(AXES):
                raise PruningError(
                    f"pruning record: layer '{path}' must map 'out' and/or 'in' to kept channels"
                )
            layers[str(path)] = {axis: _axis_keep(path, axis, entry) for axis, entry in axes.items()}
        return cls(layers, str(data.get("model", "")))

    @classmethod
    def from_json(cls, text: str) -> PruningRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PruningError(f"pruning record is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> PruningRecord:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    # -- summary --------------------------------------------------------------------------------
    def removed_channels(self) -> dict[str, int]:
        """Module path -> channels removed on its output axis (filters)."""
        return {path: axes["out"].removed for path, axes in self.layers.items() if "out" in axes}

    def __len__(self) -> int:
        return len(self.layers)


def _axis_keep(path: str, axis: str, entry: Any) -> AxisKeep:
    where = f"pruning record: layer '{path}' axis '{axis}'"
    if not isinstance(entry, Mapping) or "size" not in entry or "keep" not in entry:
        raise PruningError(f'{where}: expected {{"size": int, "keep": [int, ...]}}')
    size = entry["size"]
    keep = entry["keep"]
    if not isinstance(size, int) or size < 1 or not isinstance(keep, list):
        raise PruningError(f"{where}: 'size' must be a positive int and 'keep' a list")
    if not keep:
        raise PruningError(f"{where}: keeps no channel; a layer needs at least one")
    if not all(isinstance(i, int) and 0 <= i < size for i in keep) or sorted(set(keep)) != keep:
        raise PruningError(f"{where}: 'keep' must be ascending distinct indices in [0, {size})")
    return AxisKeep(size, tuple(keep))


def _kept(units: np.ndarray, keep: np.ndarray) -> AxisKeep:
    mask = (units < 0) | keep[np.maximum(units, 0)]
    return AxisKeep(len(units), tuple(int(i) for i in np.flatnonzero(mask)))


def build_record(deps: ChannelDependencies, keep: np.ndarray, model: str = "") -> PruningRecord:
    """The record of ``keep`` (a mask over ``deps``' units), keyed by module path.

    Ops of one module (a module called twice) must agree; layers left whole are omitted.
    """
    layers: dict[str, dict[str, AxisKeep]] = {}
    for lay in deps.layers.values():
        axes: dict[str, AxisKeep] = {}
        out_units = lay.channel_units if lay.channel_units is not None else lay.out_units
        if out_units is not None:
            axes["out"] = _kept(out_units, keep)
        if lay.in_units is not None:
            axes["in"] = _kept(lay.in_units, keep)
        axes = {a: k for a, k in axes.items() if k.removed}
        if not axes:
            continue
        for axis, k in axes.items():
            if not k.keep:
                raise PruningError(
                    f"pruning would leave '{lay.module_scope or lay.node}' without {axis}put channels"
                )
        path = lay.module_scope
        if not path:
            raise PruningError(f"'{lay.node}' is not a module of its own and cannot be recorded for pruning")
        previous = layers.get(path)
        if previous is not None and previous != axes:
            raise PruningError(f"module '{path}' is called several times with different channels pruned")
        layers[path] = axes
    return PruningRecord(layers, model or deps.graph.name)
