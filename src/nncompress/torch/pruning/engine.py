"""Filter pruning of one torch model: channel groups, importance, masks, physical removal.

:class:`TorchFilterPruning` ties the backend-neutral core (:mod:`nncompress.pruning`) to a torch
model: it analyses the traced graph (layers without a registered pruner are left out), ranks
filters on the model's weights, keeps the masks of a wrapped model in step with the selected
channels, and cuts the channels out of a copy of the model (:meth:`TorchFilterPruning.strip`).
When the model also carries fake quantizers (pruning combined with quantization), the cut model
stays wrapped and its per-channel quantizers are cut to the kept channels, so it exports to INT8.

Without training, :func:`prune_filters` does it all at once::

    pruned, record = prune_filters(model, example_input, {"algorithm": "filter_pruning",
                                                          "params": {"pruning_target": 0.5}})
    record.save("pruning.json"); torch.save(pruned.state_dict(), "pruned.pt")
    # later, without pickling the model:
    fresh = apply_pruning_record(MyModel(), PruningRecord.load("pruning.json"))
    fresh.load_state_dict(torch.load("pruned.pt"))
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import PruningError
from nncompress.graph import Graph, Node
from nncompress.pruning.channels import ChannelDependencies, analyze_channels
from nncompress.pruning.cost import ModelCost, count_cost
from nncompress.pruning.importance import unit_importance
from nncompress.pruning.params import FilterPruningParams
from nncompress.pruning.record import PruningRecord, build_record
from nncompress.pruning.selection import ChannelSelection, select_channels, select_for_flops
from nncompress.torch.pruning.layers import find_pruner
from nncompress.torch.pruning.masks import (
    ChannelMask,
    MaskPoint,
    insert_masks,
    plan_masks,
    target_units,
    update_masks,
)

__all__ = ["TorchFilterPruning", "apply_pruning_record", "excluded_nodes", "prune_filters", "torch_supports"]

logger = logging.getLogger("nncompress")


def _module(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        return None


def torch_supports(model: nn.Module):
    """``supports(node, role)`` for the channel analysis: a layer can be cut when it is the op of
    its own module, that module's type has a registered :class:`LayerPruner` allowing the role."""

    def supports(node: Node, role: str) -> str | None:
        module = _module(model, node.module_scope)
        where = f"'{node.module_scope or node.name}'"
        if module is None or not node.module_scope:
            return f"{where} is a functional call, not a layer with its own module: not pruned"
        own = {f"{node.module_scope}.{n}" for n, _ in module.named_parameters(recurse=False)}
        used = [w.name for w in node.weights.values()] + ([node.bias] if node.bias else [])
        if any(name not in own for name in used):
            return f"{where} ({type(module).__name__}) runs an op on weights of another module: not pruned"
        pruner = find_pruner(module)
        if pruner is None:
            return (
                f"{where} is a {type(module).__name__}, which has no channel-pruning function "
                "(register one with nncompress.torch.pruning.register_layer_pruner)"
            )
        if role not in pruner.roles:
            return f"{where} ({type(module).__name__}) cannot be pruned as a {role}"
        if pruner.check is not None:
            return pruner.check(module, role)
        return None

    return supports


def excluded_nodes(graph: Graph, params: FilterPruningParams) -> dict[str, str]:
    """Node -> reason for the layers ``ignored_scopes`` / ``target_scopes`` keep whole."""
    from nncompress.torch.algorithms.quantization.scopes import ScopeResolver

    resolver = ScopeResolver(graph)
    result: dict[str, str] = {}
    if params.ignored_scopes:
        for name in resolver.match(params.ignored_scopes, "ignored_scopes", validate=params.validate_scopes):
            result[name] = f"'{name}' matches ignored_scopes"
    if params.target_scopes is not None:
        targeted = resolver.match(params.target_scopes, "target_scopes", validate=params.validate_scopes)
        for node in graph.nodes:
            if node.weights and node.name not in targeted and node.name not in result:
                result[node.name] = f"'{node.name}' is not in target_scopes"
    return result


class TorchFilterPruning:
    """Analysis, selection, masks and stripping for one model (see the module docstring).

    ``model`` is the wrapped model when ``masked`` (masks are inserted through ``model.nncf``),
    or a plain model otherwise (selection and stripping only).
    """

    def __init__(self, model: nn.Module, graph: Graph, params: FilterPruningParams, *, masked: bool):
        self.model = model
        self.graph = graph
        self.params = params
        self.deps: ChannelDependencies = analyze_channels(
            graph,
            prune_first_conv=params.prune_first_conv,
            prune_downsample_convs=params.prune_downsample_convs,
            excluded=excluded_nodes(graph, params),
            supports=torch_supports(model),
        )
        self.original_cost: ModelCost = count_cost(graph)
        self._keep = np.ones(self.deps.num_units, dtype=bool)
        self.selection = ChannelSelection(self._keep.copy(), 0.0)
        # LeGR's learned (scale, shift) per layer (None: plain ranking)
        self.ranking_coeffs: dict[str, tuple[float, float]] | None = None
        # per-group ranking: kept counts rounded up to a multiple of this (8: as NNCF 2.19)
        self.round_to = 1
        self.mask_points: list[MaskPoint] = []
        self.masks: list[ChannelMask] = []
        if masked:
            self.mask_points = plan_masks(graph, self.deps, prune_batch_norms=params.prune_batch_norms)
            self.masks = insert_masks(model, self.mask_points)

    @property
    def keep(self) -> np.ndarray:
        """Kept units: read from the masks of a masked model (they may have been loaded with a
        ``state_dict``), else the last applied selection."""
        if not self.masks:
            return self._keep
        keep = np.ones(self.deps.num_units, dtype=bool)
        for point, mask in zip(self.mask_points, self.masks):
            if point.role != "filters":
                continue
            off = mask.mask.detach().cpu().numpy() < 0.5
            units = point.units
            keep[units[off & (units >= 0)]] = False
        return keep

    # -- checks ---------------------------------------------------------------------------------
    def require_prunable(self) -> None:
        """``PruningError`` with the group printout when no group can be pruned."""
        if not self.deps.prunable_groups:
            raise PruningError(
                "filter_pruning: no layer of the model can be pruned; every channel group is left out:\n"
                + self.deps.describe()
            )

    # -- importance and selection -------------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        params = dict(self.model.named_parameters())
        result = {}
        for lay in self.deps.producers():
            if lay.weight is not None and lay.weight in params:
                result[lay.weight] = params[lay.weight].detach().cpu().double().numpy()
        return result

    def importance(self) -> np.ndarray:
        """Importance of every unit; channels already removed rank lowest, so they stay removed
        while the level grows (their weights get no gradient and would keep stale norms).

        As in NNCF 2.x: per group, the mean of the coupled filters' scores; with ``all_weights``,
        their sum over weights normalized per layer (so that the global ranking compares layers
        fairly), or, with LeGR's learned ``ranking_coeffs``, their sum after each layer's
        ``scale * score + shift`` (not normalized)."""
        global_ranking = self.params.all_weights
        imp = unit_importance(
            self.deps,
            self.weights(),
            self.params.filter_importance,
            normalize=global_ranking and self.ranking_coeffs is None,
            reduce="sum" if global_ranking else "mean",
            coeffs=self.ranking_coeffs,
        )
        imp[~self.keep] = -np.inf
        return imp

    def select(self, level: float) -> ChannelSelection:
        return select_channels(
            self.deps, self.importance(), level, all_weights=self.params.all_weights, round_to=self.round_to
        )

    def select_flops(self, flops_reduction: float) -> ChannelSelection:
        return select_for_flops(
            self.graph,
            self.deps,
            self.importance(),
            flops_reduction,
            all_weights=self.params.all_weights,
            round_to=self.round_to,
        )

    def apply(self, selection: ChannelSelection) -> None:
        """Make ``selection`` current: masks (if any) follow it."""
        self.selection = selection
        self._keep = selection.keep.copy()
        for note in selection.notes:
            logger.warning("filter_pruning: %s", note)
        if self.masks:
            update_masks(self.mask_points, self.masks, self._keep)

    def cost(self) -> ModelCost:
        return count_cost(self.graph, self.deps, self.keep)

    # -- physical removal -----------------------------------------------------------------------
    def record(self) -> PruningRecord:
        return build_record(self.deps, self.keep, self.graph.name)

    def strip(
        self, model: nn.Module, *, example: tuple[tuple, dict] | None = None, inplace: bool = False
    ) -> nn.Module:
        """``model`` with the removed channels cut out (a copy unless ``inplace``).

        A plain model, or a wrapped one whose only hooks are this engine's masks, becomes a plain
        model (the user's class, no hooks). A wrapped model with other hooks as well (the fake
        quantizers of quantization) stays wrapped: the masks are removed, the layers are cut in
        place (node names do not change, so the other hooks still apply to the same ops) and the
        per-channel hooks on cut tensors are cut with them (:meth:`_cut_hooks`). Its
        ``nncf.graph`` stays the graph of the unpruned model.

        With ``example`` (args, kwargs), the stripped model is run next to the masked one and must
        give the same outputs; a ``PruningError`` says so otherwise (a layer consuming channels in
        a way the graph does not show, such as a reshape to a fixed size).
        """
        from nncompress.torch.nncf_network import is_wrapped, unwrap_model

        reference = _run(model, example) if example is not None else None
        keep = self.keep
        if is_wrapped(model) and _has_other_hooks(model):
            plain = model if inplace else copy.deepcopy(model)
            apply_pruning_record(plain, self.record())
            self._cut_hooks(plain, keep)
        else:
            if is_wrapped(model):
                plain = unwrap_model(model, inplace=inplace)
            else:
                plain = model if inplace else copy.deepcopy(model)
            apply_pruning_record(plain, self.record())
        if example is not None:
            try:
                got = _run(plain, example)
            except Exception as exc:
                raise PruningError(
                    f"the pruned model fails to run: {type(exc).__name__}: {exc}. A layer probably uses channel "
                    "counts the graph does not show (a reshape to a fixed size, a buffer with one value per "
                    "channel); add it to ignored_scopes"
                ) from exc
            _compare(reference, got)
        return plain

    def _cut_hooks(self, model: nn.Module, keep: np.ndarray) -> None:
        """Remove the masks of the wrapped ``model`` (its layers already cut) and cut every
        per-channel quantizer on a pruned tensor (a weight, a bias, an activation) to the kept
        channels (:meth:`BaseQuantizer.prune_channels`); per-tensor quantizers stay as they are."""
        from nncompress.torch.quantizers import BaseQuantizer

        manager = model.nncf.hook_manager
        for target, hook in list(manager.items()):
            if isinstance(hook, ChannelMask):
                manager.remove(target, hook)
                continue
            if not isinstance(hook, BaseQuantizer) or not hook.per_channel:
                continue
            shape = hook.scale_shape
            axis = int(hook.channel_axis)
            units = target_units(self.graph, self.deps, target, axis, len(shape))
            if units is None:
                continue
            if len(units) != shape[axis]:
                raise PruningError(
                    f"the per-channel quantizer at {target} has {shape[axis]} channels, the pruned tensor "
                    f"{len(units)}: cannot cut it to the kept channels"
                )
            kept = np.flatnonzero((units < 0) | keep[np.maximum(units, 0)])
            if len(kept) < len(units):
                hook.prune_channels(kept)


def _has_other_hooks(model: nn.Module) -> bool:
    """Whether the wrapped ``model`` has hooks other than pruning masks."""
    return any(not isinstance(hook, ChannelMask) for _, hook in model.nncf.hook_manager.items())


def _run(model: nn.Module, example: tuple[tuple, dict]) -> list[torch.Tensor]:
    from nncompress.torch.tracing import flatten_tensors, map_structure

    args, kwargs = example
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    finally:
        for m, training in modes.items():
            m.training = training
    leaves: list[torch.Tensor] = []
    map_structure(out, lambda _p, t: leaves.append(t) or t)
    return leaves or flatten_tensors(out)


def _compare(reference: list[torch.Tensor] | None, got: list[torch.Tensor]) -> None:
    if reference is None:
        return
    if len(reference) != len(got):
        raise PruningError(f"the pruned model returns {len(got)} tensors, the masked model {len(reference)}")
    for i, (a, b) in enumerate(zip(reference, got)):
        if a.shape != b.shape:
            raise PruningError(
                f"output {i} of the pruned model has shape {tuple(b.shape)}, expected {tuple(a.shape)}"
            )
        if not a.is_floating_point():
            continue
        scale = float(a.abs().max()) if a.numel() else 0.0
        diff = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
        if diff > 1e-4 * max(scale, 1.0):
            raise PruningError(
                f"output {i} of the pruned model differs from the masked model by {diff:.3g} (scale {scale:.3g}): "
                "a layer consumes channels in a way the graph does not show; add it to ignored_scopes"
            )


def apply_pruning_record(model: nn.Module, record: PruningRecord | Mapping[str, Any]) -> nn.Module:
    """Cut ``model``'s layers as ``record`` says (in place); returns ``model``.

    Replays a saved pruning onto a fresh instance of the model class, so that the pruned
    ``state_dict`` loads into it. ``PruningError`` names the layer when the record does not fit.
    """
    if not isinstance(record, PruningRecord):
        record = PruningRecord.from_dict(record)
    for path, axes in record.layers.items():
        module = _module(model, path)
        if module is None:
            raise PruningError(f"pruning record: the model ({type(model).__name__}) has no module '{path}'")
        pruner = find_pruner(module)
        if pruner is None:
            raise PruningError(
                f"pruning record: '{path}' is a {type(module).__name__}, which has no pruning function"
            )
        sizes = pruner.sizes(module)
        keep = {}
        for axis, entry in axes.items():
            if axis not in sizes:
                raise PruningError(
                    f"pruning record: '{path}' ({type(module).__name__}) has no '{axis}' channels"
                )
            if sizes[axis] != entry.size:
                raise PruningError(
                    f"pruning record: '{path}' has {sizes[axis]} '{axis}' channels, the record was made for "
                    f"{entry.size} (another model, or pruned already?)"
                )
            if not entry.keep:
                raise PruningError(f"pruning record: '{path}' would keep no '{axis}' channel")
            keep[axis] = torch.tensor(entry.keep, dtype=torch.long)
        pruner.prune(module, keep)
    return model


def prune_filters(
    model: nn.Module,
    example_input: Any,
    section: Mapping[str, Any] | None = None,
    *,
    level: float | None = None,
    flops_target: float | None = None,
    round_to: int = 1,
) -> tuple[nn.Module, PruningRecord]:
    """Prune ``model`` at once (no training): returns a pruned copy and its record.

    ``section`` is a ``filter_pruning`` config section (its ``params`` and scopes; schema
    defaults otherwise). The level is ``level``, else the FLOPs reduction ``flops_target``, else
    the section's ``pruning_flops_target`` or ``pruning_target``. ``round_to=8`` keeps each
    group's channel count a multiple of 8, rounding up, as NNCF 2.19 does (per-group ranking).
    """
    from nncompress.torch.tracing import normalize_example_input, trace

    section = dict(section or {"algorithm": "filter_pruning"})
    section.setdefault("algorithm", "filter_pruning")
    params = FilterPruningParams.from_section(section)
    args, kwargs = normalize_example_input(example_input)
    graph = trace(model, example_input)
    engine = TorchFilterPruning(model, graph, params, masked=False)
    engine.round_to = round_to
    engine.require_prunable()
    if level is None and flops_target is None:
        if params.pruning_flops_target is not None:
            flops_target = params.pruning_flops_target
        else:
            level = params.pruning_target
    if level is not None:
        engine.apply(engine.select(level))
    else:
        engine.apply(engine.select_flops(float(flops_target)))
    pruned = engine.strip(model)
    _compare_shapes(model, pruned, (args, kwargs))
    return pruned, engine.record()


def _compare_shapes(model: nn.Module, pruned: nn.Module, example: tuple) -> None:
    """The pruned model must at least run on the example and give outputs of the same shapes."""
    try:
        ref = _run(model, example)
        got = _run(pruned, example)
    except Exception as exc:
        raise PruningError(
            f"the pruned model fails to run: {type(exc).__name__}: {exc}. A layer probably uses channel counts "
            "the graph does not show (a reshape to a fixed size); add it to ignored_scopes"
        ) from exc
    for i, (a, b) in enumerate(zip(ref, got)):
        if a.shape != b.shape:
            raise PruningError(
                f"output {i} of the pruned model has shape {tuple(b.shape)}, expected {tuple(a.shape)}"
            )
