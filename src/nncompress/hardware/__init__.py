"""Per-device quantization rules as data: which ops get quantizers, with which specs, and which ops fuse.

>>> from nncompress.hardware import load_rules
>>> rules = load_rules("GPU")
>>> print(rules.summary())  # doctest: +ELLIPSIS
GPU: ...
"""

from nncompress.hardware.rules import (
    HardwareRules,
    HardwareRulesError,
    OpRule,
    SpecOption,
    SpecRequest,
    describe_devices,
    load_rules,
    valid_devices,
)

__all__ = [
    "HardwareRules",
    "HardwareRulesError",
    "OpRule",
    "SpecOption",
    "SpecRequest",
    "describe_devices",
    "load_rules",
    "valid_devices",
]
