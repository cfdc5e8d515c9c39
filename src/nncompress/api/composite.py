"""Several algorithms at once: one controller, loss, scheduler and state over child controllers.

``create_compressed_model`` with several sections in ``compression`` returns a
:class:`CompositeCompressionAlgorithmController`; its ``loss()`` is the sum of the children's,
its scheduler steps every child scheduler, its statistics hold every child's, its stage combines
theirs (:meth:`CompressionStage.combine`) and its state is keyed by algorithm name, so each
child restores its own part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nncompress.api.compression import (
    CompressionAlgorithmController,
    CompressionLoss,
    CompressionScheduler,
    CompressionStage,
    NNCFStatistics,
)
from nncompress.errors import CompressionStateError

__all__ = [
    "CompositeCompressionAlgorithmController",
    "CompositeCompressionLoss",
    "CompositeCompressionScheduler",
]


def _check_state_keys(what: str, state: Any, expected: Sequence[str]) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise CompressionStateError(
            f"{what}: expected a dict keyed by algorithm name, got {type(state).__name__}"
        )
    missing = [name for name in expected if name not in state]
    extra = [name for name in state if name not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing for {', '.join(missing)}")
        if extra:
            parts.append(f"present for algorithms not in this model: {', '.join(map(str, extra))}")
        raise CompressionStateError(
            f"{what}: state {'; '.join(parts)} (algorithms here: {', '.join(expected)})"
        )
    return state


class CompositeCompressionLoss(CompressionLoss):
    """The sum of the child losses (``zero()`` when there are none)."""

    def __init__(
        self, children: Sequence[tuple[str, CompressionLoss]], zero: Callable[[], Any] = lambda: 0.0
    ):
        self._children = list(children)
        self._zero = zero

    @property
    def child_losses(self) -> list[CompressionLoss]:
        return [loss for _, loss in self._children]

    def calculate(self, *args: Any, **kwargs: Any) -> Any:
        total = None
        for _, loss in self._children:
            value = loss(*args, **kwargs)
            total = value if total is None else total + value
        return self._zero() if total is None else total

    def get_state(self) -> dict[str, Any]:
        return {name: loss.get_state() for name, loss in self._children}

    def load_state(self, state: dict[str, Any]) -> None:
        names = [name for name, _ in self._children]
        state = _check_state_keys("composite loss", state, names)
        for name, loss in self._children:
            loss.load_state(state[name])


class CompositeCompressionScheduler(CompressionScheduler):
    """Steps every child scheduler; ``current_step`` / ``current_epoch`` are the first child's."""

    def __init__(self, children: Sequence[tuple[str, CompressionScheduler]]):
        self._children = list(children)
        self._step = -1
        self._epoch = -1

    @property
    def child_schedulers(self) -> list[CompressionScheduler]:
        return [s for _, s in self._children]

    @property
    def current_step(self) -> int:
        if self._children:
            return self._children[0][1].current_step  # type: ignore[attr-defined]
        return self._step

    @property
    def current_epoch(self) -> int:
        if self._children:
            return self._children[0][1].current_epoch  # type: ignore[attr-defined]
        return self._epoch

    def step(self, next_step: int | None = None) -> None:
        self._step = self._step + 1 if next_step is None else int(next_step)
        for _, scheduler in self._children:
            scheduler.step(next_step)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        self._epoch = self._epoch + 1 if next_epoch is None else int(next_epoch)
        for _, scheduler in self._children:
            scheduler.epoch_step(next_epoch)

    def get_state(self) -> dict[str, Any]:
        return {
            "current_step": self._step,
            "current_epoch": self._epoch,
            "children": {name: s.get_state() for name, s in self._children},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "children" not in state:
            raise CompressionStateError(
                f"composite scheduler: expected a dict with 'children', got {state!r}"
            )
        names = [name for name, _ in self._children]
        children = _check_state_keys("composite scheduler", state["children"], names)
        for name, scheduler in self._children:
            scheduler.load_state(children[name])
        self._step = int(state.get("current_step", -1))
        self._epoch = int(state.get("current_epoch", -1))


class CompositeCompressionAlgorithmController(CompressionAlgorithmController):
    """Controls several algorithms applied to one model (each child is keyed by its algorithm name).

    Children must have an ``algorithm_name`` and a ``builder_state`` (the part of the compression
    state that rebuilds their modifications).
    """

    def __init__(self, target_model: Any, children: Sequence[CompressionAlgorithmController] = ()):
        super().__init__(target_model)
        self._children: list[CompressionAlgorithmController] = []
        for child in children:
            self.add(child)

    def add(self, child: CompressionAlgorithmController) -> None:
        name = child.algorithm_name  # type: ignore[attr-defined]
        if any(c.algorithm_name == name for c in self._children):  # type: ignore[attr-defined]
            raise ValueError(f"algorithm '{name}' is already part of this composite controller")
        if child.model is not self.model:
            raise ValueError(f"the '{name}' controller drives another model than this composite controller")
        self._children.append(child)
        self.__dict__.pop("_scheduler", None)

    @property
    def child_ctrls(self) -> list[CompressionAlgorithmController]:
        return list(self._children)

    def _named(self) -> list[tuple[str, CompressionAlgorithmController]]:
        return [(c.algorithm_name, c) for c in self._children]  # type: ignore[attr-defined]

    def _zero_loss(self) -> Any:
        return 0.0

    @property
    def loss(self) -> CompositeCompressionLoss:
        return CompositeCompressionLoss([(n, c.loss) for n, c in self._named()], zero=self._zero_loss)

    @property
    def scheduler(self) -> CompositeCompressionScheduler:
        if not hasattr(self, "_scheduler"):
            self._scheduler = CompositeCompressionScheduler([(n, c.scheduler) for n, c in self._named()])
        return self._scheduler

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.combine(c.compression_stage() for c in self._children)

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        merged = NNCFStatistics()
        for child in self._children:
            for name, stats in child.statistics(quickly_collected_only):
                merged.register(name, stats)
        return merged

    def prepare_for_export(self) -> None:
        for child in self._children:
            child.prepare_for_export()

    def strip_model(self, model: Any, do_copy: bool = False) -> Any:
        if do_copy:
            import copy

            model = copy.deepcopy(model)
        for child in self._children:
            model = child.strip_model(model, do_copy=False)
        return model

    def distributed(self) -> None:
        for child in self._children:
            child.distributed()

    def disable_scheduler(self) -> None:
        for child in self._children:
            child.disable_scheduler()

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for child in self._children:
            state.update(child.get_state())
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        names = [n for n, _ in self._named()]
        state = _check_state_keys(self.CONTROLLER_STATE, state, names)
        for name, child in self._named():
            child.load_state({name: state[name]})

    def get_compression_state(self) -> dict[str, Any]:
        return {
            self.BUILDER_STATE: {n: c.builder_state for n, c in self._named()},  # type: ignore[attr-defined]
            self.CONTROLLER_STATE: self.get_state(),
        }

    def export_model(
        self,
        save_path: str,
        save_format: str | None = None,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        model_args: tuple | None = None,
    ) -> Any:
        raise NotImplementedError("export needs a backend: use the backend's composite controller")
