"""``quantize_with_accuracy_control`` on torch: a model with one quantization-sensitive op."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import nncompress  # noqa: E402
from nncompress.errors import NNCompressWarning, QuantizationError  # noqa: E402
from nncompress.parameters import DropType  # noqa: E402
from nncompress.quantization.accuracy_control import (  # noqa: E402
    AdvancedAccuracyRestorerParameters,
    calculate_drop,
    last_accuracy_control_report,
)
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402

ADVANCED = AdvancedQuantizationParameters(show_progress=False)


class Sensitive(nn.Module):
    """fc1 -> relu -> fc2 -> relu -> fc3; fc1's channel 0 is 1000x larger (fc2 undoes it), so one
    per-tensor scale for fc2's input rounds every other channel to zero: fc2 is the sensitive op."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 10)
        with torch.no_grad():
            self.fc2.bias.zero_()  # no bias to hide the lost signal behind
            self.fc3.bias.zero_()
            self.fc1.weight[0] *= 1000.0
            self.fc1.bias[0] = 1000.0
            self.fc2.weight[:, 0] /= 1000.0

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return Sensitive().eval()


@pytest.fixture(scope="module")
def setup():
    model = make_model()
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(16, 16, generator=g) for _ in range(8)]
    with torch.no_grad():
        labels = [model(x).argmax(1) for x in inputs]  # the FP32 model is right by definition
    items = list(zip(inputs, labels))
    calibration = nncompress.Dataset(items, lambda item: item[0])
    validation = nncompress.Dataset(items)
    return model, calibration, validation


def accuracy(model, data) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in data:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def control(model, calibration, validation, **kwargs):
    kwargs.setdefault("subset_size", 128)
    return nncompress.quantize_with_accuracy_control(
        model, calibration, validation, accuracy, advanced_quantization_parameters=ADVANCED, **kwargs
    )


def test_plain_quantize_exceeds_drop(setup):
    model, calibration, validation = setup
    q = nncompress.quantize(model, calibration, subset_size=128, advanced_parameters=ADVANCED)
    drop = accuracy(model, validation.get_data()) - accuracy(q, validation.get_data())
    assert drop > 0.5


def test_reverts_sensitive_op_and_meets_max_drop(setup, caplog):
    model, calibration, validation = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="nncompress.quantization.accuracy_control"):
        q = control(model, calibration, validation, max_drop=0.02)
    report = last_accuracy_control_report()
    assert report.target_met and report.final_drop <= 0.02
    assert report.quantized_metric < report.fp32_metric - 0.5
    assert len(report.reverted_ops) == 1 and "fc2" in report.reverted_ops[0]
    assert "fc2" in report.ranking[0][0]
    assert accuracy(model, validation.get_data()) - accuracy(q, validation.get_data()) <= 0.02
    placement = q.nncf.hook_manager.placement
    assert report.reverted_ops[0] in placement.skipped
    assert placement.points  # the other ops stay quantized
    assert q.nncf.hook_manager.accuracy_control_report is report
    assert "ops reverted to float" in caplog.text
    for k, v in model.state_dict().items():  # the input model is unchanged
        assert torch.equal(v, before[k])
    assert not hasattr(model, "nncf")


def test_relative_drop(setup):
    model, calibration, validation = setup
    q = control(model, calibration, validation, max_drop=0.02, drop_type=DropType.RELATIVE)
    report = last_accuracy_control_report()
    assert report.drop_type == DropType.RELATIVE and report.target_met
    assert report.final_drop == pytest.approx(
        calculate_drop(report.fp32_metric, accuracy(q, validation.get_data()), "relative")
    )


def test_small_drop_returns_quantized_model(setup):
    model, calibration, validation = setup
    q = control(model, calibration, validation, max_drop=1.0)
    report = last_accuracy_control_report()
    assert report.reverted_ops == [] and report.iterations == 0
    assert len(q.nncf.hook_manager.placement.points) >= 6


def test_unreachable_target_warns_and_returns_best(setup):
    model, calibration, validation = setup
    with pytest.warns(NNCompressWarning, match="exceeds max_drop"):
        q = control(
            model,
            calibration,
            validation,
            max_drop=-1.0,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=2, ranking_subset_size=4
            ),
        )
    report = last_accuracy_control_report()
    assert not report.target_met and report.iterations == 2
    assert isinstance(q, nn.Module) and hasattr(q, "nncf")
    assert report.final_metric >= report.quantized_metric


def test_calculate_drop():
    assert calculate_drop(0.8, 0.6, DropType.ABSOLUTE) == pytest.approx(0.2)
    assert calculate_drop(0.8, 0.6, DropType.RELATIVE) == pytest.approx(0.25)
    assert calculate_drop(0.0, -0.5, "relative") == pytest.approx(0.5)


def test_tune_hyperparams_refused(setup):
    model, calibration, validation = setup
    with pytest.raises(QuantizationError, match="tune_hyperparams"):
        control(
            model,
            calibration,
            validation,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(tune_hyperparams=True),
        )


def test_many_candidates_ranked_by_chunks_first(setup, monkeypatch):
    from nncompress.quantization import accuracy_control

    monkeypatch.setattr(accuracy_control, "MAX_RANKED_CANDIDATES", 2)
    model, calibration, validation = setup
    control(model, calibration, validation, max_drop=0.02)
    report = last_accuracy_control_report()
    assert len(report.ranking) == 2 and "fc2" in report.ranking[0][0]
    assert report.target_met and "fc2" in report.reverted_ops[0]


@pytest.mark.parametrize("enabled", [True, False])
def test_ranking_and_revert_bars_follow_the_switch(setup, enabled, capsys, monkeypatch):
    from nncompress.progress import ENV_VAR

    model, calibration, validation = setup
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    nncompress.set_progress(enabled)
    try:  # show_progress=True: the global switch decides
        nncompress.quantize_with_accuracy_control(
            model,
            calibration,
            validation,
            accuracy,
            max_drop=0.02,
            subset_size=128,
            advanced_quantization_parameters=AdvancedQuantizationParameters(show_progress=True),
        )
    finally:
        nncompress.set_progress(True)
    err = capsys.readouterr().err
    assert ("Accuracy control: ranking" in err) is enabled
    assert ("Accuracy control: reverting" in err) is enabled
