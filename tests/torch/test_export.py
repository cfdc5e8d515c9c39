"""Export of hand-quantized models to ONNX and OpenVINO IR, checked against torch.

The models carry quantizers inserted by hand (no tracing), initialized from min/max statistics
computed here. Every model ends with an output quantizer, so outputs lie on a known grid and the
agreement is measured in quantization steps of that grid.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ExportError
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import QuantizerSpec
from nncompress.torch.export import (
    COMPUTE_LAYER_TYPES,
    compile_openvino,
    compiled_int8_layers,
    export,
    int8_summary,
    run_onnxruntime,
    run_openvino,
    runtime_layers,
)
from nncompress.torch.quantizers import AsymmetricQuantizer, BaseQuantizer, SymmetricQuantizer

# ------------------------------------------------------------------------------------------------
# Models with quantizers inserted by hand
# ------------------------------------------------------------------------------------------------


def _act_spec(bits: int, mode: str) -> QuantizerSpec:
    return QuantizerSpec(num_bits=bits, mode=mode, signed=None if mode == "symmetric" else False)


def _weight_spec(bits: int, mode: str, axis: int = 0) -> QuantizerSpec:
    return QuantizerSpec(
        num_bits=bits, mode=mode, per_channel=True, channel_axis=axis, narrow_range=mode == "symmetric"
    )


def _act_params(spec: QuantizerSpec, low: float, high: float) -> QuantizerParams:
    """Min/max range init: symmetric (signed unless the data is non-negative) or asymmetric."""
    bits = spec.num_bits
    if spec.mode == "symmetric":
        signed = low < 0
        qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return QuantizerParams(np.float32(max(abs(low), abs(high)) / qmax), np.int32(0), qmin, qmax)
    low, high = min(low, 0.0), max(high, 0.0)
    qmin, qmax = 0, 2**bits - 1
    scale = (high - low) / (qmax - qmin)
    return QuantizerParams(np.float32(scale), np.int32(round(qmin - low / scale)), qmin, qmax)


def _weight_params(spec: QuantizerSpec, w: torch.Tensor) -> QuantizerParams:
    axis = spec.channel_axis
    dims = [d for d in range(w.dim()) if d != axis]
    bits = spec.num_bits
    if spec.mode == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        absmax = w.detach().abs().amax(dim=dims).numpy()
        return QuantizerParams(
            (absmax / qmax).astype(np.float32), np.zeros(absmax.size, np.int32), -qmax, qmax, axis
        )
    low = np.minimum(w.detach().amin(dim=dims).numpy(), 0)
    high = np.maximum(w.detach().amax(dim=dims).numpy(), 0)
    qmax = 2**bits - 1
    scale = (high - low) / qmax
    zp = np.clip(np.round(-low / scale), 0, qmax).astype(np.int32)
    return QuantizerParams(scale.astype(np.float32), zp, 0, qmax, axis)


class QuantConvNet(nn.Module):
    """conv-relu-conv-relu-pool-linear; activation quantizers before every conv/linear input and
    on the output, per-channel weight quantizers."""

    def __init__(self, bits: int = 8, act_mode: str = "symmetric", weight_mode: str = "symmetric"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=1)
        self.fc = nn.Linear(16, 10)
        self.act_spec, self.bits = _act_spec(bits, act_mode), bits
        w_spec = _weight_spec(bits, weight_mode)
        self.q_in = self._act_quantizer()
        self.q_a1 = self._act_quantizer()
        self.q_a2 = self._act_quantizer()
        self.q_out = self._act_quantizer()
        self.q_w1 = self._weight_quantizer(w_spec, self.conv1.weight)
        self.q_w2 = self._weight_quantizer(w_spec, self.conv2.weight)
        self.q_wfc = self._weight_quantizer(w_spec, self.fc.weight)

    def _act_quantizer(self) -> BaseQuantizer:
        cls = SymmetricQuantizer if self.act_spec.mode == "symmetric" else AsymmetricQuantizer
        return cls(self.act_spec)

    @staticmethod
    def _weight_quantizer(spec: QuantizerSpec, w: torch.Tensor) -> BaseQuantizer:
        cls = SymmetricQuantizer if spec.mode == "symmetric" else AsymmetricQuantizer
        return cls.from_params(spec, _weight_params(spec, w), ndim=w.dim())

    def forward(self, x, return_points: bool = False):
        points = {}

        def q(name, t):
            points[name] = t
            return getattr(self, name)(t)

        x = q("q_in", x)
        x = F.relu(F.conv2d(x, self.q_w1(self.conv1.weight), self.conv1.bias, padding=1))
        x = q("q_a1", x)
        x = F.relu(F.conv2d(x, self.q_w2(self.conv2.weight), self.conv2.bias, padding=1))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = q("q_a2", x)
        x = F.linear(x, self.q_wfc(self.fc.weight), self.fc.bias)
        x = q("q_out", x)
        return (x, points) if return_points else x


class QuantMLP(nn.Module):
    """Two inputs (``x`` and ``y``), linear layers with quantized inputs and weights."""

    def __init__(self, bits: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.fc2 = nn.Linear(32, 6)
        a_spec = _act_spec(bits, "asymmetric")
        w_spec = _weight_spec(bits, "symmetric")
        self.q_x = AsymmetricQuantizer(a_spec)
        self.q_h = AsymmetricQuantizer(a_spec)
        self.q_out = AsymmetricQuantizer(a_spec)
        self.q_w1 = SymmetricQuantizer.from_params(w_spec, _weight_params(w_spec, self.fc1.weight), ndim=2)
        self.q_w2 = SymmetricQuantizer.from_params(w_spec, _weight_params(w_spec, self.fc2.weight), ndim=2)

    def forward(self, x, y, return_points: bool = False):
        points = {"q_x": x + y}
        h = F.linear(self.q_x(points["q_x"]), self.q_w1(self.fc1.weight), self.fc1.bias)
        points["q_h"] = F.relu(h)
        out = F.linear(self.q_h(points["q_h"]), self.q_w2(self.fc2.weight), self.fc2.bias)
        points["q_out"] = out
        out = self.q_out(out)
        return (out, points) if return_points else out


def calibrate(model: nn.Module, *inputs: torch.Tensor) -> nn.Module:
    """Min/max range init of the activation quantizers, one quantizer at a time (each one sees
    the already-quantized values upstream)."""
    model.eval()
    names = [n for n in ("q_in", "q_x", "q_a1", "q_h", "q_a2", "q_out") if hasattr(model, n)]
    for name in names:
        getattr(model, name).disable()
    for name in names:
        with torch.no_grad():
            _, points = model(*inputs, return_points=True)
        t = points[name]
        quantizer = getattr(model, name)
        quantizer.set_params(_act_params(quantizer.spec, float(t.min()), float(t.max())))
        quantizer.enable()
    return model


def _out_step(model: nn.Module) -> float:
    return float(np.max(model.q_out.export_params().scale))


def _agreement(ref: np.ndarray, out: np.ndarray, step: float) -> tuple[float, float]:
    """(max abs difference in output steps, share of outputs on the same grid point: equal up to
    float rounding of the dequantization, which torch and the runtimes compute differently)."""
    diff = np.abs(ref - out)
    return float(diff.max() / step), float(np.mean(diff <= 1e-3 * step))


def _assert_agrees(
    ref: np.ndarray, out: np.ndarray, step: float, *, max_steps: float = 1.0, exact: float = 0.97
):
    steps, equal = _agreement(ref, out, step)
    assert steps <= max_steps + 1e-3, f"max diff {steps:.3f} steps"
    assert equal >= exact, f"only {equal:.1%} of outputs equal"


def _onnx_ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _ov_ops(path) -> list[str]:
    import openvino as ov

    return [op.get_type_name() for op in ov.Core().read_model(str(path)).get_ordered_ops()]


# ------------------------------------------------------------------------------------------------
# Fixtures: one calibrated conv net exported once to both formats
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_case(tmp_path_factory):
    torch.manual_seed(0)
    model = QuantConvNet()
    calib = torch.randn(32, 3, 16, 16)
    calibrate(model, calib)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    d = tmp_path_factory.mktemp("conv")
    onnx_path = export(model, d / "conv.onnx", x)
    xml_path = export(model, d / "conv.xml", x)
    return model, x, ref, onnx_path, xml_path


def test_onnx_export_has_qdq_with_exported_grids(conv_case):
    model, _, _, onnx_path, _ = conv_case
    ops = _onnx_ops(onnx_path)
    n_quantizers = sum(isinstance(m, BaseQuantizer) for m in model.modules())
    assert ops.count("QuantizeLinear") == n_quantizers == ops.count("DequantizeLinear")
    assert "Conv" in ops and ("Gemm" in ops or "MatMul" in ops)
    # the per-channel conv weight scale is a constant equal to the quantizer's export scale
    graph = onnx.load(str(onnx_path)).graph
    consts = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    scales = [consts[n.input[1]] for n in graph.node if n.op_type == "QuantizeLinear"]
    expected = model.q_w1.export_params().scale
    assert any(s.shape == expected.shape and np.array_equal(s, expected) for s in scales)
    assert [i.name for i in graph.input] == ["x"]


def test_onnx_runtime_agrees_with_torch(conv_case):
    model, x, ref, onnx_path, _ = conv_case
    step = _out_step(model)
    (out_plain,) = run_onnxruntime(onnx_path, x, optimize=False)
    _assert_agrees(ref, out_plain, step, exact=0.99)
    (out_fused,) = run_onnxruntime(onnx_path, {"x": x.numpy()})  # QDQ fused into int8 kernels
    _assert_agrees(ref, out_fused, step, max_steps=2.0, exact=0.9)


def test_openvino_export_has_fake_quantize_and_runs_int8(conv_case):
    model, x, ref, _, xml_path = conv_case
    ops = _ov_ops(xml_path)
    assert ops.count("FakeQuantize") >= 4  # activations (weights may be folded to int8 constants)
    assert xml_path.with_suffix(".bin").exists()
    compiled = compile_openvino(xml_path)
    int8 = compiled_int8_layers(compiled, COMPUTE_LAYER_TYPES)
    assert sorted(int8.values()).count("Convolution") == 2, int8
    summary = int8_summary(compiled)
    assert summary.total >= 3 and summary.share == 1.0, str(summary)
    assert "INT8" in str(summary)
    layers = runtime_layers(compiled)
    assert any(layer.type == "Convolution" and layer.precision in ("u8", "i8") for layer in layers)
    (out,) = run_openvino(compiled, x)
    _assert_agrees(ref, out, _out_step(model))


def test_openvino_without_quantizers_runs_fp32(tmp_path):
    torch.manual_seed(1)
    model = QuantConvNet()
    for m in model.modules():
        if isinstance(m, BaseQuantizer):
            m.disable()
    x = torch.randn(2, 3, 8, 8)
    path = export(model, tmp_path / "fp.xml", x)
    assert "FakeQuantize" not in _ov_ops(path)
    summary = int8_summary(compile_openvino(path))
    assert summary.int8 == 0 and summary.total >= 3
    (out,) = run_openvino(path, x)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-5)


# The CPU plugin runs 8-bit convolutions in INT8 with symmetric weights only: with asymmetric
# (zero-point) weights, and with 4-bit grids, it keeps them in f32 (FakeQuantize decomposed);
# numerics still agree, so those variants check agreement only.
@pytest.mark.parametrize(
    "bits, act_mode, weight_mode, int8_convs",
    [
        (4, "symmetric", "symmetric", False),
        (8, "asymmetric", "symmetric", True),
        (8, "asymmetric", "asymmetric", False),
        (4, "asymmetric", "asymmetric", False),
    ],
    ids=["4bit-sym", "8bit-asym-acts", "8bit-asym-per-channel-weights", "4bit-asym"],
)
def test_export_variants_agree(tmp_path, bits, act_mode, weight_mode, int8_convs):
    torch.manual_seed(2)
    model = QuantConvNet(bits, act_mode, weight_mode)
    calibrate(model, torch.randn(32, 3, 12, 12))
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        ref = model(x).numpy()
    step = _out_step(model)
    onnx_path = export(model, tmp_path / "m.onnx", x)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(_onnx_ops(onnx_path))
    _assert_agrees(ref, run_onnxruntime(onnx_path, x, optimize=False)[0], step, exact=0.95)
    _assert_agrees(ref, run_onnxruntime(onnx_path, x)[0], step, max_steps=2.0, exact=0.9)
    xml_path = export(model, tmp_path / "m.xml", x)
    assert "FakeQuantize" in _ov_ops(xml_path)
    compiled = compile_openvino(xml_path)
    _assert_agrees(ref, run_openvino(compiled, x)[0], step, exact=0.95)
    if int8_convs:
        assert sorted(compiled_int8_layers(compiled).values()).count("Convolution") == 2


def test_two_input_linear_net_tuple_and_dict_inputs(tmp_path):
    torch.manual_seed(3)
    model = QuantMLP()
    calibrate(model, torch.randn(64, 12), torch.randn(64, 12))
    x, y = torch.randn(16, 12), torch.randn(16, 12)
    with torch.no_grad():
        ref = model(x, y).numpy()
    step = float(model.q_out.export_params().scale)

    onnx_path = export(model, tmp_path / "mlp.onnx", (x, y), output_names=["logits"])
    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ["x", "y"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    _assert_agrees(ref, run_onnxruntime(onnx_path, (x, y), optimize=False)[0], step, exact=0.99)
    _assert_agrees(ref, run_onnxruntime(onnx_path, {"x": x, "y": y})[0], step, max_steps=2.0, exact=0.9)

    kw_path = export(model, tmp_path / "mlp_kw.onnx", {"y": y, "x": x})  # keyword inputs
    assert [i.name for i in onnx.load(str(kw_path)).graph.input] == ["x", "y"]
    _assert_agrees(ref, run_onnxruntime(kw_path, {"y": y, "x": x}, optimize=False)[0], step, exact=0.99)

    xml_path = export(model, tmp_path / "mlp.xml", {"x": x, "y": y})
    assert "FakeQuantize" in _ov_ops(xml_path)
    compiled = compile_openvino(xml_path)
    _assert_agrees(ref, run_openvino(compiled, {"x": x, "y": y})[0], step, exact=0.99)
    # dynamic batch: another batch size runs too
    (small,) = run_openvino(compiled, (x[:3], y[:3]))
    _assert_agrees(ref[:3], small, step, exact=0.99)
    assert int8_summary(compiled).int8 >= 1, str(int8_summary(compiled))


# ------------------------------------------------------------------------------------------------
# Modes and errors
# ------------------------------------------------------------------------------------------------


def test_training_flags_are_restored(tmp_path):
    model = QuantMLP().train()
    model.q_h.eval()
    x = torch.randn(2, 12)
    export(model, tmp_path / "m.onnx", (x, x))
    assert model.training and model.fc1.training and not model.q_h.training
    model.eval()
    export(model, tmp_path / "m.xml", (x, x))
    assert not any(m.training for m in model.modules())


def test_unknown_suffix_and_failures_raise_export_error(tmp_path):
    model = QuantMLP()
    x = torch.randn(2, 12)
    with pytest.raises(ExportError, match="suffix"):
        export(model, tmp_path / "m.tflite", (x, x))

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom in forward")

    for suffix in (".onnx", ".xml"):
        target = tmp_path / f"broken{suffix}"
        with pytest.raises(ExportError, match="boom in forward") as info:
            export(Broken(), target, x)
        assert str(target) in str(info.value)

    with pytest.raises(ExportError, match="opset >= 13"):
        export(model, tmp_path / "old.onnx", (x, x), opset=11)

    wide = nn.Sequential(nn.Linear(12, 4), SymmetricQuantizer(QuantizerSpec(num_bits=16)))
    with pytest.raises(ExportError, match="8 bits") as info:
        export(wide, tmp_path / "wide.onnx", x)
    assert "wide.onnx" in str(info.value)


def test_per_tensor_quantizers_export_at_opset_10(tmp_path):
    model = nn.Sequential(SymmetricQuantizer(QuantizerSpec(signed=True)), nn.Linear(12, 4)).eval()
    x = torch.randn(3, 12)
    path = export(model, tmp_path / "old.onnx", x, opset=10)
    assert "QuantizeLinear" in _onnx_ops(path)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnxruntime(path, x, optimize=False)[0], model(x).numpy(), atol=1e-5)
