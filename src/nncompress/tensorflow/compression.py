"""``create_compressed_model`` for Keras: NNCF 2.x's ``nncf.tensorflow`` training-time API.

::

    config = NNCFConfig.from_json("mobilenet_v2_int8.json")
    config = register_default_init_args(config, train_dataset, batch_size=64)
    ctrl, qmodel = create_compressed_model(model, config)
    qmodel.compile(optimizer, loss, metrics)
    qmodel.fit(train_dataset, epochs=3, callbacks=create_compression_callbacks(ctrl))
    ctrl.export_model("model_int8.xml")

Algorithms: ``quantization``, ``filter_pruning``, ``magnitude_sparsity``, ``rb_sparsity`` and
``const_sparsity``, alone or combined (one sparsity algorithm at most); configs with sparsity or
pruning are built by :mod:`nncompress.tensorflow.algorithms`. The ``quantization`` section is read
as in NNCF 2.x (see ``QuantizationBuilder``); the placement is the core's, so it is the one
torch, ONNX and OpenVINO models get.

The compressed model is a new functional Keras model (the given one is not changed): a copy of
its layers with ``FakeQuantize`` layers whose ranges are trainable variables (straight-through
gradients), so it trains with ``model.fit`` or a custom ``tf.GradientTape`` loop. With
``compression_state`` (from ``ctrl.get_compression_state()``) the same quantizers are rebuilt
without any initialization; load the saved weights next (``model.load_weights``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nncompress.api.compression import (
    BaseCompressionScheduler,
    CompressionAlgorithmController,
    CompressionLoss,
    CompressionScheduler,
    CompressionStage,
    NNCFStatistics,
    Statistics,
)
from nncompress.config.effective import get_param
from nncompress.config.extra_structs import NNCFExtraConfigStruct
from nncompress.config.nncf_config import NNCFConfig
from nncompress.errors import CompressionStateError, ConfigError, DatasetError, ExportError
from nncompress.graph import Graph
from nncompress.hardware.rules import load_rules
from nncompress.parameters import TargetDevice
from nncompress.quantization.algorithms import MinMaxQuantization
from nncompress.quantization.overflow_fix import apply_overflow_fix
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.placement import merge_group_placements, place_quantizers
from nncompress.quantization.quantizer_params import compute_params
from nncompress.quantization.range_estimators import get_range_estimator
from nncompress.quantization.spec import Placement
from nncompress.scopes import IgnoredScope
from nncompress.tensorflow.adapter import Adapter, make_feed
from nncompress.tensorflow.graph_builder import walk
from nncompress.tensorflow.layers import FakeQuantize

__all__ = [
    "TFBNAdaptationInitArgs",
    "TFQuantizationRangeInitArgs",
    "create_compressed_model",
    "create_compression_callbacks",
    "register_default_init_args",
]

logger = logging.getLogger("nncompress")

STATE_VERSION = 1
AVAILABLE = ("quantization", "filter_pruning", "magnitude_sparsity", "rb_sparsity", "const_sparsity")
NOT_YET: tuple[str, ...] = ()
SPARSITY = ("magnitude_sparsity", "rb_sparsity", "const_sparsity")
GROUPS = ("weights", "activations")
# quantization keys this backend refuses: a clear error, never ignored. Those NNCF's own
# TensorFlow backend never read say so (NNCF 2.x: torch-only features).
_UNSUPPORTED_KEYS = {
    "initializer.precision": (
        "mixed-precision initialization (HAWQ / AutoQ / manual bitwidth_per_scope) is not supported for Keras "
        "models (NNCF's TensorFlow backend never had it); set bits per layer with scope_overrides instead"
    ),
    "compression_lr_multiplier": (
        "not supported for Keras quantization: NNCF's TensorFlow backend never supported it either (Keras "
        "optimizers have no parameter groups); the quantizer ranges train at the optimizer's learning rate"
    ),
    "weights.logarithm_scale": "logarithmic scale storage is not supported",
    "activations.logarithm_scale": "logarithmic scale storage is not supported",
    "activations.unified_scale_ops": "explicit unified-scale groups are not supported",
}
_STAGED_PARAMS_MESSAGE = (
    "staged quantization (activations_quant_start_epoch, weights_quant_start_epoch, lr_poly_drop_*, "
    "disable_wd_start_epoch, batch_multiplier) is torch-only in NNCF 2.x: NNCF's TensorFlow backend never "
    "supported it (its quantization controller has no scheduler). Remove 'params'; to quantize later, call "
    "create_compressed_model at the epoch you want quantization to start"
)


# ---------------------------------------------------------------------------------------------
# initialization data
# ---------------------------------------------------------------------------------------------
@dataclass
class TFQuantizationRangeInitArgs(NNCFExtraConfigStruct):
    """Data for range initialization: an iterable of batches (``(x, y)``, ``x`` or a dict of inputs)."""

    data_loader: Any
    batch_size: int | None = None

    @classmethod
    def get_id(cls) -> str:
        return "quantization_range_init_args"


@dataclass
class TFBNAdaptationInitArgs(NNCFExtraConfigStruct):
    """Data for BatchNorm adaptation (same form as the range initialization data)."""

    data_loader: Any
    batch_size: int | None = None

    @classmethod
    def get_id(cls) -> str:
        return "bn_adaptation_init_args"


def register_default_init_args(
    nncf_config: NNCFConfig, data_loader: Any, batch_size: int | None = None, callbacks: Any = None
) -> NNCFConfig:
    """Attach ``data_loader`` (a ``tf.data.Dataset`` of batches or any iterable of batches) to the config.

    Batches are ``(inputs, labels)`` pairs (the first element is fed to the model), input arrays,
    or dicts by input name. ``batch_size`` turns ``num_init_samples`` into a number of batches
    (read from the first batch when not given).

    >>> config = register_default_init_args(config, train_dataset, batch_size=64)  # doctest: +SKIP
    """
    if not isinstance(nncf_config, NNCFConfig):
        raise ConfigError(
            [("", f"register_default_init_args takes an NNCFConfig, got {type(nncf_config).__name__}")]
        )
    if data_loader is None or not hasattr(data_loader, "__iter__"):
        raise DatasetError(
            f"register_default_init_args: data_loader must be an iterable of batches (a tf.data.Dataset), "
            f"got {type(data_loader).__name__}"
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise DatasetError(
            f"register_default_init_args: batch_size must be a positive integer, got {batch_size!r}"
        )
    del callbacks  # NNCF's distributed-training hooks; nothing to call in a single process
    nncf_config.register_extra_structs(
        [
            TFQuantizationRangeInitArgs(data_loader, batch_size),
            TFBNAdaptationInitArgs(data_loader, batch_size),
        ]
    )
    return nncf_config


def model_inputs(batch: Any) -> Any:
    """The model inputs of a training batch: the first element of ``(x, y[, w])``, else the batch."""
    if isinstance(batch, tuple) and len(batch) in (2, 3):
        return batch[0]
    return batch


def _batch_len(batch: Any) -> int:
    first = keras.tree.flatten(model_inputs(batch))[0]
    return int(np.shape(first)[0]) if np.ndim(first) else 1


def _take_batches(loader: Any, num_samples: int, batch_size: int | None) -> Iterable[Any]:
    """Enough batches of ``loader`` for ``num_samples`` samples (the model inputs of each)."""
    count = 0
    for batch in loader:
        if count >= num_samples:
            return
        yield model_inputs(batch)
        count += batch_size or _batch_len(batch)


# ---------------------------------------------------------------------------------------------
# statistics, loss, controller
# ---------------------------------------------------------------------------------------------
@dataclass
class TFQuantizationStatistics(Statistics):
    """Quantizers of the Keras model: how many, on weights and activations, their bits and mode."""

    quantizers: list[dict[str, Any]] = field(default_factory=list)
    quantized_ops: int = 0
    quantizable_ops: int = 0

    @property
    def num_weight_quantizers(self) -> int:
        return sum(q["is_weight"] for q in self.quantizers)

    @property
    def num_activation_quantizers(self) -> int:
        return sum(not q["is_weight"] for q in self.quantizers)

    @property
    def ratio_of_quantized_ops(self) -> float:
        return self.quantized_ops / self.quantizable_ops if self.quantizable_ops else 0.0

    def to_str(self) -> str:
        lines = [
            f"  weight quantizers: {self.num_weight_quantizers}",
            f"  activation quantizers: {self.num_activation_quantizers}",
            f"  quantized ops: {self.quantized_ops} of {self.quantizable_ops} ({100 * self.ratio_of_quantized_ops:.1f}%)",
        ]
        for q in self.quantizers:
            lines.append(
                f"    {'W' if q['is_weight'] else 'A'} {q['target']}: {q['bits']}-bit {q['mode']} "
                f"{'per-channel' if q['per_channel'] else 'per-tensor'} [{q['low']:.4g}, {q['high']:.4g}]"
            )
        return "\n".join(lines)


class TFZeroCompressionLoss(CompressionLoss):
    """Quantization adds no loss term: a scalar zero TensorFlow tensor (addable to a Keras loss)."""

    def calculate(self, *args: Any, **kwargs: Any) -> tf.Tensor:
        return tf.constant(0.0)


class TFQuantizationController(CompressionAlgorithmController):
    """Drives a quantized Keras model: loss, scheduler, statistics, export, state."""

    algorithm_name = "quantization"

    def __init__(self, model: keras.Model, placement: Placement, graph: Graph, builder_state: dict[str, Any]):
        super().__init__(model)
        self.placement = placement
        self.graph = graph
        self.builder_state = builder_state
        self._loss = TFZeroCompressionLoss()
        self._scheduler: CompressionScheduler = BaseCompressionScheduler()

    @property
    def name(self) -> str:
        return self.algorithm_name

    @property
    def loss(self) -> CompressionLoss:
        return self._loss

    @property
    def scheduler(self) -> CompressionScheduler:
        return self._scheduler

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def quantizer_layers(self) -> list[FakeQuantize]:
        """Every ``FakeQuantize`` of the model (weight quantizers inside ``QuantizedLayer`` included)."""
        return [
            layer
            for layer in self.model._flatten_layers(include_self=False)
            if isinstance(layer, FakeQuantize)
        ]

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        stats = TFQuantizationStatistics()
        for layer in self.quantizer_layers():
            low, high = (np.asarray(v) for v in layer.bounds())
            stats.quantizers.append(
                {
                    "target": layer.graph_name,
                    "is_weight": layer.graph_name.endswith("/fq_weights"),
                    "bits": layer.num_bits,
                    "mode": layer.mode,
                    "per_channel": layer.axis is not None,
                    "low": float(np.min(low)),
                    "high": float(np.max(high)),
                }
            )
        rules = load_rules(TargetDevice(self.builder_state.get("target_device", "ANY")))
        quantizable = [n for n in self.graph.nodes if n.has_weights and rules.rule_for(n) is not None]
        served = {p.target.node for p in self.placement.weight_points}
        served |= {c for p in self.placement.activation_points for c, _ in p.consumers}
        stats.quantizable_ops = len(quantizable)
        stats.quantized_ops = sum(n.name in served for n in quantizable)
        result = NNCFStatistics()
        result.register(self.algorithm_name, stats)
        return result

    def get_state(self) -> dict[str, Any]:
        return {self.algorithm_name: {"scheduler_state": self.scheduler.get_state(), "loss_state": {}}}

    def load_state(self, state: dict[str, Any]) -> None:
        mine = state.get(self.algorithm_name) if isinstance(state, Mapping) else None
        if not isinstance(mine, Mapping):
            raise CompressionStateError(
                f"{self.algorithm_name}: the controller state has no entry for this algorithm (got {state!r})"
            )
        if "scheduler_state" in mine:
            self.scheduler.load_state(mine["scheduler_state"])

    def get_compression_state(self) -> dict[str, Any]:
        """``{"builder_state": ..., "ctrl_state": ...}``: plain JSON values, saved with the weights."""
        return {
            self.BUILDER_STATE: {self.algorithm_name: copy.deepcopy(self.builder_state)},
            self.CONTROLLER_STATE: self.get_state(),
        }

    def strip_model(self, model: keras.Model, do_copy: bool = False) -> keras.Model:
        """The model for inference: fake quantizers stay (they become INT8 ops on conversion)."""
        if not do_copy:
            return model
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    def export_model(
        self,
        save_path: str | Path,
        save_format: str | None = None,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        model_args: tuple | None = None,
    ) -> Path:
        """Write the model: ``openvino`` (``.xml`` IR, INT8 when run), ``tf`` (a SavedModel
        directory, NNCF's ``tf``), ``keras`` (a ``.keras`` file) or ``h5``. ``save_format`` None
        follows the suffix (``.xml``, ``.keras``, ``.h5``; anything else is a SavedModel directory)."""
        return export_keras_model(self.model, save_path, save_format, input_names, output_names, model_args)


def export_keras_model(
    model: keras.Model,
    save_path: str | Path,
    save_format: str | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    model_args: tuple | None = None,
) -> Path:
    """Write ``model`` as ``openvino`` (``.xml``), ``tf`` (SavedModel), ``keras`` or ``h5`` (see
    ``TFQuantizationController.export_model``); shared by every Keras controller."""
    if input_names or output_names or model_args:
        raise ExportError(
            "export_model: input_names, output_names and model_args are not supported for Keras models"
        )
    path = Path(save_path)
    fmt = (
        save_format or {".xml": "openvino", ".keras": "keras", ".h5": "h5"}.get(path.suffix.lower(), "tf")
    ).lower()
    if fmt == "frozen_graph":
        raise ExportError(
            "export_model: 'frozen_graph' is not supported; use 'tf' (SavedModel) or 'openvino'"
        )
    if fmt in ("tf", "saved_model"):
        model.export(str(path), format="tf_saved_model", verbose=False)
    elif fmt == "keras":
        model.save(path if path.suffix == ".keras" else path.with_suffix(".keras"))
    elif fmt == "h5":
        model.save(path if path.suffix == ".h5" else path.with_suffix(".h5"))
    elif fmt in ("openvino", "ir", "xml"):
        if path.suffix.lower() != ".xml":
            raise ExportError(f"Cannot export to {path}: the OpenVINO format writes a '.xml' file")
        import openvino as ov

        ov.save_model(ov.convert_model(model), str(path), compress_to_fp16=False)
    else:
        raise ExportError(
            f"Cannot export to {path}: unknown save_format {save_format!r}; use 'tf', 'keras', 'h5' or 'openvino'"
        )
    return path


class UpdateCompressionSchedulerCallback(keras.callbacks.Callback):
    """Steps the controller's scheduler every batch and epoch of ``model.fit`` (NNCF's callback)."""

    def __init__(self, ctrl: CompressionAlgorithmController):
        super().__init__()
        self.ctrl = ctrl

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.ctrl.scheduler.step()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.ctrl.scheduler.epoch_step()


class CompressionStatisticsCallback(keras.callbacks.Callback):
    """Reports the controller's statistics at the end of every epoch of ``model.fit``: as text
    (``logging`` at INFO, logger ``nncompress``) and/or as TensorBoard scalars in ``log_dir``
    (``compression/rate`` when the controller has a rate, ``compression/stage``). The rate is
    also put into ``fit``'s logs as ``compression_rate``, so ``History`` keeps it."""

    def __init__(
        self,
        ctrl: CompressionAlgorithmController,
        log_text: bool = True,
        log_tensorboard: bool = False,
        log_dir: str | None = None,
    ):
        super().__init__()
        if log_tensorboard and not log_dir:
            raise ConfigError(
                [("log_dir", "log_tensorboard=True needs a log_dir to write the event files to")]
            )
        if log_tensorboard:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                from nncompress.errors import BackendNotAvailableError

                raise BackendNotAvailableError(
                    "create_compression_callbacks(log_tensorboard=True) writes TensorBoard summaries, which need "
                    "the tensorboard package (pip install tensorboard)"
                )
        self.ctrl = ctrl
        self.log_text = log_text
        self.writer = (
            tf.summary.create_file_writer(str(Path(log_dir) / "compression")) if log_tensorboard else None
        )

    def _rate(self) -> float | None:
        try:
            return float(self.ctrl.compression_rate)  # type: ignore[attr-defined]
        except (AttributeError, ConfigError):
            return None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        rate = self._rate()
        if logs is not None and rate is not None:
            logs["compression_rate"] = rate
        if self.log_text:
            logger.info("Compression statistics after epoch %d:\n%s", epoch, self.ctrl.statistics().to_str())
        if self.writer is not None:
            with self.writer.as_default(step=epoch):
                if rate is not None:
                    tf.summary.scalar("compression/rate", rate)
                tf.summary.scalar("compression/stage", int(self.ctrl.compression_stage()))
            self.writer.flush()


def create_compression_callbacks(
    compression_ctrl: CompressionAlgorithmController,
    log_tensorboard: bool = False,
    log_text: bool = False,
    log_dir: str | None = None,
) -> list[keras.callbacks.Callback]:
    """Callbacks for ``model.fit``: the scheduler stepping (every batch and epoch: sparsity levels,
    pruning levels, freezing follow the schedule) and, with ``log_text`` / ``log_tensorboard``,
    the statistics at the end of each epoch (``CompressionStatisticsCallback``)."""
    callbacks: list[keras.callbacks.Callback] = [UpdateCompressionSchedulerCallback(compression_ctrl)]
    if log_text or log_tensorboard:
        callbacks.append(CompressionStatisticsCallback(compression_ctrl, log_text, log_tensorboard, log_dir))
    return callbacks


# ---------------------------------------------------------------------------------------------
# the quantization builder
# ---------------------------------------------------------------------------------------------
def _present(section: Mapping[str, Any], dotted: str) -> bool:
    node: Any = section
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


class QuantizationBuilder:
    """Reads a ``quantization`` section, places quantizers, initializes ranges, builds the model.

    Supported keys: ``preset``, ``quantize_inputs``, ``quantize_outputs``, ``weights`` /
    ``activations`` (``mode``, ``bits``, ``per_channel``, ``signed``, and per-group
    ``ignored_scopes`` / ``target_scopes``), ``ignored_scopes`` / ``target_scopes`` (Keras layer
    names or ``{re}`` patterns; nested layers are ``outer/inner``), ``scope_overrides`` (per-scope
    ``bits`` / ``mode`` / ``per_channel`` / ``signed`` for ``weights`` and ``activations``),
    ``validate_scopes``, ``overflow_fix``, ``initializer.range`` (one setting: ``type``,
    ``num_init_samples``, ``params``), ``initializer.batchnorm_adaptation``. Keys of
    ``_UNSUPPORTED_KEYS``, staged-quantization ``params`` and a top-level
    ``compression_lr_multiplier`` raise a ``ConfigError``.

    Scopes follow NNCF 2.x: a group's ``ignored_scopes`` add to the section's, a group's
    ``target_scopes`` replace the section's for that group.
    """

    def __init__(self, config: NNCFConfig, section: Mapping[str, Any], path: str):
        self.config = config
        self.section = section
        self.path = path
        problems = [(f"{path}.{k}", msg) for k, msg in _UNSUPPORTED_KEYS.items() if _present(section, k)]
        if section.get("params"):
            problems.append((f"{path}.params", _STAGED_PARAMS_MESSAGE))
        if config.get("compression_lr_multiplier") is not None:
            problems.append(
                (
                    "compression_lr_multiplier",
                    _UNSUPPORTED_KEYS["compression_lr_multiplier"]
                    + "; to speed up RB sparsity masks, set it in the rb_sparsity section",
                )
            )
        if isinstance(section.get("initializer", {}).get("range"), list):
            problems.append(
                (f"{path}.initializer.range", "per-scope range settings (a list) are not supported yet")
            )
        overrides = section.get("scope_overrides") or {}
        for group, entries in dict(overrides).items():
            for key, entry in dict(entries or {}).items():
                if isinstance(entry, Mapping) and "initializer" in entry:
                    problems.append(
                        (
                            f"{path}.scope_overrides.{group}.{key}.initializer",
                            "per-scope range initialization is not supported for Keras models; "
                            "give bits / mode / per_channel / signed only",
                        )
                    )
        if problems:
            raise ConfigError(problems)
        self.target_device = TargetDevice(get_param(config, "target_device"))

    def param(self, dotted: str) -> Any:
        return get_param(self.section, dotted, algorithm="quantization")

    def _match(self, graph: Graph, entries: Any, where: str, validate: bool) -> set[str]:
        """Node names matched by NNCF scopes (names and ``{re}`` patterns)."""
        if entries is None:
            return set()
        if not (isinstance(entries, str) or all(isinstance(e, str) for e in entries)):
            raise ConfigError([(where, f"expected a scope string or a list of them, got {entries!r}")])
        return IgnoredScope.from_nncf_scopes(entries, validate=validate).matches(graph.nodes, what=where)

    def _scope_sets(self, graph: Graph) -> dict[str, set[str]]:
        """Per group, the ops whose inputs / weights stay in float (NNCF 2.x: a group's
        ``ignored_scopes`` add to the section's; its ``target_scopes`` replace the section's)."""
        validate = bool(self.param("validate_scopes"))
        ops = {n.name for n in graph.nodes if n.kind not in ("Parameter", "Result")}
        ignored = self._match(
            graph, self.section.get("ignored_scopes"), f"{self.path}.ignored_scopes", validate
        )
        result = {}
        for group in GROUPS:
            sub = self.section.get(group, {})
            mine = ignored | self._match(
                graph, sub.get("ignored_scopes"), f"{self.path}.{group}.ignored_scopes", validate
            )
            where = f"{self.path}.{group}.target_scopes"
            target = sub.get("target_scopes")
            if target is None:
                target, where = self.section.get("target_scopes"), f"{self.path}.target_scopes"
            if target is not None:
                kept = self._match(graph, target, where, validate) & ops
                if not kept:
                    raise ConfigError([(where, f"matches no layer of the model; layers: {sorted(ops)[:8]}")])
                mine |= ops - kept
            result[group] = mine
        return result

    def _run_placement(self, graph: Graph, ignored: set[str]) -> Placement:
        def constraints(group: str) -> dict[str, Any]:
            sub = self.section.get(group, {})
            return {k: sub[k] for k in ("mode", "bits", "per_channel", "signed") if k in sub}

        return place_quantizers(
            graph,
            load_rules(self.target_device),
            preset=self.param("preset"),
            ignored_scope=IgnoredScope(names=sorted(ignored), validate=False),
            overrides=self.section.get("scope_overrides") or None,
            quantize_inputs=bool(self.param("quantize_inputs")),
            quantize_outputs=bool(self.param("quantize_outputs")),
            activations=constraints("activations"),
            weights=constraints("weights"),
        )

    def place(self, graph: Graph) -> Placement:
        """Quantizers for ``graph``: the core's placement with the section's scopes and overrides."""
        ignored = self._scope_sets(graph)
        if ignored["weights"] == ignored["activations"]:
            placement = self._run_placement(graph, ignored["weights"])
        else:  # one run per group, each with its own scopes
            placement = merge_group_placements(
                graph, lambda group: self._run_placement(graph, ignored[group])
            )
        return apply_overflow_fix(placement, graph, self.param("overflow_fix"), self.target_device)

    def initial_params(
        self, model: keras.Model, graph: Graph, placement: Placement, adapter: Adapter
    ) -> dict:
        """Ranges from data (``initializer.range``); activations get [-1, 1] / [0, 1] without samples."""
        range_cfg = {
            "type": self.param("initializer.range.type"),
            "params": self.section.get("initializer", {}).get("range", {}).get("params") or {},
        }
        estimator = get_range_estimator(range_cfg)
        num_samples = int(self.param("initializer.range.num_init_samples"))
        activations = placement.activation_points
        inputs = None
        selected = placement
        if activations and num_samples > 0:
            if not self.config.has_extra_struct(TFQuantizationRangeInitArgs):
                raise DatasetError(
                    f"{self.path}.initializer.range: range initialization over {num_samples} samples needs data: call "
                    "nncompress.tensorflow.register_default_init_args(config, dataset, batch_size) first, or set "
                    "initializer.range.num_init_samples to 0"
                )
            args = self.config.get_extra_struct(TFQuantizationRangeInitArgs)
            inputs = list(_take_batches(args.data_loader, num_samples, args.batch_size))
            if not inputs:
                raise DatasetError("The range initialization dataset is empty")
        else:
            selected = Placement(points=placement.weight_points)
        params: dict = {}
        if selected.points:
            calibrated = MinMaxQuantization(
                subset_size=max(len(inputs or []), 1),
                weights_range_estimator=estimator,
                activations_range_estimator=estimator,
            ).calibrate(model, graph, adapter, inputs, selected)
            params.update(calibrated.params)
        for p in placement.points:
            if p.target not in params:  # activations without samples: NNCF's initial ranges
                low = 0.0 if p.spec.signed is False or p.spec.mode == "asymmetric" else -1.0
                params[p.target] = compute_params(p.spec, low, 1.0, where=p.target)
        return params

    def state(self, placement: Placement, params: dict) -> dict[str, Any]:
        shapes = {str(p.target): list(np.shape(params[p.target].scale)) for p in placement.points}
        return {
            "version": STATE_VERSION,
            "target_device": self.target_device.value,
            "placement": placement.to_dict(),
            "scale_shapes": shapes,
            "grids": {
                str(p.target): [params[p.target].quant_min, params[p.target].quant_max]
                for p in placement.points
            },
        }


def _params_from_state(state: Mapping[str, Any], placement: Placement, graph: Graph) -> dict:
    """Placeholder parameters on the saved grids and shapes (the saved weights overwrite the ranges)."""
    params = {}
    shapes, grids = state.get("scale_shapes", {}), state.get("grids", {})
    for p in placement.points:
        key = str(p.target)
        if p.target.node not in graph:
            names = [n.name for n in graph.nodes]
            raise CompressionStateError(
                f"the compression state does not match the model: quantizer {key} names layer '{p.target.node}', "
                f"which the model does not have (layers: {names[:8]}{' ...' if len(names) > 8 else ''})"
            )
        node = graph.node(p.target.node)
        if p.is_weight and p.target.port not in node.weights:
            raise CompressionStateError(
                f"the compression state does not match the model: '{p.target.node}' has no weight"
            )
        try:
            qmin, qmax = (int(v) for v in grids[key])
            n = int(np.prod(shapes[key])) if shapes[key] else 1
        except (KeyError, TypeError, ValueError) as exc:
            raise CompressionStateError(
                f"corrupt quantization state: quantizer {key}: {type(exc).__name__}: {exc}"
            ) from None
        if p.spec.per_channel and p.is_weight:
            w = node.weights[p.target.port]
            if w.shape[p.spec.channel_axis] != n:
                raise CompressionStateError(
                    f"the compression state does not match the model: quantizer {key} has {n} channels, "
                    f"the weight of '{p.target.node}' has {w.shape[p.spec.channel_axis]}"
                )
        shape = (n,) if p.spec.per_channel else ()
        zero_point = np.full(shape, 0 if qmin < 0 or p.spec.mode == "symmetric" else qmin, dtype=np.int32)
        params[p.target] = QuantizerParams(
            scale=np.full(shape, 0.01, np.float32),
            zero_point=zero_point,
            quant_min=qmin,
            quant_max=qmax,
            channel_axis=p.spec.channel_axis if p.spec.per_channel else None,
        )
    return params


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------
def _check_input_info(config: NNCFConfig, model: keras.Model) -> None:
    """``input_info.sample_size`` must fit the model's inputs (the batch size may differ)."""
    info = config.get("input_info")
    if not info:
        return
    entries = info if isinstance(info, list) else [info]
    inputs = walk(model).inputs
    if len(entries) != len(inputs):
        raise ConfigError(
            [("input_info", f"describes {len(entries)} inputs, the Keras model has {len(inputs)}")]
        )
    for i, (entry, t) in enumerate(zip(entries, inputs)):
        size = list(entry.get("sample_size", []))
        shape = list(t.shape)
        fits = len(size) == len(shape) and all(d is None or d == s for d, s in zip(shape[1:], size[1:]))
        if not fits:
            where = "input_info.sample_size" if not isinstance(info, list) else f"input_info[{i}].sample_size"
            raise ConfigError([(where, f"{size} does not fit the Keras model input of shape {tuple(shape)}")])


def _adapt_batchnorm(model: keras.Model, config: NNCFConfig, num_samples: int) -> int:
    """NNCF's BatchNorm adaptation: forward passes in training mode (BatchNorm statistics update
    with a momentum of 0.9), other weights unchanged. Returns the number of batches run."""
    if num_samples <= 0:
        return 0
    if not config.has_extra_struct(TFBNAdaptationInitArgs):
        logger.info("BatchNorm adaptation skipped: no init args registered (register_default_init_args)")
        return 0
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not norms:
        return 0
    args = config.get_extra_struct(TFBNAdaptationInitArgs)
    w = walk(model)
    saved = [n.momentum for n in norms]
    frozen = {id(v): v.numpy() for v in model.trainable_variables}
    for n in norms:
        n.momentum = 0.9
    count = 0
    try:
        for batch in _take_batches(args.data_loader, num_samples, args.batch_size):
            feed = make_feed(w, batch, count)
            model(feed if len(feed) > 1 else feed[0], training=True)
            count += 1
    finally:
        for n, m in zip(norms, saved):
            n.momentum = m
    for v in model.trainable_variables:  # only BatchNorm statistics may change
        if id(v) in frozen and not np.array_equal(frozen[id(v)], v.numpy()):
            v.assign(frozen[id(v)])
    return count


def _check_state(compression_state: Any) -> dict[str, Any]:
    key = CompressionAlgorithmController.BUILDER_STATE
    if not isinstance(compression_state, Mapping) or not isinstance(compression_state.get(key), Mapping):
        raise CompressionStateError(
            f"a compression state is a dict with a '{key}' dict (from ctrl.get_compression_state()), got "
            f"{type(compression_state).__name__}"
        )
    states = dict(compression_state[key])
    if set(states) != {"quantization"}:
        raise CompressionStateError(
            f"the compression state was saved for algorithms {sorted(states)}, but the config applies ['quantization']"
        )
    state = states["quantization"]
    if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION or "placement" not in state:
        raise CompressionStateError(
            f"corrupt quantization state: expected version {STATE_VERSION} with a 'placement', got "
            f"{sorted(state) if isinstance(state, Mapping) else type(state).__name__}"
        )
    return dict(state)


def create_compressed_model(
    model: keras.Model,
    config: NNCFConfig | Mapping[str, Any],
    compression_state: Mapping[str, Any] | str | None = None,
) -> tuple[CompressionAlgorithmController, keras.Model]:
    """Apply ``config["compression"]`` to a functional or Sequential Keras model.

    Returns ``(controller, compressed_model)``; ``model`` itself is not changed. See the module
    docstring for the algorithms and ``QuantizationBuilder`` for the keys read.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"create_compressed_model expects a keras.Model, got {type(model).__name__}")
    if not isinstance(config, NNCFConfig):
        config = NNCFConfig.from_dict(dict(config))
    sections = config.algorithm_sections()
    single = isinstance(config.get("compression"), dict)
    problems = []
    for i, s in enumerate(sections):
        name = s.get("algorithm")
        where = "compression.algorithm" if single else f"compression[{i}].algorithm"
        if name in NOT_YET:
            problems.append(
                (where, f"'{name}' is not available for Keras models yet; available: {list(AVAILABLE)}")
            )
        elif name not in AVAILABLE:
            problems.append(
                (where, f"'{name}' is not available for Keras models; available: {list(AVAILABLE)}")
            )
    if problems:
        raise ConfigError(problems)
    if not sections:
        raise ConfigError([("compression", "no compression algorithm is configured")])
    names = [s.get("algorithm") for s in sections]
    paths = ["compression" if single else f"compression[{i}]" for i in range(len(sections))]
    duplicated = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if duplicated:
        raise ConfigError([("compression", f"algorithm '{duplicated[0]}' is configured more than once")])
    if sum(n in SPARSITY for n in names) > 1:
        raise ConfigError(
            [("compression", f"one sparsity algorithm at a time: {[n for n in names if n in SPARSITY]}")]
        )
    if any(n != "quantization" for n in names):
        from nncompress.tensorflow.algorithms import build_compressed_model

        _check_input_info(config, model)
        if isinstance(compression_state, (str, bytes)):
            compression_state = json.loads(compression_state)
        states = None
        if compression_state is not None:
            key = CompressionAlgorithmController.BUILDER_STATE
            if not isinstance(compression_state, Mapping) or not isinstance(
                compression_state.get(key), Mapping
            ):
                raise CompressionStateError(
                    f"a compression state is a dict with a '{key}' dict (from ctrl.get_compression_state()), got "
                    f"{type(compression_state).__name__}"
                )
            states = dict(compression_state[key])
        ctrl, compressed = build_compressed_model(model, config, sections, paths, states)
        if compression_state is not None and compression_state.get(ctrl.CONTROLLER_STATE):
            ctrl.load_state(compression_state[ctrl.CONTROLLER_STATE])
        return ctrl, compressed
    section = sections[0]
    builder = QuantizationBuilder(config, section, "compression" if single else "compression[0]")
    _check_input_info(config, model)

    adapter = Adapter()
    graph = adapter.build_graph(model)
    if isinstance(compression_state, (str, bytes)):  # the JSON text of a saved state
        compression_state = json.loads(compression_state)
    if compression_state is not None:
        state = _check_state(compression_state)
        placement = Placement.from_dict(state["placement"])
        params = _params_from_state(state, placement, graph)
    else:
        placement = builder.place(graph)
        params = builder.initial_params(model, graph, placement, adapter)
        state = builder.state(placement, params)
    compressed = adapter.apply(model, placement, params, trainable=True)
    if compression_state is None:
        _adapt_batchnorm(
            compressed,
            config,
            int(builder.param("initializer.batchnorm_adaptation.num_bn_adaptation_samples")),
        )
    ctrl = TFQuantizationController(compressed, placement, graph, state)
    if compression_state is not None and compression_state.get(ctrl.CONTROLLER_STATE):
        ctrl.load_state(compression_state[ctrl.CONTROLLER_STATE])
    return ctrl, compressed
