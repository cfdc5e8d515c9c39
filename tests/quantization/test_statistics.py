import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nncompress.errors import DatasetError
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.quantization.statistics import (
    MAX_OF_ABS_MAX,
    MAX_OF_MAX,
    MEAN_OF_MAX,
    MEAN_OF_MIN,
    MIN_OF_MIN,
    MOMENTS,
    AbsMaxAggregator,
    HistogramQuantileAggregator,
    MaxAggregator,
    MeanAggregator,
    MinAggregator,
    MomentsAggregator,
    StatisticsCollector,
    StatisticSpec,
    aggregate,
    mean_of_quantiles,
    reduce_batch,
    request_for,
    stream_quantiles,
)

TP = TargetPoint(TargetType.OUTPUT, "conv", 0)


def _batches(seed=0, n=5, shape=(2, 3, 4, 4)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) * (i + 1) + i for i in range(n)]


# -- per-batch reducers ------------------------------------------------------------------------
def test_reduce_batch_shapes_and_values():
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    assert reduce_batch(x, "min").shape == ()
    assert reduce_batch(x, "max", keep_axis=1).shape == (3,)
    np.testing.assert_allclose(reduce_batch(x, "abs_max", keep_axis=-1), np.abs(x).max(axis=(0, 1)))
    np.testing.assert_allclose(reduce_batch(x, "mean", keep_axis=1), x.mean(axis=(0, 2)))
    q = reduce_batch(x, "quantile", keep_axis=1, q=(0.1, 0.9))
    assert q.shape == (2, 3)
    np.testing.assert_allclose(q, np.quantile(x, [0.1, 0.9], axis=(0, 2)))
    assert reduce_batch(x, "raw") is x
    with pytest.raises(ValueError):
        reduce_batch(x, "median")
    with pytest.raises(DatasetError):
        reduce_batch(x, "min", keep_axis=3)


def test_request_validation():
    assert request_for(TP, "quantile", None, [0.5]).q == (0.5,)
    with pytest.raises(ValueError):
        request_for(TP, "quantile", None, [])
    with pytest.raises(ValueError):
        request_for(TP, "min", None, [0.5])
    with pytest.raises(ValueError):
        request_for(TP, "nope")


# -- simple aggregators -------------------------------------------------------------------------
def test_min_max_mean_absmax_aggregators():
    batches = _batches()
    mins = [reduce_batch(b, "min", 1) for b in batches]
    maxs = [reduce_batch(b, "max", 1) for b in batches]
    agg_min, agg_max, agg_mean, agg_abs = (
        MinAggregator(),
        MaxAggregator(),
        MeanAggregator(),
        AbsMaxAggregator(),
    )
    for lo, hi in zip(mins, maxs):
        agg_min.update(lo)
        agg_max.update(hi)
        agg_mean.update(hi)
        agg_abs.update(lo)
    np.testing.assert_allclose(agg_min.result(), np.min(mins, axis=0))
    np.testing.assert_allclose(agg_max.result(), np.max(maxs, axis=0))
    np.testing.assert_allclose(agg_mean.result(), np.mean(maxs, axis=0))
    np.testing.assert_allclose(agg_abs.result(), np.max(np.abs(mins), axis=0))
    assert agg_min.count == 5


def test_empty_and_shape_errors():
    for agg in (
        MinAggregator("x at y"),
        MeanAggregator(),
        MomentsAggregator(),
        HistogramQuantileAggregator([0.5]),
    ):
        with pytest.raises(DatasetError, match="No statistics"):
            agg.result()
    agg = MeanAggregator("mean at conv")
    agg.update(np.zeros(3))
    with pytest.raises(DatasetError, match="changed shape"):
        agg.update(np.zeros(4))
    h = HistogramQuantileAggregator([0.5], keep_axis=0)
    h.update(np.zeros((3, 5)))
    with pytest.raises(DatasetError, match="channels"):
        h.update(np.zeros((4, 5)))


# -- streaming moments --------------------------------------------------------------------------
@pytest.mark.parametrize("keep_axis", [None, 1, -1])
def test_moments_match_two_pass(keep_axis):
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(n, 3, 5)) * 1e3 + 1e4 for n in (1, 4, 2, 7)]  # uneven batch sizes
    agg = MomentsAggregator(keep_axis)
    for b in batches:
        agg.update(b)
    allv = np.concatenate(batches)
    axes = tuple(a for a in range(3) if keep_axis is None or a != keep_axis % 3)
    np.testing.assert_allclose(agg.mean, allv.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(agg.std, allv.std(axis=axes), rtol=1e-9)
    np.testing.assert_allclose(agg.var, allv.var(axis=axes), rtol=1e-9)
    assert agg.result().shape == ((2,) if keep_axis is None else (2, allv.shape[keep_axis]))


# -- streaming quantiles ------------------------------------------------------------------------
def test_histogram_quantiles_with_range_expansion():
    rng = np.random.default_rng(2)
    batches = [rng.normal(loc=i, scale=s, size=3000) for i, s in enumerate((0.01, 1, 30, 3, 100))]
    q = (0.0, 0.001, 0.25, 0.5, 0.999, 1.0)
    agg = HistogramQuantileAggregator(q, bins=1024)
    for b in batches:
        agg.update(b)
    allv = np.concatenate(batches)
    exact = np.quantile(allv, q)
    est = agg.result()
    width = float(agg.bin_width)
    assert width <= 2 * (allv.max() - allv.min()) / (1024 - 2)
    assert np.all(np.abs(est - exact) <= width * (1 + 1e-9))
    assert est[0] == allv.min() and est[-1] == allv.max()
    assert agg._counts.shape == (1, 1024)  # bounded memory
    assert agg._counts.sum() == allv.size


def test_histogram_quantiles_per_channel_and_nan():
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(8, 3, 6)) * np.array([1, 10, 100])[None, :, None] for _ in range(4)]
    batches[2][0, 2, 0] = np.nan
    agg = HistogramQuantileAggregator((0.01, 0.99), keep_axis=1)
    for b in batches:
        agg.update(b)
    res = agg.result()
    assert res.shape == (2, 3)
    allv = np.concatenate(batches)
    exact = np.quantile(allv[:, :2], (0.01, 0.99), axis=(0, 2))
    assert np.all(np.abs(res[:, :2] - exact) <= agg.bin_width[:2])
    assert np.all(np.isnan(res[:, 2]))


def test_histogram_constant_then_spread():
    agg = HistogramQuantileAggregator((0.0, 0.5, 1.0))
    agg.update(np.full(10, 5.0))
    np.testing.assert_allclose(agg.result(), [5.0, 5.0, 5.0])
    agg.update(np.linspace(-100, 100, 11))
    allv = np.concatenate([np.full(10, 5.0), np.linspace(-100, 100, 11)])
    est, exact = agg.result(), np.quantile(allv, (0.0, 0.5, 1.0))
    assert np.all(np.abs(est - exact) <= agg.bin_width)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e3, 1e3), st.floats(1e-3, 1e3), st.integers(1, 200)),
        min_size=1,
        max_size=6,
    ),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_histogram_error_bound_property(batch_params, q, seed):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(loc, scale, size=n) for loc, scale, n in batch_params]
    agg = HistogramQuantileAggregator((q,), bins=256)
    for b in batches:
        agg.update(b)
    allv = np.concatenate(batches)
    err = abs(float(agg.result()[0]) - float(np.quantile(allv, q)))
    assert err <= float(agg.bin_width) * (1 + 1e-6) + 1e-9 * max(1.0, float(np.abs(allv).max()))


# -- statistic specs and the collector ---------------------------------------------------------
def test_statistic_spec_validation_and_aggregate():
    with pytest.raises(ValueError):
        StatisticSpec("raw", "mean")
    with pytest.raises(ValueError):
        StatisticSpec("min", "moments")
    with pytest.raises(ValueError):
        StatisticSpec("min", "median")
    with pytest.raises(ValueError):
        mean_of_quantiles(())
    assert stream_quantiles([0.5]).request(TP, None).reducer == "raw"
    assert mean_of_quantiles([0.1, 0.9]).request(TP, 1).q == (0.1, 0.9)
    batches = _batches()
    np.testing.assert_allclose(
        aggregate(MEAN_OF_MIN, batches, 1), np.mean([b.min(axis=(0, 2, 3)) for b in batches], 0)
    )
    np.testing.assert_allclose(aggregate(MOMENTS, batches)[0], np.concatenate(batches).mean())
    assert "mean of per-batch min" in MEAN_OF_MIN.describe()


class _ListAdapter:
    """Feeds each input (a dict target -> tensor) through the requested reductions."""

    def __init__(self):
        self.calls = 0

    def collect_statistics(self, model, inputs, sinks):
        self.calls += 1
        n = 0
        for item in inputs:
            for req, sink in sinks.items():
                sink(reduce_batch(item[req.target], req.reducer, req.keep_axis, req.q))
            n += 1
        return n


def test_collector_shares_requests_and_fans_out():
    c = StatisticsCollector()
    k1 = c.add(TP, MIN_OF_MIN, 1)
    k2 = c.add(TP, MEAN_OF_MIN, 1)
    k3 = c.add(TP, MAX_OF_MAX, 1)
    k4 = c.add(TP, MAX_OF_ABS_MAX, None)
    assert c.add(TP, MIN_OF_MIN, 1) == k1 and len(c) == 4
    assert len(c.requests) == 3  # min/1 shared by two aggregations
    batches = _batches()
    progress = []
    n = c.collect(
        _ListAdapter(), None, [{TP: b} for b in batches], progress=lambda d, t: progress.append(d), total=5
    )
    assert n == 5 and progress == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(c.result(k1), np.min([b.min(axis=(0, 2, 3)) for b in batches], 0))
    np.testing.assert_allclose(c.result(k2), np.mean([b.min(axis=(0, 2, 3)) for b in batches], 0))
    np.testing.assert_allclose(c.result(k3), np.max([b.max(axis=(0, 2, 3)) for b in batches], 0))
    assert float(c.result(k4)) == pytest.approx(max(np.abs(b).max() for b in batches))
    assert "at conv:output0" in str(k2)


def test_collector_errors():
    c = StatisticsCollector()
    key = c.add(TP, MEAN_OF_MAX)
    with pytest.raises(DatasetError, match="no inputs"):
        c.collect(_ListAdapter(), None, [])
    with pytest.raises(DatasetError, match="No statistics"):
        c.result(key)
    with pytest.raises(KeyError):
        c.result(c.keys[0].__class__(TP, MIN_OF_MIN))
    assert StatisticsCollector().collect(_ListAdapter(), None, []) == 0  # nothing to collect
