"""What every torch compression algorithm provides: a builder and a controller.

A builder (one per ``compression`` section) is made from the config; ``create_compressed_model``
then calls, on the wrapped model whose graph is traced once for all algorithms:

1. ``load_state(state)`` when a compression state is given (the builder then rebuilds exactly
   what the state describes, without any data-driven initialization);
2. ``apply_to(model, context)``: insert its modules (quantizers, masks) and initialize them;
3. ``build_controller(model, context)``: the controller the training loop drives.

BatchNorm adaptation is shared: it runs once, after every builder has been applied, with the
largest ``num_bn_adaptation_samples`` any algorithm asks for (:meth:`bn_adaptation_samples`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from nncompress.api.compression import (
    BaseCompressionScheduler,
    CompressionAlgorithmController,
    CompressionLoss,
    CompressionScheduler,
    CompressionStage,
    NNCFStatistics,
)
from nncompress.config.effective import get_param
from nncompress.errors import CompressionStateError, ConfigError, ExportError
from nncompress.graph import Graph
from nncompress.torch.initialization import call_item, model_device

__all__ = [
    "BuildContext",
    "PTCompressionAlgorithmBuilder",
    "PTCompressionAlgorithmController",
    "ZeroCompressionLoss",
    "export_compressed_model",
]


@dataclass
class BuildContext:
    """What every builder of one ``create_compressed_model`` call shares."""

    config: Any  # NNCFConfig
    graph: Graph
    example_args: tuple = ()
    example_kwargs: dict = field(default_factory=dict)


class ZeroCompressionLoss(CompressionLoss):
    """A zero loss on the model's device (quantization adds no loss term)."""

    def __init__(self, model: nn.Module):
        self._model = model

    def calculate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros([], device=model_device(self._model))


class PTCompressionAlgorithmBuilder(ABC):
    """Builds one algorithm from its ``compression`` section (see the module docstring)."""

    algorithm_name: ClassVar[str] = ""
    # order of application (lower first): hooks on one tensor run in this order, so masks
    # (pruning, sparsity) come before quantizers whatever the order of the config sections
    priority: ClassVar[int] = 50

    def __init__(self, config: Any, section: Mapping[str, Any]):
        self.config = config
        self.section = section
        self._state: dict[str, Any] | None = None

    def param(self, path: str) -> Any:
        """The section's value at ``path``, or the schema default."""
        return get_param(self.section, path, algorithm=self.algorithm_name)

    @property
    def should_init(self) -> bool:
        """False once a compression state is loaded: the state, not data, decides everything."""
        return self._state is None

    def load_state(self, state: Any) -> None:
        """Take the builder state saved by ``get_compression_state`` (validated in ``apply_to``)."""
        if not isinstance(state, dict):
            raise CompressionStateError(
                f"{self.algorithm_name}: a builder state must be a dict, got {type(state).__name__}"
            )
        self._state = state

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Plain Python values (and tensors) that rebuild this algorithm's modifications."""

    @abstractmethod
    def apply_to(self, model: nn.Module, context: BuildContext) -> None:
        """Modify the wrapped ``model`` (and initialize the modifications unless a state is loaded)."""

    @abstractmethod
    def build_controller(
        self, model: nn.Module, context: BuildContext
    ) -> PTCompressionAlgorithmController: ...

    def bn_adaptation_samples(self) -> int:
        """``initializer.batchnorm_adaptation.num_bn_adaptation_samples`` (0 if this section has none)."""
        try:
            return int(self.param("initializer.batchnorm_adaptation.num_bn_adaptation_samples") or 0)
        except ConfigError:  # the section's schema has no BatchNorm adaptation
            return 0


def _split_model_args(model_args: Sequence[Any]) -> tuple[tuple, dict]:
    """NNCF's ``model_args``: ``(a, b, {"x": x})`` -> positional ``(a, b)`` and keywords ``{"x": x}``."""
    if not isinstance(model_args, (tuple, list)):
        return (model_args,), {}
    items = list(model_args)
    if items and isinstance(items[-1], Mapping):
        return tuple(items[:-1]), dict(items[-1])
    return tuple(items), {}


_FORMATS = {"onnx": ".onnx", "openvino": ".xml", "ir": ".xml", "xml": ".xml"}


def export_compressed_model(
    model: nn.Module,
    save_path: str | Path,
    example_args: tuple,
    example_kwargs: Mapping[str, Any],
    save_format: str | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    model_args: Sequence[Any] | None = None,
) -> Path:
    """Export through :func:`nncompress.torch.export.export` (``.onnx`` QDQ or ``.xml`` IR).

    ``save_format`` None follows the suffix of ``save_path``; ``"onnx"`` / ``"onnx_<opset>"``
    need ``.onnx``, ``"openvino"`` needs ``.xml``. ``model_args`` (NNCF's form: positional
    values, optionally ending with a dict of keyword values) replaces the example inputs the
    model was traced with.
    """
    from nncompress.torch.export import export

    path = Path(save_path)
    opset = 17
    if save_format is not None:
        fmt = str(save_format).lower()
        base, _, version = fmt.partition("_")
        suffix = _FORMATS.get(base)
        if suffix is None or (version and (base != "onnx" or not version.isdigit())):
            raise ExportError(
                f"Cannot export to {path}: unknown save_format {save_format!r}; use 'onnx', 'onnx_<opset>' "
                "or 'openvino'"
            )
        if version:
            opset = int(version)
        if path.suffix.lower() != suffix:
            raise ExportError(
                f"Cannot export to {path}: save_format {save_format!r} writes a '{suffix}' file; "
                f"name the file '{path.with_suffix(suffix).name}'"
            )
    if model_args is not None:
        args, kwargs = _split_model_args(model_args)
    else:
        args, kwargs = tuple(example_args), dict(example_kwargs)
    device = model_device(model)
    from nncompress.torch.initialization import to_device

    example = call_item(model, to_device(args, device), to_device(kwargs, device))
    kwargs_export: dict[str, Any] = {"input_names": input_names, "output_names": output_names}
    if path.suffix.lower() == ".onnx":
        kwargs_export["opset"] = opset
    return export(model, path, example, **kwargs_export)


class PTCompressionAlgorithmController(CompressionAlgorithmController):
    """Base of the torch controllers: export, state handling and a plain step/epoch scheduler."""

    # export ``strip(do_copy=True)`` rather than the wrapped model (pruning, sparsity, composite)
    export_stripped: ClassVar[bool] = False

    def __init__(
        self,
        target_model: nn.Module,
        algorithm_name: str,
        builder_state: dict[str, Any],
        context: BuildContext,
    ):
        super().__init__(target_model)
        self.algorithm_name = algorithm_name
        self.builder_state = builder_state
        self._example_args = tuple(context.example_args)
        self._example_kwargs = dict(context.example_kwargs)
        self._loss: CompressionLoss = ZeroCompressionLoss(target_model)
        self._scheduler: CompressionScheduler = BaseCompressionScheduler()
        self._distributed = False

    @property
    def name(self) -> str:
        return self.algorithm_name

    @property
    def loss(self) -> CompressionLoss:
        return self._loss

    @property
    def scheduler(self) -> CompressionScheduler:
        return self._scheduler

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        return NNCFStatistics()

    def distributed(self) -> None:
        self._distributed = True

    @property
    def is_distributed(self) -> bool:
        return self._distributed

    def get_state(self) -> dict[str, Any]:
        return {
            self.algorithm_name: {
                "scheduler_state": self.scheduler.get_state(),
                "loss_state": self.loss.get_state(),
            }
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or self.algorithm_name not in state:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CompressionStateError(
                f"{self.algorithm_name}: the controller state has no entry for this algorithm (got {got})"
            )
        mine = state[self.algorithm_name]
        if not isinstance(mine, dict):
            raise CompressionStateError(
                f"{self.algorithm_name}: controller state must be a dict, got {mine!r}"
            )
        if "scheduler_state" in mine:
            self.scheduler.load_state(mine["scheduler_state"])
        if mine.get("loss_state"):
            self.loss.load_state(mine["loss_state"])

    def get_compression_state(self) -> dict[str, Any]:
        return {
            self.BUILDER_STATE: {self.algorithm_name: self.builder_state},
            self.CONTROLLER_STATE: self.get_state(),
        }

    def strip_model(self, model: nn.Module, do_copy: bool = False) -> nn.Module:
        return copy.deepcopy(model) if do_copy else model

    def export_model(
        self,
        save_path: str | Path,
        save_format: str | None = None,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        model_args: tuple | None = None,
    ) -> Path:
        """Write the model to ``save_path``: ``.onnx`` (QuantizeLinear/DequantizeLinear) or ``.xml``
        (OpenVINO IR with FakeQuantize); see :func:`export_compressed_model`. With
        ``export_stripped`` the stripped copy is written (pruned channels cut, sparse zeros baked)."""
        self.prepare_for_export()
        return export_compressed_model(
            self.strip(do_copy=True) if self.export_stripped else self.model,
            save_path,
            self._example_args,
            self._example_kwargs,
            save_format=save_format,
            input_names=input_names,
            output_names=output_names,
            model_args=model_args,
        )
