import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nncompress.errors import QuantizationError
from nncompress.quantization.quantizer_params import (
    MIN_SCALE,
    compute_params,
    quant_range,
    resolve_signed,
    unify_params,
    unify_ranges,
    weight_params,
    weight_range,
)
from nncompress.quantization.range_estimators import ThreeSigmaEstimator
from nncompress.quantization.spec import QuantizerSpec, TargetPoint, TargetType


@pytest.mark.parametrize(
    ("spec", "signed", "expected"),
    [
        (QuantizerSpec(), True, (-128, 127)),
        (QuantizerSpec(narrow_range=True), True, (-127, 127)),
        (QuantizerSpec(), False, (0, 255)),
        (QuantizerSpec(narrow_range=True), False, (0, 254)),
        (QuantizerSpec(half_range=True), True, (-64, 63)),
        (QuantizerSpec(half_range=True, narrow_range=True), True, (-63, 63)),
        (QuantizerSpec(num_bits=4), True, (-8, 7)),
        (QuantizerSpec(num_bits=4, mode="asymmetric"), False, (0, 15)),
        (QuantizerSpec(num_bits=2), True, (-2, 1)),
    ],
)
def test_quant_range(spec, signed, expected):
    assert quant_range(spec, signed) == expected


def test_half_range_needs_three_bits():
    with pytest.raises(QuantizationError):
        quant_range(QuantizerSpec(num_bits=2, half_range=True), True)


def test_symmetric_signed_and_auto_unsigned():
    p = compute_params(QuantizerSpec(), -2.0, 1.0)
    assert float(p.scale) == pytest.approx(2.0 / 127)
    assert (p.quant_min, p.quant_max) == (-128, 127) and int(p.zero_point) == 0
    assert p.scale.ndim == 0 and p.zero_point.ndim == 0 and p.channel_axis is None
    u = compute_params(QuantizerSpec(), 0.0, 3.0)
    assert (u.quant_min, u.quant_max) == (0, 255) and float(u.scale) == pytest.approx(3.0 / 255)
    forced = compute_params(QuantizerSpec(signed=True), 0.0, 3.0)
    assert forced.quant_min == -128
    clipped = compute_params(QuantizerSpec(signed=False), -5.0, 3.0)
    assert clipped.quant_min == 0 and float(clipped.input_high) == pytest.approx(3.0)
    assert resolve_signed(QuantizerSpec(mode="asymmetric"), -1.0) is False
    h = compute_params(QuantizerSpec(half_range=True, narrow_range=True), -1.0, 6.3)
    assert float(h.scale) == pytest.approx(6.3 / 63) and h.quant_min == -63


def test_asymmetric_zero_exact_and_range_covered():
    p = compute_params(QuantizerSpec(mode="asymmetric"), -1.3, 5.2)
    assert (p.quant_min, p.quant_max) == (0, 255)
    assert p.fake_quantize(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert float(p.input_low) <= -1.3 + 1e-7 and float(p.input_high) >= 5.2 - 1e-6
    # the range is widened to include 0
    q = compute_params(QuantizerSpec(mode="asymmetric"), 2.0, 4.0)
    assert float(q.input_low) == 0.0 and int(q.zero_point) == 0
    n = compute_params(QuantizerSpec(mode="asymmetric"), -4.0, -2.0)
    assert float(n.input_high) == 0.0 and int(n.zero_point) == 255
    s = compute_params(QuantizerSpec(mode="asymmetric", signed=True), -1.0, 3.0)
    assert (s.quant_min, s.quant_max) == (-128, 127) and -128 <= int(s.zero_point) <= 127


def test_degenerate_ranges():
    for mode in ("symmetric", "asymmetric"):
        z = compute_params(QuantizerSpec(mode=mode), 0.0, 0.0)
        assert float(z.scale) == pytest.approx(MIN_SCALE) and np.isfinite(z.scale)
        c = compute_params(QuantizerSpec(mode=mode), 5.0, 5.0)
        assert c.fake_quantize(np.array([5.0]))[0] == pytest.approx(5.0, rel=1e-2)
    w = np.zeros((3, 4))
    w[1] = np.linspace(-1, 1, 4)
    p = weight_params(QuantizerSpec(per_channel=True, channel_axis=0), w)
    assert p.scale.shape == (3,) and np.all(p.scale > 0) and np.all(np.isfinite(p.scale))
    np.testing.assert_array_equal(p.fake_quantize(w)[0], 0)


def test_non_finite_and_bad_shapes_name_the_target():
    tp = TargetPoint(TargetType.OUTPUT, "layer1/conv", 0)
    with pytest.raises(QuantizationError, match="layer1/conv:output0"):
        compute_params(QuantizerSpec(), np.nan, 1.0, where=tp)
    with pytest.raises(QuantizationError, match="not finite"):
        compute_params(QuantizerSpec(), -np.inf, 1.0)
    with pytest.raises(QuantizationError, match="inverted"):
        compute_params(QuantizerSpec(mode="asymmetric"), 2.0, 1.0)
    with pytest.raises(QuantizationError, match="1-D"):
        compute_params(QuantizerSpec(per_channel=True, channel_axis=0), np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(QuantizationError, match="axis 3"):
        weight_params(QuantizerSpec(per_channel=True, channel_axis=3), np.ones((2, 2)), where=tp)


def test_per_tensor_spec_reduces_arrays_and_per_channel_keeps_them():
    p = compute_params(QuantizerSpec(), np.array([-1.0, -3.0]), np.array([2.0, 1.0]))
    assert float(p.scale) == pytest.approx(3.0 / 127)
    spec = QuantizerSpec(mode="asymmetric", per_channel=True, channel_axis=1)
    pc = compute_params(spec, np.array([-1.0, 0.0, -2.0]), np.array([1.0, 4.0, 0.5]))
    assert pc.scale.shape == (3,) and pc.zero_point.shape == (3,) and pc.channel_axis == 1
    assert pc.scale.dtype == np.float32 and pc.zero_point.dtype == np.int32


def test_unify_ranges():
    lo, hi = unify_ranges([(-1.0, 2.0), (-3.0, 1.0), (0.0, 0.5)])
    assert (float(lo), float(hi)) == (-3.0, 2.0)
    lo, hi = unify_params(
        [(np.array([-1.0, 0.0]), np.array([1.0, 2.0])), (np.array([0.0, -2.0]), np.array([3.0, 0.0]))]
    )
    np.testing.assert_array_equal(lo, [-1.0, -2.0])
    np.testing.assert_array_equal(hi, [3.0, 2.0])
    lo, hi = unify_ranges([(np.array([-1.0, 0.0]), np.array([1.0, 2.0])), (-5.0, 0.0)])
    assert (float(lo), float(hi)) == (-5.0, 2.0)
    with pytest.raises(QuantizationError):
        unify_ranges([])


def test_weight_range_per_channel_and_estimator():
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 10
    lo, hi = weight_range(QuantizerSpec(per_channel=True, channel_axis=1), w)
    np.testing.assert_array_equal(lo, w.min(axis=(0, 2)))
    np.testing.assert_array_equal(hi, w.max(axis=(0, 2)))
    lo, hi = weight_range(QuantizerSpec(), w, ThreeSigmaEstimator())
    assert float(lo) == pytest.approx(w.mean() - 3 * w.std(), rel=1e-6)


# -- property-based ----------------------------------------------------------------------------
@st.composite
def spec_and_tensor(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 1e3, 1e6]))
    elements = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)
    x = draw(hnp.arrays(np.float64, shape, elements=elements)) * magnitude
    if draw(st.booleans()):
        x = x + draw(st.floats(-2.0, 2.0)) * magnitude  # shifted: often all-positive or all-negative
    bits = draw(st.integers(2, 12))
    per_channel = draw(st.booleans())
    spec = QuantizerSpec(
        num_bits=bits,
        mode=draw(st.sampled_from(["symmetric", "asymmetric"])),
        per_channel=per_channel,
        channel_axis=draw(st.integers(-ndim, ndim - 1)) if per_channel else None,
        signed=draw(st.sampled_from([None, True, False])),
        narrow_range=draw(st.booleans()),
        half_range=draw(st.booleans()) if bits >= 3 else False,
    )
    return spec, x


def _bcast(v, spec, x):
    if not spec.per_channel:
        return np.asarray(v, dtype=np.float64)
    shape = [1] * x.ndim
    shape[spec.channel_axis] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)


@settings(max_examples=300, deadline=None)
@given(spec_and_tensor())
def test_params_properties(case):
    spec, x = case
    p = weight_params(spec, x)
    scale, zp = np.asarray(p.scale, dtype=np.float64), np.asarray(p.zero_point)
    # finite, positive, right shapes
    assert np.all(np.isfinite(scale)) and np.all(scale >= MIN_SCALE * (1 - 1e-6))
    if spec.per_channel:
        assert scale.shape == zp.shape == (x.shape[spec.channel_axis],)
    else:
        assert scale.ndim == 0 and zp.ndim == 0
    # grid size
    bits = spec.num_bits - (1 if spec.half_range else 0)
    assert p.levels == 2**bits - (1 if spec.narrow_range else 0)
    assert np.all((p.quant_min <= zp) & (zp <= p.quant_max))
    # zero exactly representable
    assert np.all(p.fake_quantize(np.zeros_like(x)) == 0)
    # inside the quantizer's range, the error is at most half a step
    s, lo, hi = _bcast(scale, spec, x), _bcast(p.input_low, spec, x), _bcast(p.input_high, spec, x)
    xc = np.clip(x, lo, hi)
    err = np.abs(p.fake_quantize(xc) - xc)
    assert np.all(err <= s / 2 * (1 + 1e-5) + 1e-12 * np.abs(xc))
    # and the range covers the data (up to half a step), except negatives under a forced unsigned grid
    lost_negative = spec.signed is False and spec.mode == "symmetric"
    outside = np.abs(xc - x)
    if lost_negative:
        outside = np.where(x < 0, 0.0, outside)
    assert np.all(outside <= s / 2 * (1 + 1e-5) + 1e-9 * np.abs(x))


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e4, 1e4, allow_nan=False), st.floats(0, 1e4), st.integers(2, 8))
def test_asymmetric_scale_grows_little(lo, width, bits):
    hi = lo + width
    spec = QuantizerSpec(num_bits=bits, mode="asymmetric")
    p = compute_params(spec, lo, hi)
    span = max(hi, 0.0) - min(lo, 0.0)
    assume(span > 1e-3)
    ideal = span / (p.quant_max - p.quant_min)
    # tuning for an integer zero point widens the range by less than one step on each side
    assert float(p.scale) >= ideal * (1 - 1e-6)
    assert float(p.input_high - p.input_low) <= span + 2 * float(p.scale) * (1 + 1e-6)
