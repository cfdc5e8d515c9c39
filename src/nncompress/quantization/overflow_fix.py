"""Overflow fix: 7 of the 8 weight bits where INT8 kernels may saturate.

CPUs without VNNI multiply int8 x uint8 pairs into int16 before accumulating, which can
overflow; using half the weight range avoids it. NNCF applies it on the ANY and CPU targets only
(GPU and NPU kernels do not saturate), to every 8-bit weight or only to the first convolutions.
"""

from __future__ import annotations

from dataclasses import replace

from nncompress.graph import Graph, op_kinds
from nncompress.parameters import TargetDevice
from nncompress.quantization.spec import Placement

OVERFLOW_FIX_DEVICES = frozenset({TargetDevice.ANY, TargetDevice.CPU})
MODES = ("enable", "disable", "first_layer_only")
_FIRST_LAYER_KINDS = op_kinds.CONVOLUTION_KINDS - {op_kinds.CONVOLUTION_TRANSPOSE}


def first_convolutions(graph: Graph) -> set[str]:
    """Convolutions reached from the model inputs without passing another convolution."""
    first: set[str] = set()
    seen: set[str] = set()
    stack = [n.name for n in graph.input_nodes()]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if graph.node(name).kind in _FIRST_LAYER_KINDS:
            first.add(name)
            continue
        stack.extend(e.dst for e in graph.out_edges(name))
    return first


def apply_overflow_fix(
    placement: Placement, graph: Graph, fix: str | None, target_device: TargetDevice
) -> Placement:
    """Mark the chosen 8-bit weight quantizers ``half_range`` (in place; returns ``placement``)."""
    fix = str(getattr(fix, "value", fix) or "disable")
    if fix not in MODES:
        raise ValueError(f"overflow_fix must be one of {MODES}, got {fix!r}")
    if fix == "disable" or TargetDevice(target_device) not in OVERFLOW_FIX_DEVICES:
        return placement
    candidates = [p for p in placement.weight_points if p.spec.num_bits == 8]
    if fix == "first_layer_only":
        first = first_convolutions(graph)
        candidates = [p for p in candidates if p.target.node in first]
    chosen = {p.target for p in candidates}
    note = f"overflow_fix={fix}: 7 of 8 bits used ({TargetDevice(target_device).value} INT8 kernels may overflow)"
    placement.points = [
        replace(p, spec=replace(p.spec, half_range=True), reason=f"{p.reason}; {note}")
        if p.target in chosen
        else p
        for p in placement.points
    ]
    return placement
