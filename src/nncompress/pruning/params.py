"""The ``filter_pruning`` section as one immutable value, read through the schema's defaults."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nncompress.config.effective import get_param
from nncompress.errors import ConfigError
from nncompress.pruning.importance import IMPORTANCE_CRITERIA
from nncompress.pruning.legr import LeGRParams
from nncompress.pruning.schedule import SCHEDULES
from nncompress.pruning.selection import check_level

__all__ = ["ALGORITHM", "LEARNED_RANKING", "FilterPruningParams"]

ALGORITHM = "filter_pruning"
LEARNED_RANKING = "learned_ranking"
# these keys only make sense with interlayer_ranking_type learned_ranking (LeGR)
_LEGR_ONLY = ("params.legr_params", "params.save_ranking_coeffs_path", "params.load_ranking_coeffs_path")
# LeGR ranks all layers together and is meant to reach every layer: NNCF defaults these to true
_LEGR_DEFAULT_TRUE = ("params.prune_first_conv", "params.prune_downsample_convs", "params.all_weights")


@dataclass(frozen=True)
class FilterPruningParams:
    """Every setting of a ``filter_pruning`` section (defaults from the schema).

    ``FilterPruningParams.from_section({"algorithm": "filter_pruning", "params": {...}})``; raises
    ``ConfigError`` for levels outside [0, 1) and inconsistent settings. With
    ``interlayer_ranking_type: learned_ranking`` (LeGR), ``legr`` holds ``legr_params`` and, as in
    NNCF, ``prune_first_conv``, ``prune_downsample_convs`` and ``all_weights`` default to true
    (``all_weights: false`` is an error: the learned coefficients rank layers against each other).
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
    legr: LeGRParams | None = None
    save_ranking_coeffs_path: str | None = None
    load_ranking_coeffs_path: str | None = None

    @property
    def learned_ranking(self) -> bool:
        return self.interlayer_ranking_type == LEARNED_RANKING

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
        learned = ranking == LEARNED_RANKING
        if ranking not in ("unweighted_ranking", LEARNED_RANKING):
            problems.append(
                (
                    "params.interlayer_ranking_type",
                    f"unknown ranking '{ranking}'; known: unweighted_ranking, learned_ranking",
                )
            )
        for path in _LEGR_ONLY:
            if not learned and _is_set(section, path):
                problems.append(
                    (path, f"only used by interlayer_ranking_type 'learned_ranking', not '{ranking}'")
                )
        if learned and _is_set(section, "params.all_weights") and not param("params.all_weights"):
            problems.append(
                (
                    "params.all_weights",
                    "must be true with learned_ranking: LeGR's coefficients rank the filters of all layers "
                    "together (leave it out, or set it to true)",
                )
            )

        def flag(path: str) -> bool:
            if learned and path in _LEGR_DEFAULT_TRUE and not _is_set(section, path):
                return True
            return bool(param(path))

        legr = None
        if learned:
            max_pruning = (
                float(param("params.legr_params.max_pruning"))
                if _is_set(section, "params.legr_params.max_pruning")
                else None
            )
            legr = LeGRParams(
                generations=int(param("params.legr_params.generations")),
                train_steps=int(param("params.legr_params.train_steps")),
                max_pruning=max_pruning,
                random_seed=int(param("params.legr_params.random_seed")),
                population_size=int(param("params.legr_params.population_size")),
                num_samples=int(param("params.legr_params.num_samples")),
                mutate_percent=float(param("params.legr_params.mutate_percent")),
                scale_sigma=float(param("params.legr_params.scale_sigma")),
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
                # NNCF accepts it: the schedule then lowers the level (masks in training), and the
                # adaptive accuracy-aware loop sets the level itself (NNCF's own test configs do this)
                logging.getLogger("nncompress").warning(
                    "compression.%s.pruning_init %s is above the target %s: the schedule lowers the level",
                    ALGORITHM,
                    levels["pruning_init"],
                    target,
                )
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
            all_weights=flag("params.all_weights"),
            prune_first_conv=flag("params.prune_first_conv"),
            prune_downsample_convs=flag("params.prune_downsample_convs"),
            prune_batch_norms=bool(param("params.prune_batch_norms")),
            ignored_scopes=section.get("ignored_scopes"),
            target_scopes=section.get("target_scopes"),
            validate_scopes=bool(param("validate_scopes")),
            legr=legr,
            save_ranking_coeffs_path=param("params.save_ranking_coeffs_path") if learned else None,
            load_ranking_coeffs_path=param("params.load_ranking_coeffs_path") if learned else None,
        )


def _is_set(section: Mapping[str, Any], path: str) -> bool:
    node: Any = section
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
