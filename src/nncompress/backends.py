"""Which backend handles a model, decided without importing frameworks the user does not use."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from nncompress.errors import BackendNotAvailableError, UnsupportedModelError

TORCH = "torch"
ONNX = "onnx"
OPENVINO = "openvino"
TENSORFLOW = "tensorflow"

# backend -> module that defines its BackendAdapter subclass (as `Adapter`)
_ADAPTERS = {
    TORCH: "nncompress.torch.adapter",
    ONNX: "nncompress.onnx.adapter",
    OPENVINO: "nncompress.openvino.adapter",
    TENSORFLOW: "nncompress.tensorflow.adapter",
}


def detect_backend(model: Any) -> str:
    """The backend name for ``model``; a framework is only checked if the user already imported it."""
    if "torch" in sys.modules:
        import torch

        if isinstance(model, torch.nn.Module):
            return TORCH
    if "onnx" in sys.modules:
        import onnx

        if isinstance(model, onnx.ModelProto):
            return ONNX
    if "openvino" in sys.modules:
        import openvino

        if isinstance(model, openvino.Model):
            return OPENVINO
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        try:
            import keras
        except ImportError:  # TensorFlow without Keras 3: not a model this backend takes
            keras = None
        if keras is not None and isinstance(model, keras.Model):
            return TENSORFLOW
    raise UnsupportedModelError(
        f"Cannot compress a model of type {type(model).__module__}.{type(model).__qualname__}: "
        "expected a torch.nn.Module, an onnx.ModelProto, an openvino.Model or a keras.Model"
    )


def get_adapter(backend: str) -> Any:
    """A fresh adapter instance for ``backend``; a clear error when that backend is not available."""
    try:
        module = importlib.import_module(_ADAPTERS[backend])
    except KeyError:
        raise UnsupportedModelError(f"Unknown backend '{backend}'; known: {sorted(_ADAPTERS)}") from None
    except ModuleNotFoundError as exc:
        raise BackendNotAvailableError(
            f"The {backend} backend is not available here ({exc}). "
            f"Install it with `pip install nncompress[{backend if backend != 'torch' else 'torch'}]`."
        ) from exc
    return module.Adapter()
