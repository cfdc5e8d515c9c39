"""Weight sparsity of Keras models: ``magnitude_sparsity``, ``rb_sparsity``, ``const_sparsity``.

The algorithms of NNCF 2.x's ``nncf.tensorflow`` on the backend-neutral core
(:mod:`nncompress.sparsity`: parameters, schedules, thresholds, statistics):

- every Conv / DepthwiseConv / ConvTranspose / Dense / Embedding weight (the graph's weighted
  ops; never biases nor BatchNorm) gets one ``WeightMask``; ``ignored_scopes`` /
  ``target_scopes`` (layer names or ``{re}`` patterns) choose among them. A layer called twice
  shares one mask;
- ``magnitude_sparsity``: masks recomputed from the current weights at every
  ``ctrl.scheduler.epoch_step()`` (the Keras callback of ``create_compression_callbacks`` calls it
  at the start of each epoch of ``fit``), ``sparsity_init`` applied at creation, frozen from
  ``sparsity_freeze_epoch`` on; ``normed_abs`` / ``abs`` importance, ``global`` / ``local`` mode;
- ``rb_sparsity``: trainable mask logits (variables of the model, trained by the optimizer of
  ``fit`` or of a custom loop), initialized as in NNCF (keep probability 0.99); ``ctrl.loss()``
  is a scalar TensorFlow tensor pulling the density towards ``1 - level`` (NNCF's loss, p=0.05).
  The compressed model carries that loss in ``model.losses`` (a regularizer of the first mask), so
  ``fit`` minimizes it with no extra step (NNCF's ``model.add_loss(ctrl.loss)``, which Keras 3
  refuses for functional models); in a custom loop add ``ctrl.loss()`` (or ``sum(model.losses)``,
  not both). The logits learn ``compression_lr_multiplier`` times faster than the weights
  (default ``RB_DEFAULT_LR_MULTIPLIER``): NNCF's rate suits ImageNet-length epochs, a few epochs
  of a small data set would leave the masks where they started;
- ``const_sparsity``: fixed masks ``1[w != 0]``: fine-tuning keeps the zeros.

``strip`` multiplies the masks into the kernels; the exported SavedModel / OpenVINO IR carries the
zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nncompress.api.compression import CompressionLoss, CompressionStage, NNCFStatistics
from nncompress.config.effective import get_param
from nncompress.errors import CompressionStateError, ConfigError
from nncompress.graph import Graph
from nncompress.graph import op_kinds as K
from nncompress.scopes import IgnoredScope
from nncompress.sparsity.params import SparsityParams, check_sparsity_level
from nncompress.sparsity.schedule import make_sparsity_scheduler
from nncompress.sparsity.selection import importance, select_threshold, select_thresholds
from nncompress.sparsity.statistics import (
    ConstSparsityStatistics,
    LayerThreshold,
    MagnitudeSparsityStatistics,
    RBSparsityStatistics,
    SparsifiedLayerSummary,
    SparsifiedModelStatistics,
)
from nncompress.tensorflow.layers import safe_name
from nncompress.tensorflow.masking import WeightMask

__all__ = [
    "SPARSITY_ALGORITHMS",
    "SparsifiedWeight",
    "TFSparsityBuilder",
    "TFSparsityController",
    "plan_sparsified_weights",
]

logger = logging.getLogger("nncompress")

STATE_VERSION = 1
SPARSITY_ALGORITHMS = ("magnitude_sparsity", "rb_sparsity", "const_sparsity")
SPARSIFIABLE_KINDS = frozenset(
    {
        K.CONVOLUTION,
        K.DEPTHWISE_CONVOLUTION,
        K.GROUP_CONVOLUTION,
        K.CONVOLUTION_TRANSPOSE,
        K.MATMUL,
        K.EMBEDDING,
    }
)
RB_LOSS_SCALE = 0.05  # NNCF's p: a density 0.05 away from the target costs 1
# Learning-rate factor of the RB mask logits when the config sets no compression_lr_multiplier.
# The logits start at logit(0.99) = 4.6 (NNCF's init) and must cross 0 to prune a weight: at
# Adam's 1e-3 that takes ~4,600 steps with a factor of 1 (fine over ImageNet epochs, hopeless
# over a few epochs of a small data set); with this factor, ~100 steps.
RB_DEFAULT_LR_MULTIPLIER = 50.0


@dataclass(frozen=True)
class SparsifiedWeight:
    """One sparsified weight: its first node (its name in statistics), the variable path, its shape
    (the graph's layout: a depthwise kernel is ``[k..., 1, C * M]``) and every node using it."""

    name: str
    param: str
    shape: tuple[int, ...]
    nodes: tuple[str, ...]


def _scopes(
    section: Mapping[str, Any], key: str, validate: bool, graph: Graph, where: str
) -> set[str] | None:
    entries = section.get(key)
    if entries is None:
        return None
    scope = IgnoredScope.from_nncf_scopes(entries, validate=validate)
    return scope.matches([n for n in graph.nodes if n.kind not in ("Parameter", "Result")], f"{where}.{key}")


def plan_sparsified_weights(
    graph: Graph, section: Mapping[str, Any], where: str = "compression"
) -> tuple[list[SparsifiedWeight], dict[str, str]]:
    """The weights of ``graph`` to sparsify and, for each weighted node left dense, why."""
    algorithm = section.get("algorithm")
    validate = bool(get_param(section, "validate_scopes", algorithm=algorithm))
    ignored = _scopes(section, "ignored_scopes", validate, graph, where) or set()
    targeted = _scopes(section, "target_scopes", validate, graph, where)
    skipped: dict[str, str] = {}
    by_param: dict[str, SparsifiedWeight] = {}
    excluded: dict[str, str] = {}
    for node in graph.nodes:
        if not node.weights:
            continue
        info = node.weights[min(node.weights)]
        if node.kind not in SPARSIFIABLE_KINDS:
            skipped[node.name] = (
                f"a {node.kind} op: only convolution, dense and embedding weights are sparsified"
            )
            continue
        if node.name in ignored or (targeted is not None and node.name not in targeted):
            skipped[node.name] = "matches ignored_scopes" if node.name in ignored else "not in target_scopes"
            excluded.setdefault(info.name, node.name)
            continue
        old = by_param.get(info.name)
        if old is not None:
            by_param[info.name] = SparsifiedWeight(old.name, old.param, old.shape, (*old.nodes, node.name))
        else:
            by_param[info.name] = SparsifiedWeight(node.name, info.name, tuple(info.shape), (node.name,))
    for param in [p for p in by_param if p in excluded]:  # a shared weight kept dense by one use
        for n in by_param.pop(param).nodes:
            skipped[n] = f"its weight '{param}' is also used by '{excluded[param]}', which is kept dense"
    return list(by_param.values()), skipped


class TFSparsityBuilder:
    """Reads a sparsity section, plans the masked weights and makes one ``WeightMask`` per weight."""

    def __init__(self, config: Any, section: Mapping[str, Any], path: str):
        self.config = config
        self.section = section
        self.path = path
        self.algorithm = str(section.get("algorithm"))
        self.lr_multiplier = self._lr_multiplier()
        self.params = (
            SparsityParams.from_section(section, path) if self.algorithm != "const_sparsity" else None
        )
        self.weights: list[SparsifiedWeight] = []
        self.masks: list[WeightMask] = []
        self.skipped: dict[str, str] = {}

    def _lr_multiplier(self) -> float:
        """``compression_lr_multiplier`` of the section, else of the config's top level, else the
        default: the learning-rate factor of RB's mask logits (magnitude and const sparsity train
        nothing of their own, so it changes nothing there, as in NNCF)."""
        where = f"{self.path}.compression_lr_multiplier"
        value = self.section.get("compression_lr_multiplier")
        if value is None:
            value = self.config.get("compression_lr_multiplier") if hasattr(self.config, "get") else None
            where = "compression_lr_multiplier"
        if value is None:
            return RB_DEFAULT_LR_MULTIPLIER
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not np.isfinite(value)
            or value <= 0
        ):
            raise ConfigError([(where, f"must be a positive number, got {value!r}")])
        return float(value)

    def plan(self, graph: Graph, state: Mapping[str, Any] | None = None) -> dict[str, WeightMask]:
        """Node name -> its mask (the same mask for every use of a shared weight)."""
        self.weights, self.skipped = plan_sparsified_weights(graph, self.section, self.path)
        if not self.weights:
            reasons = "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:8]) or "no weights"
            raise ConfigError([(self.path, f"{self.algorithm}: no weight is left to sparsify ({reasons})")])
        if state is not None:
            self._check_state(state)
        kind = "rb" if self.algorithm == "rb_sparsity" else "binary"
        by_node: dict[str, WeightMask] = {}
        self.masks = []
        for w in self.weights:
            mask = WeightMask(
                w.shape,
                kind,
                graph_name=f"{w.name}/sparsity_mask",
                name=safe_name(f"{w.name}/mask"),
                lr_multiplier=self.lr_multiplier if kind == "rb" else 1.0,
            )
            self.masks.append(mask)
            for n in w.nodes:
                by_node[n] = mask
        return by_node

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"version": STATE_VERSION, "weights": [w.param for w in self.weights]}
        if self.algorithm == "rb_sparsity":
            state["lr_multiplier"] = self.lr_multiplier  # the variables hold logits / multiplier
        return state

    def _check_state(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise CompressionStateError(
                f"{self.algorithm}: builder state {state!r} is not supported (expected version {STATE_VERSION})"
            )
        if self.algorithm == "rb_sparsity":
            saved_m = state.get("lr_multiplier", 1.0)
            if not isinstance(saved_m, (int, float)) or saved_m <= 0:
                raise CompressionStateError(
                    f"{self.algorithm}: corrupt lr_multiplier {saved_m!r} in the state"
                )
            self.lr_multiplier = float(saved_m)  # the saved variables are logits / this factor
        saved, here = list(state.get("weights", [])), [w.param for w in self.weights]
        if saved != here:
            raise CompressionStateError(
                f"{self.algorithm}: the saved masks do not fit this model ({len(saved)} saved, {len(here)} here; "
                f"not here: {sorted(set(saved) - set(here))[:3]}; new: {sorted(set(here) - set(saved))[:3]})"
            )


class RBSparseLoss(CompressionLoss):
    """RB's loss: ``((kept / total - (1 - level)) / 0.05) ** 2`` (global) or its mean over layers
    (local), on the masks' sigmoid-straight-through values; a scalar TensorFlow tensor."""

    def __init__(self, masks: list[WeightMask], mode: str = "global"):
        self.masks = list(masks)
        self.mode = mode
        # variables, not Python values: a traced train step (``fit``) sees the scheduler's changes
        self._target = tf.Variable(1.0, trainable=False, dtype=tf.float32)  # density
        self._disabled = tf.Variable(0.0, trainable=False, dtype=tf.float32)

    @property
    def target(self) -> float:
        return float(self._target.numpy())

    @target.setter
    def target(self, value: float) -> None:
        self._target.assign(float(value))

    @property
    def disabled(self) -> bool:
        return bool(self._disabled.numpy() > 0.5)

    @disabled.setter
    def disabled(self, value: bool) -> None:
        self._disabled.assign(1.0 if value else 0.0)

    def calculate(self, *args: Any, **kwargs: Any) -> tf.Tensor:
        if not self.masks:
            return tf.constant(0.0)

        def ste(m: WeightMask) -> tf.Tensor:
            soft = tf.sigmoid(m.logits)
            return tf.cast(soft > 0.5, soft.dtype) + (soft - tf.stop_gradient(soft))

        if self.mode == "local":
            terms = [tf.square((tf.reduce_mean(ste(m)) - self._target) / RB_LOSS_SCALE) for m in self.masks]
            value = tf.add_n(terms) / len(terms)
        else:
            kept = tf.add_n([tf.reduce_sum(ste(m)) for m in self.masks])
            total = float(sum(int(np.prod(m.mask_shape)) for m in self.masks))
            value = tf.square((kept / total - self._target) / RB_LOSS_SCALE)
        return value * (1.0 - self._disabled)

    def get_state(self) -> dict[str, Any]:
        return {"target": self.target, "disabled": self.disabled}

    def load_state(self, state: dict[str, Any]) -> None:
        try:
            self.target = float(state["target"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CompressionStateError(f"rb_sparsity loss: corrupt state {state!r}") from exc
        self.disabled = bool(state.get("disabled", False))


class _ZeroLoss(CompressionLoss):
    def calculate(self, *args: Any, **kwargs: Any) -> tf.Tensor:
        return tf.constant(0.0)


class TFSparsityController:
    """The sparsity part of a compressed Keras model: masks, level, schedule, statistics.

    Mixed into the backend's controller (``TFSparsityAlgorithmController`` in ``compression``);
    this class holds the algorithm itself.
    """

    def __init__(self, model: keras.Model, builder: TFSparsityBuilder, kernels: list[Any]):
        self.algorithm_name = builder.algorithm
        self.model_ref = model
        self.params = builder.params
        self.sparsified_weights = list(builder.weights)
        self.masks = list(builder.masks)
        self.kernels = list(kernels)  # the kernel variable of each weight (shape of the layer)
        self.skipped = dict(builder.skipped)
        self.frozen = False
        self._level = self.params.sparsity_init if self.params is not None else 0.0
        if self.algorithm_name == "rb_sparsity":
            self.loss: CompressionLoss = RBSparseLoss(self.masks, self.params.mode)
            self.loss.target = 1.0 - self._level
            # fit() adds model.losses to the task loss: the RB loss rides on one mask's regularizer
            loss = self.loss
            self.masks[0].mask.regularizer = lambda _variable: loss.calculate()
        else:
            self.loss = _ZeroLoss()
        self.scheduler = make_sparsity_scheduler(self, self.params) if self.params is not None else None

    # -- weights ---------------------------------------------------------------------------------
    def weight_values(self) -> list[np.ndarray]:
        """Each sparsified weight in the graph's layout (numpy)."""
        return [np.asarray(k.numpy()).reshape(w.shape) for k, w in zip(self.kernels, self.sparsified_weights)]

    def initialize(self) -> None:
        """At creation (not with a saved state): magnitude's ``sparsity_init``; const's fixed masks."""
        if self.algorithm_name == "const_sparsity":
            for value, mask in zip(self.weight_values(), self.masks):
                mask.set_mask((value != 0).astype(np.float32))
            self.frozen = True
        elif self.algorithm_name == "magnitude_sparsity" and self._level > 0:
            self._set_magnitude(self._level, self.sparsified_weights, self.masks, self.params.mode)

    def _set_magnitude(
        self, level: float, weights: list[SparsifiedWeight], masks: list[WeightMask], mode: str
    ) -> list[float]:
        index = {w.param: i for i, w in enumerate(self.sparsified_weights)}
        all_values = self.weight_values()
        values = [importance(all_values[index[w.param]], self.params.weight_importance) for w in weights]
        thresholds = select_thresholds(values, level, mode)
        for value, threshold, mask in zip(values, thresholds, masks):
            mask.set_mask((value > threshold).astype(np.float32))
        return thresholds

    def find(self, layer: str | SparsifiedWeight) -> SparsifiedWeight:
        if isinstance(layer, SparsifiedWeight) and layer in self.sparsified_weights:
            return layer
        name = layer.name if isinstance(layer, SparsifiedWeight) else layer
        for w in self.sparsified_weights:
            if name in (w.name, w.param) or name in w.nodes:
                return w
        names = ", ".join(w.name for w in self.sparsified_weights[:6])
        raise ConfigError(
            [(str(name), f"{self.algorithm_name}: not a sparsified layer (sparsified: {names}, ...)")]
        )

    # -- level -----------------------------------------------------------------------------------
    def set_sparsity_level(
        self, sparsity_level: float, target_sparsified_module_info: str | SparsifiedWeight | None = None
    ) -> None:
        """Magnitude: recompute the masks for the level from the current weights (of every layer, or
        of one). RB: the density the loss pulls towards. Const: a ``ConfigError``."""
        level = check_sparsity_level(sparsity_level)
        if self.algorithm_name == "const_sparsity":
            raise ConfigError(
                [
                    (
                        "compression.algorithm",
                        f"const_sparsity keeps the zeros the weights have; its level cannot be set to {level}",
                    )
                ]
            )
        if self.algorithm_name == "rb_sparsity":
            self.loss.target = 1.0 - level  # type: ignore[attr-defined]
            self._level = level
            return
        if self.frozen:
            raise CompressionStateError(
                f"magnitude_sparsity: the masks are frozen (sparsity_freeze_epoch {self.params.sparsity_freeze_epoch} "
                "reached, or freeze() called); the sparsity level cannot change any more"
            )
        if target_sparsified_module_info is not None:
            w = self.find(target_sparsified_module_info)
            i = self.sparsified_weights.index(w)
            self._set_magnitude(level, [w], [self.masks[i]], "local")
        else:
            self._set_magnitude(level, self.sparsified_weights, self.masks, self.params.mode)
            self._level = level

    def freeze(self) -> None:
        """Stop changing the masks (``sparsity_freeze_epoch``): RB logits stop learning, its loss is 0."""
        self.frozen = True
        for m in self.masks:
            m.freeze(True)
        if isinstance(self.loss, RBSparseLoss):
            self.loss.disabled = True

    def unfreeze(self) -> None:
        if self.algorithm_name == "const_sparsity":
            return
        self.frozen = False
        for m in self.masks:
            m.freeze(False)
        if isinstance(self.loss, RBSparseLoss):
            self.loss.disabled = False

    @property
    def current_sparsity_level(self) -> float:
        return self._level

    @property
    def reached_sparsity(self) -> float:
        rows = self._layer_zeros()
        total = sum(n for _, _, n in rows)
        return sum(z for _, z, _ in rows) / total if total else 0.0

    @property
    def compression_rate(self) -> float:
        return self.reached_sparsity if self.algorithm_name == "const_sparsity" else self._level

    def compression_stage(self) -> CompressionStage:
        if self.algorithm_name == "const_sparsity":
            return CompressionStage.FULLY_COMPRESSED
        level = self._level
        if level <= 0.0:
            return CompressionStage.UNCOMPRESSED
        if level >= self.params.target_level - 1e-9:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    # -- statistics ------------------------------------------------------------------------------
    def effective_weights(self) -> list[np.ndarray]:
        """Each weight with its mask applied (graph layout): what the stripped model holds."""
        return [v * m.effective_mask().reshape(v.shape) for v, m in zip(self.weight_values(), self.masks)]

    def _layer_zeros(self) -> list[tuple[SparsifiedWeight, int, int]]:
        return [
            (w, int(np.sum(e == 0)), int(e.size))
            for w, e in zip(self.sparsified_weights, self.effective_weights())
        ]

    def model_statistics(self) -> SparsifiedModelStatistics:
        rows = self._layer_zeros()
        layer_numel = sum(n for _, _, n in rows)
        layer_zeros = sum(z for _, z, _ in rows)
        sparsified = {id(k) for k in self.kernels}
        mask_vars = {id(v) for m in self.masks for v in m.weights}
        others = [
            v
            for v in self.model_ref.weights
            if id(v) not in sparsified and id(v) not in mask_vars and v.trainable
        ]
        other_numel = sum(int(np.prod(v.shape)) for v in others)
        other_zeros = sum(int(np.sum(np.asarray(v.numpy()) == 0)) for v in others)
        total, zeros = layer_numel + other_numel, layer_zeros + other_zeros
        summaries = [
            SparsifiedLayerSummary(
                name=w.name,
                weight_shape=tuple(w.shape),
                sparsity_level=z / n if n else 0.0,
                weight_percentage=100.0 * n / (layer_numel or 1),
                zeros=z,
                numel=n,
            )
            for w, z, n in rows
        ]
        return SparsifiedModelStatistics(
            sparsity_level=zeros / total if total else 0.0,
            sparsity_level_for_layers=layer_zeros / layer_numel if layer_numel else 0.0,
            sparsified_layers_summary=summaries,
            total_params=total,
            total_zeros=zeros,
        )

    def _thresholds(self) -> list[LayerThreshold]:
        values = [importance(v, self.params.weight_importance) for v in self.weight_values()]
        out = []
        for w, v, m in zip(self.sparsified_weights, values, self.masks):
            keep = m.effective_mask().reshape(v.shape).astype(bool)
            out.append(LayerThreshold(w.name, float(v[~keep].max()) if (~keep).any() else float("-inf")))
        if self.params.mode == "global" and out:
            level = select_threshold(np.concatenate([v.reshape(-1) for v in values]), self._level)
            out = [LayerThreshold(t.name, level) for t in out]
        return out

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        if self.algorithm_name == "const_sparsity":
            stats: Any = ConstSparsityStatistics(self.model_statistics())
        elif self.algorithm_name == "rb_sparsity":
            probs = [tf.reduce_sum(tf.sigmoid(m.logits)).numpy() for m in self.masks]
            total = sum(int(np.prod(m.mask_shape)) for m in self.masks)
            stats = RBSparsityStatistics(
                model_statistics=self.model_statistics(),
                masks_consistency=1.0,
                target_sparsity_level=self._level,
                mean_sparse_prob=1.0 - float(sum(probs)) / total if total else 0.0,
            )
        else:
            stats = MagnitudeSparsityStatistics(
                model_statistics=self.model_statistics(),
                thresholds=[] if quickly_collected_only else self._thresholds(),
                target_sparsity_level=self.params.target_level,
                current_sparsity_level=self._level,
                mode=self.params.mode,
            )
        result = NNCFStatistics()
        result.register(self.algorithm_name, stats)
        return result

    def describe(self) -> str:
        """Which weights carry a mask, and which weighted layers are left dense and why."""
        lines = [f"{self.algorithm_name}: {len(self.sparsified_weights)} sparsified weights"]
        lines += [f"  {w.param} {w.shape} at {', '.join(w.nodes)}" for w in self.sparsified_weights]
        if self.skipped:
            lines.append(f"left dense ({len(self.skipped)}):")
            lines += [f"  {n}: {why}" for n, why in self.skipped.items()]
        return "\n".join(lines)

    # -- state -----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"frozen": self.frozen, "sparsity_level": self._level}
        if self.scheduler is not None:
            state["scheduler_state"] = self.scheduler.get_state()
        state["loss_state"] = self.loss.get_state() if isinstance(self.loss, RBSparseLoss) else {}
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        try:
            self._level = float(state.get("sparsity_level", self._level))
        except (TypeError, ValueError) as exc:
            raise CompressionStateError(
                f"{self.algorithm_name}: corrupt sparsity level in {dict(state)!r}"
            ) from exc
        if self.scheduler is not None and "scheduler_state" in state:
            self.scheduler.load_state(state["scheduler_state"])
        if isinstance(self.loss, RBSparseLoss) and state.get("loss_state"):
            self.loss.load_state(state["loss_state"])
        if state.get("frozen"):
            self.freeze()
        else:
            self.unfreeze()
