"""Issue 7 algorithms combined in one config on the digits CNN: distillation + magnitude sparsity +
quantization (trained, exported with the zeros), RB sparsity + quantization optimizer groups with
``compression_lr_multiplier``, and filter pruning + magnitude sparsity (channels removed, zeros
kept)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from examples.data import digits_tensors, train_digits_model  # noqa: E402
from examples.models import DigitsCNN  # noqa: E402
from nncompress import NNCFConfig  # noqa: E402
from nncompress.torch import create_compressed_model, register_default_init_args  # noqa: E402
from nncompress.torch.optim import compression_modules, get_parameter_groups  # noqa: E402
from nncompress.torch.sparsity.masks import RBMask  # noqa: E402

QUANTIZATION = {
    "algorithm": "quantization",
    "initializer": {
        "range": {"num_init_samples": 64},
        "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
    },
}
MAGNITUDE = {
    "algorithm": "magnitude_sparsity",
    "sparsity_init": 0.5,
    "params": {"schedule": "multistep", "multistep_steps": [1], "multistep_sparsity_levels": [0.5, 0.6]},
}
KD = {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2.0}
WEIGHT_SHAPES = [(8, 1, 3, 3), (16, 8, 3, 3), (32, 16, 3, 3), (10, 32)]  # DigitsCNN(width=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    x_tr, y_tr, x_te, y_te = digits_tensors(0)
    return x_tr[:512], y_tr[:512], x_te[:128]


@pytest.fixture(scope="module")
def trained_state(data):
    x, y, _ = data
    torch.manual_seed(0)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    model = train_digits_model(DigitsCNN(width=8), epochs=3, train_loader=loader)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _build(trained_state, data, sections, **top):
    x, y, _ = data
    model = DigitsCNN(width=8)
    model.load_state_dict(trained_state)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": sections, **top}
    )
    register_default_init_args(config, DataLoader(TensorDataset(x, y), batch_size=32))
    ctrl, cmodel = create_compressed_model(model, config, dump_graphs=False)
    return ctrl, cmodel


def _child(ctrl, name):
    return next(c for c in ctrl.child_ctrls if c.algorithm_name == name)


def _train(model, ctrl, data, steps, optimizer):
    x, y, _ = data
    model.train()
    losses = []
    for i in range(steps):
        xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
        ctrl.scheduler.step()
        optimizer.zero_grad()
        task_loss = F.cross_entropy(model(xb), yb)
        compression_loss = ctrl.loss()  # after the forward: distillation compares its outputs
        (task_loss + compression_loss).backward()
        optimizer.step()
        losses.append(float(compression_loss.detach()))
    return losses


def test_distillation_sparsity_quantization_train_and_export_the_zeros(trained_state, data, tmp_path):
    onnx = pytest.importorskip("onnx")
    from nncompress.torch.export import run_onnxruntime

    ctrl, model = _build(trained_state, data, [KD, MAGNITUDE, QUANTIZATION])
    assert sorted(c.algorithm_name for c in ctrl.child_ctrls) == [
        "knowledge_distillation",
        "magnitude_sparsity",
        "quantization",
    ]
    sparsity = _child(ctrl, "magnitude_sparsity")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctrl.scheduler.epoch_step()
    losses = _train(model, ctrl, data, 6, torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9))
    # the distillation term is the only compression loss here: the quantized, sparse student
    # differs from its float teacher, so it is positive (and finite)
    assert all(np.isfinite(losses)) and max(losses) > 0
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    ctrl.scheduler.epoch_step()  # epoch 1: level 0.6, masks recomputed from the trained weights
    assert sparsity.compression_rate == pytest.approx(0.6)
    assert sparsity.reached_sparsity == pytest.approx(0.6, abs=1e-3)
    stats = ctrl.statistics()
    assert stats.magnitude_sparsity.model_statistics.sparsity_level_for_layers == pytest.approx(0.6, abs=1e-3)
    assert stats.quantization is not None

    _, _, x_te = data
    model.eval()
    with torch.no_grad():
        ref = model(x_te).numpy()
    path = ctrl.export_model(tmp_path / "kd_sparse_int8.onnx")
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops)
    assert ops.count("Conv") == 3  # the student only: no teacher in the export
    weights = {tuple(i.dims): onnx.numpy_helper.to_array(i) for i in graph.initializer if len(i.dims) > 1}
    assert sorted(weights) == sorted(WEIGHT_SHAPES)
    total = sum(w.size for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert abs(zeros - 0.6 * total) <= 0.002 * total, (zeros, total)  # the exported weights carry the zeros
    (got,) = run_onnxruntime(path, x_te.numpy())
    step = float(np.abs(ref).max()) / 127
    assert np.abs(got - ref).max() < 4 * step


def test_rb_sparsity_mask_logits_get_their_own_group_with_the_multiplier(trained_state, data):
    sections = [
        {"algorithm": "rb_sparsity", "sparsity_init": 0.3, "compression_lr_multiplier": 20.0},
        QUANTIZATION,
    ]
    ctrl, model = _build(trained_state, data, sections, compression_lr_multiplier=2.0)
    rb = _child(ctrl, "rb_sparsity")
    # the masks are marked as modules of rb_sparsity, so the helper finds them
    marked = compression_modules(model)
    assert {id(m) for m in marked["rb_sparsity"]} == {id(m) for m in rb.masks}
    assert all(isinstance(m, RBMask) for m in rb.masks)

    groups = {g["name"]: g for g in get_parameter_groups(ctrl, 0.01)}
    assert set(groups) == {"model", "quantization", "rb_sparsity"}
    assert (
        groups["rb_sparsity"]["lr"] == pytest.approx(0.2) and groups["rb_sparsity"]["lr_multiplier"] == 20.0
    )
    assert groups["quantization"]["lr"] == pytest.approx(0.02)  # the top-level value
    assert groups["model"]["lr"] == pytest.approx(0.01)
    logits = {id(m.mask) for m in rb.masks}
    assert {id(p) for p in groups["rb_sparsity"]["params"]} == logits
    assert not logits & {id(p) for p in groups["model"]["params"] + groups["quantization"]["params"]}
    in_groups = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())  # each parameter once

    # Adam moves every parameter by about its group's lr on the first step
    weight = model.get_parameter("classifier.weight")
    before_w, before_m = weight.detach().clone(), rb.masks[-1].mask.detach().clone()
    _train(model, ctrl, data, 1, torch.optim.Adam(list(groups.values()), lr=0.01))
    moved_w = (weight.detach() - before_w).abs().max().item()
    moved_m = (rb.masks[-1].mask.detach() - before_m).abs().max().item()
    assert moved_w == pytest.approx(0.01, rel=0.05)
    assert moved_m == pytest.approx(0.2, rel=0.05)


def test_filter_pruning_with_magnitude_sparsity(trained_state, data, tmp_path):
    onnx = pytest.importorskip("onnx")
    from nncompress.torch.export import run_onnxruntime

    pruning = {
        "algorithm": "filter_pruning",
        "pruning_init": 0.5,
        "params": {"schedule": "baseline", "pruning_target": 0.5, "pruning_steps": 1},
    }
    ctrl, model = _build(trained_state, data, [pruning, MAGNITUDE])
    assert sorted(c.algorithm_name for c in ctrl.child_ctrls) == ["filter_pruning", "magnitude_sparsity"]
    dense = sum(p.numel() for p in DigitsCNN(width=8).parameters())
    ctrl.scheduler.epoch_step()
    _train(model, ctrl, data, 4, torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9))
    ctrl.scheduler.epoch_step()
    assert _child(ctrl, "filter_pruning").pruning_level == pytest.approx(0.5)
    assert _child(ctrl, "magnitude_sparsity").reached_sparsity == pytest.approx(0.6, abs=1e-3)

    _, _, x_te = data
    model.eval()
    with torch.no_grad():
        ref = model(x_te)
    stripped = ctrl.strip(do_copy=True)
    assert type(stripped) is DigitsCNN  # a plain model: pruning and sparsity hooks both removed
    assert sum(p.numel() for p in stripped.parameters()) < 0.5 * dense  # channels removed
    with torch.no_grad():
        torch.testing.assert_close(stripped.eval()(x_te), ref, atol=1e-5, rtol=1e-5)
    # the smaller weights still carry the magnitude zeros (pruned filters are gone, not counted)
    convs = [p for n, p in stripped.named_parameters() if p.dim() > 1]
    zeros = sum(int((p == 0).sum()) for p in convs) / sum(p.numel() for p in convs)
    assert zeros > 0.3

    path = ctrl.export_model(tmp_path / "pruned_sparse.onnx")
    graph = onnx.load(str(path)).graph
    exported = [onnx.numpy_helper.to_array(i) for i in graph.initializer if len(i.dims) > 1]
    assert sorted(w.shape for w in exported) == sorted(tuple(p.shape) for p in convs)
    assert sum(int((w == 0).sum()) for w in exported) == sum(int((p == 0).sum()) for p in convs)
    (got,) = run_onnxruntime(path, x_te.numpy())
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)
