"""What the three torch sparsity algorithms share: which weights get masks, state, statistics, strip.

Weights sparsified (as NNCF's sparsity does for its wrapped modules): the main weight of every
convolution (plain, grouped, depthwise, transposed), linear / matmul with a weight, and embedding
op; never biases or normalization scales. A parameter used by several ops (a layer called twice)
gets one mask, hooked at each use. ``ignored_scopes`` / ``target_scopes`` (names or ``{re}``
patterns, NNCF spellings accepted) choose among them; a scope matching nothing is a
``ScopeError`` unless ``validate_scopes`` is false, and nothing left to sparsify is a
``ConfigError``.

``strip`` multiplies each mask into its weight (so the weights carry the zeros) and removes the
masks; a model with no other hooks left becomes a plain model of the user's class.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncompress.errors import CompressionStateError, ConfigError
from nncompress.graph import Graph
from nncompress.graph import op_kinds as K
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.sparsity.params import section_path
from nncompress.sparsity.statistics import SparsifiedLayerSummary, SparsifiedModelStatistics
from nncompress.torch.algorithms.base import (
    BuildContext,
    PTCompressionAlgorithmBuilder,
    PTCompressionAlgorithmController,
)
from nncompress.torch.sparsity.masks import SparsityMask

__all__ = [
    "SPARSIFIABLE_KINDS",
    "SparsifiedWeight",
    "SparsityBuilderBase",
    "SparsityControllerBase",
    "plan_sparsified_weights",
]

STATE_VERSION = 1
SPARSIFIABLE_KINDS = frozenset(
    {
        K.CONVOLUTION,
        K.DEPTHWISE_CONVOLUTION,
        K.GROUP_CONVOLUTION,
        K.CONVOLUTION_TRANSPOSE,
        K.MATMUL,
        K.EMBEDDING,
        K.EMBEDDING_BAG,
    }
)
# sparsity masks apply before quantizers (priority 100) whatever the order of the config sections
SPARSITY_PRIORITY = 40

logger = logging.getLogger("nncompress")


@dataclass(frozen=True)
class SparsifiedWeight:
    """One sparsified parameter: the node that uses it first (its name in statistics), the parameter
    path, its shape, and every weight port it feeds."""

    name: str
    param: str
    shape: tuple[int, ...]
    targets: tuple[TargetPoint, ...]

    @property
    def key(self) -> str:
        return self.param


def _scope_params(section: Mapping[str, Any]) -> tuple[Any, Any, bool]:
    algorithm = section.get("algorithm")
    from nncompress.config.effective import get_param

    validate = bool(get_param(section, "validate_scopes", algorithm=algorithm))
    return section.get("ignored_scopes"), section.get("target_scopes"), validate


def plan_sparsified_weights(
    graph: Graph, section: Mapping[str, Any], where: str = "compression"
) -> tuple[list[SparsifiedWeight], dict[str, str]]:
    """The weights to sparsify in ``graph`` and, for the weighted ops left out, why."""
    from nncompress.torch.algorithms.quantization.scopes import ScopeResolver

    ignored, targeted, validate = _scope_params(section)
    resolver = ScopeResolver(graph)
    skipped: dict[str, str] = {}
    ignored_nodes = (
        resolver.match(ignored, f"{where}.ignored_scopes", validate=validate) if ignored else set()
    )
    target_nodes = (
        resolver.match(targeted, f"{where}.target_scopes", validate=validate)
        if targeted is not None
        else None
    )
    by_param: dict[str, SparsifiedWeight] = {}
    order: list[str] = []
    excluded: dict[str, str] = {}  # parameter -> the node whose scope keeps it dense
    for node in graph.nodes:
        if not node.weights:
            continue
        port = min(node.weights)
        info = node.weights[port]
        if node.kind not in SPARSIFIABLE_KINDS:
            skipped[node.name] = (
                f"a {node.kind} op: only convolution, linear/matmul and embedding weights are sparsified"
            )
            continue
        if node.name in ignored_nodes:
            skipped[node.name] = "matches ignored_scopes"
            excluded.setdefault(info.name, node.name)
            continue
        if target_nodes is not None and node.name not in target_nodes:
            skipped[node.name] = "not in target_scopes"
            excluded.setdefault(info.name, node.name)
            continue
        target = TargetPoint(TargetType.WEIGHT, node.name, port)
        if info.name in by_param:
            old = by_param[info.name]
            by_param[info.name] = SparsifiedWeight(old.name, old.param, old.shape, (*old.targets, target))
            continue
        by_param[info.name] = SparsifiedWeight(node.name, info.name, tuple(info.shape), (target,))
        order.append(info.name)
    # a weight shared with a call the scopes keep dense stays dense everywhere: masking only some
    # of its uses would make the stripped model (one weight, zeros written in) differ
    for param in [p for p in order if p in excluded]:
        for target in by_param[param].targets:
            skipped[target.node] = (
                f"its weight '{param}' is also used by '{excluded[param]}', which is kept dense"
            )
        order.remove(param)
    return [by_param[p] for p in order], skipped


class SparsityBuilderBase(PTCompressionAlgorithmBuilder):
    """Plans the sparsified weights, inserts one mask per weight and keeps the plan as its state."""

    priority = SPARSITY_PRIORITY

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)
        self.path = section_path(config, section)
        self.weights: list[SparsifiedWeight] = []
        self.masks: list[SparsityMask] = []
        self.skipped: dict[str, str] = {}

    # -- to override ------------------------------------------------------------------------
    def create_mask(self, weight: SparsifiedWeight, param: nn.Parameter) -> SparsityMask:
        raise NotImplementedError

    def initialize(self, model: nn.Module) -> None:
        """Set the masks from the weights at creation (not called when a state is loaded)."""
        return None

    # -- shared -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "weights": [w.param for w in self.weights]}

    def apply_to(self, model: nn.Module, context: BuildContext) -> None:
        self.weights, self.skipped = plan_sparsified_weights(context.graph, self.section, self.path)
        params = dict(model.named_parameters())
        usable = []
        for w in self.weights:
            if w.param not in params:
                self.skipped[w.name] = f"its weight '{w.param}' is not a parameter of the model"
            else:
                usable.append(w)
        self.weights = usable
        if not self.weights:
            reasons = (
                "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:8])
                or "the model has no weights"
            )
            raise ConfigError(
                [(self.path, f"{self.algorithm_name}: no weight is left to sparsify ({reasons})")]
            )
        if not self.should_init:
            self._check_state()
        self.masks = []
        for w in self.weights:
            param = params[w.param]
            mask = self.create_mask(w, param).to(param.device)
            for target in w.targets:
                model.nncf.insert(target, mask)
            self.masks.append(mask)
        if self.should_init:
            self.initialize(model)

    def _check_state(self) -> None:
        state = self._state or {}
        if state.get("version") != STATE_VERSION:
            raise CompressionStateError(
                f"{self.algorithm_name}: builder state version {state.get('version')!r} is not supported "
                f"(expected {STATE_VERSION})"
            )
        saved, here = list(state.get("weights", [])), [w.param for w in self.weights]
        if saved != here:
            missing = sorted(set(saved) - set(here))[:3]
            extra = sorted(set(here) - set(saved))[:3]
            raise CompressionStateError(
                f"{self.algorithm_name}: the saved masks do not fit this model ({len(saved)} saved, {len(here)} "
                f"here; not here: {missing}; new: {extra})"
            )


def _weight_tensor(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(name)


def _other_params(model: nn.Module, sparsified: set[str]) -> list[torch.Tensor]:
    from nncompress.torch.tracing import NNCF_ATTR

    prefix = NNCF_ATTR + "."
    return [p for n, p in model.named_parameters() if not n.startswith(prefix) and n not in sparsified]


class SparsityControllerBase(PTCompressionAlgorithmController):
    """Shared controller behaviour: statistics, freeze, state, strip and export."""

    export_stripped = True  # the export is the stripped copy

    def __init__(
        self,
        target_model: nn.Module,
        algorithm_name: str,
        builder_state: dict[str, Any],
        context: BuildContext,
        weights: list[SparsifiedWeight],
        masks: list[SparsityMask],
    ):
        super().__init__(target_model, algorithm_name, builder_state, context)
        self.sparsified_weights = list(weights)
        self.masks = list(masks)
        self.frozen = False
        self.skipped: dict[str, str] = {}  # weighted op left dense -> why (set by the builder)

    def describe(self) -> str:
        """Which weights carry a mask (and at which ops), and which weighted ops are left dense and why."""
        lines = [f"{self.algorithm_name}: {len(self.sparsified_weights)} sparsified weights"]
        for w in self.sparsified_weights:
            uses = ", ".join(t.node for t in w.targets)
            lines.append(f"  {w.param} {tuple(w.shape)} at {uses}")
        if self.skipped:
            lines.append(f"left dense ({len(self.skipped)}):")
            lines += [f"  {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)

    # -- measurements -----------------------------------------------------------------------
    @torch.no_grad()
    def _layer_zeros(self) -> list[tuple[SparsifiedWeight, int, int]]:
        rows = []
        for w, mask in zip(self.sparsified_weights, self.masks):
            weight = _weight_tensor(self.model, w.param)
            effective = weight.detach() * mask.effective_mask().to(weight.device, weight.dtype)
            rows.append((w, int((effective == 0).sum().item()), effective.numel()))
        return rows

    @property
    def reached_sparsity(self) -> float:
        """Fraction of zeros in the sparsified weights now (with the masks applied)."""
        rows = self._layer_zeros()
        total = sum(n for _, _, n in rows)
        return sum(z for _, z, _ in rows) / total if total else 0.0

    def sparsity_rate_for_sparsified_modules(self, layer: str | SparsifiedWeight | None = None) -> float:
        """NNCF's name: the fraction of zeros of every sparsified weight, or of one (by node or param)."""
        rows = self._layer_zeros()
        if layer is not None:
            w = self._find(layer)
            rows = [r for r in rows if r[0] is w]
        total = sum(n for _, _, n in rows)
        return sum(z for _, z, _ in rows) / total if total else 0.0

    def _find(self, layer: str | SparsifiedWeight) -> SparsifiedWeight:
        if isinstance(layer, SparsifiedWeight):
            if layer in self.sparsified_weights:
                return layer
            layer = layer.name
        for w in self.sparsified_weights:
            if layer in (w.name, w.param) or any(t.node == layer for t in w.targets):
                return w
        names = ", ".join(w.name for w in self.sparsified_weights[:6])
        raise ConfigError(
            [(str(layer), f"{self.algorithm_name}: not a sparsified layer (sparsified: {names}, ...)")]
        )

    @torch.no_grad()
    def model_statistics(self) -> SparsifiedModelStatistics:
        rows = self._layer_zeros()
        total_layers = sum(n for _, _, n in rows) or 1
        summaries = [
            SparsifiedLayerSummary(
                name=w.name,
                weight_shape=tuple(w.shape),
                sparsity_level=z / n if n else 0.0,
                weight_percentage=100.0 * n / total_layers,
                zeros=z,
                numel=n,
            )
            for w, z, n in rows
        ]
        layer_zeros = sum(z for _, z, _ in rows)
        layer_numel = sum(n for _, _, n in rows)
        others = _other_params(self.model, {w.param for w in self.sparsified_weights})
        other_zeros = sum(int((p.detach() == 0).sum().item()) for p in others)
        other_numel = sum(p.numel() for p in others)
        total = layer_numel + other_numel
        zeros = layer_zeros + other_zeros
        return SparsifiedModelStatistics(
            sparsity_level=zeros / total if total else 0.0,
            sparsity_level_for_layers=layer_zeros / layer_numel if layer_numel else 0.0,
            sparsified_layers_summary=summaries,
            total_params=total,
            total_zeros=zeros,
        )

    # -- freeze and state -------------------------------------------------------------------
    def freeze(self) -> None:
        """Stop changing the masks (``sparsity_freeze_epoch``)."""
        self.frozen = True

    def unfreeze(self) -> None:
        """Let the masks change again (levels can be set; RB masks learn again)."""
        self.frozen = False

    @property
    def scheduler_enabled(self) -> bool:
        """False once :meth:`disable_scheduler` handed the level over to the caller."""
        return bool(getattr(self._scheduler, "enabled", True))

    def disable_scheduler(self) -> None:
        """Hand the level over to the caller, as the adaptive accuracy-aware loop does before it
        sets ``compression_rate`` itself: the schedule no longer changes the level nor freezes the
        masks, and masks it already froze (``sparsity_freeze_epoch`` reached in the initial
        training phase) follow the levels set from now on. NNCF swaps in a stub scheduler, which
        stops the freezing too, but keeps frozen masks frozen, so the search silently changes
        nothing."""
        self._scheduler.enabled = False  # type: ignore[attr-defined]
        if self.frozen:
            logger.info(
                "%s: the scheduler is disabled (the caller sets the level now); the frozen masks "
                "follow the levels set from now on",
                self.algorithm_name,
            )
            self.unfreeze()

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[self.algorithm_name]["frozen"] = self.frozen
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        # a checkpoint saved while the schedule ran (frozen) and loaded after the level was handed
        # over (accuracy-aware search) must not freeze the masks the search sets again
        if state[self.algorithm_name].get("frozen") and self.scheduler_enabled:
            self.freeze()
        else:
            self.unfreeze()

    def distributed(self) -> None:
        """Copy every mask from rank 0, so all ranks start with the same masks."""
        from nncompress.torch.initialization import broadcast_module_state

        super().distributed()
        broadcast_module_state(self.masks)

    # -- strip and export -------------------------------------------------------------------
    def strip_model(self, model: nn.Module, do_copy: bool = False) -> nn.Module:
        """``model`` with each mask multiplied into its weight and the masks removed; a plain model of
        the user's class when no other hooks (quantizers, pruning masks) remain."""
        from nncompress.torch.nncf_network import is_wrapped, unwrap_model

        if do_copy:
            model = copy.deepcopy(model)
        if not is_wrapped(model):
            return model
        manager = model.nncf.hook_manager
        graph = model.nncf.graph
        done: set[int] = set()
        with torch.no_grad():
            for target, hook in list(manager.items()):
                if not isinstance(hook, SparsityMask) or hook.algorithm != self.algorithm_name:
                    continue
                if id(hook) not in done:
                    info = graph.node(target.node).weights[target.port]
                    weight = model.get_parameter(info.name)
                    weight.mul_(hook.effective_mask().to(weight.device, weight.dtype))
                    done.add(id(hook))
                manager.remove(target, hook)
        if not manager.has_hooks():
            return unwrap_model(model, inplace=True)
        return model
