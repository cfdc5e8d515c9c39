"""Small Keras models (ResNet-style, MobileNet-style, digits MLP/CNN) shared by the TF backend tests.

Every model has fixed-seed random weights and runs in milliseconds on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

# NNCF's example configs, in ../shared beside the checkout
CONFIGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "nncf-configs"


def example_config(name: str):
    """NNCF example config ``name`` for the 16x16x3 models here, with its list of compression
    sections; the test is skipped when ../shared does not hold it."""
    from nncompress import NNCFConfig

    path = CONFIGS / name
    if not path.exists():
        pytest.skip(f"NNCF example config {path} is not available")
    config = NNCFConfig.from_json(path)
    config["input_info"] = {"sample_size": [1, 16, 16, 3]}
    sections = config["compression"] if isinstance(config["compression"], list) else [config["compression"]]
    return config, sections


def seeded(seed: int = 0) -> None:
    keras.utils.set_random_seed(seed)


def resnet_like(input_shape=(16, 16, 3), classes: int = 10, seed: int = 0) -> keras.Model:
    """Two residual blocks (conv-bn-relu, conv-bn + shortcut, relu), global pool, dense."""
    seeded(seed)

    def block(x, filters: int, stride: int, name: str):
        y = keras.layers.Conv2D(
            filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1"
        )(x)
        y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = keras.layers.ReLU(name=f"{name}_relu1")(y)
        y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_proj")(x)
        y = keras.layers.Add(name=f"{name}_add")([y, x])
        return keras.layers.ReLU(name=f"{name}_out")(y)

    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    x = block(x, 8, 1, "b1")
    x = block(x, 16, 2, "b2")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(classes, name="fc")(x)
    return keras.Model(inp, out, name="resnet_like")


def mobilenet_like(input_shape=(16, 16, 3), classes: int = 10, seed: int = 0) -> keras.Model:
    """MobileNetV2-style inverted residuals: expand 1x1, depthwise 3x3 + relu6, project 1x1."""
    seeded(seed)
    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu6")(x)
    for i, (expand, out_ch) in enumerate([(16, 8), (24, 12)]):
        y = keras.layers.Conv2D(expand, 1, use_bias=False, name=f"ir{i}_expand")(x)
        y = keras.layers.BatchNormalization(name=f"ir{i}_expand_bn")(y)
        y = keras.layers.ReLU(6.0, name=f"ir{i}_expand_relu6")(y)
        y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"ir{i}_dw")(y)
        y = keras.layers.BatchNormalization(name=f"ir{i}_dw_bn")(y)
        y = keras.layers.ReLU(6.0, name=f"ir{i}_dw_relu6")(y)
        y = keras.layers.Conv2D(out_ch, 1, use_bias=False, name=f"ir{i}_project")(y)
        y = keras.layers.BatchNormalization(name=f"ir{i}_project_bn")(y)
        x = keras.layers.Add(name=f"ir{i}_add")([x, y]) if x.shape[-1] == out_ch else y
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(classes, name="fc")(x)
    return keras.Model(inp, out, name="mobilenet_like")


def warm_batchnorm(model: keras.Model, data: np.ndarray, steps: int = 3) -> None:
    """Give BatchNorm layers non-trivial moving statistics (as a trained model has)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            rng = np.random.default_rng(len(layer.name))
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))


def images(n: int = 6, batch: int = 4, shape=(16, 16, 3), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, *shape)).astype("float32") for _ in range(n)]


def sqnr(reference: np.ndarray, other: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    noise = np.mean((np.asarray(reference, np.float64) - np.asarray(other, np.float64)) ** 2)
    return float(10 * np.log10(np.mean(np.asarray(reference, np.float64) ** 2) / max(noise, 1e-20)))


def digits(seed: int = 0):
    """sklearn's 8x8 digits as (x_train, y_train, x_test, y_test), images in [0, 1] as 8x8x1."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order], y[order].astype("int32")
    return x[:1400], y[:1400], x[1400:], y[1400:]


def digits_cnn(seed: int = 0) -> keras.Model:
    seeded(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="pixels"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, padding="same", name="conv2"),
            keras.layers.BatchNormalization(name="bn2"),
            keras.layers.ReLU(name="relu2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ],
        name="digits_cnn",
    )
