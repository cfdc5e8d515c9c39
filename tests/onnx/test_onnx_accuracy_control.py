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
