import numpy as np
import pytest

from nncompress.data import Dataset
from nncompress.errors import DatasetError
from nncompress.graph import Edge, Graph, Node, WeightInfo, op_kinds
from nncompress.quantization.algorithms.base import (
    activation_channel_axis,
    activation_port,
    bias_carrier,
    bias_correction_layers,
    calibration_iterations,
    conv_tap_coverage,
    input_factory,
    input_statistic_target,
    layer_transfer_matrix,
)
from nncompress.quantization.spec import Placement, QuantizationPoint, QuantizerSpec, TargetPoint, TargetType


class _Loader(list):
    batch_size = 4


def test_input_factory_forms():
    items = list(range(10))
    make = input_factory(items, 3)
    assert list(make()) == [0, 1, 2] and list(make()) == [0, 1, 2]
    once = input_factory(iter(items), 4)  # one-shot iterator: cached for later passes
    assert list(once()) == [0, 1, 2, 3] and list(once()) == [0, 1, 2, 3]
    assert list(input_factory(lambda: iter(items), 2)()) == [0, 1]
    ds = Dataset(_Loader(items), lambda x: x * 10)
    assert calibration_iterations(ds, 9) == 3  # 9 samples in batches of 4
    assert list(input_factory(ds, 9)()) == [0, 10, 20]
    assert calibration_iterations(items, None) == 10 and calibration_iterations(items, 300) == 10
    with pytest.raises(DatasetError):
        input_factory(None, 3)
    with pytest.raises(DatasetError):
        input_factory(5, 3)
    with pytest.raises(DatasetError):
        calibration_iterations(items, 0)


def _graph():
    g = Graph()
    g.add_node(Node("in", "in", op_kinds.INPUT))
    w = WeightInfo("conv.w", (4, 3, 3, 3))
    g.add_node(Node("conv", "conv", op_kinds.CONVOLUTION, weights={1: w}, bias="conv.b"))
    g.add_node(Node("fc", "fc", op_kinds.MATMUL, weights={1: WeightInfo("fc.w", (2, 4))}))
    g.add_node(
        Node(
            "dw",
            "dw",
            op_kinds.DEPTHWISE_CONVOLUTION,
            weights={1: WeightInfo("dw.w", (4, 1, 3, 3))},
            bias="b",
        )
    )
    g.add_edge(Edge("in", 0, "conv", 0))
    g.add_edge(Edge("conv", 0, "dw", 0))
    g.add_edge(Edge("dw", 0, "fc", 0))
    return g


def test_layer_queries():
    g = _graph()
    conv, fc, dw = g.node("conv"), g.node("fc"), g.node("dw")
    assert activation_port(g, conv) == 0 and activation_channel_axis(conv) == 1
    assert activation_channel_axis(fc) == -1
    assert [n.name for n in bias_correction_layers(g, None)] == ["conv", "dw"]
    only_dw = Placement(
        points=[QuantizationPoint(TargetPoint(TargetType.WEIGHT, "dw", 1), QuantizerSpec(), True)]
    )
    assert [n.name for n in bias_correction_layers(g, only_dw)] == ["dw"]
    m = layer_transfer_matrix(dw, np.ones((4, 1, 3, 3)), dw.weights[1])
    np.testing.assert_array_equal(m, 9 * np.eye(4))


def test_input_statistic_target_prefers_the_quantizer_tensor():
    g = _graph()
    dw = g.node("dw")
    at_output = TargetPoint(TargetType.OUTPUT, "conv", 0)
    p = Placement(points=[QuantizationPoint(at_output, QuantizerSpec(), False, consumers=(("dw", 0),))])
    assert input_statistic_target(g, p, dw, 0) == at_output
    assert input_statistic_target(g, None, dw, 0) == TargetPoint(TargetType.INPUT, "dw", 0)
    elsewhere = Placement(
        points=[
            QuantizationPoint(
                TargetPoint(TargetType.OUTPUT, "in", 0), QuantizerSpec(), False, consumers=(("dw", 0),)
            )
        ]
    )
    assert input_statistic_target(g, elsewhere, dw, 0) == TargetPoint(TargetType.INPUT, "dw", 0)


@pytest.mark.parametrize(
    "attrs, size",
    [
        ({"padding": (1, 1)}, (4, 4)),  # torch: begins only
        ({"padding": (1, 1, 1, 1), "stride": (2, 2)}, (5, 6)),  # ONNX / OpenVINO: begins + ends
        ({"padding": (2, 0, 1, 1), "dilation": (2, 1)}, (6, 5)),  # asymmetric
        ({"padding": "same"}, (5, 4)),
        ({"padding": "valid", "stride": (2, 1)}, (7, 6)),
        ({}, (3, 4)),  # no padding attribute: derived from the shapes
        ({"padding": 1, "groups": 3}, (4, 4)),  # depthwise
    ],
)
def test_padded_transfer_matrix_is_exact_for_constant_inputs(attrs, size):
    """A per-channel constant input moves a padded convolution's output mean by exactly M @ c."""
    torch = pytest.importorskip("torch")
    groups = attrs.get("groups", 1)
    kind = op_kinds.DEPTHWISE_CONVOLUTION if groups > 1 else op_kinds.CONVOLUTION
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3 // groups, 3, 3))
    node = Node(
        "c", "Conv", kind, attrs={"kernel_size": (3, 3), **attrs}, weights={1: WeightInfo("w", w.shape)}
    )
    pad = attrs.get("padding", 0)
    if isinstance(pad, tuple) and len(pad) == 4:  # F.pad takes (w_begin, w_end, h_begin, h_end)
        x_pad, pad = (pad[1], pad[3], pad[0], pad[2]), 0
    else:
        x_pad = None
    c = rng.normal(size=3)
    x = torch.tensor(np.broadcast_to(c[None, :, None, None], (1, 3, *size)).copy())
    conv_in = torch.nn.functional.pad(x, x_pad) if x_pad else x
    y = torch.nn.functional.conv2d(
        conv_in, torch.tensor(w), None, attrs.get("stride", 1), pad, attrs.get("dilation", 1), groups
    )
    m = layer_transfer_matrix(node, w, node.weights[1], tuple(x.shape), tuple(y.shape))
    np.testing.assert_allclose(m @ c, y.mean(dim=(0, 2, 3)).numpy(), rtol=1e-10, atol=1e-12)
    if attrs.get("padding") not in ("valid", None):
        assert conv_tap_coverage(node, tuple(x.shape), tuple(y.shape)).min() < 1


def test_transfer_matrix_without_static_shapes_sums_the_taps():
    node = Node("c", "Conv", op_kinds.CONVOLUTION, attrs={"kernel_size": (3, 3), "padding": (1, 1)})
    w = np.ones((2, 2, 3, 3))
    for shapes in [(None, None), ((1, 2, None, None), (1, 2, None, None)), ((1, 2, 4), (1, 2, 4, 4))]:
        assert conv_tap_coverage(node, *shapes) is None
        np.testing.assert_array_equal(layer_transfer_matrix(node, w, WeightInfo("w", w.shape), *shapes), 9)
    np.testing.assert_allclose(
        conv_tap_coverage(node, (1, 2, 4, 4), (1, 2, 4, 4)),
        np.outer([0.75, 1, 0.75], [0.75, 1, 0.75]),
    )


def test_a_bias_less_layer_is_corrected_through_the_batch_norm_that_alone_reads_it():
    g = Graph()
    g.add_node(Node("in", "in", op_kinds.INPUT))
    g.add_node(Node("conv", "conv", op_kinds.CONVOLUTION, weights={1: WeightInfo("conv.w", (4, 3, 3, 3))}))
    g.add_node(
        Node("bn", "bn", op_kinds.BATCH_NORM, weights={3: WeightInfo("bn.weight", (4,))}, bias="bn.bias")
    )
    g.add_node(Node("conv2", "conv", op_kinds.CONVOLUTION, weights={1: WeightInfo("conv2.w", (4, 4, 1, 1))}))
    g.add_node(
        Node("bn2", "bn", op_kinds.BATCH_NORM, weights={3: WeightInfo("bn2.weight", (4,))}, bias="bn2.bias")
    )
    g.add_node(Node("relu", "relu", op_kinds.RELU))
    for src, dst in [("in", "conv"), ("conv", "bn"), ("bn", "conv2"), ("conv2", "bn2"), ("conv2", "relu")]:
        g.add_edge(Edge(src, 0, dst, 0))
    assert bias_carrier(g, g.node("conv")).name == "bn"
    assert bias_carrier(g, g.node("conv2")) is None  # its output also reaches the ReLU directly
    # the BatchNorm is the carrier, not a layer of its own
    assert [n.name for n in bias_correction_layers(g, None)] == ["conv"]
