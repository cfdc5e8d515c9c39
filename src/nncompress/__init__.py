"""nncompress: make trained neural networks smaller and faster.

Importing this package is cheap: it never imports torch, onnx or openvino. The public names
below load their module on first use, so ``import nncompress as nncf`` works for scripts
written against NNCF's public API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncompress._lazy import lazy_exports
from nncompress.version import __version__

# public name -> module that defines it (loaded on first attribute access)
_LAZY = {
    # configuration
    "NNCFConfig": "nncompress.config.nncf_config",
    # post-training quantization
    "quantize": "nncompress.quantization.quantize",
    "Dataset": "nncompress.data",
    "IgnoredScope": "nncompress.scopes",
    "TargetDevice": "nncompress.parameters",
    "QuantizationPreset": "nncompress.parameters",
    "ModelType": "nncompress.parameters",
    "DropType": "nncompress.parameters",
    "QuantizationMode": "nncompress.parameters",
    "strip": "nncompress.quantization.quantize",
    "quantize_with_accuracy_control": "nncompress.quantization.accuracy_control",
    # progress bars (one switch for all of them)
    "set_progress": "nncompress.progress",
}

__all__ = [
    "Dataset",
    "DropType",
    "IgnoredScope",
    "ModelType",
    "NNCFConfig",
    "QuantizationMode",
    "QuantizationPreset",
    "TargetDevice",
    "__version__",
    "quantize",
    "quantize_with_accuracy_control",
    "set_progress",
    "strip",
]


__getattr__, __dir__ = lazy_exports("nncompress", globals(), _LAZY)


if TYPE_CHECKING:  # pragma: no cover - names for type checkers and IDEs
    from nncompress.config.nncf_config import NNCFConfig
    from nncompress.data import Dataset
    from nncompress.parameters import DropType, ModelType, QuantizationMode, QuantizationPreset, TargetDevice
    from nncompress.progress import set_progress
    from nncompress.quantization.accuracy_control import quantize_with_accuracy_control
    from nncompress.quantization.quantize import quantize, strip
    from nncompress.scopes import IgnoredScope
