"""What a PTQ algorithm may ask of a backend: four things, nothing framework-specific.

1. ``build_graph(model, example_input)`` -> ``Graph`` (same structure from every backend);
2. ``collect_statistics(model, inputs, sinks)``: reduced numpy statistics at named tensors,
   pushed into the core's aggregators batch by batch (memory does not grow with subset_size);
   optionally ``prepare_statistics(model, sinks)`` -> ``run(inputs) -> count``, the same in two
   steps, so that the core can ready two statistics models at once (OpenVINO compiles them side
   by side);
3. weight and bias access (``get_weight``, ``get_bias``, ``set_bias``) for bias correction and
   SmoothQuant;
4. ``apply(model, placement, params)`` -> a model of the same type carrying the quantizers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from nncompress.graph import Graph
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import Placement, TargetPoint


@dataclass(frozen=True)
class StatisticRequest:
    """Reduce the tensor at ``target`` on every calibration batch.

    ``reducer`` is one of ``min``, ``max``, ``abs_max``, ``mean``, ``quantile`` (with ``q``, a
    tuple of quantiles in [0, 1]) and ``raw_mean_over`` (mean over ``axes``, kept as an array).
    ``keep_axis`` is the axis kept (per-channel statistics), None for one value per tensor.
    The backend computes the reduction in its framework and hands small numpy arrays to the
    core aggregators, which combine batches.
    """

    target: TargetPoint
    reducer: str
    keep_axis: int | None = None
    q: tuple[float, ...] = ()


class BackendAdapter(Protocol):
    def build_graph(self, model: Any, example_input: Any) -> Graph: ...

    def collect_statistics(
        self,
        model: Any,
        inputs: Iterable[Any],
        sinks: Mapping[StatisticRequest, Callable[[np.ndarray], None]],
    ) -> int:
        """Run ``model`` on each input; call every sink with its reduced batch statistic.

        Returns the number of inputs processed. Nothing per batch is kept by the backend.
        """
        ...

    def copy_model(self, model: Any) -> Any:
        """An independent copy (algorithms that change weights never touch the user's model)."""
        ...

    def get_weight(self, model: Any, node: str, port: int) -> np.ndarray: ...

    def get_bias(self, model: Any, node: str) -> np.ndarray | None: ...

    def set_bias(self, model: Any, node: str, value: np.ndarray) -> None: ...

    def apply(self, model: Any, placement: Placement, params: dict[TargetPoint, QuantizerParams]) -> Any: ...
