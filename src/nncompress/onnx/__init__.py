"""The ONNX backend: ``onnx.ModelProto`` -> Graph, statistics with ONNX Runtime, QDQ insertion.

``nncompress.quantize(onnx_model, dataset)`` returns a new ModelProto with
QuantizeLinear/DequantizeLinear pairs; the input model is not changed. Light to import: the
submodules (and onnx itself) load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncompress._lazy import lazy_exports

_LAZY = {
    "Adapter": "nncompress.onnx.adapter",
    "placement_of": "nncompress.onnx.adapter",
    "build_graph": "nncompress.onnx.graph_builder",
    "load_model": "nncompress.onnx.model_io",
    "save_model": "nncompress.onnx.model_io",
}

__all__ = ["Adapter", "build_graph", "load_model", "placement_of", "save_model"]


__getattr__, __dir__ = lazy_exports("nncompress.onnx", globals(), _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from nncompress.onnx.adapter import Adapter, placement_of
    from nncompress.onnx.graph_builder import build_graph
    from nncompress.onnx.model_io import load_model, save_model
