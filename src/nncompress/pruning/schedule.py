"""Pruning schedules: the pruning level at each epoch, from ``pruning_init`` to the target.

Epochs count from 0 (the first ``epoch_step()`` of a scheduler); before it, and for the first
``num_init_steps`` epochs, the level is ``initial``. Then, over ``steps`` epochs (``t`` runs from 0
to ``steps``):

- ``baseline``: the target right away;
- ``exponential``: the kept fraction ``1 - level`` shrinks geometrically,
  ``1 - level(t) = (1 - initial) * ((1 - target) / (1 - initial)) ** (t / s)``;
- ``exponential_with_bias``: ``level(t) = a * exp(-k t) + b`` with ``k = 4 / s`` and ``a``, ``b``
  chosen so that ``level(0) = initial`` and ``level(s) = target``: fast early, then levelling
  off at the target.

After the schedule, the level stays at the target. ``initial`` and ``target`` may be pruning
levels or FLOPs reductions (``pruning_flops_target``): the schedule only interpolates.

Example::

    s = make_schedule("exponential", initial=0.0, target=0.5, steps=10, num_init_steps=1)
    [round(s.level(e), 3) for e in (0, 1, 6, 10)]  # [0.0, 0.0, 0.32, 0.5]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

from nncompress.errors import ConfigError

__all__ = [
    "SCHEDULES",
    "BaselineSchedule",
    "ExponentialSchedule",
    "ExponentialWithBiasSchedule",
    "PruningSchedule",
    "make_schedule",
]


class PruningSchedule(ABC):
    """Level per epoch between ``initial`` and ``target`` (see the module docstring)."""

    name = ""

    def __init__(self, *, initial: float, target: float, steps: int, num_init_steps: int):
        if steps < 1:
            raise ConfigError([("params.pruning_steps", f"must be at least 1, got {steps}")])
        if num_init_steps < 0:
            raise ConfigError([("params.num_init_steps", f"must not be negative, got {num_init_steps}")])
        for path, value in (("pruning_init", initial), ("params.pruning_target", target)):
            if not 0.0 <= value < 1.0:
                raise ConfigError([(path, f"must be in [0, 1), got {value}")])
        self.initial = float(initial)
        self.target = float(target)
        self.steps = int(steps)
        self.num_init_steps = int(num_init_steps)
        self.span = self.steps - 1  # epochs from the first level to the target (NNCF's count)

    def level(self, epoch: int) -> float:
        t = epoch - self.num_init_steps
        if t < 0:
            return self.initial
        if t >= self.span:
            return self.target
        value = self._level(t)
        lo, hi = sorted((self.initial, self.target))
        return min(max(value, lo), hi)

    @abstractmethod
    def _level(self, t: int) -> float: ...

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(initial={self.initial}, target={self.target}, steps={self.steps}, "
            f"num_init_steps={self.num_init_steps})"
        )


class BaselineSchedule(PruningSchedule):
    name = "baseline"

    def _level(self, t: int) -> float:
        return self.target


class ExponentialSchedule(PruningSchedule):
    name = "exponential"

    def _level(self, t: int) -> float:
        kept0, kept1 = 1.0 - self.initial, 1.0 - self.target
        return 1.0 - kept0 * (kept1 / kept0) ** (t / self.span)


class ExponentialWithBiasSchedule(PruningSchedule):
    name = "exponential_with_bias"

    def _level(self, t: int) -> float:
        k = 4.0 / self.span
        end = math.exp(-k * self.span)
        a = (self.initial - self.target) / (1.0 - end)
        b = self.target - a * end
        return a * math.exp(-k * t) + b


SCHEDULES: dict[str, type[PruningSchedule]] = {
    cls.name: cls for cls in (BaselineSchedule, ExponentialSchedule, ExponentialWithBiasSchedule)
}


def make_schedule(
    name: str, *, initial: float, target: float, steps: int, num_init_steps: int
) -> PruningSchedule:
    """The schedule registered as ``name`` (``params.schedule``)."""
    cls: Callable[..., PruningSchedule] | None = SCHEDULES.get(name)
    if cls is None:
        raise ConfigError([("params.schedule", f"unknown schedule '{name}'; known: {', '.join(SCHEDULES)}")])
    return cls(initial=initial, target=target, steps=steps, num_init_steps=num_init_steps)
