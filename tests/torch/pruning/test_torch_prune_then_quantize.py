"""Filter pruning then quantization-aware training on the digits CNN, exported as a pruned INT8 model.

``compression: [filter_pruning, quantization]``: the composite controller's ``strip()`` /
``export_model()`` cut the pruned channels out (and the per-channel weight quantizers on them)
and keep the fake quantizers, so the exported model is smaller and runs in INT8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_TRAINING = str(Path(__file__).resolve().parents[1] / "training")
if _TRAINING not in sys.path:
    sys.path.insert(0, _TRAINING)

from qat_digits import DigitsCNN, digits_tensors, evaluate, loader, train  # noqa: E402

from nncompress import NNCFConfig  # noqa: E402
from nncompress.torch import create_compressed_model, register_default_init_args  # noqa: E402
from nncompress.torch.nncf_network import is_wrapped  # noqa: E402
from nncompress.torch.pruning.masks import ChannelMask  # noqa: E402
from nncompress.torch.quantizers import BaseQuantizer, SymmetricQuantizer  # noqa: E402

TARGET = 0.5


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    """A compressed model after 2 epochs of pruning (0.3 then 0.5) with QAT, and its data."""
    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = digits_tensors()
    model = DigitsCNN()
    train(model, x_tr, y_tr, epochs=3, lr=1e-2)
    dense_params = sum(p.numel() for p in model.parameters())
    dense_acc, _ = evaluate(model, x_te, y_te)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": [
                {
                    "algorithm": "filter_pruning",
                    "pruning_init": 0.3,
                    "params": {"schedule": "baseline", "pruning_target": TARGET, "pruning_steps": 1},
                    "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 256}},
                },
                {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
            ],
        }
    )
    register_default_init_args(config, loader(x_tr, y_tr, batch_size=64, shuffle=True))
    ctrl, cmodel = create_compressed_model(model, config)
    train(cmodel, x_tr, y_tr, epochs=2, lr=1e-3, ctrl=ctrl)
    cmodel.eval()
    return ctrl, cmodel, dense_params, dense_acc, (x_tr, y_tr, x_te, y_te)


def test_strip_cuts_channels_and_keeps_quantizers(trained):
    ctrl, cmodel, dense_params, dense_acc, (_, _, x_te, y_te) = trained
    pruning = next(c for c in ctrl.child_ctrls if c.algorithm_name == "filter_pruning")
    assert pruning.pruning_level == pytest.approx(TARGET, abs=0.05)
    acc, _ = evaluate(cmodel, x_te, y_te)
    assert acc >= dense_acc - 0.03, (dense_acc, acc)

    stripped = ctrl.strip()
    assert stripped is not cmodel and is_wrapped(stripped)
    hooks = [h for _, h in stripped.nncf.hook_manager.items()]
    assert not any(isinstance(h, ChannelMask) for h in hooks)
    quantizers = [h for h in hooks if isinstance(h, BaseQuantizer)]
    assert len(quantizers) == len(ctrl.child_ctrls[1].all_quantizations) and all(
        q.is_enabled for q in quantizers
    )
    # the training model is untouched: still masked, full size
    assert cmodel.conv2.out_channels == 32 and any(
        isinstance(h, ChannelMask) for _, h in cmodel.nncf.hook_manager.items()
    )
    kept = stripped.conv2.out_channels
    assert kept < 32 and stripped.bn2.num_features == kept and stripped.fc.in_features == kept * 16
    # the per-channel weight quantizer of conv2 follows its kept filters
    conv2_q = next(
        h
        for t, h in stripped.nncf.hook_manager.items()
        if isinstance(h, SymmetricQuantizer) and "conv2" in t.node
    )
    assert conv2_q.per_channel and conv2_q.scale.shape[0] == kept

    params = sum(p.numel() for n, p in stripped.named_parameters() if "_nncf" not in n)
    assert params < (1 - 0.8 * TARGET) * dense_params, (params, dense_params)
    with torch.no_grad():
        assert torch.equal(stripped.eval()(x_te).argmax(1), cmodel(x_te).argmax(1))
        diff = (stripped(x_te) - cmodel(x_te)).abs().max().item()
    assert diff < 1e-4, diff


def test_export_pruned_int8(trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    from nncompress.torch.export import compile_openvino, int8_summary, run_onnxruntime, run_openvino

    ctrl, cmodel, dense_params, _, (_, _, x_te, y_te) = trained
    with torch.no_grad():
        ref = cmodel.eval()(x_te).numpy()
    torch_acc = float(np.mean(ref.argmax(1) == y_te.numpy()))
    # the logits are not quantized: allow two steps of the last activation grid (the fc input)
    # times the largest fc weight (measured: ~0.006, i.e. about one such step)
    (relu_q,) = [q for t, q in ctrl.child_ctrls[1].non_weight_quantizers.items() if "relu_1" in t]
    step = float(relu_q.export_params().scale)
    tol = 2 * step * float(cmodel.fc.weight.detach().abs().max())

    onnx_path = ctrl.export_model(tmp_path / "pruned.onnx")
    graph = onnx.load(str(onnx_path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, ops
    onnx_params = sum(int(np.prod(i.dims)) for i in graph.initializer if len(i.dims) > 1)
    assert onnx_params < (1 - 0.8 * TARGET) * dense_params
    (onnx_logits,) = run_onnxruntime(onnx_path, x_te.numpy())
    assert np.abs(onnx_logits - ref).max() <= tol

    xml = ctrl.export_model(tmp_path / "pruned.xml")
    assert "FakeQuantize" in Path(xml).read_text()
    compiled = compile_openvino(xml)
    summary = int8_summary(compiled)
    assert summary.total == 3 and summary.int8 == summary.total, str(summary)
    (logits,) = run_openvino(compiled, x_te.numpy())
    assert np.abs(logits - ref).max() <= tol, (np.abs(logits - ref).max(), tol)
    ov_acc = float(np.mean(logits.argmax(1) == y_te.numpy()))
    assert abs(ov_acc - torch_acc) <= 1 / len(y_te) + 1e-9


def test_per_channel_activation_and_asymmetric_quantizers_are_cut():
    """Per-channel activation quantizers on pruned tensors and asymmetric weight quantizers are cut
    too; the stripped model computes exactly what the masked one does."""
    x_tr, y_tr, x_te, _ = digits_tensors()
    model = DigitsCNN()
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "target_device": "TRIAL",
            "compression": [
                {"algorithm": "filter_pruning", "pruning_init": 0.5},
                {
                    "algorithm": "quantization",
                    "activations": {"per_channel": True},
                    "weights": {"mode": "asymmetric"},
                    "initializer": {"range": {"num_init_samples": 64}},
                },
            ],
        }
    )
    register_default_init_args(config, loader(x_tr, y_tr))
    ctrl, cmodel = create_compressed_model(model, config)
    stripped = ctrl.strip()
    by_node = {t.node: h for t, h in stripped.nncf.hook_manager.items()}
    assert by_node["DigitsCNN/relu_1"].scale.shape == (1, 16, 1, 1)
    assert by_node["DigitsCNN/relu_0"].scale.shape == (1, 16, 1, 1)  # conv1 is not pruned
    assert by_node["DigitsCNN/Conv2d[conv2]/conv2d_0"].input_low.shape == (16, 1, 1, 1)
    with torch.no_grad():
        assert torch.equal(stripped.eval()(x_te), cmodel.eval()(x_te))


def test_prune_channels_of_a_quantizer():
    from nncompress.errors import QuantizationError
    from nncompress.quantization.spec import QuantizerSpec

    q = SymmetricQuantizer(
        QuantizerSpec(num_bits=8, mode="symmetric", per_channel=True, channel_axis=0), (4, 1, 1, 1)
    )
    with torch.no_grad():
        q.scale.copy_(torch.arange(1.0, 5.0).view(4, 1, 1, 1))
    w = torch.randn(4, 2, 3, 3)
    full = q.eval()(w)
    assert q.prune_channels([1, 3]) is q
    assert q.scale_shape == (2, 1, 1, 1) and q.scale.requires_grad
    assert torch.equal(q(w[[1, 3]]), full[[1, 3]])
    with pytest.raises(QuantizationError):
        q.prune_channels([0, 2])
    per_tensor = SymmetricQuantizer(QuantizerSpec(num_bits=8, mode="symmetric"))
    assert per_tensor.prune_channels([0]).scale.shape == (1,)
