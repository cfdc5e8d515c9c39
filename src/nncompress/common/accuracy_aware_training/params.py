"""The ``accuracy_aware_training`` section read into one immutable value, with clear errors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nncompress.config.effective import get_param
from nncompress.config.schema.accuracy_aware import AA_MODES
from nncompress.errors import ConfigError, NNCompressError

__all__ = ["AccuracyAwareTrainingError", "AccuracyAwareTrainingParams", "read_params", "check_accuracy"]

SECTION = "accuracy_aware_training"


class AccuracyAwareTrainingError(NNCompressError, ValueError):
    """A callback of the accuracy-aware loop returned something unusable (a NaN accuracy, ...)."""


@dataclass(frozen=True)
class AccuracyAwareTrainingParams:
    """Effective parameters (config value, else the schema default) of the accuracy-aware loop."""

    mode: str
    maximal_relative_accuracy_degradation: float | None
    maximal_absolute_accuracy_degradation: float | None
    maximal_total_epochs: int
    initial_training_phase_epochs: int
    initial_compression_rate_step: float
    compression_rate_step_reduction_factor: float
    lr_reduction_factor: float
    minimal_compression_rate_step: float
    patience_epochs: int

    def minimal_tolerable_accuracy(self, uncompressed_model_accuracy: float) -> float:
        """The lowest accuracy within the budget: ``acc - abs`` or ``acc * (1 - rel / 100)``."""
        if self.maximal_absolute_accuracy_degradation is not None:
            return uncompressed_model_accuracy - self.maximal_absolute_accuracy_degradation
        rel = self.maximal_relative_accuracy_degradation
        return uncompressed_model_accuracy * (1.0 - 0.01 * float(rel if rel is not None else 1.0))


def _validated(config: Mapping[str, Any]) -> Mapping[str, Any]:
    from nncompress.config.nncf_config import NNCFConfig

    if isinstance(config, NNCFConfig):
        return config  # validated when it was built
    if not isinstance(config, Mapping):
        raise ConfigError(f"expected an NNCFConfig or a dict, got {type(config).__name__}")
    return NNCFConfig.from_dict(dict(config))


def read_params(config: Mapping[str, Any]) -> AccuracyAwareTrainingParams:
    """The loop's parameters from a whole config; ConfigError when the section is missing."""
    config = _validated(config)
    if not isinstance(config.get(SECTION), Mapping):
        raise ConfigError(
            [
                (
                    SECTION,
                    "missing: the accuracy-aware training loop needs an 'accuracy_aware_training' "
                    f"section with 'mode' ({' or '.join(AA_MODES)}) and 'params' (an accuracy budget)",
                )
            ]
        )

    def param(name: str) -> Any:
        return get_param(config, f"{SECTION}.params.{name}")

    return AccuracyAwareTrainingParams(
        mode=get_param(config, f"{SECTION}.mode"),
        maximal_relative_accuracy_degradation=param("maximal_relative_accuracy_degradation"),
        maximal_absolute_accuracy_degradation=param("maximal_absolute_accuracy_degradation"),
        maximal_total_epochs=int(param("maximal_total_epochs")),
        initial_training_phase_epochs=int(param("initial_training_phase_epochs")),
        initial_compression_rate_step=float(param("initial_compression_rate_step")),
        compression_rate_step_reduction_factor=float(param("compression_rate_step_reduction_factor")),
        lr_reduction_factor=float(param("lr_reduction_factor")),
        minimal_compression_rate_step=float(param("minimal_compression_rate_step")),
        patience_epochs=int(param("patience_epochs")),
    )


def check_accuracy(value: Any, what: str) -> float:
    """``value`` as a finite float; AccuracyAwareTrainingError naming ``what`` otherwise."""
    if hasattr(value, "item") and callable(value.item):  # a 0-d tensor or numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AccuracyAwareTrainingError(f"{what} must be a number, got {type(value).__name__}: {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise AccuracyAwareTrainingError(f"{what} must be a finite number, got {value}")
    return value
