"""Streaming statistics: per-batch reductions (done by a backend) and their aggregation (done here).

Two halves, so memory never grows with the number of calibration batches:

1. **Per-batch reduction** -- the backend runs the model on one batch and reduces the tensor at a
   ``TargetPoint`` in its own framework, as a ``StatisticRequest`` says:

   ============  ==========================================================================
   reducer       value pushed into the sink for one batch (``keep_axis`` = k)
   ============  ==========================================================================
   ``min``       min over every axis but k: shape ``()`` (k None) or ``(C,)``
   ``max``       max, same shapes
   ``abs_max``   max of ``|x|``, same shapes
   ``mean``      arithmetic mean, same shapes
   ``quantile``  ``np.quantile(x, q, axis=others)`` (linear interpolation):
                 shape ``(len(q),)`` or ``(len(q), C)``
   ``raw``       the tensor itself, any shape (only k matters: the channel axis); used by the
                 estimators that need every value (streaming moments, whole-stream quantiles)
   ============  ==========================================================================

   ``reduce_batch`` is the numpy reference of this table: the ONNX/OpenVINO backends and the
   test adapters call it; the torch backend mirrors it (and is tested against it).

2. **Aggregation over batches** -- an ``Aggregator`` receives those small arrays one at a time
   (``update``) and keeps a fixed-size state; ``result()`` gives the combined value. A
   ``StatisticSpec`` names one (reducer, aggregation) pair; a ``StatisticsCollector`` turns many
   of them at many target points into the ``sinks`` mapping that ``BackendAdapter.
   collect_statistics`` takes, sharing one request (one backend reduction) between every
   aggregator that needs it.

"Per batch" means per call of the model: with a batch size of 1 (NNCF's PTQ default) a per-batch
statistic is a per-sample statistic.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncompress.errors import DatasetError
from nncompress.quantization.backend_api import StatisticRequest
from nncompress.quantization.spec import TargetPoint

# --------------------------------------------------------------------------------------------
# per-batch reducers
# --------------------------------------------------------------------------------------------
MIN = "min"
MAX = "max"
ABS_MAX = "abs_max"
MEAN = "mean"
QUANTILE = "quantile"
RAW = "raw"
REDUCERS = frozenset({MIN, MAX, ABS_MAX, MEAN, QUANTILE, RAW})


def reduction_axes(ndim: int, keep_axis: int | None) -> tuple[int, ...]:
    """Axes a reducer reduces: all of them, or all but ``keep_axis`` (which may be negative)."""
    if keep_axis is None:
        return tuple(range(ndim))
    if not -ndim <= keep_axis < ndim:
        raise DatasetError(f"keep_axis {keep_axis} is out of range for a tensor of rank {ndim}")
    keep = keep_axis % ndim
    return tuple(a for a in range(ndim) if a != keep)


def reduce_batch(
    x: np.ndarray, reducer: str, keep_axis: int | None = None, q: Sequence[float] = ()
) -> np.ndarray:
    """Numpy reference of the per-batch reductions (see the module docstring for shapes)."""
    x = np.asarray(x)
    if reducer == RAW:
        return x
    if x.ndim == 0:
        x = x.reshape(1)
    axes = reduction_axes(x.ndim, keep_axis)
    if reducer == MIN:
        return np.min(x, axis=axes)
    if reducer == MAX:
        return np.max(x, axis=axes)
    if reducer == ABS_MAX:
        return np.max(np.abs(x), axis=axes)
    if reducer == MEAN:
        return np.mean(x, axis=axes, dtype=np.float64)
    if reducer == QUANTILE:
        if not q:
            raise ValueError("reducer 'quantile' needs at least one quantile q")
        return np.quantile(x, np.asarray(q, dtype=np.float64), axis=axes)
    raise ValueError(f"Unknown statistic reducer {reducer!r}; expected one of {sorted(REDUCERS)}")


def request_for(
    target: TargetPoint, reducer: str, keep_axis: int | None = None, q: Sequence[float] = ()
) -> StatisticRequest:
    """A validated ``StatisticRequest`` (q only for the ``quantile`` reducer)."""
    if reducer not in REDUCERS:
        raise ValueError(f"Unknown statistic reducer {reducer!r}; expected one of {sorted(REDUCERS)}")
    q = tuple(float(v) for v in q)
    if reducer == QUANTILE:
        if not q or any(not 0.0 <= v <= 1.0 for v in q):
            raise ValueError(f"quantiles must be in [0, 1], got {q}")
    elif q:
        raise ValueError(f"reducer {reducer!r} takes no quantiles, got q={q}")
    return StatisticRequest(target=target, reducer=reducer, keep_axis=keep_axis, q=q)


# --------------------------------------------------------------------------------------------
# aggregators
# --------------------------------------------------------------------------------------------
def _as_float_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise DatasetError(f"a statistic must be numeric, got an array of dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _channels_first(x: np.ndarray, keep_axis: int | None) -> np.ndarray:
    """View ``x`` as ``(C, N)``: channels along ``keep_axis`` first (C = 1 when per-tensor)."""
    if keep_axis is None or x.ndim == 0:
        return x.reshape(1, -1)
    if not -x.ndim <= keep_axis < x.ndim:
        raise DatasetError(f"keep_axis {keep_axis} is out of range for a tensor of shape {x.shape}")
    moved = np.moveaxis(x, keep_axis, 0)
    return moved.reshape(moved.shape[0], -1)


class Aggregator(ABC):
    """Combines per-batch statistics into one value with memory independent of the batch count.

    ``update(arr)`` folds in one batch, ``result()`` returns the combined value (raises
    ``DatasetError`` before any ``update``), ``count`` is the number of batches seen.
    """

    def __init__(self, name: str = "statistic"):
        self.name = name
        self.count = 0

    def update(self, value: Any) -> None:
        arr = _as_float_array(value)
        self._update(arr)
        self.count += 1

    def __call__(self, value: Any) -> None:  # usable directly as a sink
        self.update(value)

    def result(self) -> np.ndarray:
        if self.count == 0:
            raise DatasetError(
                f"No statistics were collected for {self.name}: the calibration data produced no batch "
                "that reached this tensor (is the dataset empty, or is the tensor on a branch the inputs "
                "never execute?)"
            )
        return self._result()

    @abstractmethod
    def _update(self, arr: np.ndarray) -> None: ...

    @abstractmethod
    def _result(self) -> np.ndarray: ...

    def _check_shape(self, old: np.ndarray, new: np.ndarray) -> None:
        if old.shape != new.shape:
            raise DatasetError(
                f"Statistic {self.name}: per-batch value changed shape from {old.shape} to {new.shape}; "
                "per-channel statistics need the same number of channels in every batch"
            )


class _ElementwiseAggregator(Aggregator):
    _op: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def __init__(self, name: str = "statistic"):
        super().__init__(name)
        self._acc: np.ndarray | None = None

    def _transform(self, arr: np.ndarray) -> np.ndarray:
        return arr

    def _update(self, arr: np.ndarray) -> None:
        arr = self._transform(arr)
        if self._acc is None:
            self._acc = arr.copy()
        else:
            self._check_shape(self._acc, arr)
            self._acc = type(self)._op(self._acc, arr)

    def _result(self) -> np.ndarray:
        assert self._acc is not None
        return self._acc.copy()


class MinAggregator(_ElementwiseAggregator):
    """Elementwise min over batches (``min`` of per-batch ``min``); NaN propagates."""

    _op = staticmethod(np.minimum)


class MaxAggregator(_ElementwiseAggregator):
    """Elementwise max over batches (``max`` of per-batch ``max`` / ``abs_max``); NaN propagates."""

    _op = staticmethod(np.maximum)


class AbsMaxAggregator(MaxAggregator):
    """Elementwise max of ``|value|`` over batches (safe to feed signed per-batch min/max)."""

    def _transform(self, arr: np.ndarray) -> np.ndarray:
        return np.abs(arr)


class MeanAggregator(Aggregator):
    """Running (equal-weight) mean of per-batch values, accumulated in float64."""

    def __init__(self, name: str = "statistic"):
        super().__init__(name)
        self._sum: np.ndarray | None = None  # a float64 sum: one numpy op per batch

    def _update(self, arr: np.ndarray) -> None:
        if self._sum is None:
            self._sum = np.array(arr, dtype=np.float64, copy=True)
            return
        self._check_shape(self._sum, arr)
        self._sum += arr

    def _result(self) -> np.ndarray:
        assert self._sum is not None
        return self._sum / self.count


class MomentsAggregator(Aggregator):
    """Exact streaming mean and variance of every value of a ``raw`` tensor, per channel.

    Each batch is reduced to (n, mean, M2) per channel and merged into the running state with
    Chan et al.'s parallel update (Welford for blocks), in float64, so the result equals the
    two-pass population mean/variance of all values of all batches up to rounding.
    ``result()`` is ``np.stack([mean, std])``: shape ``(2,)`` per-tensor or ``(2, C)``.
    """

    def __init__(self, keep_axis: int | None = None, name: str = "statistic"):
        super().__init__(name)
        self.keep_axis = keep_axis
        self.n = 0  # values per channel seen so far
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def _update(self, arr: np.ndarray) -> None:
        x = _channels_first(arr, self.keep_axis)
        nb = x.shape[1]
        if nb == 0:
            return
        b_mean = x.mean(axis=1)
        b_m2 = np.square(x - b_mean[:, None]).sum(axis=1)
        if self._mean is None:
            self._mean, self._m2, self.n = b_mean, b_m2, nb
            return
        if b_mean.shape != self._mean.shape:
            self._check_shape(self._mean, b_mean)
        total = self.n + nb
        delta = b_mean - self._mean
        self._mean = self._mean + delta * (nb / total)
        self._m2 = self._m2 + b_m2 + np.square(delta) * (self.n * nb / total)
        self.n = total

    def _squeeze(self, v: np.ndarray) -> np.ndarray:
        return v.reshape(()) if self.keep_axis is None else v

    @property
    def mean(self) -> np.ndarray:
        return self._squeeze(self.result()[0])

    @property
    def var(self) -> np.ndarray:
        return np.square(self.std)

    @property
    def std(self) -> np.ndarray:
        return self._squeeze(self.result()[1])

    def _result(self) -> np.ndarray:
        if self._mean is None:
            raise DatasetError(f"No values were collected for {self.name}: every batch was empty")
        std = np.sqrt(np.maximum(self._m2 / self.n, 0.0))
        out = np.stack([self._mean, std])
        return out[:, 0] if self.keep_axis is None else out


class HistogramQuantileAggregator(Aggregator):
    """Quantiles of every value of a ``raw`` tensor over the whole stream, in bounded memory.

    State per channel: ``bins`` counts over ``[lo, lo + bins * width)`` plus the exact min and max.
    The first batch sets ``lo`` = its min and ``width`` = range / (bins - 1). When a later batch falls
    outside, the range grows: the width doubles ``j`` times and ``lo`` moves down by whole old
    bins, so every old bin lies inside exactly one new bin and the re-binning is exact.

    ``result()`` returns ``np.quantile(all_values, q)`` (linear interpolation) estimated from the
    histogram: each order statistic is placed inside the bin that holds it, so the error is at
    most one bin width, and the width never exceeds ``2 * (max - min) / (bins - 2)`` (or the
    initial width if the first batch was constant). With the default 2048 bins that is 0.1% of
    the data range. ``q = 0`` and ``q = 1`` are exact (the min and max are kept exactly).
    Memory: ``C * bins`` float64 counts. Channels that saw NaN/inf report NaN.
    Result shape: ``(len(q),)`` per-tensor, ``(len(q), C)`` per-channel.
    """

    def __init__(
        self, q: Sequence[float], keep_axis: int | None = None, bins: int = 2048, name: str = "statistic"
    ):
        super().__init__(name)
        self.q = tuple(float(v) for v in q)
        if not self.q or any(not 0.0 <= v <= 1.0 for v in self.q):
            raise ValueError(f"quantiles must be in [0, 1], got {self.q}")
        if bins < 8:
            raise ValueError("HistogramQuantileAggregator needs at least 8 bins")
        self.keep_axis = keep_axis
        self.bins = int(bins)
        self.n = 0
        self._lo: np.ndarray | None = None
        self._width: np.ndarray | None = None
        self._counts: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._bad: np.ndarray | None = None

    @property
    def bin_width(self) -> np.ndarray:
        """Current bin width per channel (the error bound of ``result()``)."""
        if self._width is None:
            raise DatasetError(f"No values were collected for {self.name}")
        return self._width[0] if self.keep_axis is None else self._width.copy()

    def _update(self, arr: np.ndarray) -> None:
        x = _channels_first(arr, self.keep_axis)
        if x.shape[1] == 0:
            return
        finite = np.isfinite(x)
        bad = ~finite.all(axis=1)
        if bad.any():
            x = np.where(finite, x, 0.0)  # those channels report NaN; keep the others exact
        b_min, b_max = x.min(axis=1), x.max(axis=1)
        if self._counts is None:
            c = x.shape[0]
            span = b_max - b_min
            fallback = np.maximum(np.abs(b_min), 1.0) * 2.0**-20
            self._lo = b_min.copy()
            # bins - 1: the max falls inside the last bin, not on the upper edge
            self._width = np.where(span > 0, span / (self.bins - 1), fallback)
            self._counts = np.zeros((c, self.bins), dtype=np.float64)
            self._min, self._max, self._bad = b_min.copy(), b_max.copy(), bad.copy()
        else:
            if x.shape[0] != self._counts.shape[0]:
                raise DatasetError(
                    f"Statistic {self.name}: the number of channels changed from "
                    f"{self._counts.shape[0]} to {x.shape[0]} between batches"
                )
            self._bad |= bad
            self._min = np.minimum(self._min, b_min)
            self._max = np.maximum(self._max, b_max)
            self._expand()
        self._add(x)
        self.n += x.shape[1]

    def _expand(self) -> None:
        lo, w, gmin, gmax = self._lo, self._width, self._min, self._max
        need = (gmin < lo) | (gmax >= lo + self.bins * w)
        if not need.any():
            return
        idx = np.nonzero(need)[0]
        lo_c, w_c = lo[idx], w[idx]
        span = gmax[idx] - gmin[idx]
        # smallest j with bins * 2^j * w >= span + w (room for aligning lo to the old grid)
        ratio = (span + w_c) / (self.bins * w_c)
        j = np.maximum(np.ceil(np.log2(np.maximum(ratio, 1.0))), 0.0)
        m = np.maximum(np.ceil((lo_c - gmin[idx]) / w_c), 0.0)
        new_lo = lo_c - m * w_c
        new_w = w_c * np.exp2(j)
        while True:  # guard against rounding in the float computation of the new grid
            short = (new_lo + self.bins * new_w <= gmax[idx]) | (new_lo > gmin[idx])
            if not short.any():
                break
            new_w = np.where(short, new_w * 2.0, new_w)
            new_lo = np.where(new_lo > gmin[idx], gmin[idx], new_lo)
        # re-bin: the centre of every old bin falls inside the new bin that contains it
        centres = lo_c[:, None] + (np.arange(self.bins) + 0.5)[None, :] * w_c[:, None]
        new_idx = np.clip(np.floor((centres - new_lo[:, None]) / new_w[:, None]), 0, self.bins - 1).astype(
            np.int64
        )
        flat = (np.arange(len(idx))[:, None] * self.bins + new_idx).ravel()
        counts = np.bincount(flat, weights=self._counts[idx].ravel(), minlength=len(idx) * self.bins)
        self._counts[idx] = counts.reshape(len(idx), self.bins)
        self._lo[idx], self._width[idx] = new_lo, new_w

    def _add(self, x: np.ndarray) -> None:
        c = x.shape[0]
        b = np.floor((x - self._lo[:, None]) / self._width[:, None])
        b = np.clip(b, 0, self.bins - 1).astype(np.int64)
        flat = (np.arange(c)[:, None] * self.bins + b).ravel()
        self._counts += np.bincount(flat, minlength=c * self.bins).reshape(c, self.bins)

    def _order_statistic(self, cum: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Estimate of the ``rank``-th smallest value (0-based) per channel."""
        b = np.minimum((cum <= rank[:, None]).sum(axis=1), self.bins - 1)
        rows = np.arange(cum.shape[0])
        in_bin = self._counts[rows, b]
        before = cum[rows, b] - in_bin
        frac = np.where(in_bin > 0, (rank - before + 0.5) / np.maximum(in_bin, 1.0), 0.5)
        est = self._lo + (b + np.clip(frac, 0.0, 1.0)) * self._width
        est = np.clip(est, self._min, self._max)
        est = np.where(rank <= 0, self._min, est)
        return np.where(rank >= self.n - 1, self._max, est)

    def _result(self) -> np.ndarray:
        if self._counts is None or self.n == 0:
            raise DatasetError(f"No values were collected for {self.name}: every batch was empty")
        cum = np.cumsum(self._counts, axis=1)
        c = cum.shape[0]
        out = np.empty((len(self.q), c), dtype=np.float64)
        for i, qv in enumerate(self.q):
            pos = qv * (self.n - 1)
            k = math.floor(pos)
            frac = pos - k
            lower = self._order_statistic(cum, np.full(c, float(k)))
            upper = self._order_statistic(cum, np.full(c, float(min(k + 1, self.n - 1))))
            out[i] = lower + (upper - lower) * frac
        out[:, self._bad] = np.nan
        return out[:, 0] if self.keep_axis is None else out


# --------------------------------------------------------------------------------------------
# statistic specs: a per-batch reducer paired with an aggregation
# --------------------------------------------------------------------------------------------
AGG_MIN = "min"
AGG_MAX = "max"
AGG_ABS_MAX = "abs_max"
AGG_MEAN = "mean"
AGG_MOMENTS = "moments"
AGG_HISTOGRAM_QUANTILE = "histogram_quantile"
_BATCH_AGGREGATIONS = frozenset({AGG_MIN, AGG_MAX, AGG_ABS_MAX, AGG_MEAN})
_RAW_AGGREGATIONS = frozenset({AGG_MOMENTS, AGG_HISTOGRAM_QUANTILE})


@dataclass(frozen=True)
class StatisticSpec:
    """One aggregated statistic: the backend's per-batch ``reducer`` and how batches combine.

    ``aggregation`` is ``min``/``max``/``abs_max``/``mean`` for per-batch reducers (``min``,
    ``max``, ``abs_max``, ``mean``, ``quantile``), or ``moments``/``histogram_quantile`` over the
    ``raw`` tensor. ``q`` holds the quantiles of the ``quantile`` reducer or of the histogram.
    """

    reducer: str
    aggregation: str
    q: tuple[float, ...] = ()
    bins: int = 2048

    def __post_init__(self) -> None:
        object.__setattr__(self, "q", tuple(float(v) for v in self.q))
        if self.reducer not in REDUCERS:
            raise ValueError(
                f"Unknown statistic reducer {self.reducer!r}; expected one of {sorted(REDUCERS)}"
            )
        if self.aggregation in _RAW_AGGREGATIONS:
            if self.reducer != RAW:
                raise ValueError(
                    f"aggregation {self.aggregation!r} needs the 'raw' reducer, got {self.reducer!r}"
                )
        elif self.aggregation in _BATCH_AGGREGATIONS:
            if self.reducer == RAW:
                raise ValueError(f"aggregation {self.aggregation!r} needs a reducing reducer, not 'raw'")
        else:
            raise ValueError(f"Unknown aggregation {self.aggregation!r}")
        needs_q = self.reducer == QUANTILE or self.aggregation == AGG_HISTOGRAM_QUANTILE
        if needs_q and (not self.q or any(not 0.0 <= v <= 1.0 for v in self.q)):
            raise ValueError(
                f"{self.describe()}: quantiles must be a non-empty tuple in [0, 1], got {self.q}"
            )
        if not needs_q and self.q:
            raise ValueError(f"{self.reducer}/{self.aggregation} takes no quantiles, got {self.q}")

    def request(self, target: TargetPoint, keep_axis: int | None) -> StatisticRequest:
        """What the backend must reduce on every batch for this statistic."""
        q = self.q if self.reducer == QUANTILE else ()
        return request_for(target, self.reducer, keep_axis, q)

    def make_aggregator(self, keep_axis: int | None, name: str = "statistic") -> Aggregator:
        if self.aggregation == AGG_MIN:
            return MinAggregator(name)
        if self.aggregation == AGG_MAX:
            return MaxAggregator(name)
        if self.aggregation == AGG_ABS_MAX:
            return AbsMaxAggregator(name)
        if self.aggregation == AGG_MEAN:
            return MeanAggregator(name)
        if self.aggregation == AGG_MOMENTS:
            return MomentsAggregator(keep_axis, name)
        return HistogramQuantileAggregator(self.q, keep_axis, self.bins, name)

    def describe(self) -> str:
        q = f"{list(self.q)}" if self.q else ""
        if self.aggregation in _RAW_AGGREGATIONS:
            return f"{self.aggregation}{q} of all values"
        return f"{self.aggregation} of per-batch {self.reducer}{q}"


MIN_OF_MIN = StatisticSpec(MIN, AGG_MIN)
MAX_OF_MAX = StatisticSpec(MAX, AGG_MAX)
MAX_OF_ABS_MAX = StatisticSpec(ABS_MAX, AGG_MAX)
MEAN_OF_MIN = StatisticSpec(MIN, AGG_MEAN)
MEAN_OF_MAX = StatisticSpec(MAX, AGG_MEAN)
MEAN_OF_ABS_MAX = StatisticSpec(ABS_MAX, AGG_MEAN)
MEAN_OF_MEAN = StatisticSpec(MEAN, AGG_MEAN)
MOMENTS = StatisticSpec(RAW, AGG_MOMENTS)


def mean_of_quantiles(q: Sequence[float]) -> StatisticSpec:
    """Mean over batches of per-batch quantiles."""
    return StatisticSpec(QUANTILE, AGG_MEAN, tuple(q))


def stream_quantiles(q: Sequence[float], bins: int = 2048) -> StatisticSpec:
    """Quantiles of all values of all batches (bounded-memory histogram)."""
    return StatisticSpec(RAW, AGG_HISTOGRAM_QUANTILE, tuple(q), bins)


def aggregate(spec: StatisticSpec, batches: Iterable[np.ndarray], keep_axis: int | None = None) -> np.ndarray:
    """Reduce and aggregate ``batches`` (full tensors) in numpy; for weights and for tests."""
    agg = spec.make_aggregator(keep_axis)
    for x in batches:
        agg.update(reduce_batch(x, spec.reducer, keep_axis, spec.q if spec.reducer == QUANTILE else ()))
    return agg.result()


# --------------------------------------------------------------------------------------------
# collecting many statistics at many points in one pass
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatisticKey:
    """Names one aggregated statistic: where (target), what (spec) and per which axis."""

    target: TargetPoint
    spec: StatisticSpec
    keep_axis: int | None = None

    def __str__(self) -> str:
        axis = "" if self.keep_axis is None else f" per axis {self.keep_axis}"
        return f"{self.spec.describe()}{axis} at {self.target}"


ProgressFn = Callable[[int, "int | None"], None]


class StatisticsCollector:
    """Registers statistics at target points and produces the sinks for one collection pass.

    Every distinct ``StatisticRequest`` (target, reducer, keep_axis, q) is requested once, even
    when several statistics (say, min-of-min and mean-of-min) or several quantizers need it; its
    sink fans the batch value out to every aggregator registered on it.
    """

    def __init__(self) -> None:
        self._aggregators: dict[StatisticKey, Aggregator] = {}
        self._by_request: dict[StatisticRequest, list[Aggregator]] = {}
        self._passes = 0  # collection passes that fed these aggregators

    def add(self, target: TargetPoint, spec: StatisticSpec, keep_axis: int | None = None) -> StatisticKey:
        key = StatisticKey(target, spec, keep_axis)
        if key not in self._aggregators:
            agg = spec.make_aggregator(keep_axis, name=str(key))
            self._aggregators[key] = agg
            self._by_request.setdefault(spec.request(target, keep_axis), []).append(agg)
        return key

    def __len__(self) -> int:
        return len(self._aggregators)

    def __contains__(self, key: object) -> bool:
        return key in self._aggregators

    @property
    def keys(self) -> list[StatisticKey]:
        return list(self._aggregators)

    @property
    def requests(self) -> list[StatisticRequest]:
        return list(self._by_request)

    def sinks(self) -> dict[StatisticRequest, Callable[[np.ndarray], None]]:
        """The mapping ``BackendAdapter.collect_statistics`` takes."""
        out: dict[StatisticRequest, Callable[[np.ndarray], None]] = {}
        for request, aggs in self._by_request.items():
            if len(aggs) == 1:
                out[request] = aggs[0].update
            else:
                out[request] = _fan_out(aggs)
        return out

    def aggregator(self, key: StatisticKey) -> Aggregator:
        try:
            return self._aggregators[key]
        except KeyError:
            raise KeyError(f"statistic {key} was not registered") from None

    def result(self, key: StatisticKey) -> np.ndarray:
        return self.aggregator(key).result()

    def collect(
        self,
        adapter: Any,
        model: Any,
        inputs: Iterable[Any],
        progress: ProgressFn | None = None,
        total: int | None = None,
        companions: Sequence[tuple[StatisticsCollector, int | None]] = (),
    ) -> int:
        """Run ``adapter.collect_statistics`` with these sinks; raise ``DatasetError`` on no data.

        ``companions`` are other collectors filled in the same pass (one model run per item for
        every algorithm that observes the same model), each with the number of items it takes:
        ``(collector, n)`` sees only the first ``n`` items (None: all), exactly what a separate
        pass over ``n`` items would see.
        """
        own = self.sinks()
        sinks = dict(own)
        for other, limit in companions:
            if other is self:
                raise ValueError("a collector cannot be its own companion")
            for request, sink in other.sinks().items():
                bounded = sink if limit is None else _first_calls(sink, int(limit))
                mine = sinks.get(request)
                sinks[request] = bounded if mine is None else _fan_out_calls((mine, bounded))
        if not sinks:
            return 0
        stream = iter(_counting(inputs, progress, total) if progress is not None else inputs)
        limits = [limit for _, limit in companions]
        if limits and None not in limits and own:
            # the companions stop after their items: the rest of the stream runs a model that
            # computes only this collector's statistics (cheaper per item), same values; an
            # adapter with ``prepare_statistics`` readies both models at once
            head = max(limits)
            prepare = getattr(adapter, "prepare_statistics", None)
            if prepare is None:

                def prepare(model: Any, sinks: Mapping) -> Callable[[Iterable[Any]], int]:
                    return lambda items: adapter.collect_statistics(model, items, sinks)

            run_head, run_rest = prepare(model, sinks), prepare(model, own)
            n = run_head(itertools.islice(stream, head))
            first = next(stream, _END) if n == head else _END
            if first is not _END:
                n += run_rest(itertools.chain([first], stream))
        else:
            n = adapter.collect_statistics(model, stream, sinks)
        if not n:
            raise DatasetError(
                "The calibration dataset gave no inputs: statistics need at least one batch "
                "(check the dataset and subset_size)"
            )
        for c in (self, *(other for other, _ in companions)):
            c._passes += 1
        return int(n)

    @property
    def collected(self) -> bool:
        """True once a collection pass has fed this collector (alone or as a companion)."""
        return self._passes > 0


def _fan_out(aggs: Sequence[Aggregator]) -> Callable[[np.ndarray], None]:
    def sink(value: np.ndarray) -> None:
        for agg in aggs:
            agg.update(value)

    return sink


_END = object()


def _first_calls(sink: Callable[[np.ndarray], None], limit: int) -> Callable[[np.ndarray], None]:
    """``sink`` for its first ``limit`` calls, then a no-op (a backend calls each sink once per item)."""
    seen = 0

    def bounded(value: np.ndarray) -> None:
        nonlocal seen
        if seen < limit:
            seen += 1
            sink(value)

    return bounded


def _fan_out_calls(sinks: Sequence[Callable[[np.ndarray], None]]) -> Callable[[np.ndarray], None]:
    def sink(value: np.ndarray) -> None:
        for s in sinks:
            s(value)

    return sink


def _counting(inputs: Iterable[Any], progress: ProgressFn, total: int | None) -> Iterable[Any]:
    for done, item in enumerate(inputs, 1):
        yield item
        progress(done, total)


def results(collector: StatisticsCollector, keys: Mapping[str, StatisticKey]) -> dict[str, np.ndarray]:
    """``{role: collector.result(key)}`` for a mapping of roles to keys."""
    return {role: collector.result(key) for role, key in keys.items()}
