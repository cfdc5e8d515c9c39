"""The torch test zoo (``tests/torch/models.py``) exported to ONNX, quantized by the ONNX backend
and, read by OpenVINO from the same file, by the OpenVINO backend.

Every family the torch backend handles (ResNet, MobileNetV2, SE, EfficientNet, a transformer
encoder, LSTM, GRU, UNet, branches, shared blocks, functional ops) must come out of the ONNX and
OpenVINO pipelines quantized, runnable, and close to the float model: SQNR of the outputs on
held-out inputs of at least 10 dB (8-bit PTQ of these random-weight models measures 15-40 dB;
a broken quantizer, e.g. a wrong scale or axis, gives 0 dB or less).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import nncompress as nncf  # noqa: E402
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "nncompress_tests_torch_zoo", Path(__file__).resolve().parent.parent / "torch" / "models.py"
)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

# dict_io returns an integer tensor computed from no input: torch.onnx.export refuses to trace it
NAMES = [n for n in zoo.ZOO if n != "dict_io"]
QUIET = AdvancedQuantizationParameters(show_progress=False)
MIN_SQNR_DB = 10.0


def sqnr(reference: np.ndarray, value: np.ndarray) -> float:
    reference, value = np.asarray(reference, np.float64), np.asarray(value, np.float64)
    noise = np.sum((reference - value) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference**2) / noise))


def _export(name: str) -> tuple[object, onnx.ModelProto]:
    model = zoo.build(name)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (model.make_input(),), buf, dynamo=False, opset_version=17)
    return model, onnx.load_from_string(buf.getvalue())


def _flat(outputs) -> np.ndarray:
    """Every float output, flattened and joined (some zoo models also return shapes / counts)."""
    arrays = [np.asarray(o) for o in outputs]
    return np.concatenate([a.ravel().astype(np.float64) for a in arrays if a.dtype.kind == "f"])


def _inputs(model, seeds) -> list[np.ndarray]:
    return [model.make_input(seed=s).numpy() for s in seeds]


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_through_onnx_backend(name: str):
    model, onnx_model = _export(name)
    calibration = _inputs(model, range(1, 9))
    quantized = nncf.quantize(onnx_model, nncf.Dataset(calibration), advanced_parameters=QUIET)
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    first = onnx_model.graph.input[0].name
    float_session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    int8_session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    held_out = _inputs(model, range(100, 104))
    ref = np.concatenate([_flat(float_session.run(None, {first: x})) for x in held_out])
    out = np.concatenate([_flat(int8_session.run(None, {first: x})) for x in held_out])
    assert sqnr(ref, out) >= MIN_SQNR_DB, f"{name}: SQNR {sqnr(ref, out):.1f} dB"
    assert not np.array_equal(ref, out)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_through_openvino_backend(name: str, tmp_path: Path):
    ov = pytest.importorskip("openvino")
    model, onnx_model = _export(name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(onnx_model, str(path))
    ov_model = ov.Core().read_model(str(path))
    calibration = _inputs(model, range(1, 9))
    quantized = nncf.quantize(ov_model, nncf.Dataset(calibration), advanced_parameters=QUIET)
    assert any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    core = ov.Core()
    float_model = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    int8_model = core.compile_model(quantized, "CPU")
    held_out = _inputs(model, range(100, 104))
    ref = np.concatenate([_flat(float_model(x).values()) for x in held_out])
    out = np.concatenate([_flat(int8_model(x).values()) for x in held_out])
    assert sqnr(ref, out) >= MIN_SQNR_DB, f"{name}: SQNR {sqnr(ref, out):.1f} dB"
