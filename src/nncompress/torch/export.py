"""Export torch models carrying fake quantizers to ONNX or OpenVINO IR, and run the results.

- ``.onnx``: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter) inside
  ``export_mode("onnx")``: every quantizer becomes ``QuantizeLinear``/``DequantizeLinear``
  with constant scale and zero point (per-channel ones need opset >= 13).
- ``.xml``: ``openvino.convert_model`` inside ``export_mode("openvino")``, then
  ``openvino.save_model(..., compress_to_fp16=False)``: every quantizer becomes a
  ``FakeQuantize`` that the CPU plugin executes in INT8.

The helpers ``run_openvino`` / ``run_onnxruntime`` return numpy outputs (tests, benchmarks);
``compiled_int8_layers`` / ``int8_summary`` read the compiled OpenVINO model's runtime graph
(rt_info ``layerType`` and ``runtimePrecision``) to show which layers really run in INT8.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import BackendNotAvailableError, ExportError
from nncompress.torch.quantizers import BaseQuantizer, export_mode

__all__ = [
    "COMPUTE_LAYER_TYPES",
    "Int8Summary",
    "LayerPrecision",
    "compile_openvino",
    "compiled_int8_layers",
    "export",
    "int8_summary",
    "run_onnxruntime",
    "run_openvino",
    "runtime_layers",
]

SUFFIXES = (".onnx", ".xml")
INT8_PRECISIONS = frozenset({"i8", "u8"})
# CPU-plugin layer types that do the arithmetic worth quantizing
COMPUTE_LAYER_TYPES = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _as_args(example_input: Any) -> tuple[tuple, dict]:
    """``(positional, keyword)`` inputs from a tensor, a tuple/list of tensors or a dict."""
    if isinstance(example_input, Mapping):
        return (), dict(example_input)
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    return (example_input,), {}


def _default_input_names(model: nn.Module, args: tuple, kwargs: dict) -> list[str] | None:
    """Forward-argument names of the tensor inputs, in the order the exporters flatten them."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params[: len(args)]):
        return None
    names: list[str] = []
    for i, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            break
        value = args[i] if i < len(args) else kwargs.get(p.name)
        if isinstance(value, torch.Tensor):
            names.append(p.name)
        elif value is not None and i < len(args):
            return None  # a nested structure: let the exporter name things
    n_tensors = sum(isinstance(v, torch.Tensor) for v in (*args, *kwargs.values()))
    return names if len(names) == n_tensors else None


class _FlatIO(nn.Module):
    """Positional tensors in, a tuple of tensors out: what both exporters record reliably.

    Used when the model takes keyword inputs or returns a dict, nested or non-tensor output.
    Non-tensor keyword inputs are fixed at their example values; non-tensor outputs are
    dropped. Inputs are named after the keywords, outputs after their path (``aux.0``).
    """

    def __init__(
        self, model: nn.Module, n_positional: int, keywords: list[str], fixed: dict, output_names: list
    ):
        super().__init__()
        self.model = model
        self.n_positional = n_positional
        self.keywords = keywords
        self.fixed = fixed
        self.output_names = output_names
        self.example: tuple = ()
        self.input_names: list[str] | None = None

    def forward(self, *tensors: torch.Tensor) -> tuple:
        args = tensors[: self.n_positional]
        kwargs = dict(zip(self.keywords, tensors[self.n_positional :]))
        kwargs.update(self.fixed)
        return tuple(t for _, t in _tensor_leaves(self.model(*args, **kwargs)))

    @classmethod
    def wrap_if_needed(
        cls, model: nn.Module, args: tuple, kwargs: dict, input_names: Sequence[str] | None
    ) -> _FlatIO | None:
        output = model(*args, **kwargs)
        plain_output = torch.is_tensor(output) or (
            isinstance(output, tuple) and all(torch.is_tensor(t) for t in output)
        )
        if not kwargs and plain_output:
            return None
        if not all(torch.is_tensor(a) for a in args):
            return None  # nested positional structures: leave them to the exporter
        keywords = [k for k, v in kwargs.items() if torch.is_tensor(v)]
        fixed = {k: v for k, v in kwargs.items() if not torch.is_tensor(v)}
        names = [path or "output" for path, _ in _tensor_leaves(output)]
        flat = cls(model, len(args), keywords, fixed, names)
        flat.example = (*args, *(kwargs[k] for k in keywords))
        positional = _default_input_names(model, args, {}) or [f"input_{i}" for i in range(len(args))]
        flat.input_names = [*positional, *keywords]
        return flat


def _tensor_leaves(value: Any, path: str = "") -> list[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor in a nested output, in order."""
    if torch.is_tensor(value):
        return [(path, value)]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = enumerate(value)
    else:
        return []
    leaves = []
    for key, item in items:
        leaves += _tensor_leaves(item, f"{path}.{key}" if path else str(key))
    return leaves


def _has_per_channel_quantizer(model: nn.Module) -> bool:
    return any(isinstance(m, BaseQuantizer) and m.per_channel and m.is_enabled for m in model.modules())


def export(
    model: nn.Module,
    path: str | Path,
    example_input: Any,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` to ONNX (``.onnx``) or OpenVINO IR (``.xml`` + ``.bin``); return the path.

    ``example_input`` is a tensor, a tuple of tensors (positional inputs) or a dict of keyword
    inputs. Inputs are named after the forward arguments unless ``input_names`` is given.
    ``opset`` applies to ONNX (per-channel quantizers need >= 13). Inputs keep the example's
    shapes, with the first axis dynamic when ``dynamic_batch`` (both formats). Keyword inputs and
    dict or nested outputs are flattened: inputs named after their keywords, outputs after their
    path in the output structure (``logits``, ``aux.0``); non-tensor outputs are dropped. The
    model is exported in eval mode; the train/eval flag of every submodule is restored afterwards. Any failure raises ``ExportError`` naming
    the path and the cause.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ExportError(
            f"Cannot export to {path}: unknown suffix {path.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if not isinstance(model, nn.Module):
        raise ExportError(f"Cannot export to {path}: expected a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = _as_args(example_input)
    if input_names is None:
        input_names = _default_input_names(model, args, kwargs)
    if suffix == ".onnx" and opset < 13 and _has_per_channel_quantizer(model):
        raise ExportError(
            f"Cannot export to {path}: per-channel quantizers need ONNX opset >= 13 "
            f"(per-axis QuantizeLinear/DequantizeLinear), got opset {opset}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            flat = _FlatIO.wrap_if_needed(model, args, kwargs, input_names)
            if flat is not None:
                model, args, kwargs = flat, flat.example, {}
                example_input = flat.example
                input_names = input_names or flat.input_names
                output_names = output_names or flat.output_names
            if suffix == ".onnx":
                _export_onnx(model, path, args, kwargs, input_names, output_names, opset, dynamic_batch)
            else:
                _export_openvino(model, path, example_input, input_names, output_names, dynamic_batch)
    except ExportError as e:
        if str(path) in str(e):
            raise
        raise ExportError(f"Export to {path} failed: {e}") from e
    except Exception as e:
        raise ExportError(f"Export to {path} failed: {type(e).__name__}: {e}") from e
    finally:
        for m, training in modes.items():
            m.training = training
    return path


def _export_onnx(
    model: nn.Module,
    path: Path,
    args: tuple,
    kwargs: dict,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    opset: int,
    dynamic_batch: bool,
) -> None:
    import warnings

    dynamic_axes = None
    if dynamic_batch and input_names:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        dynamic_axes = {name: {0: "batch"} for name, t in zip(input_names, tensors) if t.dim() > 0}
    with export_mode("onnx"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is "legacy"
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            args,
            str(path),
            kwargs=kwargs or None,
            input_names=list(input_names) if input_names else None,
            output_names=list(output_names) if output_names else None,
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )


def _import_openvino():
    try:
        import openvino
    except ImportError as e:  # pragma: no cover - openvino is a dev dependency
        raise BackendNotAvailableError("OpenVINO is not installed: pip install openvino") from e
    return openvino


def _fix_input_shapes(ov_model: Any, example_input: Any, dynamic_batch: bool) -> None:
    """Give IR inputs the example's shapes (batch axis dynamic when asked).

    ``convert_model`` leaves every axis dynamic; the CPU plugin then fails to compile some INT8
    models in its default bf16 mode ("No suitable implementations"), and static channel and
    spatial sizes let it pick faster kernels.
    """
    if isinstance(example_input, Mapping):
        tensors = [t for t in example_input.values() if torch.is_tensor(t)]
    elif isinstance(example_input, tuple):
        tensors = [t for t in example_input if torch.is_tensor(t)]
    else:
        tensors = [example_input] if torch.is_tensor(example_input) else []
    if len(tensors) != len(ov_model.inputs):
        return  # cannot pair examples with inputs reliably: keep convert_model's shapes
    shapes = {}
    for port, t in zip(ov_model.inputs, tensors):
        dims = [int(d) for d in t.shape]
        if dynamic_batch and dims:
            dims[0] = -1
        shapes[port] = dims
    ov_model.reshape(shapes)


def _export_openvino(
    model: nn.Module,
    path: Path,
    example_input: Any,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    dynamic_batch: bool = True,
) -> None:
    import warnings

    ov = _import_openvino()
    if isinstance(example_input, list):
        example_input = tuple(example_input)
    with export_mode("openvino"), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        ov_model = ov.convert_model(model, example_input=example_input)
    _fix_input_shapes(ov_model, example_input, dynamic_batch)
    if input_names:
        if len(input_names) != len(ov_model.inputs):
            raise ExportError(
                f"{len(input_names)} input names given for {len(ov_model.inputs)} model inputs: {list(input_names)}"
            )
        for port, name in zip(ov_model.inputs, input_names):
            port.get_tensor().set_names({name})
    if output_names:
        if len(output_names) != len(ov_model.outputs):
            raise ExportError(
                f"{len(output_names)} output names given for {len(ov_model.outputs)} model outputs: "
                f"{list(output_names)}"
            )
        for port, name in zip(ov_model.outputs, output_names):
            port.get_tensor().set_names({name})
    ov.save_model(ov_model, str(path), compress_to_fp16=False)


# ---------------------------------------------------------------------------------------------
# Running exported models
# ---------------------------------------------------------------------------------------------

_CORE = None


def _core():
    global _CORE
    if _CORE is None:
        _CORE = _import_openvino().Core()
    return _CORE


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _feed(inputs: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Inputs (tensor, array, tuple/list or dict) as ``{input name: array}``."""
    if isinstance(inputs, Mapping):
        unknown = [k for k in inputs if k not in names]
        if unknown:
            raise ExportError(f"Unknown input name(s) {unknown}; the model has inputs {list(names)}")
        return {k: _to_numpy(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        values = list(inputs)
    else:
        values = [inputs]
    if len(values) != len(names):
        raise ExportError(f"{len(values)} inputs given; the model has {len(names)}: {list(names)}")
    return {n: _to_numpy(v) for n, v in zip(names, values)}


def compile_openvino(
    model: Any, *, f32: bool = True, device: str = "CPU", config: Mapping[str, Any] | None = None
):
    """Compile a path (``.xml`` or ``.onnx``), an ``openvino.Model`` or pass a ``CompiledModel``
    through. ``f32`` sets ``INFERENCE_PRECISION_HINT=f32`` (the CPU plugin otherwise runs FP32
    layers in bf16 where the CPU has it)."""
    ov = _import_openvino()
    if isinstance(model, ov.CompiledModel):
        return model
    cfg = dict(config or {})
    if f32:
        cfg.setdefault("INFERENCE_PRECISION_HINT", "f32")
    if isinstance(model, (str, Path)):
        model = _core().read_model(str(model))
    return _core().compile_model(model, device, cfg)


def run_openvino(path_or_model: Any, inputs: Any, f32: bool = True) -> list[np.ndarray]:
    """Run an OpenVINO model (path, ``Model`` or ``CompiledModel``) once; outputs in order."""
    compiled = compile_openvino(path_or_model, f32=f32)
    if isinstance(inputs, Mapping):
        names = [name for port in compiled.inputs for name in port.get_names()]
        feed: Any = _feed(inputs, names)
    else:
        feed = list(_feed(inputs, [f"input {i}" for i in range(len(compiled.inputs))]).values())
    result = compiled(feed)
    return [np.asarray(result[port]) for port in compiled.outputs]


def run_onnxruntime(path: str | Path, inputs: Any, *, optimize: bool = True) -> list[np.ndarray]:
    """Run an ONNX file in ONNX Runtime on the CPU; outputs in order. ``optimize=False`` turns
    graph optimizations off (QuantizeLinear/DequantizeLinear then run as written instead of
    being fused into integer kernels)."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a dev dependency
        raise BackendNotAvailableError("ONNX Runtime is not installed: pip install onnxruntime") from e
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return list(session.run(None, _feed(inputs, names)))


# ---------------------------------------------------------------------------------------------
# What the CPU plugin really executes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerPrecision:
    """One layer of a compiled model's runtime graph."""

    name: str
    type: str  # rt_info layerType: Convolution, FullyConnected, FakeQuantize, Reorder...
    precision: str  # rt_info runtimePrecision, lower case: f32, bf16, i8, u8...
    primitive: str = ""  # rt_info primitiveType, e.g. brgconv_avx512_I8

    @property
    def is_int8(self) -> bool:
        return self.precision in INT8_PRECISIONS


def _rt(rt_info, key: str) -> str:
    if key not in rt_info:
        return ""
    value = rt_info[key]
    return str(value.astype(str) if hasattr(value, "astype") else value)


def runtime_layers(compiled_model) -> list[LayerPrecision]:
    """Every layer of ``compiled_model.get_runtime_model()`` with its executed precision."""
    layers = []
    for op in compiled_model.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layers.append(
            LayerPrecision(
                name=op.get_friendly_name(),
                type=_rt(rt, "layerType"),
                precision=_rt(rt, "runtimePrecision").lower(),
                primitive=_rt(rt, "primitiveType"),
            )
        )
    return layers


def compiled_int8_layers(compiled_model, layer_types: Iterable[str] | None = None) -> dict[str, str]:
    """``{layer name: layer type}`` of the runtime layers executing in i8/u8 (only those of
    ``layer_types`` when given, e.g. ``COMPUTE_LAYER_TYPES``)."""
    types = set(layer_types) if layer_types is not None else None
    return {
        layer.name: layer.type
        for layer in runtime_layers(compiled_model)
        if layer.is_int8 and (types is None or layer.type in types)
    }


@dataclass(frozen=True)
class Int8Summary:
    """How many compute layers of a compiled model run in INT8."""

    total: int
    int8: int
    by_type: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (int8, total)
    layers: dict[str, str] = field(default_factory=dict)  # layer name -> runtime precision

    @property
    def share(self) -> float:
        return self.int8 / self.total if self.total else 0.0

    def __str__(self) -> str:
        kinds = ", ".join(f"{t} {n8}/{n}" for t, (n8, n) in sorted(self.by_type.items()))
        return f"{self.int8}/{self.total} compute layers run in INT8 ({self.share:.0%}){': ' + kinds if kinds else ''}"


def int8_summary(compiled_model, layer_types: Iterable[str] = COMPUTE_LAYER_TYPES) -> Int8Summary:
    """Counts and share of the ``layer_types`` layers executing in i8/u8."""
    types = set(layer_types)
    by_type: dict[str, list[int]] = {}
    layers: dict[str, str] = {}
    for layer in runtime_layers(compiled_model):
        if layer.type not in types:
            continue
        counts = by_type.setdefault(layer.type, [0, 0])
        counts[1] += 1
        counts[0] += int(layer.is_int8)
        layers[layer.name] = layer.precision
    return Int8Summary(
        total=sum(n for _, n in by_type.values()),
        int8=sum(n8 for n8, _ in by_type.values()),
        by_type={t: (n8, n) for t, (n8, n) in by_type.items()},
        layers=layers,
    )
