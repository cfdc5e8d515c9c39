"""Which channels to remove for a pruning level, or for a FLOPs reduction.

A *pruning level* ``p`` (``0 <= p < 1``) removes, in every prunable group of ``n`` channels,
``floor(p * n)`` of them, the least important first (``all_weights=False``); or, with
``all_weights=True``, the ``floor(p * N)`` least important channels of all prunable groups
together (``N`` channels in all), compared by raw importance ("unweighted ranking"). Fixed
channels count in ``n`` and ``N`` but are never removed.

Every group keeps at least one channel: when the global ranking would empty a group, its most
important channel stays and :attr:`ChannelSelection.notes` says so (a layer without channels
would disconnect the network).

``select_for_flops`` finds the smallest level whose FLOPs reduction reaches a target, by
bisection on the level (FLOPs fall as the level rises).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nncompress.errors import ConfigError, PruningError
from nncompress.graph import Graph
from nncompress.pruning.channels import ChannelDependencies
from nncompress.pruning.cost import ModelCost, count_cost

__all__ = ["ChannelSelection", "check_level", "removed_count", "select_channels", "select_for_flops"]


@dataclass
class ChannelSelection:
    """The outcome: ``keep[u]`` for every unit, the level that produced it, and notes."""

    keep: np.ndarray
    level: float
    notes: list[str] = field(default_factory=list)
    cost: ModelCost | None = None

    @property
    def num_removed(self) -> int:
        return int((~self.keep).sum())


def check_level(level: float, what: str = "pruning level") -> float:
    """``level`` as a float in [0, 1); ConfigError otherwise (1 would remove every channel)."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ConfigError([("params.pruning_target", f"{what} must be a number, got {level!r}")]) from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ConfigError(
            [
                (
                    "params.pruning_target",
                    f"{what} must be in [0, 1) (1 would remove every filter), got {value}",
                )
            ]
        )
    return value


def removed_count(n: int, level: float, round_to: int = 1) -> int:
    """Channels of a group of ``n`` removed at ``level``: ``floor(level * n)``; with ``round_to``
    > 1, the kept count is rounded up to a multiple of it (NNCF 2.19 rounds to 8: hardware likes
    channel counts in blocks, and layers of 8 or fewer filters are then never pruned).

    >>> removed_count(32, 0.1), removed_count(32, 0.1, 8), removed_count(32, 0.5, 8)
    (3, 0, 16)
    """
    if round_to <= 1:
        return int(math.floor(level * n + 1e-9))
    kept = math.ceil((n - n * level) / round_to - 1e-9) * round_to
    return max(n - kept, 0)


def select_channels(
    deps: ChannelDependencies,
    importance: np.ndarray,
    level: float,
    *,
    all_weights: bool,
    round_to: int = 1,
) -> ChannelSelection:
    """Units to keep at pruning ``level`` (see the module docstring); ``round_to`` rounds each
    group's kept count up to a multiple of it (:func:`removed_count`; per group only)."""
    level = check_level(level)
    if not isinstance(round_to, int) or round_to < 1:
        raise PruningError(f"round_to must be a positive integer, got {round_to!r}")
    keep = np.ones(deps.num_units, dtype=bool)
    notes: list[str] = []
    groups = deps.prunable_groups
    if level == 0.0 or not groups:
        return ChannelSelection(keep, level, notes)
    if all_weights:
        total = sum(g.num_channels for g in groups)
        k = int(math.floor(level * total + 1e-9))
        candidates = np.concatenate([g.prunable_units for g in groups])
        order = candidates[np.argsort(importance[candidates], kind="stable")]
        keep[order[:k]] = False
        for g in groups:
            if not keep[g.units].any():
                best = g.units[np.argmax(importance[g.units])]
                keep[best] = True
                notes.append(
                    f"group {g.index} ({', '.join(deps.label(p) for p in g.producers[:3])}): the global "
                    "ranking would remove every channel; its most important channel is kept"
                )
        return ChannelSelection(keep, level, notes)
    for g in groups:
        k = min(removed_count(g.num_channels, level, round_to), g.num_prunable, g.num_channels - 1)
        if k <= 0:
            continue
        units = g.prunable_units
        order = units[np.argsort(importance[units], kind="stable")]
        keep[order[:k]] = False
    return ChannelSelection(keep, level, notes)


def select_for_flops(
    graph: Graph,
    deps: ChannelDependencies,
    importance: np.ndarray,
    flops_reduction: float,
    *,
    all_weights: bool,
    tolerance: float = 1e-4,
    round_to: int = 1,
) -> ChannelSelection:
    """The selection at the smallest level whose FLOPs reduction is at least ``flops_reduction``.

    Raises ``PruningError`` when even the largest level cannot remove that much (most FLOPs sit
    in layers that are left out); the message gives the reachable reduction.
    """
    target = check_level(flops_reduction, "pruning_flops_target")
    original = count_cost(graph).flops
    if original == 0:
        raise PruningError("pruning_flops_target: the model has no convolution or linear FLOPs to remove")

    def attempt(level: float) -> tuple[ChannelSelection, float]:
        sel = select_channels(deps, importance, level, all_weights=all_weights, round_to=round_to)
        sel.cost = count_cost(graph, deps, sel.keep)
        return sel, 1.0 - sel.cost.flops / original

    best, reached = attempt(0.0)
    if target == 0.0 or reached >= target:
        return best
    top_level = 1.0 - 1e-9
    top, top_reached = attempt(top_level)
    if top_reached < target:
        raise PruningError(
            f"pruning_flops_target {target:.1%} cannot be reached: removing all but one channel of every "
            f"prunable group removes {top_reached:.1%} of the FLOPs (the rest is in layers left out; "
            "print the groups to see why)"
        )
    lo, hi = 0.0, top_level
    best = top
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        sel, got = attempt(mid)
        if got >= target:
            hi, best = mid, sel
        else:
            lo = mid
    return best
