"""Hooks at graph positions in the real forward, and the wrapped model that carries them."""

from __future__ import annotations

import copy
import importlib.util
import io
import pathlib
import pickle
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_mod

from nncompress.graph import op_kinds as K
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.torch.hooks import HookManager, hook_key
from nncompress.torch.nncf_network import NNCFNetwork, unwrap_model, wrap_model
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

OUT, IN, W = TargetType.OUTPUT, TargetType.INPUT, TargetType.WEIGHT
FC = "ResNet/Linear[fc]/linear_0"
CONV1 = "ResNet/Conv2d[conv1]/conv2d_0"


def _wrapped(name: str = "resnet"):
    model = M.build(name)
    example = model.make_input()
    graph = trace(model, example)
    return model, example, wrap_model(copy.deepcopy(model), graph)


@pytest.fixture
def resnet():
    return _wrapped("resnet")


def _clean_global_state() -> bool:
    return (
        torch._C._len_torch_function_stack() == 0
        and not module_mod._global_forward_hooks
        and not module_mod._global_forward_pre_hooks
    )


# ---------------------------------------------------------------------------------------------
# hooks change the forward where they should
# ---------------------------------------------------------------------------------------------


def test_wrapped_model_without_hooks_is_the_model(resnet):
    model, x, wrapped = resnet
    assert isinstance(wrapped, M.ResNet) and isinstance(wrapped, NNCFNetwork)
    assert type(wrapped).__name__ == "ResNet" and type(wrapped) is not M.ResNet
    assert torch.equal(wrapped(x), model(x))
    assert wrapped.layer1 is wrapped.get_submodule("layer1")  # attributes work
    assert wrapped.nncf.graph is wrapped._nncf.graph and FC in wrapped.nncf.graph


def test_output_input_and_weight_hooks(resnet):
    model, x, wrapped = resnet
    ref = model(x)
    wrapped.nncf.insert(TargetPoint(OUT, FC), lambda t: t * 2)
    assert torch.allclose(wrapped(x), ref * 2)
    wrapped.nncf.remove_hooks()
    assert torch.equal(wrapped(x), ref)

    wrapped.nncf.insert(TargetPoint(IN, FC, 0), torch.zeros_like)
    assert torch.allclose(wrapped(x), model.fc.bias.expand_as(ref))
    wrapped.nncf.remove_hooks()

    wrapped.nncf.insert(TargetPoint(W, CONV1, 1), lambda w: -w)
    expected = copy.deepcopy(model)
    with torch.no_grad():
        expected.conv1.weight.neg_()
    assert torch.allclose(wrapped(x), expected(x), atol=1e-6)
    assert torch.equal(wrapped.conv1.weight, model.conv1.weight)  # the parameter itself is untouched
    assert _clean_global_state()


def test_hooks_run_in_registration_order_and_none_observes(resnet):
    model, x, wrapped = resnet
    seen = []
    target = TargetPoint(OUT, FC)
    wrapped.nncf.insert(target, lambda t: seen.append(t.clone()))  # returns None: observes only
    wrapped.nncf.insert(target, lambda t: t + 1)
    wrapped.nncf.insert(target, lambda t: t * 3)
    ref = model(x)
    assert torch.allclose(wrapped(x), (ref + 1) * 3)
    assert len(seen) == 1 and torch.allclose(seen[0], ref)
    manager = wrapped.nncf.hook_manager
    assert len(manager.hooks_at(target)) == 3
    first = M.ScaleHook(0.0)
    manager.add(target, first, first=True)  # runs before the others: (0 + 1) * 3
    assert torch.allclose(wrapped(x), torch.full_like(ref, 3.0))
    manager.remove(target, first)
    assert torch.allclose(wrapped(x), (ref + 1) * 3) and len(manager.hooks) == 0


def test_hooks_on_a_residual_add_and_a_relu_module_called_twice(resnet):
    model, x, wrapped = resnet
    block = "ResNet/Sequential[layer1]/BasicBlock[0]"
    seen = {}
    for name in (f"{block}/ReLU[relu]/relu__0", f"{block}/ReLU[relu]/relu__1", f"{block}/__iadd___0"):
        wrapped.nncf.insert(TargetPoint(OUT, name), lambda t, name=name: seen.setdefault(name, t.clone()))
    wrapped.nncf.insert(TargetPoint(IN, f"{block}/__iadd___0", 1), torch.zeros_like)  # drop the skip
    out = wrapped(x)
    assert set(seen) == {f"{block}/ReLU[relu]/relu__0", f"{block}/ReLU[relu]/relu__1", f"{block}/__iadd___0"}
    assert torch.equal(seen[f"{block}/ReLU[relu]/relu__1"], seen[f"{block}/__iadd___0"].relu())
    # the skip connection is gone: the block's output equals relu(bn2(conv2(...))) alone
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        b = model.layer1[0]
        no_skip = torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(h))))))
    assert torch.allclose(seen[f"{block}/ReLU[relu]/relu__1"], no_skip, atol=1e-6)
    assert not torch.allclose(out, model(x))


def test_second_call_of_a_shared_module_is_hooked_alone():
    model, x, wrapped = _wrapped("shared")
    wrapped.nncf.insert(TargetPoint(OUT, "SharedBlockNet/Linear[fc]/linear_1"), torch.zeros_like)
    out, y = wrapped(x)
    assert torch.equal(y, torch.zeros_like(y))  # relu(0)
    assert torch.allclose(out, model.head.bias.expand_as(out))


def test_hooks_inside_multihead_attention_and_on_model_inputs_and_outputs():
    model, ids, wrapped = _wrapped("transformer")
    mha = "Transformer/ModuleList[layers]/EncoderLayer[1]/MultiheadAttention[attn]"
    wrapped.nncf.insert(TargetPoint(W, f"{mha}/linear_1", 1), torch.zeros_like)  # out_proj weight
    expected = copy.deepcopy(model)
    with torch.no_grad():
        expected.layers[1].attn.out_proj.weight.zero_()
    assert torch.allclose(wrapped(ids), expected(ids), atol=1e-6)
    wrapped.nncf.remove_hooks()

    # the model input: OUTPUT port 0 of the input node; the model output: INPUT port 0 of the output node
    wrapped.nncf.insert(TargetPoint(OUT, "Transformer/nncf_model_input_0"), lambda t: (t + 1) % 50)
    wrapped.nncf.insert(TargetPoint(IN, "Transformer/nncf_model_output_0"), lambda t: -t)
    assert torch.allclose(wrapped(ids), -model((ids + 1) % 50))


def test_keyword_inputs_and_dict_outputs_are_hookable():
    model, example, wrapped = _wrapped("dict_io")
    ref = model(**example)
    wrapped.nncf.insert(TargetPoint(OUT, "DictIONet/nncf_model_input_1"), torch.zeros_like)  # 'extra'
    wrapped.nncf.insert(TargetPoint(OUT, "DictIONet/nncf_model_output_2"), lambda t: t * 0 + 7)  # aux[1]
    # keyword order of the call does not change which input is which
    out = wrapped(extra=example["extra"], image=example["image"])
    expected = model(image=example["image"], extra=torch.zeros_like(example["extra"]))
    assert torch.allclose(out["logits"], expected["logits"]) and not torch.allclose(
        out["logits"], ref["logits"]
    )
    assert torch.equal(out["aux"][1], torch.full_like(out["aux"][1], 7.0)) and out["count"] == 3


def test_hooks_get_gradients_and_train(resnet):
    model, x, wrapped = resnet
    scale = M.ScaleHook(0.5)
    wrapped.nncf.insert(TargetPoint(W, CONV1, 1), scale)
    wrapped.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(3.0))
    wrapped.train()
    loss = wrapped(model.make_input(batch=2)).square().mean()
    loss.backward()
    assert scale.scale.grad is not None and scale.scale.grad.abs() > 0
    assert wrapped.conv1.weight.grad is not None and wrapped.fc.weight.grad is not None
    params = dict(wrapped.named_parameters())
    assert "_nncf.hooks." + hook_key(TargetPoint(W, CONV1, 1)) + ".scale" in params
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    before = scale.scale.detach().clone()
    opt.step()
    assert not torch.equal(before, scale.scale.detach())


# ---------------------------------------------------------------------------------------------
# the wrapped model behaves as an nn.Module
# ---------------------------------------------------------------------------------------------


def test_state_dict_round_trip(resnet, tmp_path):
    model, x, wrapped = resnet
    wrapped.nncf.insert(TargetPoint(W, CONV1, 1), M.ScaleHook(1.5))
    wrapped.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(2.0))
    wrapped.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(0.25))  # a second hook on one point
    wrapped.nncf.insert(TargetPoint(OUT, FC), lambda t: None)  # plain callables are not saved
    keys = [k for k in wrapped.state_dict() if k.startswith("_nncf.")]
    assert keys == [
        "_nncf.hooks.ResNet/Conv2d[conv1]/conv2d_0|weight1.scale",
        "_nncf.hooks.ResNet/Linear[fc]/linear_0|output0.scale",
        "_nncf.hooks.ResNet/Linear[fc]/linear_0|output0|1.scale",
    ]
    path = tmp_path / "model.pt"
    torch.save(wrapped.state_dict(), path)

    _, _, fresh = _wrapped("resnet")
    fresh.nncf.insert(TargetPoint(W, CONV1, 1), M.ScaleHook(1.0))
    fresh.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(1.0))
    fresh.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(1.0))
    fresh.load_state_dict(torch.load(path))
    assert torch.allclose(fresh(x), wrapped(x))
    plain_keys = set(model.state_dict())
    assert set(wrapped.state_dict()) - set(keys) == plain_keys


def test_deepcopy_pickle_train_eval_and_to(resnet):
    model, x, wrapped = resnet
    wrapped.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(2.0))
    ref = wrapped(x)

    dup = copy.deepcopy(wrapped)
    assert type(dup) is type(wrapped) and isinstance(dup, M.ResNet) and isinstance(dup, NNCFNetwork)
    assert torch.allclose(dup(x), ref)
    with torch.no_grad():
        dup._nncf.hooks[hook_key(TargetPoint(OUT, FC))].scale.fill_(4.0)
    assert torch.allclose(dup(x), ref * 2) and torch.allclose(wrapped(x), ref)  # independent copies
    assert dup.nncf.graph is not wrapped.nncf.graph and [n.name for n in dup.nncf.graph] == [
        n.name for n in wrapped.nncf.graph
    ]

    loaded = pickle.loads(pickle.dumps(wrapped))
    assert type(loaded) is type(wrapped) and torch.allclose(loaded(x), ref)
    buffer = io.BytesIO()
    torch.save(wrapped, buffer)
    buffer.seek(0)
    assert torch.allclose(torch.load(buffer, weights_only=False)(x), ref)

    assert wrapped.train() is wrapped and wrapped._nncf.training and wrapped.training
    wrapped.eval()
    assert not any(m.training for m in wrapped.modules())
    wrapped.to(torch.float64)
    hook = wrapped._nncf.hooks[hook_key(TargetPoint(OUT, FC))]
    assert hook.scale.dtype == torch.float64
    assert torch.allclose(wrapped(x.double()), ref.double(), atol=1e-5)


def test_original_model_and_strip(resnet):
    model, x, wrapped = resnet
    wrapped.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(2.0))
    original = wrapped.nncf.get_original_model()
    assert type(original) is M.ResNet and "_nncf" not in original._modules
    assert set(original.state_dict()) == set(model.state_dict())
    assert torch.allclose(original(x), model(x))
    assert original.fc.weight is not wrapped.fc.weight  # a copy
    assert torch.allclose(wrapped(x), model(x) * 2)  # the wrapped model keeps its hooks
    stripped = wrapped.nncf.strip_hooks(inplace=True)
    assert stripped is wrapped and type(wrapped) is M.ResNet and "_nncf" not in wrapped._modules
    assert torch.allclose(wrapped(x), model(x))


def test_wrapping_a_sequential_and_an_instance_forward():
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    ref = seq(x)
    wrapped = wrap_model(seq, trace(seq, x))
    assert torch.allclose(wrapped(x), ref)  # our child is not run as a layer
    assert "_nncf" in dict(wrapped.named_children())
    wrapped.nncf.insert(TargetPoint(OUT, "Sequential/Linear[2]/linear_0"), lambda t: t + 1)
    assert torch.allclose(wrapped(x), ref + 1)

    net = M.SharedBlockNet()
    net.forward = lambda x: net.head(x)  # a forward set on the instance
    graph = trace(net, x.new_ones(3, 8))
    assert [n.name for n in graph.nodes if n.kind == K.MATMUL] == ["SharedBlockNet/Linear[head]/linear_0"]
    wrapped = wrap_model(net, graph)
    wrapped.nncf.insert(TargetPoint(OUT, "SharedBlockNet/Linear[head]/linear_0"), torch.zeros_like)
    assert torch.equal(wrapped(torch.ones(3, 8)), torch.zeros(3, 2))


def test_errors_in_a_hooked_forward_leave_nothing_behind(resnet):
    _, x, wrapped = resnet

    def boom(t):
        raise RuntimeError("hook failed")

    wrapped.nncf.insert(TargetPoint(OUT, FC), boom)
    with pytest.raises(RuntimeError, match="hook failed"):
        wrapped(x)
    assert _clean_global_state() and "_nncf" in wrapped._modules
    with pytest.raises(TypeError):
        wrap_model(wrapped, wrapped.nncf.graph)
    with pytest.raises(TypeError):
        HookManager().add("not a target", torch.relu)


def test_a_hook_manager_runs_a_plain_model():
    model = M.build("senet")
    x = model.make_input()
    manager = HookManager()
    shapes = []
    manager.add(
        TargetPoint(OUT, "SENet/SqueezeExcitation[se]/Sigmoid[gate]/sigmoid_0"),
        lambda t: shapes.append(t.shape),
    )
    manager.add(TargetPoint(OUT, "SENet/Linear[fc]/linear_0"), M.ScaleHook(-1.0))
    assert torch.allclose(manager.run(model, model, (x,), {}), -model(x))
    assert shapes == [torch.Size([1, 16, 1, 1])] and len(manager) == 2
    assert not model._forward_hooks and _clean_global_state()


def test_unwrap_plain_model_is_a_copy():
    model = M.SharedBlockNet()
    copy_ = unwrap_model(model)
    assert type(copy_) is M.SharedBlockNet and copy_ is not model


# ---------------------------------------------------------------------------------------------
# export: hook ops end up in traced and converted graphs
# ---------------------------------------------------------------------------------------------


def _doubling_model():
    model, x, wrapped = _wrapped("resnet")
    wrapped.nncf.insert(TargetPoint(OUT, FC), M.ScaleHook(2.0))
    wrapped.nncf.insert(TargetPoint(W, CONV1, 1), M.ScaleHook(1.0))
    wrapped.eval()
    with torch.no_grad():
        expected = model(x) * 2
    return wrapped, x, expected


def test_torch_jit_trace_keeps_hooks():
    wrapped, x, expected = _doubling_model()
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, x)
    assert torch.allclose(traced(x), expected, atol=1e-5)
    assert torch.allclose(traced(x * 0.5), wrapped(x * 0.5), atol=1e-5)  # a graph, not a constant
    assert _clean_global_state()


def test_openvino_convert_model_keeps_hooks():
    ov = pytest.importorskip("openvino")
    wrapped, x, expected = _doubling_model()
    ov_model = ov.convert_model(wrapped, example_input=x)
    compiled = ov.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(x.numpy())[0]
    np.testing.assert_allclose(result, expected.numpy(), atol=1e-4)
    assert _clean_global_state()


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_onnx_export_keeps_hooks():
    ort = pytest.importorskip("onnxruntime")
    wrapped, x, expected = _doubling_model()
    buffer = io.BytesIO()
    torch.onnx.export(wrapped, (x,), buffer, dynamo=False, input_names=["x"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected.numpy(), atol=1e-4)


def test_train_only_buffer_updates_do_not_shift_names():
    class Tracker(nn.Module):
        """Counts training steps in a buffer with += in its own scope, next to a real +=."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("steps", torch.zeros(()))

        def forward(self, x):
            if self.training:
                self.steps += 1
            y = self.fc(x)
            y += x
            return y

    model = Tracker().eval()
    x = torch.randn(2, 4)
    graph = trace(model, x)
    assert "Tracker/__iadd___0" in graph and "Tracker/__iadd___1" not in graph
    wrapped = wrap_model(copy.deepcopy(model), graph)
    wrapped.nncf.insert(TargetPoint(OUT, "Tracker/__iadd___0"), torch.zeros_like)
    wrapped.train()
    assert torch.equal(wrapped(x), torch.zeros(2, 4)) and wrapped.steps == 1


def test_the_interface_is_reachable_from_a_hook_during_forward(resnet):
    _, x, wrapped = resnet
    seen = []
    wrapped.nncf.insert(TargetPoint(OUT, FC), lambda t: seen.append(len(wrapped.nncf.graph)))
    wrapped(x)
    assert seen == [len(wrapped.nncf.graph)] and "_nncf" in wrapped._modules


class _PoolEnd(nn.Module):
    """Ends in a root-scope ``mean``: an op a user's hook could take the name of."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


def test_torch_ops_in_a_users_forward_hook_are_not_model_ops():
    """PyTorch runs a module's own forward hooks after the scope of the module is left: the
    ``mean`` in a feature hook used to take the name (and the hooks) of the model's ``mean_0``."""
    model = _PoolEnd().eval()
    x = torch.randn(2, 3, 8, 8)
    wrapped = wrap_model(copy.deepcopy(model), trace(model, x))
    mean_op = next(n.name for n in wrapped.nncf.graph.nodes if n.name.endswith("/mean_0"))
    wrapped.nncf.hook_manager.add(TargetPoint(TargetType.OUTPUT, mean_op, 0), lambda t: t * 2)
    with torch.no_grad():
        expected = wrapped(x)
        features = []
        handle = wrapped.bn.register_forward_hook(lambda m, i, out: features.append(out.mean(dim=(0, 2, 3))))
        got = wrapped(x)
        handle.remove()
        torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the model's mean still hooked
        torch.testing.assert_close(got, 2 * model(x))
        torch.testing.assert_close(features[0], model.bn(model.conv(x)).mean(dim=(0, 2, 3)))  # not doubled


def test_tracing_ignores_torch_ops_in_a_users_forward_hook():
    model = _PoolEnd().eval()
    x = torch.randn(1, 3, 8, 8)
    plain = [n.name for n in trace(model, x).nodes]
    seen = []
    handle = model.bn.register_forward_hook(lambda m, i, out: seen.append(out.sum() * 0 + out.mean()))
    try:
        hooked = [n.name for n in trace(model, x).nodes]
    finally:
        handle.remove()
    assert hooked == plain and len(seen) == 1
