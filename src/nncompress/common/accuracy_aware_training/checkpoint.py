"""How the loop keeps and restores its best model, without importing a framework up front.

- A PyTorch module (detected only if ``torch`` is already imported): ``torch.save`` of
  ``{"state_dict", "compression_state", "epoch", "best_metric_val", "current_val_metric_value",
  "compression_rate"}`` to ``<name>.pth``, as NNCF does; loading restores the ``state_dict``
  (masks and quantizer ranges are buffers in it) and the controller state (so
  ``ctrl.compression_rate`` matches the restored model).
- Any other model: a deep copy kept in memory (and pickled to ``<name>.pkl`` when it can be);
  loading returns that copy.
- With the user's ``load_checkpoint_fn(model, path)``, loading calls it instead and returns ``model``.
"""

from __future__ import annotations

import copy
import logging
import pickle
import sys
from pathlib import Path
from typing import Any

from nncompress.api.compression import CompressionAlgorithmController
from nncompress.errors import CompressionStateError

__all__ = [
    "CheckpointIO",
    "InMemoryCheckpointIO",
    "TorchCheckpointIO",
    "checkpoint_io_for",
    "is_torch_module",
]

logger = logging.getLogger("nncompress")


def is_torch_module(model: Any) -> bool:
    """Whether ``model`` is a ``torch.nn.Module`` (False, without importing torch, if it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


class CheckpointIO:
    """Saves a model with its compression state to ``path`` and restores it."""

    suffix = ""

    def save(
        self, model: Any, ctrl: CompressionAlgorithmController, path: Path, extra: dict[str, Any]
    ) -> None:
        raise NotImplementedError

    def load(self, model: Any, ctrl: CompressionAlgorithmController, path: Path) -> Any:
        """The restored model (``model`` itself, or a copy for in-memory checkpoints)."""
        raise NotImplementedError


class TorchCheckpointIO(CheckpointIO):
    suffix = ".pth"

    def save(
        self, model: Any, ctrl: CompressionAlgorithmController, path: Path, extra: dict[str, Any]
    ) -> None:
        import torch

        checkpoint = {
            "state_dict": model.state_dict(),
            "compression_state": ctrl.get_compression_state(),
            **extra,
        }
        torch.save(checkpoint, path)

    def load(self, model: Any, ctrl: CompressionAlgorithmController, path: Path) -> Any:
        import torch

        # our own file, holding the compression state (plain Python values), not only tensors
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CompressionStateError(f"{path}: not an accuracy-aware checkpoint (no 'state_dict')")
        model.load_state_dict(checkpoint["state_dict"])
        state = checkpoint.get("compression_state", {}).get(ctrl.CONTROLLER_STATE)
        if state is not None:
            ctrl.load_state(state)
        return model


class InMemoryCheckpointIO(CheckpointIO):
    suffix = ".pkl"

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Any, dict[str, Any]]] = {}

    def save(
        self, model: Any, ctrl: CompressionAlgorithmController, path: Path, extra: dict[str, Any]
    ) -> None:
        kept = copy.deepcopy(model)
        state = copy.deepcopy(ctrl.get_state())
        self._kept[str(path)] = (kept, state)
        try:
            with open(path, "wb") as f:
                pickle.dump({"model": kept, "ctrl_state": state, **extra}, f)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            Path(path).unlink(missing_ok=True)
            logger.warning(
                "Cannot pickle the model to %s (%s); the checkpoint is kept in memory only", path, exc
            )

    def load(self, model: Any, ctrl: CompressionAlgorithmController, path: Path) -> Any:
        if str(path) not in self._kept:
            raise CompressionStateError(f"{path}: no checkpoint was kept under this name in this run")
        kept, state = self._kept[str(path)]
        ctrl.load_state(copy.deepcopy(state))
        return copy.deepcopy(kept)


def checkpoint_io_for(model: Any) -> CheckpointIO:
    """The default checkpoint mechanism for ``model`` (see the module docstring)."""
    return TorchCheckpointIO() if is_torch_module(model) else InMemoryCheckpointIO()
