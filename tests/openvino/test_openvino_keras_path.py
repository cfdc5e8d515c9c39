"""TensorFlow / Keras models reach nncompress through ``openvino.convert_model`` (the documented path).

Besides the Keras backend (``nncompress.tensorflow``), a Keras model can be converted to an
``openvino.Model`` (from the in-memory model, or from a SavedModel folder) and quantized by the
OpenVINO backend. The
quantized model must run on the CPU plugin in INT8 and stay close to the Keras model (SQNR of the
logits on held-out digits >= 20 dB; 8-bit PTQ of this small CNN measures ~30 dB, a wrong scale
or channel axis gives 0 dB or less) and agree with its predictions on >= 95 % of the images.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed: the Keras -> openvino.convert_model path needs it"
)
ov = pytest.importorskip("openvino")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

import nncompress as nncf  # noqa: E402
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402

QUIET = AdvancedQuantizationParameters(show_progress=False)


@pytest.fixture(scope="module")
def digits_keras():
    """A small Keras CNN (conv-bn-relu x2, pool, dense) trained for a few epochs on 8x8 digits (NHWC)."""
    digits = sklearn_datasets.load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(8, 8, 1)),
            tf.keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.ReLU(),
            tf.keras.layers.DepthwiseConv2D(3, padding="same"),
            tf.keras.layers.Conv2D(32, 1, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(3e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=64, verbose=0)
    return model, x[:1400], x[1400:], y[1400:]


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))


def _check(keras_model, ov_model, calib: np.ndarray, held_out: np.ndarray) -> None:
    data = nncf.Dataset([calib[i : i + 1] for i in range(128)])  # batch 1: the traced input shape
    quantized = nncf.quantize(ov_model, data, advanced_parameters=QUIET)
    assert any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    assert not any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())  # input untouched
    compiled = ov.Core().compile_model(quantized, "CPU")
    out = np.concatenate([compiled(held_out[i : i + 1])[0] for i in range(len(held_out))])
    ref = keras_model.predict(held_out, verbose=0)
    assert _sqnr(ref, out) >= 20.0, f"SQNR {_sqnr(ref, out):.1f} dB"
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.95
    # the CPU plugin really runs the convolutions in INT8
    precisions = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }
    assert precisions & {"i8", "u8"}, precisions


def test_keras_model_converted_in_memory(digits_keras):
    keras_model, calib, held_out, _ = digits_keras
    # Keras 3 models need an example input to be traced
    _check(keras_model, ov.convert_model(keras_model, example_input=calib[:1]), calib, held_out)


def test_keras_model_through_saved_model(digits_keras, tmp_path):
    keras_model, calib, held_out, _ = digits_keras
    folder = tmp_path / "saved_model"
    keras_model.export(str(folder))  # the SavedModel format (Keras 3); TF 2.x tf.saved_model.save alike
    _check(keras_model, ov.convert_model(str(folder)), calib, held_out)
