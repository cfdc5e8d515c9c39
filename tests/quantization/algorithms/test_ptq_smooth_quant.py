import numpy as np
import pytest

from nncompress.quantization.algorithms import SmoothQuant
from nncompress.quantization.algorithms.smooth_quant import (
    scale_weight,
    smoothing_scales,
    weight_input_absmax,
)
from nncompress.quantization.spec import Placement, QuantizationPoint, QuantizerSpec, TargetPoint, TargetType


def _outlier_batches(rng, n=6, channels=8, outlier=3, factor=60.0):
    out = []
    for _ in range(n):
        x = rng.normal(size=(4, 5, channels)).astype(np.float32)  # (batch, tokens, channels)
        x[..., outlier] *= factor
        out.append(x)
    return out


def _input_absmax(model, batches, node):
    seen = []

    def observe(tp, v):
        if tp == TargetPoint(TargetType.INPUT, node, 0):
            seen.append(np.abs(v).reshape(-1, v.shape[-1]).max(0))

    for b in batches:
        model(b, observe)
    return np.max(seen, axis=0)


def test_smoothing_keeps_the_function_and_flattens_outliers(fake):
    rng = np.random.default_rng(0)
    model = fake.build_mlp(
        rng.normal(size=(6, 8)), rng.normal(size=6), rng.normal(size=(3, 6)), rng.normal(size=3)
    )
    adapter = fake.Adapter()
    batches = _outlier_batches(rng)
    reference = [model(b) for b in batches]
    before = _input_absmax(model, batches, "fc1")
    sq = SmoothQuant(alpha=0.5)
    smoothed = sq.apply(model, model.graph, adapter, batches)
    for b, ref in zip(batches, reference):
        np.testing.assert_allclose(smoothed(b), ref, rtol=1e-4, atol=1e-4)
    after = _input_absmax(smoothed, batches, "fc1")
    # outlier channel dominated the range by ~60x; smoothing evens the channels out
    assert before.max() / np.median(before) > 20
    assert after.max() / np.median(after) < 0.3 * before.max() / np.median(before)
    assert all(r.applied for r in sq.records) and len(sq.records) == 2
    assert "2 of 2 groups smoothed" in sq.report()
    assert adapter.collect_calls == 1


def test_shared_activation_is_one_group(fake):
    rng = np.random.default_rng(1)
    model = fake.build_shared_input(rng.normal(size=(4, 8)), rng.normal(size=(4, 8)) * 3)
    groups = SmoothQuant().groups(model.graph)
    assert len(groups) == 1
    assert groups[0].source == ("input", 0)
    assert groups[0].consumers == (("q", 0), ("k", 0))
    assert groups[0].weights == (("q", 1), ("k", 1))
    assert groups[0].axis == -1


def test_shared_group_preserves_function(fake):
    rng = np.random.default_rng(2)
    model = fake.build_shared_input(rng.normal(size=(4, 8)), rng.normal(size=(4, 8)) * 3)
    adapter = fake.Adapter()
    batches = _outlier_batches(rng)
    reference = [model(b) for b in batches]
    wq, wk = model.params["q.weight"].copy(), model.params["k.weight"].copy()
    sq = SmoothQuant()
    smoothed = sq.apply(model, model.graph, adapter, batches)
    for b, ref in zip(batches, reference):
        np.testing.assert_allclose(smoothed(b), ref, rtol=1e-4, atol=1e-3)
    s = sq.records[0].scale
    np.testing.assert_allclose(smoothed.params["q.weight"], wq * s[None, :], rtol=1e-5)
    np.testing.assert_allclose(smoothed.params["k.weight"], wk * s[None, :], rtol=1e-5)
    assert set(smoothed.edge_scales) == {("q", 0), ("k", 0)}


def test_placement_limits_groups(fake):
    rng = np.random.default_rng(3)
    model = fake.build_mlp(
        rng.normal(size=(6, 8)), rng.normal(size=6), rng.normal(size=(3, 6)), rng.normal(size=3)
    )
    placement = Placement(
        points=[
            QuantizationPoint(
                TargetPoint(TargetType.OUTPUT, "relu", 0), QuantizerSpec(), False, consumers=(("fc2", 0),)
            )
        ]
    )
    groups = SmoothQuant().groups(model.graph, placement)
    assert [g.consumers for g in groups] == [(("fc2", 0),)]
    assert groups[0].source == ("relu", 0)


def test_smoothing_scales_math():
    act = np.array([4.0, 0.0, 1.0, 1e12])
    w = np.array([1.0, 2.0, 0.0, 1.0])
    s = smoothing_scales(act, w, alpha=0.5)
    assert s[0] == pytest.approx(2.0)  # sqrt(4 / 1)
    assert s[1] == 1.0  # no activation: leave alone
    assert s[2] == 1e5  # zero weight column: clipped
    assert s[3] == 1e5
    assert np.all(np.isfinite(s)) and np.all(s > 0)
    w3 = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(scale_weight(w3, np.array([1, 2, 3, 4]), 1), w3 * [1, 2, 3, 4])
    np.testing.assert_array_equal(weight_input_absmax(w3, 1), [8, 9, 10, 11])
    with pytest.raises(ValueError):
        SmoothQuant(alpha=1.5)
