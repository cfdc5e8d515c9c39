"""A controller and a model made of plain Python values, for deterministic accuracy-aware loop tests.

The "accuracy" is a function of the level the controller is set to and of how many epochs the model
was trained, so every decision of the loop can be predicted exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nncompress.api.compression import (
    BaseCompressionScheduler,
    CompressionAlgorithmController,
    CompressionLoss,
    CompressionStage,
    NNCFStatistics,
    Statistics,
)


class FakeLoss(CompressionLoss):
    def calculate(self, *args: Any, **kwargs: Any) -> float:
        return 0.0


@dataclass
class FakeStatistics(Statistics):
    level: float
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kept_ratio(self) -> float:
        return 1.0 - self.level

    def to_str(self) -> str:
        return f"fake level {self.level:.4f}"


class FakeController(CompressionAlgorithmController):
    """``compression_rate`` settable (unless ``settable=False``); stage always fully compressed."""

    def __init__(self, model: Any, rate: float = 0.3, name: str = "filter_pruning"):
        super().__init__(model)
        self.algorithm_name = name
        self._rate = rate
        self._scheduler = BaseCompressionScheduler()
        self.scheduler_disabled = False
        self.rates_set: list[float] = []

    @property
    def compression_rate(self) -> float:
        return self._rate

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.rates_set.append(value)
        self._rate = value

    @property
    def loss(self) -> FakeLoss:
        return FakeLoss()

    @property
    def scheduler(self) -> BaseCompressionScheduler:
        return self._scheduler

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        stats = NNCFStatistics()
        stats.register(self.algorithm_name, FakeStatistics(self._rate, [{"name": "conv", "kept": 3}]))
        return stats

    def export_model(self, save_path: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def get_compression_state(self) -> dict[str, Any]:
        return {"builder_state": {}, "ctrl_state": self.get_state()}

    def get_state(self) -> dict[str, Any]:
        return {self.algorithm_name: {"rate": self._rate}}

    def load_state(self, state: dict[str, Any]) -> None:
        self._rate = state[self.algorithm_name]["rate"]

    def disable_scheduler(self) -> None:
        self.scheduler_disabled = True


class FixedController(FakeController):
    """A controller whose level cannot be set (like quantization)."""

    compression_rate = None  # type: ignore[assignment]


class FakeModel:
    """Remembers the level it was last trained at and how many epochs it was trained."""

    def __init__(self) -> None:
        self.epochs = 0
        self.trained_at: list[float] = []


class FakeOptimizer:
    def __init__(self, lr: float):
        self.param_groups = [{"lr": lr}]


class FakeLRScheduler:
    def __init__(self) -> None:
        self.base_lrs = [1.0]
        self.steps = 0

    def step(self) -> None:
        self.steps += 1


class Recorder:
    """The user's functions, recording every call."""

    def __init__(self, ctrl: FakeController, accuracy):
        self.ctrl = ctrl
        self.accuracy = accuracy  # (level, epochs trained) -> accuracy
        self.train_calls: list[dict[str, Any]] = []
        self.validate_epochs: list[int] = []
        self.schedulers: list[FakeLRScheduler] = []

    def train_epoch_fn(self, compression_ctrl, model, epoch=None, optimizer=None, lr_scheduler=None):
        assert compression_ctrl is self.ctrl
        model.epochs += 1
        model.trained_at.append(self.ctrl.compression_rate)
        self.train_calls.append(
            {"epoch": epoch, "rate": self.ctrl.compression_rate, "lr": optimizer.param_groups[0]["lr"]}
        )
        return 0.5

    def validate_fn(self, model, epoch=None):
        self.validate_epochs.append(epoch)
        return self.accuracy(self.ctrl.compression_rate, model.epochs)

    def configure_optimizers_fn(self):
        scheduler = FakeLRScheduler()
        self.schedulers.append(scheduler)
        return FakeOptimizer(1.0), scheduler


def aat_config(mode: str, algorithm: str = "filter_pruning", **params: Any) -> dict[str, Any]:
    return {
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": algorithm},
        "accuracy_aware_training": {"mode": mode, "params": params},
    }
