"""Knowledge distillation combined with quantization and filter pruning; state, copies, export."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nncompress import NNCFConfig
from nncompress.errors import CompressionStateError
from nncompress.torch import create_compressed_model, register_default_init_args
from nncompress.torch.knowledge_distillation.loss import DistillationHook

KD = {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2.0}
QUANT = {
    "algorithm": "quantization",
    "initializer": {
        "range": {"num_init_samples": 64},
        "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
    },
}
PRUNE = {
    "algorithm": "filter_pruning",
    "pruning_init": 0.5,
    "params": {"schedule": "baseline", "pruning_target": 0.5, "pruning_steps": 1},
}


@pytest.fixture(scope="module")
def trained_state(digits_net, digits):
    """A DigitsNet trained in float for one short epoch (so outputs are meaningful)."""
    x, y = digits
    model = digits_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(0, 512, 64):
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _make(digits_net, state, sections, digits, compression_state=None):
    model = digits_net()
    model.load_state_dict(state)
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": sections})
    x, y = digits
    register_default_init_args(config, DataLoader(TensorDataset(x, y), batch_size=32))
    return create_compressed_model(model, config, compression_state=compression_state, dump_graphs=False)


def _child(ctrl, name):
    return next(c for c in ctrl.child_ctrls if c.name == name)


def _steps(model, ctrl, digits, n=4, lr=0.05):
    x, y = digits
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    kd_values = []
    for i in range(n):
        xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
        ctrl.scheduler.step()
        opt.zero_grad()
        task = F.cross_entropy(model(xb), yb)
        kd = ctrl.loss()
        (task + kd).backward()
        opt.step()
        kd_values.append(float(kd.detach()))
    return kd_values


def test_quantization_with_distillation_trains(digits_net, trained_state, digits):
    ctrl, model = _make(digits_net, trained_state, [QUANT, KD], digits)
    kd_ctrl = _child(ctrl, "knowledge_distillation")
    teacher_before = {k: v.clone() for k, v in kd_ctrl.teacher.state_dict().items()}
    # the teacher has no quantizer: it is the float model
    assert not any("quantiz" in type(m).__name__.lower() for m in kd_ctrl.teacher.modules())
    values = _steps(model, ctrl, digits)
    assert all(math.isfinite(v) and v > 0 for v in values)
    # with QAT the student differs from the float teacher: the loss is above the teacher's entropy
    x = digits[0][:32]
    model(x)
    with torch.no_grad():
        p = F.softmax(kd_ctrl.teacher(x) / 2.0, dim=1)
        entropy = 4.0 * float(-(p * p.log()).sum(1).mean())
    assert ctrl.loss().item() > entropy
    # the composite loss is the sum of the children's (quantization adds 0)
    assert ctrl.loss().item() == pytest.approx(
        kd_ctrl.loss().item() + _child(ctrl, "quantization").loss().item()
    )
    for k, v in kd_ctrl.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_state_dict_and_export_hold_no_teacher(digits_net, trained_state, digits, tmp_path):
    import onnx

    ctrl, model = _make(digits_net, trained_state, [QUANT, KD], digits)
    ref_ctrl, ref_model = _make(digits_net, trained_state, [QUANT], digits)
    assert list(model.state_dict()) == list(ref_model.state_dict())
    assert len(list(model.parameters())) == len(list(ref_model.parameters()))
    paths = [c.export_model(tmp_path / f"{name}.onnx") for c, name in ((ctrl, "kd"), (ref_ctrl, "ref"))]
    inits = [sorted((i.name, tuple(i.dims)) for i in onnx.load(str(p)).graph.initializer) for p in paths]
    assert inits[0] == inits[1]
    stripped = ctrl.strip()
    assert not any(isinstance(h, DistillationHook) for h in stripped._forward_hooks.values())
    assert any(isinstance(h, DistillationHook) for h in model._forward_hooks.values())  # a copy was stripped


def test_filter_pruning_with_distillation(digits_net, trained_state, digits):
    ctrl, model = _make(digits_net, trained_state, [PRUNE, {**KD, "type": "mse"}], digits)
    kd_ctrl = _child(ctrl, "knowledge_distillation")
    assert [c.name for c in ctrl.child_ctrls] == ["knowledge_distillation", "filter_pruning"]
    assert kd_ctrl.teacher.conv2.out_channels == 16
    values = _steps(model, ctrl, digits, n=3)
    assert all(math.isfinite(v) and v > 0 for v in values)  # half the filters are masked
    calls = [0]
    kd_ctrl.teacher.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    stripped = ctrl.strip()
    assert stripped.conv2.out_channels < 16  # channels really removed (the first conv is kept)
    stripped.train()
    stripped(digits[0][:8])
    assert calls[0] == 0  # the stripped model does not run the teacher
    model(digits[0][:8])
    assert calls[0] == 1


def test_resume_from_compression_state(digits_net, trained_state, digits):
    ctrl, model = _make(digits_net, trained_state, [QUANT, KD], digits)
    _steps(model, ctrl, digits, n=2)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    state = ctrl.get_compression_state()
    assert state["builder_state"]["knowledge_distillation"] == {"version": 1}

    ctrl2, model2 = _make(digits_net, trained_state, [QUANT, KD], digits, compression_state=state)
    model2.load_state_dict(saved)
    x = digits[0][100:140]
    model.train()
    model2.train()
    out, out2 = model(x), model2(x)
    assert torch.allclose(out, out2, atol=1e-6)
    assert ctrl2.loss().item() == pytest.approx(ctrl.loss().item(), rel=1e-6)
    assert ctrl2.loss().item() > 0

    bad = copy.deepcopy(state)
    bad["builder_state"]["knowledge_distillation"] = {"version": 99}
    with pytest.raises(CompressionStateError, match="knowledge_distillation: builder state version 99"):
        _make(digits_net, trained_state, [QUANT, KD], digits, compression_state=bad)


def test_copies_of_the_model_do_not_distill(digits_net, trained_state, digits):
    ctrl, model = _make(digits_net, trained_state, [{**KD, "type": "mse"}], digits)
    with torch.no_grad():
        model.fc.weight.mul_(1.5)
    calls = [0]
    ctrl.teacher.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    twin = copy.deepcopy(model)
    twin.train()
    twin(digits[0][:8])
    assert calls[0] == 0 and ctrl.loss().item() == 0.0
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in model.parameters())
    # pickling (torch.save(model)) does not take the teacher along either
    blob = pickle.dumps(model)
    ref_blob = pickle.dumps(_make(digits_net, trained_state, [], digits)[1])
    assert len(blob) < 1.2 * len(ref_blob)
    restored = pickle.loads(blob)
    restored.train()
    restored(digits[0][:8])
    assert calls[0] == 0


def test_data_parallel_wrapper(digits_net, trained_state, digits):
    """``DataParallel`` around the compressed model: the hook runs for the wrapped call (on CPU
    the wrapper calls the model directly; replicas on several GPUs get per-device teachers)."""
    ctrl, model = _make(digits_net, trained_state, [{**KD, "type": "mse"}], digits)
    with torch.no_grad():
        model.fc.bias.add_(0.5)
    dp = nn.DataParallel(model)
    dp.train()
    x = digits[0][:16]
    out = dp(x)
    with torch.no_grad():
        expected = F.mse_loss(out, ctrl.teacher(x))
    assert ctrl.loss().item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_moved_to_gpu_gets_a_teacher_there(digits_net, trained_state, digits):
    ctrl, model = _make(digits_net, trained_state, [QUANT, KD], digits)
    kd_ctrl = _child(ctrl, "knowledge_distillation")
    model.cuda().train()
    out = model(digits[0][:16].cuda())
    loss = ctrl.loss()
    assert loss.device.type == "cuda" and math.isfinite(float(loss))
    teacher = kd_ctrl.loss.teacher_on(out.device)
    assert next(teacher.parameters()).device.type == "cuda"
    assert next(kd_ctrl.teacher.parameters()).device.type == "cpu"  # the original stays
    loss.backward()
