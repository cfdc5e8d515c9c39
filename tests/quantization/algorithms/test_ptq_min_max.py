import numpy as np
import pytest

from nncompress.errors import DatasetError, GraphError, QuantizationError
from nncompress.quantization.algorithms import MinMaxQuantization
from nncompress.quantization.quantizer_params import compute_params, weight_params
from nncompress.quantization.spec import (
    Placement,
    QuantizationPoint,
    QuantizerSpec,
    TargetPoint,
    TargetType,
)

A_IN = TargetPoint(TargetType.INPUT, "fc1", 0)
A_MID = TargetPoint(TargetType.OUTPUT, "relu", 0)
W1 = TargetPoint(TargetType.WEIGHT, "fc1", 1)
W2 = TargetPoint(TargetType.WEIGHT, "fc2", 1)
WSPEC = QuantizerSpec(per_channel=True, channel_axis=0, narrow_range=True)


def _placement(act_spec=None, unified=None):
    act_spec = act_spec or QuantizerSpec()
    return Placement(
        points=[
            QuantizationPoint(A_IN, act_spec, False, consumers=(("fc1", 0),), unified_group=unified),
            QuantizationPoint(A_MID, act_spec, False, consumers=(("fc2", 0),), unified_group=unified),
            QuantizationPoint(W1, WSPEC, True),
            QuantizationPoint(W2, WSPEC, True),
        ]
    )


@pytest.fixture
def setup(fake):
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(6, 4)), rng.normal(size=6)
    w2, b2 = rng.normal(size=(3, 6)), rng.normal(size=3)
    model = fake.build_mlp(w1, b1, w2, b2)
    batches = [rng.normal(size=(2, 4)).astype(np.float32) * (1 + i) for i in range(5)]
    return model, fake.Adapter(), batches


def _relu_out(model, x):
    return np.maximum(x @ model.params["fc1.weight"].T + model.params["fc1.bias"], 0)


def test_default_ranges_mean_of_batch_stats_and_exact_weights(setup):
    model, adapter, batches = setup
    algo = MinMaxQuantization(subset_size=10)
    result = algo.calibrate(model, model.graph, adapter, batches, _placement())
    assert adapter.collect_calls == 1 and adapter.seen_inputs == 5
    # symmetric per-tensor activations: mean of per-batch min and of per-batch abs max
    lo, hi = result.ranges[A_IN]
    assert lo == pytest.approx(np.mean([b.min() for b in batches]))
    assert hi == pytest.approx(np.mean([np.abs(b).max() for b in batches]))
    p = result.params[A_IN]
    assert p.quant_min == -128 and p.quant_max == 127
    assert float(p.scale) == pytest.approx(float(hi) / 127, rel=1e-6)
    # relu output is non-negative -> unsigned automatically
    mid = result.params[A_MID]
    assert (mid.quant_min, mid.quant_max) == (0, 255)
    expected = np.mean([_relu_out(model, b).max() for b in batches])
    assert float(mid.scale) == pytest.approx(expected / 255, rel=1e-5)
    # weights: exact per-channel
    ref = weight_params(WSPEC, model.params["fc1.weight"])
    np.testing.assert_array_equal(result.params[W1].scale, ref.scale)
    assert result.params[W1].channel_axis == 0
    assert "fc1:input0" in result.report()


def test_min_max_estimator_gives_global_range(setup):
    model, adapter, batches = setup
    spec = QuantizerSpec(mode="asymmetric")
    algo = MinMaxQuantization(activations_range_estimator="min_max")
    result = algo.calibrate(model, model.graph, adapter, batches, _placement(spec))
    allx = np.concatenate(batches)
    lo, hi = result.ranges[A_IN]
    assert lo == pytest.approx(allx.min()) and hi == pytest.approx(allx.max())
    p = result.params[A_IN]
    assert p.input_low <= allx.min() and p.input_high >= allx.max() - 1e-6


def test_one_request_per_target_and_reducer(setup):
    model, adapter, batches = setup
    algo = MinMaxQuantization(activations_range_estimator="mixed_min_max")
    placement = _placement(QuantizerSpec(mode="asymmetric"))
    collector, keys = algo.statistic_plan(placement)
    # mixed, asymmetric per-tensor: mean of min and mean of max -> 2 reducers per target
    assert len(collector.requests) == 4
    algo.apply(model, model.graph, adapter, batches, placement)
    assert len(adapter.requests[0]) == 4


def test_unified_group_shares_one_range(setup):
    model, adapter, batches = setup
    result = MinMaxQuantization().calibrate(model, model.graph, adapter, batches, _placement(unified=0))
    a, b = result.params[A_IN], result.params[A_MID]
    assert float(a.scale) == float(b.scale) and a.quant_min == b.quant_min


def test_subset_size_and_progress(setup):
    model, adapter, batches = setup
    calls = []
    algo = MinMaxQuantization(
        subset_size=3, progress=lambda stage, done, total: calls.append((stage, done, total))
    )
    algo.apply(model, model.graph, adapter, iter(batches), _placement())
    assert adapter.seen_inputs == 3
    assert [c[1] for c in calls] == [1, 2, 3]
    assert calls[-1][0] == "Statistics collection"


def test_weights_only_needs_no_data(setup):
    model, adapter, _ = setup
    placement = Placement(points=[QuantizationPoint(W1, WSPEC, True)])
    params = MinMaxQuantization().apply(model, model.graph, adapter, None, placement)
    assert adapter.collect_calls == 0 and set(params) == {W1}


def test_errors(setup):
    model, adapter, batches = setup
    algo = MinMaxQuantization()
    with pytest.raises(QuantizationError):
        algo.apply(model, model.graph, adapter, batches, Placement())
    with pytest.raises(DatasetError):
        algo.apply(model, model.graph, adapter, [], _placement())
    with pytest.raises(DatasetError):
        algo.apply(model, model.graph, adapter, None, _placement())
    bad = Placement(
        points=[QuantizationPoint(TargetPoint(TargetType.INPUT, "nope", 0), QuantizerSpec(), False)]
    )
    with pytest.raises(GraphError, match="nope"):
        algo.apply(model, model.graph, adapter, batches, bad)
    nan_batches = [np.full((2, 4), np.nan, dtype=np.float32)]
    with pytest.raises(QuantizationError, match="fc1:input0"):
        algo.apply(model, model.graph, adapter, nan_batches, _placement())


def test_per_channel_activation_and_percentile(setup):
    model, adapter, batches = setup
    spec = QuantizerSpec(per_channel=True, channel_axis=-1)
    placement = Placement(points=[QuantizationPoint(A_IN, spec, False)])
    algo = MinMaxQuantization(
        activations_range_estimator={"type": "percentile", "params": {"min_percentile": 1}}
    )
    result = algo.calibrate(model, model.graph, adapter, batches, placement)
    lo, hi = result.ranges[A_IN]
    allx = np.concatenate(batches)
    np.testing.assert_allclose(lo, np.quantile(allx, 0.01, axis=0), atol=0.05)
    assert result.params[A_IN].scale.shape == (4,)
    ref = compute_params(spec, lo, hi)
    np.testing.assert_array_equal(result.params[A_IN].scale, ref.scale)
