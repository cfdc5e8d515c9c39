"""magnitude_sparsity on torch models: levels, schedule, masks, statistics, state, strip, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from qat_digits import DigitsCNN, evaluate, train

from nncompress import NNCFConfig
from nncompress.api.compression import CompressionStage
from nncompress.errors import CompressionStateError, ConfigError, ScopeError
from nncompress.torch import create_compressed_model
from nncompress.torch.nncf_network import is_wrapped
from nncompress.torch.sparsity.masks import BinaryMask

LAYERS = ("conv1.weight", "conv2.weight", "fc.weight")


def config(**section) -> NNCFConfig:
    section.setdefault("algorithm", "magnitude_sparsity")
    return NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": section})


def compressed(state=None, **section):
    model = DigitsCNN()
    if state is not None:
        model.load_state_dict(state)
    return create_compressed_model(model, config(**section))


def zeros(model, name: str, mask: BinaryMask | None = None) -> int:
    return int((model.get_parameter(name) * (mask.binary_mask if mask is not None else 1) == 0).sum())


def masks_of(ctrl) -> dict[str, BinaryMask]:
    return {w.param: m for w, m in zip(ctrl.sparsified_weights, ctrl.masks)}


def test_sparsity_init_global_and_local_levels(digits_state):
    level = 0.37
    ctrl, model = compressed(digits_state, sparsity_init=level)
    assert [w.param for w in ctrl.sparsified_weights] == list(LAYERS)  # conv, conv, linear; no BN
    masks = masks_of(ctrl)
    total = sum(model.get_parameter(p).numel() for p in LAYERS)
    zeroed = sum(zeros(model, p, masks[p]) for p in LAYERS)
    assert abs(zeroed - level * total) <= 1  # the sparsified weights together, within one weight
    per_layer = [zeros(model, p, masks[p]) / model.get_parameter(p).numel() for p in LAYERS]
    assert max(per_layer) - min(per_layer) > 0.02  # global: layers differ

    ctrl, model = compressed(
        digits_state, sparsity_init=level, params={"sparsity_level_setting_mode": "local"}
    )
    masks = masks_of(ctrl)
    for p in LAYERS:
        n = model.get_parameter(p).numel()
        assert abs(zeros(model, p, masks[p]) - level * n) <= 1  # each layer, within one weight
    assert ctrl.compression_rate == level


def test_weight_importance_abs_vs_normed_abs(digits_state):
    abs_ctrl, abs_model = compressed(digits_state, sparsity_init=0.5, params={"weight_importance": "abs"})
    normed_ctrl, normed_model = compressed(digits_state, sparsity_init=0.5)
    a, n = masks_of(abs_ctrl), masks_of(normed_ctrl)
    assert any(not torch.equal(a[p].binary_mask, n[p].binary_mask) for p in LAYERS)
    # with |w| the global threshold zeroes exactly the smallest absolute values of all layers
    flat = torch.cat([abs_model.get_parameter(p).detach().abs().reshape(-1) for p in LAYERS])
    kept = torch.cat([a[p].binary_mask.reshape(-1) for p in LAYERS]).bool()
    assert flat[kept].min() > flat[~kept].max()


def test_masked_model_equals_weights_times_mask(digits_state, digits_data):
    _, _, x_te, _ = digits_data
    ctrl, model = compressed(digits_state, sparsity_init=0.45)
    plain = DigitsCNN()
    plain.load_state_dict(digits_state)
    masks = masks_of(ctrl)
    with torch.no_grad():
        for p in LAYERS:
            plain.get_parameter(p).mul_(masks[p].binary_mask)
        assert torch.allclose(model.eval()(x_te), plain.eval()(x_te), atol=1e-6)
        # the parameters themselves are untouched until strip
        assert zeros(model, "conv2.weight") == 0


def test_schedule_raises_level_by_epoch_and_freezes(digits_state, digits_data):
    x_tr, y_tr, _, _ = digits_data
    ctrl, model = compressed(
        digits_state,
        sparsity_init=0.1,
        params={
            "schedule": "multistep",
            "multistep_steps": [1, 2],
            "multistep_sparsity_levels": [0.2, 0.4, 0.6],
            "sparsity_freeze_epoch": 3,
        },
    )
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED
    assert ctrl.scheduler.current_sparsity_level == pytest.approx(0.1)
    masks = masks_of(ctrl)
    seen = []
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(5):
        ctrl.scheduler.epoch_step()
        start = {p: masks[p].binary_mask.clone() for p in LAYERS}
        model.train()
        for i in range(3):  # a few optimizer steps: the masks must not move within an epoch
            ctrl.scheduler.step()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(
                model(x_tr[i * 32 : (i + 1) * 32]), y_tr[i * 32 : (i + 1) * 32]
            ).backward()
            opt.step()
            assert all(torch.equal(start[p], masks[p].binary_mask) for p in LAYERS)
        seen.append(ctrl.statistics().magnitude_sparsity.model_statistics.sparsity_level_for_layers)
    total = sum(model.get_parameter(p).numel() for p in LAYERS)
    assert [round(s * total) for s in seen[:3]] == pytest.approx(
        [0.2 * total, 0.4 * total, 0.6 * total], abs=1
    )
    assert ctrl.frozen and seen[3] == seen[2] and seen[4] == seen[2]  # frozen from epoch 3: masks stay
    assert ctrl.compression_rate == pytest.approx(0.6)
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
    with pytest.raises(CompressionStateError, match="frozen"):
        ctrl.set_sparsity_level(0.7)


def test_polynomial_schedule_matches_nncf_formula(digits_state):
    ctrl, model = compressed(
        digits_state,
        params={"schedule": "polynomial", "sparsity_target": 0.5, "sparsity_target_epoch": 3, "power": 2.0},
    )
    total = sum(model.get_parameter(p).numel() for p in LAYERS)
    for epoch in range(5):
        ctrl.scheduler.epoch_step()
        progress = min(epoch / 3, 1.0)
        expected = 0.5 - 0.5 * (1 - progress) ** 2  # NNCF's concave polynomial decay
        assert ctrl.compression_rate == pytest.approx(expected)
        got = ctrl.statistics().magnitude_sparsity.model_statistics.sparsity_level_for_layers
        assert abs(got * total - expected * total) <= 1


def test_set_level_of_one_layer_and_compression_rate(digits_state):
    ctrl, model = compressed(digits_state)
    assert ctrl.compression_stage() == CompressionStage.UNCOMPRESSED and ctrl.compression_rate == 0.0
    masks = masks_of(ctrl)
    assert all(zeros(model, p, masks[p]) == 0 for p in LAYERS)  # level 0 zeroes nothing
    ctrl.set_sparsity_level(0.5, "DigitsCNN/Conv2d[conv2]/conv2d_0")
    assert abs(zeros(model, "conv2.weight", masks["conv2.weight"]) - 0.5 * 4608) <= 1
    assert zeros(model, "fc.weight", masks["fc.weight"]) == 0
    ctrl.compression_rate = 0.25
    assert ctrl.compression_rate == 0.25
    assert abs(ctrl.sparsity_rate_for_sparsified_modules() - 0.25) < 2 / 9872
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        ctrl.set_sparsity_level(1.0)
    with pytest.raises(ConfigError, match="not a sparsified layer"):
        ctrl.set_sparsity_level(0.3, "DigitsCNN/BatchNorm2d[bn1]/batch_norm_0")


def test_statistics_per_layer_and_total(digits_state):
    ctrl, _ = compressed(digits_state, sparsity_init=0.3)
    stats = ctrl.statistics()
    mag = stats.magnitude_sparsity  # attribute access, as in NNCF
    assert mag is stats["magnitude_sparsity"]
    names = [s.name for s in mag.model_statistics.sparsified_layers_summary]
    assert names == [
        "DigitsCNN/Conv2d[conv1]/conv2d_0",
        "DigitsCNN/Conv2d[conv2]/conv2d_0",
        "DigitsCNN/Linear[fc]/linear_0",
    ]
    assert sum(s.weight_percentage for s in mag.model_statistics.sparsified_layers_summary) == pytest.approx(
        100
    )
    # the whole model counts every parameter (BN, biases) too, so it is less sparse
    assert 0 < mag.model_statistics.sparsity_level < mag.model_statistics.sparsity_level_for_layers
    text = stats.to_str()
    assert "Statistics of the magnitude_sparsity algorithm" in text
    for name in names:
        assert name in text
    assert "Total (sparsified layers)" in text and "30.0%" in text
    assert len({t.threshold for t in mag.thresholds}) == 1  # global: one threshold


def test_strip_multiplies_masks_into_weights(digits_state, digits_data):
    _, _, x_te, _ = digits_data
    ctrl, model = compressed(digits_state, sparsity_init=0.5)
    with torch.no_grad():
        ref = model.eval()(x_te)
    stripped = ctrl.strip()
    assert stripped is not model and not is_wrapped(stripped) and type(stripped) is DigitsCNN
    assert is_wrapped(model) and zeros(model, "fc.weight") == 0  # the training model is untouched
    total = sum(stripped.get_parameter(p).numel() for p in LAYERS)
    assert abs(sum(zeros(stripped, p) for p in LAYERS) - 0.5 * total) <= 1
    with torch.no_grad():
        assert torch.allclose(stripped.eval()(x_te), ref, atol=1e-6)


def test_checkpoint_resume_is_exact(digits_state, digits_data):
    x_tr, y_tr, x_te, _ = digits_data
    section = {
        "sparsity_init": 0.1,
        "params": {"schedule": "polynomial", "sparsity_target": 0.6, "sparsity_target_epoch": 4},
    }
    ctrl, model = compressed(digits_state, **section)
    train(model, x_tr[:256], y_tr[:256], epochs=2, lr=1e-3, ctrl=ctrl)
    state = copy.deepcopy(ctrl.get_compression_state())
    weights = copy.deepcopy(model.state_dict())

    ctrl2, model2 = create_compressed_model(DigitsCNN(seed=5), config(**section), compression_state=state)
    model2.load_state_dict(weights)
    assert ctrl2.scheduler.current_epoch == ctrl.scheduler.current_epoch == 1
    assert ctrl2.scheduler.current_step == ctrl.scheduler.current_step
    assert ctrl2.compression_rate == ctrl.compression_rate
    with torch.no_grad():
        assert torch.equal(model2.eval()(x_te), model.eval()(x_te))
    # both continue identically
    ctrl.scheduler.epoch_step()
    ctrl2.scheduler.epoch_step()
    assert ctrl2.compression_rate == ctrl.compression_rate
    assert all(torch.equal(a.binary_mask, b.binary_mask) for a, b in zip(ctrl.masks, ctrl2.masks))

    bad = copy.deepcopy(state)
    bad["builder_state"]["magnitude_sparsity"]["weights"] = ["conv1.weight"]
    with pytest.raises(CompressionStateError, match="saved masks do not fit"):
        create_compressed_model(DigitsCNN(), config(**section), compression_state=bad)


def test_scopes(digits_state):
    ctrl, _ = compressed(digits_state, sparsity_init=0.5, ignored_scopes=["{re}.*NNCFLinear\\[fc\\].*"])
    assert [w.param for w in ctrl.sparsified_weights] == ["conv1.weight", "conv2.weight"]
    ctrl, _ = compressed(digits_state, target_scopes=["DigitsCNN/Conv2d[conv2]/conv2d_0"])
    assert [w.param for w in ctrl.sparsified_weights] == ["conv2.weight"]
    with pytest.raises(
        ScopeError, match="ignored_scopes.*'DigitsCNN/Conv2d\\[conv3\\]/conv2d_0'.*matched no node"
    ):
        compressed(digits_state, ignored_scopes=["DigitsCNN/Conv2d[conv3]/conv2d_0"])
    with pytest.raises(ScopeError, match="target_scopes"):
        compressed(digits_state, target_scopes=["{re}.*Conv3d.*"])
    with pytest.raises(ConfigError, match="compression: magnitude_sparsity: no weight is left to sparsify"):
        compressed(digits_state, ignored_scopes=["{re}.*"])


def test_bad_sections_are_config_errors():
    with pytest.raises(ConfigError, match="compression.params.schedule.*adaptive"):
        compressed(params={"schedule": "adaptive"})
    with pytest.raises(ConfigError, match="sparsity_target"):
        compressed(params={"sparsity_target": 1.3})


def test_shared_weights_get_one_mask():
    from models import build

    model = build("shared")
    section = {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}
    x = model.make_input()
    cfg = NNCFConfig.from_dict({"input_info": {"sample_size": list(x.shape)}, "compression": section})
    ctrl, cmodel = create_compressed_model(model, cfg)
    params = [w.param for w in ctrl.sparsified_weights]
    assert len(params) == len(set(params))
    shared = [w for w in ctrl.sparsified_weights if len(w.targets) > 1]
    assert shared, "the shared block's weights are used twice and must carry one mask each"
    with torch.no_grad():
        ref = cmodel.eval()(x)
        stripped = ctrl.strip()
        for got, want in zip(stripped.eval()(x), ref):
            assert torch.allclose(got, want, atol=1e-6)
    zeroed = int((stripped.fc.weight == 0).sum()) + int((stripped.head.weight == 0).sum())
    assert abs(zeroed - 0.5 * (64 + 16)) <= 1


def test_training_keeps_accuracy(digits_state, digits_data):
    x_tr, y_tr, x_te, y_te = digits_data
    dense = DigitsCNN()
    dense.load_state_dict(digits_state)
    dense_acc, _ = evaluate(dense, x_te, y_te)
    ctrl, model = compressed(
        digits_state, params={"schedule": "polynomial", "sparsity_target": 0.7, "sparsity_target_epoch": 1}
    )
    train(model, x_tr, y_tr, epochs=2, lr=1e-3, ctrl=ctrl)
    acc, _ = evaluate(model, x_te, y_te)
    assert ctrl.compression_rate == pytest.approx(0.7)
    assert acc >= dense_acc - 0.05, (dense_acc, acc)


def test_data_parallel_replicas_use_the_masks(digits_state, digits_data):
    _, _, x_te, _ = digits_data
    ctrl, model = compressed(digits_state, sparsity_init=0.5)
    keys = [k for k in model.state_dict() if k.endswith("binary_mask")]
    assert len(keys) == 3  # masks are buffers: saved, and broadcast by DDP
    dp = torch.nn.DataParallel(model)
    with torch.no_grad():
        assert torch.equal(dp.eval()(x_te[:8]), model.eval()(x_te[:8]))


def test_update_per_optimizer_step_recomputes_masks_at_each_step(digits_state):
    ctrl, model = compressed(
        digits_state,
        params={
            "schedule": "polynomial",
            "power": 1.0,
            "sparsity_target": 0.4,
            "sparsity_target_epoch": 1,
            "update_per_optimizer_step": True,
            "steps_per_epoch": 4,
        },
    )
    ctrl.scheduler.epoch_step()
    levels = []
    for _ in range(4):
        ctrl.scheduler.step()
        levels.append(ctrl.compression_rate)
    assert levels == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert abs(ctrl.sparsity_rate_for_sparsified_modules() - 0.3) < 2 / 9872
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    assert ctrl.compression_rate == pytest.approx(0.4)


def test_setting_compression_rate_adapts_batchnorm(digits_state, digits_data):
    from qat_digits import loader

    from nncompress.torch import register_default_init_args

    x_tr, y_tr, _, _ = digits_data
    model = DigitsCNN()
    model.load_state_dict(digits_state)
    cfg = config(initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 128}})
    register_default_init_args(cfg, loader(x_tr, y_tr, batch_size=64))
    ctrl, cmodel = create_compressed_model(model, cfg)
    before = cmodel.bn2.running_mean.clone()
    ctrl.set_sparsity_level(0.8)  # masks only
    assert torch.equal(cmodel.bn2.running_mean, before)
    ctrl.compression_rate = 0.8  # what accuracy-aware training calls: masks and BatchNorm statistics
    assert ctrl.compression_rate == 0.8
    assert not torch.allclose(cmodel.bn2.running_mean, before)


def test_describe_and_weights_shared_with_an_ignored_call_stay_dense():
    from models import build

    model = build("shared")
    x = model.make_input()
    section = {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0.5,
        "ignored_scopes": ["SharedBlockNet/Linear[fc]/linear_1"],  # the second call of the shared fc
    }
    cfg = NNCFConfig.from_dict({"input_info": {"sample_size": list(x.shape)}, "compression": section})
    ctrl, cmodel = create_compressed_model(model, cfg)
    assert [w.param for w in ctrl.sparsified_weights] == ["head.weight"]
    text = ctrl.describe()
    assert (
        "head.weight" in text
        and "SharedBlockNet/Linear[fc]/linear_0: its weight 'fc.weight' is also used" in text
    )
    with torch.no_grad():
        ref = cmodel.eval()(x)
        for got, want in zip(ctrl.strip().eval()(x), ref):
            assert torch.allclose(got, want, atol=1e-6)
