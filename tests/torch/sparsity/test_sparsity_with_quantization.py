"""Sparsity combined with quantization: masks before quantizers, exports that carry the zeros."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from qat_digits import DigitsCNN, loader, train

from nncompress import NNCFConfig
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.torch import create_compressed_model, register_default_init_args
from nncompress.torch.quantizers import BaseQuantizer
from nncompress.torch.sparsity.masks import SparsityMask

SPARSITY = {
    "algorithm": "magnitude_sparsity",
    "sparsity_init": 0.5,
    "params": {"schedule": "multistep", "multistep_steps": [1], "multistep_sparsity_levels": [0.5, 0.6]},
}
QUANTIZATION = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 128}}}


def build(state, data, sections):
    x_tr, y_tr, _, _ = data
    model = DigitsCNN()
    model.load_state_dict(state)
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": sections})
    register_default_init_args(config, loader(x_tr, y_tr, batch_size=64))
    return create_compressed_model(model, config)


@pytest.mark.parametrize("order", ["sparsity_first", "quantization_first"])
def test_masks_run_before_weight_quantizers(digits_state, digits_data, order):
    sections = [SPARSITY, QUANTIZATION] if order == "sparsity_first" else [QUANTIZATION, SPARSITY]
    ctrl, model = build(digits_state, digits_data, sections)
    names = [c.algorithm_name for c in ctrl.child_ctrls]
    assert names == ["magnitude_sparsity", "quantization"]  # builder priority, not config order
    target = TargetPoint(TargetType.WEIGHT, "DigitsCNN/Conv2d[conv2]/conv2d_0", 1)
    hooks = model.nncf.hook_manager.hooks_at(target)
    assert len(hooks) == 2 and isinstance(hooks[0], SparsityMask) and isinstance(hooks[1], BaseQuantizer)
    stats = ctrl.statistics()
    assert stats.magnitude_sparsity.current_sparsity_level == 0.5 and stats.quantization is not None
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()
    assert ctrl.child_ctrls[0].compression_rate == pytest.approx(0.6)


def test_export_carries_zeros_and_matches_torch(digits_state, digits_data, tmp_path: Path):
    onnx = pytest.importorskip("onnx")
    from nncompress.torch.export import run_onnxruntime, run_openvino

    x_tr, y_tr, x_te, _ = digits_data
    ctrl, model = build(digits_state, digits_data, [QUANTIZATION, SPARSITY])
    train(model, x_tr[:512], y_tr[:512], epochs=2, lr=1e-3, ctrl=ctrl)
    sparsity = ctrl.child_ctrls[0]
    assert sparsity.compression_rate == pytest.approx(0.6)
    model.eval()
    with torch.no_grad():
        ref = model(x_te).numpy()
    step = float(np.abs(ref).max()) / 127

    onnx_path = ctrl.export_model(tmp_path / "sparse_int8.onnx")
    graph = onnx.load(str(onnx_path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    weights = {tuple(i.dims): onnx.numpy_helper.to_array(i) for i in graph.initializer if len(i.dims) > 1}
    total = zeros = 0
    for shape in [(16, 1, 3, 3), (32, 16, 3, 3), (10, 512)]:
        w = weights[shape]
        total += w.size
        zeros += int((w == 0).sum())
    assert abs(zeros - 0.6 * total) <= 2, (zeros, total)  # the zeros are in the exported weights
    (got,) = run_onnxruntime(onnx_path, x_te.numpy())
    assert np.abs(got - ref).max() < 4 * step

    xml = ctrl.export_model(tmp_path / "sparse_int8.xml")
    assert "FakeQuantize" in Path(xml).read_text()
    (ir_out,) = run_openvino(xml, x_te.numpy())
    assert np.abs(ir_out - ref).max() < 4 * step
    # the training model still has its masks and quantizers
    assert any(isinstance(h, SparsityMask) for _, h in model.nncf.hook_manager.items())


def test_sparsity_alone_exports_float_model_with_zeros(digits_state, digits_data, tmp_path: Path):
    onnx = pytest.importorskip("onnx")
    from nncompress.torch.export import run_onnxruntime

    _, _, x_te, _ = digits_data
    ctrl, model = build(digits_state, digits_data, SPARSITY)
    path = ctrl.export_model(tmp_path / "sparse.onnx")
    graph = onnx.load(str(path)).graph
    assert "Mul" not in {n.op_type for n in graph.node}  # masks were multiplied in, not exported as ops
    fc = next(onnx.numpy_helper.to_array(i) for i in graph.initializer if tuple(i.dims) == (10, 512))
    assert (fc == 0).sum() > 0
    with torch.no_grad():
        ref = model.eval()(x_te).numpy()
    (got,) = run_onnxruntime(path, x_te.numpy())
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_combined_checkpoint_resume(digits_state, digits_data):
    import copy

    x_tr, y_tr, x_te, _ = digits_data
    sections = [QUANTIZATION, {**SPARSITY, "algorithm": "rb_sparsity"}]
    ctrl, model = build(digits_state, digits_data, sections)
    train(model, x_tr[:256], y_tr[:256], epochs=1, lr=1e-3, ctrl=ctrl)
    state = copy.deepcopy(ctrl.get_compression_state())
    weights = copy.deepcopy(model.state_dict())
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": sections})
    ctrl2, model2 = create_compressed_model(DigitsCNN(seed=7), config, compression_state=state)
    model2.load_state_dict(weights)
    with torch.no_grad():
        assert torch.equal(model2.eval()(x_te), model.eval()(x_te))
    assert ctrl2.scheduler.current_epoch == ctrl.scheduler.current_epoch == 0
    assert ctrl2.child_ctrls[0].compression_rate == ctrl.child_ctrls[0].compression_rate == 0.5
