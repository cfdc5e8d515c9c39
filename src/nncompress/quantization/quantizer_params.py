"""From a range ``(min, max)`` to integer-grid ``QuantizerParams`` (scale, zero point, levels).

Integer grid (``b`` = ``spec.num_bits``; ``half_range`` uses ``b - 1`` bits of the ``b``-bit type,
NNCF's overflow fix for 8-bit weights on CPUs without VNNI, e.g. [-64, 63] for 8 bits):

==========================  ============================  ====================================
quantizer                   ``[quant_min, quant_max]``    narrow_range
==========================  ============================  ====================================
signed (symmetric or        ``[-2^(b-1), 2^(b-1) - 1]``   drops the lowest level:
asymmetric with signed)                                   ``[-(2^(b-1) - 1), 2^(b-1) - 1]``
unsigned                    ``[0, 2^b - 1]``              drops the highest level: ``[0, 2^b - 2]``
==========================  ============================  ====================================

Symmetric: zero point 0. Signed: ``scale = max(|min|, |max|) / quant_max`` (127 for 8 bits), so
both ``+-max|x|`` are on the grid and the extra level -128 stays unused for in-range values (as in
NNCF, whose ``level_high`` sets the scale). Unsigned: ``scale = max / quant_max``. ``signed=None``
means unsigned when every collected min is >= 0. ``signed=False`` is honoured (negative values
clip to 0).

Asymmetric: the range is first widened to include 0 (``min' = min(min, 0)``, ``max' = max(max, 0)``).
The ideal real zero point ``quant_min - min' / scale0`` (``scale0 = (max' - min') / (levels - 1)``)
is rounded down and up; for each integer candidate the smallest scale whose grid still covers
``[min', max']`` is ``max(-min' / (zp - quant_min), max' / (quant_max - zp))``, and the candidate
with the smaller scale wins. This is the equivalent of NNCF's "tune the range so zero is exactly
representable" (which keeps one end and moves the other outward), never worse: zero maps exactly
to ``zp``, the grid covers ``[min', max']`` (so every value in the range is within ``scale / 2`` of
its fake-quantized value), and the range grows by at most two steps.

Degenerate input: a scale is never below ``MIN_SCALE`` (2^-24: the smallest float16 subnormal, so
it survives export in half precision), so all-zero and constant tensors get a valid, finite scale.
NaN/inf statistics raise ``QuantizationError`` naming the target point.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from nncompress.errors import QuantizationError
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.range_estimators import RangeEstimator, estimate_range
from nncompress.quantization.spec import QuantizerSpec
from nncompress.quantization.statistics import reduction_axes

MIN_SCALE = 2.0**-24

Range = tuple[np.ndarray, np.ndarray]


def effective_bits(spec: QuantizerSpec) -> int:
    """Bits of range actually used: ``num_bits - 1`` with the half-range overflow fix."""
    bits = spec.num_bits - (1 if spec.half_range else 0)
    if bits < 2:
        raise QuantizationError(f"half_range needs at least 3 bits, got a {spec.num_bits}-bit quantizer")
    return bits


def quant_range(spec: QuantizerSpec, signed: bool) -> tuple[int, int]:
    """``(quant_min, quant_max)`` of the integer grid (see the module docstring)."""
    bits = effective_bits(spec)
    if signed:
        qmax = 2 ** (bits - 1) - 1
        return (-qmax if spec.narrow_range else -qmax - 1), qmax
    return 0, 2**bits - 1 - (1 if spec.narrow_range else 0)


def resolve_signed(spec: QuantizerSpec, min_val: Any) -> bool:
    """Signedness of the grid: the spec's, or for ``signed=None`` symmetric, "any min < 0".

    Asymmetric quantizers with ``signed=None`` use the unsigned grid (the zero point carries the
    offset); ``signed=True`` asks for a signed grid (int8 storage with a zero point).
    """
    if spec.signed is not None:
        return bool(spec.signed)
    if spec.mode == "asymmetric":
        return False
    return bool(np.any(np.asarray(min_val) < 0))


def _where(where: Any) -> str:
    return f"quantizer at {where}" if where is not None else "quantizer"


def _prepare(spec: QuantizerSpec, min_val: Any, max_val: Any, where: Any) -> Range:
    mn = np.asarray(min_val, dtype=np.float64)
    mx = np.asarray(max_val, dtype=np.float64)
    bad = ~(np.isfinite(mn) & np.isfinite(mx))
    if np.any(bad):
        raise QuantizationError(
            f"Statistics for the {_where(where)} are not finite (min={_short(mn)}, max={_short(mx)}): "
            "the model produces NaN or inf there on the calibration data; check the inputs, or exclude "
            "this node with ignored_scope"
        )
    if spec.per_channel:
        mn, mx = np.atleast_1d(mn), np.atleast_1d(mx)
        if mn.ndim != 1 or mn.shape != mx.shape:
            raise QuantizationError(
                f"The per-channel {_where(where)} needs 1-D min/max of one length, got shapes {mn.shape} and {mx.shape}"
            )
    else:
        mn, mx = np.asarray(mn.min()), np.asarray(mx.max())
    if np.any(mn > mx):
        raise QuantizationError(
            f"The range of the {_where(where)} is inverted (min={_short(mn)} > max={_short(mx)}); "
            "the range estimator produced an empty range"
        )
    return mn, mx


def _short(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a), threshold=6, precision=4)


def _covering_scale(lo: np.ndarray, hi: np.ndarray, n_neg: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Smallest scale whose grid (``n_neg`` steps below zero, ``n_pos`` above) covers [lo, hi]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s_neg = np.where(lo < 0, np.where(n_neg > 0, -lo / np.maximum(n_neg, 1), np.inf), 0.0)
        s_pos = np.where(hi > 0, np.where(n_pos > 0, hi / np.maximum(n_pos, 1), np.inf), 0.0)
    return np.maximum(s_neg, s_pos)


def compute_params(spec: QuantizerSpec, min_val: Any, max_val: Any, *, where: Any = None) -> QuantizerParams:
    """Integer-grid parameters covering ``[min_val, max_val]``.

    ``min_val``/``max_val`` are scalars for a per-tensor spec (arrays are reduced to their overall
    min/max) and 1-D arrays along ``spec.channel_axis`` for a per-channel one. ``where`` (a
    ``TargetPoint`` or text) names the quantizer in error messages.
    """
    mn, mx = _prepare(spec, min_val, max_val, where)
    signed = resolve_signed(spec, mn)
    qmin, qmax = quant_range(spec, signed)
    if spec.mode == "symmetric":
        if signed:
            scale = np.maximum(np.abs(mn), np.abs(mx)) / qmax
        else:
            scale = np.maximum(mx, 0.0) / qmax
        zero_point = np.zeros(mn.shape, dtype=np.int32)
    else:
        lo, hi = np.minimum(mn, 0.0), np.maximum(mx, 0.0)
        scale0 = np.maximum((hi - lo) / (qmax - qmin), MIN_SCALE)
        zp_real = np.clip(qmin - lo / scale0, qmin, qmax)
        # both integer neighbours of the ideal zero point; keep the one needing the smaller scale
        # (a negative min needs a level below zero, a positive max one above; float absorption of a
        # tiny min/max would otherwise leave none)
        lowest, highest = qmin + (lo < 0), qmax - (hi > 0)
        zp_lo = np.clip(np.floor(zp_real), lowest, highest)
        zp_hi = np.clip(np.ceil(zp_real), lowest, highest)
        s_lo = _covering_scale(lo, hi, zp_lo - qmin, qmax - zp_lo)
        s_hi = _covering_scale(lo, hi, zp_hi - qmin, qmax - zp_hi)
        use_hi = s_hi < s_lo
        scale = np.where(use_hi, s_hi, s_lo)
        zero_point = np.asarray(np.where(use_hi, zp_hi, zp_lo), dtype=np.int32)
    scale = np.maximum(scale, MIN_SCALE)
    scale32 = scale.astype(np.float32)
    # float32 rounding must not shrink the covered range
    scale32 = np.where(scale32 < scale, np.nextafter(scale32, np.float32(np.inf)), scale32).astype(np.float32)
    if not np.all(np.isfinite(scale32)):
        raise QuantizationError(
            f"The range of the {_where(where)} (min={_short(mn)}, max={_short(mx)}) does not fit a float32 scale"
        )
    return QuantizerParams(
        scale=scale32,
        zero_point=zero_point,
        quant_min=int(qmin),
        quant_max=int(qmax),
        channel_axis=spec.channel_axis if spec.per_channel else None,
    )


def unify_ranges(ranges: Iterable[tuple[Any, Any]]) -> Range:
    """One range covering every ``(min, max)`` in ``ranges`` (quantizers in one unified group).

    Ranges of one shape are combined elementwise; ranges of different shapes (per-tensor and
    per-channel mixed) collapse to one scalar range.
    """
    pairs = [(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)) for lo, hi in ranges]
    if not pairs:
        raise QuantizationError("unify_ranges needs at least one range")
    shapes = {lo.shape for lo, _ in pairs} | {hi.shape for _, hi in pairs}
    if len(shapes) == 1:
        return np.minimum.reduce([lo for lo, _ in pairs]), np.maximum.reduce([hi for _, hi in pairs])
    return np.asarray(min(float(lo.min()) for lo, _ in pairs)), np.asarray(
        max(float(hi.max()) for _, hi in pairs)
    )


unify_params = unify_ranges  # the name used in the design notes


def weight_range(
    spec: QuantizerSpec, weight: np.ndarray, estimator: RangeEstimator | None = None, *, where: Any = None
) -> Range:
    """``(min, max)`` of a weight: per channel along ``spec.channel_axis`` (all other axes reduced)
    or over the whole tensor. ``estimator`` None is the exact min/max; any other estimator sees
    the weight as one batch."""
    w = np.asarray(weight)
    if spec.per_channel and not -w.ndim <= spec.channel_axis < w.ndim:
        raise QuantizationError(
            f"The {_where(where)} is per-channel on axis {spec.channel_axis}, but the weight has shape {w.shape}"
        )
    if w.size == 0:
        raise QuantizationError(f"The weight of the {_where(where)} is empty (shape {w.shape})")
    if estimator is not None:
        return estimate_range(estimator, spec, [w], is_weight=True)
    w64 = w.astype(np.float64, copy=False)
    if spec.per_channel:
        axes = reduction_axes(w.ndim, spec.channel_axis)
        return w64.min(axis=axes), w64.max(axis=axes)
    return np.asarray(w64.min()), np.asarray(w64.max())


def weight_params(
    spec: QuantizerSpec, weight: np.ndarray, *, estimator: RangeEstimator | None = None, where: Any = None
) -> QuantizerParams:
    """Parameters for a weight quantizer straight from the weight (no data needed)."""
    lo, hi = weight_range(spec, weight, estimator, where=where)
    return compute_params(spec, lo, hi, where=where)
