"""LeGR (learned global ranking, Chin et al. 2020): per-layer affine transforms of filter importance.

A single global ranking of filters (``all_weights``) compares filters of different layers by raw
importance, which favours some layers over others for no good reason. LeGR learns, for every
pruned layer ``l``, a pair ``(scale_l, shift_l)``; a filter then scores
``scale_l * importance + shift_l`` (:func:`nncompress.pruning.importance.unit_importance`). The
pairs are found by an evolutionary search (:class:`EvolutionSearch`, NNCF 2.x's settings in
``params.legr_params``): each candidate prunes the model to ``max_pruning`` with its coefficients,
trains for ``train_steps`` steps, and is scored by minus the validation loss; the best candidate
wins. The search itself needs a backend (torch: :mod:`nncompress.torch.pruning.legr`); this module
is the numpy part: the settings, the search, and the JSON files of coefficients::

    search = EvolutionSearch({"conv1": 0.3, "conv2": 0.5}, LeGRParams(generations=8))
    for _ in range(8):
        coeffs = search.ask()
        search.tell(-evaluate(coeffs))
    save_ranking_coeffs("coeffs.json", search.best)

Differences from NNCF 2.19, on purpose: the random generator is seeded once (NNCF reseeds it
before each candidate, so its random candidates are all alike), the identity ``(1, 0)`` is the
first candidate (NNCF tries it only once the population is full, so a short search never tries
it), and a mutation changes at least one layer.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.errors import ConfigError, PruningError

__all__ = [
    "EvolutionSearch",
    "LeGRParams",
    "RankingCoeffs",
    "check_ranking_coeffs",
    "load_ranking_coeffs",
    "save_ranking_coeffs",
]

#: layer (module path) -> (scale, shift)
RankingCoeffs = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class LeGRParams:
    """``params.legr_params`` (NNCF 2.19 defaults). ``max_pruning`` None: the schedule's target."""

    generations: int = 400
    train_steps: int = 200
    max_pruning: float | None = None
    random_seed: int = 42
    population_size: int = 64
    num_samples: int = 16
    mutate_percent: float = 0.1
    scale_sigma: float = 1.0


class EvolutionSearch:
    """Ask for a candidate, tell its reward; :attr:`best` is the best candidate so far.

    ``layer_std`` maps each pruned layer to the standard deviation of its filter importances (the
    scale of the random shifts). The first candidate is the identity; then random ones
    (``scale = exp(N(0, scale_sigma))``, ``shift = N(0, std)``) until the population is full; then
    the best of ``num_samples`` random members of the population, with ``mutate_percent`` of its
    layers mutated (with a shrinking step), replaces the oldest member.
    """

    def __init__(self, layer_std: Mapping[str, float], params: LeGRParams):
        if not layer_std:
            raise PruningError("LeGR: no pruned layer to learn ranking coefficients for")
        self.layers = list(layer_std)
        self.std = {k: float(v) for k, v in layer_std.items()}
        self.params = params
        self.rng = np.random.default_rng(params.random_seed)
        self.population: list[tuple[RankingCoeffs, float]] = []
        self._order: deque[int] = deque()
        self.rewards: list[float] = []
        self.best: RankingCoeffs = self.identity()
        self.best_reward = -math.inf
        self._pending: RankingCoeffs | None = None

    def identity(self) -> RankingCoeffs:
        return {k: (1.0, 0.0) for k in self.layers}

    def ask(self) -> RankingCoeffs:
        """The next candidate to evaluate."""
        if self._pending is not None:
            raise PruningError("LeGR: ask() called twice without tell()")
        episode = len(self.rewards)
        p = self.params
        if episode == 0:
            action = self.identity()
        elif len(self.population) < p.population_size:
            action = {
                k: (
                    float(np.exp(self.rng.normal(0.0, p.scale_sigma))),
                    float(self.rng.normal(0.0, self.std[k])),
                )
                for k in self.layers
            }
        else:
            step = max(0.0, 1.0 - episode / (p.generations * 1.25))
            idx = self.rng.choice(len(self.population), size=min(p.num_samples, len(self.population)))
            parent = self.population[int(max(idx, key=lambda i: self.population[i][1]))][0]
            n_mutate = max(1, int(p.mutate_percent * len(self.layers)))
            mutated = set(self.rng.choice(len(self.layers), size=n_mutate, replace=False).tolist())
            action = {}
            for i, k in enumerate(self.layers):
                scale, shift = parent[k]
                if i in mutated:
                    scale *= float(np.exp(self.rng.normal(0.0, p.scale_sigma * step)))
                    shift += float(self.rng.normal(0.0, self.std[k]))
                action[k] = (scale, shift)
        self._pending = action
        return action

    def tell(self, reward: float) -> None:
        """The reward of the last candidate (higher is better)."""
        if self._pending is None:
            raise PruningError("LeGR: tell() called without ask()")
        reward = float(reward)
        if math.isnan(reward):
            raise PruningError("LeGR: a candidate's reward is NaN (the validation loss diverged)")
        action, self._pending = self._pending, None
        self.rewards.append(reward)
        if reward > self.best_reward:
            self.best, self.best_reward = action, reward
        if len(self.population) < self.params.population_size:
            self._order.append(len(self.population))
            self.population.append((action, reward))
        else:
            oldest = self._order.popleft()
            self.population[oldest] = (action, reward)
            self._order.append(oldest)


def check_ranking_coeffs(coeffs: Any, layers: Iterable[str], where: str) -> RankingCoeffs:
    """``coeffs`` as :data:`RankingCoeffs` covering exactly ``layers``; ``ConfigError`` at ``where``
    naming the first problem (a file for another model, a value that is not a pair of numbers)."""
    layers = list(layers)
    if not isinstance(coeffs, Mapping):
        raise ConfigError(
            [(where, f"ranking coefficients must be a JSON object, got {type(coeffs).__name__}")]
        )
    missing = [k for k in layers if k not in coeffs]
    extra = [k for k in coeffs if k not in layers]
    if missing or extra:
        raise ConfigError(
            [
                (
                    where,
                    f"ranking coefficients do not fit this model: missing {missing[:5]}, unknown {extra[:5]} "
                    f"(expected the pruned layers {layers[:8]}{'...' if len(layers) > 8 else ''})",
                )
            ]
        )
    result: RankingCoeffs = {}
    for k in layers:
        value = coeffs[k]
        ok = (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
            )
        )
        if not ok:
            raise ConfigError(
                [(where, f"coefficients of '{k}' must be [scale, shift] (two finite numbers), got {value!r}")]
            )
        result[k] = (float(value[0]), float(value[1]))
    return result


def save_ranking_coeffs(path: str | Path, coeffs: Mapping[str, tuple[float, float]]) -> Path:
    """Write ``{"layer": [scale, shift], ...}`` (NNCF's format, keyed by module path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({k: [float(a), float(b)] for k, (a, b) in coeffs.items()}, indent=1), encoding="utf-8"
    )
    return path


def load_ranking_coeffs(path: str | Path, layers: Iterable[str], where: str) -> RankingCoeffs:
    """Read a file written by :func:`save_ranking_coeffs`, checked against ``layers``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([(where, f"no ranking coefficients file at '{path}'")]) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError([(where, f"cannot read ranking coefficients from '{path}': {exc}")]) from None
    return check_ranking_coeffs(data, layers, where)
