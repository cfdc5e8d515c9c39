"""The torch backend: tracing into a Graph, hooks at graph positions, the wrapped model.

Light to import: submodules load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncompress._lazy import lazy_exports

_LAZY = {
    "trace": "nncompress.torch.tracing",
    "HookManager": "nncompress.torch.hooks",
    "NNCFNetwork": "nncompress.torch.nncf_network",
    "wrap_model": "nncompress.torch.nncf_network",
    "unwrap_model": "nncompress.torch.nncf_network",
    # training-time compression (NNCF 2.x API)
    "create_compressed_model": "nncompress.torch.model_creation",
    "nncf_model_input": "nncompress.torch.model_creation",
    "register_default_init_args": "nncompress.torch.initialization",
    "PTInitializingDataLoader": "nncompress.torch.initialization",
    "load_state": "nncompress.torch.checkpoint",
    # compression_lr_multiplier as optimizer parameter groups
    "get_parameter_groups": "nncompress.torch.optim",
    # filter pruning that removes channels
    "prune_filters": "nncompress.torch.pruning",
    "apply_pruning_record": "nncompress.torch.pruning",
}

__all__ = [
    "HookManager",
    "NNCFNetwork",
    "PTInitializingDataLoader",
    "apply_pruning_record",
    "create_compressed_model",
    "get_parameter_groups",
    "load_state",
    "nncf_model_input",
    "prune_filters",
    "register_default_init_args",
    "trace",
    "unwrap_model",
    "wrap_model",
]


__getattr__, __dir__ = lazy_exports("nncompress.torch", globals(), _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from nncompress.torch.hooks import HookManager
    from nncompress.torch.initialization import PTInitializingDataLoader, register_default_init_args
    from nncompress.torch.model_creation import create_compressed_model, nncf_model_input
    from nncompress.torch.nncf_network import NNCFNetwork, unwrap_model, wrap_model
    from nncompress.torch.optim import get_parameter_groups
    from nncompress.torch.tracing import trace
