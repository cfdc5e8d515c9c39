"""The training-time compression API of NNCF 2.x: controller, scheduler, loss, stage, statistics.

``create_compressed_model(model, config)`` returns a :class:`CompressionAlgorithmController` and
the compressed model. The training loop talks to the controller only::

    ctrl, model = create_compressed_model(model, config)
    for epoch in range(epochs):
        ctrl.scheduler.epoch_step()
        for x, y in loader:
            ctrl.scheduler.step()
            loss = criterion(model(x), y) + ctrl.loss()
            ...
        print(ctrl.statistics().to_str())
    ctrl.export_model("model.onnx")

Backend-neutral: nothing here imports a framework. Scheduler and loss states are plain dicts
(``get_state`` / ``load_state``, with ``state_dict`` / ``load_state_dict`` aliases as in older
NNCF releases), so they go into a checkpoint next to the model's ``state_dict``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from enum import IntEnum
from typing import Any

from nncompress.errors import CompressionStateError

__all__ = [
    "BaseCompressionScheduler",
    "CompressionAlgorithmController",
    "CompressionLoss",
    "CompressionScheduler",
    "CompressionStage",
    "NNCFStatistics",
    "Statistics",
]


class CompressionStage(IntEnum):
    """How far compression has gone; ``a + b`` combines the stages of two algorithms."""

    UNCOMPRESSED = 0
    PARTIALLY_COMPRESSED = 1
    FULLY_COMPRESSED = 2

    def __add__(self, other: object) -> CompressionStage:  # type: ignore[override]
        if not isinstance(other, CompressionStage):
            return NotImplemented
        if self == other:
            return self
        return CompressionStage.PARTIALLY_COMPRESSED

    @classmethod
    def combine(cls, stages: Iterable[CompressionStage]) -> CompressionStage:
        """All equal: that stage; a mix: ``PARTIALLY_COMPRESSED``; none: ``UNCOMPRESSED``."""
        result: CompressionStage | None = None
        for stage in stages:
            result = stage if result is None else result + stage
        return cls.UNCOMPRESSED if result is None else result


class _StateAliases:
    """``state_dict`` / ``load_state_dict``: the names older NNCF scripts use for get/load_state."""

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return self.get_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_state(state)


class CompressionLoss(_StateAliases, ABC):
    """The extra loss term of an algorithm; ``ctrl.loss()`` calls :meth:`calculate`."""

    @abstractmethod
    def calculate(self, *args: Any, **kwargs: Any) -> Any:
        """The loss value (a tensor of the model's framework)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.calculate(*args, **kwargs)

    def get_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state:
            raise CompressionStateError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")


class CompressionScheduler(_StateAliases, ABC):
    """Advances an algorithm through training: call :meth:`step` every batch, :meth:`epoch_step`
    every epoch (both before the work they count, as NNCF's sample scripts do)."""

    @abstractmethod
    def step(self, next_step: int | None = None) -> None: ...

    @abstractmethod
    def epoch_step(self, next_epoch: int | None = None) -> None: ...


class BaseCompressionScheduler(CompressionScheduler):
    """Counts steps and epochs; both start at -1 so the first ``step()`` / ``epoch_step()`` is 0.

    The step counter runs across epochs (it is the global batch index).
    """

    def __init__(self) -> None:
        self._current_step = -1
        self._current_epoch = -1

    @property
    def current_step(self) -> int:
        return self._current_step

    @property
    def current_epoch(self) -> int:
        return self._current_epoch

    def step(self, next_step: int | None = None) -> None:
        self._current_step = self._current_step + 1 if next_step is None else int(next_step)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        self._current_epoch = self._current_epoch + 1 if next_epoch is None else int(next_epoch)

    def get_state(self) -> dict[str, Any]:
        return {"current_step": self._current_step, "current_epoch": self._current_epoch}

    def load_state(self, state: dict[str, Any]) -> None:
        try:
            step, epoch = int(state["current_step"]), int(state["current_epoch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CompressionStateError(
                f"{type(self).__name__}: a scheduler state needs integer 'current_step' and "
                f"'current_epoch', got {state!r}"
            ) from exc
        self._current_step, self._current_epoch = step, epoch


class Statistics(ABC):
    """What an algorithm reports about the compressed model; printable with ``to_str()``."""

    @abstractmethod
    def to_str(self) -> str: ...

    def __str__(self) -> str:
        return self.to_str()


class NNCFStatistics(Statistics):
    """Statistics of every algorithm of a controller, by algorithm name.

    ``stats.quantization`` (or ``stats["quantization"]``) gives one algorithm's statistics;
    ``to_str()`` prints them all.
    """

    def __init__(self) -> None:
        self._by_algorithm: dict[str, Statistics] = {}

    def register(self, algorithm_name: str, stats: Statistics) -> None:
        if algorithm_name in self._by_algorithm:
            raise ValueError(f"statistics of '{algorithm_name}' are already registered")
        self._by_algorithm[algorithm_name] = stats

    def __getattr__(self, name: str) -> Statistics:
        by_algorithm = self.__dict__.get("_by_algorithm", {})
        if name in by_algorithm:
            return by_algorithm[name]
        raise AttributeError(
            f"no statistics for '{name}'; algorithms with statistics: {', '.join(by_algorithm) or 'none'}"
        )

    def __getitem__(self, name: str) -> Statistics:
        return self._by_algorithm[name]

    def __iter__(self) -> Iterator[tuple[str, Statistics]]:
        return iter(self._by_algorithm.items())

    def __len__(self) -> int:
        return len(self._by_algorithm)

    def to_str(self) -> str:
        if not self._by_algorithm:
            return "No compression statistics (no compression algorithm is applied)."
        return "\n\n".join(
            f"Statistics of the {name} algorithm:\n{stats.to_str()}"
            for name, stats in self._by_algorithm.items()
        )


class CompressionAlgorithmController(ABC):
    """Controls one compression algorithm (or several: the composite controller) during training.

    A backend implements the abstract members; ``get_compression_state()`` returns
    ``{"builder_state": {algorithm: ...}, "ctrl_state": {algorithm: ...}}`` of plain Python values,
    which ``create_compressed_model(..., compression_state=...)`` takes to rebuild the same model.
    """

    BUILDER_STATE = "builder_state"
    CONTROLLER_STATE = "ctrl_state"

    def __init__(self, target_model: Any):
        self._model = target_model

    @property
    def model(self) -> Any:
        """The compressed model this controller drives."""
        return self._model

    @property
    @abstractmethod
    def loss(self) -> CompressionLoss: ...

    @property
    @abstractmethod
    def scheduler(self) -> CompressionScheduler: ...

    @abstractmethod
    def compression_stage(self) -> CompressionStage: ...

    @abstractmethod
    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        """Statistics of the compressed model; ``quickly_collected_only`` skips anything slow."""

    @abstractmethod
    def export_model(
        self,
        save_path: str,
        save_format: str | None = None,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        model_args: tuple | None = None,
    ) -> Any:
        """Write the compressed model in a deployable format."""

    @abstractmethod
    def get_compression_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """This controller's part of the compression state (``ctrl_state``)."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None: ...

    def prepare_for_export(self) -> None:
        """Checks and changes needed before export (nothing by default)."""
        return None  # nothing to do unless an algorithm needs it

    def strip_model(self, model: Any, do_copy: bool = False) -> Any:
        """``model`` in its inference form (see the backend's controller)."""
        return model

    def strip(self, do_copy: bool = True) -> Any:
        """The controlled model in its inference form (a copy unless ``do_copy`` is False)."""
        return self.strip_model(self.model, do_copy=do_copy)

    def distributed(self) -> None:
        """Tell the algorithm it runs in data-parallel training (several processes)."""
        return None  # nothing to do unless an algorithm needs it

    def disable_scheduler(self) -> None:
        """Stop the scheduler from changing the algorithm (NNCF: fixed compression level)."""
        return None  # nothing to do unless an algorithm needs it

    @property
    def name(self) -> str:
        return type(self).__name__
