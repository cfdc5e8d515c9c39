"""Training-time sparsity and filter pruning of Keras models, alone or combined with quantization.

``nncompress.tensorflow.create_compressed_model`` sends every config that names
``magnitude_sparsity``, ``rb_sparsity``, ``const_sparsity`` or ``filter_pruning`` here (a
``quantization``-only config keeps its own path in ``compression``). One compressed model is
built for all sections at once, from the graph of the original model:

- a copy of the model (``base``: its layers hold the weights that train) is rebuilt as a
  functional model in which weighted layers run through ``QuantizedLayer`` with a
  ``WeightMask`` (sparsity), pruning ``ChannelMask`` layers sit after every layer producing or
  following a pruned channel, and ``FakeQuantize`` layers where quantization places them (a mask
  first, then the quantizer, when both act on one tensor);
- initialization without a saved state: quantizer ranges (on the original model), magnitude's
  ``sparsity_init``, const's masks, ``pruning_init``, then BatchNorm adaptation;
- with ``compression_state`` nothing is initialized: load the checkpoint's weights next
  (``model.load_weights``), masks included.

``ctrl.strip()`` rebuilds a clean model: the original architecture with the sparsity zeros
written into the kernels, the pruned channels physically removed (smaller Conv/Dense/BatchNorm
layers, checked against the masked model on an example input), and with quantization the fake
quantizers (ranges copied, per-channel ones cut to the kept channels). ``export_model`` writes
that model (SavedModel, ``.keras``, ``.h5`` or OpenVINO ``.xml``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nncompress.api.composite import CompositeCompressionAlgorithmController
from nncompress.api.compression import (
    BaseCompressionScheduler,
    CompressionAlgorithmController,
    CompressionLoss,
    CompressionScheduler,
    CompressionStage,
    NNCFStatistics,
)
from nncompress.config.effective import get_param
from nncompress.config.nncf_config import NNCFConfig
from nncompress.errors import CompressionStateError, ConfigError, GraphError, PruningError, QuantizationError
from nncompress.graph import Graph
from nncompress.pruning.controller_mixin import PruningControllerMixin
from nncompress.pruning.params import FilterPruningParams
from nncompress.quantization.spec import Placement, TargetType
from nncompress.tensorflow.adapter import PLACEMENT_ATTRIBUTE, Adapter, _rank_at, make_fake_quantize, rebuild
from nncompress.tensorflow.compression import (
    QuantizationBuilder,
    TFQuantizationController,
    TFZeroCompressionLoss,
    _adapt_batchnorm,
    _params_from_state,
    export_keras_model,
)
from nncompress.tensorflow.graph_builder import Walk, walk
from nncompress.tensorflow.layers import FakeQuantize, weight_variable
from nncompress.tensorflow.masking import ChannelMask, WeightMask
from nncompress.tensorflow.pruning import KerasFilterPruning, prune_keras_model
from nncompress.tensorflow.sparsity import SPARSITY_ALGORITHMS, TFSparsityBuilder, TFSparsityController

__all__ = [
    "TFCompositeCompressionController",
    "TFCompressionContext",
    "TFFilterPruningController",
    "TFSparsityAlgorithmController",
    "build_compressed_model",
]

logger = logging.getLogger("nncompress")

PRUNING = "filter_pruning"
PRUNING_STATE_VERSION = 1


def layer_of(w: Walk, node: str) -> tuple[Any, str | None]:
    """The layer holding ``node``'s weight in the walked model, and the separable half it is."""
    if node in w.by_name:
        step = w.by_name[node]
        return step.layer, "pointwise" if step.separable else None
    base, _, half = node.rpartition("/")
    if half == "depthwise" and base in w.by_name and w.by_name[base].separable:
        return w.by_name[base].layer, "depthwise"
    raise GraphError(f"The Keras model has no layer call named '{node}'")


def _logical(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(value).reshape(shape)


def _example_input(config: NNCFConfig, base: keras.Model) -> list[np.ndarray]:
    """Inputs to compare the stripped model with the masked one: ``input_info`` sizes, else the
    model's input shapes (batch 1, unknown sizes 32)."""
    rng = np.random.default_rng(0)
    info = config.get("input_info")
    entries = (info if isinstance(info, list) else [info]) if info else []
    feed = []
    for i, t in enumerate(walk(base).inputs):
        size = entries[i].get("sample_size") if i < len(entries) else None
        shape = [int(d) for d in size] if size else [1] + [32 if d is None else int(d) for d in t.shape[1:]]
        feed.append(rng.normal(size=shape).astype(str(t.dtype) if "float" in str(t.dtype) else "float32"))
    return feed


class TFCompressionContext:
    """What the controllers of one compressed Keras model share: the graph, the base model whose
    layers train, the algorithms' parts, and ``strip`` (see the module docstring)."""

    def __init__(self, config: NNCFConfig, model: keras.Model, base: keras.Model, graph: Graph):
        self.config = config
        self.model = model
        self.base = base
        self.graph = graph
        self.sparsity: TFSparsityController | None = None
        self.pruning: KerasFilterPruning | None = None
        self.placement: Placement | None = None
        self.bn_samples = 0
        # the graph's input names (copies of a model with unnamed inputs get other names)
        self.input_names: list[str] = list(walk(base).input_names)

    def run_batchnorm_adaptation(self) -> int:
        """Re-estimate BatchNorm statistics on the registered data (after masks change)."""
        return _adapt_batchnorm(self.model, self.config, self.bn_samples)

    # -- strip ----------------------------------------------------------------------------------
    def _plain_copy(self) -> keras.Model:
        """A copy of the original architecture holding the trained weights (separable convolutions
        train as two split layers: their values are copied back)."""
        plain = Adapter().copy_model(self.base)
        wb, wc, wp = walk(self.base), walk(self.model), walk(plain)
        for step in wb.steps:
            if not step.separable:
                continue
            target = wp.by_name[step.name].layer
            dw, _ = layer_of(wc, f"{step.name}/depthwise")
            pw, _ = layer_of(wc, step.name)
            target.depthwise_kernel.assign(dw.kernel)
            target.pointwise_kernel.assign(pw.kernel)
            if target.use_bias:
                target.bias.assign(pw.bias)
        return plain

    def strip(self) -> keras.Model:
        """The inference model: zeros written in, pruned channels removed, quantizers kept."""
        plain = self._plain_copy()
        wp = walk(plain)
        if self.sparsity is not None:
            for sw, mask in zip(self.sparsity.sparsified_weights, self.sparsity.masks):
                keep = mask.effective_mask()
                for node in sw.nodes:
                    layer, part = layer_of(wp, node)
                    var = weight_variable(layer, part)
                    value = _logical(var.numpy(), sw.shape) * keep.reshape(sw.shape)
                    var.assign(value.reshape(tuple(var.shape)))
        cuts: dict[str, dict[str, np.ndarray]] = {}
        if self.pruning is not None:
            cuts = self.pruning.cuts()
            if cuts:
                plain = prune_keras_model(plain, cuts, name=self.base.name)
        if self.placement is not None:
            plain = self._requantize(plain, cuts)
        self._check(plain, strict=self.placement is None)
        return plain

    def _requantize(self, plain: keras.Model, cuts: Mapping[str, Mapping[str, np.ndarray]]) -> keras.Model:
        """``plain`` with new fake quantizers holding the trained ranges (cut with the channels)."""
        assert self.placement is not None
        trained = {
            q.graph_name: q
            for q in self.model._flatten_layers(include_self=False)
            if isinstance(q, FakeQuantize)
        }
        acts, weights = {}, {}
        for p in self.placement.points:
            is_weight = p.is_weight or p.target.type is TargetType.WEIGHT
            name = (
                f"{p.target.node}/fq_weights"
                if is_weight
                else f"{p.target.node}/fq_{p.target.type.value}_{p.target.port}"
            )
            q = trained.get(name)
            if q is None:
                raise GraphError(f"strip: the compressed model has no quantizer '{name}'")
            low, high = (np.asarray(v, dtype=np.float32) for v in q.bounds())
            cut = cuts.get(p.target.node, {})
            if (
                is_weight
                and q.axis is not None
                and "out" in cut
                and low.ndim
                and len(cut["out"]) < low.shape[0]
            ):
                low, high = low[cut["out"]], high[cut["out"]]
            elif not is_weight and q.axis is not None and self.pruning is not None:
                key = (p.target.node, p.target.port)
                if p.target.type is TargetType.OUTPUT and key in self.pruning.deps.tensor_units:
                    from nncompress.tensorflow.pruning import kept_indices

                    idx = kept_indices(self.pruning.deps.tensor_units[key][1], self.pruning.keep)
                    low, high = low[idx], high[idx]
            fq = FakeQuantize(
                low,
                high,
                q.levels,
                axis=q.axis,
                mode=q.mode,
                trainable_range=False,
                graph_name=name,
                name=q.name,
            )
            if is_weight:
                weights[p.target.node] = fq
            else:
                acts[p.target] = fq
        w = walk(plain)
        w.input_names = list(self.input_names)
        model = rebuild(w, acts, weights, name=self.base.name).model
        setattr(model, PLACEMENT_ATTRIBUTE, getattr(self.model, PLACEMENT_ATTRIBUTE, None))
        return model

    def _check(self, stripped: keras.Model, strict: bool) -> None:
        """The stripped model must compute what the compressed one does (``PruningError`` if not)."""
        feed = _example_input(self.config, self.base)
        x = feed if len(feed) > 1 else feed[0]
        try:
            got = [np.asarray(t) for t in keras.tree.flatten(stripped(x, training=False))]
        except Exception as exc:
            raise PruningError(
                f"the stripped model fails to run: {type(exc).__name__}: {exc}. A layer probably uses channel "
                "counts the graph does not show (a reshape to a fixed size); add it to ignored_scopes"
            ) from exc
        ref = [np.asarray(t) for t in keras.tree.flatten(self.model(x, training=False))]
        for i, (a, b) in enumerate(zip(ref, got)):
            if a.shape != b.shape:
                raise PruningError(
                    f"output {i} of the stripped model has shape {b.shape}, expected {a.shape}"
                )
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            diff = float(np.max(np.abs(a - b))) if a.size else 0.0
            if strict and diff > 1e-4 * max(scale, 1.0):
                raise PruningError(
                    f"output {i} of the pruned model differs from the masked model by {diff:.3g} (scale {scale:.3g}): "
                    "a layer consumes channels in a way the graph does not show; add it to ignored_scopes"
                )


def _strip_through_context(self: Any, model: keras.Model | None = None, do_copy: bool = True) -> keras.Model:
    """The inference model: always a new Keras model rebuilt by the context (see the module
    docstring), whatever ``model`` and ``do_copy`` say."""
    return self.ctx.strip()


def _export_through_context(
    self: Any,
    save_path: str | Path,
    save_format: str | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    model_args: tuple | None = None,
) -> Path:
    """Write the stripped model (``tf`` SavedModel, ``keras``, ``h5`` or OpenVINO ``.xml``)."""
    return export_keras_model(self.ctx.strip(), save_path, save_format, input_names, output_names, model_args)


class _TFControllerBase(CompressionAlgorithmController):
    """Shared by this module's controllers: strip and export through the context, state layout."""

    algorithm_name = ""

    def __init__(self, ctx: TFCompressionContext, builder_state: dict[str, Any]):
        super().__init__(ctx.model)
        self.ctx = ctx
        self.builder_state = builder_state

    @property
    def name(self) -> str:
        return self.algorithm_name

    strip_model = _strip_through_context
    export_model = _export_through_context

    def get_compression_state(self) -> dict[str, Any]:
        return {
            self.BUILDER_STATE: {self.algorithm_name: copy.deepcopy(self.builder_state)},
            self.CONTROLLER_STATE: self.get_state(),
        }

    def _mine(self, state: Any) -> Mapping[str, Any]:
        mine = state.get(self.algorithm_name) if isinstance(state, Mapping) else None
        if not isinstance(mine, Mapping):
            raise CompressionStateError(
                f"{self.algorithm_name}: the controller state has no entry for this algorithm (got {state!r})"
            )
        return mine


class TFSparsityAlgorithmController(_TFControllerBase):
    """``magnitude_sparsity`` / ``rb_sparsity`` / ``const_sparsity`` of a Keras model (NNCF's API:
    ``loss``, ``scheduler``, ``set_sparsity_level``, ``freeze``, ``compression_rate``,
    ``statistics``, ``strip``, ``export_model``, state)."""

    def __init__(self, ctx: TFCompressionContext, part: TFSparsityController, builder_state: dict[str, Any]):
        super().__init__(ctx, builder_state)
        self.part = part
        self.algorithm_name = part.algorithm_name
        self._scheduler: CompressionScheduler = part.scheduler or BaseCompressionScheduler()

    @property
    def loss(self) -> CompressionLoss:
        return self.part.loss

    @property
    def scheduler(self) -> CompressionScheduler:
        return self._scheduler

    @property
    def sparsified_weights(self) -> list:
        return self.part.sparsified_weights

    @property
    def masks(self) -> list[WeightMask]:
        return self.part.masks

    @property
    def frozen(self) -> bool:
        return self.part.frozen

    def freeze(self) -> None:
        self.part.freeze()

    def unfreeze(self) -> None:
        self.part.unfreeze()

    def set_sparsity_level(self, sparsity_level: float, target_sparsified_module_info: Any = None) -> None:
        self.part.set_sparsity_level(sparsity_level, target_sparsified_module_info)

    @property
    def current_sparsity_level(self) -> float:
        return self.part.current_sparsity_level

    @property
    def reached_sparsity(self) -> float:
        return self.part.reached_sparsity

    @property
    def compression_rate(self) -> float:
        return self.part.compression_rate

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.part.set_sparsity_level(value)
        if self.algorithm_name == "magnitude_sparsity":
            self.ctx.run_batchnorm_adaptation()

    def disable_scheduler(self) -> None:
        if hasattr(self._scheduler, "enabled"):
            self._scheduler.enabled = False  # type: ignore[attr-defined]
        self.part.unfreeze()

    def compression_stage(self) -> CompressionStage:
        return self.part.compression_stage()

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        return self.part.statistics(quickly_collected_only)

    def describe(self) -> str:
        return self.part.describe()

    def get_state(self) -> dict[str, Any]:
        return {self.algorithm_name: self.part.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.part.load_state(self._mine(state))


class TFFilterPruningController(PruningControllerMixin, _TFControllerBase):
    """``filter_pruning`` of a Keras model: masks follow the schedule; ``strip``/``export_model``
    remove the channels for real (see the module docstring)."""

    algorithm_name = PRUNING

    def __init__(
        self,
        ctx: TFCompressionContext,
        engine: KerasFilterPruning,
        params: FilterPruningParams,
        builder_state: dict,
    ):
        super().__init__(ctx, builder_state)
        self.engine = engine
        self.params = params
        self._scheduler = self._scheduler_for(params)
        self._value = params.pruning_init

    @property
    def loss(self) -> CompressionLoss:
        return TFZeroCompressionLoss()

    @property
    def scheduler(self) -> CompressionScheduler:
        return self._scheduler

    def run_batchnorm_adaptation(self) -> int:
        """Re-estimate BatchNorm statistics on the registered data (after the masks change)."""
        return self.ctx.run_batchnorm_adaptation()

    def disable_scheduler(self) -> None:
        self._scheduler.enabled = False

    def get_state(self) -> dict[str, Any]:
        return {
            PRUNING: {
                "scheduler_state": self._scheduler.get_state(),
                "loss_state": {},
                "pruning_level": self.pruning_level,
                "target_value": self._value,
            }
        }

    def load_state(self, state: dict[str, Any]) -> None:
        mine = self._mine(state)
        if "scheduler_state" in mine:
            self._scheduler.load_state(mine["scheduler_state"])
        try:
            level = float(mine.get("pruning_level", 0.0))
            self._value = float(mine.get("target_value", level))
        except (TypeError, ValueError) as exc:
            raise CompressionStateError(f"{PRUNING}: corrupt pruning level in {dict(mine)!r}") from exc
        # the masks come back with the model's weights; the selection follows them
        self.engine.selection.level = level
        self.engine._keep = self.engine.keep


class TFCompositeCompressionController(CompositeCompressionAlgorithmController):
    """Several algorithms on one Keras model: one loss (a TensorFlow scalar), scheduler, state;
    ``strip`` / ``export_model`` give the model with every algorithm applied."""

    def __init__(self, ctx: TFCompressionContext, children: list[CompressionAlgorithmController]):
        super().__init__(ctx.model, children)
        self.ctx = ctx

    def _zero_loss(self) -> Any:
        return tf.constant(0.0)

    strip_model = _strip_through_context
    strip = _strip_through_context
    export_model = _export_through_context

    @property
    def compression_rate(self) -> float:
        """The rate of the sparsity or pruning child (NNCF's composite has one adaptive child)."""
        for child in self.child_ctrls:
            if hasattr(child, "compression_rate") and child.name != "quantization":
                return child.compression_rate  # type: ignore[attr-defined]
        raise ConfigError([("compression", "no sparsity or pruning algorithm has a compression rate here")])

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        for child in self.child_ctrls:
            if hasattr(child, "compression_rate") and child.name != "quantization":
                child.compression_rate = value  # type: ignore[attr-defined]
                return
        raise ConfigError([("compression", "no sparsity or pruning algorithm has a compression rate here")])


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
def _bn_samples(sections: list[Mapping[str, Any]]) -> int:
    samples = 0
    for s in sections:
        name = s.get("algorithm")
        if name in ("const_sparsity", "rb_sparsity"):
            continue
        samples = max(
            samples,
            int(
                get_param(s, "initializer.batchnorm_adaptation.num_bn_adaptation_samples", algorithm=name)
                or 0
            ),
        )
    return samples


def _pruning_state(engine: KerasFilterPruning) -> dict[str, Any]:
    return {"version": PRUNING_STATE_VERSION, "masks": [n for n, _ in engine.mask_nodes]}


def _check_pruning_state(engine: KerasFilterPruning, state: Any) -> None:
    if not isinstance(state, Mapping) or state.get("version") != PRUNING_STATE_VERSION:
        raise CompressionStateError(
            f"{PRUNING}: builder state {state!r} is not supported (expected version {PRUNING_STATE_VERSION})"
        )
    saved, here = list(state.get("masks", [])), [n for n, _ in engine.mask_nodes]
    if saved != here:
        raise CompressionStateError(
            f"{PRUNING}: the saved masks do not fit this model ({len(saved)} saved, {len(here)} here; "
            f"not here: {sorted(set(saved) - set(here))[:3]}; new: {sorted(set(here) - set(saved))[:3]})"
        )


def build_compressed_model(
    model: keras.Model,
    config: NNCFConfig,
    sections: list[Mapping[str, Any]],
    paths: list[str],
    states: Mapping[str, Any] | None,
) -> tuple[CompressionAlgorithmController, keras.Model]:
    """Apply ``sections`` (sparsity, pruning, quantization) to ``model`` (see the module docstring).

    ``states``: the ``builder_state`` of a saved compression state (None: initialize).
    """
    names = [str(s.get("algorithm")) for s in sections]
    if states is not None and set(states) != set(names):
        raise CompressionStateError(
            f"the compression state was saved for algorithms {sorted(states)}, but the config applies {sorted(names)}"
        )
    adapter = Adapter()
    graph = adapter.build_graph(model)
    base = adapter.copy_model(model)
    wb = walk(base)
    wb.input_names = walk(model).input_names

    weight_masks: dict[str, WeightMask] = {}
    channel_masks: dict[Any, ChannelMask] = {}
    fqs: dict[tuple[str, Any], FakeQuantize] = {}
    sparsity_builder: TFSparsityBuilder | None = None
    engine: KerasFilterPruning | None = None
    pruning_params: FilterPruningParams | None = None
    quant: tuple[QuantizationBuilder, Placement, dict] | None = None
    for section, path in zip(sections, paths):
        name = section.get("algorithm")
        state = None if states is None else states[name]
        if name in SPARSITY_ALGORITHMS:
            sparsity_builder = TFSparsityBuilder(config, section, path)
            weight_masks.update(sparsity_builder.plan(graph, state))
        elif name == PRUNING:
            pruning_params = FilterPruningParams.from_section(section)
            if pruning_params.learned_ranking:
                raise ConfigError(
                    [
                        (
                            f"{path}.params.interlayer_ranking_type",
                            "'learned_ranking' (LeGR) is not supported for Keras models: NNCF's TensorFlow "
                            "backend never had it either (LeGR is torch-only in NNCF 2.x); use "
                            "'unweighted_ranking' (the default) or prune the torch version of the model",
                        )
                    ]
                )
            engine = KerasFilterPruning(base, graph, pruning_params, path)
            engine.require_prunable()
            channel_masks.update(engine.plan_masks())
            if state is not None:
                _check_pruning_state(engine, state)
        else:  # quantization
            qb = QuantizationBuilder(config, section, path)
            if state is not None:
                if not isinstance(state, Mapping) or "placement" not in state:
                    raise CompressionStateError(f"corrupt quantization state: {state!r}")
                placement = Placement.from_dict(state["placement"])
                params = _params_from_state(state, placement, graph)
                qstate = dict(state)
            else:
                placement = qb.place(graph)
                params = qb.initial_params(model, graph, placement, adapter)
                qstate = qb.state(placement, params)
            quant = (qb, placement, qstate)
            fqs = _fake_quantizers(placement, params, graph)
    # a mask and a quantizer on one tensor: the mask first, then the quantizer (whatever the order
    # of the sections: NNCF applies sparsity and pruning before quantization)
    weight_fns: dict[str, Any] = dict(weight_masks)
    act_fns: dict[Any, Any] = dict(channel_masks)
    for (kind, target), fq in fqs.items():
        table = weight_fns if kind == "weight" else act_fns
        mask = table.get(target)
        if mask is not None:
            mask.quantizer = fq
        else:
            table[target] = fq
    compressed = rebuild(wb, act_fns, weight_fns, name=model.name).model
    if quant is not None:
        setattr(compressed, PLACEMENT_ATTRIBUTE, json.dumps(quant[1].to_dict()))

    ctx = TFCompressionContext(config, compressed, base, graph)
    ctx.input_names = list(wb.input_names)
    ctx.bn_samples = _bn_samples(sections)
    wc = walk(compressed)
    children: list[CompressionAlgorithmController] = []
    for name in names:
        if name in SPARSITY_ALGORITHMS:
            assert sparsity_builder is not None
            kernels = [weight_variable(*layer_of(wc, w.nodes[0])) for w in sparsity_builder.weights]
            part = TFSparsityController(compressed, sparsity_builder, kernels)
            if states is None:
                part.initialize()
            ctx.sparsity = part
            children.append(TFSparsityAlgorithmController(ctx, part, sparsity_builder.get_state()))
        elif name == PRUNING:
            assert engine is not None and pruning_params is not None

            def read(node: str, _w: Walk = wc, _b: Walk = wb) -> np.ndarray:
                # the compressed model's wrapped layers carry graph names; the others (shared with
                # base, whose nested models keep their prefixes) are found in base
                layer, part_ = layer_of(_w if node in _w.by_name or node not in _b.by_name else _b, node)
                info = graph.node(node).weights[min(graph.node(node).weights)]
                return np.asarray(weight_variable(layer, part_).numpy()).reshape(tuple(info.shape))

            engine.weights_of = read
            ctx.pruning = engine
            ctrl = TFFilterPruningController(ctx, engine, pruning_params, _pruning_state(engine))
            if states is None:
                if pruning_params.pruning_flops_target is not None:
                    engine.select_flops(pruning_params.pruning_flops_target)  # fails now when out of reach
                    if pruning_params.pruning_init > 0:
                        engine.apply(engine.select_flops(pruning_params.pruning_init))
                elif pruning_params.pruning_init > 0:
                    engine.apply(engine.select(pruning_params.pruning_init))
            children.append(ctrl)
        else:
            assert quant is not None
            ctx.placement = quant[1]
            qctrl = _TFQuantizationPart(compressed, quant[1], graph, quant[2])
            qctrl.ctx = ctx
            children.append(qctrl)
    if states is None:
        _adapt_batchnorm(compressed, config, ctx.bn_samples)
    if len(children) == 1:
        return children[0], compressed
    return TFCompositeCompressionController(ctx, children), compressed


def _fake_quantizers(placement: Placement, params: dict, graph: Graph) -> dict[tuple[str, Any], FakeQuantize]:
    """("weight", node) / ("act", target) -> a trainable ``FakeQuantize`` (as ``Adapter.apply`` makes them)."""
    result: dict[tuple[str, Any], FakeQuantize] = {}
    for p in placement.points:
        qp = params[p.target]
        if p.is_weight or p.target.type is TargetType.WEIGHT:
            result[("weight", p.target.node)] = make_fake_quantize(
                qp, f"{p.target.node}/fq_weights", qp.channel_axis, p.spec.mode, True
            )
        else:
            axis = qp.channel_axis if qp.per_channel else None
            rank = _rank_at(graph, p.target)
            if (
                axis is not None
                and rank is not None
                and rank >= 3
                and keras.config.image_data_format() == "channels_last"
            ):
                raise QuantizationError(
                    f"{p.target}: per-channel activation quantizers on channels-last Keras tensors are not "
                    "supported; quantize activations per tensor"
                )
            result[("act", p.target)] = make_fake_quantize(
                qp, f"{p.target.node}/fq_{p.target.type.value}_{p.target.port}", axis, p.spec.mode, True
            )
    return result


class _TFQuantizationPart(TFQuantizationController):
    """The quantization child of a combined model: strip and export go through the context."""

    ctx: TFCompressionContext

    strip_model = _strip_through_context
    export_model = _export_through_context
