"""The ``filter_pruning`` section as one immutable value, read through the schema's defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nncompress.config.effective import get_param
from nncompress.errors import ConfigError
from nncompress.pruning.importance import IMPORTANCE_CRITERIA
from nncompress.pruning.schedule import SCHEDULES
from nncompress.pruning.selection import check_level

__all__ = ["ALGORITHM", "FilterPruningParams"]

ALGORITHM = "filter_pruning"
# learned_ranking (LeGR) needs its evolutionary search; these keys only make sense with it
_LEGR_ONLY = ("params.legr_params", "params.save_ranking_coeffs_path", "params.load_ranking_coeffs_path")


@dataclass(frozen=True)
class FilterPruningParams:
    """Every setting of a ``filter_pruning`` section (defaults from the schema).

    ``FilterPruningParams.from_section({"algorithm": "filter_pruning", "params": {...}})``; raises
    ``ConfigError`` for settings this version does not support (``learned_ranking``) and for
    levels outside [0, 1).
    """

    pruning_init: float
    pruning_target: float
    pruning_flops_target: float | None
    pruning_steps: int
    schedule: str
    num_init_steps: int
    filter_importance: str
    interlayer_ranking_type: str
    all_weights: bool
    prune_first_conv: bool
    prune_downsample_convs: bool
    prune_batch_norms: bool
    ignored_scopes: Any = None
    target_scopes: Any = None
    validate_scopes: bool = True

    @property
    def target(self) -> float:
        """The end point of the schedule: a FLOPs reduction when ``pruning_flops_target`` is set."""
        return self.pruning_flops_target if self.pruning_flops_target is not None else self.pruning_target

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> FilterPruningParams:
        def param(path: str) -> Any:
            return get_param(section, path, algorithm=ALGORITHM)

        problems = []
        ranking = param("params.interlayer_ranking_type")
        if ranking != "unweighted_ranking":
            problems.append(
                (
                    "params.interlayer_ranking_type",
                    f"'{ranking}' is not supported (LeGR's learned ranking needs an evolutionary search this "
                    "version does not have); use 'unweighted_ranking'",
                )
            )
        for path in _LEGR_ONLY:
            if ranking == "unweighted_ranking" and _is_set(section, path):
                problems.append(
                    (path, "only used by interlayer_ranking_type 'learned_ranking', which is not supported")
                )
        importance = param("params.filter_importance")
        if importance not in IMPORTANCE_CRITERIA:
            problems.append(
                (
                    "params.filter_importance",
                    f"unknown criterion '{importance}'; known: {', '.join(IMPORTANCE_CRITERIA)}",
                )
            )
        schedule = param("params.schedule")
        if schedule not in SCHEDULES:
            problems.append(
                ("params.schedule", f"unknown schedule '{schedule}'; known: {', '.join(SCHEDULES)}")
            )
        levels = {}
        for path in ("pruning_init", "params.pruning_target", "params.pruning_flops_target"):
            value = param(path)
            if value is None:
                levels[path] = None
                continue
            try:
                levels[path] = check_level(value, path.rsplit(".", 1)[-1])
            except ConfigError as exc:
                problems.append((path, exc.problems[0][1]))
        steps = param("params.pruning_steps")
        if not isinstance(steps, int) or steps < 1:
            problems.append(("params.pruning_steps", f"must be a positive integer, got {steps!r}"))
        init_steps = param("params.num_init_steps")
        if not isinstance(init_steps, int) or init_steps < 0:
            problems.append(("params.num_init_steps", f"must be a non-negative integer, got {init_steps!r}"))
        if not problems:
            target = levels["params.pruning_flops_target"]
            if target is None:
                target = levels["params.pruning_target"]
            if levels["pruning_init"] > target:
                problems.append(("pruning_init", f"{levels['pruning_init']} is above the target {target}"))
        if problems:
            raise ConfigError([(f"compression.{ALGORITHM}.{path}", msg) for path, msg in problems])
        return cls(
            pruning_init=levels["pruning_init"],
            pruning_target=levels["params.pruning_target"],
            pruning_flops_target=levels["params.pruning_flops_target"],
            pruning_steps=steps,
            schedule=schedule,
            num_init_steps=init_steps,
            filter_importance=importance,
            interlayer_ranking_type=ranking,
            all_weights=bool(param("params.all_weights")),
            prune_first_conv=bool(param("params.prune_first_conv")),
            prune_downsample_convs=bool(param("params.prune_downsample_convs")),
            prune_batch_norms=bool(param("params.prune_batch_norms")),
            ignored_scopes=section.get("ignored_scopes"),
            target_scopes=section.get("target_scopes"),
            validate_scopes=bool(param("validate_scopes")),
        )


def _is_set(section: Mapping[str, Any], path: str) -> bool:
    node: Any = section
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
