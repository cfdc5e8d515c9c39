"""Per-device hardware rules: loading, device names, and the rules NNCF's configs encode."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pytest

from nncompress.errors import ConfigError, QuantizationError
from nncompress.graph import Node
from nncompress.hardware import HardwareRulesError, SpecRequest, describe_devices, load_rules, valid_devices
from nncompress.hardware.rules import _spec_option
from nncompress.parameters import TargetDevice


def node(kind: str, **attrs) -> Node:
    return Node(f"n_{kind}", kind.lower(), kind, attrs=attrs)


def bits(options) -> set[int]:
    return {o.bits for o in options}


@pytest.mark.parametrize("device", ["ANY", "CPU", "GPU", "NPU", "CPU_SPR", "TRIAL"])
def test_every_device_loads(device):
    rules = load_rules(device)
    assert rules.device == TargetDevice(device)
    conv = rules.rule_for(node("Convolution"))
    assert conv.quantizes_activations and conv.quantizes_weights
    assert rules.rule_for(node("Concat")).unified_scales
    assert rules.rule_for(node("MaxPool")).propagation == "through"
    assert rules.rule_for(node("Softmax")) is None
    assert rules.fusion_patterns and rules.summary().startswith(device)


def test_device_names_are_case_insensitive_and_vpu_is_npu():
    assert load_rules("vpu") is load_rules("NPU") is load_rules(TargetDevice.NPU)
    assert load_rules("cpu").device == TargetDevice.CPU


def test_unknown_device_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_rules("XPU")
    msg = str(err.value)
    assert "'XPU'" in msg and all(d in msg for d in valid_devices()) and "VPU" in msg


def test_cpu_rules():
    cpu = load_rules("CPU")
    conv = cpu.rule_for(node("Convolution"))
    assert bits(conv.activations) == {8, 16} and conv.inputs == (0,)
    w8 = conv.weights[0]
    assert (w8.bits, w8.modes, w8.narrow_range, w8.signed) == (8, ("symmetric",), (True,), True)
    assert "per_channel" in w8.granularities
    assert any(
        "per_channel" in o.granularities for o in cpu.rule_for(node("DepthWiseConvolution")).activations
    )
    assert all(o.granularities == ("per_tensor",) for o in conv.activations)
    assert bits(cpu.rule_for(node("Interpolate", mode="nearest")).activations) == {8}
    emb = cpu.rule_for(node("Embedding"))
    assert not emb.quantizes_activations and emb.weights[0].narrow_range == (True, False)
    assert not cpu.rule_for(node("EmbeddingBag")).quantizes_weights
    assert cpu.rule_for(node("ScaledDotProductAttention")).activations[0].modes == ("symmetric",)
    assert not cpu.rule_for(node("Add")).unified_scales
    assert "Multiply" in cpu.float_kinds("transformer") and cpu.float_kinds(None) == frozenset()
    assert cpu.symmetric_activation_matmul("transformer")


def test_gpu_interpolate_depends_on_mode():
    gpu = load_rules("GPU")
    assert not gpu.rule_for(node("Interpolate", mode="nearest")).quantizes_activations
    assert not gpu.rule_for(node("Interpolate")).quantizes_activations
    assert bits(gpu.rule_for(node("Interpolate", mode="bilinear")).activations) == {8, 16}
    assert gpu.rule_for(node("Convolution")) == load_rules("CPU").rule_for(node("Convolution"))


def test_npu_rules():
    npu = load_rules("NPU")
    for kind in ("Add", "Multiply", "Subtract", "Maximum", "Less", "Divide"):
        assert npu.rule_for(node(kind)).unified_scales, kind
    assert not npu.rule_for(node("Power")).unified_scales
    assert {4, 2} <= bits(npu.rule_for(node("Convolution")).weights)
    assert 4 in bits(npu.rule_for(node("MatMul")).activations)
    assert npu.rule_for(node("EmbeddingBag")).quantizes_weights
    assert not npu.rule_for(node("Interpolate", mode="nearest")).quantizes_activations


def test_any_is_cpu_and_cpu_spr_keeps_multiply_for_transformers():
    cpu, any_, spr = load_rules("CPU"), load_rules("ANY"), load_rules("CPU_SPR")
    assert dict(any_.ops) == dict(cpu.ops)
    assert "Multiply" not in spr.float_kinds("transformer")
    assert spr.float_kinds("transformer") | {"Multiply"} == cpu.float_kinds("transformer")


def test_patterns_are_limited_to_their_devices():
    def names(rules, attr="fusion_patterns"):
        return {p.name for p in getattr(rules, attr)}

    assert "linear_scale_shift" in names(load_rules("CPU")) and "linear_scale_shift" not in names(
        load_rules("NPU")
    )
    assert "hswish_clamp_multiply" in names(load_rules("NPU"))
    assert "hswish_clamp_multiply" not in names(load_rules("TRIAL"))
    cpu = load_rules("CPU")
    assert "multihead_attention_output" in {p.name for p in cpu.ignored_patterns_for("transformer")}
    assert "multihead_attention_output" not in {p.name for p in cpu.ignored_patterns_for(None)}
    assert "multihead_attention_output" not in names(load_rules("CPU_SPR"), "ignored_patterns")
    assert "se_block" in {p.name for p in cpu.ignored_patterns_for(None)}


def test_make_spec_follows_the_device():
    cpu = load_rules("CPU")
    conv = cpu.rule_for(node("Convolution"))
    spec, notes = cpu.make_spec(conv, SpecRequest(8, "asymmetric"), weights=False)
    assert spec.mode == "asymmetric" and not spec.per_channel and notes == []
    spec, notes = cpu.make_spec(
        conv, SpecRequest(8, "symmetric", per_channel=True, channel_axis=1), weights=False
    )
    assert not spec.per_channel and "per-tensor" in notes[0]
    spec, _ = cpu.make_spec(conv, SpecRequest(8, "symmetric", per_channel=True, channel_axis=0), weights=True)
    assert spec.per_channel and spec.narrow_range and spec.signed is True
    spec, _ = cpu.make_spec(
        conv, SpecRequest(8, "asymmetric", per_channel=True, channel_axis=0), weights=True
    )
    assert spec.mode == "asymmetric" and not spec.narrow_range and spec.signed is None
    sdpa = cpu.rule_for(node("ScaledDotProductAttention"))
    spec, notes = cpu.make_spec(sdpa, SpecRequest(8, "asymmetric"), weights=False)
    assert spec.mode == "symmetric" and "allows no asymmetric" in notes[0]
    with pytest.raises(QuantizationError, match="allowed: 8-bit, 16-bit"):
        cpu.make_spec(conv, SpecRequest(4, "symmetric"), weights=True)


def test_trial_accepts_any_spec():
    trial = load_rules("TRIAL")
    conv = trial.rule_for(node("Convolution"))
    spec, notes = trial.make_spec(
        conv, SpecRequest(5, "asymmetric", per_channel=True, channel_axis=1), weights=False
    )
    assert (spec.num_bits, spec.mode, spec.per_channel, spec.channel_axis) == (
        5,
        "asymmetric",
        True,
        1,
    ) and not notes
    spec, _ = trial.make_spec(conv, SpecRequest(3, "symmetric"), weights=True)
    assert spec.num_bits == 3 and spec.narrow_range and spec.signed is True


def test_data_files_are_in_our_format():
    data = resources.files("nncompress.hardware").joinpath("data")
    files = sorted(p.name for p in data.iterdir() if p.name.endswith(".json"))
    assert files == [
        "any.json",
        "cpu.json",
        "cpu_spr.json",
        "fusion.json",
        "gpu.json",
        "npu.json",
        "trial.json",
    ]
    for name in files:
        content = json.loads(data.joinpath(name).read_text())
        assert content["format"].startswith("nncompress.") and content["version"] == 1


def test_malformed_spec_is_rejected():
    with pytest.raises(HardwareRulesError, match="unknown keys"):
        _spec_option("bad", {"bits": 8, "colour": "red"}, "test.json")
    with pytest.raises(HardwareRulesError, match="bad mode"):
        _spec_option("bad", {"bits": 8, "modes": ["logarithmic"]}, "test.json")


def test_describe_devices_and_lean_import():
    text = describe_devices(["CPU", "GPU"])
    assert "CPU:" in text and "GPU:" in text and "Interpolate" in text
    code = (
        "import sys; from nncompress.hardware import load_rules; from nncompress.quantization import placement;"
        "load_rules('NPU'); print(any(m in sys.modules for m in ('torch', 'onnx', 'openvino')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
