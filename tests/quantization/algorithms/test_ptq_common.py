import numpy as np
import pytest

from nncompress.data import Dataset
from nncompress.errors import DatasetError
from nncompress.graph import Edge, Graph, Node, WeightInfo, op_kinds
from nncompress.quantization.algorithms.base import (
    activation_channel_axis,
    activation_port,
    bias_correction_layers,
    calibration_iterations,
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
