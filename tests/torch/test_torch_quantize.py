"""nncompress.quantize on PyTorch models: fidelity, placement, export, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from models import ZOO, build
from torch import nn

import nncompress
from nncompress.errors import DatasetError, QuantizationError, ScopeError
from nncompress.quantization.quantize import quantization_report
from nncompress.torch.nncf_network import NNCFNetwork

CALIBRATION = 12
HELD_OUT = 4


def _leaves(out) -> list[torch.Tensor]:
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _leaves(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _leaves(v)]
    return []


def _run(model, item):
    if isinstance(item, tuple):
        return model(*item)
    if isinstance(item, dict):
        return model(**item)
    return model(item)


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    noise = (reference.double() - test.double()).pow(2).mean()
    signal = reference.double().pow(2).mean()
    return float(10 * torch.log10(signal / noise.clamp_min(1e-20)))


def _quantize(name: str, **kwargs):
    model = build(name)
    data = [model.make_input(batch=8, seed=i) for i in range(CALIBRATION)]
    quantized = nncompress.quantize(
        model,
        nncompress.Dataset(data),
        subset_size=CALIBRATION,
        advanced_parameters=nncompress.quantization.advanced_parameters.AdvancedQuantizationParameters(
            show_progress=False
        ),
        **kwargs,
    )
    return model, quantized


# SQNR floors in dB: 8-bit on random-weight nets; recurrent and attention nets lose more, and in
# the 8-feature MLP of "branchy" a held-out outlier beyond the calibrated (mean of max) range
# dominates the error
SQNR_FLOOR = {"lstm": 15, "gru": 15, "transformer": 15, "branchy": 15}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_quantizes_with_high_fidelity(name):
    model, quantized = _quantize(name)
    reference = copy.deepcopy(model)
    assert isinstance(quantized, type(model)) and isinstance(quantized, NNCFNetwork)
    assert quantized is not model and not isinstance(model, NNCFNetwork), (
        "the input model must stay untouched"
    )
    placement = quantized.nncf.hook_manager.placement
    assert placement.points, f"{name}: nothing was quantized"
    weighted = [n for n in quantized.nncf.graph.nodes if n.weights and n.kind in ("Convolution", "MatMul")]
    if weighted:
        assert placement.weight_points, f"{name}: no weight quantizer"
    refs, gots = [], []
    for i in range(HELD_OUT):
        item = model.make_input(seed=1000 + i)
        with torch.no_grad():
            ref = _leaves(_run(reference, item))
            got = _leaves(_run(quantized, item))
        assert len(ref) == len(got)
        refs += [r.flatten() for r in ref if r.is_floating_point()]
        gots += [g.flatten() for r, g in zip(ref, got) if r.is_floating_point()]
    sqnr = sqnr_db(torch.cat(refs), torch.cat(gots))
    assert sqnr > SQNR_FLOOR.get(name, 20), f"{name}: output SQNR {sqnr:.1f} dB too low"
    # the float model's output changed: quantizers really run
    item = model.make_input(seed=7)
    with torch.no_grad():
        assert any(
            not torch.equal(r, g)
            for r, g in zip(_leaves(_run(reference, item)), _leaves(_run(quantized, item)))
        )


def test_report_lists_quantizers_and_skips():
    _, quantized = _quantize("resnet")
    report = quantization_report(quantized)
    assert "Quantizers:" in report and "on weights" in report


def test_quantized_model_state_dict_round_trip():
    model, quantized = _quantize("resnet")
    state = quantized.state_dict()
    assert any(".hooks." in k for k in state), "quantizer parameters must be in the state_dict"
    _, fresh = _quantize("resnet")
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(0.1)
    fresh.load_state_dict(state)
    x = model.make_input(seed=99)
    with torch.no_grad():
        assert torch.equal(quantized(x), fresh(x))


def test_quantized_model_fine_tunes():
    model, quantized = _quantize("resnet")
    quantized.train()
    x = model.make_input(batch=4, seed=5)
    loss = quantized(x).pow(2).mean()
    loss.backward()
    grads = [p.grad for p in quantized.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_ignored_scope_by_type_leaves_linear_unquantized():
    _, quantized = _quantize("resnet", ignored_scope=nncompress.IgnoredScope(types=["linear"]))
    points = quantized.nncf.hook_manager.placement.points
    assert points and not any("linear" in p.target.node for p in points if p.is_weight)


def test_ignored_scope_matching_nothing_is_an_error():
    with pytest.raises(ScopeError, match="nothing_like_this"):
        _quantize("resnet", ignored_scope=nncompress.IgnoredScope(names=["nothing_like_this"]))


def test_mixed_preset_gives_asymmetric_activations():
    _, quantized = _quantize("resnet", preset=nncompress.QuantizationPreset.MIXED)
    modes = {p.spec.mode for p in quantized.nncf.hook_manager.placement.activation_points}
    assert "asymmetric" in modes


def test_empty_dataset_is_an_error():
    with pytest.raises(DatasetError, match="empty"):
        nncompress.quantize(build("resnet"), nncompress.Dataset([]))


def test_not_a_dataset_is_an_error():
    model = build("resnet")
    with pytest.raises(DatasetError, match="nncompress.Dataset"):
        nncompress.quantize(model, [model.make_input()])


def test_items_of_the_wrong_shape_are_named():
    model = build("resnet")
    good = model.make_input()
    bad = torch.zeros(1, 5, 3, 3)
    with pytest.raises((DatasetError, nncompress.errors.TracingError), match=r"shape|size|channels"):
        nncompress.quantize(model, nncompress.Dataset([good, bad, good]), subset_size=3)


def test_nothing_quantizable_is_an_error():
    class Plain(nn.Module):
        def forward(self, x):
            return torch.relu(x)

    with pytest.raises(QuantizationError, match="nothing to quantize"):
        nncompress.quantize(Plain(), nncompress.Dataset([torch.randn(1, 4)]))


def test_unsupported_model_type_is_an_error():
    with pytest.raises(nncompress.errors.UnsupportedModelError, match="expected a torch.nn.Module"):
        nncompress.quantize(object(), nncompress.Dataset([1]))


CNNS = {"resnet", "mobilenet_v2", "unet", "efficientnet", "senet"}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_exported_ir_and_onnx_agree_with_torch(name, tmp_path):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from nncompress.torch.export import compile_openvino, export, int8_summary, run_onnxruntime, run_openvino

    model, quantized = _quantize(name)
    x = model.make_input(seed=123)
    with torch.no_grad():
        expected = [t.numpy() for t in _leaves(_run(quantized, x)) if t.is_floating_point()]
    for suffix in ("xml", "onnx"):
        path = export(quantized, tmp_path / f"{name}.{suffix}", x)
        if suffix == "onnx":
            import onnx

            ops = {n.op_type for n in onnx.load(str(path)).graph.node}
            assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        feed = {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else [x.numpy()]
        got = (
            run_openvino(path, feed, f32=True)
            if suffix == "xml"
            else run_onnxruntime(path, feed, optimize=False)
        )
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            step = np.abs(e).max() / 127
            assert np.abs(g - e).max() <= 4 * step, f"{name}.{suffix} disagrees with the torch model"
            assert np.mean(np.abs(g - e) <= step) > 0.95
    if name in CNNS:
        summary = int8_summary(compile_openvino(ov.Core().read_model(tmp_path / f"{name}.xml"), f32=False))
        assert summary.int8 > 0 and summary.share >= 0.5, str(summary)


def test_transformer_model_type_applies_smooth_quant_without_touching_the_input():
    model = build("transformer")
    # an outlier channel in the first LayerNorm output: what SmoothQuant is for
    with torch.no_grad():
        model.layers[0].norm1.weight[3] = 25.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = copy.deepcopy(model)
    data = [model.make_input(batch=8, seed=i) for i in range(CALIBRATION)]
    advanced = nncompress.quantization.advanced_parameters.AdvancedQuantizationParameters(show_progress=False)
    smoothed = nncompress.quantize(
        model,
        nncompress.Dataset(data),
        subset_size=CALIBRATION,
        model_type=nncompress.ModelType.TRANSFORMER,
        advanced_parameters=advanced,
    )
    advanced.smooth_quant_alphas.matmul = -1  # disabled
    plain = nncompress.quantize(
        model,
        nncompress.Dataset(data),
        subset_size=CALIBRATION,
        model_type=nncompress.ModelType.TRANSFORMER,
        advanced_parameters=advanced,
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the input model changed at {k}"
    # the folded LayerNorm weight changed in the smoothed copy only
    assert not torch.equal(smoothed.layers[0].norm1.weight, model.layers[0].norm1.weight)
    assert torch.equal(plain.layers[0].norm1.weight, model.layers[0].norm1.weight)
    items = [model.make_input(batch=8, seed=500 + i) for i in range(HELD_OUT)]
    with torch.no_grad():
        ref = torch.cat([reference(x) for x in items])
        s_out = torch.cat([smoothed(x) for x in items])
        p_out = torch.cat([plain(x) for x in items])
    print(f"SQNR with SmoothQuant {sqnr_db(ref, s_out):.1f} dB, without {sqnr_db(ref, p_out):.1f} dB")
    assert sqnr_db(ref, s_out) > sqnr_db(ref, p_out), (
        "SmoothQuant should reduce the outlier's quantization error"
    )


def test_unsupported_op_is_left_in_float_and_named_in_a_warning():
    class WithCumsum(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(torch.cumsum(x, dim=1))

    model = WithCumsum().eval()
    data = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    with pytest.warns(nncompress.errors.NNCompressWarning, match=r"cumsum"):
        quantized = nncompress.quantize(
            model,
            nncompress.Dataset(data),
            subset_size=4,
            advanced_parameters=nncompress.quantization.advanced_parameters.AdvancedQuantizationParameters(
                show_progress=False
            ),
        )
    placement = quantized.nncf.hook_manager.placement
    assert any("cumsum" in what for what in placement.skipped)
    assert placement.weight_points, "the convolution is still quantized"


@pytest.mark.parametrize(
    ("fix", "device", "expect"),
    [
        ("enable", "CPU", "all"),
        ("first_layer_only", "ANY", "first"),
        (None, "CPU", "none"),  # the default: off (NNCF 3.x: first_layer_only, see docs/ptq.md)
        ("enable", "GPU", "none"),
    ],
)
def test_overflow_fix_halves_weight_range_only_where_kernels_overflow(fix, device, expect):
    from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters

    model = build("resnet")
    data = [model.make_input(batch=4, seed=i) for i in range(4)]
    quantized = nncompress.quantize(
        model,
        nncompress.Dataset(data),
        subset_size=4,
        target_device=device,
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix, show_progress=False),
    )
    weights = quantized.nncf.hook_manager.placement.weight_points
    halved = [p for p in weights if p.spec.half_range]
    if expect == "all":
        assert len(halved) == len(weights)
    elif expect == "first":
        assert len(halved) == 1 and "conv" in halved[0].target.node
    else:
        assert not halved


class _ConvBatchNorm(nn.Module):
    """Bias-less convolutions each followed by a BatchNorm, as torchvision builds them; the
    second pair's output is the model's output."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        with torch.no_grad():  # trained-looking statistics and affine parameters
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(0.5, 1.0)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def test_batch_norm_affine_is_the_eval_mode_batch_norm():
    from nncompress.torch.adapter import Adapter

    model = _ConvBatchNorm().eval()
    adapter = Adapter()
    graph = adapter.build_graph(model, torch.randn(1, 3, 8, 8))
    bn = next(n for n in graph.nodes if n.bias == "bn2.bias")
    scale, shift = adapter.batch_norm_affine(model, bn.name)
    x = torch.randn(2, 8, 5, 5)
    expected = model.bn2(x).double()
    got = x.double() * torch.from_numpy(scale)[:, None, None] + torch.from_numpy(shift)[:, None, None]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bias_correction_reaches_conv_layers_through_their_batch_norm(seed):
    """A bias-less convolution's correction goes to the BatchNorm after it (torch keeps the pair
    apart; ONNX and OpenVINO fold it and got the correction all along): the quantized model's
    output keeps the float model's channel means on the calibration data."""
    torch.manual_seed(seed)
    model = _ConvBatchNorm().eval()
    data = [torch.randn(4, 3, 8, 8) + 0.5 for _ in range(8)]

    def output_mean_shift(**advanced) -> float:
        quantized = nncompress.quantize(
            model,
            nncompress.Dataset(data),
            subset_size=32,
            advanced_parameters=nncompress.quantization.advanced_parameters.AdvancedQuantizationParameters(
                show_progress=False, **advanced
            ),
        )
        if not advanced:
            assert not torch.equal(quantized.bn1.bias, model.bn1.bias)
            assert not torch.equal(quantized.bn2.bias, model.bn2.bias)
        with torch.no_grad():
            shift = torch.stack([(quantized(x) - model(x)).mean(dim=(0, 2, 3)) for x in data]).mean(0)
        return float(shift.abs().max())

    # measured 0.01-0.15 of the uncorrected shift over these seeds; 1.0 before (no conv corrected)
    assert output_mean_shift() < 0.3 * output_mean_shift(disable_bias_correction=True)
