"""Keras layers of the training-time sparsity and pruning masks.

- ``WeightMask``: ``weight * mask`` of one weighted layer, in the slot of ``QuantizedLayer``'s
  weight quantizer (so the layer computes with the masked kernel; the kernel variable itself is
  only changed by ``strip``). ``kind="binary"`` (magnitude, const sparsity): a 0/1
  non-trainable variable the controller sets. ``kind="rb"`` (RB sparsity): trainable logits,
  sampled with logistic noise in training (``1[logits + noise > 0]`` with a straight-through
  gradient of the sigmoid), ``1[logits > 0]`` in inference and once frozen. The variable holds
  ``logits / lr_multiplier`` and the gradient reaches it unscaled, so any optimizer moves the
  logits ``lr_multiplier`` times faster than the weights (SGD and Adam alike): Keras optimizers
  have no parameter groups. ``quantizer`` (a ``FakeQuantize``) runs after the mask when
  quantization is combined with sparsity.
- ``ChannelMask``: ``x * mask`` on the channel axis of an activation: filter pruning zeroes
  the output channels of every layer producing or following a pruned channel, which is what the
  physically pruned model computes (the channel is absent there), with zero gradients for the
  pruned filters. ``quantizer`` runs after it when an activation quantizer sits at that tensor.

Masks are variables of the compressed model: ``model.save_weights`` keeps them, so a checkpoint
(weights + ``ctrl.get_compression_state()``) resumes with the same masks.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from nncompress.errors import CompressionStateError
from nncompress.tensorflow.layers import PACKAGE

__all__ = ["RB_INIT_PROBABILITY", "ChannelMask", "WeightMask"]

RB_INIT_PROBABILITY = 0.99  # initial probability of keeping a weight (NNCF's)
KINDS = ("binary", "rb")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightMask(keras.layers.Layer):
    """``weight * mask`` (then ``quantizer``), on the graph's weight layout (see the module docstring)."""

    def __init__(
        self,
        shape: Any,
        kind: str = "binary",
        quantizer: keras.layers.Layer | None = None,
        graph_name: str = "",
        eps: float = 1e-6,
        lr_multiplier: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise CompressionStateError(f"{graph_name}: mask kind must be one of {KINDS}, got {kind!r}")
        if not (
            isinstance(lr_multiplier, (int, float)) and math.isfinite(lr_multiplier) and lr_multiplier > 0
        ):
            raise CompressionStateError(
                f"{graph_name}: the mask's lr_multiplier must be a positive number, got {lr_multiplier!r}"
            )
        self.lr_multiplier = float(lr_multiplier)
        self.mask_shape = tuple(int(d) for d in shape)
        self.kind = kind
        self.quantizer = quantizer
        self.graph_name = graph_name
        self.eps = float(eps)
        if kind == "binary":
            self.mask = self.add_weight(
                shape=self.mask_shape, initializer="ones", trainable=False, name="binary_mask"
            )
        else:
            self.mask = self.add_weight(
                shape=self.mask_shape,
                initializer=keras.initializers.Constant(_logit(RB_INIT_PROBABILITY) / self.lr_multiplier),
                trainable=True,
                name="rb_logits",
            )
        # 1.0 once frozen: RB masks stop learning (a variable, so a traced step sees the change)
        self.frozen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="frozen")
        if kind == "rb":
            # the mask at the moment of freezing: an optimizer with momentum (Adam) keeps moving the
            # logits for a while after their gradient became zero, which must not change the mask
            self.frozen_mask = self.add_weight(
                shape=self.mask_shape, initializer="ones", trainable=False, name="frozen_mask"
            )

    @property
    def logits(self) -> Any:
        """RB: the mask logits, ``lr_multiplier * variable`` with the logits' gradient passed to the
        variable unchanged (so an optimizer step moves them ``lr_multiplier`` times as far)."""
        if self.kind != "rb":
            raise CompressionStateError(f"{self.graph_name}: a binary mask has no logits")
        v = ops.convert_to_tensor(self.mask)
        if self.lr_multiplier == 1.0:
            return v
        return self.lr_multiplier * ops.stop_gradient(v) + (v - ops.stop_gradient(v))

    def binary(self, training: bool | None = None) -> Any:
        """The 0/1 mask used now (with noise and a straight-through gradient in RB training)."""
        if self.kind == "binary":
            return self.mask
        frozen = ops.cast(self.frozen > 0.5, self.mask.dtype)
        hard = frozen * self.frozen_mask + (1.0 - frozen) * ops.cast(self.mask > 0, self.mask.dtype)
        if not training:
            return hard
        u = tf.random.uniform(self.mask_shape, dtype=self.mask.dtype)
        noisy = self.logits + ops.log(u + self.eps) - ops.log(1.0 - u + self.eps)
        soft = ops.sigmoid(noisy)
        sampled = ops.cast(soft > 0.5, soft.dtype) + (soft - ops.stop_gradient(soft))
        return frozen * hard + (1.0 - frozen) * sampled

    def effective_mask(self) -> np.ndarray:
        """The 0/1 mask the inference model gets (numpy)."""
        value = np.asarray(self.mask.numpy())
        if self.kind == "binary":
            return value
        if float(self.frozen.numpy()) > 0.5:
            return np.asarray(self.frozen_mask.numpy(), dtype=np.float32)
        return (value > 0).astype(np.float32)

    def set_mask(self, value: np.ndarray) -> None:
        if self.kind != "binary":
            raise CompressionStateError(f"{self.graph_name}: an RB mask is learned, it cannot be set")
        self.mask.assign(np.asarray(value, dtype=np.float32).reshape(self.mask_shape))

    def freeze(self, frozen: bool = True) -> None:
        if self.kind == "rb" and frozen and float(self.frozen.numpy()) < 0.5:
            self.frozen_mask.assign(ops.cast(self.mask > 0, self.mask.dtype))
        self.frozen.assign(1.0 if frozen else 0.0)
        if self.kind == "rb":
            self.mask.trainable = not frozen

    def call(self, weight: Any, training: bool | None = None) -> Any:
        y = weight * ops.cast(self.binary(training), weight.dtype)
        return self.quantizer(y) if self.quantizer is not None else y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            shape=list(self.mask_shape),
            kind=self.kind,
            quantizer=None if self.quantizer is None else keras.saving.serialize_keras_object(self.quantizer),
            graph_name=self.graph_name,
            eps=self.eps,
            lr_multiplier=self.lr_multiplier,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WeightMask:
        config = dict(config)
        if config.get("quantizer") is not None:
            config["quantizer"] = keras.saving.deserialize_keras_object(config["quantizer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelMask(keras.layers.Layer):
    """``x * mask`` along ``axis`` (then ``quantizer``): the pruned channels of one tensor."""

    def __init__(
        self,
        channels: int,
        axis: int = -1,
        quantizer: keras.layers.Layer | None = None,
        graph_name: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.axis = int(axis)
        self.quantizer = quantizer
        self.graph_name = graph_name
        self.mask = self.add_weight(shape=(self.channels,), initializer="ones", trainable=False, name="mask")

    def set_mask(self, value: np.ndarray) -> None:
        self.mask.assign(np.asarray(value, dtype=np.float32).reshape(self.channels))

    def call(self, x: Any) -> Any:
        rank = len(x.shape)
        axis = self.axis % rank
        shape = [1] * rank
        shape[axis] = self.channels
        y = x * ops.cast(ops.reshape(self.mask, shape), x.dtype)
        return self.quantizer(y) if self.quantizer is not None else y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            channels=self.channels,
            axis=self.axis,
            quantizer=None if self.quantizer is None else keras.saving.serialize_keras_object(self.quantizer),
            graph_name=self.graph_name,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ChannelMask:
        config = dict(config)
        if config.get("quantizer") is not None:
            config["quantizer"] = keras.saving.deserialize_keras_object(config["quantizer"])
        return cls(**config)
