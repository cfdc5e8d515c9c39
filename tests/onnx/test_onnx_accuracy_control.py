"""``quantize_with_accuracy_control`` on an ONNX model with one quantization-sensitive op."""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import SensitiveMLP, build, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import nncompress  # noqa: E402
from nncompress.errors import NNCompressWarning  # noqa: E402
from nncompress.onnx.adapter import placement_of  # noqa: E402
from nncompress.parameters import DropType  # noqa: E402
from nncompress.quantization.accuracy_control import (  # noqa: E402
    AdvancedAccuracyRestorerParameters,
    last_accuracy_control_report,
)
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402

ADVANCED = AdvancedQuantizationParameters(show_progress=False)


def run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def accuracy(model, data) -> float:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = total = 0
    for x, y in data:
        correct += int((session.run(None, {name: x})[0].argmax(1) == y).sum())
        total += len(y)
    return correct / total


@pytest.fixture(scope="module")
def setup():
    model = export_onnx(build(SensitiveMLP))
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(8)]
    items = [(x, run(model, x).argmax(1)) for x in inputs]  # the FP32 model is right by definition
    return model, nncompress.Dataset(items, lambda item: item[0]), nncompress.Dataset(items)


def control(model, calibration, validation, **kwargs):
    return nncompress.quantize_with_accuracy_control(
        model,
        calibration,
        validation,
        accuracy,
        subset_size=128,
        advanced_quantization_parameters=ADVANCED,
        **kwargs,
    )


def test_plain_quantize_exceeds_drop(setup):
    model, calibration, validation = setup
    q = nncompress.quantize(model, calibration, subset_size=128, advanced_parameters=ADVANCED)
    assert accuracy(model, validation.get_data()) - accuracy(q, validation.get_data()) > 0.5


@pytest.mark.parametrize("drop_type", [DropType.ABSOLUTE, DropType.RELATIVE])
def test_reverts_sensitive_op(setup, drop_type):
    model, calibration, validation = setup
    before = model.SerializeToString()
    q = control(model, calibration, validation, max_drop=0.02, drop_type=drop_type)
    report = last_accuracy_control_report()
    assert report.target_met and report.final_drop <= 0.02
    assert report.quantized_metric < report.fp32_metric - 0.5
    assert len(report.reverted_ops) == 1 and "fc2" in report.reverted_ops[0]
    assert accuracy(model, validation.get_data()) - accuracy(q, validation.get_data()) <= 0.02
    assert isinstance(q, onnx.ModelProto)
    placement = placement_of(q)
    assert report.reverted_ops[0] in placement["skipped"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in q.graph.node}
    assert model.SerializeToString() == before  # the input model is unchanged


def test_unreachable_target_warns(setup):
    model, calibration, validation = setup
    with pytest.warns(NNCompressWarning, match="exceeds max_drop"):
        q = control(
            model,
            calibration,
            validation,
            max_drop=-1.0,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=1),
        )
    report = last_accuracy_control_report()
    assert isinstance(q, onnx.ModelProto) and not report.target_met and report.iterations == 1
    assert report.final_metric > report.quantized_metric  # the one op reverted was the sensitive one


# ---------------------------------------------------------------------------------------------
# NNCF's re-ranking: a revert that makes the drop worse is undone and the rest ranked again
# ---------------------------------------------------------------------------------------------
def three_gemms() -> onnx.ModelProto:
    """x -> Gemm A -> Relu -> Gemm B -> Relu -> Gemm C: three ops, each with its own quantizers."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i, name in enumerate("ABC"):
        inits.append(numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{name}"))
        nodes.append(helper.make_node("Gemm", [prev, f"w{name}"], [f"g{name}"], name=name, transB=1))
        prev = f"g{name}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{name}"], name=f"relu{name}"))
            prev = f"r{name}"
    graph = helper.make_graph(
        nodes,
        "three_gemms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["n", 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def quantized_ops(model: onnx.ModelProto) -> frozenset[str]:
    """Which of A, B, C still have a quantizer (weight or input), read from the recorded placement."""
    stored = placement_of(model)
    if stored is None:  # the float model
        return frozenset()
    from nncompress.quantization.spec import Placement

    ops = set()
    for point in Placement.from_dict(stored).points:
        ops.add(point.target.node) if point.is_weight else ops.update(node for node, _ in point.consumers)
    return frozenset(ops & set("ABC"))


def table_metric(table: dict[frozenset[str], float], calls: list[frozenset[str]]):
    """A metric that depends only on which ops are quantized (a black box to the algorithm)."""

    def validation_fn(model, data) -> float:
        list(data)  # consume the items, as a real metric would
        q = quantized_ops(model)
        calls.append(q)
        return 1.0 if not q and placement_of(model) is None else table[q]

    return validation_fn


# Reverting A alone helps most, so A goes first. Once A is float, reverting B makes things *worse*
# (0.8 -> 0.75) while C now helps most (0.8 -> 0.95): only a re-ranking after the undone B finds it.
INTERACTING = {
    frozenset("ABC"): 0.5,
    frozenset("BC"): 0.8,  # A reverted
    frozenset("AC"): 0.7,  # B reverted
    frozenset("AB"): 0.6,  # C reverted
    frozenset("C"): 0.75,  # A, B reverted
    frozenset("B"): 0.95,  # A, C reverted
    frozenset("A"): 0.9,  # B, C reverted
    frozenset(): 1.0,
}


def _control_table(table, max_drop: float, **restorer):
    data = [np.random.default_rng(k).standard_normal((4, 8)).astype(np.float32) for k in range(4)]
    calls: list[frozenset[str]] = []
    q = nncompress.quantize_with_accuracy_control(
        three_gemms(),
        nncompress.Dataset(data),
        nncompress.Dataset(data),
        table_metric(table, calls),
        max_drop=max_drop,
        advanced_quantization_parameters=ADVANCED,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(**restorer),
    )
    return q, last_accuracy_control_report(), calls


def test_undone_revert_triggers_reranking_that_changes_the_order():
    q, report, _ = _control_table(INTERACTING, max_drop=0.1)
    first = [op for op, _ in report.rankings[0]]
    assert first == ["A", "B", "C"]
    assert [g for _, g in report.rankings[0]] == pytest.approx([0.3, 0.2, 0.1])
    # A kept (0.8), B tried and undone (0.75 < 0.8), then the rest re-ranked on the model without A
    assert report.history[:2] == [("A", pytest.approx(0.8), True), ("B", pytest.approx(0.75), False)]
    assert len(report.rankings) == 2
    reranked = [op for op, _ in report.rankings[1]]
    assert reranked == ["C", "B"]  # C now helps most, B would hurt: the order changed
    assert [g for _, g in report.rankings[1]] == pytest.approx([0.15, -0.05])
    assert report.target_met and sorted(report.reverted_ops) == ["A", "C"]
    assert report.final_metric == pytest.approx(0.95) and report.iterations == 3
    assert quantized_ops(q) == frozenset("B")  # the returned model: only B quantized


def test_without_interaction_no_reranking_happens():
    additive = {k: 1.0 - 0.1 * len(k) - 0.1 * ("A" in k) for k in INTERACTING}  # every revert helps
    _, report, _ = _control_table(additive, max_drop=0.15)
    assert len(report.rankings) == 1 and all(kept for _, _, kept in report.history)
    assert report.reverted_ops[0] == "A" and report.target_met


def test_target_cannot_be_met_returns_best_model_and_warns(tmp_path):
    # a drop below zero cannot be met: even all three ops in float only equal the FP32 metric
    with pytest.warns(NNCompressWarning, match="exceeds max_drop.*every quantizable op was tried"):
        q, report, calls = _control_table(INTERACTING, max_drop=-0.05, intermediate_model_dir=str(tmp_path))
    assert not report.target_met and report.final_drop == pytest.approx(0.0)
    # A kept, B undone + re-rank (C, B), C kept, B again (kept after a step back): all tried
    assert [(op, kept) for op, _, kept in report.history] == [
        ("A", True),
        ("B", False),
        ("C", True),
        ("B", True),
    ]
    assert report.iterations == 4 and sorted(report.reverted_ops) == ["A", "B", "C"]
    assert quantized_ops(q) == frozenset() and placement_of(q) is None  # the best model: all in float
    # NNCF's intermediate_model_dir: the fully quantized model before any revert
    saved = onnx.load(str(tmp_path / "intermediate_model.onnx"))
    assert quantized_ops(saved) == frozenset("ABC") and report.intermediate_model_path.endswith(".onnx")


def test_max_num_iterations_bounds_the_reverts_and_undone_ones_count():
    with pytest.warns(NNCompressWarning, match="max_num_iterations=2"):
        _, report, _ = _control_table(INTERACTING, max_drop=0.1, max_num_iterations=2)
    assert report.iterations == 2 and [h[0] for h in report.history] == ["A", "B"]
    assert report.reverted_ops == ["A"] and report.final_metric == pytest.approx(0.8)


def test_unsupported_restore_mode_is_refused():
    from nncompress.errors import QuantizationError
    from nncompress.quantization.advanced_parameters import RestoreMode  # NNCF's import path

    with pytest.raises(QuantizationError, match="restore_mode=only_activations"):
        _control_table(INTERACTING, max_drop=0.1, restore_mode=RestoreMode.ONLY_ACTIVATIONS)
    with pytest.raises(QuantizationError, match="restore_mode: 'bogus'"):
        _control_table(INTERACTING, max_drop=0.1, restore_mode="bogus")
