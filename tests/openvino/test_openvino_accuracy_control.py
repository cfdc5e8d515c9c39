"""``quantize_with_accuracy_control`` on an OpenVINO model with one quantization-sensitive op."""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import SensitiveMLP, build, to_openvino

ov = pytest.importorskip("openvino")

import nncompress  # noqa: E402
from nncompress.openvino.adapter import placement_of  # noqa: E402
from nncompress.quantization.accuracy_control import last_accuracy_control_report  # noqa: E402
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def accuracy(compiled, data) -> float:
    """``validation_fn``: as in NNCF, OpenVINO models arrive compiled."""
    correct = total = 0
    for x, y in data:
        correct += int((compiled([x])[0].argmax(1) == y).sum())
        total += len(y)
    return correct / total


def test_reverts_sensitive_op_and_meets_max_drop():
    model = to_openvino(build(SensitiveMLP))
    reference = ov.Core().compile_model(model, "CPU", F32)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(8)]
    items = [(x, reference([x])[0].argmax(1)) for x in inputs]
    q = nncompress.quantize_with_accuracy_control(
        model,
        nncompress.Dataset(items, lambda item: item[0]),
        nncompress.Dataset(items),
        accuracy,
        max_drop=0.03,
        subset_size=128,
        advanced_quantization_parameters=AdvancedQuantizationParameters(show_progress=False),
    )
    report = last_accuracy_control_report()
    assert isinstance(q, ov.Model)
    assert report.quantized_metric < report.fp32_metric - 0.5, "plain INT8 must have lost accuracy"
    assert report.target_met and report.final_drop <= 0.03
    assert any("fc2" in op for op in report.reverted_ops)
    assert any(op.get_type_name() == "FakeQuantize" for op in q.get_ops()), "the rest stays quantized"
    assert all(op in placement_of(q)["skipped"] for op in report.reverted_ops)
