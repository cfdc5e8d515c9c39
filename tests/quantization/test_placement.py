"""Quantizer placement on hand-built graphs: where NNCF's rules put quantizers, and why."""

from __future__ import annotations

import pytest

from nncompress.errors import QuantizationError, ScopeError
from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo
from nncompress.hardware import load_rules
from nncompress.quantization.placement import QuantizerOverride, place_quantizers
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.scopes import IgnoredScope


class GB:
    """Tiny graph builder: ``op(kind, name, *inputs)``; an input is a name or ``(name, port)``."""

    def __init__(self, name: str = "net"):
        self.g = Graph(name)

    def inp(self, name: str = "x", shape=(1, 3, 8, 8), dtype: str = "float32") -> str:
        self.g.add_node(Node(name, "input", "Parameter", attrs={"shape": shape, "dtype": dtype}))
        return name

    def const(self, name: str) -> str:
        self.g.add_node(Node(name, "const", "Constant"))
        return name

    def op(
        self,
        kind,
        name,
        *inputs,
        weights=None,
        attrs=None,
        dtype="float32",
        shape=(1, 8, 8, 8),
        in_dtypes=None,
    ):
        self.g.add_node(Node(name, kind.lower(), kind, attrs=dict(attrs or {}), weights=dict(weights or {})))
        port = 0
        for i, src in enumerate(inputs):
            while port in (weights or {}):
                port += 1
            src, src_port = src if isinstance(src, tuple) else (src, 0)
            src_node = self.g.node(src)
            t_dtype = (in_dtypes or {}).get(i) or src_node.attrs.get("dtype", "float32")
            self.g.add_edge(Edge(src, src_port, name, port, TensorInfo(shape, t_dtype)))
            port += 1
        self.g.node(name).attrs.setdefault("dtype", dtype)
        return name

    def conv(self, name, src, out_ch=8, in_ch=8, kind="Convolution", axis=0):
        w = WeightInfo(f"{name}.weight", (out_ch, in_ch, 3, 3), out_channel_axis=axis)
        return self.op(kind, name, src, weights={1: w})

    def linear(self, name, src, out_f=16, in_f=16):
        return self.op("MatMul", name, src, weights={1: WeightInfo(f"{name}.weight", (out_f, in_f))})

    def out(self, src, name="out"):
        return self.op("Result", name, src)


def act_points(placement):
    return [p for p in placement.points if not p.is_weight]


def at(placement, node, type_=TargetType.OUTPUT, port=0):
    hits = [p for p in placement.points if p.target == TargetPoint(type_, node, port)]
    assert len(hits) == 1, (node, type_, port, placement.report())
    return hits[0]


CPU = load_rules("CPU")


# ---------------------------------------------------------------------------------------------
def conv_bn_relu_pool_conv():
    b = GB()
    x = b.inp()
    c1 = b.conv("Net/Conv2d[conv1]/conv2d_0", x, in_ch=3)
    bn = b.op("BatchNormInference", "Net/BatchNorm2d[bn1]/batch_norm_0", c1)
    r = b.op("Relu", "Net/ReLU[relu]/relu_0", bn)
    p = b.op("MaxPool", "Net/MaxPool2d[pool]/max_pool2d_0", r)
    c2 = b.conv("Net/Conv2d[conv2]/conv2d_0", p)
    b.out(c2)
    return b.g


def test_conv_bn_relu_maxpool_conv():
    pl = place_quantizers(conv_bn_relu_pool_conv(), CPU)
    acts = act_points(pl)
    assert {p.target for p in acts} == {
        TargetPoint(TargetType.OUTPUT, "x"),
        TargetPoint(TargetType.OUTPUT, "Net/ReLU[relu]/relu_0"),
    }
    relu = at(pl, "Net/ReLU[relu]/relu_0")
    assert relu.consumers == (("Net/Conv2d[conv2]/conv2d_0", 0),)
    assert "input 0 of Convolution 'Net/Conv2d[conv2]/conv2d_0'" in relu.reason
    assert "moved up through MaxPool 'Net/MaxPool2d[pool]/max_pool2d_0'" in relu.reason
    assert relu.spec.mode == "symmetric" and relu.spec.signed is None and not relu.spec.per_channel
    assert "model input 'x'" in at(pl, "x").reason
    weights = pl.weight_points
    assert len(weights) == 2
    for w in weights:
        assert w.spec.per_channel and w.spec.channel_axis == 0 and w.spec.signed is True
        assert w.spec.narrow_range and w.spec.mode == "symmetric" and w.spec.num_bits == 8
    report = pl.report()
    assert "moved up through MaxPool" in report and "Quantizers: 2 on weights, 2 on activations" in report


def test_quantize_inputs_false_leaves_model_input_float():
    pl = place_quantizers(conv_bn_relu_pool_conv(), CPU, quantize_inputs=False)
    assert {p.target.node for p in act_points(pl)} == {"Net/ReLU[relu]/relu_0"}
    assert "quantize_inputs=False" in pl.skipped["x:output0"]


def test_quantize_outputs_adds_point_before_result():
    pl = place_quantizers(conv_bn_relu_pool_conv(), CPU, quantize_outputs=True)
    out = at(pl, "Net/Conv2d[conv2]/conv2d_0")
    assert out.consumers == (("out", 0),) and "quantize_outputs=True" in out.reason


def residual_block():
    b = GB()
    x = b.inp()
    c0 = b.conv("conv0", x, in_ch=3)
    r0 = b.op("Relu", "relu0", c0)
    c1 = b.conv("conv1", r0)
    bn1 = b.op("BatchNormInference", "bn1", c1)
    r1 = b.op("Relu", "relu1", bn1)
    c2 = b.conv("conv2", r1)
    bn2 = b.op("BatchNormInference", "bn2", c2)
    add = b.op("Add", "add", bn2, r0)
    r2 = b.op("Relu", "relu2", add)
    c3 = b.conv("conv3", r2)
    b.out(c3)
    return b.g


def test_residual_block_add_inputs_and_quantizer_after_relu():
    pl = place_quantizers(residual_block(), CPU)
    targets = {p.target for p in act_points(pl)}
    assert targets == {
        TargetPoint(TargetType.OUTPUT, "x"),
        TargetPoint(TargetType.OUTPUT, "relu0"),  # conv1 input and the shortcut input of add
        TargetPoint(TargetType.OUTPUT, "relu1"),
        TargetPoint(TargetType.OUTPUT, "bn2"),  # conv2+bn2 fuse; the add is not part of them
        TargetPoint(TargetType.OUTPUT, "relu2"),  # add+relu fuse: quantizer after the relu
    }
    shared = at(pl, "relu0")
    assert set(shared.consumers) == {("conv1", 0), ("add", 1)}
    assert shared.reason.startswith("shared by 2 consumers")
    assert not any(p.target.node == "add" for p in pl.points)
    assert "inside fused group" in pl.skipped.get("relu2", "") or "relu2" not in pl.skipped
    assert all(p.unified_group is None for p in pl.points)


def test_a_power_and_the_elementwise_ops_it_feeds_get_no_input_quantizers():
    """|STFT|^2 = re^2 + im^2 -> sqrt -> conv (silero-vad): a power spreads values over the power
    of their range, so an 8-bit grid on its input or output wipes out the quiet bins; neither
    the Power nor the Add has an INT8 kernel to gain. The conv's input is still quantized."""
    b = GB()
    x = b.inp()
    stft = b.conv("stft", x, in_ch=3)
    re = b.op("Relu", "re", stft)
    im = b.op("Sigmoid", "im", stft)
    two = b.const("two")
    p1 = b.op("Power", "pow_re", re, two)
    p2 = b.op("Power", "pow_im", im, two)
    add = b.op("Add", "add", p1, p2)
    mag = b.op("Sqrt", "sqrt", add)
    b.out(b.conv("conv", mag))
    pl = place_quantizers(b.g, CPU, quantize_powers=False)  # nncompress.quantize's default
    assert {p.target.node for p in act_points(pl)} == {"x", "sqrt"}
    assert "Power: its inputs stay in float" in pl.skipped["pow_re"]
    assert "output of Power 'pow_im'" in pl.skipped[str(TargetPoint(TargetType.INPUT, "add", 1))]
    # NNCF's placement (place_quantizers' default, training-time quantization): quantized
    nncf_like = place_quantizers(b.g, CPU)
    assert {p.target.node for p in act_points(nncf_like)} == {"x", "re", "im", "pow_re", "pow_im", "sqrt"}
    # an Add of two ordinary activations keeps its quantizers
    residual = act_points(place_quantizers(residual_block(), CPU, quantize_powers=False))
    assert {p.target for p in residual} >= {
        TargetPoint(TargetType.OUTPUT, "relu0"),
        TargetPoint(TargetType.OUTPUT, "bn2"),
    }


def test_npu_elementwise_inputs_unified():
    pl = place_quantizers(residual_block(), load_rules("NPU"))
    a, b = at(pl, "relu0"), at(pl, "bn2")
    assert a.unified_group is not None and a.unified_group == b.unified_group
    assert "share one scale" in b.reason
    groups = pl.unified_groups()
    assert len(groups) == 1 and len(groups[a.unified_group]) == 2


def branches(ignore_third: bool = False, third_kind: str = "Convolution"):
    b = GB()
    x = b.inp()
    c0 = b.conv("conv0", x, in_ch=3)
    r = b.op("Relu", "relu", c0)
    outs = [b.conv("a", r), b.conv("b", r)]
    if third_kind == "Convolution":
        outs.append(b.conv("c", r))
    else:
        outs.append(b.op(third_kind, "c", r))
    cat = b.op("Concat", "cat", *outs)
    b.out(cat)
    return b.g


def test_branches_share_one_output_quantizer():
    pl = place_quantizers(branches(), CPU)
    p = at(pl, "relu")
    assert set(p.consumers) == {("a", 0), ("b", 0), ("c", 0)}
    assert "shared by 3 consumers" in p.reason
    assert len([q for q in act_points(pl) if q.target.node in ("a", "b", "c")]) == 0


def test_branch_with_ignored_consumer_gets_input_points():
    pl = place_quantizers(branches(), CPU, ignored_scope=IgnoredScope(names=["c"]))
    assert not any(p.target == TargetPoint(TargetType.OUTPUT, "relu") for p in pl.points)
    for name in ("a", "b"):
        p = at(pl, name, TargetType.INPUT)
        assert p.consumers == ((name, 0),)
        assert "Convolution 'c' also read(s) 'relu' unquantized" in p.reason
    assert not any(p.target.node == "c" for p in pl.points)
    assert pl.skipped["c"].startswith("ignored_scope")


def test_branch_with_float_consumer_gets_input_points():
    pl = place_quantizers(branches(third_kind="Sigmoid"), CPU)
    assert {p.target for p in act_points(pl) if p.target.node in ("a", "b", "relu")} == {
        TargetPoint(TargetType.INPUT, "a"),
        TargetPoint(TargetType.INPUT, "b"),
    }


def test_branches_with_different_specs_are_not_merged():
    overrides = {"activations": {"a": {"bits": 16}}}
    pl = place_quantizers(branches(), CPU, overrides=overrides)
    assert at(pl, "a", TargetType.INPUT).spec.num_bits == 16
    assert at(pl, "b", TargetType.INPUT).spec.num_bits == 8
    assert "need different specs" in at(pl, "b", TargetType.INPUT).reason


def concat_graph(extra_consumer: bool = False):
    b = GB()
    x = b.inp()
    c1 = b.conv("conv1", x, in_ch=3)
    r1 = b.op("Relu", "relu1", c1)
    c2 = b.conv("conv2", x, in_ch=3)
    r2 = b.op("Sigmoid", "sig2", c2)
    cat = b.op("Concat", "cat", r1, r2, attrs={"axis": 1})
    c3 = b.conv("conv3", cat, in_ch=16)
    if extra_consumer:
        c4 = b.conv("conv4", r1)
        b.out(c4, "out2")
    b.out(c3)
    return b.g


def test_concat_inputs_share_one_unified_group():
    pl = place_quantizers(concat_graph(), CPU)
    p1, p2 = at(pl, "relu1"), at(pl, "sig2")
    assert p1.unified_group is not None and p1.unified_group == p2.unified_group
    assert p1.consumers == (("conv3", 0),)
    assert "moved up through Concat 'cat' (to each of its inputs)" in p1.reason
    assert not any(p.target.node == "cat" for p in pl.points)


def test_concat_input_quantized_for_another_consumer_merges_groups():
    pl = place_quantizers(concat_graph(extra_consumer=True), CPU)
    p1, p2 = at(pl, "relu1"), at(pl, "sig2")
    assert set(p1.consumers) == {("conv3", 0), ("conv4", 0)}
    assert p1.unified_group == p2.unified_group is not None


def test_integer_tensors_are_skipped():
    b = GB()
    ids = b.inp("ids", shape=(1, 4), dtype="int64")
    one = b.inp("pos", shape=(1, 4), dtype="int64")
    s = b.op("Add", "int_add", ids, one, dtype="int64")
    emb = b.op("Embedding", "emb", s, weights={0: WeightInfo("emb.weight", (100, 16))})
    lin = b.linear("fc", emb)
    b.out(lin)
    pl = place_quantizers(b.g, CPU)
    assert "int64 tensor" in pl.skipped["int_add:input0"] and "int64" in pl.skipped["int_add:input1"]
    assert not any(p.target.node in ("int_add", "ids", "pos") for p in pl.points)
    emb_w = at(pl, "emb", TargetType.WEIGHT, 0)
    assert emb_w.spec.narrow_range and emb_w.spec.per_channel
    assert at(pl, "emb").consumers == (("fc", 0),)


def test_shape_computations_and_constants_are_not_quantized():
    b = GB()
    x = b.inp()
    c = b.conv("conv", x, in_ch=3)
    shape = b.op("ShapeOf", "shape", c, dtype="int64")
    r = b.op("Reshape", "reshape", c, shape, in_dtypes={1: "int64"})
    k = b.const("k")
    m = b.op("Multiply", "mul", r, k)
    b.out(m)
    pl = place_quantizers(b.g, CPU)
    assert pl.skipped["mul:input1"].startswith("constant input")
    # the Multiply's quantizer moves up through the Reshape to the conv output, the ShapeOf does not block
    p = at(pl, "conv")
    assert p.consumers == (("mul", 0),) and "moved up through Reshape 'reshape'" in p.reason


def test_ignored_scope_by_name_pattern_and_type():
    g = conv_bn_relu_pool_conv()
    by_name = place_quantizers(g, CPU, ignored_scope=IgnoredScope(names=["Net/Conv2d[conv2]/conv2d_0"]))
    assert {p.target.node for p in by_name.points} == {"x", "Net/Conv2d[conv1]/conv2d_0"}
    by_pattern = place_quantizers(g, CPU, ignored_scope=IgnoredScope(patterns=[r".*conv1.*"]))
    assert {p.target.node for p in by_pattern.points} == {
        "Net/ReLU[relu]/relu_0",
        "Net/Conv2d[conv2]/conv2d_0",
    }
    by_type = place_quantizers(g, CPU, ignored_scope=IgnoredScope(types=["MaxPool"]))
    # an ignored MaxPool: the quantizer may not move through it, it stays at the conv input
    assert at(by_type, "Net/MaxPool2d[pool]/max_pool2d_0").consumers == (("Net/Conv2d[conv2]/conv2d_0", 0),)
    assert by_type.skipped["Net/MaxPool2d[pool]/max_pool2d_0"].startswith("ignored_scope")


def test_unmatched_ignored_scope_raises():
    with pytest.raises(ScopeError, match="conv9"):
        place_quantizers(conv_bn_relu_pool_conv(), CPU, ignored_scope=IgnoredScope(names=["conv9"]))


def test_nothing_to_quantize_raises():
    b = GB()
    x = b.inp()
    r = b.op("Relu", "relu", x)
    s = b.op("Sigmoid", "sig", r)
    b.out(s)
    with pytest.raises(QuantizationError, match=r"nothing to quantize.*Relu.*Sigmoid"):
        place_quantizers(b.g, CPU)


def test_unknown_ops_are_left_float_and_listed():
    b = GB()
    x = b.inp()
    u = b.op("Unknown", "custom", x)
    c = b.conv("conv", u, in_ch=3)
    b.out(c)
    pl = place_quantizers(b.g, CPU)
    assert pl.skipped["custom"] == "unsupported op, left in float"
    # the unknown op's output may not be hookable (in-place ops): its consumer's input is quantized
    assert at(pl, "conv", TargetType.INPUT).consumers == (("conv", 0),)


def test_mixed_preset_asymmetric_activations_symmetric_weights():
    pl = place_quantizers(conv_bn_relu_pool_conv(), CPU, preset="mixed")
    assert all(p.spec.mode == "asymmetric" for p in act_points(pl))
    assert all(p.spec.mode == "symmetric" for p in pl.weight_points)


def test_weights_per_channel_axis_and_overrides():
    b = GB()
    x = b.inp()
    d = b.conv("deconv", x, out_ch=4, in_ch=3, kind="ConvolutionBackpropData", axis=1)
    b.out(d)
    pl = place_quantizers(b.g, CPU)
    assert at(pl, "deconv", TargetType.WEIGHT, 1).spec.channel_axis == 1
    per_tensor = place_quantizers(b.g, CPU, weights_per_channel=False)
    assert not at(per_tensor, "deconv", TargetType.WEIGHT, 1).spec.per_channel
    asym = place_quantizers(
        b.g, CPU, weights={"mode": "asymmetric"}, activations=QuantizerOverride(signed=True)
    )
    w = at(asym, "deconv", TargetType.WEIGHT, 1)
    assert w.spec.mode == "asymmetric" and not w.spec.narrow_range
    assert at(asym, "x").spec.signed is True
    with pytest.raises(QuantizationError, match="4-bit weights for ConvolutionBackpropData"):
        place_quantizers(b.g, CPU, weight_bits=4)
    npu = place_quantizers(b.g, load_rules("NPU"), weight_bits=4)
    assert at(npu, "deconv", TargetType.WEIGHT, 1).spec.num_bits == 4
    trial = place_quantizers(
        b.g, load_rules("TRIAL"), weight_bits=3, activations={"bits": 6, "per_channel": True}
    )
    assert at(trial, "deconv", TargetType.WEIGHT, 1).spec.num_bits == 3
    assert at(trial, "x").spec.num_bits == 6 and at(trial, "x").spec.channel_axis == 1


def test_scope_override_unmatched_raises():
    with pytest.raises(ScopeError, match="nope"):
        place_quantizers(conv_bn_relu_pool_conv(), CPU, overrides={"weights": {"{re}nope": {"bits": 8}}})


def interpolate_graph(mode: str):
    b = GB()
    x = b.inp()
    c = b.conv("conv", x, in_ch=3)
    r = b.op("Relu", "relu", c)
    up = b.op("Interpolate", "up", r, attrs={"mode": mode})
    c2 = b.conv("conv2", up)
    b.out(c2)
    return b.g


def test_gpu_interpolate_quantized_only_in_linear_mode():
    gpu = load_rules("GPU")
    nearest = place_quantizers(interpolate_graph("nearest"), gpu)
    assert at(nearest, "up").consumers == (("conv2", 0),)
    assert not any(p.target.node == "relu" for p in nearest.points)
    assert "stays in float" in nearest.skipped["up"]
    linear = place_quantizers(interpolate_graph("bilinear"), gpu)
    assert at(linear, "relu").consumers == (("up", 0),)
    assert at(linear, "up").consumers == (("conv2", 0),)
    cpu = place_quantizers(interpolate_graph("nearest"), CPU)
    assert at(cpu, "relu").consumers == (("up", 0),)


def test_sdpa_quantizes_q_and_k_symmetric_even_in_mixed_preset():
    b = GB()
    q, k, v = b.inp("q"), b.inp("k"), b.inp("v")
    s = b.op("ScaledDotProductAttention", "sdpa", q, k, v)
    b.out(s)
    pl = place_quantizers(b.g, CPU, preset="mixed")
    assert {p.target.node for p in pl.points} == {"q", "k"}
    assert all(p.spec.mode == "symmetric" for p in pl.points)
    assert "allows no asymmetric" in at(pl, "q").reason


def attention_block():
    """x -> LayerNorm -> q/k/v Linear -> (reshape, transpose) -> QK^T -> scale -> softmax -> @V -> out -> + x."""
    b = GB("bert")
    x = b.inp("x", shape=(1, 4, 16))
    ln = b.op("MVN", "ln", x)
    g = b.const("ln.gamma")
    ln_mul = b.op("Multiply", "ln_mul", ln, g)
    beta = b.const("ln.beta")
    ln_add = b.op("Add", "ln_add", ln_mul, beta)
    heads = {}
    for n in ("q", "k", "v"):
        lin = b.linear(n, ln_add)
        bias = b.const(f"{n}.bias")
        lin_b = b.op("Add", f"{n}_bias", lin, bias)
        rs = b.op("Reshape", f"{n}_reshape", lin_b)
        heads[n] = b.op("Transpose", f"{n}_transpose", rs)
    scores = b.op("MatMul", "qk", heads["q"], heads["k"])
    scale = b.const("scale")
    scaled = b.op("Divide", "qk_scale", scores, scale)
    sm = b.op("Softmax", "softmax", scaled)
    ctx = b.op("MatMul", "av", sm, heads["v"])
    t = b.op("Transpose", "ctx_transpose", ctx)
    r = b.op("Reshape", "ctx_reshape", t)
    o = b.linear("o", r)
    res = b.op("Add", "residual", o, x)
    b.out(res)
    return b.g


def test_attention_block_default_model_type():
    pl = place_quantizers(attention_block(), CPU)
    # both attention MatMuls get both activation inputs quantized, Softmax output included
    assert at(pl, "softmax").consumers == (("av", 0),)
    assert at(pl, "v_bias").consumers == (("av", 1),)
    q = at(pl, "q_bias")
    assert q.consumers == (("qk", 0),)
    assert "moved up through Transpose 'q_transpose', Reshape 'q_reshape'" in q.reason
    assert at(pl, "k_bias").consumers == (("qk", 1),)
    assert set(at(pl, "ln_add").consumers) == {("q", 0), ("k", 0), ("v", 0)}
    # qk -> Divide(const) fuse (linear + arithmetic): no quantizer at the Divide
    assert not any(p.target.node in ("qk", "qk_scale") for p in act_points(pl))
    assert set(at(pl, "x").consumers) == {("ln", 0), ("residual", 1)}
    assert len(pl.weight_points) == 4


def test_attention_block_transformer_model_type():
    pl = place_quantizers(attention_block(), CPU, model_type="transformer", preset="mixed")
    nodes = {p.target.node for p in act_points(pl)}
    # LayerNorm, residual Add stay float; Softmax x V is NNCF's ignored attention output
    assert nodes == {"ln_add", "q_bias", "k_bias", "av"}
    assert at(pl, "q_bias").spec.mode == "symmetric" and at(pl, "k_bias").spec.mode == "symmetric"
    assert "MatMul of two activations" in at(pl, "q_bias").reason
    assert at(pl, "ln_add").spec.mode == "asymmetric"
    # the output projection's quantizer moves up to the (float) attention output MatMul
    assert at(pl, "av").consumers == (("o", 0),)
    assert "Reshape 'ctx_reshape', Transpose 'ctx_transpose'" in at(pl, "av").reason
    assert "multihead_attention_output" in pl.skipped["av"]
    assert "model_type=transformer" in pl.skipped["residual"]
    assert "model_type=transformer" in pl.skipped["ln"]
    assert len(pl.weight_points) == 4


def test_transformer_on_cpu_spr_quantizes_multiply():
    b = GB()
    x, y = b.inp("x"), b.inp("y")
    m = b.op("Multiply", "mul", x, y)
    b.out(m)
    with pytest.raises(QuantizationError):
        place_quantizers(b.g, CPU, model_type="transformer")
    pl = place_quantizers(b.g, load_rules("CPU_SPR"), model_type="transformer")
    assert {p.target.node for p in pl.points} == {"x", "y"}


def test_split_passes_quantizer_up_when_all_outputs_agree():
    b = GB()
    x = b.inp()
    c = b.conv("conv", x, in_ch=3)
    r = b.op("Relu", "relu", c)
    sp = b.op("Split", "split", r)
    a = b.conv("a", (sp, 0))
    bb = b.conv("b", (sp, 1))
    b.out(b.op("Concat", "cat", a, bb))
    pl = place_quantizers(b.g, CPU)
    p = at(pl, "relu")
    assert set(p.consumers) == {("a", 0), ("b", 0)} and "Split 'split'" in p.reason


def test_every_point_has_a_reason_and_report_lists_skipped():
    pl = place_quantizers(attention_block(), CPU, model_type="transformer")
    assert all(p.reason for p in pl.points)
    report = pl.report()
    assert "Not quantized:" in report and "multihead_attention_output" in report
    d = pl.to_dict()
    assert len(d["points"]) == len(pl.points)


# -- the model's tail (quantize_tail) and recurrent ops without constant weights ----------------
def conv_sigmoid_mean_head():
    """conv -> relu -> conv -> sigmoid -> ReduceMean -> out, and a state-like Add to a second out."""
    b = GB()
    x = b.inp()
    c1 = b.conv("conv1", x, in_ch=3)
    r1 = b.op("Relu", "relu1", c1)
    c2 = b.conv("conv2", r1)
    s = b.op("Sigmoid", "sigmoid", c2)
    m = b.op("ReduceMean", "mean", s)
    b.out(m)
    add = b.op("Add", "state_add", r1, b.inp("state"))
    b.out(add, "state_out")
    return b.g


def test_tail_after_the_last_weighted_op_stays_float_when_asked():
    g = conv_sigmoid_mean_head()
    nncf_like = place_quantizers(g, CPU)  # quantize_tail=True: NNCF's placement
    assert {p.target.node for p in act_points(nncf_like)} == {"x", "relu1", "sigmoid", "state"}
    assert at(nncf_like, "relu1").consumers == (("conv2", 0), ("state_add", 0))
    ours = place_quantizers(g, CPU, quantize_tail=False)
    targets = {p.target for p in act_points(ours)}
    # the conv inputs stay quantized; nothing after conv2 or on the state Add, which now reads
    # relu1 in float, so conv2 gets its own input quantizer
    assert targets == {TargetPoint(TargetType.OUTPUT, "x"), TargetPoint(TargetType.INPUT, "conv2", 0)}
    for name in ("mean", "state_add"):
        assert "after the last weighted op" in ours.skipped[name]
    assert len(ours.weight_points) == len(nncf_like.weight_points) == 2


def test_tail_rule_keeps_a_graph_without_weighted_ops():
    b = GB()
    a, c = b.inp("a"), b.inp("c")
    b.out(b.op("Add", "add", a, c))
    pl = place_quantizers(b.g, CPU, quantize_tail=False)
    assert {p.target.node for p in act_points(pl)} == {"a", "c"}


@pytest.mark.parametrize("constant_weights", [True, False])
def test_lstm_inputs_are_quantized_only_with_constant_weights(constant_weights):
    b = GB()
    x, h = b.inp("x", (1, 4, 16)), b.inp("h", (1, 1, 32))
    weights = {2: WeightInfo("lstm.W", (1, 128, 16)), 3: WeightInfo("lstm.R", (1, 128, 32))}
    b.op("LSTMSequence", "lstm", x, h, weights=weights if constant_weights else None)
    b.out("lstm")
    if constant_weights:
        pl = place_quantizers(b.g, CPU)
        assert {p.target.node for p in act_points(pl)} == {"x", "h"} and len(pl.weight_points) == 2
    else:
        with pytest.raises(QuantizationError, match="weights are computed in the graph"):
            place_quantizers(b.g, CPU)
