"""create_compressed_model and the quantization controller: the NNCF 2.x training-time API."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models import build
from qat_digits import DigitsCNN, loader, qat_config
from torch import nn

from nncompress import NNCFConfig
from nncompress.api.compression import CompressionAlgorithmController, CompressionStage
from nncompress.errors import (
    CompressionStateError,
    ConfigError,
    DatasetError,
    ExportError,
    QuantizationError,
    ScopeError,
    TracingError,
)
from nncompress.torch import create_compressed_model, register_default_init_args
from nncompress.torch.initialization import (
    BNAdaptationInitArgs,
    PTInitializingDataLoader,
    QuantizationRangeInitArgs,
)
from nncompress.torch.nncf_network import NNCFNetwork
from nncompress.torch.quantizers import AsymmetricQuantizer, BaseQuantizer, SymmetricQuantizer

X = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))


def _config(extra_root: dict | None = None, **quantization) -> NNCFConfig:
    cfg = qat_config(**quantization)
    cfg.update(extra_root or {})
    return NNCFConfig.from_dict(cfg)


def _compress(model=None, data=True, **quantization):
    model = DigitsCNN() if model is None else model
    config = _config(**quantization)
    if data:
        register_default_init_args(config, loader(X, Y, batch_size=16))
    return create_compressed_model(model, config)


def _quantizers(ctrl) -> dict[str, BaseQuantizer]:
    return ctrl.all_quantizations


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


def test_model_is_wrapped_in_place_and_behaves_like_the_users_model():
    original = DigitsCNN()
    ctrl, model = _compress(original)
    assert model is original
    assert isinstance(model, DigitsCNN) and isinstance(model, NNCFNetwork)
    assert isinstance(ctrl, CompressionAlgorithmController)
    assert model.nncf.graph is not None and len(model.nncf.hook_manager) > 0
    keys = [k for k in model.state_dict() if k.startswith("_nncf.")]
    assert any(k.endswith(".scale") for k in keys), keys

    model.eval()
    with torch.no_grad():
        ref = model(X)
    copied = copy.deepcopy(model)
    assert isinstance(copied, DigitsCNN) and isinstance(copied, NNCFNetwork)
    with torch.no_grad():
        assert torch.equal(copied(X), ref)
        # quantizers act: switching them off changes the output
        with model.nncf.hooks_disabled():
            assert not torch.equal(model(X), ref)
        assert torch.equal(nn.DataParallel(model)(X), ref)

    model.train()
    out = model(X)
    out.sum().backward()
    assert all(
        q.scale.grad is not None for q in _quantizers(ctrl).values() if isinstance(q, SymmetricQuantizer)
    )


def test_failed_creation_leaves_the_model_unwrapped():
    model = DigitsCNN()
    config = _config()  # range init needs data, none registered
    with pytest.raises(DatasetError, match="register_default_init_args"):
        create_compressed_model(model, config)
    assert type(model) is DigitsCNN and "_nncf" not in model._modules
    with pytest.raises(TypeError, match="already compressed"):
        _, compressed = _compress()
        create_compressed_model(compressed, _config())


class MultiInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x, ids, scale=None):
        h = self.proj(x) + self.emb(ids).mean(1)
        if scale is not None:
            h = h * scale
        return self.head(F.relu(h))


def test_inputs_from_input_info_positional_keyword_and_integer():
    config = NNCFConfig.from_dict(
        {
            "input_info": [
                {"sample_size": [2, 8]},
                {"sample_size": [2, 5], "type": "long", "filler": "random"},
                {"sample_size": [2, 8], "keyword": "scale", "filler": "zeros"},
            ],
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        }
    )
    ctrl, model = create_compressed_model(MultiInput(), config)
    inputs = {n.attrs["dtype"]: n for n in model.nncf.graph.input_nodes()}
    assert set(inputs) == {"float32", "int64"}
    assert [n.attrs.get("keyword") for n in model.nncf.graph.input_nodes()] == [None, None, "scale"]
    # the integer input is never quantized, the float ones are
    ids = {q.split("|")[0] for q in ctrl.all_quantizations}
    assert "MultiInput/nncf_model_input_0" in ids and "MultiInput/nncf_model_input_1" not in ids
    out = model(torch.randn(3, 8), torch.randint(0, 16, (3, 5)), scale=torch.ones(3, 8))
    assert out.shape == (3, 4)


def test_dummy_forward_fn_gives_the_inputs_without_running_the_model():
    calls = {"forward": 0, "wrap": 0}

    class Counting(DigitsCNN):
        def forward(self, x):
            calls["forward"] += 1
            return super().forward(x)

    def dummy_forward(model):
        return model(torch.zeros(2, 1, 8, 8))

    def wrap_inputs(args, kwargs):
        calls["wrap"] += 1
        return args, kwargs

    config = NNCFConfig.from_dict(
        {
            "input_info": {},
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        }
    )
    ctrl, model = create_compressed_model(
        Counting(), config, dummy_forward_fn=dummy_forward, wrap_inputs_fn=wrap_inputs
    )
    assert calls["wrap"] == 1
    assert calls["forward"] == 1  # the trace only: the dummy call itself did not run the model
    assert [n.attrs["shape"] for n in model.nncf.graph.input_nodes()] == [(2, 1, 8, 8)]
    assert len(ctrl.all_quantizations) > 0

    with pytest.raises(TracingError, match="never called the model"):
        create_compressed_model(DigitsCNN(), config, dummy_forward_fn=lambda m: None)
    with pytest.raises(ConfigError, match="input_info"):
        create_compressed_model(DigitsCNN(), config)


# ------------------------------------------------------------------------------------------------
# Range initialization and BatchNorm adaptation
# ------------------------------------------------------------------------------------------------


def _input_quantizer(ctrl) -> BaseQuantizer:
    return next(q for qid, q in ctrl.all_quantizations.items() if "nncf_model_input_0" in qid)


def test_range_init_counts_samples_and_uses_the_estimator():
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[40] *= 100  # an outlier beyond the first 32 samples: never seen by range init
    data = loader(x, Y, batch_size=16)

    def init(init_type: str, samples: int = 32):
        config = _config(initializer={"range": {"num_init_samples": samples, "type": init_type}})
        register_default_init_args(config, data)
        return _input_quantizer(create_compressed_model(DigitsCNN(), config)[0])

    max_abs = float(x[:32].abs().max())
    q = init("min_max")
    assert float(q.scale.detach()) == pytest.approx(max_abs, rel=1e-5)
    batch_means = np.mean([float(x[i : i + 16].abs().max()) for i in (0, 16)])
    assert float(init("mean_min_max").scale.detach()) == pytest.approx(batch_means, rel=1e-5)
    assert float(init("percentile").scale.detach()) < max_abs
    assert float(init("min_max", samples=64).scale.detach()) == pytest.approx(float(x.abs().max()), rel=1e-5)


def test_range_init_per_scope_list_and_override():
    ranges = [
        {"type": "min_max", "num_init_samples": 16, "target_quantizer_group": "weights"},
        {"type": "min_max", "num_init_samples": 16, "target_quantizer_group": "activations",
         "ignored_scopes": ["{re}.*nncf_model_input.*"]},
        {"type": "threesigma", "num_init_samples": 16, "target_scopes": ["{re}.*nncf_model_input.*"]},
    ]  # fmt: skip
    ctrl, _ = _compress(initializer={"range": ranges})
    mean, std = float(X[:16].mean()), float(X[:16].std(unbiased=False))
    expected = max(abs(mean - 3 * std), abs(mean + 3 * std))
    assert float(_input_quantizer(ctrl).scale.detach()) == pytest.approx(expected, rel=1e-3)

    overlapping = [*ranges, {"type": "min_max", "num_init_samples": 4}]
    with pytest.raises(ConfigError, match="matches 2 range initialization entries"):
        _compress(initializer={"range": overlapping})

    override = {
        "activations": {
            "{re}.*nncf_model_input.*": {
                "initializer": {"range": {"type": "min_max", "num_init_samples": 16}}
            }
        }
    }
    ctrl, _ = _compress(
        scope_overrides=override, initializer={"range": {"type": "threesigma", "num_init_samples": 16}}
    )
    assert float(_input_quantizer(ctrl).scale.detach()) == pytest.approx(float(X[:16].abs().max()), rel=1e-5)


def test_without_init_samples_weights_still_get_their_range():
    ctrl, model = _compress(data=False, initializer={"range": {"num_init_samples": 0}})
    w = ctrl.weight_quantizers["DigitsCNN/Conv2d[conv1]/conv2d_0|WEIGHT"]
    per_channel_max = model.conv1.weight.detach().abs().amax(dim=(1, 2, 3))
    assert torch.allclose(w.scale.detach().reshape(-1), per_channel_max, rtol=1e-5)
    assert float(_input_quantizer(ctrl).scale.detach()) == 1.0  # activations keep their initial range


class BNFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.conv = nn.Conv2d(1, 4, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.conv(self.bn(x)))


def test_batchnorm_adaptation_reestimates_running_statistics():
    x = 3.0 + 2.0 * torch.randn(96, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    config = _config(
        quantize_inputs=False, initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 64}}
    )
    config["input_info"] = {"sample_size": [1, 1, 8, 8]}
    register_default_init_args(config, loader(x, Y.repeat(2)[:96], batch_size=32))
    model = BNFirst().eval()
    ctrl, model = create_compressed_model(model, config)
    bn = model.bn
    assert not model.training and not bn.training and bn.momentum == 0.1
    # cumulative average over the first two batches (64 samples) of the batch statistics
    assert float(bn.running_mean) == pytest.approx(float(x[:64].mean()), rel=1e-5)
    batch_vars = [float(x[i : i + 32].var()) for i in (0, 32)]
    assert float(bn.running_var) == pytest.approx(np.mean(batch_vars), rel=1e-5)

    # without BNAdaptationInitArgs the statistics are left alone
    config = _config(quantize_inputs=False)
    config.register_extra_structs([QuantizationRangeInitArgs(loader(x, Y.repeat(2)[:96], batch_size=32))])
    model = BNFirst()
    create_compressed_model(model, config)
    assert float(model.bn.running_mean) == 0.0 and not config.has_extra_struct(BNAdaptationInitArgs)


def test_custom_initializing_loader_gives_keyword_inputs():
    class KwLoader(PTInitializingDataLoader):
        def get_inputs(self, batch):
            return (), {"x": batch["image"]}

        def get_target(self, batch):
            return batch["label"]

    batches = [{"image": X[i : i + 16], "label": Y[i : i + 16]} for i in range(0, 64, 16)]
    config = _config(initializer={"range": {"num_init_samples": 16, "type": "min_max"}})
    register_default_init_args(config, KwLoader(batches))
    ctrl, _ = create_compressed_model(DigitsCNN(), config)
    assert float(_input_quantizer(ctrl).scale.detach()) == pytest.approx(float(X[:16].abs().max()), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# The quantization section
# ------------------------------------------------------------------------------------------------


def test_scopes_accept_nncf_names_and_patterns():
    ctrl, _ = _compress(ignored_scopes=["DigitsCNN/NNCFLinear[fc]/linear_0"])
    assert not any("Linear[fc]" in qid for qid in ctrl.weight_quantizers)
    ctrl, _ = _compress(target_scopes=["{re}.*NNCFConv2d\\[conv1\\].*"], quantize_inputs=False)
    assert list(ctrl.weight_quantizers) == ["DigitsCNN/Conv2d[conv1]/conv2d_0|WEIGHT"]
    ctrl, _ = _compress(activations={"ignored_scopes": ["{re}.*Linear.*"]})
    assert any("Linear[fc]" in qid for qid in ctrl.weight_quantizers)
    assert not any("Linear" in c for r in ctrl.records if not r.is_weight for c, _ in r.consumers)
    with pytest.raises(ScopeError, match="DigitsCNN/Conv2d\\[conv3\\]"):
        _compress(ignored_scopes=["DigitsCNN/Conv2d[conv3]/conv2d_0"])
    ctrl, _ = _compress(ignored_scopes=["DigitsCNN/Conv2d[conv3]/conv2d_0"], validate_scopes=False)
    assert len(ctrl.weight_quantizers) == 3


def test_modes_bits_granularity_sign_and_overflow_fix():
    ctrl, _ = _compress(
        weights={"mode": "asymmetric", "per_channel": False}, activations={"mode": "asymmetric"}
    )
    assert all(isinstance(q, AsymmetricQuantizer) for q in ctrl.all_quantizations.values())
    assert not any(q.per_channel for q in ctrl.weight_quantizers.values())

    ctrl, _ = _compress()  # ANY device: weights per-channel, symmetric, half range (overflow fix)
    assert all(q.per_channel and bool(q.half_range) for q in ctrl.weight_quantizers.values())
    assert all(isinstance(q, SymmetricQuantizer) for q in ctrl.all_quantizations.values())
    ctrl, _ = _compress(overflow_fix="first_layer_only")
    assert [bool(q.half_range) for q in ctrl.weight_quantizers.values()] == [True, False, False]
    ctrl, _ = _compress(overflow_fix="disable", activations={"signed": True})
    assert not any(bool(q.half_range) for q in ctrl.weight_quantizers.values())
    assert all(bool(q.signed) for q in ctrl.non_weight_quantizers.values())
    ctrl, _ = _compress(preset="mixed")
    assert all(isinstance(q, AsymmetricQuantizer) for q in ctrl.non_weight_quantizers.values())

    ctrl, _ = _compress(quantize_inputs=False, quantize_outputs=True, activations={"per_channel": True})
    ids = list(ctrl.non_weight_quantizers)
    assert not any("nncf_model_input" in i for i in ids)
    output = ctrl.non_weight_quantizers["DigitsCNN/Linear[fc]/linear_0|OUTPUT"]  # quantize_outputs
    assert output.per_channel and output.scale_shape == (1, 10)
    assert not ctrl.non_weight_quantizers["DigitsCNN/relu_0|OUTPUT"].per_channel  # ANY: per-tensor for convs

    with pytest.raises(QuantizationError, match="TRIAL"):
        _compress(weights={"bits": 4})
    with pytest.raises(ConfigError, match="logarithm"):
        _compress(weights={"logarithm_scale": True})


def test_compression_lr_multiplier_scales_quantizer_gradients():
    grads = []
    for root in ({}, {"compression_lr_multiplier": 10.0}):
        config = _config(root)
        register_default_init_args(config, loader(X, Y, batch_size=16))
        ctrl, model = create_compressed_model(DigitsCNN(), config)
        model.train()
        F.cross_entropy(model(X), Y).backward()
        grads.append({qid: q.scale.grad.clone() for qid, q in ctrl.all_quantizations.items()})
        weight = model.conv1.weight.grad.clone()
    for qid, grad in grads[0].items():
        assert torch.allclose(grads[1][qid], 10 * grad, rtol=1e-4, atol=1e-9), qid
    assert any(float(g.abs().sum()) > 0 for g in grads[0].values())
    assert weight.abs().sum() > 0  # model weights keep their own gradients


def test_mixed_precision_by_scope_overrides_and_manual_table():
    def trial(**q):
        config = _config({"target_device": "TRIAL"}, **q)
        register_default_init_args(config, loader(X, Y, batch_size=16))
        return create_compressed_model(DigitsCNN(), config)[0]

    ctrl = trial(weights={"bits": 4}, scope_overrides={"weights": {"{re}.*NNCFLinear.*": {"bits": 8}}})
    bits = {qid: int(q.num_bits) for qid, q in ctrl.weight_quantizers.items()}
    assert bits == {
        "DigitsCNN/Conv2d[conv1]/conv2d_0|WEIGHT": 4,
        "DigitsCNN/Conv2d[conv2]/conv2d_0|WEIGHT": 4,
        "DigitsCNN/Linear[fc]/linear_0|WEIGHT": 8,
    }
    table = [[2, "DigitsCNN/NNCFConv2d[conv2]/conv2d_0|WEIGHT"], [4, "/nncf_model_input_0|OUTPUT"]]
    ctrl = trial(initializer={"range": {"num_init_samples": 16}, "precision": {"bitwidth_per_scope": table}})
    assert int(ctrl.weight_quantizers["DigitsCNN/Conv2d[conv2]/conv2d_0|WEIGHT"].num_bits) == 2
    assert int(_input_quantizer(ctrl).num_bits) == 4
    assert int(ctrl.weight_quantizers["DigitsCNN/Conv2d[conv1]/conv2d_0|WEIGHT"].num_bits) == 8
    assert "2 x 2-bit" not in ctrl.statistics().to_str()  # one 2-bit weight quantizer
    assert "1 x 2-bit" in ctrl.statistics().to_str()

    with pytest.raises(ScopeError, match="conv9"):
        trial(
            initializer={
                "precision": {"bitwidth_per_scope": [[4, "DigitsCNN/NNCFConv2d[conv9]/conv2d_0|WEIGHT"]]}
            }
        )
    with pytest.raises(QuantizationError, match="TRIAL"):
        _compress(initializer={"precision": {"type": "manual", "bitwidth_per_scope": table}})
    with pytest.raises(ConfigError, match="hawq"):
        trial(initializer={"precision": {"type": "hawq"}})


# ------------------------------------------------------------------------------------------------
# The controller
# ------------------------------------------------------------------------------------------------


def test_controller_loss_scheduler_stage_and_statistics():
    ctrl, model = _compress()
    loss = ctrl.loss()
    assert torch.is_tensor(loss) and float(loss) == 0.0
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
    sched = ctrl.scheduler
    assert (sched.current_epoch, sched.current_step) == (-1, -1)
    sched.epoch_step()
    for _ in range(3):
        sched.step()
    assert (sched.current_epoch, sched.current_step) == (0, 2)
    saved = sched.state_dict()
    sched.epoch_step(5)
    sched.load_state_dict(saved)
    assert (sched.current_epoch, sched.current_step) == (0, 2)

    stats = ctrl.statistics()
    q = stats.quantization
    assert (q.num_weight_quantizers, q.num_activation_quantizers) == (3, 3)
    assert q.quantized_ops == q.quantizable_ops and q.ratio_of_quantized_ops == 1.0
    text = str(stats)
    assert "Quantized ops: " in text and "| Quantizer" in text
    assert "DigitsCNN/Conv2d[conv1]/conv2d_0|WEIGHT" in text and "per-channel" in text

    ctrl.non_weight_quantizers["DigitsCNN/nncf_model_input_0|OUTPUT"].disable()
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED
    assert ctrl.statistics().quantization.num_enabled_quantizers == 5


def test_strip_removes_disabled_quantizers_and_freezes_parameters():
    ctrl, model = _compress()
    model.eval()
    ctrl.non_weight_quantizers["DigitsCNN/nncf_model_input_0|OUTPUT"].disable()
    with torch.no_grad():
        ref = model(X)
    stripped = ctrl.strip()
    assert stripped is not model and isinstance(stripped, DigitsCNN)
    assert len(stripped.nncf.hook_manager) == len(model.nncf.hook_manager) - 1
    assert all(not p.requires_grad for n, p in stripped.named_parameters() if n.startswith("_nncf."))
    assert any(p.requires_grad for n, p in model.named_parameters() if n.startswith("_nncf."))
    with torch.no_grad():
        assert torch.equal(stripped.eval()(X), ref)
    assert ctrl.strip(do_copy=False) is model


def test_staged_quantization_enables_groups_by_epoch():
    ctrl, model = _compress(params={"activations_quant_start_epoch": 1, "weights_quant_start_epoch": 2})
    stage = ctrl.compression_stage
    assert stage() == CompressionStage.UNCOMPRESSED
    ctrl.scheduler.epoch_step()  # epoch 0
    assert stage() == CompressionStage.UNCOMPRESSED
    ctrl.scheduler.epoch_step()  # epoch 1: activations
    assert stage() == CompressionStage.PARTIALLY_COMPRESSED
    assert all(q.is_enabled for q in ctrl.non_weight_quantizers.values())
    assert not any(q.is_enabled for q in ctrl.weight_quantizers.values())
    saved = ctrl.scheduler.get_state()
    ctrl.scheduler.epoch_step()  # epoch 2: weights
    assert stage() == CompressionStage.FULLY_COMPRESSED
    ctrl.scheduler.load_state(saved)
    assert stage() == CompressionStage.PARTIALLY_COMPRESSED


def test_unknown_or_unavailable_algorithm_is_a_clear_error():
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": {"algorithm": "movement_sparsity"}}
    )
    with pytest.raises(ConfigError, match="'movement_sparsity' is not available.*quantization"):
        create_compressed_model(DigitsCNN(), config)


def test_config_without_compression_gives_an_empty_controller():
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}})
    ctrl, model = create_compressed_model(DigitsCNN(), config)
    assert isinstance(model, NNCFNetwork) and len(model.nncf.hook_manager) == 0
    assert ctrl.compression_stage() == CompressionStage.UNCOMPRESSED
    assert float(ctrl.loss()) == 0.0 and "No compression" in ctrl.statistics().to_str()


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


class _Exploding(PTInitializingDataLoader):
    def __iter__(self):
        raise AssertionError("a model built from a compression state must not be initialized from data")

    def get_inputs(self, batch):
        return (batch[0],), {}


def test_resume_from_compression_state_is_exact(tmp_path):
    ctrl, model = _compress(initializer={"range": {"num_init_samples": 32}})
    torch.optim.SGD(model.parameters(), lr=0.1).zero_grad()
    model.train()
    for _ in range(2):
        ctrl.scheduler.step()
        F.cross_entropy(model(X), Y).backward()
        torch.optim.SGD(model.parameters(), lr=0.05).step()
    ctrl.scheduler.epoch_step()
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict(), "compression_state": ctrl.get_compression_state()}, path)

    ckpt = torch.load(path, weights_only=True)
    config = _config(initializer={"range": {"num_init_samples": 32}})
    register_default_init_args(config, _Exploding(loader(X, Y)))
    fresh = DigitsCNN(seed=7)
    ctrl2, model2 = create_compressed_model(fresh, config, compression_state=ckpt["compression_state"])
    model2.load_state_dict(ckpt["state_dict"])
    model.eval(), model2.eval()
    with torch.no_grad():
        assert torch.equal(model(X), model2(X))
    assert (ctrl2.scheduler.current_step, ctrl2.scheduler.current_epoch) == (1, 0)
    assert list(ctrl2.all_quantizations) == list(ctrl.all_quantizations)
    assert "restored from a compression state" in ctrl2.placement_report()


def test_mismatched_or_corrupt_state_is_rejected_with_names():
    ctrl, _ = _compress(data=False, initializer={"range": {"num_init_samples": 0}})
    state = ctrl.get_compression_state()
    config = _config(initializer={"range": {"num_init_samples": 0}})

    wider = DigitsCNN()
    wider.conv2, wider.bn2, wider.fc = (
        nn.Conv2d(16, 24, 3, padding=1),
        nn.BatchNorm2d(24),
        nn.Linear(24 * 4 * 4, 10),
    )
    with pytest.raises(CompressionStateError, match=r"1 of 6 quantizers") as info:
        create_compressed_model(wider, config, compression_state=state)
    assert "DigitsCNN/Conv2d[conv2]/conv2d_0|WEIGHT: per-channel parameters of shape (32, 1, 1, 1)" in str(
        info.value
    )

    renamed = copy.deepcopy(state)
    renamed["builder_state"]["quantization"]["quantizers"][0]["targets"][0]["node"] = (
        "DigitsCNN/Conv2d[convX]/conv2d_0"
    )
    with pytest.raises(CompressionStateError, match=r"convX.*not in the model"):
        create_compressed_model(DigitsCNN(), config, compression_state=renamed)

    broken = copy.deepcopy(state)
    del broken["builder_state"]["quantization"]["quantizers"][1]["spec"]
    with pytest.raises(CompressionStateError, match="corrupt quantization state: quantizer #1"):
        create_compressed_model(DigitsCNN(), config, compression_state=broken)
    with pytest.raises(CompressionStateError, match="builder_state"):
        create_compressed_model(DigitsCNN(), config, compression_state={"weights": 1})
    other = {"builder_state": {"filter_pruning": {}}, "ctrl_state": {}}
    with pytest.raises(CompressionStateError, match="saved for algorithms \\['filter_pruning'\\]"):
        create_compressed_model(DigitsCNN(), config, compression_state=other)
    model = DigitsCNN()
    with pytest.raises(CompressionStateError):
        create_compressed_model(model, config, compression_state=broken)
    assert not isinstance(model, NNCFNetwork)


# ------------------------------------------------------------------------------------------------
# Graph dumps and export
# ------------------------------------------------------------------------------------------------


def test_dump_graphs_into_log_dir_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config({"log_dir": str(tmp_path / "logs")})
    register_default_init_args(config, loader(X, Y, batch_size=16))
    ctrl, _ = create_compressed_model(DigitsCNN(), config)
    original = (tmp_path / "logs" / "original_graph.dot").read_text()
    compressed = (tmp_path / "logs" / "compressed_graph.dot").read_text()
    assert "Conv2d[conv1]/conv2d_0" in original and "SymmetricQuantizer" not in original
    assert compressed.count("SymmetricQuantizer#") == len(ctrl.all_quantizations)
    assert "weight conv1.weight" in compressed

    _compress()  # no log_dir: nothing is written anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    create_compressed_model(
        DigitsCNN(),
        _config({"log_dir": str(tmp_path / "off")}, initializer={"range": {"num_init_samples": 0}}),
        dump_graphs=False,
    )
    assert not (tmp_path / "off").exists()


def test_dump_graphs_renders_svg_when_graphviz_is_installed(tmp_path, monkeypatch):
    import os
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_dot = bin_dir / "dot"  # stands in for Graphviz: copies the .dot text into the -o file
    fake_dot.write_text('#!/bin/sh\ncp "$2" "$4"\n')
    fake_dot.chmod(fake_dot.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = _config({"log_dir": str(tmp_path / "logs")}, initializer={"range": {"num_init_samples": 0}})
    create_compressed_model(DigitsCNN(), config)
    svg = tmp_path / "logs" / "compressed_graph.svg"
    assert svg.read_text() == (tmp_path / "logs" / "compressed_graph.dot").read_text()
    assert (tmp_path / "logs" / "original_graph.svg").exists()


def test_export_model_to_onnx_matches_torch(tmp_path):
    import onnx

    from nncompress.torch.export import run_onnxruntime

    ctrl, model = _compress()
    model.eval()
    path = ctrl.export_model(str(tmp_path / "model.onnx"))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    (got,) = run_onnxruntime(path, X.numpy())
    with torch.no_grad():
        ref = model(X).numpy()
    step = float(np.abs(ref).max()) / 127
    assert np.abs(got - ref).max() < 4 * step
    assert model.training is False

    ctrl.export_model(
        tmp_path / "m13.onnx", save_format="onnx_13", input_names=["image"], model_args=(X[:2],)
    )
    graph = onnx.load(str(tmp_path / "m13.onnx"))
    assert graph.opset_import[0].version == 13 and graph.graph.input[0].name == "image"
    with pytest.raises(ExportError, match="writes a '.xml' file"):
        ctrl.export_model(tmp_path / "m.onnx", save_format="openvino")
    with pytest.raises(ExportError, match="unknown save_format"):
        ctrl.export_model(tmp_path / "m.onnx", save_format="tflite")


# ------------------------------------------------------------------------------------------------
# Real NNCF configs
# ------------------------------------------------------------------------------------------------

NNCF_CONFIGS = Path(__file__).resolve().parents[4] / "shared" / "data" / "nncf-configs"  # beside the checkout


@pytest.mark.parametrize(
    ("name", "model_name", "expect"),
    [
        ("tests_torch_weekly_classification_imagenet_resnet50_sym_int8.json", "resnet", SymmetricQuantizer),
        ("torch_classification_mobilenet_v2_cifar100_asym_int8.json", "mobilenet_v2", AsymmetricQuantizer),
        ("torch_classification_mobilenet_v3_small_imagenet_int8.json", "mobilenet_v2", AsymmetricQuantizer),
        ("torch_classification_resnet50_imagenet_mixed_int_manual.json", "resnet", AsymmetricQuantizer),
    ],
)
def test_real_nncf_configs_are_accepted(name, model_name, expect):
    path = Path(NNCF_CONFIGS) / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    config = NNCFConfig.from_json(path)
    model = build(model_name)
    config["input_info"] = {"sample_size": [1, 3, 32, 32]}
    section = config["compression"]
    init = section.setdefault("initializer", {})
    init.setdefault("range", {})["num_init_samples"] = 8
    init["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 8}
    precision = init.get("precision", {})
    if "bitwidth_per_scope" in precision:
        # keep the entries naming layers our small ResNet has (NNCF spelling, e.g. NNCFConv2d[conv1])
        precision["bitwidth_per_scope"] = [
            e for e in precision["bitwidth_per_scope"] if e[1].count("/") == 2 and "WEIGHT" in e[1]
        ]
        assert precision["bitwidth_per_scope"] == [
            [8, "ResNet/NNCFConv2d[conv1]/conv2d_0|WEIGHT"],
            [4, "ResNet/NNCFLinear[fc]/linear_0|WEIGHT"],
        ]
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    register_default_init_args(config, loader(x, torch.zeros(16, dtype=torch.long), batch_size=8))
    ctrl, qmodel = create_compressed_model(model, config)
    assert all(isinstance(q, expect) for q in ctrl.non_weight_quantizers.values())
    if "bitwidth_per_scope" in precision:
        assert int(ctrl.weight_quantizers["ResNet/Conv2d[conv1]/conv2d_0|WEIGHT"].num_bits) == 8
        assert int(ctrl.weight_quantizers["ResNet/Linear[fc]/linear_0|WEIGHT"].num_bits) == 4
        assert (
            int(
                ctrl.weight_quantizers[
                    "ResNet/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]/conv2d_0|WEIGHT"
                ].num_bits
            )
            == 4
        )
    with torch.no_grad():
        assert torch.isfinite(qmodel.eval()(x)).all()
