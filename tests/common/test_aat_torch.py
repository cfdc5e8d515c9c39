"""Accuracy-aware training end to end on PyTorch: filter pruning searched by the adaptive loop, and
quantization fine-tuned by the early-exit loop, on scikit-learn's digits (seconds on one core)."""

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
from nncompress.common.accuracy_aware_training import create_accuracy_aware_training_loop  # noqa: E402
from nncompress.config import NNCFConfig  # noqa: E402
from nncompress.errors import ConfigError  # noqa: E402
from nncompress.torch.initialization import register_default_init_args  # noqa: E402
from nncompress.torch.model_creation import create_compressed_model  # noqa: E402

RECORD_KEYS = {"epoch", "mode", "compression_rate", "accuracy", "accuracy_drop", "is_best", "statistics"}


@pytest.fixture(scope="module")
def data():
    x_tr, y_tr, x_te, y_te = digits_tensors(0)
    gen = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(x_tr, y_tr), batch_size=64, shuffle=True, generator=gen)
    test = DataLoader(TensorDataset(x_te, y_te), batch_size=256)
    return train, test


@pytest.fixture(scope="module")
def trained_state(data):
    train, _ = data
    torch.manual_seed(0)
    model = train_digits_model(DigitsCNN(width=8), epochs=6, train_loader=train)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fresh(trained_state) -> nn.Module:
    model = DigitsCNN(width=8)
    model.load_state_dict(trained_state)
    return model.eval()


def _functions(train_loader, test_loader, lr: float = 1e-3):
    calls = {"train": 0, "validate": 0}
    loss_fn = nn.CrossEntropyLoss()

    def train_epoch_fn(compression_ctrl, model, epoch=None, optimizer=None, lr_scheduler=None):
        calls["train"] += 1
        model.train()
        for x, y in train_loader:
            compression_ctrl.scheduler.step()
            optimizer.zero_grad()
            loss = loss_fn(model(x), y) + compression_ctrl.loss()
            loss.backward()
            optimizer.step()

    def validate_fn(model, epoch=None):
        calls["validate"] += 1
        return evaluate(model, test_loader)

    def configure_optimizers_fn():
        optimizer = torch.optim.Adam(model_ref[0].parameters(), lr=lr)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)

    model_ref: list[nn.Module] = []
    return calls, model_ref, train_epoch_fn, validate_fn, configure_optimizers_fn


def _pruning_config(**aat_params) -> NNCFConfig:
    return NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {
                "algorithm": "filter_pruning",
                "pruning_init": 0.2,
                "params": {"schedule": "baseline", "pruning_target": 0.2, "pruning_steps": 1},
                "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 256}},
            },
            "accuracy_aware_training": {"mode": "adaptive_compression_level", "params": aat_params},
        }
    )


def test_adaptive_filter_pruning_settles_within_budget(data, trained_state, tmp_path):
    train, test = data
    model = _fresh(trained_state)
    dense_acc = evaluate(model, test)
    dense_params = sum(p.numel() for p in model.parameters())
    config = register_default_init_args(
        _pruning_config(
            maximal_absolute_accuracy_degradation=0.05,
            initial_training_phase_epochs=1,
            patience_epochs=1,
            initial_compression_rate_step=0.2,
            minimal_compression_rate_step=0.1,
            maximal_total_epochs=6,
        ),
        train,
    )
    ctrl, model = create_compressed_model(model, config)
    calls, model_ref, train_fn, validate_fn, optim_fn = _functions(train, test)
    model_ref.append(model)
    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=dense_acc)
    result = loop.run(model, train_fn, validate_fn, optim_fn, log_dir=tmp_path)

    stats = loop.statistics
    assert result is model  # a torch model is restored in place
    assert stats.criterion_met, stats.to_str()
    assert 0.2 <= stats.compression_rate < 0.95
    assert ctrl.compression_rate == pytest.approx(stats.compression_rate)
    # the returned model is the one the statistics describe, within the budget
    assert evaluate(result, test) == pytest.approx(stats.compressed_accuracy)
    assert stats.compressed_accuracy >= dense_acc - 0.05
    assert 1 <= calls["train"] <= 6
    # the highest level tried within budget is the one returned
    history = loop.runner.compressed_training_history
    within = [rate for rate, budget in loop.runner._compressed_training_history if budget >= 0]
    assert stats.compression_rate == max(within)
    assert any(budget < 0 for budget in history.values()) or loop.runner.compression_rate_step < 0.1
    stripped = ctrl.strip()
    assert sum(p.numel() for p in stripped.parameters()) < dense_params

    # the log folder
    run_dir = loop.runner.log_dir
    assert run_dir.parent == tmp_path / "accuracy_aware_training"
    records = [json.loads(line) for line in (run_dir / "compression_stats.jsonl").read_text().splitlines()]
    assert len(records) == calls["train"] + 1  # epoch 0 is the validation before any training
    for rec in records:
        assert set(rec) == RECORD_KEYS
        assert rec["mode"] == "adaptive_compression_level"
        assert isinstance(rec["epoch"], int) and isinstance(rec["is_best"], bool)
        assert rec["accuracy_drop"] == pytest.approx(dense_acc - rec["accuracy"])
        assert rec["statistics"]["filter_pruning"]["pruning_level"] == pytest.approx(rec["compression_rate"])
    assert [r["epoch"] for r in records] == list(range(len(records)))
    text = (run_dir / "compression_stats.txt").read_text()
    assert text.count("Statistics of the filter_pruning algorithm") == len(records)
    assert (run_dir / "accuracy_vs_compression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = torch.load(run_dir / "acc_aware_checkpoint_best.pth", weights_only=False)
    assert set(best["state_dict"]) == set(model.state_dict())
    assert best["compression_rate"] == pytest.approx(stats.compression_rate)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["compression_rate"] == pytest.approx(stats.compression_rate)
    assert summary["best_checkpoint"] == "acc_aware_checkpoint_best.pth"


def test_early_exit_quantization_stops_as_soon_as_within_budget(data, trained_state, tmp_path):
    train, test = data
    model = _fresh(trained_state)
    dense_acc = evaluate(model, test)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {
                "algorithm": "quantization",
                "initializer": {
                    "range": {"num_init_samples": 128},
                    "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
                },
            },
            "accuracy_aware_training": {
                "mode": "early_exit",
                "params": {"maximal_relative_accuracy_degradation": 1.0, "maximal_total_epochs": 3},
            },
        }
    )
    config = register_default_init_args(config, train)
    ctrl, model = create_compressed_model(model, config)
    calls, model_ref, train_fn, validate_fn, optim_fn = _functions(train, test, lr=1e-4)
    model_ref.append(model)
    loop = create_accuracy_aware_training_loop(config, ctrl, dense_acc)
    loop.run(model, train_fn, validate_fn, optim_fn, log_dir=tmp_path)
    records = [
        json.loads(line)
        for line in (loop.runner.log_dir / "compression_stats.jsonl").read_text().splitlines()
    ]
    minimal = dense_acc * 0.99
    within = [r["accuracy"] >= minimal for r in records]
    # every epoch before the last was out of budget; it stopped at the first one within, or at 3 epochs
    assert not any(within[:-1])
    assert within[-1] or len(records) == 4
    assert calls["train"] == len(records) - 1
    assert loop.statistics.criterion_met == any(within)
    assert all(r["compression_rate"] is None and "quantization" in r["statistics"] for r in records)
    assert (loop.runner.log_dir / "acc_aware_checkpoint_best.pth").exists()


def test_adaptive_mode_with_quantization_only_is_a_config_error(data, trained_state):
    train, _ = data
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 64}}},
        }
    )
    config = register_default_init_args(config, train)
    ctrl, _ = create_compressed_model(_fresh(trained_state), config)
    aat = dict(_pruning_config(maximal_absolute_accuracy_degradation=0.01))
    with pytest.raises(ConfigError, match=r"accuracy_aware_training\.mode.*algorithms: quantization"):
        create_accuracy_aware_training_loop(aat, ctrl, 0.9)
