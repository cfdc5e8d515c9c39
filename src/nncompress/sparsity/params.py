"""The sparsity sections (``magnitude_sparsity``, ``rb_sparsity``) as one immutable value.

Every value is read through the schema (so defaults live only there) and checked once, here,
with the JSON path of the section in the config: levels must lie in [0, 1), ``multistep`` needs
one more level than steps and increasing steps, and ``adaptive`` needs a learned-mask algorithm
(it raises the level when the loss has reached the current one; magnitude sparsity has no loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nncompress.config.effective import get_param
from nncompress.errors import ConfigError

__all__ = ["SPARSITY_ALGORITHMS", "SparsityParams", "check_sparsity_level", "section_path"]

SPARSITY_ALGORITHMS = ("magnitude_sparsity", "rb_sparsity", "const_sparsity")


def section_path(config: Any, section: Mapping[str, Any]) -> str:
    """``compression`` or ``compression[i]``: where ``section`` sits in ``config`` (for messages)."""
    compression = config.get("compression") if isinstance(config, Mapping) else None
    if isinstance(compression, list):
        for i, item in enumerate(compression):
            if item is section:
                return f"compression[{i}]"
        for i, item in enumerate(compression):
            if isinstance(item, Mapping) and item.get("algorithm") == section.get("algorithm"):
                return f"compression[{i}]"
    return "compression"


def check_sparsity_level(level: Any, where: str = "sparsity_level") -> float:
    """``level`` as a float in [0, 1); ``ConfigError`` naming ``where`` otherwise."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ConfigError([(where, f"a sparsity level must be a number in [0, 1), got {level!r}")]) from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            [(where, f"a sparsity level must be in [0, 1) (1 would zero every weight), got {value}")]
        )
    return value


@dataclass(frozen=True)
class SparsityParams:
    """Every setting of a magnitude or RB sparsity section (see the module docstring)."""

    algorithm: str
    sparsity_init: float
    schedule: str
    sparsity_target: float
    sparsity_target_epoch: int
    sparsity_freeze_epoch: int
    mode: str  # sparsity_level_setting_mode: "global" or "local"
    update_per_optimizer_step: bool = False
    steps_per_epoch: int | None = None
    multistep_steps: tuple[int, ...] = (90,)
    multistep_sparsity_levels: tuple[float, ...] = (0.1, 0.5)
    patience: int = 1
    power: float = 0.9
    concave: bool = True
    weight_importance: str = "normed_abs"
    path: str = "compression"

    @property
    def target_level(self) -> float:
        """Where the schedule ends: the last multistep level, else ``sparsity_target``."""
        if self.schedule == "multistep":
            return float(self.multistep_sparsity_levels[-1])
        return self.sparsity_target

    @classmethod
    def from_section(cls, section: Mapping[str, Any], path: str = "compression") -> SparsityParams:
        """Read and check a ``magnitude_sparsity`` / ``rb_sparsity`` section (``path``: its place)."""
        algorithm = section.get("algorithm")
        if algorithm not in ("magnitude_sparsity", "rb_sparsity"):
            raise ConfigError([(f"{path}.algorithm", f"not a scheduled sparsity algorithm: {algorithm!r}")])

        def param(p: str) -> Any:
            return get_param(section, p, algorithm=algorithm)

        init = check_sparsity_level(param("sparsity_init"), f"{path}.sparsity_init")
        target = check_sparsity_level(param("params.sparsity_target"), f"{path}.params.sparsity_target")
        schedule = str(param("params.schedule"))
        steps = [int(s) for s in param("params.multistep_steps")]
        levels = [
            check_sparsity_level(v, f"{path}.params.multistep_sparsity_levels[{i}]")
            for i, v in enumerate(param("params.multistep_sparsity_levels"))
        ]
        problems: list[tuple[str, str]] = []
        if schedule == "multistep":
            if len(levels) != len(steps) + 1:
                problems.append(
                    (
                        f"{path}.params.multistep_sparsity_levels",
                        f"needs one more entry than multistep_steps (a level before the first step and one "
                        f"after each): {len(steps)} steps need {len(steps) + 1} levels, got {len(levels)}",
                    )
                )
            if any(b <= a for a, b in zip(steps, steps[1:])):
                problems.append((f"{path}.params.multistep_steps", f"steps must increase, got {steps}"))
        elif target < init:
            problems.append(
                (
                    f"{path}.params.sparsity_target",
                    f"sparsity_target {target} is below sparsity_init {init}; the schedule only raises the level",
                )
            )
        if schedule == "adaptive" and algorithm == "magnitude_sparsity":
            problems.append(
                (
                    f"{path}.params.schedule",
                    "the 'adaptive' schedule follows the sparsity the RB loss reaches; magnitude_sparsity has "
                    "no such loss: use 'polynomial', 'exponential' or 'multistep'",
                )
            )
        steps_per_epoch = param("params.steps_per_epoch")
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            problems.append((f"{path}.params.steps_per_epoch", f"must be at least 1, got {steps_per_epoch}"))
        power = float(param("params.power"))
        if power <= 0:
            problems.append((f"{path}.params.power", f"must be positive, got {power}"))
        for key in ("sparsity_target_epoch", "sparsity_freeze_epoch", "patience"):
            value = int(param(f"params.{key}"))
            if value < 0:
                problems.append((f"{path}.params.{key}", f"must not be negative, got {value}"))
        mode = str(param("params.sparsity_level_setting_mode"))
        if mode not in ("global", "local"):
            problems.append(
                (f"{path}.params.sparsity_level_setting_mode", f"must be 'global' or 'local', got {mode!r}")
            )
        importance = "normed_abs"
        if algorithm == "magnitude_sparsity":
            importance = str(param("params.weight_importance"))
            if importance not in ("abs", "normed_abs"):
                problems.append(
                    (f"{path}.params.weight_importance", f"must be 'abs' or 'normed_abs', got {importance!r}")
                )
        if problems:
            raise ConfigError(problems)
        return cls(
            algorithm=algorithm,
            sparsity_init=init,
            schedule=schedule,
            sparsity_target=target,
            sparsity_target_epoch=int(param("params.sparsity_target_epoch")),
            sparsity_freeze_epoch=int(param("params.sparsity_freeze_epoch")),
            mode=mode,
            update_per_optimizer_step=bool(param("params.update_per_optimizer_step")),
            steps_per_epoch=None if steps_per_epoch is None else int(steps_per_epoch),
            multistep_steps=tuple(steps),
            multistep_sparsity_levels=tuple(levels),
            patience=int(param("params.patience")),
            power=power,
            concave=bool(param("params.concave")),
            weight_importance=importance,
            path=path,
        )
