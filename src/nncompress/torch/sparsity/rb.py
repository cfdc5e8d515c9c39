"""``rb_sparsity``: regularization-based sparsity with learned stochastic masks (NNCF's RB).

Every sparsified weight gets trainable logits (:class:`~nncompress.torch.sparsity.masks.RBMask`),
which the user's optimizer trains with the model (they are parameters of the model). The loss
term ``ctrl.loss()`` pushes the density (fraction of kept weights) towards ``1 - level``:

- ``global`` mode: ``((kept / total - (1 - level)) / 0.05) ** 2`` over all sparsified weights;
- ``local`` mode: the mean over layers of ``((kept_l / total_l - (1 - level)) / 0.05) ** 2``, so
  every layer is pushed to the level (NNCF drives this mode per layer by hand; here the
  schedule drives every layer's target).

The schedule (default ``exponential``; ``adaptive`` raises the level once the masks reach it)
sets the level at each ``epoch_step()``; from ``sparsity_freeze_epoch`` the masks stop learning
(``1[logits > 0]``) and the loss is zero. Add ``ctrl.loss()`` to the task loss; give the mask
logits a learning rate that lets them move: ``compression_lr_multiplier`` with
:func:`nncompress.torch.optim.get_parameter_groups`, or their own parameter group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nncompress.api.compression import CompressionLoss, CompressionStage, NNCFStatistics
from nncompress.errors import CompressionStateError
from nncompress.sparsity.params import SparsityParams, check_sparsity_level
from nncompress.sparsity.schedule import make_sparsity_scheduler
from nncompress.sparsity.statistics import RBSparsityStatistics
from nncompress.torch.algorithms.base import BuildContext
from nncompress.torch.algorithms.registry import register_algorithm_builder
from nncompress.torch.initialization import model_device
from nncompress.torch.sparsity.base import SparsifiedWeight, SparsityBuilderBase, SparsityControllerBase
from nncompress.torch.sparsity.masks import RBMask, binary_ste

__all__ = ["RBSparsityBuilder", "RBSparsityController", "SparseLoss"]

ALGORITHM = "rb_sparsity"
LOSS_SCALE = 0.05  # NNCF's p: a density 0.05 away from the target costs 1


class SparseLoss(CompressionLoss):
    """Pulls the density of the masks towards ``1 - level`` (see the module docstring)."""

    def __init__(self, masks: list[RBMask], mode: str = "global", p: float = LOSS_SCALE):
        self.masks = list(masks)
        self.mode = mode
        self.p = float(p)
        self.target = 1.0  # density
        self.per_layer_target = [1.0] * len(self.masks)
        self.disabled = False

    def disable(self) -> None:
        """Zero loss and frozen masks (``sparsity_freeze_epoch``)."""
        self.disabled = True
        for m in self.masks:
            m.freeze()

    def enable(self) -> None:
        """Undo :meth:`disable`: the masks learn again and the loss pulls them to the target."""
        self.disabled = False
        for m in self.masks:
            m.freeze(False)

    @property
    def target_sparsity_rate(self) -> float:
        return 1.0 - self.target

    def set_target_sparsity_loss(self, sparsity_level: float, mask: RBMask | None = None) -> None:
        if mask is None:
            self.target = 1.0 - sparsity_level
            self.per_layer_target = [self.target] * len(self.masks)
        else:
            self.per_layer_target[self.masks.index(mask)] = 1.0 - sparsity_level

    def calculate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        device = self.masks[0].mask.device if self.masks else torch.device("cpu")
        if self.disabled or not self.masks:
            return torch.zeros([], device=device)
        if self.mode == "local":
            terms = [
                ((binary_ste(m.mask).mean() - t) / self.p).pow(2)
                for m, t in zip(self.masks, self.per_layer_target)
            ]
            return torch.stack(terms).mean()
        kept = sum(binary_ste(m.mask).sum() for m in self.masks)
        total = sum(m.mask.numel() for m in self.masks)
        return ((kept / total - self.target) / self.p).pow(2)

    @property
    @torch.no_grad()
    def current_sparsity(self) -> float:
        """Fraction of weights the masks zero now (``logits <= 0``)."""
        total = sum(m.mask.numel() for m in self.masks)
        kept = sum(int((m.mask > 0).sum().item()) for m in self.masks)
        return 1.0 - kept / total if total else 0.0

    @property
    @torch.no_grad()
    def mean_sparse_prob(self) -> float:
        """Mean probability of a weight being kept, ``sigmoid(logits)`` (NNCF's name)."""
        total = sum(m.mask.numel() for m in self.masks)
        return float(sum(torch.sigmoid(m.mask).sum().item() for m in self.masks) / total) if total else 1.0

    def get_state(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "per_layer_target": list(self.per_layer_target),
            "disabled": self.disabled,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        try:
            self.target = float(state["target"])
            per_layer = [float(t) for t in state.get("per_layer_target", [self.target] * len(self.masks))]
        except (KeyError, TypeError, ValueError) as exc:
            raise CompressionStateError(f"rb_sparsity loss: corrupt state {state!r}") from exc
        if len(per_layer) != len(self.masks):
            raise CompressionStateError(
                f"rb_sparsity loss: the state has {len(per_layer)} per-layer targets, the model {len(self.masks)} masks"
            )
        self.per_layer_target = per_layer
        if state.get("disabled"):
            self.disable()


@register_algorithm_builder(ALGORITHM)
class RBSparsityBuilder(SparsityBuilderBase):
    """Builds RB sparsity from an ``rb_sparsity`` section (see the module docstring)."""

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)
        self.params = SparsityParams.from_section(section, self.path)

    def create_mask(self, weight: SparsifiedWeight, param: nn.Parameter) -> RBMask:
        from nncompress.torch.optim import compression_lr_multiplier, mark_compression_module

        mask = RBMask(tuple(param.shape))
        # the logits join this algorithm's group in get_parameter_groups (lr * multiplier); without
        # groups their gradients are scaled by the multiplier (NNCF's behaviour)
        mark_compression_module(mask, ALGORITHM, compression_lr_multiplier(self.config, ALGORITHM))
        return mask

    def build_controller(self, model: nn.Module, context: BuildContext) -> RBSparsityController:
        ctrl = RBSparsityController(model, self.params, context, self.get_state(), self.weights, self.masks)
        ctrl.skipped = dict(self.skipped)
        return ctrl


class RBSparsityController(SparsityControllerBase):
    """Drives RB sparsity of one wrapped model (see the module docstring)."""

    def __init__(
        self,
        target_model: nn.Module,
        params: SparsityParams,
        context: BuildContext,
        builder_state: dict[str, Any],
        weights: list[SparsifiedWeight],
        masks: list[RBMask],
    ):
        super().__init__(target_model, ALGORITHM, builder_state, context, weights, masks)
        self.params = params
        self._mode = params.mode
        self._loss = SparseLoss(masks, params.mode)
        self._scheduler = make_sparsity_scheduler(self, params)
        self.set_sparsity_level(params.sparsity_init)

    def set_sparsity_level(
        self, sparsity_level: float, target_sparsified_module_info: str | SparsifiedWeight | None = None
    ) -> None:
        """Set the level the loss pulls towards: of every layer, or of one (its own target)."""
        level = check_sparsity_level(sparsity_level)
        if target_sparsified_module_info is None:
            self._loss.set_target_sparsity_loss(level)  # type: ignore[attr-defined]
        else:
            w = self._find(target_sparsified_module_info)
            mask = self.masks[self.sparsified_weights.index(w)]
            self._loss.set_target_sparsity_loss(level, mask)  # type: ignore[attr-defined]

    @property
    def compression_rate(self) -> float:
        """The level the loss pulls towards (the masks reach it during training)."""
        return self._loss.target_sparsity_rate  # type: ignore[attr-defined]

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.set_sparsity_level(value)

    @property
    def reached_sparsity(self) -> float:
        return self._loss.current_sparsity  # type: ignore[attr-defined]

    def freeze(self) -> None:
        super().freeze()
        self._loss.disable()  # type: ignore[attr-defined]

    def unfreeze(self) -> None:
        super().unfreeze()
        self._loss.enable()  # type: ignore[attr-defined]

    def compression_stage(self) -> CompressionStage:
        level = self._scheduler.current_sparsity_level  # type: ignore[attr-defined]
        if level <= 0.0:
            return CompressionStage.UNCOMPRESSED
        if level >= self.params.target_level - 1e-9:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def distributed(self) -> None:
        """Copy the masks and the random generator state from rank 0: every rank then samples the
        same masks (the logits stay equal: DDP averages their gradients)."""
        super().distributed()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        state = torch.get_rng_state()
        dist.broadcast(state, src=0)
        torch.set_rng_state(state)
        if model_device(self.model).type == "cuda":
            cuda_state = torch.cuda.get_rng_state().cuda()
            dist.broadcast(cuda_state, src=0)
            torch.cuda.set_rng_state(cuda_state.cpu())

    @torch.no_grad()
    def masks_consistency(self) -> float:
        """Fraction of mask entries equal on every process (1.0 in a single process): RB masks are
        sampled, so ranks drift apart if their random generators differ."""
        import torch.distributed as dist

        if (
            not (self._distributed and dist.is_available() and dist.is_initialized())
            or dist.get_world_size() == 1
        ):
            return 1.0
        same = total = 0
        for m in self.masks:
            mine = m.effective_mask()
            if dist.get_backend() == "nccl":
                mine = mine.cuda()
            gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, mine)
            agree = torch.stack([g == gathered[0] for g in gathered[1:]]).all(dim=0)
            same += int(agree.sum().item())
            total += agree.numel()
        return same / total if total else 1.0

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        loss: SparseLoss = self._loss  # type: ignore[assignment]
        stats = RBSparsityStatistics(
            model_statistics=self.model_statistics(),
            masks_consistency=1.0 if quickly_collected_only else self.masks_consistency(),
            target_sparsity_level=loss.target_sparsity_rate,
            mean_sparse_prob=1.0 - loss.mean_sparse_prob,
        )
        nncf_stats = NNCFStatistics()
        nncf_stats.register(ALGORITHM, stats)
        return nncf_stats
