"""Filter importance: how much each filter (output channel) of a layer matters, from its weights.

A criterion takes a weight array and its output-channel axis and returns one score per filter;
the least important filters are pruned first. Criteria are registered by the names the config
uses (``params.filter_importance``)::

    filter_importance(np.array([[1.0, -2.0], [0.5, 0.5]]), 0, "L1")  # array([3., 1.])

- ``L1`` / ``L2``: the norm of the filter's weights.
- ``geometric_median``: a filter's summed Euclidean distance to the layer's other filters
  ("FPGM", He et al. 2019): filters close to the geometric median of the layer are the most
  replaceable by the others, so they score lowest.

The importance of a pruning *unit* (channels removed together, see :mod:`.channels`) is the mean
importance of the filters it holds, over all coupled producers (:func:`unit_importance`); for
the global ranking (``all_weights``) it is their sum over weights normalized per layer, as in
NNCF, and LeGR's learned ``(scale, shift)`` per layer transform the scores first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from nncompress.errors import ConfigError, PruningError
from nncompress.pruning.channels import ChannelDependencies

__all__ = [
    "IMPORTANCE_CRITERIA",
    "filter_importance",
    "geometric_median_importance",
    "l1_importance",
    "l2_importance",
    "layer_importance",
    "layer_key",
    "register_importance",
    "unit_importance",
]

Criterion = Callable[[np.ndarray], np.ndarray]  # (filters, features) -> (filters,)


def _as_filters(weight: np.ndarray, out_axis: int) -> np.ndarray:
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 0:
        return w.reshape(1, 1)
    return np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)


def l1_importance(filters: np.ndarray) -> np.ndarray:
    return np.abs(filters).sum(axis=1)


def l2_importance(filters: np.ndarray) -> np.ndarray:
    return np.sqrt((filters * filters).sum(axis=1))


def geometric_median_importance(filters: np.ndarray) -> np.ndarray:
    # pairwise distances through the Gram matrix: |a-b|^2 = |a|^2 + |b|^2 - 2ab
    sq = (filters * filters).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * filters @ filters.T
    return np.sqrt(np.maximum(d2, 0.0)).sum(axis=1)


IMPORTANCE_CRITERIA: dict[str, Criterion] = {
    "L1": l1_importance,
    "L2": l2_importance,
    "geometric_median": geometric_median_importance,
}


def register_importance(name: str, criterion: Criterion) -> None:
    """Add a criterion: ``criterion(filters)`` gets a ``(num_filters, features)`` array."""
    IMPORTANCE_CRITERIA[name] = criterion


def filter_importance(weight: np.ndarray, out_axis: int, criterion: str) -> np.ndarray:
    """One score per filter of ``weight`` (filters along ``out_axis``)."""
    fn = IMPORTANCE_CRITERIA.get(criterion)
    if fn is None:
        raise ConfigError(
            [
                (
                    "params.filter_importance",
                    f"unknown filter importance '{criterion}'; known: {', '.join(IMPORTANCE_CRITERIA)}",
                )
            ]
        )
    return np.asarray(fn(_as_filters(weight, out_axis)), dtype=np.float64)


def layer_key(deps: ChannelDependencies, node: str) -> str:
    """The name a producer's ranking coefficients are stored under (its module path)."""
    return deps.short_name(node)


def layer_importance(
    deps: ChannelDependencies,
    weights: Mapping[str, np.ndarray],
    criterion: str,
    *,
    prunable_only: bool = False,
) -> dict[str, np.ndarray]:
    """Filter scores of each producer (keyed by :func:`layer_key`), once per shared weight."""
    result: dict[str, np.ndarray] = {}
    done: set[str] = set()
    for lay in deps.producers():
        if lay.weight is None or lay.weight in done:
            continue
        if prunable_only and not (~deps.unit_fixed[lay.out_units[lay.out_units >= 0]]).any():
            continue
        done.add(lay.weight)
        w = weights.get(lay.weight)
        if w is None:
            raise PruningError(f"importance: no values given for the weight '{lay.weight}' of '{lay.node}'")
        scores = filter_importance(w, lay.out_axis, criterion)
        if len(scores) != len(lay.out_units):
            raise PruningError(
                f"importance: '{lay.weight}' has {len(scores)} filters, the graph says {len(lay.out_units)}"
            )
        result[layer_key(deps, lay.node)] = scores
    return result


def unit_importance(
    deps: ChannelDependencies,
    weights: Mapping[str, np.ndarray],
    criterion: str,
    *,
    normalize: bool = False,
    reduce: str = "mean",
    coeffs: Mapping[str, tuple[float, float]] | None = None,
) -> np.ndarray:
    """Importance of every unit, from the coupled producers' filters it holds.

    ``weights`` maps each producer's weight name to its values (e.g. ``{"conv1.weight": ...}``).
    ``reduce`` is ``"mean"`` (ranking inside a group) or ``"sum"`` (NNCF's cumulative importance,
    for the global ranking of ``all_weights``). ``normalize`` divides each layer's weights by their
    L2 norm first (NNCF's global ranking, so that big layers do not dominate). ``coeffs`` maps a
    layer (:func:`layer_key`) to LeGR's ``(scale, shift)``: its filters score
    ``scale * importance + shift`` (layers not listed keep ``(1, 0)``).
    """
    if reduce not in ("mean", "sum"):
        raise PruningError(f"importance: reduce must be 'mean' or 'sum', got {reduce!r}")
    total = np.zeros(deps.num_units, dtype=np.float64)
    count = np.zeros(deps.num_units, dtype=np.int64)
    done: set[str] = set()
    for lay in deps.producers():
        if lay.weight is None or lay.weight in done:
            continue
        done.add(lay.weight)
        w = weights.get(lay.weight)
        if w is None:
            raise PruningError(f"importance: no values given for the weight '{lay.weight}' of '{lay.node}'")
        scores = filter_importance(w, lay.out_axis, criterion)
        if len(scores) != len(lay.out_units):
            raise PruningError(
                f"importance: '{lay.weight}' has {len(scores)} filters, the graph says {len(lay.out_units)}"
            )
        if normalize:
            # every criterion here is homogeneous of degree 1: scoring w/|w| is scoring w, over |w|
            norm = float(np.sqrt(np.sum(np.square(np.asarray(w, dtype=np.float64)))))
            scores = scores / norm if norm > 0 else scores
        if coeffs is not None:
            scale, shift = coeffs.get(layer_key(deps, lay.node), (1.0, 0.0))
            scores = float(scale) * scores + float(shift)
        np.add.at(total, lay.out_units, scores)
        np.add.at(count, lay.out_units, 1)
    if reduce == "sum":
        return total
    return np.divide(total, np.maximum(count, 1))
