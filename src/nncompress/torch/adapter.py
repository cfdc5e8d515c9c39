"""The torch implementation of ``BackendAdapter``: what the core PTQ algorithms ask of PyTorch.

Graphs come from ``tracing.trace``; statistics and quantizers are hooks at graph positions
(``hooks.HookManager``), so the model's own forward runs unchanged and nothing global outlives
a call. Statistic hooks always run before a quantizer at the same point: statistics of a
quantized model describe the tensor going into its quantizer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import DatasetError, GraphError, TracingError
from nncompress.graph import Graph, Node, op_kinds
from nncompress.quantization.backend_api import StatisticRequest
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import Placement, QuantizationPoint, TargetPoint, TargetType
from nncompress.quantization.statistics import ABS_MAX, MAX, MEAN, MIN, QUANTILE, RAW, reduction_axes
from nncompress.torch.hooks import HookManager
from nncompress.torch.nncf_network import NNCFNetwork, wrap_model
from nncompress.torch.quantizers import cached_weight_quantization, create_quantizer
from nncompress.torch.tracing import normalize_example_input, trace


def call_model(model: nn.Module, model_input: Any) -> Any:
    """Call ``model`` with one dataset item as NNCF does: tuple -> positional, dict -> keywords."""
    args, kwargs = normalize_example_input(model_input)
    return model(*args, **kwargs)


def _reduce(x: torch.Tensor, request: StatisticRequest) -> np.ndarray:
    """The per-batch reduction of ``statistics.reduce_batch``, computed in torch (cheap to move)."""
    x = x.detach()
    if request.reducer == RAW:
        return x.float().cpu().numpy()
    if x.ndim == 0:
        x = x.reshape(1)
    axes = reduction_axes(x.ndim, request.keep_axis)
    if request.reducer == MIN:
        out = torch.amin(x, dim=axes)
    elif request.reducer == MAX:
        out = torch.amax(x, dim=axes)
    elif request.reducer == ABS_MAX:
        out = torch.amax(x.abs(), dim=axes)
    elif request.reducer == MEAN:
        out = x.double().mean(dim=axes)
    elif request.reducer == QUANTILE:
        q = torch.tensor(request.q, dtype=torch.float32)
        if request.keep_axis is None:
            flat = x.float().reshape(-1)
        else:
            flat = x.float().movedim(request.keep_axis, 0).reshape(x.shape[request.keep_axis], -1).T
        if flat.numel() > 16_000_000:  # torch.quantile's input limit
            return np.quantile(flat.numpy(), np.asarray(request.q), axis=0)
        out = torch.quantile(flat, q, dim=0)
    else:
        raise ValueError(f"Unknown statistic reducer {request.reducer!r}")
    return out.cpu().numpy()


class _Sink:
    """A statistic hook: reduces the tensor it sees, pushes it to the core's sinks, returns None."""

    def __init__(self, requests: list[tuple[StatisticRequest, Callable[[np.ndarray], None]]]):
        self.requests = requests

    def __call__(self, tensor: torch.Tensor) -> None:
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            return None
        for request, sink in self.requests:
            sink(_reduce(tensor, request))
        return None


class Adapter:
    """Torch backend for the core algorithms (graph, statistics, weights, quantizer insertion)."""

    def __init__(self) -> None:
        self.graph: Graph | None = None

    def copy_model(self, model: nn.Module) -> nn.Module:
        return copy.deepcopy(model)

    # -- graph ------------------------------------------------------------------------------
    def build_graph(self, model: nn.Module, example_input: Any) -> Graph:
        self.graph = trace(model, example_input)
        return self.graph

    def _graph(self, model: nn.Module) -> Graph:
        if isinstance(model, NNCFNetwork) and model.nncf.graph is not None:
            return model.nncf.graph
        if self.graph is None:
            raise GraphError("The torch adapter has no graph yet: call build_graph first")
        return self.graph

    # -- statistics ---------------------------------------------------------------------------
    def collect_statistics(
        self,
        model: nn.Module,
        inputs: Iterable[Any],
        sinks: Mapping[StatisticRequest, Callable[[np.ndarray], None]],
    ) -> int:
        by_target: dict[TargetPoint, list[tuple[StatisticRequest, Callable]]] = {}
        for request, sink in sinks.items():
            by_target.setdefault(request.target, []).append((request, sink))
        if isinstance(model, NNCFNetwork):
            manager, runner = model.nncf.hook_manager, model
        else:
            manager = HookManager()

            def runner(*args: Any, **kwargs: Any) -> Any:
                return manager.run(model, model.forward, args, kwargs)

        added = []
        for target, reqs in by_target.items():
            hook = _Sink(reqs)
            manager.add(target, hook, first=True)
            added.append((target, hook))
        was_training = model.training
        model.eval()
        count = 0
        try:
            with torch.no_grad(), cached_weight_quantization():
                for item in inputs:
                    try:
                        call_model(runner, item)
                    except TracingError:
                        raise
                    except Exception as exc:
                        raise DatasetError(
                            f"The model failed on calibration item {count} "
                            f"({_describe(item)}): {type(exc).__name__}: {exc}"
                        ) from exc
                    count += 1
        finally:
            for target, hook in added:
                manager.remove_callable(target, hook)
            model.train(was_training)
        return count

    # -- weights and biases -------------------------------------------------------------------
    def _node(self, model: nn.Module, node: str) -> Node:
        return self._graph(model).node(node)

    def _parameter(self, model: nn.Module, name: str) -> nn.Parameter:
        try:
            return model.get_parameter(name)
        except AttributeError:
            raise GraphError(f"The model has no parameter '{name}'") from None

    def get_weight(self, model: nn.Module, node: str, port: int) -> np.ndarray:
        info = self._node(model, node).weights.get(port)
        if info is None:
            raise GraphError(f"Node '{node}' has no weight at port {port}")
        return self._parameter(model, info.name).detach().float().cpu().numpy()

    def set_weight(self, model: nn.Module, node: str, port: int, value: np.ndarray) -> None:
        param = self._parameter(model, self._node(model, node).weights[port].name)
        with torch.no_grad():
            param.copy_(torch.as_tensor(value, dtype=param.dtype))

    def get_bias(self, model: nn.Module, node: str) -> np.ndarray | None:
        name = self._node(model, node).bias
        if name is None:
            return None
        return self._parameter(model, name).detach().float().cpu().numpy()

    def set_bias(self, model: nn.Module, node: str, value: np.ndarray) -> None:
        name = self._node(model, node).bias
        if name is None:
            raise GraphError(f"Node '{node}' has no bias to correct")
        param = self._parameter(model, name)
        with torch.no_grad():
            param.copy_(torch.as_tensor(value, dtype=param.dtype))

    def batch_norm_affine(self, model: nn.Module, node: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(scale, shift)`` of a BatchNorm module in eval mode, ``y = scale * x + shift`` per
        channel: fast bias correction maps a convolution's input shift through ``scale`` and
        weighs a correction against ``shift``, the bias the pair has once folded (as ONNX and
        OpenVINO see it). None for a BatchNorm without running statistics or not a module."""
        bias = self._node(model, node).bias
        try:
            module = model.get_submodule(bias.rpartition(".")[0]) if bias else None
        except AttributeError:
            return None
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.running_var is None:
            return None
        with torch.no_grad():
            scale = torch.rsqrt(module.running_var.double() + module.eps)
            if module.weight is not None:
                scale = scale * module.weight.double()
            shift = -scale * module.running_mean.double()
            if module.bias is not None:
                shift = shift + module.bias.double()
        return scale.cpu().numpy(), shift.cpu().numpy()

    # -- SmoothQuant ----------------------------------------------------------------------------
    def cannot_scale_activation(
        self, model: nn.Module, source: tuple[str, int], consumers: list[tuple[str, int]]
    ) -> str | None:
        """Torch folds SmoothQuant scales into the producing LayerNorm's affine parameters.

        Folding changes no graph structure, so the placement and statistics made on the graph
        stay valid; a producer without affine parameters or with other readers is skipped.
        """
        graph = self._graph(model)
        node = graph.node(source[0])
        if node.kind != op_kinds.LAYER_NORM or not node.weights or node.bias is None:
            return (
                f"producer '{node.name}' ({node.kind}) is not a LayerNorm with affine parameters to fold into"
            )
        readers = {
            (e.dst, e.dst_port)
            for e in graph.out_edges(node.name, source[1])
            if graph.node(e.dst).kind not in op_kinds.SHAPE_KINDS
        }
        if readers != set(consumers):
            return f"'{node.name}' also feeds ops outside the group; folding would change them"
        return None

    def scale_activation(
        self,
        model: nn.Module,
        source: tuple[str, int],
        consumers: list[tuple[str, int]],
        scale: np.ndarray,
        axis: int,
    ) -> nn.Module:
        reason = self.cannot_scale_activation(model, source, consumers)
        if reason:
            raise GraphError(f"Cannot apply a SmoothQuant scale at {source[0]}: {reason}")
        node = self._graph(model).node(source[0])
        factor = torch.as_tensor(scale, dtype=torch.float32)
        with torch.no_grad():
            for name in [w.name for w in node.weights.values()] + [node.bias]:
                param = self._parameter(model, name)
                param.mul_(factor.to(param.dtype).reshape(param.shape))
        return model

    # -- quantizers -----------------------------------------------------------------------------
    def apply(
        self,
        model: nn.Module,
        placement: Placement,
        params: dict[TargetPoint, QuantizerParams],
        inplace: bool = False,
    ) -> nn.Module:
        """A wrapped copy of ``model`` (unless ``inplace``) with a fake quantizer at every point.

        Points of one unified group share one quantizer module, so they keep one scale in training.
        """
        graph = self._graph(model)
        quantized = model if inplace else copy.deepcopy(model)
        if not isinstance(quantized, NNCFNetwork):
            wrap_model(quantized, graph)
        shared: dict[int, nn.Module] = {}
        for point in placement.points:
            if point.target not in params:
                raise GraphError(f"No quantizer parameters were computed for {point.target}")
            module = shared.get(point.unified_group) if point.unified_group is not None else None
            if module is None:
                module = self._make_quantizer(graph, point, params[point.target])
                if point.unified_group is not None:
                    shared[point.unified_group] = module
            quantized.nncf.insert(point.target, module)
        return quantized

    def _make_quantizer(self, graph: Graph, point: QuantizationPoint, params: QuantizerParams) -> nn.Module:
        ndim = _tensor_rank(graph, point)
        return create_quantizer(point.spec, params, ndim=ndim)


def _tensor_rank(graph: Graph, point: QuantizationPoint) -> int | None:
    """Rank of the tensor a quantizer sits on (per-channel quantizers need it to broadcast)."""
    target = point.target
    node = graph.node(target.node)
    if target.type is TargetType.WEIGHT:
        return len(node.weights[target.port].shape)
    if target.type is TargetType.OUTPUT:
        edges = graph.out_edges(target.node, target.port)
    else:
        edges = [e for e in graph.in_edges(target.node) if e.dst_port == target.port]
    for e in edges:
        if e.tensor.rank is not None:
            return e.tensor.rank
    return None


def _describe(item: Any) -> str:
    if torch.is_tensor(item):
        return f"tensor of shape {tuple(item.shape)} and dtype {item.dtype}"
    if isinstance(item, (tuple, list)):
        return f"{type(item).__name__} of {len(item)}: " + ", ".join(_describe(x) for x in item[:4])
    if isinstance(item, Mapping):
        return "dict with keys " + ", ".join(map(str, list(item)[:8]))
    return type(item).__name__
