"""The accuracy-aware training loops of NNCF 2.x: early exit, and adaptive compression level.

Both take the config, the compression controller and the accuracy of the uncompressed model, and
drive the user's own training and validation functions (see :mod:`.runner` for how they are
called). ``loop.run(...)`` returns the best model; ``loop.statistics`` tells what was reached
(``criterion_met`` False: the accuracy budget could not be met) and ``loop.runner`` holds the
details (``log_dir``, ``cumulative_epoch_count``, ``compressed_training_history``...).

- **early_exit**: validate the compressed model, then fine-tune one epoch at a time; stop as soon
  as the model is fully compressed and its accuracy is within the budget, else after
  ``maximal_total_epochs``. Returns the most accurate fully compressed model seen.
- **adaptive_compression_level** (filter pruning, sparsity): an initial early-exit phase of
  ``initial_training_phase_epochs`` at the configured level, then a search: while the model is
  within budget the level goes up by the step; when it is out of budget for ``patience_epochs``
  epochs the level goes down; every change of direction multiplies the step by
  ``compression_rate_step_reduction_factor`` (and the learning rate of later restarts by
  ``lr_reduction_factor``). The search ends when the step falls below
  ``minimal_compression_rate_step``, the level leaves ``[minimal_compression_rate,
  maximal_compression_rate]`` or ``maximal_total_epochs`` (counting the initial phase) are spent.
  Each new level starts from the best checkpoint so far with a fresh optimizer
  (``configure_optimizers_fn``). Returns the model at the highest level within budget; when no
  level was, the most accurate model kept, with a warning and ``statistics.criterion_met`` False.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nncompress.api.compression import CompressionAlgorithmController
from nncompress.common.accuracy_aware_training.params import (
    SECTION,
    AccuracyAwareTrainingError,
    AccuracyAwareTrainingParams,
    read_params,
)
from nncompress.common.accuracy_aware_training.runner import (
    AccuracyAwareTrainingRunner,
    AdaptiveCompressionLevelTrainingRunner,
)
from nncompress.common.accuracy_aware_training.statistics import TrainingLoopStatistics
from nncompress.config.schema import ALGORITHM_NAMES
from nncompress.config.semantic_checks import ADAPTIVE_LEVEL_ALGORITHMS
from nncompress.errors import ConfigError
from nncompress.progress import StageProgress

__all__ = [
    "AccuracyAwareTrainingMode",
    "AdaptiveCompressionTrainingLoop",
    "BaseEarlyExitCompressionTrainingLoop",
    "EarlyExitCompressionTrainingLoop",
    "TrainingLoop",
    "create_accuracy_aware_training_loop",
    "find_adaptive_controller",
]

logger = logging.getLogger("nncompress")


class AccuracyAwareTrainingMode:
    EARLY_EXIT = "early_exit"
    ADAPTIVE_COMPRESSION_LEVEL = "adaptive_compression_level"


def _check_controller(ctrl: Any) -> CompressionAlgorithmController:
    if not isinstance(ctrl, CompressionAlgorithmController):
        raise TypeError(
            "compression_ctrl must be the controller returned by create_compressed_model, got "
            f"{type(ctrl).__name__}"
        )
    return ctrl


class TrainingLoop(ABC):
    """A loop started with :meth:`run`, which returns the fine-tuned model."""

    @abstractmethod
    def run(
        self,
        model: Any,
        train_epoch_fn: Callable[..., Any],
        validate_fn: Callable[..., Any],
        configure_optimizers_fn: Callable[[], Any] | None = None,
        dump_checkpoint_fn: Callable[..., Any] | None = None,
        load_checkpoint_fn: Callable[[Any, Path], Any] | None = None,
        early_stopping_fn: Callable[[float], bool] | None = None,
        tensorboard_writer: Any = None,
        log_dir: str | Path | None = None,
        update_learning_rate_fn: Callable[..., Any] | None = None,
    ) -> Any:
        """Fine-tune ``model`` with the user's functions; returns the best model."""

    @property
    @abstractmethod
    def statistics(self) -> TrainingLoopStatistics:
        """The outcome: accuracies, drop, budget, compression rate, whether the criterion was met."""


class BaseEarlyExitCompressionTrainingLoop(TrainingLoop):
    """Shared parts: setup of a run, the early-exit phase, the outcome."""

    runner: AccuracyAwareTrainingRunner

    def __init__(
        self, nncf_config: Mapping[str, Any], compression_controller: CompressionAlgorithmController
    ):
        self.compression_controller = _check_controller(compression_controller)
        self.params: AccuracyAwareTrainingParams = read_params(nncf_config)
        self._config_log_dir = nncf_config.get("log_dir")
        self._current_compression_rate: float | None = None
        self._criterion_met = False
        self._finished = False

    # -- run ----------------------------------------------------------------------------------------
    def run(
        self,
        model: Any,
        train_epoch_fn: Callable[..., Any],
        validate_fn: Callable[..., Any],
        configure_optimizers_fn: Callable[[], Any] | None = None,
        dump_checkpoint_fn: Callable[..., Any] | None = None,
        load_checkpoint_fn: Callable[[Any, Path], Any] | None = None,
        early_stopping_fn: Callable[[float], bool] | None = None,
        tensorboard_writer: Any = None,
        log_dir: str | Path | None = None,
        update_learning_rate_fn: Callable[..., Any] | None = None,
    ) -> Any:
        """Run the loop; logs go to ``<log_dir>/accuracy_aware_training/<timestamp>/`` where
        ``log_dir`` is this argument, else the config's ``log_dir``, else ``./runs``."""
        self.runner.initialize_training_loop_fns(
            train_epoch_fn,
            validate_fn,
            configure_optimizers_fn,
            dump_checkpoint_fn,
            load_checkpoint_fn,
            early_stopping_fn,
            update_learning_rate_fn,
        )
        base = log_dir if log_dir is not None else self._config_log_dir
        self.runner.initialize_logging(Path(base) if base else Path.cwd() / "runs", tensorboard_writer)
        self._finished = False
        bar = StageProgress(enabled=self.runner.verbose)
        self.runner.progress = bar
        try:
            model = self._run(model)
        except BaseException:
            bar.close()
            try:  # keep what the failed run logged viewable, without hiding why it failed
                self._write_outputs()
            except Exception as exc:
                logger.warning("Could not write the plot of the failed run: %s", exc)
            raise
        finally:
            bar.close()
            self.runner.progress = None
        self._finished = True
        self._write_outputs()
        return model

    @abstractmethod
    def _run(self, model: Any) -> Any: ...

    def _write_outputs(self) -> None:
        writer = self.runner.log_writer
        if writer is None:
            return
        writer.write_plot(
            uncompressed_accuracy=self.runner.uncompressed_model_accuracy,
            minimal_tolerable_accuracy=self.runner.minimal_tolerable_accuracy,
            chosen_rate=self._current_compression_rate if self._finished else None,
        )
        if self._finished:
            summary: dict[str, Any] = {
                "title": f"Accuracy-aware training ({self.runner.mode})",
                "mode": self.runner.mode,
                **self.statistics.to_dict(),
                "minimal_tolerable_accuracy": self.runner.minimal_tolerable_accuracy,
                "epochs": self.runner.cumulative_epoch_count,
            }
            best = [p.name for p in self.runner.checkpoint_save_dir.glob("acc_aware_checkpoint_best.*")]
            summary["best_checkpoint"] = best[0] if best else None
            writer.write_summary(summary)

    def _run_early_exit_training_loop(self, model: Any) -> Any:
        runner, ctrl = self.runner, self.compression_controller
        runner.configure_optimizers()
        runner.validate(model)
        self._current_compression_rate = runner.current_compression_rate(ctrl)
        runner.dump_statistics(model, ctrl)
        logger.info("Initialization step results:")
        self.log_accuracy_statistics()
        if self._accuracy_criterion_satisfied():
            logger.info("Reached the accuracy criterion after the initialization step.")
            self._criterion_met = True
            return model
        for epoch in range(1, runner.maximal_total_epochs + 1):
            runner.train_epoch(model, ctrl)
            runner.validate(model)
            self._current_compression_rate = runner.current_compression_rate(ctrl)
            runner.dump_statistics(model, ctrl)
            if self._accuracy_criterion_satisfied():
                logger.info("Reached the accuracy criterion after epoch %d.", epoch)
                self.log_accuracy_statistics()
                break
            logger.info("Epoch %d results:", epoch)
            self.log_accuracy_statistics()
            if runner.stop_training(ctrl):
                logger.info("Training stopped: the early stopping criterion is satisfied.")
                break
            runner.update_learning_rate()
        return self._restore_best(model)

    def _restore_best(self, model: Any) -> Any:
        runner = self.runner
        best = runner._best_checkpoint
        model, rate = runner.load_best_checkpoint(model, self.compression_controller)
        self._current_compression_rate = rate
        if best is not None:
            runner.current_val_metric_value = best[2]
        self._criterion_met = best is not None and self._accuracy_criterion_satisfied()
        if not self._criterion_met:
            logger.warning(
                "The accuracy criterion was not met in %d epochs: best accuracy %.4f, minimal tolerable %.4f",
                runner.cumulative_epoch_count,
                runner.current_val_metric_value,
                runner.minimal_tolerable_accuracy,
            )
        return model

    def _accuracy_criterion_satisfied(self) -> bool:
        return self.runner.accuracy_budget >= 0 and self.runner.is_model_fully_compressed(
            self.compression_controller
        )

    # -- outcome ------------------------------------------------------------------------------------
    def log_accuracy_statistics(self) -> None:
        for line in self.statistics.to_str().split("\n"):
            logger.info("%s", line)

    @property
    def statistics(self) -> TrainingLoopStatistics:
        runner = self.runner
        compressed = runner.current_val_metric_value
        if not math.isfinite(compressed):
            raise AccuracyAwareTrainingError("no statistics yet: run() has not validated a model")
        uncompressed = runner.uncompressed_model_accuracy
        return TrainingLoopStatistics(
            uncompressed_accuracy=uncompressed,
            compression_rate=self._current_compression_rate or 0.0,
            compressed_accuracy=compressed,
            accuracy_drop=uncompressed - compressed,
            relative_accuracy_drop=100.0 * (1.0 - compressed / uncompressed) if uncompressed else 0.0,
            accuracy_budget=compressed - runner.minimal_tolerable_accuracy,
            criterion_met=self._criterion_met,
        )


class EarlyExitCompressionTrainingLoop(BaseEarlyExitCompressionTrainingLoop):
    """Fine-tunes without changing the compression; exits as soon as the accuracy is within budget."""

    def __init__(
        self,
        nncf_config: Mapping[str, Any],
        compression_controller: CompressionAlgorithmController,
        uncompressed_model_accuracy: float,
        lr_updates_needed: bool = True,
        verbose: bool = True,
        dump_checkpoints: bool = True,
    ):
        super().__init__(nncf_config, compression_controller)
        self.runner = AccuracyAwareTrainingRunner(
            self.params,
            uncompressed_model_accuracy,
            verbose=verbose,
            dump_checkpoints=dump_checkpoints,
            lr_updates_needed=lr_updates_needed,
        )

    def _run(self, model: Any) -> Any:
        return self._run_early_exit_training_loop(model)


def _has_settable_rate(ctrl: Any) -> bool:
    """Whether the loop may set ``ctrl.compression_rate``: a built-in algorithm must be one whose
    level is adjustable (const_sparsity has a setter that refuses); another (user-registered)
    algorithm needs a ``compression_rate`` with a setter."""
    name = getattr(ctrl, "algorithm_name", None)
    if isinstance(name, str) and name in ALGORITHM_NAMES and name not in ADAPTIVE_LEVEL_ALGORITHMS:
        return False
    attr = inspect.getattr_static(type(ctrl), "compression_rate", None)
    if isinstance(attr, property):
        return attr.fset is not None
    return "compression_rate" in getattr(ctrl, "__dict__", {})


def _ctrl_name(ctrl: Any) -> str:
    return str(getattr(ctrl, "algorithm_name", None) or type(ctrl).__name__)


def find_adaptive_controller(ctrl: CompressionAlgorithmController) -> CompressionAlgorithmController:
    """The one controller (``ctrl`` or a child of a composite) with a settable ``compression_rate``.

    ConfigError at ``accuracy_aware_training.mode`` when there is none (e.g. quantization only) or
    several (NNCF silently takes the first; here the choice is left to the user).
    """
    children = getattr(ctrl, "child_ctrls", None)
    candidates = list(children) if children is not None else [ctrl]
    adaptive = [c for c in candidates if _has_settable_rate(c)]
    names = ", ".join(_ctrl_name(c) for c in candidates) or "none"
    if not adaptive:
        raise ConfigError(
            [
                (
                    f"{SECTION}.mode",
                    "mode 'adaptive_compression_level' needs a controller whose compression level can be "
                    f"set (ctrl.compression_rate: filter_pruning, magnitude_sparsity, rb_sparsity); the "
                    f"controller has none (algorithms: {names}); use mode 'early_exit'",
                )
            ]
        )
    if len(adaptive) > 1:
        raise ConfigError(
            [
                (
                    f"{SECTION}.mode",
                    "mode 'adaptive_compression_level' adjusts one algorithm's level, but several can be "
                    f"adjusted: {', '.join(_ctrl_name(c) for c in adaptive)}; keep only one of them",
                )
            ]
        )
    return adaptive[0]


class AdaptiveCompressionTrainingLoop(BaseEarlyExitCompressionTrainingLoop):
    """Searches the highest compression level whose accuracy stays within budget (module docstring)."""

    runner: AdaptiveCompressionLevelTrainingRunner

    def __init__(
        self,
        nncf_config: Mapping[str, Any],
        compression_controller: CompressionAlgorithmController,
        uncompressed_model_accuracy: float,
        lr_updates_needed: bool = True,
        verbose: bool = True,
        minimal_compression_rate: float = 0.0,
        maximal_compression_rate: float = 0.95,
        dump_checkpoints: bool = True,
    ):
        super().__init__(nncf_config, compression_controller)
        self.adaptive_controller = find_adaptive_controller(self.compression_controller)
        ctrl_max = getattr(self.adaptive_controller, "maximal_compression_rate", None)
        if isinstance(ctrl_max, int | float) and not isinstance(ctrl_max, bool):
            maximal_compression_rate = min(maximal_compression_rate, float(ctrl_max))
        if not 0.0 <= minimal_compression_rate < maximal_compression_rate <= 1.0:
            raise ValueError(
                "expected 0 <= minimal_compression_rate < maximal_compression_rate <= 1, got "
                f"{minimal_compression_rate} and {maximal_compression_rate}"
            )
        self.runner = AdaptiveCompressionLevelTrainingRunner(
            self.params,
            uncompressed_model_accuracy,
            self.adaptive_controller,
            verbose=verbose,
            dump_checkpoints=dump_checkpoints,
            lr_updates_needed=lr_updates_needed,
            minimal_compression_rate=minimal_compression_rate,
            maximal_compression_rate=maximal_compression_rate,
        )

    def _run(self, model: Any) -> Any:
        runner = self.runner
        model = self._run_initial_training_phase(model)
        runner.reset_training()
        runner.validate(model)
        logger.info("Search for the highest compression rate within the accuracy budget started.")
        self.compression_controller.disable_scheduler()
        force_update = True
        while (
            runner.compression_rate_step >= runner.minimal_compression_rate_step
            and runner.cumulative_epoch_count < runner.maximal_total_epochs
        ):
            prev_target, prev_step = runner.compression_rate_target, runner.compression_rate_step
            changed = self._update_target_compression_rate(runner, force_update)
            if changed:
                logger.info(
                    "Target compression rate %.4f -> %.4f (step %.4f -> %.4f)",
                    prev_target,
                    runner.compression_rate_target,
                    prev_step,
                    runner.compression_rate_step,
                )
                if runner.compression_rate_target < runner.minimal_compression_rate:
                    logger.warning(
                        "Cannot produce a compressed model within the accuracy budget: the search went "
                        "below the minimal compression rate %.3f",
                        runner.minimal_compression_rate,
                    )
                    break
                if runner.compression_rate_target > runner.maximal_compression_rate:
                    runner.compression_rate_target = runner.maximal_compression_rate
                    logger.info("Reached the maximal compression rate %.3f", runner.maximal_compression_rate)
                    break
                force_update = False
                model, _ = runner.load_best_checkpoint(model, self.compression_controller, final=False)
                self.adaptive_controller.compression_rate = runner.compression_rate_target  # type: ignore[attr-defined]
                runner.search_started = True
                self._current_compression_rate = runner.compression_rate_target
                runner.reset_training()
            runner.train_epoch(model, self.compression_controller)
            runner.validate(model)
            runner.dump_statistics(model, self.compression_controller)
            if runner.stop_training(self.compression_controller):
                logger.info("Early stopping criterion satisfied: moving to the next compression rate.")
                force_update = True
            runner.update_learning_rate()

        choice = runner.best_checkpoint_choice()
        model, rate = runner.load_best_checkpoint(model, self.compression_controller)
        self._current_compression_rate = rate
        self._criterion_met = bool(choice and choice[1])
        if rate is not None:
            runner.publish_best(rate)
        runner.validate(model)
        logger.info(
            "Compression rate of the final model: %s, accuracy %.4f (uncompressed: %.4f)",
            rate,
            runner.current_val_metric_value,
            runner.uncompressed_model_accuracy,
        )
        return model

    def _run_initial_training_phase(self, model: Any) -> Any:
        logger.info("Initial training phase started.")
        maximal_total_epochs = self.runner.maximal_total_epochs
        self.runner.maximal_total_epochs = min(
            self.runner.initial_training_phase_epochs, maximal_total_epochs
        )
        try:
            model = self._run_early_exit_training_loop(model)
        finally:
            self.runner.maximal_total_epochs = maximal_total_epochs
        logger.info("Initial training phase finished.")
        return model

    def _restore_best(self, model: Any) -> Any:
        # initial phase: resume from the best checkpoint without a verdict (the search decides)
        model, rate = self.runner.load_best_checkpoint(model, self.compression_controller, final=False)
        return model

    @staticmethod
    def _update_target_compression_rate(
        runner: AdaptiveCompressionLevelTrainingRunner, force_update: bool
    ) -> bool:
        """Move the target level when the model is within budget, after ``patience_epochs`` out of
        budget, or when forced; returns whether it moved."""
        best_budget = runner.best_val_metric_value - runner.minimal_tolerable_accuracy
        if runner.training_epoch_count >= runner.patience_epochs or best_budget >= 0.0 or force_update:
            sign = 1.0 if best_budget >= 0.0 else -1.0
            if runner.was_compression_increased_on_prev_step is not None and (
                runner.was_compression_increased_on_prev_step != sign
            ):
                # the direction changed: we passed the best level, so search more finely (and gently)
                runner.compression_rate_step *= runner.compression_rate_step_reduction_factor
                runner.base_lr_reduction_factor_during_search *= runner.lr_reduction_factor
            runner.compression_rate_target = (
                runner.compression_rate_target + sign * runner.compression_rate_step
            )
            runner.was_compression_increased_on_prev_step = sign
            return True
        return False

    @property
    def statistics(self) -> TrainingLoopStatistics:
        stats = super().statistics
        if self._current_compression_rate is None:
            stats.compression_rate = self.runner.compression_rate_target
        return stats


def create_accuracy_aware_training_loop(
    nncf_config: Mapping[str, Any],
    compression_ctrl: CompressionAlgorithmController,
    uncompressed_model_accuracy: float,
    **additional_runner_args: Any,
) -> BaseEarlyExitCompressionTrainingLoop:
    """The loop of the config's ``accuracy_aware_training.mode``.

    Example::

        loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=0.93)
        model = loop.run(model, train_epoch_fn, validate_fn, configure_optimizers_fn)
        print(loop.statistics.to_str())

    ``additional_runner_args`` go to the loop class (``verbose``, ``dump_checkpoints``,
    ``lr_updates_needed``; adaptive: ``minimal_compression_rate``, ``maximal_compression_rate``).
    """
    params = read_params(nncf_config)
    if params.mode == AccuracyAwareTrainingMode.EARLY_EXIT:
        return EarlyExitCompressionTrainingLoop(
            nncf_config, compression_ctrl, uncompressed_model_accuracy, **additional_runner_args
        )
    return AdaptiveCompressionTrainingLoop(
        nncf_config, compression_ctrl, uncompressed_model_accuracy, **additional_runner_args
    )
