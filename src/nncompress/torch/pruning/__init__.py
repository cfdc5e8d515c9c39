"""Filter pruning of torch models that really removes channels.

- During training (``create_compressed_model`` with a ``filter_pruning`` section): binary masks on
  the weights, a schedule, statistics, and ``ctrl.strip()`` / ``ctrl.export_model()`` producing a
  physically smaller model (see :mod:`.controller`).
- At once: ``prune_filters(model, example_input, section)`` returns a pruned copy and its record.
- Saving without pickling: ``record.save("pruning.json")`` with the ``state_dict``; later
  ``apply_pruning_record(MyModel(), PruningRecord.load("pruning.json"))`` and ``load_state_dict``.
- Extension: ``register_layer_pruner(MyLayer, LayerPruner(...))`` for custom layer types.

Light to import: submodules load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncompress._lazy import lazy_exports

_LAZY = {
    "FilterPruningBuilder": "nncompress.torch.pruning.builder",
    "FilterPruningController": "nncompress.torch.pruning.controller",
    "FilterPruningScheduler": "nncompress.torch.pruning.controller",
    "TorchFilterPruning": "nncompress.torch.pruning.engine",
    "apply_pruning_record": "nncompress.torch.pruning.engine",
    "prune_filters": "nncompress.torch.pruning.engine",
    "ChannelMask": "nncompress.torch.pruning.masks",
    "LayerPruner": "nncompress.torch.pruning.layers",
    "register_layer_pruner": "nncompress.torch.pruning.layers",
    "PruningRecord": "nncompress.pruning.record",
}

__all__ = [
    "ChannelMask",
    "FilterPruningBuilder",
    "FilterPruningController",
    "FilterPruningScheduler",
    "LayerPruner",
    "PruningRecord",
    "TorchFilterPruning",
    "apply_pruning_record",
    "prune_filters",
    "register_layer_pruner",
]


__getattr__, __dir__ = lazy_exports("nncompress.torch.pruning", globals(), _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from nncompress.pruning.record import PruningRecord
    from nncompress.torch.pruning.builder import FilterPruningBuilder
    from nncompress.torch.pruning.controller import FilterPruningController, FilterPruningScheduler
    from nncompress.torch.pruning.engine import TorchFilterPruning, apply_pruning_record, prune_filters
    from nncompress.torch.pruning.layers import LayerPruner, register_layer_pruner
    from nncompress.torch.pruning.masks import ChannelMask
