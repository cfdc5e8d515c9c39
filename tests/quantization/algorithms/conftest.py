"""A numpy-only backend for testing the PTQ algorithms: a tiny graph executor and its adapter.

The model is a ``Graph`` plus a dict of parameters. Supported op kinds: Parameter (the model
input), MatMul (``x @ W.T + b``, torch Linear layout), Convolution (1x1, NCHW), Relu, Add, Result.
Statistics at a target point observe the tensor *before* a quantizer at that point, as the real
backends must.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo, op_kinds
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.quantization.statistics import reduce_batch


class NumpyModel:
    def __init__(self, graph: Graph, params: dict[str, np.ndarray]):
        self.graph = graph
        self.params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        self.quantizers = {}
        self.edge_scales = {}

    def copy(self) -> NumpyModel:
        m = NumpyModel(self.graph, {k: v.copy() for k, v in self.params.items()})
        m.quantizers = dict(self.quantizers)
        m.edge_scales = copy.deepcopy(self.edge_scales)
        return m

    def _fq(self, tp, value):
        q = self.quantizers.get(tp)
        return value if q is None else q.fake_quantize(value)

    def __call__(self, x, observe=None):
        observe = observe or (lambda tp, v: None)
        values = {}
        result = None
        for node in self.graph.topological_order():
            ins = {}
            for e in self.graph.in_edges(node.name):
                v = values[(e.src, e.src_port)]
                if (node.name, e.dst_port) in self.edge_scales:
                    scale, axis = self.edge_scales[(node.name, e.dst_port)]
                    shape = [1] * v.ndim
                    shape[axis] = -1
                    v = v * scale.reshape(shape)
                tp = TargetPoint(TargetType.INPUT, node.name, e.dst_port)
                observe(tp, v)
                ins[e.dst_port] = self._fq(tp, v)
            weights = {
                port: self._fq(TargetPoint(TargetType.WEIGHT, node.name, port), self.params[info.name])
                for port, info in node.weights.items()
            }
            bias = self.params[node.bias] if node.bias else None
            if node.kind == op_kinds.INPUT:
                out = np.asarray(x, dtype=np.float32)
            elif node.kind == op_kinds.MATMUL:
                out = ins[0] @ weights[1].T
                if bias is not None:
                    out = out + bias
            elif node.kind == op_kinds.CONVOLUTION:  # 1x1 convolution, NCHW
                out = np.einsum("nihw,oi->nohw", ins[0], weights[1][:, :, 0, 0])
                if bias is not None:
                    out = out + bias[None, :, None, None]
            elif node.kind == op_kinds.RELU:
                out = np.maximum(ins[0], 0)
            elif node.kind == op_kinds.SIGMOID:
                out = 1.0 / (1.0 + np.exp(-ins[0]))
            elif node.kind == op_kinds.ADD:
                out = ins[0] + ins[1]
            elif node.kind == op_kinds.OUTPUT:
                result = ins[0]
                continue
            else:
                raise NotImplementedError(node.kind)
            tp = TargetPoint(TargetType.OUTPUT, node.name, 0)
            observe(tp, out)
            values[(node.name, 0)] = self._fq(tp, out)
        return result


class NumpyAdapter:
    def __init__(self):
        self.collect_calls = 0
        self.seen_inputs = 0
        self.requests = []

    def build_graph(self, model, example_input=None):
        return model.graph

    def collect_statistics(self, model, inputs, sinks):
        self.collect_calls += 1
        self.requests.append(list(sinks))
        by_target = defaultdict(list)
        for req, sink in sinks.items():
            by_target[req.target].append((req, sink))

        def observe(tp, value):
            for req, sink in by_target.get(tp, ()):
                sink(reduce_batch(value, req.reducer, req.keep_axis, req.q))

        n = 0
        for x in inputs:
            model(x, observe)
            n += 1
        self.seen_inputs += n
        return n

    def get_weight(self, model, node, port):
        return model.params[model.graph.node(node).weights[port].name].copy()

    def set_weight(self, model, node, port, value):
        name = model.graph.node(node).weights[port].name
        assert value.shape == model.params[name].shape
        model.params[name] = np.asarray(value, dtype=np.float32)

    def get_bias(self, model, node):
        name = model.graph.node(node).bias
        return None if name is None else model.params[name].copy()

    def set_bias(self, model, node, value):
        model.params[model.graph.node(node).bias] = np.asarray(value, dtype=np.float32)

    def apply(self, model, placement, params):
        q = model.copy()
        q.quantizers = dict(params)
        return q

    def scale_activation(self, model, source, consumers, scale, axis):
        for c in consumers:
            model.edge_scales[tuple(c)] = (np.asarray(scale, dtype=np.float32), axis)
        return model


def linear(name, w, bias=True):
    w = np.asarray(w)
    return Node(
        name,
        "linear",
        op_kinds.MATMUL,
        weights={1: WeightInfo(f"{name}.weight", w.shape, out_channel_axis=0, in_channel_axis=1)},
        bias=f"{name}.bias" if bias else None,
    )


def build_mlp(w1, b1, w2, b2):
    """input -> fc1 -> relu -> fc2 -> output."""
    g = Graph("mlp")
    g.add_node(Node("input", "input", op_kinds.INPUT))
    g.add_node(linear("fc1", w1))
    g.add_node(Node("relu", "relu", op_kinds.RELU))
    g.add_node(linear("fc2", w2, bias=b2 is not None))
    g.add_node(Node("output", "output", op_kinds.OUTPUT))
    f = TensorInfo((None, np.shape(w1)[1]))
    g.add_edge(Edge("input", 0, "fc1", 0, f))
    g.add_edge(Edge("fc1", 0, "relu", 0))
    g.add_edge(Edge("relu", 0, "fc2", 0))
    g.add_edge(Edge("fc2", 0, "output", 0))
    params = {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2}
    if b2 is not None:
        params["fc2.bias"] = b2
    return NumpyModel(g, params)


def build_shared_input(wq, wk):
    """input -> q, k (two MatMuls reading the same tensor) -> add -> output; input -> add2 residual."""
    g = Graph("attn")
    g.add_node(Node("input", "input", op_kinds.INPUT))
    g.add_node(linear("q", wq))
    g.add_node(linear("k", wk))
    g.add_node(Node("add", "add", op_kinds.ADD))
    g.add_node(Node("output", "output", op_kinds.OUTPUT))
    g.add_edge(Edge("input", 0, "q", 0))
    g.add_edge(Edge("input", 0, "k", 0))
    g.add_edge(Edge("q", 0, "add", 0))
    g.add_edge(Edge("k", 0, "add", 1))
    g.add_edge(Edge("add", 0, "output", 0))
    params = {
        "q.weight": wq,
        "q.bias": np.zeros(np.shape(wq)[0]),
        "k.weight": wk,
        "k.bias": np.zeros(np.shape(wk)[0]),
    }
    return NumpyModel(g, params)


def build_conv(w, b):
    """input (NCHW) -> conv 1x1 -> output."""
    g = Graph("conv")
    g.add_node(Node("input", "input", op_kinds.INPUT))
    w = np.asarray(w)
    g.add_node(
        Node(
            "conv",
            "conv2d",
            op_kinds.CONVOLUTION,
            weights={1: WeightInfo("conv.weight", w.shape, out_channel_axis=0, in_channel_axis=1)},
            bias="conv.bias",
        )
    )
    g.add_node(Node("output", "output", op_kinds.OUTPUT))
    g.add_edge(Edge("input", 0, "conv", 0))
    g.add_edge(Edge("conv", 0, "output", 0))
    return NumpyModel(g, {"conv.weight": w, "conv.bias": b})


@pytest.fixture
def fake():
    return SimpleNamespace(
        Model=NumpyModel,
        Adapter=NumpyAdapter,
        build_mlp=build_mlp,
        build_shared_input=build_shared_input,
        build_conv=build_conv,
    )
