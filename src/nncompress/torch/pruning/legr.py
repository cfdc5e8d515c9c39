"""LeGR on a torch model: the evolutionary search of per-layer ranking coefficients.

Runs :class:`~nncompress.pruning.legr.EvolutionSearch` with the hooks the user registered
(``register_default_init_args(config, train_loader, train_steps_fn=..., val_loader=...,
validate_fn=...)``, which registers ``LeGRInitArgs``), NNCF 2.x's protocol:

- ``train_steps_fn(train_loader, model, optimizer, compression_ctrl, train_steps)`` trains the
  masked model for ``train_steps`` steps (``compression_ctrl`` has ``loss()`` and a
  ``scheduler`` whose ``step()``/``epoch_step()`` do nothing: the level stays put);
- ``validate_fn(model, val_loader) -> (accuracy, loss)``; a candidate's reward is ``-loss``;
- ``legr_train_optimizer``: a callable ``params -> optimizer`` (default: SGD, lr 0.01,
  momentum 0.9, Nesterov, weight decay 5e-4, as NNCF).

Every candidate starts from the same weights, BatchNorm statistics and masks (restored from a copy
of the ``state_dict``), prunes to ``max_pruning`` (a FLOPs reduction when
``pruning_flops_target`` is set) with its coefficients, trains and validates; torch's random
state is seeded per candidate from ``random_seed`` (and restored afterwards), so a search
is reproducible. The model comes back exactly as it was.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import PruningError
from nncompress.progress import progress
from nncompress.pruning.importance import layer_importance
from nncompress.pruning.legr import EvolutionSearch, LeGRParams, RankingCoeffs
from nncompress.pruning.selection import ChannelSelection

__all__ = ["LeGRTrainingHandle", "learn_ranking_coeffs", "ranked_layers"]

logger = logging.getLogger("nncompress")


class _FrozenScheduler:
    """A scheduler whose steps do nothing: the pruning level stays where the search put it."""

    current_epoch = 0

    def step(self, next_step: int | None = None) -> None:
        return None

    def epoch_step(self, next_epoch: int | None = None) -> None:
        return None


class LeGRTrainingHandle:
    """What ``train_steps_fn`` gets as its ``compression_ctrl`` during the search."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.scheduler = _FrozenScheduler()

    def loss(self) -> torch.Tensor:
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return torch.zeros([], device=device)


def ranked_layers(engine: Any) -> dict[str, np.ndarray]:
    """Filter scores of the layers whose filters can be pruned, keyed by module path."""
    return layer_importance(
        engine.deps, engine.weights(), engine.params.filter_importance, prunable_only=True
    )


def _acc_loss(result: Any) -> tuple[float, float]:
    try:
        acc, loss = result
        return float(acc), float(loss)
    except (TypeError, ValueError):
        raise PruningError(
            f"LeGR: validate_fn must return (accuracy, loss), got {type(result).__name__} {result!r:.80}"
        ) from None


def learn_ranking_coeffs(
    engine: Any,
    model: nn.Module,
    init_args: Any,
    legr: LeGRParams,
    *,
    target: float,
    prune_flops: bool,
) -> tuple[RankingCoeffs, list[float]]:
    """The best coefficients of the search, and the reward of every candidate (in order).

    ``engine`` is the model's :class:`~nncompress.torch.pruning.engine.TorchFilterPruning` (its
    masks are on ``model``); ``target`` is the level (or FLOPs reduction) used when
    ``legr.max_pruning`` is not set.
    """
    scores = ranked_layers(engine)
    search = EvolutionSearch({k: float(np.std(v)) for k, v in scores.items()}, legr)
    max_pruning = legr.max_pruning if legr.max_pruning is not None else target
    make_optimizer = init_args.train_optimizer or partial(
        torch.optim.SGD, lr=1e-2, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    handle = LeGRTrainingHandle(model)
    saved = copy.deepcopy(model.state_dict())
    modes = {m: m.training for m in model.modules()}
    everything = ChannelSelection(np.ones(engine.deps.num_units, dtype=bool), 0.0)
    logger.info(
        "LeGR: %d generations of %d training steps, pruning to %s",
        legr.generations,
        legr.train_steps,
        max_pruning,
    )
    try:
        for generation in progress(range(legr.generations), "LeGR search (generations)"):
            t0 = time.perf_counter()
            coeffs = search.ask()
            model.load_state_dict(saved)
            engine.ranking_coeffs = None
            engine.apply(everything)
            engine.ranking_coeffs = coeffs
            engine.apply(engine.select_flops(max_pruning) if prune_flops else engine.select(max_pruning))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(legr.random_seed + generation)
                optimizer = make_optimizer(model.parameters())
                model.train()
                init_args.train_steps_fn(init_args.train_loader, model, optimizer, handle, legr.train_steps)
                model.eval()
                _, loss = _acc_loss(init_args.val_fn(model, init_args.val_loader))
            if not math.isfinite(loss):
                loss = math.inf  # a diverged candidate is the worst, not an error
            search.tell(-loss)
            logger.info(
                "LeGR generation %d: reward %.4f (best %.4f), %.1fs",
                generation,
                -loss,
                search.best_reward,
                time.perf_counter() - t0,
            )
    finally:
        model.load_state_dict(saved)
        engine.ranking_coeffs = None
        engine.apply(everything)
        for m, training in modes.items():
            m.training = training
    return dict(search.best), list(search.rewards)
