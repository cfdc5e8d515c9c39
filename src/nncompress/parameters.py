"""Enumerations of the public API, named as in NNCF so ``import nncompress as nncf`` code runs."""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A str-valued enum that also accepts its value case-insensitively (``"cpu"`` -> CPU)."""

    @classmethod
    def _missing_(cls, value: object):
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower() or member.name.lower() == value.lower():
                    return member
        return None

    def __str__(self) -> str:
        return self.value


class TargetDevice(StrEnum):
    """The device whose quantization rules the placement follows."""

    ANY = "ANY"
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"
    CPU_SPR = "CPU_SPR"
    TRIAL = "TRIAL"

    @classmethod
    def _missing_(cls, value: object):
        if isinstance(value, str) and value.upper() == "VPU":  # NNCF 2.x name of NPU
            return cls.NPU
        return super()._missing_(value)


class QuantizationPreset(StrEnum):
    """``performance``: symmetric weights and activations; ``mixed``: asymmetric activations."""

    PERFORMANCE = "performance"
    MIXED = "mixed"


class QuantizationMode(StrEnum):
    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"


class ModelType(StrEnum):
    """Model family with placement rules of its own (``transformer``)."""

    TRANSFORMER = "transformer"


class DropType(StrEnum):
    """How ``quantize_with_accuracy_control`` measures the metric drop."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"
