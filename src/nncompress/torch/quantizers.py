"""Fake quantizer modules for torch: symmetric and asymmetric, per-tensor or per-channel.

Every quantizer computes ``x' = (clamp(round(x / s) + zp, quant_min, quant_max) - zp) * s`` on an
integer grid (see :class:`~nncompress.quantization.params.QuantizerParams`), with trainable
parameters in the NNCF 2.x form:

- :class:`SymmetricQuantizer`: ``scale`` is the upper end of the float range (NNCF's convention,
  not the step): ``s = (|scale| + eps) / quant_max``, ``zp = 0``. The grid is signed
  (``[-2^(b-1), 2^(b-1) - 1]``) or unsigned (``[0, 2^b - 1]``), fixed by the spec or the
  parameters it is initialized from; ``narrow_range`` drops one level.
- :class:`AsymmetricQuantizer`: ``input_low`` and ``input_range`` (kept positive as
  ``|input_range| + eps``): ``s = range / (levels - 1)``, ``zp = quant_min - input_low / s``.
  During training the zero point is real-valued; eval mode and export round it to an integer
  in ``[quant_min, quant_max]`` (:meth:`AsymmetricQuantizer.export_params`), so eval-mode
  outputs equal the exported model's.

Per-channel parameters are stored in the shape that broadcasts against the quantized tensor
(``(C, 1, 1, 1)`` for a conv weight quantized along axis 0; ``(1, C, 1, 1)`` for NCHW
activations along axis 1); per-tensor ones have shape ``(1,)``.
When filter pruning removes channels physically, :meth:`BaseQuantizer.prune_channels` slices
the per-channel parameters to the kept channels.

Three forward paths, chosen per call:

- training (``module.training`` and not exporting): our own autograd function, a
  straight-through estimator on the rounding with LSQ-style gradients for the input (pass-through
  inside the range, zero outside) and for the scale / ``input_low`` / ``input_range``;
- eval, tracing (``torch.jit.is_tracing()``, which ``openvino.convert_model`` uses), ONNX export
  (``torch.onnx.is_in_onnx_export()``) or inside :func:`export_mode`: torch's own
  ``fake_quantize_per_tensor_affine`` / ``fake_quantize_per_channel_affine`` on the integer-grid
  parameters of :meth:`export_params`. OpenVINO converts them to ``FakeQuantize``; the ONNX
  exporter (TorchScript, opset >= 13) to ``QuantizeLinear``/``DequantizeLinear``;
- disabled (``enabled`` buffer false): the identity.

The ONNX exporter accepts only the integer ranges ``(0, 255)``, ``(-128, 127)`` and ``(0, 127)``.
A narrower grid (4 bits, narrow range, half range) is exported as a clamp to the grid's float
range followed by QuantizeLinear/DequantizeLinear on the enclosing 8-bit range, which gives the
same values; grids wider than 8 bits cannot be exported to ONNX (``ExportError``).
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from nncompress.errors import ExportError, QuantizationError
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import QuantizerSpec

__all__ = [
    "AsymmetricQuantizer",
    "BaseQuantizer",
    "EXPORT_TARGETS",
    "SymmetricQuantizer",
    "create_quantizer",
    "current_export_target",
    "export_mode",
    "fake_quantize_ste",
]

EPS = 1e-16
EXPORT_TARGETS = ("onnx", "openvino", "torch")
# integer ranges the TorchScript ONNX exporter turns into QuantizeLinear/DequantizeLinear
_ONNX_RANGES = ((0, 255), (-128, 127), (0, 127))

_export_target: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nncompress_quantizer_export_target", default=None
)


@contextlib.contextmanager
def export_mode(target: str = "torch") -> Iterator[None]:
    """Make every quantizer emit torch's fake-quantize ops on its export parameters.

    ``target`` is ``"onnx"`` (grids the ONNX exporter rejects are rewritten as a clamp plus an
    8-bit op), ``"openvino"`` or ``"torch"`` (the torch ops as they are). Inside the context a
    quantizer behaves as in eval mode even if its module is in training mode.
    """
    if target not in EXPORT_TARGETS:
        raise ValueError(f"export_mode: target must be one of {EXPORT_TARGETS}, got {target!r}")
    token = _export_target.set(target)
    try:
        yield
    finally:
        _export_target.reset(token)


def current_export_target() -> str | None:
    """The active export target: the :func:`export_mode` one, ``"onnx"`` during
    ``torch.onnx.export``, ``"torch"`` while tracing; None when not exporting."""
    target = _export_target.get()
    if target is not None:
        return target
    if torch.onnx.is_in_onnx_export():
        return "onnx"
    if torch.jit.is_tracing():
        return "torch"
    return None


# ---------------------------------------------------------------------------------------------
# The training-time function
# ---------------------------------------------------------------------------------------------


class _FakeQuantizeSTE(torch.autograd.Function):
    """``(clamp(round(x / s + zp), qmin, qmax) - zp) * s`` with a straight-through rounding.

    ``scale`` and ``zero_point`` broadcast against ``x``; ``zero_point`` may be real-valued.
    Gradients (``u = x / s + zp``, ``q = round(u)``):

    ==========  =============  ==================  ===================
    where       d/dx           d/ds                d/dzp
    ==========  =============  ==================  ===================
    q < qmin    0              qmin - zp           -s
    inside      1              q - u               0
    q > qmax    0              qmax - zp           -s
    ==========  =============  ==================  ===================

    With an integer zero point the forward equals torch's ``fake_quantize_per_*_affine``
    bit for bit (it rounds ``x * (1 / s)`` and adds the integer zero point the same way).
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, quant_min: int, quant_max: int):  # type: ignore[override]
        inv_scale = 1.0 / scale
        zp_int = torch.round(zero_point)
        zp_frac = zero_point - zp_int
        # adding a zero fraction is exact: integer zero points round exactly as torch's op does
        scaled = x * inv_scale + zp_frac
        rounded = torch.round(scaled)
        q_unclamped = rounded + zp_int
        below = q_unclamped < quant_min
        above = q_unclamped > quant_max
        q = q_unclamped.clamp(quant_min, quant_max)
        out = (q - zero_point) * scale
        # round(u) - u, the rounding error in steps (u = x / s + zp)
        residual = rounded - scaled
        ctx.save_for_backward(below, above, residual, scale, zero_point)
        ctx.quant_range = (quant_min, quant_max)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        below, above, residual, scale, zero_point = ctx.saved_tensors
        quant_min, quant_max = ctx.quant_range
        outside = below | above
        grad_x = grad_s = grad_zp = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out.masked_fill(outside, 0.0)
        if ctx.needs_input_grad[1]:
            d_s = torch.where(
                below, quant_min - zero_point, torch.where(above, quant_max - zero_point, residual)
            )
            grad_s = (grad_out * d_s).sum_to_size(scale.shape)
        if ctx.needs_input_grad[2]:
            d_zp = torch.where(outside, -scale, torch.zeros_like(scale))
            grad_zp = (grad_out * d_zp).sum_to_size(zero_point.shape)
        return grad_x, grad_s, grad_zp, None, None


def fake_quantize_ste(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int, quant_max: int
) -> torch.Tensor:
    """Differentiable fake quantization (inputs, scale and real-valued zero point; vectorized)."""
    return _FakeQuantizeSTE.apply(x, scale, zero_point, quant_min, quant_max)


# ---------------------------------------------------------------------------------------------
# Integer grids
# ---------------------------------------------------------------------------------------------


def _grid(levels: int, signed: bool) -> tuple[int, int]:
    """``(quant_min, quant_max)`` of a grid with ``levels`` levels: signed ones are centred on 0
    (``-128..127``, narrow ``-127..127``), unsigned ones start at 0."""
    if signed:
        quant_max = (levels + 1) // 2 - 1
        return quant_max - levels + 1, quant_max
    return 0, levels - 1


def _levels(num_bits: int, narrow_range: bool, half_range: bool) -> int:
    bits = num_bits - 1 if half_range else num_bits
    return 2**bits - (1 if narrow_range else 0)


def _as_array(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


_WEIGHT_CACHE: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "nncompress_weight_cache", default=None
)


@contextlib.contextmanager
def cached_weight_quantization() -> Iterator[None]:
    """Within this block, a quantizer in eval mode fake-quantizes each weight (an ``nn.Parameter``
    input) once and reuses the result while the weight and the quantizer's parameters keep their
    versions: a statistics pass runs the same weights item after item (EfficientNet-Lite0: 5000
    per-channel fake-quantizations of 50 weights over 100 items). The copies go when it ends."""
    token = _WEIGHT_CACHE.set({})
    try:
        yield
    finally:
        _WEIGHT_CACHE.reset(token)


class BaseQuantizer(nn.Module):
    """Shared machinery: the integer grid, buffers, mode switch, export parameters.

    Buffers (saved in the state dict): ``num_bits``, ``signed``, ``narrow_range``,
    ``half_range``, ``levels``, ``enabled``, ``channel_axis`` (-1 when per-tensor).
    """

    mode: str = ""
    _default_signed: bool = True

    def __init__(
        self,
        spec: QuantizerSpec,
        scale_shape: Sequence[int] | None = None,
        *,
        params: QuantizerParams | None = None,
        ndim: int | None = None,
    ):
        super().__init__()
        if spec.mode != self.mode:
            raise QuantizationError(
                f"{type(self).__name__} needs a {self.mode} QuantizerSpec, got {spec.describe()}"
            )
        self.spec = spec
        shape = self._resolve_shape(spec, scale_shape, params, ndim)
        axis = -1
        if spec.per_channel:
            axis = spec.channel_axis % len(shape)  # type: ignore[operator]
        signed = spec.signed
        if signed is None:
            signed = self._default_signed if params is None else self._params_signed(params)
        levels = _levels(spec.num_bits, spec.narrow_range, spec.half_range)
        self.register_buffer("num_bits", torch.tensor(spec.num_bits, dtype=torch.int64))
        self.register_buffer("signed", torch.tensor(bool(signed)))
        self.register_buffer("narrow_range", torch.tensor(bool(spec.narrow_range)))
        self.register_buffer("half_range", torch.tensor(bool(spec.half_range)))
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.int64))
        self.register_buffer("enabled", torch.tensor(True))
        self.register_buffer("channel_axis", torch.tensor(axis, dtype=torch.int64))
        self._scale_shape = tuple(int(d) for d in shape)
        self._create_parameters(self._scale_shape)
        self._sync_from_buffers()
        if params is not None:
            self.set_params(params)

    # -- construction helpers -----------------------------------------------------------------

    @classmethod
    def from_params(
        cls,
        spec: QuantizerSpec,
        params: QuantizerParams,
        *,
        ndim: int | None = None,
        scale_shape: Sequence[int] | None = None,
    ) -> BaseQuantizer:
        """A quantizer initialized from integer-grid parameters (per-channel needs ``ndim``,
        the rank of the quantized tensor, or an explicit ``scale_shape``)."""
        return cls(spec, scale_shape, params=params, ndim=ndim)

    @staticmethod
    def _resolve_shape(
        spec: QuantizerSpec,
        scale_shape: Sequence[int] | None,
        params: QuantizerParams | None,
        ndim: int | None,
    ) -> tuple[int, ...]:
        if scale_shape is not None:
            shape = tuple(int(d) for d in scale_shape)
            if not spec.per_channel:
                if int(np.prod(shape)) != 1:
                    raise QuantizationError(
                        f"per-tensor quantizer: scale_shape {shape} has more than one element"
                    )
                return shape or (1,)
            axis = spec.channel_axis % len(shape) if shape else None  # type: ignore[operator]
            if axis is None or any(d != 1 for i, d in enumerate(shape) if i != axis):
                raise QuantizationError(
                    f"per-channel quantizer (axis={spec.channel_axis}): scale_shape {shape} must be 1 "
                    "everywhere but the channel axis"
                )
            return shape
        if not spec.per_channel:
            return (1,)
        if params is None or ndim is None:
            raise QuantizationError(
                f"per-channel quantizer ({spec.describe()}): give scale_shape, or params and ndim "
                "(the rank of the quantized tensor)"
            )
        channels = int(np.asarray(params.scale).size)
        axis = spec.channel_axis % ndim  # type: ignore[operator]
        shape = [1] * ndim
        shape[axis] = channels
        return tuple(shape)

    # -- state ----------------------------------------------------------------------------------

    def _sync_from_buffers(self) -> None:
        """Refresh the Python-side copies of the buffers (after __init__ and state-dict loads)."""
        if self.levels.is_meta:  # no values to read (moved to the meta device)
            return
        self._levels = int(self.levels)
        self._signed = bool(self.signed)
        self._enabled = bool(self.enabled)
        self._axis = int(self.channel_axis)
        self._qmin, self._qmax = _grid(self._levels, self._signed)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._sync_from_buffers()

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._sync_from_buffers()
        return out

    @property
    def per_channel(self) -> bool:
        return self._axis >= 0

    @property
    def quant_min(self) -> int:
        return self._qmin

    @property
    def quant_max(self) -> int:
        return self._qmax

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def scale_shape(self) -> tuple[int, ...]:
        return self._scale_shape

    def enable(self, flag: bool = True) -> BaseQuantizer:
        self.enabled.fill_(bool(flag))
        self._enabled = bool(flag)
        return self

    def disable(self) -> BaseQuantizer:
        return self.enable(False)

    def _set_signed(self, signed: bool) -> None:
        if self.spec.signed is not None and bool(self.spec.signed) != bool(signed):
            raise QuantizationError(
                f"{type(self).__name__} ({self.spec.describe()}): parameters on a "
                f"{'signed' if signed else 'unsigned'} grid do not match the spec"
            )
        self.signed.fill_(bool(signed))
        self._sync_from_buffers()

    # -- subclass hooks -------------------------------------------------------------------------

    def _create_parameters(self, shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    def _params_signed(self, params: QuantizerParams) -> bool:
        raise NotImplementedError

    def _step_and_zero_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time step and (real-valued) zero point, differentiable, in parameter shape."""
        raise NotImplementedError

    def _export_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Export step (float) and integer zero point (float tensor holding integers)."""
        raise NotImplementedError

    def set_params(self, params: QuantizerParams) -> None:
        raise NotImplementedError

    def prune_channels(self, keep: Sequence[int] | np.ndarray | torch.Tensor) -> BaseQuantizer:
        """Keep only the channels ``keep`` (distinct indices along ``channel_axis``, ascending)
        of a per-channel quantizer, in place: every parameter is sliced along the channel axis,
        so the quantizer fits its tensor once filter pruning has removed the other channels, and
        quantizes the kept ones exactly as before. A per-tensor quantizer is left as it is.
        Returns ``self``."""
        if not self.per_channel:
            return self
        idx = torch.as_tensor(np.asarray(keep, dtype=np.int64).reshape(-1))
        channels = self._scale_shape[self._axis]
        if (
            idx.numel() == 0
            or int(idx.min()) < 0
            or int(idx.max()) >= channels
            or len(set(idx.tolist())) != idx.numel()
        ):
            raise QuantizationError(
                f"{type(self).__name__}.prune_channels: kept channels must be distinct indices in "
                f"[0, {channels}), got {idx.tolist()}"
            )
        for name, param in list(self._parameters.items()):
            if param is None:
                continue
            new = param.detach().index_select(self._axis, idx.to(param.device)).clone()
            self._parameters[name] = nn.Parameter(new, requires_grad=param.requires_grad)
        shape = list(self._scale_shape)
        shape[self._axis] = int(idx.numel())
        self._scale_shape = tuple(shape)
        return self

    # -- parameters out -------------------------------------------------------------------------

    def _broadcast_values(self, params: QuantizerParams, name: str, values: np.ndarray) -> torch.Tensor:
        """``values`` (scalar or per-channel 1-D) reshaped to this quantizer's parameter shape."""
        values = np.asarray(values, dtype=np.float64)
        channels = int(np.prod(self._scale_shape))
        if values.size == 1:
            values = np.full(channels, values.reshape(-1)[0])
        if values.size != channels:
            raise QuantizationError(
                f"{type(self).__name__}: {name} has {values.size} values, the quantizer has {channels} channels"
            )
        if params.per_channel and self.per_channel and values.size > 1:
            ndim = len(self._scale_shape)
            if params.channel_axis % ndim != self._axis:  # type: ignore[operator]
                raise QuantizationError(
                    f"{type(self).__name__}: parameters are per-channel along axis {params.channel_axis}, "
                    f"the quantizer along axis {self._axis}"
                )
        ref = next(self.parameters())
        return torch.as_tensor(values.reshape(self._scale_shape), dtype=ref.dtype, device=ref.device)

    def export_params(self) -> QuantizerParams:
        """The exact integer-grid parameters used in eval mode and at export (numpy, float32
        scale, int32 zero point; scalars when per-tensor, 1-D along ``channel_axis`` when
        per-channel)."""
        with torch.no_grad():
            step, zp = self._export_grid()
        step_np = step.detach().to(torch.float32).cpu().numpy().reshape(-1)
        zp_np = zp.detach().cpu().numpy().reshape(-1).astype(np.int32)
        if not self.per_channel:
            step_np, zp_np = step_np.reshape(()), zp_np.reshape(())
        return QuantizerParams(
            scale=step_np,
            zero_point=zp_np,
            quant_min=self._qmin,
            quant_max=self._qmax,
            channel_axis=self._axis if self.per_channel else None,
        )

    def params(self) -> QuantizerParams:
        """Integer-grid parameters (numpy), for export and statistics: the same as
        :meth:`export_params` (an asymmetric zero point is rounded to an integer)."""
        return self.export_params()

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._enabled:
            return x
        target = current_export_target()
        if self.training and target is None:
            return self._forward_train(x)
        cache = _WEIGHT_CACHE.get()
        if cache is not None and target is None and isinstance(x, nn.Parameter):
            key = (
                id(self),
                x.data_ptr(),
                x._version,
                *(t._version for t in (*self.parameters(), *self.buffers())),
            )
            hit = cache.get(key)
            if hit is None:
                hit = cache[key] = self._forward_export(x, None)
            return hit
        return self._forward_export(x, target)

    def _check_input(self, x: torch.Tensor) -> None:
        if not self.per_channel:
            return
        if x.dim() != len(self._scale_shape) or x.shape[self._axis] != self._scale_shape[self._axis]:
            raise QuantizationError(
                f"{type(self).__name__}: per-channel parameters of shape {self._scale_shape} "
                f"(axis {self._axis}) do not fit an input of shape {tuple(x.shape)}"
            )

    def _forward_train(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        step, zp = self._step_and_zero_point()
        return fake_quantize_ste(x, step.to(x.dtype), zp.to(x.dtype), self._qmin, self._qmax)

    def _forward_export(self, x: torch.Tensor, target: str | None) -> torch.Tensor:
        self._check_input(x)
        step, zp = self._export_grid()
        # torch's ops give no gradient for scale/zero point and take a float32 scale (per-channel:
        # only float32), whatever the input dtype; export_params() is float32 as well
        step, zp = step.detach().float(), zp.detach()
        if torch.jit.is_tracing():
            # cut the link to the parameters: the exported graph gets the grid as constants
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                step = torch.from_numpy(step.cpu().numpy().copy()).to(x.device)
                zp = torch.from_numpy(zp.cpu().numpy().copy()).to(x.device)
        qmin, qmax = self._qmin, self._qmax
        if target == "onnx" and (qmin, qmax) not in _ONNX_RANGES:
            if qmin >= 0 and qmax <= 255:
                enclosing = (0, 255)
            elif qmin >= -128 and qmax <= 127:
                enclosing = (-128, 127)
            else:
                raise ExportError(
                    f"{type(self).__name__} ({self.extra_repr()}): integer range [{qmin}, {qmax}] does not fit "
                    "8 bits; ONNX QuantizeLinear export supports at most 8 bits"
                )
            # clamp to the grid's float range, then quantize on the enclosing 8-bit grid: same values
            low = (qmin - zp) * step
            high = (qmax - zp) * step
            x = torch.minimum(torch.maximum(x, low.to(x.dtype)), high.to(x.dtype))
            qmin, qmax = enclosing
        zp_int = zp.to(torch.int32)
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(
                x, step.reshape(-1), zp_int.reshape(-1), self._axis, qmin, qmax
            )
        return torch.fake_quantize_per_tensor_affine(x, step.reshape(()), zp_int.reshape(()), qmin, qmax)

    # -- printing -------------------------------------------------------------------------------

    def _float_range(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.export_params()
        return np.asarray(p.input_low), np.asarray(p.input_high)

    def extra_repr(self) -> str:
        parts = [f"{int(self.num_bits)}-bit", self.mode, "signed" if self._signed else "unsigned"]
        if self.per_channel:
            parts.append(f"per-channel(axis={self._axis}, channels={self._scale_shape[self._axis]})")
        else:
            parts.append("per-tensor")
        if bool(self.narrow_range):
            parts.append("narrow_range")
        if bool(self.half_range):
            parts.append("half_range")
        parts.append(f"q=[{self._qmin}, {self._qmax}]")
        try:
            low, high = self._float_range()
            if self.per_channel:
                parts.append(f"input_low in [{low.min():.4g}, {low.max():.4g}]")
                parts.append(f"input_high in [{high.min():.4g}, {high.max():.4g}]")
            else:
                parts.append(f"range=[{float(low):.4g}, {float(high):.4g}]")
        except Exception:  # pragma: no cover - meta tensors and the like
            pass
        if not self._enabled:
            parts.append("disabled")
        return ", ".join(parts)


class SymmetricQuantizer(BaseQuantizer):
    """Symmetric fake quantizer with a trainable range ``scale`` (NNCF convention: the upper end
    of the float range; the step is ``(|scale| + eps) / quant_max``, the zero point 0)."""

    mode = "symmetric"
    _default_signed = True

    def _create_parameters(self, shape: tuple[int, ...]) -> None:
        self.scale = nn.Parameter(torch.ones(shape))

    def _params_signed(self, params: QuantizerParams) -> bool:
        zp = np.asarray(params.zero_point)
        return bool(np.all(params.quant_min - zp < 0))

    def _step_and_zero_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        step = (self.scale.abs() + EPS) / self._qmax
        return step, torch.zeros_like(step)

    def _export_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._step_and_zero_point()

    def set_params(self, params: QuantizerParams) -> None:
        """Take the range from integer-grid parameters whose grid, relative to the zero point,
        is this quantizer's symmetric one (``quant_min - zp``, ``quant_max - zp`` equal to the
        signed or unsigned grid of the same level count; the signedness is adopted)."""
        zp = np.asarray(params.zero_point).reshape(-1)
        low_int = params.quant_min - zp
        high_int = params.quant_max - zp
        if low_int.size > 1 and (np.any(low_int != low_int[0]) or np.any(high_int != high_int[0])):
            raise QuantizationError(
                "SymmetricQuantizer: per-channel zero points differ; symmetric parameters need one grid"
            )
        grid = (int(low_int[0]), int(high_int[0]))
        candidates = {True: _grid(self._levels, True), False: _grid(self._levels, False)}
        matches = [signed for signed, g in candidates.items() if g == grid]
        if not matches:
            raise QuantizationError(
                f"SymmetricQuantizer ({self.spec.describe()}): parameters on grid "
                f"[{params.quant_min}, {params.quant_max}] with zero point {zp[0]} do not match its "
                f"{self._levels}-level grid (signed {candidates[True]}, unsigned {candidates[False]})"
            )
        self._set_signed(matches[0])
        scale_range = _as_array(params.scale) * self._qmax
        with torch.no_grad():
            self.scale.copy_(self._broadcast_values(params, "scale", scale_range))


class AsymmetricQuantizer(BaseQuantizer):
    """Asymmetric fake quantizer with trainable ``input_low`` and ``input_range`` (kept positive
    as ``|input_range| + eps``). Training uses the real-valued zero point
    ``quant_min - input_low / step``; eval and export round it (and clamp it into the grid, so
    the exported range always contains 0)."""

    mode = "asymmetric"
    _default_signed = False

    def _create_parameters(self, shape: tuple[int, ...]) -> None:
        self.input_low = nn.Parameter(torch.zeros(shape))
        self.input_range = nn.Parameter(torch.ones(shape))

    def _params_signed(self, params: QuantizerParams) -> bool:
        return params.quant_min < 0

    def _step_and_zero_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        step = (self.input_range.abs() + EPS) / (self._levels - 1)
        zero_point = self._qmin - self.input_low / step
        return step, zero_point

    def _export_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        step, zero_point = self._step_and_zero_point()
        zero_point = torch.round(zero_point).clamp(self._qmin, self._qmax)
        return step, zero_point

    def set_params(self, params: QuantizerParams) -> None:
        """Take ``input_low``/``input_range`` from integer-grid parameters with this quantizer's
        level count (any offset of the grid; the signedness of the export grid is adopted when
        the spec leaves it open)."""
        if params.levels != self._levels:
            raise QuantizationError(
                f"AsymmetricQuantizer ({self.spec.describe()}): parameters have {params.levels} levels "
                f"(grid [{params.quant_min}, {params.quant_max}]), the quantizer {self._levels}"
            )
        signed = params.quant_min < 0
        if self.spec.signed is None or bool(self.spec.signed) == signed:
            self._set_signed(signed)
        scale = _as_array(params.scale)
        low = (params.quant_min - _as_array(params.zero_point)) * scale
        rng = (params.quant_max - params.quant_min) * scale
        with torch.no_grad():
            self.input_low.copy_(self._broadcast_values(params, "input_low", low))
            self.input_range.copy_(self._broadcast_values(params, "input_range", rng))


_BY_MODE = {"symmetric": SymmetricQuantizer, "asymmetric": AsymmetricQuantizer}


def create_quantizer(
    spec: QuantizerSpec,
    params: QuantizerParams | None = None,
    *,
    ndim: int | None = None,
    scale_shape: Sequence[int] | None = None,
) -> BaseQuantizer:
    """The quantizer module for ``spec.mode``, optionally initialized from ``params``."""
    return _BY_MODE[spec.mode](spec, scale_shape, params=params, ndim=ndim)
