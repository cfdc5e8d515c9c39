"""``load_state``: NNCF 2.x's helper for loading checkpoints into a compressed model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from nncompress.errors import CompressionStateError


def load_state(
    model: nn.Module,
    state_dict_to_load: Mapping[str, torch.Tensor],
    is_resume: bool = False,
    keys_to_ignore: Iterable[str] | None = None,
) -> int:
    """Load ``state_dict_to_load`` into ``model``; returns how many tensors were loaded.

    ``is_resume=True`` (resuming a compressed checkpoint) requires every key of the model and of
    the checkpoint to match, and names the ones that do not. ``is_resume=False`` (starting
    compression from an uncompressed checkpoint) loads what matches by name and shape: the
    compression parameters the checkpoint lacks keep their initialized values. A ``module.``
    prefix left by DataParallel/DDP is removed.
    """
    ignore = set(keys_to_ignore or ())
    state = {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in state_dict_to_load.items()
        if k not in ignore
    }
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and k not in ignore)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if is_resume and (missing or unexpected or mismatched):
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}")
        raise CompressionStateError("Cannot resume from this checkpoint; " + "; ".join(parts))
    loadable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    model.load_state_dict(loadable, strict=False)
    return len(loadable)
