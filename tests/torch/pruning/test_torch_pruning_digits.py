"""End to end on the digits CNNs: train, prune with a schedule while fine-tuning, strip, check the
accuracy and the size, save as record + state_dict and load into a fresh model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.data import digits_loaders, evaluate, train_digits_model  # noqa: E402
from examples.models import DigitsCNN, DigitsResNet  # noqa: E402
from nncompress.config import NNCFConfig  # noqa: E402
from nncompress.pruning import PruningRecord  # noqa: E402
from nncompress.torch.initialization import register_default_init_args  # noqa: E402
from nncompress.torch.model_creation import create_compressed_model  # noqa: E402
from nncompress.torch.pruning import apply_pruning_record  # noqa: E402


@pytest.fixture(scope="module")
def loaders():
    return digits_loaders(batch_size=64, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny batches: several threads only add synchronization, and stall on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fine_tune(model, ctrl, loader, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        model.train()
        for x, y in loader:
            ctrl.scheduler.step()
            opt.zero_grad()
            loss = loss_fn(model(x), y) + ctrl.loss()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@pytest.mark.parametrize("cls", [DigitsCNN, DigitsResNet])
def test_prune_fine_tune_strip_reload(cls, loaders, tmp_path):
    train, test = loaders
    torch.manual_seed(0)
    model = train_digits_model(cls(), epochs=5, train_loader=train)
    dense_acc = evaluate(model, test)
    dense_params = sum(p.numel() for p in model.parameters())
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {
                "algorithm": "filter_pruning",
                "params": {
                    "schedule": "baseline",
                    "pruning_target": 0.5,
                    "pruning_steps": 1,
                    "prune_downsample_convs": True,
                },
                "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 256}},
            },
        }
    )
    config = register_default_init_args(config, train)
    ctrl, model = create_compressed_model(model, config)
    print(ctrl.describe_groups())
    _fine_tune(model, ctrl, train, epochs=3)
    assert ctrl.pruning_level == pytest.approx(0.5)
    masked_acc = evaluate(model, test)
    stripped = ctrl.strip()
    stripped_acc = evaluate(stripped, test)
    assert stripped_acc == pytest.approx(masked_acc)
    assert stripped_acc >= dense_acc - 0.05 and stripped_acc > 0.92
    params = sum(p.numel() for p in stripped.parameters())
    assert params < 0.6 * dense_params
    print(ctrl.statistics().to_str())

    ctrl.pruning_record().save(tmp_path / "record.json")
    torch.save(stripped.state_dict(), tmp_path / "pruned.pt")
    fresh = apply_pruning_record(cls(), PruningRecord.load(tmp_path / "record.json"))
    fresh.load_state_dict(torch.load(tmp_path / "pruned.pt"))
    assert evaluate(fresh, test) == pytest.approx(stripped_acc)
