"""rb_sparsity: learned masks pushed by the loss towards the scheduled level on the digits CNN."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from qat_digits import DigitsCNN, evaluate, loader

from nncompress import NNCFConfig
from nncompress.api.compression import CompressionStage
from nncompress.errors import ConfigError
from nncompress.torch import create_compressed_model
from nncompress.torch.sparsity.masks import RBMask


def config(**section) -> NNCFConfig:
    section.setdefault("algorithm", "rb_sparsity")
    return NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": section})


def compressed(state, **section):
    model = DigitsCNN()
    model.load_state_dict(state)
    return create_compressed_model(model, config(**section))


def fit(ctrl, model, x, y, epochs: int, mask_lr: float = 0.2) -> list[float]:
    """The user's loop: task loss + ctrl.loss(); the mask logits get their own learning rate."""
    torch.manual_seed(0)
    masks = [p for n, p in model.named_parameters() if n.endswith(".mask")]
    others = [p for n, p in model.named_parameters() if not n.endswith(".mask")]
    opt = torch.optim.Adam([{"params": others, "lr": 1e-3}, {"params": masks, "lr": mask_lr}])
    losses = []
    for epoch in range(epochs):
        ctrl.scheduler.epoch_step()
        model.train()
        for xb, yb in loader(x, y, shuffle=True, seed=epoch):
            ctrl.scheduler.step()
            opt.zero_grad()
            reg = ctrl.loss()
            (F.cross_entropy(model(xb), yb) + reg).backward()
            opt.step()
            losses.append(float(reg.detach()))
    return losses


def test_masks_are_trainable_logits(digits_state):
    ctrl, model = compressed(digits_state)
    masks = [m for m in ctrl.masks]
    assert len(masks) == 3 and all(isinstance(m, RBMask) for m in masks)
    names = [n for n, p in model.named_parameters() if n.endswith(".mask")]
    assert len(names) == 3  # parameters of the model: the user's optimizer trains them
    assert all(m.mask.requires_grad for m in masks)
    # everything is kept at the start (logit of 0.99), in eval the mask is deterministic
    assert (
        ctrl.loss.current_sparsity == 0.0 and float(ctrl.loss().detach()) == 0.0
    )  # sparsity_init 0: target density 1
    assert ctrl.compression_stage() == CompressionStage.UNCOMPRESSED


def test_loss_drives_density_to_target(digits_state, digits_data):
    x_tr, y_tr, x_te, y_te = digits_data
    ctrl, model = compressed(digits_state, sparsity_init=0.5, params={"sparsity_target": 0.5})
    assert ctrl.compression_rate == 0.5
    start = float(ctrl.loss().detach())
    assert start == pytest.approx(100.0)  # ((1 - 0.5) / 0.05) ** 2: every weight still kept
    losses = fit(ctrl, model, x_tr, y_tr, epochs=5)
    assert losses[-1] < 2.0 < start
    reached = ctrl.loss.current_sparsity
    assert reached == pytest.approx(0.5, abs=0.05), reached
    stats = ctrl.statistics().rb_sparsity
    assert stats.model_statistics.sparsity_level_for_layers == pytest.approx(reached, abs=1e-6)
    assert stats.target_sparsity_level == pytest.approx(0.5)
    assert "rb_sparsity" in ctrl.statistics().to_str() and "DigitsCNN/Linear[fc]/linear_0" in str(stats)
    acc, _ = evaluate(model, x_te, y_te)
    assert acc > 0.8, acc
    # the stripped model computes what the eval-mode masked model computes
    with torch.no_grad():
        ref = model.eval()(x_te)
        stripped = ctrl.strip()
        assert torch.allclose(stripped.eval()(x_te), ref, atol=1e-5)
    zeros = sum(int((stripped.get_parameter(w.param) == 0).sum()) for w in ctrl.sparsified_weights)
    assert zeros / 9872 == pytest.approx(reached, abs=1e-3)


def test_local_mode_pushes_every_layer(digits_state, digits_data):
    x_tr, y_tr, _, _ = digits_data
    ctrl, model = compressed(
        digits_state,
        sparsity_init=0.4,
        params={"sparsity_target": 0.4, "sparsity_level_setting_mode": "local"},
    )
    fit(ctrl, model, x_tr, y_tr, epochs=5)
    per_layer = [
        s.sparsity_level for s in ctrl.statistics().rb_sparsity.model_statistics.sparsified_layers_summary
    ]
    assert all(abs(s - 0.4) < 0.08 for s in per_layer), per_layer


def test_schedule_sets_loss_target_and_freeze_stops_learning(digits_state, digits_data):
    x_tr, y_tr, _, _ = digits_data
    ctrl, model = compressed(
        digits_state,
        params={"sparsity_target": 0.6, "sparsity_target_epoch": 2, "sparsity_freeze_epoch": 3},
    )
    targets = []
    for _ in range(3):
        ctrl.scheduler.epoch_step()
        targets.append(ctrl.compression_rate)
    # exponential: density 1 -> 0.4 geometrically over 2 epochs
    assert targets == pytest.approx([0.0, 1 - 0.4**0.5, 0.6])
    ctrl.compression_rate = 0.3  # accuracy-aware training sets the level directly
    assert ctrl.compression_rate == pytest.approx(0.3)
    ctrl.scheduler.epoch_step()  # epoch 3: frozen
    assert ctrl.frozen and float(ctrl.loss().detach()) == 0.0
    assert not any(m.mask.requires_grad for m in ctrl.masks)
    before = [m.effective_mask() for m in ctrl.masks]
    model.train()
    out1 = model(x_tr[:16])
    out2 = model(x_tr[:16])
    assert torch.equal(out1, out2)  # no sampling once frozen
    assert all(torch.equal(a, m.effective_mask()) for a, m in zip(before, ctrl.masks))


def test_checkpoint_resume_is_exact(digits_state, digits_data):
    x_tr, y_tr, x_te, _ = digits_data
    section = {"sparsity_init": 0.2, "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 3}}
    ctrl, model = compressed(digits_state, **section)
    fit(ctrl, model, x_tr[:512], y_tr[:512], epochs=2)
    state = copy.deepcopy(ctrl.get_compression_state())
    weights = copy.deepcopy(model.state_dict())
    ctrl2, model2 = create_compressed_model(DigitsCNN(seed=3), config(**section), compression_state=state)
    model2.load_state_dict(weights)
    assert ctrl2.scheduler.current_epoch == ctrl.scheduler.current_epoch == 1
    assert ctrl2.compression_rate == ctrl.compression_rate
    with torch.no_grad():
        assert torch.equal(model2.eval()(x_te), model.eval()(x_te))
        assert float(ctrl2.loss().detach()) == pytest.approx(float(ctrl.loss().detach()))
    ctrl.scheduler.epoch_step()
    ctrl2.scheduler.epoch_step()
    assert ctrl2.compression_rate == ctrl.compression_rate


def test_both_level_setting_modes_are_accepted_and_bad_levels_rejected(digits_state):
    # NNCF 2.x RB supports 'global' (its default) and 'local'; both build
    for mode in ("global", "local"):
        ctrl, _ = compressed(digits_state, params={"sparsity_level_setting_mode": mode})
        assert ctrl.loss.mode == mode
    ctrl, _ = compressed(digits_state)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        ctrl.compression_rate = 1.5
    with pytest.raises(ConfigError, match="sparsity_target"):
        compressed(digits_state, params={"sparsity_target": -0.1})


def test_adaptive_schedule_waits_for_the_masks(digits_state):
    ctrl, _ = compressed(
        digits_state,
        sparsity_init=0.3,
        params={"schedule": "adaptive", "sparsity_target": 0.4, "patience": 2},
    )
    for _ in range(3):
        ctrl.scheduler.epoch_step()
    assert ctrl.compression_rate == pytest.approx(0.3)  # the masks (all kept) have not reached 0.3
    with torch.no_grad():
        for m in ctrl.masks:  # as if training had zeroed 30% of every layer
            flat = m.mask.view(-1)
            flat[: int(0.3 * flat.numel()) + 1] = -1.0
    assert ctrl.loss.current_sparsity == pytest.approx(0.3, abs=1e-3)
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_rate == pytest.approx(0.3)  # one epoch reached; patience is 2
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_rate == pytest.approx(0.35)
    for _ in range(4):
        ctrl.scheduler.epoch_step()
    assert ctrl.compression_rate == pytest.approx(0.35)  # 0.30 reached is not within 0.03 of 0.35


def test_lr_multiplier_puts_logits_in_their_own_group(digits_state):
    from nncompress.torch.optim import get_parameter_groups

    ctrl, model = compressed(digits_state, compression_lr_multiplier=200)
    groups = {g["name"]: g for g in get_parameter_groups(ctrl, base_lr=1e-3)}
    assert groups["rb_sparsity"]["lr"] == pytest.approx(0.2)
    assert {id(p) for p in groups["rb_sparsity"]["params"]} == {id(m.mask) for m in ctrl.masks}
    assert groups["model"]["lr"] == pytest.approx(1e-3)
    # without groups (NNCF's way) the gradients of the logits are scaled instead
    ctrl2, model2 = compressed(digits_state, sparsity_init=0.5, compression_lr_multiplier=10)
    ctrl3, model3 = compressed(digits_state, sparsity_init=0.5)
    for c in (ctrl2, ctrl3):
        c.loss().backward()
    assert torch.allclose(ctrl2.masks[0].mask.grad, 10 * ctrl3.masks[0].mask.grad)
