"""Accuracy-aware training, adaptive mode, with sparsity: the loop searches the sparsity level of
magnitude and RB sparsity on scikit-learn's digits (a few seconds each on one core).

The masks are frozen by the schedule (``sparsity_freeze_epoch``) during the initial training
phase on purpose: once the loop disables the scheduler it sets the level itself, so the frozen
masks must follow the levels it sets (NNCF's stub scheduler stops the freezing but leaves frozen
masks frozen, so its search changes nothing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from examples.data import digits_tensors, evaluate, train_digits_model  # noqa: E402
from examples.models import DigitsCNN  # noqa: E402
from nncompress.common.accuracy_aware_training import (  # noqa: E402
    AdaptiveCompressionTrainingLoop,
    create_accuracy_aware_training_loop,
)
from nncompress.config import NNCFConfig  # noqa: E402
from nncompress.errors import ConfigError  # noqa: E402
from nncompress.torch.initialization import register_default_init_args  # noqa: E402
from nncompress.torch.model_creation import create_compressed_model  # noqa: E402
from nncompress.torch.optim import get_parameter_groups  # noqa: E402


@pytest.fixture(scope="module")
def data():
    x_tr, y_tr, x_te, y_te = digits_tensors(0)
    test = DataLoader(TensorDataset(x_te, y_te), batch_size=256)
    return (x_tr, y_tr), test


def _train_loader(train, batch_size: int) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True, generator=gen)


@pytest.fixture(scope="module")
def trained_state(data):
    train, _ = data
    torch.manual_seed(0)
    model = train_digits_model(DigitsCNN(width=8), epochs=6, train_loader=_train_loader(train, 64))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fresh(trained_state) -> nn.Module:
    model = DigitsCNN(width=8)
    model.load_state_dict(trained_state)
    return model.eval()


def _run_loop(config, ctrl, model, train_loader, test_loader, dense_acc, tmp_path):
    loss_fn = nn.CrossEntropyLoss()
    seen = []  # (level the controller reports, sparsity the masks have) after each epoch

    def train_epoch_fn(compression_ctrl, model, epoch=None, optimizer=None, lr_scheduler=None):
        model.train()
        for x, y in train_loader:
            compression_ctrl.scheduler.step()
            optimizer.zero_grad()
            loss = loss_fn(model(x), y) + compression_ctrl.loss()
            loss.backward()
            optimizer.step()
        seen.append((compression_ctrl.compression_rate, compression_ctrl.reached_sparsity))

    def validate_fn(model, epoch=None):
        return evaluate(model, test_loader)

    def configure_optimizers_fn():
        # RB mask logits get lr * compression_lr_multiplier in their own group
        optimizer = torch.optim.Adam(get_parameter_groups(ctrl, 1e-3), lr=1e-3)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)

    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=dense_acc)
    assert isinstance(loop, AdaptiveCompressionTrainingLoop)
    result = loop.run(model, train_epoch_fn, validate_fn, configure_optimizers_fn, log_dir=tmp_path)
    return loop, result, seen


def _aat(**params) -> dict:
    return {"mode": "adaptive_compression_level", "params": params}


def _check_settled(loop, ctrl, result, test_loader, dense_acc, degradation, tolerance, name):
    stats = loop.statistics
    assert stats.criterion_met, stats.to_str()
    history = loop.runner.compressed_training_history
    # the highest level tried within the budget is the one returned
    within = [rate for rate, budget in history.items() if budget >= 0]
    assert stats.compression_rate == pytest.approx(max(within))
    # it stopped for a reason: a higher level broke the budget, the maximal level or the epochs ran out
    runner = loop.runner
    assert (
        any(budget < 0 for budget in history.values())
        or max(history) >= runner.maximal_compression_rate
        or runner.cumulative_epoch_count >= runner.maximal_total_epochs
    )
    assert stats.compression_rate > 0.3  # the search raised the level above the initial phase's
    # the controller, the returned model and the statistics agree on the level
    assert ctrl.compression_rate == pytest.approx(stats.compression_rate)
    assert ctrl.reached_sparsity == pytest.approx(stats.compression_rate, abs=tolerance)
    layers = getattr(ctrl.statistics(), name).model_statistics.sparsity_level_for_layers
    assert layers == pytest.approx(ctrl.reached_sparsity)
    assert evaluate(result, test_loader) == pytest.approx(stats.compressed_accuracy)
    assert stats.compressed_accuracy >= dense_acc - degradation
    assert not ctrl.frozen  # the loop controls the level: the schedule's freeze was lifted
    # the log: one record per validation, sparsity statistics in each, the plot and the checkpoint
    run_dir = loop.runner.log_dir
    records = [json.loads(line) for line in (run_dir / "compression_stats.jsonl").read_text().splitlines()]
    assert records and all(name in r["statistics"] for r in records)
    assert (run_dir / "accuracy_vs_compression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = torch.load(run_dir / "acc_aware_checkpoint_best.pth", weights_only=False)
    assert best["compression_rate"] == pytest.approx(stats.compression_rate)


def test_adaptive_magnitude_sparsity_settles_within_budget(data, trained_state, tmp_path):
    train, test = data
    train_loader = _train_loader(train, 64)
    model = _fresh(trained_state)
    dense_acc = evaluate(model, test)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {
                "algorithm": "magnitude_sparsity",
                "sparsity_init": 0.3,
                # frozen at the first epoch_step: the initial phase trains with fixed masks
                "params": {
                    "schedule": "multistep",
                    "multistep_steps": [1],
                    "multistep_sparsity_levels": [0.3, 0.5],
                    "sparsity_freeze_epoch": 0,
                },
                "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 256}},
            },
            "accuracy_aware_training": _aat(
                maximal_absolute_accuracy_degradation=0.03,
                initial_training_phase_epochs=1,
                patience_epochs=1,
                initial_compression_rate_step=0.2,
                minimal_compression_rate_step=0.1,
                maximal_total_epochs=6,
            ),
        }
    )
    config = register_default_init_args(config, train_loader)
    ctrl, model = create_compressed_model(model, config)
    loop, result, seen = _run_loop(config, ctrl, model, train_loader, test, dense_acc, tmp_path)
    # the initial epoch ran frozen at sparsity_init; the search then set other levels
    assert seen[0] == (pytest.approx(0.3), pytest.approx(0.3, abs=1e-3))
    assert len({round(level, 6) for level, _ in seen}) >= 3
    # magnitude masks are cut at the level exactly (global mode)
    assert all(reached == pytest.approx(level, abs=1e-3) for level, reached in seen)
    _check_settled(loop, ctrl, result, test, dense_acc, 0.03, 1e-3, "magnitude_sparsity")


def test_adaptive_rb_sparsity_settles_within_budget(data, trained_state, tmp_path):
    train, test = data
    train_loader = _train_loader(train, 16)  # RB masks learn over steps: more, smaller batches
    model = _fresh(trained_state)
    dense_acc = evaluate(model, test)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {
                "algorithm": "rb_sparsity",
                "sparsity_init": 0.0,
                "compression_lr_multiplier": 100,
                # level 0.3 from epoch 1 (the freeze is covered by the magnitude test and the unit test)
                "params": {"schedule": "exponential", "sparsity_target": 0.3, "sparsity_target_epoch": 1},
            },
            "accuracy_aware_training": _aat(
                maximal_absolute_accuracy_degradation=0.05,
                initial_training_phase_epochs=3,
                patience_epochs=2,
                initial_compression_rate_step=0.1,
                minimal_compression_rate_step=0.05,
                maximal_total_epochs=8,
            ),
        }
    )
    ctrl, model = create_compressed_model(model, config)
    torch.manual_seed(0)  # the masks are sampled in training
    groups = get_parameter_groups(ctrl, 1e-3)
    assert [g["name"] for g in groups] == ["model", "rb_sparsity"]
    loop, result, seen = _run_loop(config, ctrl, model, train_loader, test, dense_acc, tmp_path)
    initial = [reached for level, reached in seen if level < 0.35]
    assert initial[-1] == pytest.approx(0.3, abs=0.02)  # the initial phase learned its level
    # the masks learn every level the search sets, within 2 %, in one epoch
    search = [(level, reached) for level, reached in seen if level >= 0.35]
    assert len(search) >= 3 and max(level for level, _ in search) >= 0.5
    assert all(reached == pytest.approx(level, abs=0.02) for level, reached in search)
    _check_settled(loop, ctrl, result, test, dense_acc, 0.05, 0.02, "rb_sparsity")


def test_adaptive_magnitude_sparsity_budget_out_of_reach_keeps_the_most_accurate(
    data, trained_state, tmp_path, caplog
):
    train, test = data
    train_loader = _train_loader(train, 64)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {
                "algorithm": "magnitude_sparsity",
                "sparsity_init": 0.7,
                "params": {"sparsity_target": 0.7},
            },
            "accuracy_aware_training": _aat(
                maximal_absolute_accuracy_degradation=0.01,
                initial_training_phase_epochs=1,
                patience_epochs=1,
                initial_compression_rate_step=0.2,
                minimal_compression_rate_step=0.1,
                maximal_total_epochs=4,
            ),
        }
    )
    ctrl, model = create_compressed_model(_fresh(trained_state), config)
    # an accuracy no compressed model reaches: every level is out of budget
    with caplog.at_level("WARNING", logger="nncompress"):
        loop, result, seen = _run_loop(config, ctrl, model, train_loader, test, 1.01, tmp_path)
    stats = loop.statistics
    assert not stats.criterion_met and stats.accuracy_budget < 0
    assert "within the accuracy budget" in caplog.text
    history = loop.runner.compressed_training_history
    assert all(budget < 0 for budget in history.values()) and len(history) >= 2
    # the search went down from the initial level; the kept model is the most accurate one
    assert min(history) < 0.7
    assert stats.compression_rate == pytest.approx(max(history, key=lambda r: (history[r], r)))
    assert ctrl.compression_rate == pytest.approx(stats.compression_rate)
    assert ctrl.reached_sparsity == pytest.approx(stats.compression_rate, abs=1e-3)
    assert evaluate(result, test) == pytest.approx(stats.compressed_accuracy)
    assert json.loads((loop.runner.log_dir / "summary.json").read_text())["criterion_met"] is False


def _ctrl(trained_state, section):
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": section})
    return create_compressed_model(_fresh(trained_state), config)[0]


@pytest.mark.parametrize("algorithm", ["magnitude_sparsity", "rb_sparsity"])
def test_disable_scheduler_lifts_the_schedules_freeze_and_checkpoints_keep_it_lifted(
    trained_state, algorithm
):
    section = {"algorithm": algorithm, "sparsity_init": 0.2, "params": {"sparsity_freeze_epoch": 0}}
    ctrl = _ctrl(trained_state, section)
    ctrl.scheduler.epoch_step()
    assert ctrl.frozen
    frozen_state = ctrl.get_compression_state()["ctrl_state"]
    # with the scheduler running, a frozen state loads frozen
    other = _ctrl(trained_state, section)
    other.load_state(frozen_state)
    assert other.frozen
    if algorithm == "rb_sparsity":
        assert all(m.frozen for m in other.masks) and float(other.loss().detach()) == 0.0

    ctrl.disable_scheduler()
    assert not ctrl.frozen and not ctrl.scheduler_enabled
    ctrl.compression_rate = 0.6  # raised CompressionStateError (magnitude) before
    ctrl.scheduler.epoch_step()  # the disabled schedule neither moves the level nor freezes again
    assert not ctrl.frozen and ctrl.compression_rate == pytest.approx(0.6)
    ctrl.load_state(frozen_state)  # a checkpoint of the initial phase (saved frozen)
    assert not ctrl.frozen
    if algorithm == "magnitude_sparsity":
        assert ctrl.reached_sparsity == pytest.approx(0.6, abs=1e-3)
        ctrl.compression_rate = 0.4
        assert ctrl.reached_sparsity == pytest.approx(0.4, abs=1e-3)
    else:
        assert not any(m.frozen for m in ctrl.masks) and all(m.mask.requires_grad for m in ctrl.masks)
        assert float(ctrl.loss().detach()) > 0.0  # the loss pulls towards the level again


def test_adaptive_mode_with_const_sparsity_is_a_config_error(trained_state):
    ctrl = _ctrl(trained_state, {"algorithm": "const_sparsity"})
    config = {
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "const_sparsity"},
        "accuracy_aware_training": _aat(maximal_absolute_accuracy_degradation=0.01),
    }
    with pytest.raises(ConfigError, match=r"accuracy_aware_training\.mode: .*level can be adjusted"):
        create_accuracy_aware_training_loop(config, ctrl, 0.9)
    # the controller alone (a config without the section's algorithm) is refused too, by name
    config["compression"] = {"algorithm": "magnitude_sparsity"}
    with pytest.raises(ConfigError, match=r"accuracy_aware_training\.mode.*algorithms: const_sparsity"):
        create_accuracy_aware_training_loop(config, ctrl, 0.9)
