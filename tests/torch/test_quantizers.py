"""Fake quantizer modules: numerics against the numpy reference, gradients against finite
differences, state dicts, the export-mode switch."""

from __future__ import annotations

import copy
import dataclasses
import zlib

import numpy as np
import pytest
import torch

from nncompress.errors import ExportError, QuantizationError
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import QuantizerSpec
from nncompress.torch.quantizers import (
    AsymmetricQuantizer,
    SymmetricQuantizer,
    cached_weight_quantization,
    create_quantizer,
    current_export_target,
    export_mode,
    fake_quantize_ste,
)


def _grid(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def _make_params(spec: QuantizerSpec, shape: tuple[int, ...], rng: np.random.Generator) -> QuantizerParams:
    """Random integer-grid parameters for ``spec`` on a tensor of ``shape``."""
    bits = spec.num_bits - 1 if spec.half_range else spec.num_bits
    signed = spec.signed if spec.signed is not None else spec.mode == "symmetric"
    qmin, qmax = _grid(bits, signed, spec.narrow_range)
    n = shape[spec.channel_axis] if spec.per_channel else 1
    scale = rng.uniform(0.5, 2.0, size=n) * 3.0 / qmax
    if spec.mode == "symmetric":
        zp = np.zeros(n, dtype=np.int32)
    else:
        zp = rng.integers(qmin, qmax + 1, size=n).astype(np.int32)
    if not spec.per_channel:
        scale, zp = scale.reshape(()), zp.reshape(())
    axis = spec.channel_axis % len(shape) if spec.per_channel else None
    return QuantizerParams(
        scale=scale.astype(np.float32), zero_point=zp, quant_min=qmin, quant_max=qmax, channel_axis=axis
    )


CASES = {
    "sym-signed-pt-8": (QuantizerSpec(signed=True), (4, 3, 5, 5)),
    "sym-unsigned-pt-8": (QuantizerSpec(signed=False), (4, 3, 5, 5)),
    "sym-signed-narrow-pc0-8": (
        QuantizerSpec(per_channel=True, channel_axis=0, signed=True, narrow_range=True),
        (6, 3, 3, 3),
    ),
    "sym-signed-pc1-8": (QuantizerSpec(per_channel=True, channel_axis=1, signed=True), (2, 5, 4, 4)),
    "sym-unsigned-pc-last-8": (QuantizerSpec(per_channel=True, channel_axis=-1, signed=False), (7, 6)),
    "sym-half-range-8": (
        QuantizerSpec(per_channel=True, channel_axis=0, signed=True, half_range=True),
        (6, 3, 3, 3),
    ),
    "sym-signed-pt-4": (QuantizerSpec(num_bits=4, signed=True), (4, 3, 5, 5)),
    "sym-unsigned-pc-4": (
        QuantizerSpec(num_bits=4, per_channel=True, channel_axis=1, signed=False),
        (2, 5, 4),
    ),
    "sym-signed-narrow-pt-4": (QuantizerSpec(num_bits=4, signed=True, narrow_range=True), (50, 20)),
    "asym-pt-8": (QuantizerSpec(mode="asymmetric"), (4, 3, 5, 5)),
    "asym-signed-pt-8": (QuantizerSpec(mode="asymmetric", signed=True), (4, 3, 5, 5)),
    "asym-pc0-8": (QuantizerSpec(mode="asymmetric", per_channel=True, channel_axis=0), (6, 3, 3, 3)),
    "asym-pc1-4": (
        QuantizerSpec(num_bits=4, mode="asymmetric", per_channel=True, channel_axis=1),
        (2, 5, 4, 4),
    ),
    "asym-pt-4-narrow": (QuantizerSpec(num_bits=4, mode="asymmetric", narrow_range=True), (50, 20)),
}


def _input(shape, params: QuantizerParams, rng) -> torch.Tensor:
    """Values spread over the quantizer's range and beyond it on both sides."""
    low, high = np.min(params.input_low), np.max(params.input_high)
    span = high - low
    x = rng.uniform(low - 0.3 * span, high + 0.3 * span, size=shape)
    return torch.from_numpy(x.astype(np.float32))


def _assert_matches_reference(out: np.ndarray, ref: np.ndarray, params: QuantizerParams) -> None:
    """Equal to the numpy reference but for rare one-step flips at rounding ties (torch
    computes ``x * (1 / s)``, the reference ``x / s``)."""
    step = np.max(params.scale)
    diff = np.abs(out - ref)
    assert diff.max() <= step * 1.0001, diff.max() / step
    assert np.count_nonzero(diff > 1e-6 * step) <= max(1, out.size // 10_000)


@pytest.mark.parametrize("case", list(CASES))
def test_numerics_match_numpy_reference(case):
    spec, shape = CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    params = _make_params(spec, shape, rng)
    q = create_quantizer(spec, params, ndim=len(shape))
    x = _input(shape, params, rng)
    ref = params.fake_quantize(x.numpy())

    exported = q.export_params()
    assert exported.quant_min == params.quant_min and exported.quant_max == params.quant_max
    assert exported.channel_axis == params.channel_axis
    np.testing.assert_allclose(exported.scale, params.scale, rtol=1e-6)
    np.testing.assert_array_equal(exported.zero_point, params.zero_point)
    assert exported.scale.dtype == np.float32 and exported.zero_point.dtype == np.int32

    q.eval()
    out_eval = q(x).detach().numpy()
    _assert_matches_reference(out_eval, ref, params)

    q.train()
    out_train = q(x).detach().numpy()
    _assert_matches_reference(out_train, ref, params)
    # every output is on the grid and inside the range
    lo = params.input_low if not params.per_channel else params.input_low.reshape(_bshape(params, shape))
    hi = params.input_high if not params.per_channel else params.input_high.reshape(_bshape(params, shape))
    assert np.all(out_eval >= lo - 1e-6) and np.all(out_eval <= hi + 1e-6)


def _bshape(params: QuantizerParams, shape) -> list[int]:
    b = [1] * len(shape)
    b[params.channel_axis] = -1
    return b


def test_symmetric_train_and_eval_agree_bit_for_bit():
    rng = np.random.default_rng(0)
    spec, shape = CASES["sym-signed-narrow-pc0-8"]
    params = _make_params(spec, shape, rng)
    q = SymmetricQuantizer.from_params(spec, params, ndim=4)
    x = torch.randn(shape) * 3
    y_train = q.train()(x)
    y_eval = q.eval()(x)
    assert torch.equal(y_train, y_eval)
    # and equal to torch's op called directly with the exported grid
    p = q.export_params()
    direct = torch.fake_quantize_per_channel_affine(
        x, torch.from_numpy(p.scale), torch.from_numpy(p.zero_point), 0, p.quant_min, p.quant_max
    )
    assert torch.equal(y_eval, direct)


def test_asymmetric_export_rounds_zero_point_and_eval_matches_export():
    spec = QuantizerSpec(mode="asymmetric", per_channel=True, channel_axis=0)
    q = AsymmetricQuantizer(spec, scale_shape=(3, 1))
    with torch.no_grad():
        q.input_low.copy_(torch.tensor([[-0.1234], [0.5], [-3.0]]))  # 2nd: range above 0
        q.input_range.copy_(torch.tensor([[1.0], [2.0], [2.5]]))
    p = q.export_params()
    assert p.zero_point.dtype == np.int32
    assert np.all((p.zero_point >= p.quant_min) & (p.zero_point <= p.quant_max))
    step = np.array([1.0, 2.0, 2.5]) / 255
    np.testing.assert_allclose(p.scale, step, rtol=1e-6)
    np.testing.assert_array_equal(p.zero_point, [round(0.1234 / step[0]), 0, 255])
    x = torch.linspace(-4, 4, 3 * 1000).reshape(3, 1000)
    q.eval()
    _assert_matches_reference(q(x).detach().numpy(), p.fake_quantize(x.numpy()), p)
    # training keeps the real-valued zero point: differs from export, within the range shift
    q.train()
    assert not torch.equal(q(x), q.eval()(x))


def test_gradient_of_input_matches_torch_fake_quantize_mask():
    rng = np.random.default_rng(1)
    spec, shape = CASES["asym-pc0-8"]
    params = _make_params(spec, shape, rng)
    q = AsymmetricQuantizer.from_params(spec, params, ndim=4)
    x = _input(shape, params, rng)
    grads = []
    for train in (True, False):
        xg = x.clone().requires_grad_()
        q.train(train)(xg).sum().backward()
        grads.append(xg.grad)
    mismatch = (grads[0] != grads[1]).sum().item()
    assert mismatch <= 1  # only a tie at the clamp edge may differ
    assert 0 < grads[0].mean().item() < 1  # some inside, some clipped


# ------------------------------------------------------------------------------------------------
# Gradients against finite differences (double precision, points away from rounding boundaries)
# ------------------------------------------------------------------------------------------------


def _away_from_boundaries(x: torch.Tensor, step: torch.Tensor, zp: torch.Tensor, margin: float = 0.1):
    """Move points whose ``x / s + zp`` sits within ``margin`` of a rounding boundary."""
    u = x / step + zp
    frac = u - torch.floor(u)
    near = (frac - 0.5).abs() < margin
    return torch.where(near, x + 2.5 * margin * step, x)


def _ste_surrogate(x, step, zp, qmin, qmax, residual, below, above):
    """The function whose true derivative is the straight-through gradient: rounding replaced by
    ``u + residual`` with the residual and the clamp masks frozen at the base point."""
    u = x / step + zp
    q = torch.where(below, qmin + 0 * u, torch.where(above, qmax + 0 * u, u + residual))
    return (q - zp) * step


def _frozen(x, step, zp, qmin, qmax):
    with torch.no_grad():
        u = x / step + zp
        r = torch.round(x * (1.0 / step) + (zp - torch.round(zp))) + torch.round(zp)
        return r - u, r < qmin, r > qmax


def _check(fn_ours, fn_surrogate, inputs):
    """gradcheck: numerical Jacobian of the surrogate against the analytic one of ours."""

    def combined(*args):
        ours = fn_ours(*args)
        return ours - ours.detach() + fn_surrogate(*args).detach()

    assert torch.autograd.gradcheck(combined, inputs, eps=1e-7, atol=1e-6, rtol=1e-4)


def test_gradcheck_fake_quantize_ste_function():
    torch.manual_seed(0)
    qmin, qmax = 0, 15
    step = (torch.rand(3, 1, dtype=torch.float64) * 0.1 + 0.05).requires_grad_()
    zp = (torch.rand(3, 1, dtype=torch.float64) * 10 + 2).requires_grad_()  # real-valued zero point
    x = torch.randn(3, 20, dtype=torch.float64)
    x = _away_from_boundaries(x, step.detach(), zp.detach()).requires_grad_()
    residual, below, above = _frozen(x.detach(), step.detach(), zp.detach(), qmin, qmax)
    assert below.any() and above.any() and (~below & ~above).any()
    _check(
        lambda x, s, z: fake_quantize_ste(x, s, z, qmin, qmax),
        lambda x, s, z: _ste_surrogate(x, s, z, qmin, qmax, residual, below, above),
        (x, step, zp),
    )


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("signed", [True, False])
def test_gradcheck_symmetric_module(per_channel, signed):
    torch.manual_seed(2)
    spec = QuantizerSpec(num_bits=4, per_channel=per_channel, channel_axis=1, signed=signed)
    q = SymmetricQuantizer(spec, (1, 3, 1) if per_channel else None).double()
    qmin, qmax = q.quant_min, q.quant_max
    scale = (torch.rand(q.scale_shape, dtype=torch.float64) + 0.5).requires_grad_()
    x = torch.randn(2, 3, 8, dtype=torch.float64) * 1.2
    step0 = (scale.detach().abs() + 1e-16) / qmax
    x = _away_from_boundaries(x, step0, torch.zeros(())).requires_grad_()
    residual, below, above = _frozen(x.detach(), step0, torch.zeros_like(step0), qmin, qmax)
    assert (below | above).any() and (~below & ~above).any()

    def ours(x, scale):
        return torch.func.functional_call(q, {"scale": scale}, (x,))

    def surrogate(x, scale):
        step = (scale.abs() + 1e-16) / qmax
        return _ste_surrogate(x, step, torch.zeros_like(step), qmin, qmax, residual, below, above)

    _check(ours, surrogate, (x, scale))


@pytest.mark.parametrize("per_channel", [False, True])
def test_gradcheck_asymmetric_module(per_channel):
    torch.manual_seed(3)
    spec = QuantizerSpec(num_bits=4, mode="asymmetric", per_channel=per_channel, channel_axis=0)
    q = AsymmetricQuantizer(spec, (4, 1) if per_channel else None).double()
    qmin, qmax, levels = q.quant_min, q.quant_max, q.quant_max - q.quant_min + 1
    low = (-torch.rand(q.scale_shape, dtype=torch.float64) * 0.5).requires_grad_()
    rng = (torch.rand(q.scale_shape, dtype=torch.float64) + 1.0).requires_grad_()

    def grid(low, rng):
        step = (rng.abs() + 1e-16) / (levels - 1)
        return step, qmin - low / step

    x = torch.randn(4, 12, dtype=torch.float64)
    step0, zp0 = (t.detach() for t in grid(low, rng))
    x = _away_from_boundaries(x, step0, zp0).requires_grad_()
    residual, below, above = _frozen(x.detach(), step0, zp0, qmin, qmax)
    assert below.any() and above.any()

    def ours(x, low, rng):
        return torch.func.functional_call(q, {"input_low": low, "input_range": rng}, (x,))

    def surrogate(x, low, rng):
        step, zp = grid(low, rng)
        return _ste_surrogate(x, step, zp, qmin, qmax, residual, below, above)

    _check(ours, surrogate, (x, low, rng))


def test_training_moves_scale_towards_lower_error():
    torch.manual_seed(4)
    q = SymmetricQuantizer(QuantizerSpec(num_bits=4, signed=True))
    with torch.no_grad():
        q.scale.fill_(0.3)  # far too narrow for N(0, 1) data: clipping dominates
    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    x = torch.randn(4096)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = ((q(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    assert 1.5 < q.scale.item() < 4.0


# ------------------------------------------------------------------------------------------------
# Modes, state, printing, errors
# ------------------------------------------------------------------------------------------------


def test_export_mode_switches_to_torch_ops_even_in_training():
    q = SymmetricQuantizer(QuantizerSpec(signed=True)).train()
    x = torch.randn(10, requires_grad=True)
    assert "FakeQuantizeSTE" in type(q(x).grad_fn).__name__
    assert current_export_target() is None
    with export_mode("openvino"):
        assert current_export_target() == "openvino"
        assert "FakeQuantizePerTensor" in type(q(x).grad_fn).__name__
    assert current_export_target() is None
    assert "FakeQuantizePerTensor" in type(q.eval()(x).grad_fn).__name__
    with pytest.raises(ValueError, match="target"), export_mode("tflite"):
        pass


def test_onnx_mode_rewrites_narrow_grids_with_same_values():
    rng = np.random.default_rng(5)
    for spec, shape in (CASES["sym-signed-pt-4"], CASES["asym-pc1-4"], CASES["sym-signed-narrow-pc0-8"]):
        params = _make_params(spec, shape, rng)
        q = create_quantizer(spec, params, ndim=len(shape)).eval()
        x = _input(shape, params, rng)
        with export_mode("onnx"):
            y_onnx = q(x)
        assert torch.equal(y_onnx, q(x))
    wide = SymmetricQuantizer(QuantizerSpec(num_bits=16, signed=True)).eval()
    with export_mode("onnx"), pytest.raises(ExportError, match="8 bits"):
        wide(torch.randn(4))


def test_disabled_quantizer_is_identity():
    q = AsymmetricQuantizer(QuantizerSpec(mode="asymmetric"))
    x = torch.randn(5, 5) * 10
    assert not torch.equal(q(x), x)
    q.disable()
    assert q(x) is x and q.eval()(x) is x
    assert "disabled" in repr(q)
    q.enable()
    assert not torch.equal(q(x), x)


@pytest.mark.parametrize("case", ["sym-unsigned-pc-last-8", "asym-pc0-8", "sym-half-range-8"])
def test_state_dict_round_trip(case, tmp_path):
    spec, shape = CASES[case]
    rng = np.random.default_rng(6)
    params = _make_params(spec, shape, rng)
    src = create_quantizer(spec, params, ndim=len(shape))
    if spec.mode == "asymmetric":
        src.disable()
    loose = dataclasses.replace(spec, signed=None)  # sign comes from the state
    dst = create_quantizer(loose, scale_shape=src.scale_shape)
    torch.save(src.state_dict(), tmp_path / "q.pt")
    dst.load_state_dict(torch.load(tmp_path / "q.pt"))
    assert set(src.state_dict()) == set(dst.state_dict())
    assert dst.quant_min == src.quant_min and dst.quant_max == src.quant_max
    assert dst.is_enabled == src.is_enabled
    p_src, p_dst = src.export_params(), dst.export_params()
    np.testing.assert_array_equal(p_src.scale, p_dst.scale)
    np.testing.assert_array_equal(p_src.zero_point, p_dst.zero_point)
    x = _input(shape, params, rng)
    assert torch.equal(src(x), dst(x))
    assert repr(src) == repr(dst)


def test_copies_pickles_and_dtype_moves(tmp_path):
    spec, shape = CASES["asym-pc0-8"]
    params = _make_params(spec, shape, np.random.default_rng(7))
    q = AsymmetricQuantizer.from_params(spec, params, ndim=4).eval()
    x = torch.randn(shape)
    torch.save(q, tmp_path / "q.pt")
    loaded = torch.load(tmp_path / "q.pt", weights_only=False)
    for other in (copy.deepcopy(q), loaded):
        assert torch.equal(other(x), q(x)) and repr(other) == repr(q)
    q64 = copy.deepcopy(q).double()
    assert q64.input_low.dtype == torch.float64 and q64.levels.dtype == torch.int64
    assert q64.quant_min == q.quant_min
    torch.testing.assert_close(q64(x.double()).float(), q(x), atol=float(params.scale.max()) * 1.001, rtol=0)


def test_state_dict_keys_and_buffers():
    q = SymmetricQuantizer(QuantizerSpec(per_channel=True, channel_axis=0), (8, 1, 1, 1))
    sd = q.state_dict()
    assert sd["scale"].shape == (8, 1, 1, 1)
    for key in ("num_bits", "signed", "narrow_range", "levels", "enabled", "channel_axis"):
        assert key in sd
    assert int(sd["levels"]) == 256 and int(sd["channel_axis"]) == 0
    a = AsymmetricQuantizer(QuantizerSpec(mode="asymmetric"))
    assert {"input_low", "input_range"} <= set(a.state_dict())
    assert [n for n, _ in a.named_parameters()] == ["input_low", "input_range"]


def test_extra_repr_is_readable():
    spec = QuantizerSpec(per_channel=True, channel_axis=0, signed=True, narrow_range=True)
    q = SymmetricQuantizer(spec, (4, 1, 1, 1))
    text = repr(q)
    for part in (
        "8-bit",
        "symmetric",
        "signed",
        "per-channel(axis=0, channels=4)",
        "narrow_range",
        "q=[-127, 127]",
    ):
        assert part in text, text
    a = AsymmetricQuantizer(QuantizerSpec(num_bits=4, mode="asymmetric"))
    with torch.no_grad():
        a.input_low.fill_(-1.0)
        a.input_range.fill_(3.0)
    text = repr(a)
    assert "4-bit, asymmetric, unsigned, per-tensor, q=[0, 15], range=[-1, 2]" in text, text


def test_constructor_and_parameter_errors():
    with pytest.raises(QuantizationError, match="ndim"):
        SymmetricQuantizer(QuantizerSpec(per_channel=True, channel_axis=0))
    with pytest.raises(QuantizationError, match="asymmetric"):
        AsymmetricQuantizer(QuantizerSpec())
    with pytest.raises(QuantizationError, match="scale_shape"):
        SymmetricQuantizer(QuantizerSpec(per_channel=True, channel_axis=0), (4, 2))
    q = SymmetricQuantizer(QuantizerSpec(per_channel=True, channel_axis=0, signed=True), (4, 1))
    with pytest.raises(QuantizationError, match="channels"):
        q.set_params(QuantizerParams(np.ones(3, np.float32), np.zeros(3, np.int32), -128, 127, 0))
    with pytest.raises(QuantizationError, match="unsigned"):  # the spec fixes the sign
        q.set_params(QuantizerParams(np.ones(4, np.float32), np.zeros(4, np.int32), 0, 255, 0))
    with pytest.raises(QuantizationError, match="grid"):  # 4-bit parameters for an 8-bit quantizer
        q.set_params(QuantizerParams(np.ones(4, np.float32), np.zeros(4, np.int32), -8, 7, 0))
    with pytest.raises(QuantizationError, match="shape"):
        q(torch.randn(5, 3))
    a = AsymmetricQuantizer(QuantizerSpec(mode="asymmetric"))
    with pytest.raises(QuantizationError, match="levels"):
        a.set_params(QuantizerParams(np.array(0.1), np.array(3), 0, 15))


def test_symmetric_accepts_equivalent_shifted_grid_and_scalar_broadcast():
    # u8 with zero point 128 is the signed symmetric grid in disguise
    q = SymmetricQuantizer(QuantizerSpec(per_channel=True, channel_axis=1), (1, 3))
    q.set_params(QuantizerParams(np.array(0.02, np.float32), np.array(128), 0, 255))
    p = q.export_params()
    assert (p.quant_min, p.quant_max) == (-128, 127)
    np.testing.assert_allclose(p.scale, [0.02] * 3, rtol=1e-6)


def test_weight_cache_reuses_a_fake_quantized_weight_until_it_or_the_scale_changes():
    rng = np.random.default_rng(7)
    spec, shape = CASES["sym-signed-narrow-pc0-8"]
    q = create_quantizer(spec, _make_params(spec, shape, rng), ndim=len(shape)).eval()
    w = torch.nn.Parameter(torch.from_numpy(rng.normal(size=shape).astype(np.float32)))
    act = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    expected = q(w).detach()
    with torch.no_grad(), cached_weight_quantization():
        first = q(w)
        assert q(w) is first and torch.equal(first, expected)  # computed once
        assert q(act) is not q(act)  # activations (not parameters) are never cached
        w.mul_(0.5)  # an in-place change of the weight bumps its version
        assert torch.equal(q(w), q.eval()(w.detach().clone())) and q(w) is not first
        halved = q(w)
        q.scale.mul_(2.0)  # so does a new scale
        assert q(w) is not halved
    assert q(w) is not q(w)  # outside the block nothing is kept
