import numpy as np
import pytest

from nncompress.graph import Edge, Graph, Node, WeightInfo, op_kinds
from nncompress.quantization.algorithms import BiasCorrection, FastBiasCorrection, MinMaxQuantization
from nncompress.quantization.algorithms.base import BlockDiagonal, mean_transfer_matrix
from nncompress.quantization.algorithms.bias_correction import correction_levels
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import Placement, QuantizationPoint, QuantizerSpec, TargetPoint, TargetType

IN1 = TargetPoint(TargetType.INPUT, "fc1", 0)
MID = TargetPoint(TargetType.OUTPUT, "relu", 0)
W1 = TargetPoint(TargetType.WEIGHT, "fc1", 1)
W2 = TargetPoint(TargetType.WEIGHT, "fc2", 1)
OUT1 = TargetPoint(TargetType.OUTPUT, "fc1", 0)
OUT2 = TargetPoint(TargetType.OUTPUT, "fc2", 0)
WSPEC = QuantizerSpec(per_channel=True, channel_axis=0, narrow_range=True)


def _clipping_input_quantizer():
    # asymmetric 8-bit on [0, 2.5]: inputs ~ N(2, 1) lose their top tail -> a known mean shift
    return QuantizerParams(
        scale=np.asarray(2.5 / 255, np.float32),
        zero_point=np.asarray(0, np.int32),
        quant_min=0,
        quant_max=255,
    )


def _placement():
    return Placement(
        points=[
            QuantizationPoint(IN1, QuantizerSpec(mode="asymmetric"), False, consumers=(("fc1", 0),)),
            QuantizationPoint(MID, QuantizerSpec(), False, consumers=(("fc2", 0),)),
            QuantizationPoint(W1, WSPEC, True),
            QuantizationPoint(W2, WSPEC, True),
        ]
    )


def _output_means(adapter, model, batches, targets):
    from nncompress.quantization.statistics import MEAN_OF_MEAN, StatisticsCollector

    c = StatisticsCollector()
    keys = {t: c.add(t, MEAN_OF_MEAN, -1) for t in targets}
    c.collect(adapter, model, batches)
    return {t: c.result(k) for t, k in keys.items()}


@pytest.fixture
def mlp(fake):
    rng = np.random.default_rng(1)
    # biases away from 0: the shifts stay within the threshold on every channel
    w1, b1 = rng.normal(size=(8, 5)), np.abs(rng.normal(size=8)) + 1.0
    w2, b2 = rng.normal(size=(3, 8)) * 0.5, np.abs(rng.normal(size=3)) + 1.0
    model = fake.build_mlp(w1, b1, w2, b2)
    batches = [(rng.normal(size=(16, 5)) + 2.0).astype(np.float32) for _ in range(8)]
    adapter = fake.Adapter()
    placement = _placement()
    params = MinMaxQuantization().apply(model, model.graph, adapter, batches, placement)
    params[IN1] = _clipping_input_quantizer()
    quantized = adapter.apply(model, placement, params)
    return model, adapter, batches, placement, quantized


def _errors(adapter, model, quantized, batches):
    fp = _output_means(adapter, model, batches, [OUT1, OUT2])
    q = _output_means(adapter, quantized, batches, [OUT1, OUT2])
    return {t: np.abs(fp[t] - q[t]).max() for t in fp}


def test_fast_bias_correction_removes_known_input_shift(fake, mlp):
    model, adapter, batches, placement, quantized = mlp
    before = _errors(adapter, model, quantized, batches)
    # the local error of fc1: clipping of its input plus 4-bit weights, measured exactly
    x = np.concatenate(batches)
    xq = _clipping_input_quantizer().fake_quantize(x)
    wq = quantized.quantizers[W1].fake_quantize(model.params["fc1.weight"])
    expected_shift = x.mean(0) @ model.params["fc1.weight"].T - xq.mean(0) @ wq.T
    fbc = FastBiasCorrection()
    out = fbc.apply(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    assert out is quantized
    rec = {r.node: r for r in fbc.records}
    assert rec["fc1"].applied and rec["fc2"].applied
    np.testing.assert_allclose(rec["fc1"].shift, expected_shift, rtol=1e-4, atol=1e-5)
    after = _errors(adapter, model, quantized, batches)
    assert before[OUT1] > 0.1
    assert after[OUT1] < 1e-4  # linear layer: exact on the calibration set
    # what is left downstream comes from the nonlinearity (relu of a clipped distribution)
    assert after[OUT2] < 0.6 * before[OUT2]
    assert "2 of 2 layers corrected" in fbc.report()


def test_plain_correction_double_counts_upstream_shift(mlp):
    model, adapter, batches, placement, quantized = mlp
    plain = quantized.copy()
    # the first stage alone: the residual pass would correct fc2 by what is left in both models
    FastBiasCorrection(output_residual=False).correct(
        model, model.graph, adapter, batches, quantized_model=quantized, placement=placement
    )
    fbc = FastBiasCorrection(compensate_input_shift=False, output_residual=False)
    fbc.correct(model, model.graph, adapter, batches, quantized_model=plain, placement=placement)
    compensated, uncompensated = (
        _errors(adapter, model, quantized, batches),
        _errors(adapter, model, plain, batches),
    )
    assert uncompensated[OUT1] < 1e-4
    assert compensated[OUT2] < 0.7 * uncompensated[OUT2]


def test_residual_pass_corrects_the_last_layer_on_the_corrected_model(mlp):
    """What the first stage leaves at fc2 (relu of a shifted, clipped fc1 output) is measured on
    the corrected model and added to fc2's bias: exact on the calibration items; fc1, with fc2
    below it, is left as the first stage corrected it."""
    model, adapter, batches, placement, quantized = mlp
    first = quantized.copy()
    stages = []
    fbc = FastBiasCorrection(progress=lambda stage, done, total: stages.append(stage))
    fbc.correct(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    only = FastBiasCorrection(output_residual=False)
    only.correct(model, model.graph, adapter, batches, quantized_model=first, placement=placement)
    with_residual, without = (
        _errors(adapter, model, quantized, batches),
        _errors(adapter, model, first, batches),
    )
    assert without[OUT2] > 1e-2 and with_residual[OUT2] < 1e-4
    np.testing.assert_array_equal(quantized.params["fc1.bias"], first.params["fc1.bias"])
    rec = {r.node: r for r in fbc.records}
    assert "residual" in rec["fc2"].reason and "residual" not in rec["fc1"].reason
    # the record holds the whole change of the bias
    np.testing.assert_allclose(
        quantized.params["fc2.bias"] - model.params["fc2.bias"], rec["fc2"].shift, rtol=1e-5, atol=1e-6
    )
    assert stages.count("Bias correction: output layers") == len(batches)


def test_residual_pass_runs_on_its_first_items(mlp):
    model, adapter, batches, placement, quantized = mlp
    fbc = FastBiasCorrection(residual_subset_size=3)
    seen = adapter.seen_inputs
    fbc.correct(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    assert adapter.seen_inputs - seen == 8 + 8 + 3  # float, quantized, residual
    assert _errors(adapter, model, quantized, batches[:3])[OUT2] < 1e-4


def test_no_residual_into_a_squashing_function(fake, mlp):
    """A layer read by a Sigmoid keeps its first-stage correction only: the mean of its output is
    dominated by items deep in a flat tail of the sigmoid, where a shift changes nothing."""
    model, adapter, batches, placement, quantized = mlp
    for m in (model, quantized):  # fc2 -> sigmoid -> output
        g = m.graph
        if "sigmoid" not in g:
            g.remove_node("output")
            g.add_node(Node("sigmoid", "Sigmoid", op_kinds.SIGMOID))
            g.add_node(Node("output", "output", op_kinds.OUTPUT))
            g.add_edge(Edge("fc2", 0, "sigmoid", 0))
            g.add_edge(Edge("sigmoid", 0, "output", 0))
    calls = adapter.collect_calls
    fbc = FastBiasCorrection()
    fbc.correct(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    rec = {r.node: r for r in fbc.records}
    assert rec["fc2"].applied and "no residual pass" in rec["fc2"].reason and "Sigmoid" in rec["fc2"].reason
    assert adapter.collect_calls == calls + 2  # float and quantized: no residual pass


def test_threshold_skips_and_keeps_bias(mlp):
    model, adapter, batches, placement, quantized = mlp
    b1 = quantized.params["fc1.bias"].copy()
    fbc = FastBiasCorrection(threshold=1e-6)
    fbc.correct(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    assert not any(r.applied for r in fbc.records)
    assert "threshold" in fbc.records[0].reason
    np.testing.assert_array_equal(quantized.params["fc1.bias"], b1)


@pytest.mark.parametrize("small", [0.0, 1e-3])
def test_one_channel_over_the_threshold_leaves_the_whole_layer_alone(mlp, small):
    """NNCF's rule: the largest per-channel |shift / bias| decides, and a zero bias entry never
    passes. A channel that is ~0 in the bias gets no correction, nor do the other channels."""
    model, adapter, batches, placement, quantized = mlp
    quantized.params["fc1.bias"][3] = small
    b1 = quantized.params["fc1.bias"].copy()
    fbc = FastBiasCorrection()
    fbc.correct(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    rec = {r.node: r for r in fbc.records}
    assert not rec["fc1"].applied and rec["fc2"].applied
    assert rec["fc1"].magnitude > 2.0
    assert ("zero entry" if small == 0 else "threshold (2)") in rec["fc1"].reason
    np.testing.assert_array_equal(quantized.params["fc1.bias"], b1)


def test_layers_without_bias_or_unquantized_weights_are_left_alone(fake):
    rng = np.random.default_rng(2)
    model = fake.build_mlp(rng.normal(size=(4, 3)), rng.normal(size=4), rng.normal(size=(2, 4)), None)
    adapter = fake.Adapter()
    placement = Placement(points=[QuantizationPoint(W2, WSPEC, True)])
    quantized = adapter.apply(
        model, placement, MinMaxQuantization().apply(model, model.graph, adapter, None, placement)
    )
    fbc = FastBiasCorrection()
    fbc.correct(
        model, model.graph, adapter, [rng.normal(size=(4, 3))], quantized_model=quantized, placement=placement
    )
    assert fbc.records == []  # fc1 weight not quantized, fc2 has no bias
    assert adapter.collect_calls == 0


def test_bias_correction_is_exact_per_level(mlp):
    model, adapter, batches, placement, quantized = mlp
    calls = []
    bc = BiasCorrection(progress=lambda stage, done, total: calls.append(stage))
    bc.correct(model, model.graph, adapter, batches, quantized_model=quantized, placement=placement)
    assert [r.node for r in bc.records] == ["fc1", "fc2"] and all(r.applied for r in bc.records)
    after = _errors(adapter, model, quantized, batches)
    assert after[OUT1] < 1e-4 and after[OUT2] < 1e-4
    # one float pass + one pass per level
    assert {
        "Bias correction: float model",
        "Bias correction: level 1/2",
        "Bias correction: level 2/2",
    } == set(calls)


def test_fast_bias_correction_on_a_convolution(fake):
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(4, 3, 1, 1)), rng.normal(size=4) + 2
    model = fake.build_conv(w, b)
    adapter = fake.Adapter()
    x_tp = TargetPoint(TargetType.INPUT, "conv", 0)
    wt = TargetPoint(TargetType.WEIGHT, "conv", 1)
    placement = Placement(
        points=[
            QuantizationPoint(x_tp, QuantizerSpec(mode="asymmetric"), False, consumers=(("conv", 0),)),
            QuantizationPoint(wt, QuantizerSpec(num_bits=3, per_channel=True, channel_axis=0), True),
        ]
    )
    batches = [(rng.normal(size=(2, 3, 5, 5)) + 1).astype(np.float32) for _ in range(4)]
    params = MinMaxQuantization().apply(model, model.graph, adapter, batches, placement)
    quantized = adapter.apply(model, placement, params)
    out = TargetPoint(TargetType.OUTPUT, "conv", 0)

    def err():
        from nncompress.quantization.statistics import MEAN_OF_MEAN, StatisticsCollector

        means = []
        for m in (model, quantized):
            c = StatisticsCollector()
            k = c.add(out, MEAN_OF_MEAN, 1)
            c.collect(adapter, m, batches)
            means.append(c.result(k))
        return np.abs(means[0] - means[1]).max()

    before = err()
    FastBiasCorrection().correct(
        model, model.graph, adapter, batches, quantized_model=quantized, placement=placement
    )
    assert before > 1e-3 and err() < 1e-4


def test_mean_transfer_matrix_layouts():
    w = np.arange(24, dtype=float).reshape(4, 3, 2)  # (out, in, k)
    m = mean_transfer_matrix(w, WeightInfo("w", w.shape, out_channel_axis=0, in_channel_axis=1))
    np.testing.assert_array_equal(m, w.sum(axis=2))
    wt = np.transpose(w, (1, 0, 2))  # (in, out, k), transposed layout
    info_t = WeightInfo("w", wt.shape, out_channel_axis=1, in_channel_axis=0)
    np.testing.assert_array_equal(mean_transfer_matrix(wt, info_t), m)
    g = mean_transfer_matrix(np.ones((4, 1, 3)), WeightInfo("w", (4, 1, 3)), groups=4)
    np.testing.assert_array_equal(g, np.eye(4) * 3)
    # grouped: kept as its blocks (a dense depthwise M is channels x channels), used like the dense
    wg = np.arange(6 * 2 * 3, dtype=float).reshape(6, 2, 3)  # 3 groups of 2 outputs x 2 inputs
    grouped = mean_transfer_matrix(wg, WeightInfo("w", wg.shape), groups=3)
    assert isinstance(grouped, BlockDiagonal) and grouped.blocks.size == 12 and grouped.shape == (6, 6)
    dense = np.asarray(grouped)
    np.testing.assert_array_equal(dense[:2, :2], wg[:2].sum(axis=2))
    assert not dense[:2, 2:].any() and not dense[2:4, :2].any()
    x = np.arange(6.0) - 2
    np.testing.assert_allclose(grouped @ x, dense @ x)


def test_correction_levels_group_independent_layers():
    g = Graph()
    for name, kind in [
        ("in", op_kinds.INPUT),
        ("a", op_kinds.MATMUL),
        ("b", op_kinds.MATMUL),
        ("add", op_kinds.ADD),
        ("c", op_kinds.MATMUL),
    ]:
        g.add_node(Node(name, kind, kind))
    for src, dst, port in [("in", "a", 0), ("in", "b", 0), ("a", "add", 0), ("b", "add", 1), ("add", "c", 0)]:
        g.add_edge(Edge(src, 0, dst, port))
    levels = correction_levels(g, [g.node("a"), g.node("b"), g.node("c")])
    assert [[n.name for n in lvl] for lvl in levels] == [["a", "b"], ["c"]]
