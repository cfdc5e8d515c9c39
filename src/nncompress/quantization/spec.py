"""Immutable values describing quantizers and where they go.

A placement is a list of ``QuantizationPoint``: a ``TargetPoint`` (which tensor) and a
``QuantizerSpec`` (how). Backends turn target points into their own insertion mechanism
(torch hooks, ONNX QuantizeLinear/DequantizeLinear, OpenVINO FakeQuantize).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class TargetType(str, Enum):
    """Where on a node a quantizer (or a statistic collector) sits."""

    OUTPUT = "output"  # an output port of the node: shared by every consumer of that tensor
    INPUT = "input"  # one input port of the node: only this consumer sees the quantized value
    WEIGHT = "weight"  # the weight constant fed to the given input port


@dataclass(frozen=True, order=True)
class TargetPoint:
    """A tensor in the graph: ``node``'s ``port`` (input, output or weight port)."""

    type: TargetType
    node: str
    port: int = 0

    def __str__(self) -> str:
        return f"{self.node}:{self.type.value}{self.port}"


@dataclass(frozen=True)
class QuantizerSpec:
    """How one tensor is quantized.

    ``per_channel`` quantizes each slice along ``channel_axis`` with its own range. ``signed``
    None means "decide from the statistics" (a non-negative tensor gets an unsigned range).
    ``narrow_range`` drops the lowest level (-127..127 instead of -128..127 for 8 bits), which
    weights need on CPUs with VNNI to avoid overflow.
    """

    num_bits: int = 8
    mode: str = "symmetric"  # "symmetric" | "asymmetric"
    per_channel: bool = False
    channel_axis: int | None = None
    signed: bool | None = None
    narrow_range: bool = False
    half_range: bool = False  # overflow fix: use 7 bits of the 8 for weights of the first layers

    def __post_init__(self) -> None:
        if self.mode not in ("symmetric", "asymmetric"):
            raise ValueError(f"QuantizerSpec.mode must be 'symmetric' or 'asymmetric', got {self.mode!r}")
        if not 2 <= self.num_bits <= 16:
            raise ValueError(f"QuantizerSpec.num_bits must be in [2, 16], got {self.num_bits}")
        if self.per_channel and self.channel_axis is None:
            raise ValueError("QuantizerSpec: per_channel=True needs a channel_axis")

    def describe(self) -> str:
        gran = f"per-channel(axis={self.channel_axis})" if self.per_channel else "per-tensor"
        sign = {None: "auto-sign", True: "signed", False: "unsigned"}[self.signed]
        nr = ", narrow" if self.narrow_range else ""
        return f"{self.num_bits}-bit {self.mode} {gran} {sign}{nr}"


@dataclass(frozen=True)
class QuantizationPoint:
    """One quantizer: the tensor it quantizes, its spec, and which ops it serves.

    ``consumers`` lists the nodes (and their input ports) whose inputs read the quantized value;
    ``unified_group`` is shared by points that must use one scale (concat inputs, NPU
    elementwise inputs). ``reason`` records why it sits here (printed by the placement report).
    """

    target: TargetPoint
    spec: QuantizerSpec
    is_weight: bool
    consumers: tuple[tuple[str, int], ...] = ()
    unified_group: int | None = None
    reason: str = ""


@dataclass
class Placement:
    """The result of quantizer placement, with the decisions it made, printable for users."""

    points: list[QuantizationPoint] = field(default_factory=list)
    # tensor/node -> why it was not quantized (ignored scope, integer dtype, inside a fused group...)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def weight_points(self) -> list[QuantizationPoint]:
        return [p for p in self.points if p.is_weight]

    @property
    def activation_points(self) -> list[QuantizationPoint]:
        return [p for p in self.points if not p.is_weight]

    def unified_groups(self) -> dict[int, list[QuantizationPoint]]:
        groups: dict[int, list[QuantizationPoint]] = {}
        for p in self.points:
            if p.unified_group is not None:
                groups.setdefault(p.unified_group, []).append(p)
        return groups

    def report(self) -> str:
        """A readable table: every quantizer, its spec and reason; every skipped tensor and why."""
        lines = [
            f"Quantizers: {len(self.weight_points)} on weights, {len(self.activation_points)} on activations"
        ]
        for p in self.points:
            group = f" [unified #{p.unified_group}]" if p.unified_group is not None else ""
            lines.append(
                f"  {'W' if p.is_weight else 'A'} {p.target}  {p.spec.describe()}{group}  ({p.reason})"
            )
        if self.skipped:
            lines.append(f"Not quantized: {len(self.skipped)}")
            for what, why in self.skipped.items():
                lines.append(f"  - {what}: {why}")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict) -> Placement:
        """The inverse of ``to_dict`` (placements stored in ONNX metadata or OpenVINO rt_info)."""
        points = []
        for raw in data.get("points", []):
            t = raw["target"]
            points.append(
                QuantizationPoint(
                    target=TargetPoint(TargetType(t["type"]), t["node"], int(t["port"])),
                    spec=QuantizerSpec(**raw["spec"]),
                    is_weight=bool(raw["is_weight"]),
                    consumers=tuple((str(n), int(p)) for n, p in raw.get("consumers", [])),
                    unified_group=raw.get("unified_group"),
                    reason=raw.get("reason", ""),
                )
            )
        return cls(points=points, skipped=dict(data.get("skipped", {})))

    def to_dict(self) -> dict:
        """JSON-ready form (for dumping the placement next to the model)."""
        return {
            "points": [
                {
                    "target": {"type": p.target.type.value, "node": p.target.node, "port": p.target.port},
                    "is_weight": p.is_weight,
                    "spec": {
                        "num_bits": p.spec.num_bits,
                        "mode": p.spec.mode,
                        "per_channel": p.spec.per_channel,
                        "channel_axis": p.spec.channel_axis,
                        "signed": p.spec.signed,
                        "narrow_range": p.spec.narrow_range,
                    },
                    "consumers": [list(c) for c in p.consumers],
                    "unified_group": p.unified_group,
                    "reason": p.reason,
                }
                for p in self.points
            ],
            "skipped": dict(self.skipped),
        }
