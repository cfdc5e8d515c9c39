"""Data-driven initialization of compressed torch models: range init and BatchNorm adaptation.

Training scripts attach their data to the config, as with NNCF::

    config = register_default_init_args(config, train_loader, criterion=nn.CrossEntropyLoss())
    ctrl, model = create_compressed_model(model, config)

``register_default_init_args`` registers the extra structs :class:`QuantizationRangeInitArgs`
and :class:`BNAdaptationInitArgs` (and the others NNCF registers, for the algorithms that use
them). Each holds a :class:`PTInitializingDataLoader`: by default a loader of ``(inputs, target)``
batches whose ``batch[0]`` is the model's single positional input; subclass it and override
``get_inputs`` for other batch layouts (keyword inputs, several inputs)::

    class MyLoader(PTInitializingDataLoader):
        def get_inputs(self, batch):
            return (), {"input_ids": batch["ids"], "attention_mask": batch["mask"]}

Range initialization (:func:`compute_ranges`) runs the core's ``MinMaxQuantization`` with the
range estimator of each ``initializer.range`` entry; quantizers already in the model are
disabled while statistics are collected, so every range describes the float tensor. BatchNorm
adaptation (:func:`run_bn_adaptation`) resets the running statistics and re-estimates them as
a cumulative average over the adaptation batches, with only BatchNorm layers in training mode.

Distributed data-parallel training: when ``torch.distributed`` is initialized with more than one
process, every rank collects statistics on its own data and the ranges are then all-reduced
(the minimum of minima and maximum of maxima for ``min``/``max`` statistics, the average for
means, moments and percentiles), so every rank ends with the same quantizer parameters; the
adapted BatchNorm statistics are averaged over the ranks in the same way.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.config.extra_structs import NNCFExtraConfigStruct
from nncompress.errors import DatasetError
from nncompress.graph import Graph
from nncompress.progress import StageProgress, progress
from nncompress.quantization.algorithms.min_max import MinMaxQuantization
from nncompress.quantization.range_estimators import RangeEstimator, get_range_estimator
from nncompress.quantization.spec import Placement, QuantizationPoint, TargetPoint, TargetType
from nncompress.quantization.statistics import AGG_MAX, AGG_MIN
from nncompress.torch.adapter import Adapter, call_model
from nncompress.torch.quantizers import BaseQuantizer

__all__ = [
    "AutoQPrecisionInitArgs",
    "BNAdaptationInitArgs",
    "DefaultInitializingDataLoader",
    "DistributedCallbacksArgs",
    "ExecutionParameters",
    "LeGRInitArgs",
    "ModelEvaluationArgs",
    "PTInitializingDataLoader",
    "QuantizationPrecisionInitArgs",
    "QuantizationRangeInitArgs",
    "RangeInitConfig",
    "RangeInitResult",
    "compute_ranges",
    "default_criterion_fn",
    "register_default_init_args",
    "run_bn_adaptation",
    "wrap_dataloader_for_init",
]

Range = tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Data loaders
# ---------------------------------------------------------------------------------------------


class PTInitializingDataLoader:
    """A data loader for initialization: iterates the wrapped loader and says how a batch becomes
    model inputs (:meth:`get_inputs`) and a target (:meth:`get_target`).

    ``batch_size`` is the wrapped loader's (None when it has none: it is then read from the first
    batch). Sample counts in the config (``num_init_samples``...) are turned into batches with it.
    """

    def __init__(self, data_loader: Any):
        if data_loader is None or not hasattr(data_loader, "__iter__"):
            raise DatasetError(
                f"an initializing data loader must be iterable, got {type(data_loader).__name__}"
            )
        self._data_loader = data_loader
        self.batch_size = getattr(data_loader, "batch_size", None)

    @property
    def data_loader(self) -> Any:
        return self._data_loader

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data_loader)

    def __len__(self) -> int:
        return len(self._data_loader)

    def get_inputs(self, dataloader_output: Any) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of the model's forward for one batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_inputs(batch) -> (args, kwargs)")

    def get_target(self, dataloader_output: Any) -> Any:
        """The ground truth of one batch (used by algorithms that compute a loss)."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_target(batch)")


class DefaultInitializingDataLoader(PTInitializingDataLoader):
    """Batches are ``(inputs, target, ...)``: ``batch[0]`` is the single positional input
    (a bare tensor batch is the input itself)."""

    def get_inputs(self, dataloader_output: Any) -> tuple[tuple, dict]:
        if torch.is_tensor(dataloader_output):
            return (dataloader_output,), {}
        if isinstance(dataloader_output, (tuple, list)) and dataloader_output:
            return (dataloader_output[0],), {}
        raise DatasetError(
            f"the default initializing data loader takes batch[0] as the model input, but a batch is a "
            f"{type(dataloader_output).__name__}; wrap the loader in a PTInitializingDataLoader subclass "
            "whose get_inputs(batch) returns (args, kwargs)"
        )

    def get_target(self, dataloader_output: Any) -> Any:
        if isinstance(dataloader_output, (tuple, list)) and len(dataloader_output) > 1:
            return dataloader_output[1]
        raise DatasetError(
            "the default initializing data loader takes batch[1] as the target; a batch has none"
        )


def wrap_dataloader_for_init(data_loader: Any) -> PTInitializingDataLoader:
    """``data_loader`` itself if it is a :class:`PTInitializingDataLoader`, else the default wrapper."""
    if isinstance(data_loader, PTInitializingDataLoader):
        return data_loader
    return DefaultInitializingDataLoader(data_loader)


# ---------------------------------------------------------------------------------------------
# Extra structs (runtime objects registered on an NNCFConfig)
# ---------------------------------------------------------------------------------------------


class QuantizationRangeInitArgs(NNCFExtraConfigStruct):
    """Data for quantizer range initialization; ``device`` None means the model's device."""

    def __init__(self, data_loader: Any, device: str | torch.device | None = None):
        self.data_loader = wrap_dataloader_for_init(data_loader)
        self.device = device


class BNAdaptationInitArgs(NNCFExtraConfigStruct):
    """Data for BatchNorm statistics adaptation; ``device`` None means the model's device."""

    def __init__(self, data_loader: Any, device: str | torch.device | None = None):
        self.data_loader = wrap_dataloader_for_init(data_loader)
        self.device = device


class QuantizationPrecisionInitArgs(NNCFExtraConfigStruct):
    """Data and loss for HAWQ mixed-precision selection (registered for NNCF compatibility)."""

    def __init__(
        self,
        criterion_fn: Callable[..., Any],
        criterion: Any,
        data_loader: Any,
        device: str | torch.device | None = None,
    ):
        self.criterion_fn = criterion_fn
        self.criterion = criterion
        self.data_loader = data_loader
        self.device = device


class AutoQPrecisionInitArgs(NNCFExtraConfigStruct):
    """Data and evaluation function for AutoQ (registered for NNCF compatibility)."""

    def __init__(self, data_loader: Any, eval_fn: Callable[..., Any], nncf_config: Any):
        self.data_loader = data_loader
        self.eval_fn = eval_fn
        self.config = nncf_config


class LeGRInitArgs(NNCFExtraConfigStruct):
    """Training and validation hooks for LeGR filter ranking (registered for NNCF compatibility)."""

    def __init__(
        self,
        train_loader: Any,
        train_fn: Callable[..., Any],
        val_loader: Any,
        val_fn: Callable[..., Any],
        train_optimizer: Any,
        nncf_config: Any,
    ):
        self.train_loader = train_loader
        self.train_steps_fn = train_fn
        self.val_loader = val_loader
        self.val_fn = val_fn
        self.train_optimizer = train_optimizer
        self.config = nncf_config


class ModelEvaluationArgs(NNCFExtraConfigStruct):
    """``eval_fn(model) -> metric``, used by accuracy-aware training."""

    def __init__(self, eval_fn: Callable[..., Any]):
        self.eval_fn = eval_fn


class DistributedCallbacksArgs(NNCFExtraConfigStruct):
    """How to wrap a model for distributed training and unwrap it again."""

    def __init__(self, wrapping_callback: Callable[..., Any], unwrapping_callback: Callable[..., Any]):
        self.wrap_model = wrapping_callback
        self.unwrap_model = unwrapping_callback


class ExecutionParameters(NNCFExtraConfigStruct):
    """Where the training script runs (``cpu_only``, ``current_gpu``)."""

    def __init__(self, cpu_only: bool, current_gpu: int | None):
        self.cpu_only = cpu_only
        self.current_gpu = current_gpu


def default_criterion_fn(outputs: Any, target: Any, criterion: Callable[[Any, Any], Any]) -> Any:
    """``criterion(outputs, target)``: how NNCF combines model outputs and targets by default."""
    return criterion(outputs, target)


def register_default_init_args(
    nncf_config: Any,
    train_loader: Any,
    criterion: Any = None,
    criterion_fn: Callable[..., Any] | None = None,
    train_steps_fn: Callable[..., Any] | None = None,
    validate_fn: Callable[..., Any] | None = None,
    val_loader: Any = None,
    autoq_eval_fn: Callable[..., Any] | None = None,
    model_eval_fn: Callable[..., Any] | None = None,
    distributed_callbacks: tuple[Callable[..., Any], Callable[..., Any]] | None = None,
    execution_parameters: ExecutionParameters | None = None,
    legr_train_optimizer: Any = None,
    device: str | torch.device | None = None,
) -> Any:
    """Attach the training data (and optional helpers) to ``nncf_config``; returns the config.

    Always registers :class:`QuantizationRangeInitArgs` and :class:`BNAdaptationInitArgs` over
    ``train_loader``; the other structs only when their arguments are given (as NNCF does).
    Registering twice on one config is an error (the config keeps one struct of each kind).

    >>> config = register_default_init_args(config, train_loader)  # doctest: +SKIP
    """
    loader = wrap_dataloader_for_init(train_loader)
    structs: list[Any] = [
        QuantizationRangeInitArgs(loader, device=device),
        BNAdaptationInitArgs(loader, device=device),
    ]
    if train_loader is not None and train_steps_fn and val_loader is not None and validate_fn:
        structs.append(
            LeGRInitArgs(
                train_loader, train_steps_fn, val_loader, validate_fn, legr_train_optimizer, nncf_config
            )
        )
    if criterion is not None:
        structs.append(
            QuantizationPrecisionInitArgs(
                criterion_fn or default_criterion_fn, criterion, train_loader, device
            )
        )
    if autoq_eval_fn is not None:
        structs.append(AutoQPrecisionInitArgs(val_loader, autoq_eval_fn, nncf_config))
    if model_eval_fn is not None:
        structs.append(ModelEvaluationArgs(model_eval_fn))
    if distributed_callbacks is not None:
        structs.append(DistributedCallbacksArgs(*distributed_callbacks))
    if execution_parameters is not None:
        structs.append(execution_parameters)
    nncf_config.register_extra_structs(structs)
    return nncf_config


# ---------------------------------------------------------------------------------------------
# Model inputs
# ---------------------------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without either."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(value: Any, device: torch.device | str | None) -> Any:
    """``value`` with every tensor (through tuples, lists and dicts) moved to ``device``."""
    if device is None:
        return value
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, tuple):
        items = [to_device(v, device) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def forward_signature(model: nn.Module) -> inspect.Signature | None:
    """Signature of the user's forward (of the original class for a wrapped model)."""
    forward = model.__dict__.get("_nncf_instance_forward") or model.__dict__.get("forward")
    if forward is None:
        cls = type(model)
        forward = getattr(cls, "_nncf_original_class", cls).forward.__get__(model)
    try:
        return inspect.signature(forward)
    except (TypeError, ValueError):
        return None


def call_item(model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """One item for ``adapter.call_model``: a tuple of positional inputs, or a dict of keyword inputs.

    Positional and keyword inputs together are bound to the forward's parameter names, so the
    call is expressed by keywords only.
    """
    args, kwargs = tuple(args), dict(kwargs)
    if not kwargs:
        return args
    if not args:
        return kwargs
    sig = forward_signature(model)
    try:
        if sig is None:
            raise TypeError("the forward signature is unknown")
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise DatasetError(
            f"cannot call {type(model).__name__} with {len(args)} positional and keyword inputs "
            f"{sorted(kwargs)}: {exc}"
        ) from None
    if any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in sig.parameters.values()
        if p.name in bound.arguments
    ):
        raise DatasetError(
            f"{type(model).__name__}.forward takes *args/**kwargs: give its inputs either all positionally "
            "or all by keyword"
        )
    return dict(bound.arguments)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if torch.is_tensor(value):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


class InitInputs:
    """The model inputs of an initializing data loader, as the core's calibration code reads them
    (``get_inference_data``, ``get_batch_size``, ``get_length``), moved to ``device``."""

    def __init__(self, loader: PTInitializingDataLoader, model: nn.Module, device: Any = None):
        self.loader = loader
        self.model = model
        self.device = model_device(model) if device is None else torch.device(device)
        self._batch_size: int | None = loader.batch_size if isinstance(loader.batch_size, int) else None

    def _inputs(self, batch: Any) -> Any:
        got = self.loader.get_inputs(batch)
        if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], Mapping)):
            raise DatasetError(
                f"{type(self.loader).__name__}.get_inputs must return (args, kwargs), got {type(got).__name__}"
            )
        args, kwargs = got
        return call_item(
            self.model, to_device(tuple(args), self.device), to_device(dict(kwargs), self.device)
        )

    def get_inference_data(self) -> Iterator[Any]:
        for batch in self.loader:
            yield self._inputs(batch)

    def get_batch_size(self) -> int | None:
        if self._batch_size is None:
            for batch in self.loader:
                first = _first_tensor(self._inputs(batch))
                self._batch_size = int(first.shape[0]) if first is not None and first.dim() > 0 else 1
                break
        return self._batch_size

    def get_length(self) -> int | None:
        try:
            return len(self.loader)
        except TypeError:
            return None

    def batches_for(self, num_samples: int) -> int:
        """Number of batches covering ``num_samples`` samples (at least one)."""
        return max(1, math.ceil(num_samples / max(self.get_batch_size() or 1, 1)))


# ---------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------


def world_size() -> int:
    """Number of processes of the initialized default process group (1 when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _collective_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_module_state(modules: Sequence[nn.Module], src: int = 0) -> None:
    """Copy every parameter and buffer of ``modules`` from rank ``src`` to all ranks (in order)."""
    import torch.distributed as dist

    if world_size() == 1:
        return
    device = _collective_device()
    for module in modules:
        for tensor in itertools.chain(module.parameters(recurse=True), module.buffers(recurse=True)):
            buf = tensor.detach().to(device).clone()
            dist.broadcast(buf, src)
            with torch.no_grad():
                tensor.copy_(buf.to(tensor.device))
        if isinstance(module, BaseQuantizer):
            module._sync_from_buffers()


def _allreduce(values: list[np.ndarray], op: Any) -> list[np.ndarray]:
    import torch.distributed as dist

    if not values:
        return values
    sizes = [v.size for v in values]
    flat = torch.from_numpy(np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in values]))
    flat = flat.to(_collective_device())
    if op == "avg":
        dist.all_reduce(flat, dist.ReduceOp.SUM)
        flat /= dist.get_world_size()
    else:
        dist.all_reduce(flat, dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
    out = flat.cpu().numpy()
    pieces = np.split(out, np.cumsum(sizes)[:-1])
    return [p.reshape(np.shape(v)) for p, v in zip(pieces, values)]


def allreduce_ranges(ranges: dict[TargetPoint, Range], ops: Mapping[TargetPoint, tuple[str, str]]) -> None:
    """Combine per-rank ranges in place: ``ops[target] = (low_op, high_op)`` with ops
    ``"min"``/``"max"``/``"avg"``. Every rank must pass the same targets in the same order."""
    if world_size() == 1 or not ranges:
        return
    targets = list(ranges)
    buckets: dict[str, list[tuple[TargetPoint, int]]] = {"min": [], "max": [], "avg": []}
    for t in targets:
        low_op, high_op = ops[t]
        buckets[low_op].append((t, 0))
        buckets[high_op].append((t, 1))
    result = {t: list(ranges[t]) for t in targets}
    for op, entries in buckets.items():
        reduced = _allreduce([np.asarray(ranges[t][i], dtype=np.float64) for t, i in entries], op)
        for (t, i), value in zip(entries, reduced):
            result[t][i] = value
    for t in targets:
        ranges[t] = (result[t][0], result[t][1])


def _reduction_ops(estimator: RangeEstimator, point: QuantizationPoint) -> tuple[str, str]:
    """How ranks combine a range: extremes of ``min``/``max`` statistics, the average otherwise."""
    stats = estimator.statistics(point.spec, is_weight=point.is_weight)
    low = stats.get("min")
    high = stats.get("max")
    low_op = "min" if low is not None and low.aggregation == AGG_MIN else "avg"
    high_op = "max" if high is not None and high.aggregation == AGG_MAX else "avg"
    return low_op, high_op


# ---------------------------------------------------------------------------------------------
# Range initialization
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeInitConfig:
    """One ``initializer.range`` setting: the statistic, its parameters and the number of samples."""

    init_type: str
    num_init_samples: int
    params: tuple[tuple[str, float], ...] = ()

    def estimator(self) -> RangeEstimator:
        return get_range_estimator({"type": self.init_type, "params": dict(self.params)})

    def describe(self) -> str:
        return f"{self.estimator().describe()} over {self.num_init_samples} samples"


@dataclass
class RangeInitResult:
    """Ranges per quantized tensor, and how each was obtained (printed in reports)."""

    ranges: dict[TargetPoint, Range] = field(default_factory=dict)
    how: dict[TargetPoint, str] = field(default_factory=dict)
    num_batches: int = 0


class _EffectiveWeights(Adapter):
    """Weights as their quantizer sees them: through the hooks already at the weight (masks of
    other algorithms; quantizers are disabled during range initialization, so they pass through)."""

    def get_weight(self, model: nn.Module, node: str, port: int) -> np.ndarray:
        manager = getattr(getattr(model, "nncf", None), "hook_manager", None)
        hooks = manager.hooks_at(TargetPoint(TargetType.WEIGHT, node, port)) if manager is not None else []
        if not hooks:
            return super().get_weight(model, node, port)
        info = self._node(model, node).weights[port]
        with torch.no_grad():
            weight = self._parameter(model, info.name)
            for hook in hooks:
                out = hook(weight)
                weight = weight if out is None else out
        return weight.detach().float().cpu().numpy()


def _renamed(bar: StageProgress, stage: str) -> Callable[[str, int, int | None], None]:
    """``bar`` fed under one stage name, whatever the algorithm calls its stage."""

    def report(_stage: str, done: int, total: int | None) -> None:
        bar(stage, done, total)

    return report


@contextlib.contextmanager
def quantizers_disabled(model: nn.Module) -> Iterator[None]:
    """Every fake quantizer of ``model`` passes values through inside the block."""
    quantizers = [m for m in model.modules() if isinstance(m, BaseQuantizer)]
    enabled = [q.is_enabled for q in quantizers]
    for q in quantizers:
        q.disable()
    try:
        yield
    finally:
        for q, flag in zip(quantizers, enabled):
            q.enable(flag)


def compute_ranges(
    model: nn.Module,
    graph: Graph,
    points: Sequence[QuantizationPoint],
    config_of: Callable[[QuantizationPoint], RangeInitConfig],
    init_args: QuantizationRangeInitArgs | None,
) -> RangeInitResult:
    """Ranges of the tensors at ``points`` (a wrapped ``model`` whose graph is ``graph``).

    Points are grouped by their :class:`RangeInitConfig`; each group with samples runs one
    statistics pass over ``num_init_samples`` samples of ``init_args``' loader. Weight ranges
    are those of the weight as its quantizer receives it (after masks of other algorithms at the
    same weight) and need no data: a group without samples still gets its weight ranges, while
    its activation points get none (their quantizers keep their initial parameters). Raises
    ``DatasetError`` when activations need data and no ``init_args`` are registered. With
    several processes, the ranges are all-reduced (see the module docstring).
    """
    groups: dict[RangeInitConfig, list[QuantizationPoint]] = {}
    for point in points:
        groups.setdefault(config_of(point), []).append(point)
    adapter = _EffectiveWeights()
    adapter.graph = graph
    result = RangeInitResult()
    ops: dict[TargetPoint, tuple[str, str]] = {}
    bar = StageProgress(enabled=is_main_process())  # one bar, not one per DDP rank
    with quantizers_disabled(model), bar:
        for cfg, members in groups.items():
            estimator = cfg.estimator()
            activations = [p for p in members if not p.is_weight]
            if activations and cfg.num_init_samples > 0:
                if init_args is None:
                    raise DatasetError(
                        f"range initialization ({cfg.describe()}) needs data, but no QuantizationRangeInitArgs "
                        "are registered with the config: call "
                        "nncompress.torch.register_default_init_args(config, train_loader) before "
                        "create_compressed_model, or set initializer.range.num_init_samples to 0"
                    )
                inputs: Any = InitInputs(init_args.data_loader, model, init_args.device)
                selected = members
                how = cfg.describe()
            else:
                inputs = None
                selected = [p for p in members if p.is_weight]
                how = f"{estimator.describe()} of the weights"
                for p in activations:
                    result.how[p.target] = "not initialized (num_init_samples=0)"
            if not selected:
                continue
            min_max = MinMaxQuantization(
                subset_size=max(cfg.num_init_samples, 1),
                weights_range_estimator=estimator,
                activations_range_estimator=estimator,
                progress=_renamed(bar, f"Range initialization ({cfg.init_type})"),
            )
            calibrated = min_max.calibrate(model, graph, adapter, inputs, Placement(points=list(selected)))
            result.num_batches += calibrated.num_samples
            for p in selected:
                result.ranges[p.target] = calibrated.ranges[p.target]
                result.how[p.target] = how if not p.is_weight else f"{estimator.describe()} of the weights"
                ops[p.target] = _reduction_ops(estimator, p)
    allreduce_ranges(result.ranges, ops)
    return result


# ---------------------------------------------------------------------------------------------
# BatchNorm adaptation
# ---------------------------------------------------------------------------------------------


def run_bn_adaptation(model: nn.Module, init_args: BNAdaptationInitArgs, num_samples: int) -> int:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` on
    ``num_samples`` samples; returns the number of batches run (0 when there is no BatchNorm).

    The statistics are reset and accumulated as a cumulative average (momentum None) with only
    the BatchNorm layers in training mode (dropout and quantizers stay in inference mode), under
    ``no_grad``. Train/eval flags and momenta are restored afterwards.
    """
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms or num_samples <= 0:
        return 0
    inputs = InitInputs(init_args.data_loader, model, init_args.device)
    batches = inputs.batches_for(num_samples)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    done = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            items = itertools.islice(inputs.get_inference_data(), batches)
            for item in progress(items, "BatchNorm adaptation", total=batches, enabled=is_main_process()):
                call_model(model, item)
                done += 1
    finally:
        for m, training in modes.items():
            m.training = training
        for m, momentum in momenta.items():
            m.momentum = momentum
    if done == 0:
        raise DatasetError("BatchNorm adaptation: the data loader gave no batches")
    _average_bn_statistics(norms)
    return done


def _average_bn_statistics(norms: Sequence[nn.Module]) -> None:
    import torch.distributed as dist

    n = world_size()
    if n == 1:
        return
    device = _collective_device()
    for m in norms:
        for tensor in (m.running_mean, m.running_var):
            if tensor is None:
                continue
            buf = tensor.detach().to(device, torch.float64)
            dist.all_reduce(buf, dist.ReduceOp.SUM)
            with torch.no_grad():
                tensor.copy_((buf / n).to(tensor.device, tensor.dtype))
