"""The torch backend: tracing into a Graph, hooks at graph positions, the wrapped model.

Light to import: submodules load on first use of the names below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "trace": "nncompress.torch.tracing",
    "HookManager": "nncompress.torch.hooks",
    "NNCFNetwork": "nncompress.torch.nncf_network",
    "wrap_model": "nncompress.torch.nncf_network",
    "unwrap_model": "nncompress.torch.nncf_network",
}

__all__ = ["HookManager", "NNCFNetwork", "trace", "unwrap_model", "wrap_model"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nncompress.torch' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from nncompress.torch.hooks import HookManager
    from nncompress.torch.nncf_network import NNCFNetwork, unwrap_model, wrap_model
    from nncompress.torch.tracing import trace
