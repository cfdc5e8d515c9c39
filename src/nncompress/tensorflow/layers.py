"""Keras layers this backend inserts: fake quantizers, weight-quantized layer calls, split activations.

- ``FakeQuantize``: ``tf.quantization.fake_quant_with_min_max_vars`` (per tensor) or its
  ``_per_channel`` variant (per channel on any axis, moved to the last one): straight-through
  gradients in training, and OpenVINO's TensorFlow frontend turns it into a ``FakeQuantize`` op
  (weights into INT8 constants), so the converted model runs in INT8.
- ``QuantizedLayer``: calls a Keras layer's core computation (convolution / matmul / lookup and
  bias, *without* its fused activation) on fake-quantized weights. The wrapped layer keeps its
  variables; only Conv1D/2D/3D (and their Transpose), DepthwiseConv1D/2D, Dense and Embedding
  have a core function (a SeparableConv1D/2D runs as the two layers ``split_separable`` makes)
  (the ``CORE_OPS`` table).
- ``SplitActivation``: the fused ``activation=`` of such a layer, as a layer of its own, so the
  graph has the same Conv -> Relu structure as torch and ONNX.

Every layer carries ``graph_name``: the node name of the backend-neutral graph it belongs to
(Keras names cannot contain ``/``, nested-model names do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from nncompress.errors import BackendNotAvailableError, QuantizationError

if keras.backend.backend() != "tensorflow":
    raise BackendNotAvailableError(
        f"The nncompress TensorFlow backend needs Keras on the TensorFlow backend, but KERAS_BACKEND is "
        f"'{keras.backend.backend()}'; set KERAS_BACKEND=tensorflow before importing keras"
    )

PACKAGE = "nncompress"


def levels_to_bits(levels: int, where: str = "") -> tuple[int, bool]:
    """(num_bits, narrow_range) of TensorFlow's fake-quant ops for a grid of ``levels`` levels."""
    for bits in range(2, 17):
        if levels == 2**bits:
            return bits, False
        if levels == 2**bits - 1:
            return bits, True
    raise QuantizationError(
        f"{where}: a {levels}-level grid cannot be expressed by TensorFlow's fake-quant ops "
        "(they take 2^b or 2^b - 1 levels, 2 <= b <= 16)"
    )


def safe_name(name: str) -> str:
    """A Keras layer name for a graph name (Keras forbids ``/``)."""
    return name.replace("/", "__").replace(":", "_")


@keras.saving.register_keras_serializable(package=PACKAGE)
class FakeQuantize(keras.layers.Layer):
    """Fake quantization of a tensor on the grid ``[input_low, input_high]`` with ``levels`` levels.

    ``axis`` None: one range for the tensor; else one range per slice along ``axis``.
    ``mode`` "symmetric" keeps one variable, ``range_max``; the low end is ``range_max`` times the
    grid's fixed ratio (``-1``, ``-128/127`` or ``0``), so training moves both ends together.
    "asymmetric" keeps ``range_min`` and ``range_max``. ``trainable_range``: the range variables
    train (QAT, straight-through gradients of TensorFlow's fake-quant ops); in PTQ they are
    constants.
    """

    def __init__(
        self,
        input_low: Any,
        input_high: Any,
        levels: int,
        axis: int | None = None,
        mode: str = "symmetric",
        trainable_range: bool = False,
        graph_name: str = "",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trainable", trainable_range)
        super().__init__(**kwargs)
        self.input_low = np.asarray(input_low, dtype=np.float32)
        self.input_high = np.asarray(input_high, dtype=np.float32)
        self.levels = int(levels)
        self.axis = axis
        self.mode = mode
        self.trainable_range = bool(trainable_range)
        self.graph_name = graph_name
        where = graph_name or self.name
        self.num_bits, self.narrow_range = levels_to_bits(self.levels, where)
        if mode not in ("symmetric", "asymmetric"):
            raise QuantizationError(f"{where}: mode must be 'symmetric' or 'asymmetric', got {mode!r}")
        if self.input_low.shape != self.input_high.shape:
            raise QuantizationError(
                f"{where}: input_low {self.input_low.shape} and input_high {self.input_high.shape} differ in shape"
            )
        if axis is None and self.input_low.size != 1:
            raise QuantizationError(
                f"{where}: a per-tensor quantizer needs one range, got {self.input_low.size}"
            )
        if mode == "symmetric":
            if np.any(self.input_high <= 0):
                raise QuantizationError(f"{where}: a symmetric range needs input_high > 0")
            self.low_ratio = (self.input_low / self.input_high).astype(np.float32)
            self.range_min = None
        else:
            self.range_min = self.add_weight(
                shape=self.input_low.shape,
                initializer=keras.initializers.Constant(self.input_low),
                trainable=self.trainable_range,
                name="range_min",
            )
        self.range_max = self.add_weight(
            shape=self.input_high.shape,
            initializer=keras.initializers.Constant(self.input_high),
            trainable=self.trainable_range,
            name="range_max",
        )

    def bounds(self) -> tuple[Any, Any]:
        """The current ``(low, high)`` of the grid (tensors)."""
        if self.range_min is None:
            high = ops.abs(self.range_max) + 1e-7 if self.trainable_range else self.range_max
            return high * self.low_ratio, high
        return self.range_min, self.range_max

    def call(self, x: Any) -> Any:
        low, high = self.bounds()
        return fake_quantize(x, low, high, self.num_bits, self.narrow_range, self.axis)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("trainable", None)
        config.update(
            input_low=self.input_low.tolist(),
            input_high=self.input_high.tolist(),
            levels=self.levels,
            axis=self.axis,
            mode=self.mode,
            trainable_range=self.trainable_range,
            graph_name=self.graph_name,
        )
        return config


def fake_quantize(x: Any, low: Any, high: Any, num_bits: int, narrow_range: bool, axis: int | None) -> Any:
    """TensorFlow fake quantization of ``x``; per channel along ``axis`` (moved last and back)."""
    if axis is None:
        return tf.quantization.fake_quant_with_min_max_vars(
            x, tf.reshape(low, []), tf.reshape(high, []), num_bits=num_bits, narrow_range=narrow_range
        )
    rank = len(x.shape)
    axis = axis % rank
    if axis == rank - 1:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, low, high, num_bits=num_bits, narrow_range=narrow_range
        )
    perm = [i for i in range(rank) if i != axis] + [axis]
    back = list(np.argsort(perm))
    y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        tf.transpose(x, perm), low, high, num_bits=num_bits, narrow_range=narrow_range
    )
    return tf.transpose(y, back)


# ---------------------------------------------------------------------------------------------
# core computations of weighted layers (without the fused activation)
# ---------------------------------------------------------------------------------------------
def _add_bias(layer: Any, y: Any, rank: int) -> Any:
    if not getattr(layer, "use_bias", False) or getattr(layer, "bias", None) is None:
        return y
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return ops.add(y, ops.reshape(layer.bias, (1, -1) + (1,) * rank))
    return ops.add(y, layer.bias)


def _conv(layer: Any, x: Any, kernel: Any) -> Any:
    if getattr(layer, "padding", "") == "causal":
        raise QuantizationError(f"Layer '{layer.name}': causal Conv1D weights cannot be quantized yet")
    return _add_bias(layer, layer.convolution_op(x, kernel), layer.rank)


def _depthwise(layer: Any, x: Any, kernel: Any) -> Any:
    y = ops.depthwise_conv(
        x,
        kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    return _add_bias(layer, y, layer.rank)


def _conv_transpose(layer: Any, x: Any, kernel: Any) -> Any:
    y = ops.conv_transpose(
        x,
        kernel,
        strides=list(layer.strides),
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    return _add_bias(layer, y, layer.rank)


def _dense(layer: Any, x: Any, kernel: Any) -> Any:
    y = ops.matmul(x, kernel)
    return ops.add(y, layer.bias) if layer.bias is not None else y


def _embedding(layer: Any, x: Any, kernel: Any) -> Any:
    if x.dtype not in ("int32", "int64"):
        x = ops.cast(x, "int32")
    return ops.take(kernel, x, axis=0)


# layer class name -> (core function, name of the weight variable)
CORE_OPS: dict[str, tuple[Callable[[Any, Any, Any], Any], str]] = {
    "Conv1D": (_conv, "kernel"),
    "Conv2D": (_conv, "kernel"),
    "Conv3D": (_conv, "kernel"),
    "DepthwiseConv1D": (_depthwise, "kernel"),
    "DepthwiseConv2D": (_depthwise, "kernel"),
    "Conv1DTranspose": (_conv_transpose, "kernel"),
    "Conv2DTranspose": (_conv_transpose, "kernel"),
    "Conv3DTranspose": (_conv_transpose, "kernel"),
    "Dense": (_dense, "kernel"),
    "Embedding": (_embedding, "embeddings"),
    # separable convolutions are two graph nodes (their variables are read by part; they run as
    # the two layers ``split_separable`` makes)
    "SeparableConv1D:depthwise": (_depthwise, "depthwise_kernel"),
    "SeparableConv2D:depthwise": (_depthwise, "depthwise_kernel"),
    "SeparableConv1D:pointwise": (_conv, "pointwise_kernel"),
    "SeparableConv2D:pointwise": (_conv, "pointwise_kernel"),
}
SEPARABLE = frozenset({"SeparableConv1D", "SeparableConv2D"})
PARTS = ("depthwise", "pointwise")


def core_key(layer: Any, part: str | None = None) -> str:
    """The ``CORE_OPS`` key of ``layer`` (with ``part`` for a separable convolution)."""
    cls = type(layer).__name__
    return f"{cls}:{part}" if part else cls


def has_core(layer: Any) -> bool:
    """Whether ``layer``'s computation can run on quantized weights (and without its activation)."""
    return type(layer).__name__ in CORE_OPS or type(layer).__name__ in SEPARABLE


def weight_variable(layer: Any, part: str | None = None) -> Any:
    """The weight variable of a layer in ``CORE_OPS`` (its kernel or embedding table)."""
    return getattr(layer, CORE_OPS[core_key(layer, part)][1])


def is_depthwise(layer: Any, part: str | None = None) -> bool:
    return type(layer).__name__.startswith("Depthwise") or part == "depthwise"


def split_separable(layer: Any, input_shape: Any) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """A ``SeparableConv1D/2D`` as a built depthwise convolution and a 1x1 convolution (with the
    bias) holding copies of its variables: the two graph nodes as Keras layers."""
    one_d = type(layer).__name__ == "SeparableConv1D"
    depthwise_cls = keras.layers.DepthwiseConv1D if one_d else keras.layers.DepthwiseConv2D
    conv_cls = keras.layers.Conv1D if one_d else keras.layers.Conv2D
    dw = depthwise_cls(
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        depth_multiplier=layer.depth_multiplier,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        use_bias=False,
        name=f"{layer.name}_depthwise",
    )
    pw = conv_cls(
        layer.filters,
        1,
        data_format=layer.data_format,
        use_bias=layer.use_bias,
        name=f"{layer.name}_pointwise",
    )
    dw.build(input_shape)
    dw.kernel.assign(layer.depthwise_kernel)
    pw.build(dw.compute_output_shape(input_shape))
    pw.kernel.assign(layer.pointwise_kernel)
    if layer.use_bias:
        pw.bias.assign(layer.bias)
    return dw, pw


def depthwise_logical(kernel: Any) -> Any:
    """A depthwise kernel ``[k..., C_in, M]`` seen as ``[k..., 1, C_in * M]`` (output channel c*M+m)."""
    shape = tuple(kernel.shape)
    return ops.reshape(kernel, (*shape[:-2], 1, shape[-2] * shape[-1]))


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedLayer(keras.layers.Layer):
    """The core computation of ``layer`` (see ``CORE_OPS``) on its fake-quantized weight.

    ``weight_quantizer`` (a ``FakeQuantize`` on the logical weight layout) may be None: the
    layer then only drops the fused activation (a ``SplitActivation`` follows it).
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        weight_quantizer: FakeQuantize | None = None,
        graph_name: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        key = core_key(layer)
        if key not in CORE_OPS or ":" in key:
            raise QuantizationError(
                f"Layer '{layer.name}' ({key}) has no quantized form; supported: "
                f"{', '.join(sorted(k for k in CORE_OPS if ':' not in k))} (separable convolutions: split_separable)"
            )
        self.layer = layer
        self.weight_quantizer = weight_quantizer
        self.graph_name = graph_name or layer.name
        self._core = CORE_OPS[key][0]
        self._depthwise = is_depthwise(layer)

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def quantized_weight(self) -> Any:
        w = weight_variable(self.layer)
        if self.weight_quantizer is None:
            return w
        if self._depthwise:
            return ops.reshape(self.weight_quantizer(depthwise_logical(w)), tuple(w.shape))
        return self.weight_quantizer(w)

    def call(self, x: Any) -> Any:
        return self._core(self.layer, x, self.quantized_weight())

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            layer=keras.saving.serialize_keras_object(self.layer),
            weight_quantizer=None
            if self.weight_quantizer is None
            else keras.saving.serialize_keras_object(self.weight_quantizer),
            graph_name=self.graph_name,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuantizedLayer:
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        if config.get("weight_quantizer") is not None:
            config["weight_quantizer"] = keras.saving.deserialize_keras_object(config["weight_quantizer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SplitActivation(keras.layers.Activation):
    """The fused activation of a weighted layer, split out as its own graph node."""

    def __init__(self, activation: Any, graph_name: str = "", **kwargs: Any) -> None:
        super().__init__(activation, **kwargs)
        self.graph_name = graph_name

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["graph_name"] = self.graph_name
        return config
