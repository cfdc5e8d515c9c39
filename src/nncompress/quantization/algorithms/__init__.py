"""Backend-neutral PTQ algorithms (numpy only; backends are reached through their adapter).

Order in a PTQ pipeline::

    model = SmoothQuant().apply(model, graph, adapter, inputs, placement)        # transformers
    graph = adapter.build_graph(model, example)                                  # if SQ changed it
    params = MinMaxQuantization().apply(model, graph, adapter, inputs, placement)
    quantized = adapter.apply(model, placement, params)
    quantized = FastBiasCorrection().apply(model, graph, adapter, inputs,
                                           quantized_model=quantized, placement=placement)
"""

from nncompress.quantization.algorithms.base import ProgressCallback
from nncompress.quantization.algorithms.bias_correction import BiasCorrection
from nncompress.quantization.algorithms.fast_bias_correction import BiasCorrectionRecord, FastBiasCorrection
from nncompress.quantization.algorithms.min_max import MinMaxQuantization, MinMaxResult
from nncompress.quantization.algorithms.smooth_quant import (
    SmoothQuant,
    SmoothQuantAdapter,
    SmoothQuantGroup,
    SmoothQuantRecord,
)

__all__ = [
    "BiasCorrection",
    "BiasCorrectionRecord",
    "FastBiasCorrection",
    "MinMaxQuantization",
    "MinMaxResult",
    "ProgressCallback",
    "SmoothQuant",
    "SmoothQuantAdapter",
    "SmoothQuantGroup",
    "SmoothQuantRecord",
]
