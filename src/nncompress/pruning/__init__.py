"""Filter pruning, backend-neutral: channel groups, importance, schedules, FLOPs, records.

Works on :class:`~nncompress.graph.Graph` and numpy arrays only; a backend (``nncompress.torch.
pruning``) inserts masks during training and cuts the layers when the model is stripped.

- :func:`analyze_channels` -> :class:`ChannelDependencies`: which filters are pruned together
  (residual adds, squeeze-excitation gates, depthwise convolutions, concatenations, flatten into a
  linear layer) and which are left out, and why (``deps.describe()``).
- :func:`unit_importance` (``L1``, ``L2``, ``geometric_median``) and :func:`select_channels` /
  :func:`select_for_flops`: which channels to remove for a pruning level or a FLOPs reduction.
- :func:`make_schedule`: the level per epoch (``baseline``, ``exponential``, ``exponential_with_bias``).
- :func:`count_cost`: FLOPs and parameters, before and after.
- :class:`PruningRecord`: the JSON record of removed channels that replays onto a fresh model.
- :class:`EvolutionSearch` / :class:`LeGRParams`: LeGR's search of per-layer ranking coefficients
  (``learned_ranking``), with :func:`save_ranking_coeffs` / :func:`load_ranking_coeffs`.
"""

from __future__ import annotations

from nncompress.pruning.channels import (
    CHANNEL_RULES,
    FIXED,
    ChannelDependencies,
    ChannelMap,
    LayerChannels,
    PruningGroup,
    analyze_channels,
    register_channel_rule,
)
from nncompress.pruning.cost import LayerCost, ModelCost, count_cost
from nncompress.pruning.importance import (
    IMPORTANCE_CRITERIA,
    filter_importance,
    register_importance,
    unit_importance,
)
from nncompress.pruning.legr import EvolutionSearch, LeGRParams, load_ranking_coeffs, save_ranking_coeffs
from nncompress.pruning.record import AxisKeep, PruningRecord, build_record
from nncompress.pruning.schedule import SCHEDULES, PruningSchedule, make_schedule
from nncompress.pruning.selection import ChannelSelection, check_level, select_channels, select_for_flops
from nncompress.pruning.statistics import FilterPruningStatistics, LayerPruningInfo, pruning_statistics

__all__ = [
    "CHANNEL_RULES",
    "FIXED",
    "IMPORTANCE_CRITERIA",
    "SCHEDULES",
    "AxisKeep",
    "ChannelDependencies",
    "ChannelMap",
    "ChannelSelection",
    "EvolutionSearch",
    "FilterPruningStatistics",
    "LayerChannels",
    "LayerCost",
    "LayerPruningInfo",
    "LeGRParams",
    "ModelCost",
    "PruningGroup",
    "PruningRecord",
    "PruningSchedule",
    "analyze_channels",
    "build_record",
    "check_level",
    "count_cost",
    "filter_importance",
    "load_ranking_coeffs",
    "make_schedule",
    "pruning_statistics",
    "register_channel_rule",
    "register_importance",
    "save_ranking_coeffs",
    "select_channels",
    "select_for_flops",
    "unit_importance",
]
