"""``nncompress.quantize``: post-training quantization of a model of any supported backend.

One backend-neutral pipeline: graph -> quantizer placement (hardware rules, preset, ignored
scope) -> statistics -> ranges -> quantizers applied -> bias correction. The backend adapter
does only the framework work; the model returned is of the same type as the one given.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

from nncompress.backends import detect_backend, get_adapter
from nncompress.data import Dataset
from nncompress.errors import ConfigError, DatasetError, NNCompressWarning, QuantizationError
from nncompress.graph import op_kinds
from nncompress.hardware.rules import load_rules
from nncompress.parameters import ModelType, QuantizationMode, QuantizationPreset, TargetDevice
from nncompress.progress import StageProgress
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters
from nncompress.quantization.algorithms import (
    BiasCorrection,
    FastBiasCorrection,
    MinMaxQuantization,
    SmoothQuant,
)
from nncompress.quantization.overflow_fix import apply_overflow_fix
from nncompress.quantization.range_estimators import get_range_estimator
from nncompress.quantization.spec import Placement
from nncompress.scopes import IgnoredScope

# A tqdm bar per algorithm stage, fed by the core's ``progress(stage, done, total)`` calls; it
# honours nncompress.set_progress / NNCOMPRESS_NO_PROGRESS as well as ``show_progress``.
_Progress = StageProgress


def _first_item(dataset: Any) -> Any:
    if isinstance(dataset, Dataset):
        items = dataset.get_inference_data()
    else:
        items = iter(dataset)
    try:
        return next(iter(items))
    except StopIteration:
        raise DatasetError("The calibration dataset is empty: at least one item is needed") from None


def _check_arguments(calibration_dataset: Any, subset_size: int, mode: Any) -> None:
    if not isinstance(calibration_dataset, Dataset):
        raise DatasetError(
            f"calibration_dataset must be an nncompress.Dataset, got {type(calibration_dataset).__name__}; "
            "wrap your data: nncompress.Dataset(data_loader, transform_fn)"
        )
    if not isinstance(subset_size, int) or isinstance(subset_size, bool) or subset_size < 1:
        raise DatasetError(f"subset_size must be a positive integer, got {subset_size!r}")
    if mode is not None:
        raise QuantizationError(
            f"quantize(mode={mode!r}): floating-point (FP8) quantization modes are not supported; "
            "leave mode=None for INT8"
        )


# items of fast bias correction's paired float and quantized passes (its residual pass on the
# output layers reads the first 32 of them). NNCF reads 100; 64 gave the same fidelity on the
# benchmark models (EfficientNet-Lite0 20.44/20.42 dB ONNX, 20.33/20.36 OpenVINO; DigitsCNN,
# silero-vad within 0.01 dB) and the silero-vad stream tests (tests/onnx/test_onnx_real_models.py)
# and pays for the residual pass: OpenVINO EfficientNet-Lite0 3.87 -> 3.42 s. 50 was too few: the
# first 50 items of a stream can miss what matters (silero-vad calibrated on 3 s of audio went
# from 0.17 to 0.52 mean |dp|)
FAST_BIAS_CORRECTION_ITEMS = 64


def _placement_for(graph, target_device, preset, model_type, ignored_scope, advanced) -> Placement:
    from nncompress.quantization.placement import place_quantizers

    if preset is None:  # NNCF: transformers default to mixed, everything else to performance
        preset = (
            QuantizationPreset.MIXED
            if model_type == ModelType.TRANSFORMER
            else QuantizationPreset.PERFORMANCE
        )
    return place_quantizers(
        graph,
        load_rules(target_device),
        preset=QuantizationPreset(preset),
        model_type=ModelType(model_type) if model_type is not None else None,
        ignored_scope=ignored_scope,
        quantize_outputs=advanced.quantize_outputs,
        quantize_tail=advanced.quantize_tail,
        quantize_powers=advanced.quantize_powers,
        activations=advanced.activations_quantization_params,
        weights=advanced.weights_quantization_params,
    )


def quantize(
    model: Any,
    calibration_dataset: Dataset,
    mode: QuantizationMode | None = None,
    preset: QuantizationPreset | None = None,
    target_device: TargetDevice = TargetDevice.ANY,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    model_type: ModelType | None = None,
    ignored_scope: IgnoredScope | None = None,
    advanced_parameters: AdvancedQuantizationParameters | None = None,
) -> Any:
    """Quantize ``model`` to INT8 using ``subset_size`` samples of ``calibration_dataset``.

    Returns a model of the same type: for torch, a copy of the user's module (same class) whose
    forward runs fake quantizers; export it with ``openvino.convert_model`` or
    ``nncompress.torch.export``. The input model is not modified.

    >>> qmodel = nncompress.quantize(model, nncompress.Dataset(loader, lambda b: b[0]))  # doctest: +SKIP
    """
    _check_arguments(calibration_dataset, subset_size, mode)
    settings = dict(
        preset=preset,
        target_device=target_device,
        subset_size=subset_size,
        fast_bias_correction=fast_bias_correction,
        model_type=model_type,
        ignored_scope=ignored_scope,
        advanced_parameters=advanced_parameters,
    )
    with_bodies = getattr(get_adapter(detect_backend(model)), "quantize_with_bodies", None)
    if with_bodies is not None:  # ops with subgraphs (ONNX If): the backend quantizes each body too
        # an ignored-scope entry names a node of one graph only: the others must not reject it
        part = dict(settings, ignored_scope=_unvalidated(ignored_scope))

        def quantize_graph(m: Any, d: Dataset, one_of_many: bool = False) -> Any:
            return _quantize_graph(m, d, **(part if one_of_many else settings))

        return with_bodies(model, calibration_dataset, quantize_graph, subset_size)
    return _quantize_graph(model, calibration_dataset, **settings)


def _quantize_graph(
    model: Any,
    calibration_dataset: Dataset,
    preset: QuantizationPreset | None,
    target_device: TargetDevice,
    subset_size: int,
    fast_bias_correction: bool,
    model_type: ModelType | None,
    ignored_scope: IgnoredScope | None,
    advanced_parameters: AdvancedQuantizationParameters | None,
) -> Any:
    """The pipeline on one graph (``quantize`` without the arguments check and subgraphs)."""
    advanced = advanced_parameters or AdvancedQuantizationParameters()
    target_device = TargetDevice(target_device)
    adapter = get_adapter(detect_backend(model))
    _apply_backend_params(adapter, advanced.backend_params)
    progress = _Progress(advanced.show_progress)
    try:
        example = _first_item(calibration_dataset)
        graph = adapter.build_graph(model, example)
        placement = _placement_for(graph, target_device, preset, model_type, ignored_scope, advanced)
        placement = apply_overflow_fix(placement, graph, advanced.overflow_fix, target_device)
        _warn_unsupported(graph)
        if model_type == ModelType.TRANSFORMER and _smooth_quant_alpha(advanced) >= 0:
            # SmoothQuant changes weights: work on a copy so the user's model stays untouched
            smooth = SmoothQuant(
                alpha=_smooth_quant_alpha(advanced), subset_size=subset_size, progress=progress
            )
            model = getattr(adapter, "copy_model", copy.deepcopy)(model)
            model = smooth.apply(model, graph, adapter, calibration_dataset, placement)
        min_max = MinMaxQuantization(
            subset_size=subset_size,
            weights_range_estimator=_estimator(advanced.weights_range_estimator_params),
            activations_range_estimator=_estimator(advanced.activations_range_estimator_params),
            model_type=model_type,
            progress=progress,
        )
        correction: Callable | None = None
        companions = []
        if not advanced.disable_bias_correction:
            correction = (
                FastBiasCorrection(
                    subset_size=min(subset_size, FAST_BIAS_CORRECTION_ITEMS), progress=progress
                )
                if fast_bias_correction
                else BiasCorrection(subset_size=min(subset_size, 100), progress=progress)
            )
            if isinstance(correction, FastBiasCorrection):  # its float statistics: MinMax's pass
                companions = correction.float_statistics(
                    model, graph, adapter, calibration_dataset, placement
                )
        params = min_max.apply(model, graph, adapter, calibration_dataset, placement, companions)
        quantized = adapter.apply(model, placement, params)
        if correction is not None:
            quantized = correction.apply(
                model,
                graph,
                adapter,
                calibration_dataset,
                quantized_model=quantized,
                placement=placement,
            )
    finally:
        progress.close()
    _remember(quantized, placement)
    return quantized


def _apply_backend_params(adapter: Any, params: dict) -> None:
    """NNCF's ``backend_params`` we act on: ``stat_requests_number`` (calibration items run at
    once by the ONNX and OpenVINO backends' statistics passes; 1 for the lowest peak memory).
    NNCF's other keys change nothing here."""
    n = params.get("stat_requests_number")
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(
            f"advanced_parameters.backend_params['stat_requests_number'] must be a positive integer, got {n!r}"
        )
    if hasattr(adapter, "stat_requests_number"):
        adapter.stat_requests_number = n


def _unvalidated(scope: IgnoredScope | None) -> IgnoredScope | None:
    return dataclasses.replace(scope, validate=False) if scope is not None else None


def _warn_unsupported(graph) -> None:
    """Name every op the backend does not know: they stay in float, and the user should know."""
    unknown = [n for n in graph.nodes if n.kind == op_kinds.UNKNOWN]
    if unknown:
        listed = ", ".join(f"'{n.name}' ({n.op_type})" for n in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        warnings.warn(
            f"{len(unknown)} unsupported op(s) left in float, their inputs and outputs not quantized: {listed}{more}",
            NNCompressWarning,
            stacklevel=3,
        )


def _smooth_quant_alpha(advanced: AdvancedQuantizationParameters) -> float:
    """The MatMul alpha: ``smooth_quant_alpha`` (NNCF's older name) wins over ``smooth_quant_alphas``."""
    if advanced.smooth_quant_alpha is not None:
        return advanced.smooth_quant_alpha
    return advanced.smooth_quant_alphas.matmul


def _estimator(params: Any) -> Any:
    if params is None or getattr(params, "type", None) is None:
        return None
    return get_range_estimator(params)


def _remember(model: Any, placement: Placement) -> None:
    """Keep the placement on the result so users can print where quantizers went and why."""
    nncf = getattr(model, "nncf", None)
    if nncf is not None:
        nncf.hook_manager.placement = placement


def quantization_report(model: Any) -> str:
    """The placement report of a model returned by ``quantize`` (every quantizer and every skip).

    Works for all backends: torch keeps the placement on the model, ONNX in its metadata and
    OpenVINO in its runtime info.
    """
    backend = detect_backend(model)
    placement = None
    if backend == "torch":
        placement = getattr(getattr(getattr(model, "nncf", None), "hook_manager", None), "placement", None)
    else:
        import importlib

        stored = importlib.import_module(f"nncompress.{backend}").placement_of(model)
        placement = Placement.from_dict(stored) if stored is not None else None
    if placement is None:
        raise QuantizationError(
            "This model was not produced by nncompress.quantize: it has no placement report"
        )
    return placement.report()


def strip(model: Any, do_copy: bool = True) -> Any:
    """NNCF's ``nncf.strip``: our torch models need no stripping to export; returns the model.

    Fake quantizers stay (they become FakeQuantize / QDQ on export). ``do_copy`` returns a copy.
    """
    if do_copy:
        return copy.deepcopy(model)
    return model


__all__ = ["quantization_report", "quantize", "strip"]
