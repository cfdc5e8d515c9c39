"""Accuracy-aware training (NNCF's ``nncf.common.accuracy_aware_training``): fine-tune a compressed
model until its accuracy is within a budget, optionally searching the highest compression level
that stays within it. Backend-neutral: nothing here imports a framework until a torch model's
checkpoint is saved.

    from nncompress.common.accuracy_aware_training import create_accuracy_aware_training_loop

    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=acc)
    model = loop.run(model, train_epoch_fn, validate_fn, configure_optimizers_fn)

See ``docs/accuracy_aware.md``; the log folder format is described in :mod:`.log_writer`.
"""

from __future__ import annotations

from nncompress.common.accuracy_aware_training.log_writer import AccuracyAwareLogWriter
from nncompress.common.accuracy_aware_training.params import (
    AccuracyAwareTrainingError,
    AccuracyAwareTrainingParams,
)
from nncompress.common.accuracy_aware_training.runner import (
    AccuracyAwareTrainingRunner,
    AdaptiveCompressionLevelTrainingRunner,
)
from nncompress.common.accuracy_aware_training.statistics import (
    TrainingLoopStatistics,
    statistics_to_dict,
)
from nncompress.common.accuracy_aware_training.training_loop import (
    AccuracyAwareTrainingMode,
    AdaptiveCompressionTrainingLoop,
    BaseEarlyExitCompressionTrainingLoop,
    EarlyExitCompressionTrainingLoop,
    TrainingLoop,
    create_accuracy_aware_training_loop,
    find_adaptive_controller,
)

__all__ = [
    "AccuracyAwareLogWriter",
    "AccuracyAwareTrainingError",
    "AccuracyAwareTrainingMode",
    "AccuracyAwareTrainingParams",
    "AccuracyAwareTrainingRunner",
    "AdaptiveCompressionLevelTrainingRunner",
    "AdaptiveCompressionTrainingLoop",
    "BaseEarlyExitCompressionTrainingLoop",
    "EarlyExitCompressionTrainingLoop",
    "TrainingLoop",
    "TrainingLoopStatistics",
    "create_accuracy_aware_training_loop",
    "find_adaptive_controller",
    "statistics_to_dict",
]
