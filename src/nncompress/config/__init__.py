"""Configuration: the NNCF-compatible ``NNCFConfig``, its JSON Schema and effective-value helpers.

Backend-neutral: importing this package never imports a deep-learning framework.
"""

from __future__ import annotations

from nncompress.config.effective import EffectiveParam, effective_params, get_param
from nncompress.config.extra_structs import NNCFExtraConfigStruct
from nncompress.config.nncf_config import NNCFConfig
from nncompress.config.schema import ALGORITHM_NAMES
from nncompress.config.validation import find_problems, validate_config

__all__ = [
    "ALGORITHM_NAMES",
    "EffectiveParam",
    "NNCFConfig",
    "NNCFExtraConfigStruct",
    "effective_params",
    "find_problems",
    "get_param",
    "validate_config",
]
