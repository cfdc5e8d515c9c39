"""The OpenVINO backend: ``openvino.Model`` -> Graph, statistics on the CPU plugin, FakeQuantize insertion.

``nncompress.quantize(ov_model, dataset)`` returns a new openvino.Model with FakeQuantize on
activations and INT8-compressed weights; the input model is not changed. Light to import: the
submodules (and openvino itself) load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncompress._lazy import lazy_exports

_LAZY = {
    "Adapter": "nncompress.openvino.adapter",
    "placement_of": "nncompress.openvino.adapter",
    "build_graph": "nncompress.openvino.graph_builder",
    "index_model": "nncompress.openvino.graph_builder",
}

__all__ = ["Adapter", "build_graph", "index_model", "placement_of"]


__getattr__, __dir__ = lazy_exports("nncompress.openvino", globals(), _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from nncompress.openvino.adapter import Adapter, placement_of
    from nncompress.openvino.graph_builder import build_graph, index_model
