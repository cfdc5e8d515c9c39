"""Tracing torch models into a Graph: names, kinds, weights, edges, and no side effects."""

from __future__ import annotations

import copy
import importlib.util
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_mod

from nncompress.errors import TracingError
from nncompress.graph import op_kinds as K
from nncompress.torch.nncf_network import wrap_model
from nncompress.torch.op_table import op_kind, op_name
from nncompress.torch.tracing import trace

try:
    from tests.torch import models as M
except ImportError:  # tests/ not importable as a package: load the zoo by path
    _spec = importlib.util.spec_from_file_location(
        "tests_torch_models", pathlib.Path(__file__).with_name("models.py")
    )
    M = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = M
    _spec.loader.exec_module(M)


def _ops(graph):
    return [n for n in graph.nodes if n.kind not in (K.INPUT, K.OUTPUT)]


def _in(graph, name):
    return {(e.dst_port): (e.src, e.src_port) for e in graph.in_edges(name)}


def _no_torch_function_mode() -> bool:
    return torch._C._len_torch_function_stack() == 0


@pytest.fixture(scope="module")
def traced():
    """name -> (model, example input, graph) for the whole zoo, traced once."""
    out = {}
    for name in M.ZOO:
        model = M.build(name)
        example = model.make_input()
        out[name] = (model, example, trace(model, example))
    return out


# ---------------------------------------------------------------------------------------------
# every model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(M.ZOO))
def test_zoo_graph_is_consistent(traced, name):
    model, example, graph = traced[name]
    order = graph.topological_order()
    assert len(order) == len(graph)
    root = type(model).__name__
    assert all(n.name.startswith(root + "/") for n in graph.nodes)
    assert graph.input_nodes() and graph.output_nodes()
    for out in graph.output_nodes():
        assert len(graph.in_edges(out.name)) == 1, out.name
    modules = dict(model.named_modules())
    for node in _ops(graph):
        assert node.module_scope in modules, node.name
        assert node.name.rsplit("/", 1)[1] == f"{node.op_type}_{node.name.rsplit('_', 1)[1]}"
        for w in node.weights.values():
            assert tuple(model.get_parameter(w.name).shape) == w.shape
    for e in graph.edges:
        assert e.tensor.shape is not None and e.tensor.dtype
    assert not any(n.op_type in ("size", "dim", "shape", "numel", "__len__", "__bool__") for n in graph.nodes)


@pytest.mark.parametrize("name", list(M.ZOO))
def test_names_are_stable_and_match_the_hook_runtime(traced, name):
    model, example, graph = traced[name]
    again = trace(model, example)
    assert [n.name for n in again.nodes] == [n.name for n in graph.nodes]
    assert [(e.src, e.src_port, e.dst, e.dst_port) for e in again.edges] == [
        (e.src, e.src_port, e.dst, e.dst_port) for e in graph.edges
    ]
    wrapped = wrap_model(copy.deepcopy(model), graph)
    args, kwargs = (example, {}) if not isinstance(example, dict) else ((), example)
    args = args if isinstance(args, tuple) else (args,)
    with torch.no_grad(), wrapped.nncf.record_op_names() as seen:
        wrapped(*args, **kwargs)
    graph_ops = [n.name for n in _ops(graph)]
    assert [s for s in seen if s in graph] == graph_ops
    assert set(graph_ops) <= set(seen)


def test_tracing_leaves_the_model_untouched():
    model = M.build("resnet").train()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    trace(model, model.make_input(batch=2))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics restored too
    assert torch.equal(rng, torch.get_rng_state())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._forward_hooks_always_called
    assert not module_mod._global_forward_hooks and not module_mod._global_forward_pre_hooks
    assert _no_torch_function_mode()
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters())


def test_eval_and_train_mode_traces_name_ops_the_same():
    model = M.build("mobilenet_v2")
    x = model.make_input(batch=2)
    eval_graph = trace(model, x)
    train_graph = trace(model.train(), x)
    # BatchNorm's num_batches_tracked update in train mode is counted but is not a node
    assert [n.name for n in train_graph.nodes] == [n.name for n in eval_graph.nodes]
    assert not any(n.op_type == "__iadd__" for n in train_graph.nodes)


# ---------------------------------------------------------------------------------------------
# architectures
# ---------------------------------------------------------------------------------------------


def test_resnet_convolutions_weights_and_residual_adds(traced):
    model, example, graph = traced["resnet"]
    convs = graph.nodes_of_kind(K.CONVOLUTION)
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert "ResNet/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]/conv2d_0" in graph
    for node in convs:
        assert node.op_type == "conv2d"
        w = node.weights[1]
        assert w.name == f"{node.module_scope}.weight"
        assert (w.out_channel_axis, w.in_channel_axis) == (0, 1)
        assert node.bias is None  # bias=False convolutions
        conv = model.get_submodule(node.module_scope)
        assert (
            node.attrs["out_channels"] == conv.out_channels and node.attrs["in_channels"] == conv.in_channels
        )
        assert node.attrs["kernel_size"] == conv.kernel_size and node.attrs["stride"] == conv.stride
        assert node.attrs["groups"] == 1 and node.attrs["transpose"] is False
    fc = graph.node("ResNet/Linear[fc]/linear_0")
    assert fc.kind == K.MATMUL and fc.weights[1].name == "fc.weight" and fc.bias == "fc.bias"
    assert fc.attrs == {"in_features": 16, "out_features": 10}

    block = "ResNet/Sequential[layer1]/BasicBlock[0]"
    add = graph.node(f"{block}/__iadd___0")
    assert add.kind == K.ADD
    assert _in(graph, add.name) == {
        0: (f"{block}/BatchNorm2d[bn2]/batch_norm_0", 0),
        1: ("ResNet/MaxPool2d[maxpool]/max_pool2d_0", 0),
    }
    block2 = "ResNet/Sequential[layer2]/BasicBlock[0]"
    assert _in(graph, f"{block2}/__iadd___0") == {
        0: (f"{block2}/BatchNorm2d[bn2]/batch_norm_0", 0),
        1: (f"{block2}/Sequential[downsample]/BatchNorm2d[1]/batch_norm_0", 0),
    }
    # the block's ReLU module is called twice: relu__0 after bn1, relu__1 after the add (in-place: NNCF names)
    assert _in(graph, f"{block}/ReLU[relu]/relu__1") == {0: (add.name, 0)}
    # edge shapes follow the data
    (edge,) = graph.in_edges(f"{block2}/Conv2d[conv1]/conv2d_0")
    assert edge.tensor.shape == (1, 8, 16, 16) and edge.tensor.dtype == "float32"
    (edge,) = graph.in_edges(f"{block2}/BatchNorm2d[bn1]/batch_norm_0")
    assert edge.tensor.shape == (1, 16, 8, 8)
    bn = graph.node(f"{block}/BatchNorm2d[bn1]/batch_norm_0")
    assert bn.kind == K.BATCH_NORM and bn.bias == "layer1.0.bn1.bias" and bn.attrs["num_features"] == 8


def test_mobilenet_depthwise_relu6_and_inverted_residual(traced):
    model, example, graph = traced["mobilenet_v2"]
    dw = graph.nodes_of_kind(K.DEPTHWISE_CONVOLUTION)
    assert len(dw) == 3
    for node in dw:
        assert node.attrs["groups"] == node.attrs["in_channels"] == node.attrs["out_channels"] > 1
    relu6 = graph.nodes_of_kind(K.CLAMP)
    assert relu6 and all(
        n.op_type == "hardtanh" and n.attrs == {"min_val": 0.0, "max_val": 6.0} for n in relu6
    )
    add = graph.node("MobileNetV2/Sequential[features]/InvertedResidual[1]/__add___0")
    srcs = {src for src, _ in _in(graph, add.name).values()}
    assert srcs == {
        "MobileNetV2/Sequential[features]/ConvBNReLU[0]/ReLU6[2]/hardtanh_0",
        "MobileNetV2/Sequential[features]/InvertedResidual[1]/Sequential[conv]/BatchNorm2d[3]/batch_norm_0",
    }
    assert graph.node("MobileNetV2/Sequential[classifier]/Dropout[0]/dropout_0").kind == K.DROPOUT


def test_group_convolution_kind():
    assert op_kind("conv2d", {"groups": 2, "in_channels": 8, "out_channels": 8}) == K.GROUP_CONVOLUTION
    assert op_kind("conv2d", {"groups": 8, "in_channels": 8, "out_channels": 16}) == K.DEPTHWISE_CONVOLUTION
    assert op_kind("conv2d", {"groups": 1, "in_channels": 1, "out_channels": 8}) == K.CONVOLUTION
    assert op_kind("conv_transpose2d", {"groups": 1, "transpose": True}) == K.CONVOLUTION_TRANSPOSE
    assert op_kind("no_such_op") == K.UNKNOWN


def test_squeeze_excitation_and_efficientnet(traced):
    _, _, graph = traced["senet"]
    se = "SENet/SqueezeExcitation[se]"
    assert graph.node(f"{se}/AdaptiveAvgPool2d[avgpool]/adaptive_avg_pool2d_0").kind == K.AVG_POOL
    assert graph.node(f"{se}/Sigmoid[gate]/sigmoid_0").kind == K.SIGMOID
    assert _in(graph, f"{se}/__mul___0") == {0: ("SENet/relu_0", 0), 1: (f"{se}/Sigmoid[gate]/sigmoid_0", 0)}
    assert graph.node("SENet/LinearSE[se2]/mean_0").attrs == {"axis": (2, 3), "keepdim": False}

    _, _, graph = traced["efficientnet"]
    kinds = {n.kind for n in graph.nodes}
    assert {K.SWISH, K.HSWISH, K.SIGMOID, K.DEPTHWISE_CONVOLUTION, K.MULTIPLY, K.ADD} <= kinds
    add = graph.node("EfficientNet/Sequential[blocks]/MBConv[0]/__add___0")
    assert _in(graph, add.name)[1] == ("EfficientNet/Sequential[stem]/SiLU[2]/silu_0", 0)


def test_transformer_embeddings_attention_and_integer_edges(traced):
    model, example, graph = traced["transformer"]
    ids = graph.node("Transformer/nncf_model_input_0")
    assert ids.attrs["dtype"] == "int64"
    (edge,) = graph.out_edges(ids.name)
    assert edge.tensor.dtype == "int64" and not edge.tensor.is_float
    tok = graph.node("Transformer/Embedding[tok]/embedding_0")
    assert tok.kind == K.EMBEDDING and tok.weights[1].name == "tok.weight"
    assert tok.attrs["num_embeddings"] == 50
    arange = graph.node("Transformer/arange_0")
    assert arange.kind == K.CONSTANT and not graph.in_edges(arange.name)
    assert graph.out_edges(arange.name)[0].tensor.dtype == "int64"

    attn = "Transformer/ModuleList[layers]/EncoderLayer[0]/SelfAttention[attn]"
    chunk = graph.node(f"{attn}/chunk_0")
    assert chunk.kind == K.SPLIT and chunk.attrs == {"axis": 2, "num_splits": 3}
    assert sorted(e.src_port for e in graph.out_edges(chunk.name)) == [0, 1, 2]
    assert graph.node(f"{attn}/softmax_0").attrs == {"axis": 3}
    assert graph.node(f"{attn}/__matmul___0").kind == K.MATMUL
    assert graph.node(f"{attn}/matmul_0").kind == K.MATMUL
    assert graph.node(f"{attn}/Linear[qkv]/linear_0").attrs["out_features"] == 48

    # nn.MultiheadAttention is traced through: its two projections are visible linears
    mha = "Transformer/ModuleList[layers]/EncoderLayer[1]/MultiheadAttention[attn]"
    in_proj, out_proj = graph.node(f"{mha}/linear_0"), graph.node(f"{mha}/linear_1")
    assert (
        in_proj.weights[1].name == "layers.1.attn.in_proj_weight"
        and in_proj.bias == "layers.1.attn.in_proj_bias"
    )
    assert out_proj.weights[1].name == "layers.1.attn.out_proj.weight"
    assert graph.nodes_of_kind(K.SCALED_DOT_PRODUCT_ATTENTION)
    assert (
        graph.node("Transformer/ModuleList[layers]/EncoderLayer[0]/Sequential[mlp]/GELU[1]/gelu_0").kind
        == K.GELU
    )
    assert graph.node("Transformer/LayerNorm[norm]/layer_norm_0").kind == K.LAYER_NORM
    assert graph.node("Transformer/__getitem___0").attrs["index"] == "[:, 0]"


def test_recurrent_models(traced):
    _, _, graph = traced["lstm"]
    lstm = graph.node("LSTMNet/LSTM[rnn]/lstm_0")
    assert lstm.kind == K.LSTM
    assert [w.name for w in lstm.weights.values()] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    assert lstm.attrs["hidden_size"] == 12 and lstm.attrs["batch_first"] is True
    assert _in(graph, lstm.name)[0] == ("LSTMNet/nncf_model_input_0", 0)
    assert _in(graph, "LSTMNet/__getitem___0") == {0: (lstm.name, 0)}

    _, _, graph = traced["gru"]
    gru = graph.node("GRUNet/GRU[rnn]/gru_0")
    assert gru.kind == K.GRU and len(gru.weights) == 4 and gru.attrs["num_layers"] == 2
    assert _in(graph, "GRUNet/__getitem___0") == {0: (gru.name, 1)}  # h, the second output


def test_unet_concat_and_upsampling(traced):
    _, _, graph = traced["unet"]
    up = graph.node("UNet/ConvTranspose2d[up2]/conv_transpose2d_0")
    assert up.kind == K.CONVOLUTION_TRANSPOSE
    assert (up.weights[1].out_channel_axis, up.weights[1].in_channel_axis) == (1, 0)
    assert up.attrs["in_channels"] == 32 and up.attrs["out_channels"] == 16 and up.attrs["transpose"] is True
    assert _in(graph, "UNet/cat_0") == {0: (up.name, 0), 1: ("UNet/Sequential[enc2]/ReLU[3]/relu_0", 0)}
    assert graph.node("UNet/cat_0").attrs == {"axis": 1}
    interp = graph.node("UNet/interpolate_0")
    assert interp.kind == K.INTERPOLATE and interp.attrs["mode"] == "bilinear"
    assert [e.tensor.shape for e in graph.out_edges(interp.name)] == [(1, 16, 16, 16)]


def test_control_flow_records_the_branch_taken():
    model = M.build("branchy")
    pos = trace(model, model.make_input(positive=True))
    neg = trace(model, model.make_input(positive=False))
    assert "BranchyNet/Linear[positive]/linear_0" in pos
    assert not any("negative" in n.name for n in pos.nodes)
    assert "BranchyNet/Sequential[negative]/Linear[2]/linear_0" in neg
    assert not any("positive" in n.name for n in neg.nodes)
    # the condition's ops are nodes (no consumers); bool() is not
    assert pos.node("BranchyNet/__gt___0").kind == K.GREATER


def test_dict_inputs_and_nested_dict_outputs(traced):
    model, example, graph = traced["dict_io"]
    inputs = graph.input_nodes()
    assert [(n.name, n.attrs["keyword"]) for n in inputs] == [
        ("DictIONet/nncf_model_input_0", "image"),
        ("DictIONet/nncf_model_input_1", "extra"),
    ]
    outputs = {n.attrs["path"]: n.name for n in graph.output_nodes()}
    assert outputs == {
        "['logits']": "DictIONet/nncf_model_output_0",
        "['aux'][0]": "DictIONet/nncf_model_output_1",
        "['aux'][1]": "DictIONet/nncf_model_output_2",
    }
    assert graph.in_edges("DictIONet/nncf_model_output_2")[0].src == "DictIONet/softmax_0"
    # keyword order of the call does not matter; positional + keyword_inputs gives the same graph
    reordered = trace(model, {"extra": example["extra"], "image": example["image"]})
    mixed = trace(model, (example["image"],), keyword_inputs={"extra": example["extra"]})
    positional = trace(model, (example["image"], example["extra"]))
    names = [(n.name, [(e.src, e.dst_port) for e in graph.in_edges(n.name)]) for n in graph.nodes]
    for other in (reordered, mixed, positional):
        assert [(n.name, [(e.src, e.dst_port) for e in other.in_edges(n.name)]) for n in other.nodes] == names
    assert mixed.node("DictIONet/nncf_model_input_0").attrs["path"] == "args[0]"
    # without the optional input, its branch is absent
    small = trace(model, {"image": example["image"]})
    assert "DictIONet/Linear[meta]/linear_0" not in small and len(small.input_nodes()) == 1


def test_module_called_twice_gets_distinct_nodes(traced):
    _, _, graph = traced["shared"]
    first, second = "SharedBlockNet/Linear[fc]/linear_0", "SharedBlockNet/Linear[fc]/linear_1"
    assert graph.node(first).weights[1].name == graph.node(second).weights[1].name == "fc.weight"
    assert graph.node(first).module_scope == graph.node(second).module_scope == "fc"
    assert _in(graph, second) == {0: ("SharedBlockNet/ReLU[act]/relu_0", 0)}
    assert _in(graph, "SharedBlockNet/ReLU[act]/relu_1") == {0: (second, 0)}
    assert [n.attrs["path"] for n in graph.output_nodes()] == ["[0]", "[1]"]


def test_functional_ops_tensor_methods_and_constants(traced):
    model, _, graph = traced["functional"]
    p = "FunctionalNet"
    assert graph.node(f"{p}/view_0").kind == K.RESHAPE and not graph.in_edges(
        f"{p}/view_0"
    )  # view of a buffer
    assert _in(graph, f"{p}/__add___0") == {0: (f"{p}/Conv2d[conv]/conv2d_0", 0), 1: (f"{p}/view_0", 0)}
    assert graph.node(f"{p}/split_0").attrs == {"axis": 1, "num_splits": 2}
    assert _in(graph, f"{p}/relu_0") == {0: (f"{p}/split_0", 0)}
    assert _in(graph, f"{p}/__mul___0") == {0: (f"{p}/split_0", 1)}
    assert [e.tensor.shape for e in graph.in_edges(f"{p}/cat_0")] == [(2, 2, 4, 4), (2, 4, 4, 4)]
    # x[:, 0] = 0 writes into the cat output: the write is a node between cat and flatten
    assert _in(graph, f"{p}/__setitem___0") == {0: (f"{p}/cat_0", 0)}
    assert _in(graph, f"{p}/flatten_0") == {0: (f"{p}/__setitem___0", 0)}
    matmul = graph.node(f"{p}/__matmul___0")
    assert matmul.weights[1].name == "proj"
    assert (matmul.weights[1].out_channel_axis, matmul.weights[1].in_channel_axis) == (1, 0)
    assert graph.node(f"{p}/__getitem___0").attrs["index"] == "[..., :3]"
    assert graph.node(f"{p}/T_0").kind == K.TRANSPOSE
    assert graph.node(f"{p}/stack_0").attrs == {"axis": 1}
    assert graph.node(f"{p}/ones_0").kind == K.CONSTANT and not graph.in_edges(f"{p}/ones_0")
    assert _in(graph, f"{p}/__iadd___0") == {0: (f"{p}/sum_0", 0), 1: (f"{p}/ones_0", 0)}
    assert _in(graph, f"{p}/__mul___1") == {0: (f"{p}/__iadd___0", 0)}


def test_unknown_ops_keep_their_name():
    class Cum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1).sigmoid()

    graph = trace(Cum(), torch.randn(2, 3))
    node = graph.node("Cum/cumsum_0")
    assert node.kind == K.UNKNOWN and node.op_type == "cumsum"


def test_op_names():
    x = torch.randn(2)
    assert op_name(torch.Tensor.add) == "__add__"
    assert op_name(torch.add) == "add"
    assert op_name(F.conv2d) == "conv2d"
    assert op_name(torch.Tensor.size) is None
    assert op_name(torch.Tensor.shape.__get__) is None
    assert op_name(torch.Tensor.T.__get__) == "T"
    assert op_name(type(x).__getitem__) == "__getitem__"


def test_inplace_relu_names_match_nncf():
    """The names NNCF 2.19 gives these ops (checked against it), so its ignored_scopes match."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.relu = nn.ReLU(inplace=True)
            self.r2 = nn.ReLU()
            self.act = nn.Hardswish(inplace=True)

        def forward(self, x):
            x = self.r2(self.relu(self.conv(x)))
            x = torch.relu_(self.act(x)).relu_()
            return F.relu(x, True)

    names = [n.name for n in _ops(trace(Net(), (torch.zeros(1, 1, 8, 8),)))]
    assert names == [
        "Net/Conv2d[conv]/conv2d_0",
        "Net/ReLU[relu]/relu__0",
        "Net/ReLU[r2]/relu_0",
        "Net/Hardswish[act]/hardswish_0",
        "Net/relu__0",
        "Net/relu__1",
        "Net/relu__2",
    ]


# ---------------------------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------------------------


def test_failure_names_module_and_op():
    model = M.FailingNet()
    with pytest.raises(TracingError) as info:
        trace(model, model.make_input())
    message = str(info.value)
    assert "block.proj" in message and "FailingNet/_BadProjection[block]/Linear[proj]/linear_0" in message
    assert "'linear'" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert _no_torch_function_mode()


def test_failure_outside_an_op_names_the_module():
    class Checker(nn.Module):
        def forward(self, x):
            if x.shape[-1] != 5:
                raise ValueError("expected 5 features")
            return x

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.check = Checker()

        def forward(self, x):
            return self.check(self.fc(x))

    with pytest.raises(TracingError, match=r"module 'check' \(Outer/Checker\[check\]\).*expected 5 features"):
        trace(Outer(), torch.randn(1, 4))


def test_numpy_inputs_fail_with_a_hint_to_convert_them():
    np = pytest.importorskip("numpy")
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(TracingError, match=r"numpy array of shape \(1, 3, 8, 8\).*torch\.from_numpy"):
        trace(model, {"input": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(TracingError) as info:  # a failure with tensors gets no such hint
        trace(model, torch.zeros(1, 5, 8, 8))
    assert "numpy" not in str(info.value)


def test_tracing_a_wrapped_model_ignores_its_hooks(traced):
    from nncompress.quantization.spec import TargetPoint, TargetType

    model, example, graph = traced["resnet"]
    wrapped = wrap_model(copy.deepcopy(model), graph)
    wrapped.nncf.insert(TargetPoint(TargetType.OUTPUT, "ResNet/Linear[fc]/linear_0"), M.ScaleHook())
    again = trace(wrapped, example)
    assert [n.name for n in again.nodes] == [n.name for n in graph.nodes]
    assert all(not w.name.startswith("_nncf") for n in again.nodes for w in n.weights.values())
