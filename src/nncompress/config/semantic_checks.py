"""Checks JSON Schema cannot express: relations between keys and between sections.

Each check looks only at values of the right type, so it runs safely on configs the schema has
already found broken; a wrong type is the schema's problem to report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from nncompress.config.effective import get_param
from nncompress.config.json_paths import Path, format_path
from nncompress.config.schema import ROOT_KEYS
from nncompress.config.schema.accuracy_aware import ADAPTIVE_ONLY_PARAMS, DEGRADATION_PARAMS

Problem = tuple[Path, str]
# Algorithms whose compression level the adaptive accuracy-aware loop can raise or lower.
ADAPTIVE_LEVEL_ALGORITHMS = ("filter_pruning", "magnitude_sparsity", "rb_sparsity")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def compression_sections(config: Mapping[str, Any]) -> Iterator[tuple[Path, Mapping[str, Any]]]:
    """``(path, section)`` for each compression section that is an object."""
    compression = config.get("compression")
    if isinstance(compression, Mapping):
        yield ("compression",), compression
    elif isinstance(compression, list):
        for i, section in enumerate(compression):
            if isinstance(section, Mapping):
                yield ("compression", i), section


def check_semantics(config: Any) -> list[Problem]:
    """All cross-key problems of ``config`` (an empty list when there are none)."""
    if not isinstance(config, Mapping):
        return []
    problems: list[Problem] = []
    problems += _check_duplicate_algorithms(config)
    for path, section in compression_sections(config):
        name = section.get("algorithm")
        check = _SECTION_CHECKS.get(name) if isinstance(name, str) else None
        if check is not None:
            problems += check(path, section)
    problems += _check_accuracy_aware(config)
    return problems


def check_finite_numbers(config: Mapping[str, Any]) -> list[Problem]:
    """NaN and infinity pass every JSON Schema range check, so reject them explicitly."""
    problems: list[Problem] = []

    def walk(node: Any, path: Path) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            problems.append((path, f"expected a finite number, got {node}"))
        elif isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, (*path, i))

    for key in ROOT_KEYS:
        if key in config:
            walk(config[key], (key,))
    return problems


def _check_duplicate_algorithms(config: Mapping[str, Any]) -> list[Problem]:
    first_seen: dict[str, Path] = {}
    problems = []
    for path, section in compression_sections(config):
        name = section.get("algorithm")
        if not isinstance(name, str):
            continue
        if name in first_seen:
            problems.append(
                (
                    (*path, "algorithm"),
                    f"algorithm '{name}' is listed again (first at {format_path(first_seen[name])}); "
                    "each algorithm may appear only once",
                )
            )
        else:
            first_seen[name] = path
    return problems


def _safe_param(section: Mapping[str, Any], path: str) -> Any:
    """The effective value, or None where the section's structure is too broken to walk."""
    params = section.get("params", {})
    if path.startswith("params.") and not isinstance(params, Mapping):
        return None
    return get_param(section, path)


def _check_sparsity(path: Path, section: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    params = section.get("params")
    params = params if isinstance(params, Mapping) else {}
    schedule = _safe_param(section, "params.schedule")
    init = get_param(section, "sparsity_init")
    target = _safe_param(section, "params.sparsity_target")
    if schedule != "multistep" and _is_number(init) and _is_number(target) and target < init:
        where = (
            (*path, "params", "sparsity_target") if "sparsity_target" in params else (*path, "sparsity_init")
        )
        problems.append(
            (
                where,
                f"sparsity_target {target} is below sparsity_init {init}; the schedule only increases "
                "sparsity, so the target must be at least the initial level",
            )
        )
    if schedule == "multistep" or "multistep_steps" in params or "multistep_sparsity_levels" in params:
        problems += _check_multistep(path, section, params)
    return problems


def _check_multistep(path: Path, section: Mapping[str, Any], params: Mapping[str, Any]) -> list[Problem]:
    steps = _safe_param(section, "params.multistep_steps")
    levels = _safe_param(section, "params.multistep_sparsity_levels")
    problems: list[Problem] = []
    if not (isinstance(steps, list) and isinstance(levels, list)):
        return problems
    if len(levels) != len(steps) + 1:
        where = "multistep_sparsity_levels" if "multistep_sparsity_levels" in params else "multistep_steps"
        problems.append(
            (
                (*path, "params", where),
                f"multistep_sparsity_levels must have one more entry than multistep_steps (a level before "
                f"the first step and after each step): {len(steps)} steps need {len(steps) + 1} levels, "
                f"got {len(levels)}",
            )
        )
    numbers = [s for s in steps if _is_number(s)]
    if len(numbers) == len(steps) and any(b <= a for a, b in zip(numbers, numbers[1:])):
        problems.append(((*path, "params", "multistep_steps"), f"steps must increase, got {steps}"))
    return problems


def _range_entries(section: Mapping[str, Any]) -> Iterator[tuple[Path, Mapping[str, Any]]]:
    init = section.get("initializer")
    if not isinstance(init, Mapping):
        return
    rng = init.get("range")
    if isinstance(rng, Mapping):
        yield ("initializer", "range"), rng
    elif isinstance(rng, list):
        for i, entry in enumerate(rng):
            if isinstance(entry, Mapping):
                yield ("initializer", "range", i), entry


def _check_quantization(path: Path, section: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for sub, entry in _range_entries(section):
        params = entry.get("params")
        if not isinstance(params, Mapping):
            continue
        low, high = params.get("min_percentile", 0.1), params.get("max_percentile", 99.9)
        if _is_number(low) and _is_number(high) and low >= high:
            problems.append(
                (
                    (*path, *sub, "params", "min_percentile"),
                    f"min_percentile {low} must be below max_percentile {high}",
                )
            )
    init = section.get("initializer")
    precision = init.get("precision") if isinstance(init, Mapping) else None
    if (
        isinstance(precision, Mapping)
        and precision.get("type") == "manual"
        and "bitwidth_per_scope" not in precision
    ):
        problems.append(
            (
                (*path, "initializer", "precision", "bitwidth_per_scope"),
                "precision type 'manual' needs 'bitwidth_per_scope', the table of [bits, scope] pairs",
            )
        )
    return problems


def _check_movement(path: Path, section: Mapping[str, Any]) -> list[Problem]:
    params = section.get("params")
    if not isinstance(params, Mapping):
        return []
    start, end = params.get("warmup_start_epoch"), params.get("warmup_end_epoch")
    if _is_number(start) and _is_number(end) and end < start:
        return [
            (
                (*path, "params", "warmup_end_epoch"),
                f"warmup_end_epoch {end} is before warmup_start_epoch {start}",
            )
        ]
    return []


def _check_accuracy_aware(config: Mapping[str, Any]) -> list[Problem]:
    aat = config.get("accuracy_aware_training")
    if not isinstance(aat, Mapping):
        return []
    base: Path = ("accuracy_aware_training",)
    params = aat.get("params")
    mode = aat.get("mode")
    problems: list[Problem] = []
    if isinstance(params, Mapping):
        given = [k for k in DEGRADATION_PARAMS if k in params]
        if not given:
            problems.append(
                (
                    (*base, "params"),
                    "no accuracy budget: set maximal_relative_accuracy_degradation (percent) or "
                    "maximal_absolute_accuracy_degradation (metric units)",
                )
            )
        elif len(given) > 1:
            problems.append(
                (
                    (*base, "params", given[1]),
                    f"set only one of {DEGRADATION_PARAMS[0]} and {DEGRADATION_PARAMS[1]}",
                )
            )
        if mode == "early_exit":
            for key in ADAPTIVE_ONLY_PARAMS:
                if key in params:
                    problems.append(
                        (
                            (*base, "params", key),
                            f"'{key}' is used only by mode 'adaptive_compression_level', not by 'early_exit'",
                        )
                    )
    if mode == "adaptive_compression_level":
        names = {
            s.get("algorithm") for _, s in compression_sections(config) if isinstance(s.get("algorithm"), str)
        }
        if not names & set(ADAPTIVE_LEVEL_ALGORITHMS):
            problems.append(
                (
                    (*base, "mode"),
                    "mode 'adaptive_compression_level' needs an algorithm whose level can be adjusted ("
                    + ", ".join(ADAPTIVE_LEVEL_ALGORITHMS)
                    + ") in 'compression'; use 'early_exit' otherwise",
                )
            )
    return problems


_SECTION_CHECKS: dict[str, Callable[[Path, Mapping[str, Any]], list[Problem]]] = {
    "magnitude_sparsity": _check_sparsity,
    "rb_sparsity": _check_sparsity,
    "quantization": _check_quantization,
    "experimental_quantization": _check_quantization,
    "movement_sparsity": _check_movement,
}
