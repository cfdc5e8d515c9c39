"""``nncompress.quantize_with_accuracy_control``: quantize, then keep the worst ops in float.

Backend-neutral, built on ``nncompress.quantize``, with NNCF 3.x's ``QuantizationAccuracyRestorer``
loop. The model is quantized, the metric of the float and the quantized model is measured with the
user's ``validation_fn``; while the metric drop exceeds ``max_drop``, quantizable ops are reverted
to float (by re-quantizing with those ops added to the ignored scope):

1. *ranking*: every group is scored by the metric gain, on ``ranking_subset_size`` validation
   items, of leaving it alone in float on top of the current model;
2. each iteration reverts the best-ranked remaining group (cumulatively) and validates on the
   whole validation set; it stops when the drop is within ``max_drop``, when every group was
   tried, or after ``max_num_iterations`` iterations;
3. a revert that does not make the drop worse is kept. One that makes it worse is kept once right
   after a (re-)ranking (NNCF's step-back rule), otherwise it is undone and the remaining groups,
   that one included, are *re-ranked* on the current model: reverting one op changes what the
   others cost (a float op no longer feeds quantization error into its consumers).

A *group* is every quantizer serving one quantizable op: its input activation quantizer(s) and
its weight quantizer. When the target cannot be met, the best model seen is returned with an
``NNCompressWarning`` (NNCF returns the last one).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncompress.backends import detect_backend
from nncompress.data import Dataset
from nncompress.errors import DatasetError, NNCompressWarning, QuantizationError
from nncompress.parameters import DropType, ModelType, QuantizationPreset, TargetDevice
from nncompress.progress import StageProgress, progress
from nncompress.quantization.advanced_parameters import (
    AdvancedAccuracyRestorerParameters,
    AdvancedQuantizationParameters,
    RestoreMode,
)
from nncompress.quantization.quantize import quantize
from nncompress.quantization.spec import Placement
from nncompress.scopes import IgnoredScope

logger = logging.getLogger(__name__)

# at most this many ops are ranked one by one; beyond it, ops are first ranked in chunks
MAX_RANKED_CANDIDATES = 64


@dataclass
class AccuracyControlReport:
    """What ``quantize_with_accuracy_control`` did (see ``last_accuracy_control_report``)."""

    drop_type: DropType
    max_drop: float
    fp32_metric: float
    quantized_metric: float
    final_metric: float
    final_drop: float
    reverted_ops: list[str] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)  # (op, metric gain), best first
    iterations: int = 0
    target_met: bool = True
    # every ranking made, the first one included: after an undone revert the rest are re-ranked
    rankings: list[list[tuple[str, float]]] = field(default_factory=list)
    # (op tried, metric after reverting it with the ops kept before, kept?) per iteration
    history: list[tuple[str, float, bool]] = field(default_factory=list)
    intermediate_model_path: str | None = None

    def summary(self) -> str:
        lines = [
            f"Accuracy control ({self.drop_type.value} drop, max_drop={self.max_drop}):",
            f"  FP32 metric {self.fp32_metric:.6g}, INT8 metric {self.quantized_metric:.6g}, "
            f"final metric {self.final_metric:.6g}, final drop {self.final_drop:.6g}"
            f" ({'target met' if self.target_met else 'TARGET NOT MET'})",
            f"  ops reverted to float ({len(self.reverted_ops)}): {', '.join(self.reverted_ops) or 'none'}",
            f"  iterations {self.iterations}, rankings {len(self.rankings)}",
        ]
        return "\n".join(lines)


_LAST_REPORT: AccuracyControlReport | None = None


def last_accuracy_control_report() -> AccuracyControlReport | None:
    """The report of the latest ``quantize_with_accuracy_control`` call in this process."""
    return _LAST_REPORT


def calculate_drop(fp32_metric: float, metric: float, drop_type: DropType) -> float:
    """Absolute: ``fp32 - metric``; relative: ``(fp32 - metric) / |fp32|`` (absolute when fp32 is 0)."""
    drop = fp32_metric - metric
    if DropType(drop_type) == DropType.RELATIVE and fp32_metric != 0:
        drop /= abs(fp32_metric)
    return drop


def _placement(model: Any, backend: str) -> Placement:
    if backend == "torch":
        placement = getattr(getattr(getattr(model, "nncf", None), "hook_manager", None), "placement", None)
        if placement is None:
            raise QuantizationError("accuracy control: the quantized torch model has no placement")
        return placement
    import importlib

    stored = importlib.import_module(f"nncompress.{backend}").placement_of(model)
    if stored is None:
        raise QuantizationError(f"accuracy control: the quantized {backend} model has no placement")
    return Placement.from_dict(stored)


def _candidate_ops(placement: Placement) -> list[str]:
    """Quantizable ops, in placement order: each consumer of a quantizer (and each weighted op)."""
    ops: dict[str, None] = {}
    for point in placement.points:
        if point.is_weight:
            ops.setdefault(point.target.node, None)
        for node, _port in point.consumers:
            ops.setdefault(node, None)
    return list(ops)


def _prepare(model: Any, backend: str) -> Any:
    """What ``validation_fn`` receives: the torch module in eval mode, the ONNX ModelProto, or
    (as NNCF) an OpenVINO model compiled for CPU."""
    if backend == "openvino":
        import openvino as ov

        return ov.Core().compile_model(model, "CPU")
    if backend == "torch":
        model.eval()
    return model


def _as_metric(value: Any) -> float:
    if isinstance(value, tuple):  # NNCF also accepts (metric, per-sample values)
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise QuantizationError(
            f"validation_fn must return a number (higher is better), got {type(value).__name__}"
        ) from None


def _with_user_scope(names: list[str], user: IgnoredScope | None) -> IgnoredScope | None:
    if not names:
        return user
    if user is None:
        return IgnoredScope(names=list(names))
    return IgnoredScope(
        names=list(user.names) + [n for n in names if n not in user.names],
        patterns=list(user.patterns),
        types=list(user.types),
        subgraphs=list(user.subgraphs),
        validate=user.validate,
    )


def quantize_with_accuracy_control(
    model: Any,
    calibration_dataset: Dataset,
    validation_dataset: Dataset,
    validation_fn: Any,
    max_drop: float = 0.01,
    drop_type: DropType = DropType.ABSOLUTE,
    preset: QuantizationPreset | None = None,
    target_device: TargetDevice = TargetDevice.ANY,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    model_type: ModelType | None = None,
    ignored_scope: IgnoredScope | None = None,
    advanced_quantization_parameters: AdvancedQuantizationParameters | None = None,
    advanced_accuracy_restorer_parameters: AdvancedAccuracyRestorerParameters | None = None,
) -> Any:
    """Quantize ``model`` so that its metric drops by at most ``max_drop``.

    ``validation_fn(model, validation_data)`` returns the metric (higher is better) of a model
    (torch module, ONNX ModelProto or compiled OpenVINO model) on an iterable of raw
    ``validation_dataset`` items. Ops whose quantization costs the most are left in float until
    the drop is within ``max_drop``; when that cannot be reached, the best model found is
    returned with an ``NNCompressWarning``. The input model is not modified. The report is
    logged at INFO and available from ``last_accuracy_control_report()`` (torch models also keep
    it as ``model.nncf.hook_manager.accuracy_control_report``).
    """
    global _LAST_REPORT
    restorer = advanced_accuracy_restorer_parameters or AdvancedAccuracyRestorerParameters()
    _check_restorer(restorer)
    if not isinstance(validation_dataset, Dataset):
        raise DatasetError(
            f"validation_dataset must be an nncompress.Dataset, got {type(validation_dataset).__name__}"
        )
    if not callable(validation_fn):
        raise QuantizationError("validation_fn must be callable: validation_fn(model, data) -> float")
    drop_type = DropType(drop_type)
    backend = detect_backend(model)

    def quantize_ignoring(names: list[str]) -> Any:
        try:
            return _quantize(names)
        except QuantizationError as exc:
            if not names or not str(exc).startswith("nothing to quantize"):
                raise
            return _float_copy(model, backend)  # every quantized op reverted: the float model

    def _quantize(names: list[str]) -> Any:
        return quantize(
            model,
            calibration_dataset,
            preset=preset,
            target_device=target_device,
            subset_size=subset_size,
            fast_bias_correction=fast_bias_correction,
            model_type=model_type,
            ignored_scope=_with_user_scope(names, ignored_scope),
            advanced_parameters=advanced_quantization_parameters,
        )

    def evaluate(candidate: Any, indices: list[int] | None = None) -> float:
        return _as_metric(validation_fn(_prepare(candidate, backend), validation_dataset.get_data(indices)))

    fp32_metric = evaluate(model)
    quantized = quantize_ignoring([])
    q_metric = evaluate(quantized)
    drop = calculate_drop(fp32_metric, q_metric, drop_type)
    logger.info(
        "Accuracy control: FP32 metric %.6g, INT8 metric %.6g, drop %.6g", fp32_metric, q_metric, drop
    )
    report = AccuracyControlReport(drop_type, max_drop, fp32_metric, q_metric, q_metric, drop)
    _LAST_REPORT = report
    if restorer.intermediate_model_dir:
        report.intermediate_model_path = _save_intermediate(
            quantized, backend, restorer.intermediate_model_dir
        )
    if drop <= max_drop:
        logger.info(report.summary())
        return quantized

    ranking_indices = _ranking_indices(validation_dataset, restorer.ranking_subset_size)
    show = advanced_quantization_parameters is None or advanced_quantization_parameters.show_progress

    def rank(ops: list[str], kept: list[str], current: Any, current_metric: float) -> list[tuple[str, float]]:
        """``ops`` by the metric gain of reverting each on top of ``kept`` (best first)."""
        base = current_metric if ranking_indices is None else evaluate(current, ranking_indices)

        def gain(names: list[str]) -> float:
            return evaluate(quantize_ignoring(kept + names), ranking_indices) - base

        if len(ops) > MAX_RANKED_CANDIDATES:
            ops = _prefilter(ops, gain)
        ranked = sorted(
            ((op, gain([op])) for op in progress(ops, "Accuracy control: ranking", enabled=show)),
            key=lambda item: -item[1],
        )
        report.rankings.append(ranked)
        logger.info("Accuracy control: ranking %s", ", ".join(f"{op}: {g:+.4g}" for op, g in ranked))
        return ranked

    ranking = rank(_candidate_ops(_placement(quantized, backend)), [], quantized, q_metric)
    report.ranking = ranking
    queue = [op for op, _ in ranking]

    # NNCF's loop: revert the best remaining group; keep it unless it makes the drop worse (and
    # the previous step was not a step back); else undo it and re-rank what is left
    current, current_metric, kept = quantized, q_metric, []
    best_model, best_metric, best_ops = quantized, q_metric, []
    previous_drop, step_back = drop, True
    with StageProgress(enabled=show) as bar:
        while queue and report.iterations < restorer.max_num_iterations:
            op = queue.pop(0)
            report.iterations += 1
            bar(
                "Accuracy control: reverting",
                report.iterations,
                min(restorer.max_num_iterations, len(queue) + report.iterations),
            )
            trial_ops = [*kept, op]
            trial = quantize_ignoring(trial_ops)
            metric = evaluate(trial)
            drop = calculate_drop(fp32_metric, metric, drop_type)
            logger.info("Accuracy control: reverted %s -> metric %.6g, drop %.6g", op, metric, drop)
            if metric > best_metric or drop <= max_drop:
                best_model, best_metric, best_ops = trial, metric, list(trial_ops)
            if drop <= max_drop:
                report.history.append((op, metric, True))
                break
            if drop <= previous_drop or step_back:
                report.history.append((op, metric, True))
                current, current_metric, kept = trial, metric, trial_ops
                previous_drop, step_back = drop, False
                continue
            # worse than before: undo it, and rank the rest again on the model without it
            report.history.append((op, metric, False))
            previous_drop, step_back = drop, True
            queue.append(op)
            if report.iterations < restorer.max_num_iterations:
                logger.info("Accuracy control: %s made the drop worse; re-ranking the remaining ops", op)
                queue = [name for name, _ in rank(queue, kept, current, current_metric)]

    report.final_metric = best_metric
    report.final_drop = calculate_drop(fp32_metric, best_metric, drop_type)
    report.reverted_ops = best_ops
    report.target_met = report.final_drop <= max_drop
    logger.info(report.summary())
    if not report.target_met:
        why = (
            "every quantizable op was tried"
            if not queue
            else f"max_num_iterations={restorer.max_num_iterations}"
        )
        warnings.warn(
            f"quantize_with_accuracy_control: the {drop_type.value} metric drop {report.final_drop:.6g} "
            f"exceeds max_drop={max_drop} after {report.iterations} iteration(s) ({why}); returning the best "
            f"model found (metric {best_metric:.6g}, FP32 {fp32_metric:.6g}, "
            f"{len(best_ops)} op(s) in float: {', '.join(best_ops) or 'none'})",
            NNCompressWarning,
            stacklevel=2,
        )
    hook_manager = getattr(getattr(best_model, "nncf", None), "hook_manager", None)
    if hook_manager is not None:  # torch: next to the placement
        with contextlib.suppress(AttributeError, TypeError):  # a read-only container: skip
            hook_manager.accuracy_control_report = report
    return best_model


def _check_restorer(restorer: AdvancedAccuracyRestorerParameters) -> None:
    where = "advanced_accuracy_restorer_parameters"
    if not isinstance(restorer, AdvancedAccuracyRestorerParameters):
        raise QuantizationError(
            f"{where} must be an AdvancedAccuracyRestorerParameters, got {type(restorer).__name__}"
        )
    if restorer.tune_hyperparams:
        raise QuantizationError(
            "quantize_with_accuracy_control: tune_hyperparams=True is not supported; leave it False"
        )
    mode = restorer.restore_mode
    if not isinstance(mode, RestoreMode):
        try:
            mode = RestoreMode(getattr(mode, "value", mode))
        except ValueError:
            raise QuantizationError(
                f"{where}.restore_mode: {mode!r} is not one of {[m.value for m in RestoreMode]}"
            ) from None
    if mode is not RestoreMode.ACTIVATIONS_AND_WEIGHTS:
        raise QuantizationError(
            f"{where}.restore_mode={mode.value}: only 'activations_and_weights' is supported (an op goes back to "
            "float with its weights); keeping int8 weights on reverted ops is not implemented"
        )
    if not isinstance(restorer.max_num_iterations, int) or restorer.max_num_iterations < 0:
        raise QuantizationError(
            f"{where}.max_num_iterations must be a non-negative integer, got {restorer.max_num_iterations!r}"
        )


def _float_copy(model: Any, backend: str) -> Any:
    if backend == "onnx":
        import onnx

        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    if backend == "openvino":
        return model.clone()
    import copy

    return copy.deepcopy(model)


def _save_intermediate(model: Any, backend: str, directory: str) -> str:
    """The fully quantized model, as NNCF saves it before reverting anything."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "onnx":
        from nncompress.onnx import save_model

        return str(save_model(model, folder / "intermediate_model.onnx"))
    if backend == "openvino":
        import openvino as ov

        path = folder / "intermediate_model.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
        return str(path)
    import torch

    path = folder / "intermediate_model.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def _ranking_indices(dataset: Dataset, ranking_subset_size: int | None) -> list[int] | None:
    """Indices of the ranking subset, or None for the whole validation set."""
    length = dataset.get_length()
    size = ranking_subset_size if ranking_subset_size is not None else 300
    if size < 1:
        raise DatasetError(f"ranking_subset_size must be a positive integer, got {ranking_subset_size!r}")
    if length is not None and size >= length:
        return None
    return list(range(size))


def _prefilter(candidates: list[str], gain: Any) -> list[str]:
    """Too many ops to rank one by one: rank contiguous chunks, keep the ops of the best chunks."""
    n_chunks = max(2, MAX_RANKED_CANDIDATES // 4)
    size = -(-len(candidates) // n_chunks)
    chunks = [candidates[i : i + size] for i in range(0, len(candidates), size)]
    scored = sorted(chunks, key=lambda chunk: -gain(chunk))
    kept: list[str] = []
    for chunk in scored:
        kept.extend(chunk[: MAX_RANKED_CANDIDATES - len(kept)])
        if len(kept) >= MAX_RANKED_CANDIDATES:
            break
    return kept


__all__ = [
    "AccuracyControlReport",
    "AdvancedAccuracyRestorerParameters",
    "RestoreMode",
    "calculate_drop",
    "last_accuracy_control_report",
    "quantize_with_accuracy_control",
]
