"""Fusion patterns and the pattern matcher: no quantizer inside Conv+BN+ReLU and friends."""

from __future__ import annotations

import pytest

from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo
from nncompress.graph.patterns import Pattern, PatternError, PatternLibrary, PatternNode, find_matches
from nncompress.hardware import load_rules
from nncompress.quantization.fusion import find_fused_groups, find_ignored_by_patterns, find_non_activations
from nncompress.quantization.placement import place_quantizers
from nncompress.quantization.spec import TargetPoint, TargetType

CPU = load_rules("CPU")


class GB:
    """Tiny graph builder: ``op(kind, name, *inputs)``; an input is a name or ``(name, port)``."""

    def __init__(self):
        self.g = Graph("net")

    def inp(self, name="x"):
        self.g.add_node(Node(name, "input", "Parameter"))
        return name

    def const(self, name):
        self.g.add_node(Node(name, "const", "Constant"))
        return name

    def op(self, kind, name, *inputs, weights=None, attrs=None):
        self.g.add_node(Node(name, kind.lower(), kind, attrs=dict(attrs or {}), weights=dict(weights or {})))
        port = 0
        for src in inputs:
            while port in (weights or {}):
                port += 1
            src, src_port = src if isinstance(src, tuple) else (src, 0)
            self.g.add_edge(Edge(src, src_port, name, port, TensorInfo((1, 8, 8, 8))))
            port += 1
        return name

    def conv(self, name, src):
        return self.op("Convolution", name, src, weights={1: WeightInfo(f"{name}.w", (8, 8, 3, 3))})

    def out(self, src, name="out"):
        return self.op("Result", name, src)


def groups_of(g, rules=CPU, model_type=None):
    return {grp.nodes: grp for grp in find_fused_groups(g, rules, model_type).groups}


def act_targets(placement):
    return {p.target for p in placement.points if not p.is_weight}


def out(node):
    return TargetPoint(TargetType.OUTPUT, node)


# ---------------------------------------------------------------------------------------------
def test_conv_bn_relu_is_one_group_longest_first():
    b = GB()
    c = b.conv("conv", b.inp())
    bn = b.op("BatchNormInference", "bn", c)
    r = b.op("Relu", "relu", bn)
    b.out(b.conv("conv2", r))
    groups = groups_of(b.g)
    assert ("conv", "bn", "relu") in groups
    grp = groups[("conv", "bn", "relu")]
    assert grp.primary == "conv" and grp.last == "relu" and grp.quantizable


def test_bias_add_fuses_but_residual_add_does_not():
    b = GB()
    x = b.inp()
    c = b.conv("conv", x)
    bias = b.op("Add", "bias", c, b.const("b"))
    r = b.op("Relu", "relu", bias)
    c2 = b.conv("conv2", r)
    add = b.op("Add", "residual", c2, r)
    r2 = b.op("Relu", "relu2", add)
    b.out(r2)
    groups = groups_of(b.g)
    assert ("conv", "bias", "relu") in groups
    assert ("residual", "relu2") in groups
    assert not any("conv2" in nodes for nodes in groups)
    pl = place_quantizers(b.g, CPU)
    # relu feeds conv2 and the residual add: one shared quantizer; conv2's output goes to the add
    assert act_targets(pl) == {out("x"), out("relu"), out("conv2")}


def test_a_group_must_be_closed():
    b = GB()
    c = b.conv("conv", b.inp())
    r = b.op("Relu", "relu", c)
    b.out(c, "side_output")  # conv's output leaves the would-be group
    b.out(r)
    assert groups_of(b.g) == {}


def test_swish_written_as_two_ops_fuses_with_the_conv():
    b = GB()
    c = b.conv("conv", b.inp())
    s = b.op("Sigmoid", "sig", c)
    m = b.op("Multiply", "mul", c, s)
    b.out(b.conv("conv2", m))
    assert ("conv", "sig", "mul") in groups_of(b.g)
    pl = place_quantizers(b.g, CPU)
    assert act_targets(pl) == {out("x"), out("mul")}


def test_hswish_written_as_ops_is_an_activation_group():
    b = GB()
    x = b.inp()
    a = b.op("Add", "add3", x, b.const("three"))
    c = b.op("Clamp", "relu6", a, attrs={"min": 0.0, "max": 6.0})
    m = b.op("Multiply", "mul", x, c)
    d = b.op("Divide", "div6", m, b.const("six"))
    b.out(b.conv("conv", d))
    groups = groups_of(b.g)
    grp = groups[("add3", "relu6", "mul", "div6")]
    assert grp.pattern == "composite_activation" and not grp.quantizable
    pl = place_quantizers(b.g, CPU)
    assert act_targets(pl) == {out("div6")}
    assert "activation" in pl.skipped["add3"]


def test_gelu_erf_after_matmul_fuses():
    b = GB()
    x = b.inp()
    mm = b.op("MatMul", "fc", x, weights={1: WeightInfo("fc.w", (8, 8))})
    d = b.op("Divide", "div", mm, b.const("sqrt2"))
    e = b.op("Erf", "erf", d)
    one = b.op("Add", "one", e, b.const("1"))
    m = b.op("Multiply", "mul", mm, one)
    h = b.op("Multiply", "half", m, b.const("0.5"))
    b.out(b.op("MatMul", "fc2", h, weights={1: WeightInfo("fc2.w", (8, 8))}))
    assert ("fc", "div", "erf", "one", "mul", "half") in groups_of(b.g)
    assert act_targets(place_quantizers(b.g, CPU)) == {out("x"), out("half")}


def test_mvn_scale_shift_quantized_after_the_shift():
    b = GB()
    ln = b.op("MVN", "ln", b.inp())
    m = b.op("Multiply", "gamma", ln, b.const("g"))
    a = b.op("Add", "beta", m, b.const("b"))
    b.out(b.op("MatMul", "fc", a, weights={1: WeightInfo("fc.w", (8, 8))}))
    assert ("ln", "gamma", "beta") in groups_of(b.g)
    assert act_targets(place_quantizers(b.g, CPU)) == {out("x"), out("beta")}


def test_decomposed_layer_norm_quantizes_its_input_once():
    b = GB()
    x = b.inp()
    mean = b.op("ReduceMean", "mean", x)
    sub = b.op("Subtract", "sub", x, mean)
    p = b.op("Power", "pow", sub, b.const("two"))
    var = b.op("ReduceMean", "var", p)
    eps = b.op("Add", "eps", var, b.const("e"))
    sq = b.op("Sqrt", "sqrt", eps)
    div = b.op("Divide", "div", sub, sq)
    b.out(b.op("MatMul", "fc", div, weights={1: WeightInfo("fc.w", (8, 8))}))
    grp = groups_of(b.g)[("mean", "sub", "pow", "var", "eps", "sqrt", "div")]
    assert grp.primary == "mean"
    pl = place_quantizers(b.g, CPU)
    x_point = next(p for p in pl.points if p.target == out("x"))
    assert set(x_point.consumers) == {("mean", 0), ("sub", 0)}
    assert act_targets(pl) == {out("x"), out("div")}


def scale_shift_graph():
    b = GB()
    c = b.conv("conv", b.inp())
    m = b.op("Multiply", "mul", c, b.const("s"))
    a = b.op("Add", "add", m, b.const("t"))
    b.out(b.conv("conv2", a))
    return b.g


def test_linear_scale_shift_is_a_device_pattern():
    assert ("conv", "mul", "add") in groups_of(scale_shift_graph(), CPU)
    assert act_targets(place_quantizers(scale_shift_graph(), CPU)) == {out("x"), out("add")}
    npu = load_rules("NPU")
    assert ("conv", "mul") in groups_of(scale_shift_graph(), npu)
    assert act_targets(place_quantizers(scale_shift_graph(), npu)) == {out("x"), out("mul"), out("add")}


def test_input_preprocessing_fuses_with_the_model_input():
    b = GB()
    x = b.inp()
    s = b.op("Subtract", "sub_mean", x, b.const("mean"))
    m = b.op("Multiply", "scale", s, b.const("std"))
    b.out(b.conv("conv", m))
    assert ("x", "sub_mean", "scale") in groups_of(b.g)
    pl = place_quantizers(b.g, CPU)
    assert act_targets(pl) == {out("scale")}
    assert "model input 'scale'" in pl.points[0].reason
    with_inputs_off = place_quantizers(b.g, CPU, quantize_inputs=False)
    assert act_targets(with_inputs_off) == set()


def se_block():
    b = GB()
    x = b.inp()
    c = b.conv("conv", x)
    r = b.op("Relu", "relu", c)
    pool = b.op("ReduceMean", "pool", r)
    fc1 = b.conv("se_fc1", pool)
    act = b.op("Relu", "se_relu", fc1)
    fc2 = b.conv("se_fc2", act)
    gate = b.op("Sigmoid", "se_gate", fc2)
    m = b.op("Multiply", "se_mul", r, gate)
    b.out(b.conv("conv2", m))
    return b.g


def test_se_block_convolutions_are_left_float():
    ignored = find_ignored_by_patterns(se_block(), CPU)
    assert set(ignored) == {"se_fc1", "se_relu", "se_fc2", "se_gate"}
    pl = place_quantizers(se_block(), CPU)
    assert {p.target.node for p in pl.weight_points} == {"conv", "conv2"}
    assert "se_block" in pl.skipped["se_fc1"]


def test_non_activations_constants_and_shapes():
    b = GB()
    x = b.inp()
    w = b.op("Convert", "w_convert", b.const("w"))
    scaled = b.op("Multiply", "w_scaled", w, b.const("s"))
    shape = b.op("ShapeOf", "shape", x)
    gathered = b.op("Gather", "dim", shape, b.const("idx"))
    r = b.op("Reshape", "reshape", x, gathered)
    b.out(b.op("MatMul", "mm", r, scaled))
    na = find_non_activations(b.g)
    assert {"w_convert", "w_scaled", "w", "s", "idx"} <= na.constant
    assert na.shape == {"shape", "dim"}
    assert na.why("w_scaled").startswith("constant") and na.why("dim").startswith("shape")
    assert na.why("reshape") is None


# -- the generic matcher -----------------------------------------------------------------------
def chain_graph(kinds):
    b = GB()
    prev = b.inp()
    for i, kind in enumerate(kinds):
        prev = b.op(kind, f"n{i}", prev)
    b.out(prev)
    return b.g


def test_library_chain_with_optional_steps_and_classes():
    lib = PatternLibrary.from_dict(
        {
            "classes": {"act": ["Relu", "Clamp"], "norm": ["BatchNormInference"]},
            "patterns": [{"name": "conv_bn_act", "chain": ["Convolution", "norm?", "act"]}],
        }
    )
    patterns = lib.expand("patterns")
    assert sorted(p.size for p in patterns) == [2, 3]
    g = chain_graph(["Convolution", "BatchNormInference", "Clamp", "Relu"])
    matches = find_matches(g, patterns)
    assert [m.nodes for m in matches] == [("n0", "n1", "n2")]
    assert matches[0].first == "n0" and matches[0].last == "n2"


def test_graph_pattern_with_anchor_is_induced_and_strict():
    pattern = Pattern(
        "swish",
        (
            PatternNode("x", external=True),
            PatternNode("s", frozenset({"Sigmoid"})),
            PatternNode("m", frozenset({"Multiply"})),
        ),
        ((0, 1), (1, 2), (0, 2)),
    )
    b = GB()
    x = b.inp()
    s = b.op("Sigmoid", "s", x)
    m = b.op("Multiply", "m", x, s)
    b.out(m)
    assert [m.nodes for m in find_matches(b.g, [pattern])] == [("s", "m")]
    b2 = GB()
    x = b2.inp()
    y = b2.inp("y")
    s = b2.op("Sigmoid", "s", x)
    m = b2.op("Multiply", "m", y, s)  # not x * sigmoid(x)
    b2.out(m)
    assert find_matches(b2.g, [pattern]) == []


def test_non_strict_matching_ignores_outside_edges():
    lib = PatternLibrary.from_dict({"p": [{"name": "cr", "chain": ["Convolution", "Relu"]}]})
    b = GB()
    c = b.op("Convolution", "c", b.inp())
    r = b.op("Relu", "r", c)
    b.out(c, "o1")
    b.out(r, "o2")
    assert find_matches(b.g, lib.expand("p")) == []
    assert [m.nodes for m in find_matches(b.g, lib.expand("p"), strict=False)] == [("c", "r")]


def test_optional_and_excluded_graph_nodes():
    lib = PatternLibrary.from_dict(
        {
            "graphs": {
                "g": {
                    "nodes": {
                        "a": {"kinds": "Relu", "exclude": True},
                        "b": {"kinds": "Add", "optional": True},
                        "c": "Tanh",
                    },
                    "edges": [["a", "b"], ["b", "c"]],
                }
            },
            "p": [{"name": "g", "graph": "g"}],
        }
    )
    patterns = lib.expand("p")
    assert len(patterns) == 2
    m = find_matches(chain_graph(["Relu", "Tanh"]), patterns, strict=False)
    assert [x.nodes for x in m] == [("n1",)]


@pytest.mark.parametrize(
    "bad",
    [
        {"p": [{"name": "x", "chain": ["Relu"], "graph": "g"}]},
        {"p": [{"name": "x", "chain": ["Relu"], "colour": "red"}]},
        {
            "graphs": {"g": {"nodes": {"a": {"kinds": "Relu", "maybe": 1}}, "edges": []}},
            "p": [{"name": "x", "graph": "g"}],
        },
        {
            "graphs": {"g": {"nodes": {"a": "Relu"}, "edges": [["a", "zz"]]}},
            "p": [{"name": "x", "graph": "g"}],
        },
    ],
)
def test_malformed_patterns_are_rejected(bad):
    with pytest.raises(PatternError):
        PatternLibrary.from_dict(bad).expand("p")


def test_describe_lists_groups():
    b = GB()
    c = b.conv("conv", b.inp())
    b.out(b.op("Relu", "relu", c))
    text = find_fused_groups(b.g, CPU).describe()
    assert "conv -> relu" in text
