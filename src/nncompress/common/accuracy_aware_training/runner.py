"""Runners: the state of an accuracy-aware run and the calls into the user's functions.

A runner wraps ``train_epoch_fn``, ``validate_fn``, ``configure_optimizers_fn`` and friends, counts
epochs, tracks the best accuracy, keeps the best checkpoints and writes the log folder. The loops
in :mod:`.training_loop` only decide *what* to do next. Nothing here imports a framework: learning
rates are changed through the optimizer's ``param_groups`` and the scheduler's ``base_lrs`` (the
PyTorch protocol, duck-typed), and checkpoints go through :mod:`.checkpoint`.

The user's functions are called as in NNCF 2.x::

    train_epoch_fn(compression_ctrl, model, epoch=..., optimizer=..., lr_scheduler=...)  # -> loss or None
    validate_fn(model, epoch=...)                                                         # -> accuracy
    configure_optimizers_fn()                                   # -> (optimizer, lr_scheduler)
    dump_checkpoint_fn(model, compression_ctrl, runner, save_dir)
    load_checkpoint_fn(model, checkpoint_path)
    early_stopping_fn(accuracy)                                                           # -> bool
    update_learning_rate_fn(lr_scheduler, training_epoch_count, accuracy, loss)
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nncompress.api.compression import CompressionAlgorithmController, CompressionStage
from nncompress.common.accuracy_aware_training.checkpoint import (
    CheckpointIO,
    checkpoint_io_for,
    is_torch_module,
)
from nncompress.common.accuracy_aware_training.log_writer import AccuracyAwareLogWriter
from nncompress.common.accuracy_aware_training.params import AccuracyAwareTrainingParams, check_accuracy

__all__ = [
    "AccuracyAwareTrainingRunner",
    "AdaptiveCompressionLevelTrainingRunner",
    "compression_rate_of",
    "make_run_dir",
]

logger = logging.getLogger("nncompress")

BEST_CHECKPOINT = "acc_aware_checkpoint_best"
LAST_CHECKPOINT = "acc_aware_checkpoint_last"
EPOCHS_STAGE = "Accuracy-aware training (epochs)"


def make_run_dir(log_dir: str | Path) -> Path:
    """``log_dir/accuracy_aware_training/<YYYY-mm-dd__HH-MM-SS>`` (NNCF's layout), created; a
    ``_2``, ``_3``... suffix keeps two runs started in the same second apart."""
    stamp = f"{datetime.datetime.now():%Y-%m-%d__%H-%M-%S}"
    base = Path(log_dir) / "accuracy_aware_training"
    path = base / stamp
    n = 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base / f"{stamp}_{n}"


def compression_rate_of(ctrl: CompressionAlgorithmController) -> float | None:
    """``ctrl.compression_rate``, or the one child's that has it in a composite (None otherwise)."""
    rate = getattr(ctrl, "compression_rate", None)
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        return float(rate)
    for child in getattr(ctrl, "child_ctrls", ()):
        rate = getattr(child, "compression_rate", None)
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            return float(rate)
    return None


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, tuple | list) else [x]


class AccuracyAwareTrainingRunner:
    """Runner of the early-exit loop (and base of the adaptive one); attribute names follow NNCF's."""

    def __init__(
        self,
        params: AccuracyAwareTrainingParams,
        uncompressed_model_accuracy: float,
        verbose: bool = True,
        dump_checkpoints: bool = True,
        lr_updates_needed: bool = True,
    ):
        self.params = params
        self.uncompressed_model_accuracy = check_accuracy(
            uncompressed_model_accuracy, "uncompressed_model_accuracy"
        )
        self.maximal_relative_accuracy_drop = params.maximal_relative_accuracy_degradation
        self.maximal_absolute_accuracy_drop = params.maximal_absolute_accuracy_degradation
        self.maximal_total_epochs = params.maximal_total_epochs
        self.minimal_tolerable_accuracy = params.minimal_tolerable_accuracy(self.uncompressed_model_accuracy)
        self.verbose = verbose
        self.dump_checkpoints = dump_checkpoints
        self.lr_updates_needed = lr_updates_needed
        self.base_lr_reduction_factor_during_search = 1.0
        self.is_higher_metric_better = True

        self.optimizer: Any = None
        self.lr_scheduler: Any = None
        self.training_epoch_count = 0
        self.cumulative_epoch_count = 0
        self.best_val_metric_value = -math.inf
        self.current_val_metric_value = -math.inf
        self.current_loss: Any = None

        self._train_epoch_fn: Callable[..., Any] | None = None
        self._validate_fn: Callable[..., Any] | None = None
        self._configure_optimizers_fn: Callable[[], Any] | None = None
        self._dump_checkpoint_fn: Callable[..., Any] | None = None
        self._load_checkpoint_fn: Callable[[Any, Path], Any] | None = None
        self._early_stopping_fn: Callable[[float], bool] | None = None
        self._update_learning_rate_fn: Callable[..., Any] | None = None
        self._tensorboard_writer: Any = None
        self._checkpoint_io: CheckpointIO | None = None
        # (path, compression rate, accuracy) of the best fully compressed model so far
        self._best_checkpoint: tuple[Path, float | None, float] | None = None
        self.log_dir: Path | None = None
        self.log_writer: AccuracyAwareLogWriter | None = None
        # (stage, epochs done, epochs at most): set by the training loop to draw its epoch bar
        self.progress: Callable[[str, int, int | None], None] | None = None

    # -- setup ------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "early_exit"

    def initialize_training_loop_fns(
        self,
        train_epoch_fn: Callable[..., Any],
        validate_fn: Callable[..., Any],
        configure_optimizers_fn: Callable[[], Any] | None = None,
        dump_checkpoint_fn: Callable[..., Any] | None = None,
        load_checkpoint_fn: Callable[[Any, Path], Any] | None = None,
        early_stopping_fn: Callable[[float], bool] | None = None,
        update_learning_rate_fn: Callable[..., Any] | None = None,
    ) -> None:
        """Register the user's functions (TypeError naming the argument when one is not callable)."""
        named = {
            "train_epoch_fn": train_epoch_fn,
            "validate_fn": validate_fn,
            "configure_optimizers_fn": configure_optimizers_fn,
            "dump_checkpoint_fn": dump_checkpoint_fn,
            "load_checkpoint_fn": load_checkpoint_fn,
            "early_stopping_fn": early_stopping_fn,
            "update_learning_rate_fn": update_learning_rate_fn,
        }
        for name, fn in named.items():
            required = name in ("train_epoch_fn", "validate_fn")
            if (fn is None and required) or (fn is not None and not callable(fn)):
                raise TypeError(f"run(): '{name}' must be a function, got {type(fn).__name__}")
        self._train_epoch_fn = train_epoch_fn
        self._validate_fn = validate_fn
        self._configure_optimizers_fn = configure_optimizers_fn
        self._dump_checkpoint_fn = dump_checkpoint_fn
        self._load_checkpoint_fn = load_checkpoint_fn
        self._early_stopping_fn = early_stopping_fn
        self._update_learning_rate_fn = update_learning_rate_fn

    def initialize_logging(self, log_dir: str | Path, tensorboard_writer: Any = None) -> None:
        """Create this run's folder under ``log_dir`` (see :func:`make_run_dir`)."""
        self.log_dir = make_run_dir(log_dir)
        self._tensorboard_writer = tensorboard_writer
        self.log_writer = AccuracyAwareLogWriter(self.log_dir, self.mode)
        logger.info("Accuracy-aware training: logs and checkpoints go to %s", self.log_dir)

    @property
    def checkpoint_save_dir(self) -> Path:
        if self.log_dir is None:
            raise RuntimeError("the runner's log folder is not set: call initialize_logging() first")
        return self.log_dir

    # -- training -----------------------------------------------------------------------------------
    def configure_optimizers(self) -> None:
        if self._configure_optimizers_fn is None:
            self.optimizer, self.lr_scheduler = None, None
            return
        result = self._configure_optimizers_fn()
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise TypeError(
                "configure_optimizers_fn() must return (optimizer, lr_scheduler) (the scheduler may be "
                f"None), got {type(result).__name__}"
            )
        self.optimizer, self.lr_scheduler = result

    def train_epoch(self, model: Any, compression_controller: CompressionAlgorithmController) -> None:
        """``ctrl.scheduler.epoch_step()``, then one epoch of the user's training."""
        compression_controller.scheduler.epoch_step()
        assert self._train_epoch_fn is not None
        self._report_epochs()
        self.current_loss = self._train_epoch_fn(
            compression_controller,
            model,
            epoch=self.cumulative_epoch_count,
            optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler,
        )
        self.training_epoch_count += 1
        self.cumulative_epoch_count += 1
        self._report_epochs()

    def _report_epochs(self) -> None:
        if self.progress is not None:
            self.progress(EPOCHS_STAGE, self.cumulative_epoch_count, self.params.maximal_total_epochs)

    def validate(self, model: Any) -> float:
        """The user's metric for ``model`` (higher is better); updates the best value."""
        assert self._validate_fn is not None
        with self._no_grad(model):
            value = self._validate_fn(model, epoch=self.cumulative_epoch_count)
        self.current_val_metric_value = check_accuracy(
            value, f"validate_fn (epoch {self.cumulative_epoch_count})"
        )
        if self.current_val_metric_value > self.best_val_metric_value:
            self.best_val_metric_value = self.current_val_metric_value
        self.add_tensorboard_scalar(
            "val/accuracy_aware/metric_value", self.current_val_metric_value, self.cumulative_epoch_count
        )
        return self.current_val_metric_value

    @staticmethod
    def _no_grad(model: Any) -> contextlib.AbstractContextManager:
        if is_torch_module(model):
            import torch

            return torch.no_grad()
        return contextlib.nullcontext()

    def update_learning_rate(self) -> None:
        """``update_learning_rate_fn(...)`` if given, else one ``lr_scheduler.step()`` per epoch
        (``step(best accuracy)`` for ReduceLROnPlateau)."""
        if self._update_learning_rate_fn is not None:
            self._update_learning_rate_fn(
                self.lr_scheduler, self.training_epoch_count, self.current_val_metric_value, self.current_loss
            )
            return
        if not self.lr_updates_needed:
            return
        for scheduler in _as_list(self.lr_scheduler):
            if type(scheduler).__name__ == "ReduceLROnPlateau":
                scheduler.step(self.best_val_metric_value)
            else:
                scheduler.step()

    def reset_training(self) -> None:
        """New optimizer and scheduler (learning rates times the search's reduction factor),
        epoch count and best accuracy reset: training at a new compression level starts afresh."""
        self.configure_optimizers()
        factor = self.base_lr_reduction_factor_during_search
        if factor != 1.0:
            for optimizer in _as_list(self.optimizer):
                for group in getattr(optimizer, "param_groups", ()):
                    group["lr"] *= factor
            for scheduler in _as_list(self.lr_scheduler):
                for attr in ("base_lrs", "init_lr"):
                    if isinstance(getattr(scheduler, attr, None), list):
                        setattr(scheduler, attr, [lr * factor for lr in getattr(scheduler, attr)])
        self.training_epoch_count = 0
        self.best_val_metric_value = -math.inf
        self.current_val_metric_value = -math.inf

    def stop_training(self, compression_controller: CompressionAlgorithmController) -> bool:
        """``early_stopping_fn(accuracy)`` once the model is fully compressed (False without one)."""
        if self._early_stopping_fn is not None and self.is_model_fully_compressed(compression_controller):
            return bool(self._early_stopping_fn(self.current_val_metric_value))
        return False

    def is_model_fully_compressed(self, compression_controller: CompressionAlgorithmController) -> bool:
        return compression_controller.compression_stage() == CompressionStage.FULLY_COMPRESSED

    # -- accuracy figures ---------------------------------------------------------------------------
    @property
    def accuracy_budget(self) -> float:
        """Current accuracy minus the minimal tolerable one (negative: over budget)."""
        return self.current_val_metric_value - self.minimal_tolerable_accuracy

    def current_compression_rate(
        self, compression_controller: CompressionAlgorithmController
    ) -> float | None:
        return compression_rate_of(compression_controller)

    # -- statistics, checkpoints, logs --------------------------------------------------------------
    def dump_statistics(self, model: Any, compression_controller: CompressionAlgorithmController) -> None:
        """Log the statistics, save checkpoints, and append this epoch to the log folder."""
        statistics = compression_controller.statistics()
        if self.verbose:
            logger.info("%s", statistics.to_str())
        is_best = self.dump_checkpoint(model, compression_controller)
        accuracy = self.current_val_metric_value
        if self.log_writer is not None:
            self.log_writer.write_epoch(
                epoch=self.cumulative_epoch_count,
                compression_rate=self.current_compression_rate(compression_controller),
                accuracy=accuracy,
                accuracy_drop=self.uncompressed_model_accuracy - accuracy,
                is_best=is_best,
                statistics=statistics,
            )

    def _is_best_now(self, compression_controller: CompressionAlgorithmController) -> bool:
        return self.best_val_metric_value == self.current_val_metric_value and self.is_model_fully_compressed(
            compression_controller
        )

    def dump_checkpoint(self, model: Any, compression_controller: CompressionAlgorithmController) -> bool:
        """The user's ``dump_checkpoint_fn`` (or our ``acc_aware_checkpoint_last``) when checkpoints are
        dumped; the best checkpoint when this epoch is the best so far. Returns whether it was."""
        is_best = self._is_best_now(compression_controller)
        if self.dump_checkpoints or is_best:
            if self._dump_checkpoint_fn is not None:
                self._dump_checkpoint_fn(model, compression_controller, self, self.checkpoint_save_dir)
            elif self.dump_checkpoints:
                self._save_checkpoint(model, compression_controller, LAST_CHECKPOINT)
        if is_best:
            return self._save_best_checkpoint(model, compression_controller)
        return False

    def _io(self, model: Any) -> CheckpointIO:
        if self._checkpoint_io is None:
            self._checkpoint_io = checkpoint_io_for(model)
        return self._checkpoint_io

    def _save_checkpoint(
        self, model: Any, compression_controller: CompressionAlgorithmController, stem: str
    ) -> Path:
        """Save to ``<log dir>/<stem><suffix of the checkpoint mechanism>``; returns the path."""
        io = self._io(model)
        path = self.checkpoint_save_dir / f"{stem}{io.suffix}"
        io.save(
            model,
            compression_controller,
            path,
            {
                "epoch": self.cumulative_epoch_count,
                "best_metric_val": self.best_val_metric_value,
                "current_val_metric_value": self.current_val_metric_value,
                "compression_rate": self.current_compression_rate(compression_controller),
            },
        )
        return path

    def _save_best_checkpoint(
        self, model: Any, compression_controller: CompressionAlgorithmController
    ) -> bool:
        path = self._save_checkpoint(model, compression_controller, BEST_CHECKPOINT)
        self._best_checkpoint = (
            path,
            self.current_compression_rate(compression_controller),
            self.current_val_metric_value,
        )
        logger.info("Saved the best model to %s", path)
        return True

    def _load_checkpoint(
        self, model: Any, compression_controller: CompressionAlgorithmController, path: Path
    ) -> Any:
        if self._load_checkpoint_fn is not None:
            self._load_checkpoint_fn(model, path)
            return model
        return self._io(model).load(model, compression_controller, path)

    def load_best_checkpoint(
        self, model: Any, compression_controller: CompressionAlgorithmController, final: bool = True
    ) -> tuple[Any, float | None]:
        """``(model restored to the best checkpoint, its compression rate)``; ``model`` unchanged
        (with a warning when ``final``) when no fully compressed epoch was ever saved as best."""
        if self._best_checkpoint is None:
            if final:
                logger.warning(
                    "No fully compressed model was saved as the best checkpoint; keeping the model as it is"
                )
            return model, self.current_compression_rate(compression_controller)
        path, rate, _ = self._best_checkpoint
        logger.info("Loading the best checkpoint found during training: %s", path)
        return self._load_checkpoint(model, compression_controller, path), rate

    def add_tensorboard_scalar(self, key: str, data: float, step: int) -> None:
        if self.verbose and self._tensorboard_writer is not None:
            self._tensorboard_writer.add_scalar(key, data, step)


class AdaptiveCompressionLevelTrainingRunner(AccuracyAwareTrainingRunner):
    """Runner of the adaptive loop: keeps one best checkpoint per compression level tried and the
    history ``(level, accuracy budget)`` the search is based on."""

    def __init__(
        self,
        params: AccuracyAwareTrainingParams,
        uncompressed_model_accuracy: float,
        adaptive_controller: CompressionAlgorithmController,
        verbose: bool = True,
        dump_checkpoints: bool = True,
        lr_updates_needed: bool = True,
        minimal_compression_rate: float = 0.0,
        maximal_compression_rate: float = 0.95,
    ):
        super().__init__(params, uncompressed_model_accuracy, verbose, dump_checkpoints, lr_updates_needed)
        self.adaptive_controller = adaptive_controller
        self.compression_rate_step = params.initial_compression_rate_step
        self.compression_rate_step_reduction_factor = params.compression_rate_step_reduction_factor
        self.lr_reduction_factor = params.lr_reduction_factor
        self.minimal_compression_rate_step = params.minimal_compression_rate_step
        self.patience_epochs = params.patience_epochs
        self.initial_training_phase_epochs = params.initial_training_phase_epochs
        self.minimal_compression_rate = minimal_compression_rate
        self.maximal_compression_rate = maximal_compression_rate
        self.was_compression_increased_on_prev_step: float | None = None
        # the loop sets levels itself once the search starts; the scheduler's target no longer counts
        self.search_started = False
        self._compression_rate_target: float | None = None
        self._best_checkpoints: dict[float, tuple[Path, float]] = {}
        self._compressed_training_history: list[tuple[float, float]] = []

    @property
    def mode(self) -> str:
        return "adaptive_compression_level"

    @property
    def compression_rate_target(self) -> float:
        """The level the loop is training at (the controller's until the search sets one)."""
        if self._compression_rate_target is None:
            # rounded as the setter does: the initial phase's level (e.g. 1 - 0.7 from RB) and the
            # same level set by the search must be one key, one checkpoint file
            return round(float(self.adaptive_controller.compression_rate), 10)  # type: ignore[attr-defined]
        return self._compression_rate_target

    @compression_rate_target.setter
    def compression_rate_target(self, value: float) -> None:
        self._compression_rate_target = round(float(value), 10)  # no 0.30000000000000004 keys

    def current_compression_rate(
        self, compression_controller: CompressionAlgorithmController
    ) -> float | None:
        return self.compression_rate_target

    def is_model_fully_compressed(self, compression_controller: CompressionAlgorithmController) -> bool:
        if self.search_started:
            return True
        return super().is_model_fully_compressed(compression_controller)

    def dump_statistics(self, model: Any, compression_controller: CompressionAlgorithmController) -> None:
        self.update_training_history(self.compression_rate_target, self.current_val_metric_value)
        super().dump_statistics(model, compression_controller)

    def update_training_history(self, compression_rate: float, metric_value: float) -> None:
        self._compressed_training_history.append(
            (compression_rate, metric_value - self.minimal_tolerable_accuracy)
        )

    @property
    def compressed_training_history(self) -> dict[float, float]:
        """Level -> accuracy budget of the last epoch trained at that level."""
        return dict(self._compressed_training_history)

    def get_compression_rates_with_positive_acc_budget(self) -> list[float]:
        return sorted({rate for rate, budget in self._compressed_training_history if budget >= 0})

    def _save_best_checkpoint(
        self, model: Any, compression_controller: CompressionAlgorithmController
    ) -> bool:
        rate = self.compression_rate_target
        budget = self.best_val_metric_value - self.minimal_tolerable_accuracy
        kept = self._best_checkpoints.get(rate)
        if kept is not None and kept[1] >= budget:
            return False
        path = self._save_checkpoint(model, compression_controller, f"{BEST_CHECKPOINT}_{rate:.4f}")
        self._best_checkpoints[rate] = (path, budget)
        logger.info("Saved the best model at compression rate %.3f to %s", rate, path)
        return True

    def best_checkpoint_choice(self) -> tuple[float, bool] | None:
        """``(level, within budget)`` of the checkpoint to return: the highest level with a
        non-negative accuracy budget, else (budget never met) the level with the largest budget;
        None when nothing was saved."""
        within = [
            r for r in self.get_compression_rates_with_positive_acc_budget() if r in self._best_checkpoints
        ]
        if within:
            return max(within), True
        if not self._best_checkpoints:
            return None
        rate = max(self._best_checkpoints, key=lambda r: (self._best_checkpoints[r][1], r))
        return rate, False

    def load_best_checkpoint(
        self, model: Any, compression_controller: CompressionAlgorithmController, final: bool = True
    ) -> tuple[Any, float | None]:
        choice = self.best_checkpoint_choice()
        if choice is None:
            if final:
                logger.warning("No checkpoint was saved during training; keeping the model as it is")
            return model, self.compression_rate_target
        rate, within = choice
        if not within and final:
            logger.warning(
                "Could not produce a compressed model within the accuracy budget (minimal tolerable "
                "accuracy %.4f); returning the most accurate model kept (compression rate %.3f, accuracy "
                "budget %.4f). More epochs or a larger degradation allowance may help.",
                self.minimal_tolerable_accuracy,
                rate,
                self._best_checkpoints[rate][1],
            )
        path = self._best_checkpoints[rate][0]
        logger.info("Loading the best checkpoint found during training: %s", path)
        model = self._load_checkpoint(model, compression_controller, path)
        return model, rate

    def publish_best(self, rate: float) -> Path | None:
        """Copy the chosen checkpoint to ``acc_aware_checkpoint_best<suffix>`` (one name for both modes)."""
        kept = self._best_checkpoints.get(rate)
        if kept is None or not kept[0].exists():
            return None
        target = kept[0].with_name(BEST_CHECKPOINT + kept[0].suffix)
        shutil.copyfile(kept[0], target)
        return target
