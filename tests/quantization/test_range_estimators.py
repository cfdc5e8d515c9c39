from dataclasses import dataclass
from enum import Enum

import numpy as np
import pytest

from nncompress.errors import ConfigError
from nncompress.quantization.range_estimators import (
    RANGE_ESTIMATORS,
    DefaultEstimator,
    MeanPercentileEstimator,
    MinMaxEstimator,
    MixedMinMaxEstimator,
    PercentileEstimator,
    ThreeSigmaEstimator,
    default_range_estimators,
    estimate_range,
    get_range_estimator,
)
from nncompress.quantization.spec import QuantizerSpec
from nncompress.quantization.statistics import (
    MAX_OF_ABS_MAX,
    MAX_OF_MAX,
    MEAN_OF_ABS_MAX,
    MEAN_OF_MAX,
    MEAN_OF_MIN,
    MIN_OF_MIN,
)


@dataclass
class RangeEstimatorParameters:  # the shape of advanced_parameters.RangeEstimatorParameters
    type: object = None
    min_percentile: float = 0.1
    max_percentile: float = 99.9


class RangeEstimatorType(str, Enum):
    MEAN_PERCENTILE = "mean_percentile"


SYM = QuantizerSpec()
ASYM = QuantizerSpec(mode="asymmetric")
PER_CH = QuantizerSpec(per_channel=True, channel_axis=1)


def _batches():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(4, 3, 8)) * (1 + i) - 0.5 * i for i in range(6)]


def test_registry_names():
    assert set(RANGE_ESTIMATORS) == {
        "min_max",
        "mean_min_max",
        "threesigma",
        "percentile",
        "mean_percentile",
        "mixed_min_max",
        "default",
    }
    w, a = default_range_estimators("transformer")
    assert isinstance(w, MinMaxEstimator) and isinstance(a, DefaultEstimator)


def test_get_range_estimator_forms():
    assert isinstance(get_range_estimator(None), DefaultEstimator)
    assert isinstance(get_range_estimator("MIN_MAX"), MinMaxEstimator)
    est = get_range_estimator(
        {"type": "percentile", "params": {"min_percentile": "0.01", "max_percentile": 99.99}}
    )
    assert est == PercentileEstimator(0.01, 99.99)
    assert est.quantiles == pytest.approx((1e-4, 0.9999))
    params = RangeEstimatorParameters(
        type=RangeEstimatorType.MEAN_PERCENTILE, min_percentile=1, max_percentile=99
    )
    assert get_range_estimator(params) == MeanPercentileEstimator(1.0, 99.0)
    assert isinstance(get_range_estimator(RangeEstimatorParameters()), DefaultEstimator)
    assert isinstance(get_range_estimator(RangeEstimatorParameters(type="min_max")), MinMaxEstimator)
    same = ThreeSigmaEstimator(2.0)
    assert get_range_estimator(same) is same
    assert same.describe() == "threesigma(n_sigma=2.0)"


def test_get_range_estimator_errors():
    with pytest.raises(ConfigError, match="Did you mean.*'min_max'"):
        get_range_estimator("min_maxx")
    with pytest.raises(ConfigError, match="min_percentil"):
        get_range_estimator("percentile", min_percentil=1)
    with pytest.raises(ConfigError, match="below"):
        PercentileEstimator(99.0, 1.0)
    with pytest.raises(ConfigError, match="max_percentile"):
        MeanPercentileEstimator(0.0, 101.0)
    with pytest.raises(ConfigError):
        ThreeSigmaEstimator(0)


def test_symmetric_reads_abs_max():
    assert MinMaxEstimator().statistics(SYM) == {"min": MIN_OF_MIN, "max": MAX_OF_ABS_MAX}
    assert MinMaxEstimator().statistics(ASYM) == {"min": MIN_OF_MIN, "max": MAX_OF_MAX}
    assert MinMaxEstimator().statistics(QuantizerSpec(signed=False))["max"] == MAX_OF_MAX


def test_mixed_and_default_choices():
    mixed, default = MixedMinMaxEstimator(), DefaultEstimator()
    # per-tensor activations
    assert mixed.statistics(ASYM) == {"min": MEAN_OF_MIN, "max": MEAN_OF_MAX}
    assert mixed.statistics(SYM) == {"min": MIN_OF_MIN, "max": MEAN_OF_ABS_MAX}
    assert default.statistics(SYM) == {"min": MEAN_OF_MIN, "max": MEAN_OF_ABS_MAX}
    # weights and per-channel: exact
    for est in (mixed, default):
        assert est.statistics(SYM, is_weight=True) == {"min": MIN_OF_MIN, "max": MAX_OF_ABS_MAX}
        assert est.statistics(PER_CH) == {"min": MIN_OF_MIN, "max": MAX_OF_ABS_MAX}


def test_estimates_against_numpy():
    batches = _batches()
    allv = np.concatenate(batches)
    lo, hi = estimate_range(MinMaxEstimator(), ASYM, batches)
    assert (lo, hi) == (allv.min(), allv.max())
    lo, hi = estimate_range(get_range_estimator("mean_min_max"), ASYM, batches)
    assert lo == pytest.approx(np.mean([b.min() for b in batches]))
    assert hi == pytest.approx(np.mean([b.max() for b in batches]))
    lo, hi = estimate_range(MinMaxEstimator(), PER_CH, batches)
    np.testing.assert_allclose(lo, allv.min(axis=(0, 2)))
    lo, hi = estimate_range(ThreeSigmaEstimator(), PER_CH, batches)
    mean, std = allv.mean(axis=(0, 2)), allv.std(axis=(0, 2))
    np.testing.assert_allclose(lo, mean - 3 * std)
    np.testing.assert_allclose(hi, mean + 3 * std)
    lo, hi = estimate_range(PercentileEstimator(), ASYM, batches)
    exact = np.percentile(allv, [0.1, 99.9])
    tol = 2 * (allv.max() - allv.min()) / 2046
    assert abs(lo - exact[0]) <= tol and abs(hi - exact[1]) <= tol
    lo, hi = estimate_range(MeanPercentileEstimator(1, 99), ASYM, batches)
    assert lo == pytest.approx(np.mean([np.percentile(b, 1) for b in batches]))
    assert hi == pytest.approx(np.mean([np.percentile(b, 99) for b in batches]))


def test_symmetric_mean_uses_dominant_side():
    # negative side dominates: mean of per-batch abs max, not of per-batch max
    batches = [np.array([-10.0, 1.0]), np.array([-20.0, 2.0])]
    lo, hi = estimate_range(get_range_estimator("mean_min_max"), SYM, batches)
    assert lo == -15.0 and hi == 15.0
