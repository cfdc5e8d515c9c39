"""The TensorFlow/Keras backend: Keras 3 models -> Graph, statistics, fake-quantize layers.

``nncompress.quantize(keras_model, dataset)`` returns a new functional Keras model with
``FakeQuantize`` layers (``tf.quantization.fake_quant_*``) that ``openvino.convert_model`` turns
into an INT8 OpenVINO model; the input model is not changed. Needs Keras 3 on the TensorFlow
backend (``pip install nncompress[tensorflow]``). Light to import: the submodules (and
TensorFlow itself) load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncompress._lazy import lazy_exports

_LAZY = {
    "Adapter": "nncompress.tensorflow.adapter",
    "placement_of": "nncompress.tensorflow.adapter",
    "build_graph": "nncompress.tensorflow.graph_builder",
    "walk": "nncompress.tensorflow.graph_builder",
    "ChannelMask": "nncompress.tensorflow.masking",
    "FakeQuantize": "nncompress.tensorflow.layers",
    "WeightMask": "nncompress.tensorflow.masking",
    "prune_keras_model": "nncompress.tensorflow.pruning",
    "QuantizedLayer": "nncompress.tensorflow.layers",
    "SplitActivation": "nncompress.tensorflow.layers",
    "create_compressed_model": "nncompress.tensorflow.compression",
    "create_compression_callbacks": "nncompress.tensorflow.compression",
    "register_default_init_args": "nncompress.tensorflow.compression",
}

__all__ = [
    "Adapter",
    "ChannelMask",
    "FakeQuantize",
    "QuantizedLayer",
    "SplitActivation",
    "WeightMask",
    "build_graph",
    "create_compressed_model",
    "create_compression_callbacks",
    "placement_of",
    "prune_keras_model",
    "register_default_init_args",
    "walk",
]


__getattr__, __dir__ = lazy_exports("nncompress.tensorflow", globals(), _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from nncompress.tensorflow.adapter import Adapter, placement_of
    from nncompress.tensorflow.compression import (
        create_compressed_model,
        create_compression_callbacks,
        register_default_init_args,
    )
    from nncompress.tensorflow.graph_builder import build_graph, walk
    from nncompress.tensorflow.layers import FakeQuantize, QuantizedLayer, SplitActivation
    from nncompress.tensorflow.masking import ChannelMask, WeightMask
    from nncompress.tensorflow.pruning import prune_keras_model
