"""Advanced PTQ parameters, with NNCF's names (``nncf.quantization.advanced_parameters``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum

from nncompress.parameters import QuantizationMode, StrEnum


class OverflowFix(StrEnum):
    """Use 7 of the 8 weight bits on CPUs without VNNI, where int8 dot products may saturate."""

    ENABLE = "enable"
    DISABLE = "disable"
    FIRST_LAYER = "first_layer_only"


class RangeEstimatorType(StrEnum):
    """Named range estimators (see ``range_estimators``); None keeps the algorithm's default."""

    MIN_MAX = "min_max"
    MEAN_MIN_MAX = "mean_min_max"
    THREESIGMA = "threesigma"
    PERCENTILE = "percentile"
    MEAN_PERCENTILE = "mean_percentile"
    MIXED_MIN_MAX = "mixed_min_max"


@dataclass
class QuantizationParameters:
    """Overrides of the quantizer spec for weights or activations; None keeps the device default."""

    num_bits: int | None = None
    mode: QuantizationMode | str | None = None
    signedness_to_force: bool | None = None
    per_channel: bool | None = None
    narrow_range: bool | None = None


@dataclass
class RangeEstimatorParameters:
    """Which estimator computes the quantization range, and its percentile bounds."""

    type: RangeEstimatorType | str | None = None
    min_percentile: float = 0.1
    max_percentile: float = 99.9


@dataclass
class AdvancedSmoothQuantParameters:
    """SmoothQuant migration strength per op kind; a negative value disables it."""

    matmul: float = 0.95
    convolution: float = -1.0


@dataclass
class AdvancedBiasCorrectionParameters:
    apply_for_all_nodes: bool = False
    threshold: float | None = None


@dataclass
class AdvancedQuantizationParameters:
    """Knobs below the main ``quantize`` arguments; defaults match NNCF's behaviour except
    ``overflow_fix`` (off: all 8 weight bits; see docs/ptq.md)."""

    overflow_fix: OverflowFix | str | None = None  # None: disable (NNCF 3.x: first_layer_only)
    quantize_outputs: bool = False
    inplace_statistics: bool = True
    disable_channel_alignment: bool = True
    disable_bias_correction: bool = False
    batchwise_statistics: bool | None = None
    activations_quantization_params: QuantizationParameters | None = None
    weights_quantization_params: QuantizationParameters | None = None
    activations_range_estimator_params: RangeEstimatorParameters = field(
        default_factory=RangeEstimatorParameters
    )
    weights_range_estimator_params: RangeEstimatorParameters = field(default_factory=RangeEstimatorParameters)
    bias_correction_params: AdvancedBiasCorrectionParameters = field(
        default_factory=AdvancedBiasCorrectionParameters
    )
    smooth_quant_alphas: AdvancedSmoothQuantParameters = field(default_factory=AdvancedSmoothQuantParameters)
    smooth_quant_alpha: float | None = None
    backend_params: dict = field(default_factory=dict)
    # ours: progress bars during calibration and bias correction
    show_progress: bool = True
    # ours: True quantizes the ops after the last weighted op as NNCF does (placement.py docstring)
    quantize_tail: bool = False
    # ours: True quantizes the inputs of Power ops and of elementwise ops fed by one, as NNCF does
    quantize_powers: bool = False


# accuracy control (NNCF keeps these here too: nncf.quantization.advanced_parameters)
class RestoreMode(Enum):
    """How an op goes back to float (NNCF's ``RestoreMode``).

    ``ACTIVATIONS_AND_WEIGHTS``: its input activation and weight quantizers are removed (the only
    mode supported). NNCF's ``ONLY_ACTIVATIONS`` (int8 weights kept) is refused with a clear error.
    """

    ACTIVATIONS_AND_WEIGHTS = "activations_and_weights"
    ONLY_ACTIVATIONS = "only_activations"


@dataclass
class AdvancedAccuracyRestorerParameters:
    """NNCF's accuracy-restorer options.

    ``max_num_iterations``: most revert attempts (an undone revert counts). ``ranking_subset_size``:
    validation items used to rank ops (None: all of them, at most 300). ``intermediate_model_dir``:
    where the fully quantized model (before any revert) is saved, as ``intermediate_model.onnx``
    / ``.xml`` (torch: ``intermediate_model.pt``, the state dict). ``restore_mode``: see
    ``RestoreMode``. ``tune_hyperparams`` is not supported; ``num_ranking_workers`` is accepted
    and ignored (ranking runs sequentially: each candidate is one re-quantization).
    """

    max_num_iterations: int = sys.maxsize
    tune_hyperparams: bool = False
    ranking_subset_size: int | None = None
    num_ranking_workers: int | None = None
    intermediate_model_dir: str | None = None
    restore_mode: RestoreMode = RestoreMode.ACTIVATIONS_AND_WEIGHTS
