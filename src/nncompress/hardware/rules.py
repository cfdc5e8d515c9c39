"""Per-device quantization rules, loaded from the JSON files in ``nncompress/hardware/data``.

One file per device (``cpu.json``, ``gpu.json``, ``npu.json``, ``cpu_spr.json``, ``any.json``,
``trial.json``) in our own format:

``specs``
    named quantizer options: ``{"bits": 8, "modes": ["symmetric", "asymmetric"],
    "granularity": ["per_tensor", "per_channel"], "narrow_range": [true], "signed": true}``
    (``narrow_range`` lists the allowed values, the first is the default; ``signed`` forces the
    signedness, as NNCF's ``signedness_to_force``).
``ops``
    one entry per group of op kinds: ``{"kinds": [...], "activations": [spec names],
    "weights": [spec names], "inputs": [ports], "unified_scales": bool,
    "propagation": "through" | "split", "when": {attr: [values]}, "note": "..."}``.
    No ``activations``: the op's inputs are not quantized. ``inputs`` limits which input ports
    are activations to quantize. ``propagation: through``: a quantizer may move up through the
    op (it only moves or selects values); ``split``: a quantizer at its output goes to each of
    its inputs with one shared scale (Concat). ``when``: the entry applies only to ops whose
    attribute has one of the values; the first entry that applies wins.
``model_types``
    ``{"transformer": {"float_kinds": [...], "symmetric_activation_matmul": true}}``.
``extends``
    another device's file; ``specs`` are merged, an ``ops`` entry replaces every entry of the
    parent for the kinds it names, ``model_types`` replaces the parent's.

Fusion and ignored patterns are shared by all devices (``fusion.json``), each pattern listing the
devices it applies to. Example::

    rules = load_rules("CPU")
    rules.rule_for(conv_node).weights[0].bits  # 8
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from nncompress.errors import ConfigError, NNCompressError, QuantizationError
from nncompress.graph import op_kinds
from nncompress.graph.graph import Node
from nncompress.graph.patterns import Pattern, PatternLibrary
from nncompress.parameters import TargetDevice
from nncompress.quantization.spec import QuantizerSpec

PER_TENSOR = "per_tensor"
PER_CHANNEL = "per_channel"
PROPAGATION_STOP = "stop"
PROPAGATION_THROUGH = "through"
PROPAGATION_SPLIT = "split"

_DEVICE_FILES = {
    TargetDevice.ANY: "any.json",
    TargetDevice.CPU: "cpu.json",
    TargetDevice.GPU: "gpu.json",
    TargetDevice.NPU: "npu.json",
    TargetDevice.CPU_SPR: "cpu_spr.json",
    TargetDevice.TRIAL: "trial.json",
}
_FUSION_FILE = "fusion.json"


class HardwareRulesError(NNCompressError, ValueError):
    """A hardware rules or pattern data file is malformed (a bug in the package data)."""


@dataclass(frozen=True)
class SpecOption:
    """One quantizer configuration a device supports for an op's activations or weights."""

    name: str
    bits: int
    modes: tuple[str, ...]
    granularities: tuple[str, ...]
    narrow_range: tuple[bool, ...] = (False,)
    signed: bool | None = None

    def allows(
        self, *, bits: int | None = None, mode: str | None = None, per_channel: bool | None = None
    ) -> bool:
        if bits is not None and bits != self.bits:
            return False
        if mode is not None and mode not in self.modes:
            return False
        return per_channel is None or (PER_CHANNEL if per_channel else PER_TENSOR) in self.granularities

    def describe(self) -> str:
        return f"{self.bits}-bit {'/'.join(self.modes)} {'/'.join(self.granularities)}"


@dataclass(frozen=True)
class SpecRequest:
    """What the caller asks for; ``None`` fields take the chosen option's default."""

    num_bits: int = 8
    mode: str = "symmetric"
    per_channel: bool = False
    channel_axis: int | None = None
    signed: bool | None = None
    narrow_range: bool | None = None


@dataclass(frozen=True)
class OpRule:
    """How a device treats one op kind (see the module docstring for the fields)."""

    kind: str
    activations: tuple[SpecOption, ...] = ()
    weights: tuple[SpecOption, ...] = ()
    inputs: tuple[int, ...] | None = None
    unified_scales: bool = False
    propagation: str = PROPAGATION_STOP
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    note: str = ""

    @property
    def quantizes_activations(self) -> bool:
        return bool(self.activations)

    @property
    def quantizes_weights(self) -> bool:
        return bool(self.weights)

    def applies_to(self, node: Node) -> bool:
        return all(node.attrs.get(attr) in values for attr, values in self.when)

    def quantizes_input(self, port: int) -> bool:
        return self.quantizes_activations and (self.inputs is None or port in self.inputs)

    def describe(self) -> str:
        parts = []
        if self.when:
            parts.append("when " + ", ".join(f"{a} in {list(v)}" for a, v in self.when))
        if self.activations:
            ports = "" if self.inputs is None else f" (inputs {list(self.inputs)})"
            parts.append("activations " + ", ".join(o.describe() for o in self.activations) + ports)
        if self.weights:
            parts.append("weights " + ", ".join(o.describe() for o in self.weights))
        if self.unified_scales:
            parts.append("unified scales")
        if self.propagation != PROPAGATION_STOP:
            parts.append(f"propagation={self.propagation}")
        if self.note:
            parts.append(self.note)
        return f"{self.kind}: " + ("; ".join(parts) or "left in float")


@dataclass(frozen=True, eq=False)
class HardwareRules:
    """Everything placement needs to know about a target device; immutable.

    ``ops`` maps an op kind to its rules (first applicable wins). ``any_spec`` (TRIAL): any
    bits/mode/granularity asked for is accepted as given. ``fusion_patterns`` and
    ``ignored_patterns`` are already limited to this device (not yet to a model type).
    """

    device: TargetDevice
    description: str
    ops: Mapping[str, tuple[OpRule, ...]]
    weights_per_channel: bool = True
    any_spec: bool = False
    model_types: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fusion_patterns: tuple[Pattern, ...] = ()
    ignored_patterns: tuple[Pattern, ...] = ()

    def rule_for(self, node: Node) -> OpRule | None:
        """The rule that applies to ``node`` (its kind and attributes), or None for unlisted kinds."""
        for rule in self.ops.get(node.kind, ()):
            if rule.applies_to(node):
                return rule
        return None

    def float_kinds(self, model_type: str | None) -> frozenset[str]:
        """Op kinds whose inputs stay in float for ``model_type`` (e.g. Add, MVN for transformers)."""
        if model_type is None:
            return frozenset()
        return frozenset(self.model_types.get(str(model_type), {}).get("float_kinds", ()))

    def symmetric_activation_matmul(self, model_type: str | None) -> bool:
        if model_type is None:
            return False
        return bool(self.model_types.get(str(model_type), {}).get("symmetric_activation_matmul", False))

    def fusion_patterns_for(self, model_type: str | None = None) -> tuple[Pattern, ...]:
        mt = None if model_type is None else str(model_type)
        return tuple(p for p in self.fusion_patterns if p.model_types is None or (mt in p.model_types))

    def ignored_patterns_for(self, model_type: str | None = None) -> tuple[Pattern, ...]:
        mt = None if model_type is None else str(model_type)
        return tuple(p for p in self.ignored_patterns if p.model_types is None or (mt in p.model_types))

    def make_spec(
        self, rule: OpRule | None, request: SpecRequest, *, weights: bool
    ) -> tuple[QuantizerSpec, list[str]]:
        """The spec this device uses for ``request`` on an op with ``rule``, and notes on what it changed.

        Bits must be supported (else ``QuantizationError``); an unsupported mode or granularity
        falls back to the first the device allows for those bits, with a note.
        """
        options = () if rule is None else (rule.weights if weights else rule.activations)
        what = "weights" if weights else "activations"
        if self.any_spec or rule is None or not options:
            narrow = request.narrow_range
            if narrow is None:
                narrow = weights and request.mode == "symmetric"
            signed = request.signed
            if weights and signed is None and request.mode == "symmetric":
                signed = True
            per_channel = request.per_channel and request.channel_axis is not None
            return (
                QuantizerSpec(
                    num_bits=request.num_bits,
                    mode=request.mode,
                    per_channel=per_channel,
                    channel_axis=request.channel_axis if per_channel else None,
                    signed=signed,
                    narrow_range=narrow,
                ),
                [],
            )
        notes: list[str] = []
        same_bits = [o for o in options if o.bits == request.num_bits]
        if not same_bits:
            allowed = sorted({o.bits for o in options})
            raise QuantizationError(
                f"{self.device.value} rules do not allow {request.num_bits}-bit {what} for {rule.kind} "
                f"(allowed: {', '.join(f'{b}-bit' for b in allowed)}); use target_device='TRIAL' to try any spec"
            )
        option = next((o for o in same_bits if request.mode in o.modes), None)
        if option is None:
            option = same_bits[0]
            notes.append(
                f"mode {option.modes[0]}: {self.device.value} allows no {request.mode} {what} for {rule.kind}"
            )
        mode = request.mode if request.mode in option.modes else option.modes[0]
        per_channel = request.per_channel and request.channel_axis is not None
        if per_channel and PER_CHANNEL not in option.granularities:
            per_channel = False
            notes.append(f"per-tensor: {self.device.value} allows no per-channel {what} for {rule.kind}")
        elif not per_channel and PER_TENSOR not in option.granularities:
            if request.channel_axis is None:
                raise QuantizationError(
                    f"{self.device.value} rules need per-channel {what} for {rule.kind}, but no channel axis is known"
                )
            per_channel = True
            notes.append(f"per-channel: {self.device.value} requires per-channel {what} for {rule.kind}")
        narrow = request.narrow_range
        if narrow is None or narrow not in option.narrow_range:
            if narrow is not None:
                notes.append(f"narrow_range={option.narrow_range[0]} required by {self.device.value}")
            narrow = option.narrow_range[0]
        signed = option.signed if option.signed is not None else request.signed
        spec = QuantizerSpec(
            num_bits=option.bits,
            mode=mode,
            per_channel=per_channel,
            channel_axis=request.channel_axis if per_channel else None,
            signed=signed,
            narrow_range=narrow,
        )
        return spec, notes

    def summary(self) -> str:
        """Every op rule of this device, one per line (for printing)."""
        lines = [f"{self.device.value}: {self.description}"]
        for kind in sorted(self.ops):
            for rule in self.ops[kind]:
                lines.append("  " + rule.describe())
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def _read(name: str) -> dict[str, Any]:
    try:
        text = resources.files("nncompress.hardware").joinpath("data", name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HardwareRulesError(f"hardware data file '{name}' is missing from the package") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HardwareRulesError(f"hardware data file '{name}' is not valid JSON: {exc}") from None


def _known_kinds(fusion: Mapping[str, Any]) -> frozenset[str]:
    kinds = {v for k, v in vars(op_kinds).items() if k.isupper() and isinstance(v, str)}
    return frozenset(kinds | set(fusion.get("extra_kinds", ())))


_FILE_KEYS = {
    "format",
    "version",
    "device",
    "description",
    "extends",
    "defaults",
    "specs",
    "ops",
    "model_types",
}
_FILE_KEYS |= {"any_spec", "aliases"}
_OP_KEYS = {"kinds", "activations", "weights", "inputs", "unified_scales", "propagation", "when", "note"}
_SPEC_KEYS = {"bits", "modes", "granularity", "narrow_range", "signed"}


def _merged_file(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    data = _read(name)
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise HardwareRulesError(f"{name}: unknown keys {sorted(unknown)}")
    parent_name = data.get("extends")
    if not parent_name:
        return data
    if parent_name in seen:
        raise HardwareRulesError(f"{name}: 'extends' loops through {parent_name}")
    parent = _merged_file(f"{parent_name}.json", (*seen, parent_name))
    merged = dict(parent)
    merged.update({k: v for k, v in data.items() if k not in ("specs", "ops", "defaults")})
    merged["specs"] = {**parent.get("specs", {}), **data.get("specs", {})}
    merged["defaults"] = {**parent.get("defaults", {}), **data.get("defaults", {})}
    child_ops = data.get("ops", [])
    replaced = {k for entry in child_ops for k in entry.get("kinds", ())}
    kept = []
    for entry in parent.get("ops", []):
        rest = [k for k in entry["kinds"] if k not in replaced]
        if rest:
            kept.append({**entry, "kinds": rest})
    merged["ops"] = kept + list(child_ops)
    merged.pop("extends", None)
    return merged


def _spec_option(name: str, raw: Mapping[str, Any], where: str) -> SpecOption:
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise HardwareRulesError(f"{where}: spec '{name}' has unknown keys {sorted(unknown)}")
    modes = tuple(raw.get("modes", ("symmetric",)))
    grans = tuple(raw.get("granularity", (PER_TENSOR,)))
    if not set(modes) <= {"symmetric", "asymmetric"} or not set(grans) <= {PER_TENSOR, PER_CHANNEL}:
        raise HardwareRulesError(f"{where}: spec '{name}' has a bad mode or granularity")
    return SpecOption(
        name=name,
        bits=int(raw["bits"]),
        modes=modes,
        granularities=grans,
        narrow_range=tuple(bool(v) for v in raw.get("narrow_range", (False,))),
        signed=raw.get("signed"),
    )


def _build(device: TargetDevice) -> HardwareRules:
    name = _DEVICE_FILES[device]
    data = _merged_file(name)
    fusion = _read(_FUSION_FILE)
    known = _known_kinds(fusion)
    specs = {k: _spec_option(k, v, name) for k, v in data.get("specs", {}).items()}
    ops: dict[str, list[OpRule]] = {}
    for entry in data.get("ops", []):
        unknown = set(entry) - _OP_KEYS
        if unknown:
            raise HardwareRulesError(
                f"{name}: op entry {entry.get('kinds')} has unknown keys {sorted(unknown)}"
            )
        try:
            acts = tuple(specs[s] for s in entry.get("activations", ()))
            wts = tuple(specs[s] for s in entry.get("weights", ()))
        except KeyError as exc:
            raise HardwareRulesError(f"{name}: op entry {entry['kinds']} names unknown spec {exc}") from None
        propagation = entry.get("propagation", PROPAGATION_STOP)
        if propagation not in (PROPAGATION_STOP, PROPAGATION_THROUGH, PROPAGATION_SPLIT):
            raise HardwareRulesError(f"{name}: bad propagation '{propagation}'")
        when = tuple((k, tuple(v)) for k, v in sorted(entry.get("when", {}).items()))
        inputs = tuple(entry["inputs"]) if "inputs" in entry else None
        for kind in entry["kinds"]:
            if kind not in known:
                raise HardwareRulesError(f"{name}: unknown op kind '{kind}'")
            ops.setdefault(kind, []).append(
                OpRule(
                    kind=kind,
                    activations=acts,
                    weights=wts,
                    inputs=inputs,
                    unified_scales=bool(entry.get("unified_scales", False)),
                    propagation=propagation,
                    when=when,
                    note=entry.get("note", ""),
                )
            )
    for kind, rules in ops.items():  # unconditional entries last, so a 'when' entry can win
        rules.sort(key=lambda r: not r.when)
        if sum(1 for r in rules if not r.when) > 1:
            raise HardwareRulesError(f"{name}: several unconditional entries for '{kind}'")
    for mt, cfg in data.get("model_types", {}).items():
        bad = [k for k in cfg.get("float_kinds", ()) if k not in known]
        if bad:
            raise HardwareRulesError(f"{name}: model_types.{mt} names unknown op kinds {bad}")
    fusion_patterns, ignored_patterns = _load_patterns()
    dev = device.value
    return HardwareRules(
        device=device,
        description=data.get("description", ""),
        ops=MappingProxyType({k: tuple(v) for k, v in ops.items()}),
        weights_per_channel=bool(data.get("defaults", {}).get("weights_per_channel", True)),
        any_spec=bool(data.get("any_spec", False)),
        model_types=MappingProxyType(
            {k: MappingProxyType(dict(v)) for k, v in data.get("model_types", {}).items()}
        ),
        fusion_patterns=tuple(p for p in fusion_patterns if p.devices is None or dev in p.devices),
        ignored_patterns=tuple(p for p in ignored_patterns if p.devices is None or dev in p.devices),
    )


@lru_cache(maxsize=1)
def _load_patterns() -> tuple[tuple[Pattern, ...], tuple[Pattern, ...]]:
    """Fusion and ignored patterns of every device, expanded once."""
    fusion = _read(_FUSION_FILE)
    known = _known_kinds(fusion)
    lib = PatternLibrary.from_dict(fusion)
    out = (lib.expand("fusion"), lib.expand("ignored"))
    for pattern in (*out[0], *out[1]):
        for node in pattern.nodes:
            bad = sorted(node.kinds - known)
            if bad:
                raise HardwareRulesError(
                    f"{_FUSION_FILE}: pattern '{pattern.name}' names unknown op kinds {bad}"
                )
    return out


def valid_devices() -> list[str]:
    return [d.value for d in _DEVICE_FILES]


def _parse_device(target_device: TargetDevice | str) -> TargetDevice:
    if isinstance(target_device, TargetDevice):
        return target_device
    try:
        return TargetDevice(target_device)
    except ValueError:
        raise ConfigError(
            [
                (
                    "target_device",
                    f"unknown target device {target_device!r}; valid: {', '.join(valid_devices())} "
                    "(VPU is accepted as the old name of NPU)",
                )
            ]
        ) from None


@cache
def _load(device: TargetDevice) -> HardwareRules:
    return _build(device)


def load_rules(target_device: TargetDevice | str = TargetDevice.ANY) -> HardwareRules:
    """The quantization rules of ``target_device`` ("CPU", "GPU", "NPU" or "VPU", "CPU_SPR", "ANY", "TRIAL").

    >>> load_rules("VPU").device
    <TargetDevice.NPU: 'NPU'>

    Raises ``ConfigError`` for an unknown device, listing the valid ones.
    """
    return _load(_parse_device(target_device))


def describe_devices(devices: Sequence[TargetDevice | str] | None = None) -> str:
    """A readable listing of several devices' rules (``nncompress`` CLI and docs)."""
    return "\n\n".join(load_rules(d).summary() for d in (devices or valid_devices()))
