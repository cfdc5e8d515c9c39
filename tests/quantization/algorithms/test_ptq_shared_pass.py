"""Fast bias correction's float statistics collected in MinMax's pass (one model run per item)."""

import numpy as np
import pytest

from nncompress.quantization.algorithms import FastBiasCorrection, MinMaxQuantization
from nncompress.quantization.spec import Placement, QuantizationPoint, QuantizerSpec, TargetPoint, TargetType
from nncompress.quantization.statistics import MAX_OF_MAX, MEAN_OF_MEAN, StatisticsCollector

IN1 = TargetPoint(TargetType.INPUT, "fc1", 0)
MID = TargetPoint(TargetType.OUTPUT, "relu", 0)
W1 = TargetPoint(TargetType.WEIGHT, "fc1", 1)
W2 = TargetPoint(TargetType.WEIGHT, "fc2", 1)
WSPEC = QuantizerSpec(per_channel=True, channel_axis=0, narrow_range=True, num_bits=4)


def _placement():
    return Placement(
        points=[
            QuantizationPoint(IN1, QuantizerSpec(mode="asymmetric"), False, consumers=(("fc1", 0),)),
            QuantizationPoint(MID, QuantizerSpec(), False, consumers=(("fc2", 0),)),
            QuantizationPoint(W1, WSPEC, True),
            QuantizationPoint(W2, WSPEC, True),
        ]
    )


@pytest.fixture
def case(fake):
    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(size=(8, 5)), rng.normal(size=8) + 1.0
    w2, b2 = rng.normal(size=(3, 8)) * 0.5, rng.normal(size=3) + 1.0
    model = fake.build_mlp(w1, b1, w2, b2)
    batches = [(rng.normal(size=(4, 5)) + 1.0).astype(np.float32) for _ in range(12)]
    return model, batches


def _run(fake, model, batches, shared: bool):
    adapter, placement = fake.Adapter(), _placement()
    fbc = FastBiasCorrection(subset_size=5)
    companions = []
    if shared:
        companions = fbc.float_statistics(model, model.graph, adapter, batches, placement)
    params = MinMaxQuantization(subset_size=9).apply(
        model, model.graph, adapter, batches, placement, companions
    )
    quantized = adapter.apply(model, placement, params)
    fbc.apply(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    return adapter, params, fbc.records


def test_shared_pass_gives_the_same_corrections_with_one_pass_less(fake, case):
    model, batches = case
    two_pass_adapter, params_a, separate = _run(fake, model, batches, shared=False)
    one_pass_adapter, params_b, shared = _run(fake, model, batches, shared=True)
    # MinMax saw 9 items either way; the correction its 5 (float) + 5 (quantized) + 5 (the
    # residual pass on fc2): shared, the float model runs 9 times (5 with every statistic, then
    # 4 with MinMax's only), not 14
    assert two_pass_adapter.seen_inputs == 9 + 5 + 5 + 5
    assert one_pass_adapter.seen_inputs == 9 + 5 + 5
    assert [len(r) for r in one_pass_adapter.requests][:2] == [
        len(two_pass_adapter.requests[0]) + len(two_pass_adapter.requests[1]),
        len(two_pass_adapter.requests[0]),
    ]
    for tp in params_a:
        np.testing.assert_array_equal(params_a[tp].scale, params_b[tp].scale)
    assert [r.node for r in separate] == [r.node for r in shared] == ["fc1", "fc2"]
    for a, b in zip(separate, shared):
        assert a.applied == b.applied
        np.testing.assert_allclose(a.shift, b.shift, rtol=0, atol=1e-12)
    assert any(np.abs(r.shift).max() > 1e-3 for r in shared)  # there was something to correct


def test_companion_sees_only_its_first_items_and_shares_requests(fake, case):
    model, batches = case
    adapter = fake.Adapter()
    tp = TargetPoint(TargetType.OUTPUT, "fc1", 0)
    main, early, alone = StatisticsCollector(), StatisticsCollector(), StatisticsCollector()
    k_main = main.add(tp, MAX_OF_MAX, -1)
    k_shared = early.add(tp, MAX_OF_MAX, -1)  # the same request as main's: one backend reduction
    k_mean = early.add(tp, MEAN_OF_MEAN, -1)
    alone.add(tp, MEAN_OF_MEAN, -1)
    assert not early.collected
    n = main.collect(adapter, model, iter(batches), companions=[(early, 3)])
    assert n == len(batches) and early.collected
    # max and mean, each requested once, for 3 items; then max alone for the other items
    assert [len(r) for r in adapter.requests] == [2, 1]
    assert adapter.seen_inputs == len(batches)
    alone.collect(adapter, model, iter(batches[:3]))
    np.testing.assert_array_equal(early.result(k_mean), alone.result(alone.keys[0]))
    assert early.aggregator(k_shared).count == 3 and main.aggregator(k_main).count == len(batches)
    assert not np.array_equal(early.result(k_shared), main.result(k_main))
    with pytest.raises(ValueError, match="own companion"):
        main.collect(adapter, model, iter(batches), companions=[(main, 1)])


def test_float_pass_runs_when_the_companion_was_never_collected(fake, case):
    model, batches = case
    adapter, placement = fake.Adapter(), _placement()
    fbc = FastBiasCorrection(subset_size=4)
    assert fbc.float_statistics(model, model.graph, adapter, batches, placement) != []
    params = MinMaxQuantization(subset_size=4).apply(model, model.graph, adapter, batches, placement)
    quantized = adapter.apply(model, placement, params)
    calls = adapter.collect_calls
    fbc.apply(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    assert adapter.collect_calls == calls + 3  # float, quantized and residual passes
    assert len(fbc.records) == 2
