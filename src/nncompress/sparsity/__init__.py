"""Backend-neutral parts of weight sparsity: parameters, schedules, thresholds, statistics.

The torch algorithms (``magnitude_sparsity``, ``rb_sparsity``, ``const_sparsity``) live in
``nncompress.torch.sparsity``; everything here is numpy only.
"""

from nncompress.sparsity.params import SPARSITY_ALGORITHMS, SparsityParams, check_sparsity_level, section_path
from nncompress.sparsity.schedule import (
    SPARSITY_SCHEDULERS,
    AdaptiveSparsityScheduler,
    ExponentialSparsityScheduler,
    MultiStepSparsityScheduler,
    PolynomialSparsityScheduler,
    SparsityScheduler,
    exponential_level,
    make_sparsity_scheduler,
    multistep_level,
    polynomial_level,
)
from nncompress.sparsity.selection import WEIGHT_IMPORTANCE, importance, select_threshold, select_thresholds
from nncompress.sparsity.statistics import (
    ConstSparsityStatistics,
    LayerThreshold,
    MagnitudeSparsityStatistics,
    RBSparsityStatistics,
    SparsifiedLayerSummary,
    SparsifiedModelStatistics,
)

__all__ = [
    "SPARSITY_ALGORITHMS",
    "SPARSITY_SCHEDULERS",
    "WEIGHT_IMPORTANCE",
    "AdaptiveSparsityScheduler",
    "ConstSparsityStatistics",
    "ExponentialSparsityScheduler",
    "LayerThreshold",
    "MagnitudeSparsityStatistics",
    "MultiStepSparsityScheduler",
    "PolynomialSparsityScheduler",
    "RBSparsityStatistics",
    "SparsifiedLayerSummary",
    "SparsifiedModelStatistics",
    "SparsityParams",
    "SparsityScheduler",
    "check_sparsity_level",
    "exponential_level",
    "importance",
    "make_sparsity_scheduler",
    "multistep_level",
    "polynomial_level",
    "section_path",
    "select_threshold",
    "select_thresholds",
]
