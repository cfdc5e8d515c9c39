"""Quantization-aware training on scikit-learn digits: gradients, accuracy, deployed INT8 model."""

from __future__ import annotations

import copy

import numpy as np
import torch
from qat_digits import DigitsCNN, evaluate, loader, qat_config, train

from nncompress import NNCFConfig
from nncompress.torch import create_compressed_model, register_default_init_args
from nncompress.torch.quantizers import SymmetricQuantizer


def _compressed(fp32_state, digits, root=None, **quantization):
    x_tr, y_tr, _, _ = digits
    model = DigitsCNN()
    model.load_state_dict(fp32_state)
    config = NNCFConfig.from_dict({**qat_config(**quantization), **(root or {})})
    register_default_init_args(config, loader(x_tr, y_tr, batch_size=64, shuffle=True))
    return create_compressed_model(model, config)


def test_qat_trains_quantizer_scales_and_lowers_the_loss(fp32_digits_state, digits):
    x_tr, y_tr, _, _ = digits
    # 4-bit weights and activations (TRIAL device): quantization noise that training has to absorb
    ctrl, model = _compressed(
        fp32_digits_state, digits, {"target_device": "TRIAL"}, weights={"bits": 4}, activations={"bits": 4}
    )
    scales = {qid: q.scale.detach().clone() for qid, q in ctrl.all_quantizations.items()}
    _, loss_before = evaluate(model, x_tr, y_tr)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    train(model, x_tr, y_tr, epochs=2, optimizer=optimizer, ctrl=ctrl)
    _, loss_after = evaluate(model, x_tr, y_tr)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    changed = [
        qid for qid, q in ctrl.all_quantizations.items() if not torch.equal(q.scale.detach(), scales[qid])
    ]
    assert len(changed) == len(scales), f"scales not trained: {set(scales) - set(changed)}"
    assert ctrl.scheduler.current_epoch == 1 and ctrl.scheduler.current_step > 0


def test_short_qat_is_close_to_fp32_and_deploys_to_openvino_int8(fp32_digits_state, digits, tmp_path):
    from nncompress.torch.export import compile_openvino, int8_summary, run_onnxruntime, run_openvino

    x_tr, y_tr, x_te, y_te = digits
    fp32 = DigitsCNN()
    fp32.load_state_dict(fp32_digits_state)
    fp32_acc, _ = evaluate(fp32, x_te, y_te)
    assert fp32_acc > 0.93

    ctrl, model = _compressed(fp32_digits_state, digits)
    assert all(isinstance(q, SymmetricQuantizer) for q in ctrl.all_quantizations.values())
    train(model, x_tr, y_tr, epochs=1, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), ctrl=ctrl)
    qat_acc, _ = evaluate(model, x_te, y_te)
    assert qat_acc >= fp32_acc - 0.02, (fp32_acc, qat_acc)

    with torch.no_grad():
        torch_pred = model(x_te).argmax(1).numpy()
    xml = ctrl.export_model(tmp_path / "digits.xml")
    compiled = compile_openvino(xml)
    (logits,) = run_openvino(compiled, x_te.numpy())
    ov_pred = logits.argmax(1)
    assert abs(float(np.mean(ov_pred == y_te.numpy())) - qat_acc) <= 1 / len(y_te) + 1e-9
    assert int(np.sum(ov_pred != torch_pred)) <= 1
    summary = int8_summary(compiled)
    assert summary.total == 3 and summary.int8 == summary.total, str(summary)

    onnx_path = ctrl.export_model(tmp_path / "digits.onnx")
    (onnx_logits,) = run_onnxruntime(onnx_path, x_te.numpy())
    assert int(np.sum(onnx_logits.argmax(1) != torch_pred)) <= 1

    # the stripped model computes what was exported
    stripped = ctrl.strip()
    with torch.no_grad():
        assert np.array_equal(stripped.eval()(x_te).argmax(1).numpy(), torch_pred)
    assert copy.deepcopy(model) is not model


def test_asymmetric_qat_matches_exported_model(fp32_digits_state, digits, tmp_path):
    from nncompress.torch.export import run_openvino

    x_tr, y_tr, x_te, y_te = digits
    ctrl, model = _compressed(
        fp32_digits_state, digits, activations={"mode": "asymmetric"}, weights={"mode": "asymmetric"}
    )
    train(
        model,
        x_tr[:256],
        y_tr[:256],
        epochs=1,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        ctrl=ctrl,
    )
    model.eval()
    with torch.no_grad():
        ref = model(x_te).numpy()
    (got,) = run_openvino(ctrl.export_model(tmp_path / "asym.xml"), x_te.numpy())
    # logits are not quantized: they agree up to a few steps of the last grids, far below their scale
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert int(np.sum(got.argmax(1) != ref.argmax(1))) <= 1
