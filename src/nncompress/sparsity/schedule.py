"""Sparsity schedules: the sparsity level at each epoch (or step), as NNCF 2.x computes it.

Epochs count from 0 (the first ``epoch_step()``); before it the level is ``sparsity_init``,
which the controller applies when the model is created. With ``T = sparsity_target_epoch``:

- ``polynomial``: ``p = clip(e / T, 0, 1)``; concave (default):
  ``target - (target - init) * (1 - p) ** power``; convex: ``init + (target - init) * p ** power``.
  With ``update_per_optimizer_step`` the epoch is fractional, ``e + step / steps_per_epoch``, and
  the level changes at every ``step()``; without ``steps_per_epoch`` the first epoch only counts
  its steps (the scheduler stays at epoch -1 until the second ``epoch_step()``), as in NNCF.
- ``exponential``: the density ``1 - level`` decays geometrically from ``1 - init`` to
  ``1 - target`` over ``T`` epochs, then stays.
- ``multistep``: ``multistep_sparsity_levels[i]`` where ``i`` is the number of
  ``multistep_steps`` at or before the epoch.
- ``adaptive`` (RB only): at each epoch, if the sparsity the masks reached is within 0.03 of the
  current level, a "bad epoch" is counted; after ``patience`` of them the level rises by 0.05,
  up to the target.

At epoch ``sparsity_freeze_epoch`` and later the controller is frozen first (magnitude masks
stop being recomputed; RB masks stop learning and the loss turns off), so the masks last change
at epoch ``sparsity_freeze_epoch - 1``.

Example::

    s = polynomial_level(init=0.0, target=0.5, target_epoch=4, power=1.0, concave=True)
    [s(e) for e in range(6)]  # [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from nncompress.api.compression import BaseCompressionScheduler
from nncompress.errors import CompressionStateError, ConfigError
from nncompress.sparsity.params import SparsityParams

__all__ = [
    "SPARSITY_SCHEDULERS",
    "AdaptiveSparsityScheduler",
    "ExponentialSparsityScheduler",
    "MultiStepSparsityScheduler",
    "PolynomialSparsityScheduler",
    "SparsityLevelController",
    "SparsityScheduler",
    "exponential_level",
    "make_sparsity_scheduler",
    "multistep_level",
    "polynomial_level",
]

logger = logging.getLogger("nncompress")

ADAPTIVE_STEP = 0.05  # level added after `patience` bad epochs (NNCF's default)
ADAPTIVE_EPS = 0.03  # a reached sparsity this close to the level counts as reached


class SparsityLevelController(Protocol):
    """What a scheduler drives: a controller that sets levels and freezes its masks."""

    def set_sparsity_level(self, sparsity_level: float) -> None: ...

    def freeze(self) -> None: ...

    @property
    def reached_sparsity(self) -> float:
        """The sparsity the masks have now (the adaptive schedule compares it to the level)."""
        ...


def polynomial_level(
    *, init: float, target: float, target_epoch: int, power: float, concave: bool
) -> Callable[..., float]:
    """``f(epoch, step=None, steps_per_epoch=None)``: the polynomial schedule's level."""

    def level(epoch: float, step: int | None = None, steps_per_epoch: int | None = None) -> float:
        if target_epoch == 0:
            return target
        when = float(epoch)
        if step is not None and steps_per_epoch:
            when += step / steps_per_epoch
        p = min(1.0, max(0.0, when / target_epoch))
        if concave:
            return target - (target - init) * (1.0 - p) ** power
        return init + (target - init) * p**power

    return level


def exponential_level(*, init: float, target: float, target_epoch: int) -> Callable[[int], float]:
    """``f(epoch)``: the level whose density ``1 - level`` decays geometrically to ``1 - target``."""
    d0, d1 = 1.0 - init, 1.0 - target

    def level(epoch: int) -> float:
        if target_epoch == 0 or epoch >= target_epoch:
            return target
        if epoch <= 0:
            return init
        density = max(d0 * (d1 / d0) ** (epoch / target_epoch), d1)
        return min(1.0 - density, target)

    return level


def multistep_level(steps: Sequence[int], levels: Sequence[float]) -> Callable[[int], float]:
    """``f(epoch)``: ``levels[i]``, ``i`` the number of ``steps`` that are <= epoch."""
    if len(levels) != len(steps) + 1:
        raise ConfigError(
            [
                (
                    "params.multistep_sparsity_levels",
                    f"needs one more entry than multistep_steps: {len(steps)} steps, {len(levels)} levels",
                )
            ]
        )
    bounds = sorted(int(s) for s in steps)

    def level(epoch: int) -> float:
        return float(levels[bisect.bisect_right(bounds, epoch)])

    return level


class SparsityScheduler(BaseCompressionScheduler):
    """Sets the controller's level from the schedule at every ``epoch_step()`` and freezes it at
    ``sparsity_freeze_epoch`` (see the module docstring)."""

    name = ""

    def __init__(self, controller: SparsityLevelController, params: SparsityParams):
        super().__init__()
        self._controller = controller
        self.initial_level = params.sparsity_init
        self.target_level = params.target_level
        self.target_epoch = params.sparsity_target_epoch
        self.freeze_epoch = params.sparsity_freeze_epoch
        self.enabled = True

    def _calculate_sparsity_level(self) -> float:
        raise NotImplementedError

    @property
    def current_sparsity_level(self) -> float:
        """The schedule's level now (``sparsity_init`` before the first ``epoch_step()``)."""
        if self.current_epoch < 0:
            return self.initial_level
        return float(self._calculate_sparsity_level())

    def _update_sparsity_level(self) -> None:
        if not self.enabled:
            return
        if self.current_epoch >= self.freeze_epoch:
            if not getattr(self._controller, "frozen", False):
                self._controller.freeze()
            return
        self._controller.set_sparsity_level(self.current_sparsity_level)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        super().epoch_step(next_epoch)
        self._update_sparsity_level()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(init={self.initial_level}, target={self.target_level}, "
            f"target_epoch={self.target_epoch}, freeze_epoch={self.freeze_epoch})"
        )


class PolynomialSparsityScheduler(SparsityScheduler):
    name = "polynomial"

    def __init__(self, controller: SparsityLevelController, params: SparsityParams):
        super().__init__(controller, params)
        self.schedule = polynomial_level(
            init=params.sparsity_init,
            target=params.sparsity_target,
            target_epoch=params.sparsity_target_epoch,
            power=params.power,
            concave=params.concave,
        )
        self.update_per_optimizer_step = params.update_per_optimizer_step
        self.steps_per_epoch = params.steps_per_epoch
        self._steps_in_current_epoch = 0
        self._skipping = False

    def _calculate_sparsity_level(self) -> float:
        if self.update_per_optimizer_step:
            local_step = max(self._steps_in_current_epoch - 1, 0)
            return self.schedule(self.current_epoch, local_step, self.steps_per_epoch)
        return self.schedule(self.current_epoch)

    def step(self, next_step: int | None = None) -> None:
        self._steps_in_current_epoch += 1
        if self._skipping:
            return
        super().step(next_step)
        if self.update_per_optimizer_step:
            self._update_sparsity_level()

    def epoch_step(self, next_epoch: int | None = None) -> None:
        self._skipping = False
        if self.update_per_optimizer_step:
            counted = self._steps_in_current_epoch
            if self.steps_per_epoch is None and counted > 0:
                self.steps_per_epoch = counted
            elif self.steps_per_epoch is not None and counted > 0 and counted != self.steps_per_epoch:
                raise ConfigError(
                    [
                        (
                            "params.steps_per_epoch",
                            f"the last epoch ran {counted} scheduler steps, but steps_per_epoch is "
                            f"{self.steps_per_epoch}: the per-step schedule would be wrong",
                        )
                    ]
                )
            if self.steps_per_epoch is None:
                self._skipping = True
                logger.warning(
                    "polynomial sparsity schedule with update_per_optimizer_step but no steps_per_epoch: "
                    "counting the steps of this first epoch; the level starts changing at the next epoch"
                )
                return
        self._steps_in_current_epoch = 0
        BaseCompressionScheduler.epoch_step(self, next_epoch)
        if not self.update_per_optimizer_step:
            self._update_sparsity_level()

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["steps_per_epoch"] = self.steps_per_epoch
        state["steps_in_current_epoch"] = self._steps_in_current_epoch
        state["skipping"] = self._skipping
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        try:
            spe = state.get("steps_per_epoch", self.steps_per_epoch)
            self.steps_per_epoch = None if spe is None else int(spe)
            self._steps_in_current_epoch = int(state.get("steps_in_current_epoch", 0))
            self._skipping = bool(state.get("skipping", False))
        except (TypeError, ValueError) as exc:
            raise CompressionStateError(f"polynomial sparsity scheduler: corrupt state {state!r}") from exc


class ExponentialSparsityScheduler(SparsityScheduler):
    name = "exponential"

    def __init__(self, controller: SparsityLevelController, params: SparsityParams):
        super().__init__(controller, params)
        self.schedule = exponential_level(
            init=params.sparsity_init,
            target=params.sparsity_target,
            target_epoch=params.sparsity_target_epoch,
        )

    def _calculate_sparsity_level(self) -> float:
        return self.schedule(self.current_epoch)


class MultiStepSparsityScheduler(SparsityScheduler):
    name = "multistep"

    def __init__(self, controller: SparsityLevelController, params: SparsityParams):
        super().__init__(controller, params)
        self.schedule = multistep_level(params.multistep_steps, params.multistep_sparsity_levels)

    def _calculate_sparsity_level(self) -> float:
        return self.schedule(self.current_epoch)


class AdaptiveSparsityScheduler(SparsityScheduler):
    """Raises the level by 0.05 after ``patience`` epochs in which the masks reached it."""

    name = "adaptive"

    def __init__(self, controller: SparsityLevelController, params: SparsityParams):
        super().__init__(controller, params)
        self.patience = params.patience
        self.decay_step = ADAPTIVE_STEP
        self.eps = ADAPTIVE_EPS
        self.num_bad_epochs = 0
        self._current_level = self.initial_level

    def _calculate_sparsity_level(self) -> float:
        return self._current_level

    def epoch_step(self, next_epoch: int | None = None) -> None:
        BaseCompressionScheduler.epoch_step(self, next_epoch)
        if self.enabled and self.current_epoch < self.freeze_epoch:
            if self._controller.reached_sparsity >= self._current_level - self.eps:
                self.num_bad_epochs += 1
            if self.num_bad_epochs >= self.patience:
                self.num_bad_epochs = 0
                self._current_level = min(self._current_level + self.decay_step, self.target_level)
        self._update_sparsity_level()

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["num_bad_epochs"] = self.num_bad_epochs
        state["current_sparsity_level"] = self._current_level
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        try:
            self.num_bad_epochs = int(state["num_bad_epochs"])
            self._current_level = float(state["current_sparsity_level"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CompressionStateError(
                f"adaptive sparsity scheduler: the state needs 'num_bad_epochs' and 'current_sparsity_level', "
                f"got {state!r}"
            ) from exc


SPARSITY_SCHEDULERS: dict[str, type[SparsityScheduler]] = {
    cls.name: cls
    for cls in (
        PolynomialSparsityScheduler,
        ExponentialSparsityScheduler,
        MultiStepSparsityScheduler,
        AdaptiveSparsityScheduler,
    )
}


def make_sparsity_scheduler(controller: SparsityLevelController, params: SparsityParams) -> SparsityScheduler:
    """The scheduler named by ``params.schedule``, driving ``controller``."""
    cls = SPARSITY_SCHEDULERS.get(params.schedule)
    if cls is None:
        raise ConfigError(
            [
                (
                    f"{params.path}.params.schedule",
                    f"unknown schedule '{params.schedule}'; known: {', '.join(SPARSITY_SCHEDULERS)}",
                )
            ]
        )
    return cls(controller, params)
