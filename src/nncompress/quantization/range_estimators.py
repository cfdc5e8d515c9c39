"""Range estimators: which statistics a quantizer's range is computed from, and how.

An estimator is a frozen dataclass. ``statistics(spec, is_weight)`` names the aggregated
statistics it needs (``StatisticSpec``: per-batch reducer + aggregation over batches);
``compute(values, spec, is_weight)`` turns their results into ``(min, max)`` (scalars, or arrays
along the channel axis when ``spec.per_channel``). ``quantizer_params.compute_params`` makes the
integer-grid parameters from that range.

Registered names (``get_range_estimator``), NNCF 2.x ``initializer.range.type`` values plus ours:

===================  ===========================================================================
``min_max``          min of per-batch min, max of per-batch max
``mean_min_max``     mean over batches of per-batch min and of per-batch max
``threesigma``       mean +- 3 std of all values (exact streaming moments). NNCF 2.x centres on
                     the median with the median absolute deviation instead; we use the mean and
                     standard deviation, exact in one pass, (``n_sigma`` is a parameter)
``percentile``       ``min_percentile``/``max_percentile`` (percent, default 0.1 / 99.9) of all
                     values of all batches, from a bounded-memory histogram (error <= 0.1% of the
                     range)
``mean_percentile``  mean over batches of per-batch percentiles (same parameters)
``mixed_min_max``    NNCF 2.x's mixed collector: weights and per-channel quantizers use
                     ``min_max``; per-tensor activations take the mean of per-batch maxima, and
                     the mean of per-batch minima when asymmetric (min of minima when symmetric)
``default``          NNCF 3.x ``nncf.quantize`` default: ``min_max`` for weights and per-channel
                     activations, ``mean_min_max`` for per-tensor activations
===================  ===========================================================================

For a symmetric quantizer that may be signed, every min/max estimator reads ``abs_max`` instead of
``max`` per batch (as NNCF does), so a mean over batches averages the dominant side whichever sign
it has; ``min`` is still collected, to decide the sign when ``spec.signed`` is None.

Defaults (``default_range_estimators``): weights ``min_max`` (exact, no data), activations
``default``, for every model type. NNCF's ``model_type=transformer`` changes placement and adds
SmoothQuant rather than the range estimator; for outlier-heavy activations without SmoothQuant,
``mean_percentile`` with 0.01 / 99.99 is NNCF's ``MEAN_QUANTILE`` (outlier probability 1e-4).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from nncompress.errors import ConfigError, did_you_mean
from nncompress.quantization.spec import QuantizerSpec
from nncompress.quantization.statistics import (
    MAX_OF_ABS_MAX,
    MAX_OF_MAX,
    MEAN_OF_ABS_MAX,
    MEAN_OF_MAX,
    MEAN_OF_MIN,
    MIN_OF_MIN,
    MOMENTS,
    QUANTILE,
    StatisticSpec,
    mean_of_quantiles,
    reduce_batch,
    stream_quantiles,
)

Range = tuple[np.ndarray, np.ndarray]


def uses_abs_max(spec: QuantizerSpec) -> bool:
    """Symmetric quantizers that may be signed take their scale from ``abs_max`` statistics."""
    return spec.mode == "symmetric" and spec.signed is not False


def keep_axis_of(spec: QuantizerSpec) -> int | None:
    """The axis statistics keep for this quantizer (its channel axis, or None per-tensor)."""
    return spec.channel_axis if spec.per_channel else None


@dataclass(frozen=True)
class RangeEstimator(ABC):
    """Base class: the statistics a range needs and how they become ``(min, max)``."""

    name: ClassVar[str] = ""

    @abstractmethod
    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        """Role (``min``, ``max``, ``moments``, ``quantiles``) -> statistic to aggregate."""

    @abstractmethod
    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        """``(min, max)`` from the aggregated statistics of ``statistics``."""

    def describe(self) -> str:
        params = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))
        return f"{self.name}({params})" if params else self.name

    def __str__(self) -> str:
        return self.describe()


def _min_max_stats(spec: QuantizerSpec, mean_min: bool, mean_max: bool) -> dict[str, StatisticSpec]:
    if uses_abs_max(spec):
        max_stat = MEAN_OF_ABS_MAX if mean_max else MAX_OF_ABS_MAX
    else:
        max_stat = MEAN_OF_MAX if mean_max else MAX_OF_MAX
    return {"min": MEAN_OF_MIN if mean_min else MIN_OF_MIN, "max": max_stat}


def _pair(values: Mapping[str, np.ndarray]) -> Range:
    return np.asarray(values["min"], dtype=np.float64), np.asarray(values["max"], dtype=np.float64)


@dataclass(frozen=True)
class MinMaxEstimator(RangeEstimator):
    """Min of per-batch minima, max of per-batch maxima: the whole observed range."""

    name: ClassVar[str] = "min_max"

    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        return _min_max_stats(spec, mean_min=False, mean_max=False)

    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        return _pair(values)


@dataclass(frozen=True)
class MeanMinMaxEstimator(RangeEstimator):
    """Mean over batches of per-batch minima and maxima (robust to one outlying batch)."""

    name: ClassVar[str] = "mean_min_max"

    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        return _min_max_stats(spec, mean_min=True, mean_max=True)

    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        return _pair(values)


@dataclass(frozen=True)
class MixedMinMaxEstimator(RangeEstimator):
    """NNCF 2.x ``mixed_min_max``: exact range for weights and per-channel quantizers; per-tensor
    activations average per-batch maxima, and per-batch minima only when asymmetric."""

    name: ClassVar[str] = "mixed_min_max"

    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        if is_weight or spec.per_channel:
            return _min_max_stats(spec, mean_min=False, mean_max=False)
        return _min_max_stats(spec, mean_min=spec.mode == "asymmetric", mean_max=True)

    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        return _pair(values)


@dataclass(frozen=True)
class DefaultEstimator(RangeEstimator):
    """NNCF 3.x PTQ default: ``min_max`` for weights and per-channel activations,
    ``mean_min_max`` for per-tensor activations."""

    name: ClassVar[str] = "default"

    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        mean = not (is_weight or spec.per_channel)
        return _min_max_stats(spec, mean_min=mean, mean_max=mean)

    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        return _pair(values)


@dataclass(frozen=True)
class ThreeSigmaEstimator(RangeEstimator):
    """``mean -+ n_sigma * std`` of all values of all batches (exact streaming moments)."""

    name: ClassVar[str] = "threesigma"
    n_sigma: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_sigma", float(self.n_sigma))
        if not self.n_sigma > 0:
            raise ConfigError([("initializer/range/params/n_sigma", f"must be > 0, got {self.n_sigma}")])

    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        return {"moments": MOMENTS}

    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        moments = np.asarray(values["moments"], dtype=np.float64)
        mean, std = moments[0], moments[1]
        return mean - self.n_sigma * std, mean + self.n_sigma * std


def _check_percentiles(lo: Any, hi: Any) -> tuple[float, float]:
    problems = []
    try:
        lo_f, hi_f = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ConfigError(
            [
                (
                    "initializer/range/params",
                    f"min_percentile/max_percentile must be numbers, got {lo!r}, {hi!r}",
                )
            ]
        ) from None
    if not 0.0 <= lo_f <= 100.0:
        problems.append(("initializer/range/params/min_percentile", f"must be in [0, 100], got {lo_f}"))
    if not 0.0 <= hi_f <= 100.0:
        problems.append(("initializer/range/params/max_percentile", f"must be in [0, 100], got {hi_f}"))
    if not problems and lo_f >= hi_f:
        problems.append(
            ("initializer/range/params", f"min_percentile {lo_f} must be below max_percentile {hi_f}")
        )
    if problems:
        raise ConfigError(problems)
    return lo_f, hi_f


@dataclass(frozen=True)
class PercentileEstimator(RangeEstimator):
    """Percentiles (in percent) of every value of every batch, from a bounded-memory histogram."""

    name: ClassVar[str] = "percentile"
    min_percentile: float = 0.1
    max_percentile: float = 99.9
    bins: int = 2048

    def __post_init__(self) -> None:
        lo, hi = _check_percentiles(self.min_percentile, self.max_percentile)
        object.__setattr__(self, "min_percentile", lo)
        object.__setattr__(self, "max_percentile", hi)

    @property
    def quantiles(self) -> tuple[float, float]:
        return self.min_percentile / 100.0, self.max_percentile / 100.0

    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        return {"quantiles": stream_quantiles(self.quantiles, self.bins)}

    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        q = np.asarray(values["quantiles"], dtype=np.float64)
        return q[0], q[1]


@dataclass(frozen=True)
class MeanPercentileEstimator(RangeEstimator):
    """Mean over batches of per-batch percentiles (in percent)."""

    name: ClassVar[str] = "mean_percentile"
    min_percentile: float = 0.1
    max_percentile: float = 99.9

    def __post_init__(self) -> None:
        lo, hi = _check_percentiles(self.min_percentile, self.max_percentile)
        object.__setattr__(self, "min_percentile", lo)
        object.__setattr__(self, "max_percentile", hi)

    @property
    def quantiles(self) -> tuple[float, float]:
        return self.min_percentile / 100.0, self.max_percentile / 100.0

    def statistics(self, spec: QuantizerSpec, is_weight: bool = False) -> dict[str, StatisticSpec]:
        return {"quantiles": mean_of_quantiles(self.quantiles)}

    def compute(
        self, values: Mapping[str, np.ndarray], spec: QuantizerSpec, is_weight: bool = False
    ) -> Range:
        q = np.asarray(values["quantiles"], dtype=np.float64)
        return q[0], q[1]


RANGE_ESTIMATORS: dict[str, type[RangeEstimator]] = {
    cls.name: cls
    for cls in (
        MinMaxEstimator,
        MeanMinMaxEstimator,
        ThreeSigmaEstimator,
        PercentileEstimator,
        MeanPercentileEstimator,
        MixedMinMaxEstimator,
        DefaultEstimator,
    )
}


def register_range_estimator(cls: type[RangeEstimator]) -> type[RangeEstimator]:
    """Add an estimator class to the registry under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    RANGE_ESTIMATORS[cls.name] = cls
    return cls


def get_range_estimator(
    config: str | Mapping[str, Any] | RangeEstimator | None = None, **params: Any
) -> RangeEstimator:
    """An estimator from a name, an NNCF-style ``{"type": ..., "params": {...}}`` dict, an object
    with ``type`` (and ``min_percentile``/``max_percentile``, as ``advanced_parameters.
    RangeEstimatorParameters``), or an estimator itself.

    None (or a type of None) gives ``default``. Unknown names and parameters raise ``ConfigError``.
    """
    if isinstance(config, RangeEstimator):
        if params:
            raise ConfigError([("initializer/range/params", "cannot pass params with an estimator instance")])
        return config
    if config is None:
        name = DefaultEstimator.name
    elif isinstance(config, str):
        name = config
    elif isinstance(config, Mapping):
        name = config.get("type") or DefaultEstimator.name
        params = {**dict(config.get("params") or {}), **params}
    elif hasattr(config, "type"):  # advanced_parameters.RangeEstimatorParameters (type + percentiles)
        kind = config.type
        name = getattr(kind, "value", kind) or DefaultEstimator.name
        cls = RANGE_ESTIMATORS.get(str(name).lower())
        wanted = {f.name for f in fields(cls)} if cls is not None else set()
        carried = {k: getattr(config, k) for k in ("min_percentile", "max_percentile") if k in wanted}
        params = {**carried, **params}
    else:
        raise ConfigError([("initializer/range", f"expected a name or a dict, got {type(config).__name__}")])
    cls = RANGE_ESTIMATORS.get(str(name).lower())
    if cls is None:
        raise ConfigError(
            [
                (
                    "initializer/range/type",
                    f"unknown range estimator {name!r}; known: {', '.join(sorted(RANGE_ESTIMATORS))}."
                    + did_you_mean(str(name), RANGE_ESTIMATORS),
                )
            ]
        )
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        hint = f"; {cls.name} takes {', '.join(sorted(allowed))}" if allowed else f"; {cls.name} takes none"
        raise ConfigError([(f"initializer/range/params/{k}", f"unknown parameter{hint}") for k in unknown])
    return cls(**params)


def default_range_estimators(model_type: Any = None) -> tuple[RangeEstimator, RangeEstimator]:
    """``(weights, activations)`` estimators of ``nncompress.quantize`` (same for every model type)."""
    del model_type  # NNCF's transformer model type changes placement and adds SmoothQuant, not ranges
    return MinMaxEstimator(), DefaultEstimator()


def estimate_range(
    estimator: RangeEstimator, spec: QuantizerSpec, tensors: Iterable[np.ndarray], is_weight: bool = False
) -> Range:
    """Run ``estimator`` over whole tensors in numpy (each one a batch); for weights and tests."""
    keep_axis = keep_axis_of(spec)
    stats = estimator.statistics(spec, is_weight)
    aggs = {role: s.make_aggregator(keep_axis, name=f"{role} ({s.describe()})") for role, s in stats.items()}
    for x in tensors:
        for role, s in stats.items():
            q = s.q if s.reducer == QUANTILE else ()
            aggs[role].update(reduce_batch(x, s.reducer, keep_axis, q))
    return estimator.compute({role: a.result() for role, a in aggs.items()}, spec, is_weight)
