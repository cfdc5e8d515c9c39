"""Quantizer parameters on the integer grid, the form every backend's op takes.

``x_q = clamp(round(x / scale) + zero_point, quant_min, quant_max)``, ``x' = (x_q - zero_point) * scale``.
This is torch's ``fake_quantize_per_*_affine``, ONNX's QuantizeLinear/DequantizeLinear, and (with
``input_low = (quant_min - zero_point) * scale``, ``input_high = (quant_max - zero_point) * scale``,
``levels = quant_max - quant_min + 1``) OpenVINO's FakeQuantize.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuantizerParams:
    """Scale and zero point (scalars, or 1-D arrays along ``channel_axis`` when per-channel)."""

    scale: np.ndarray
    zero_point: np.ndarray
    quant_min: int
    quant_max: int
    channel_axis: int | None = None

    @property
    def levels(self) -> int:
        return self.quant_max - self.quant_min + 1

    @property
    def per_channel(self) -> bool:
        return self.channel_axis is not None

    @property
    def input_low(self) -> np.ndarray:
        return (self.quant_min - self.zero_point) * self.scale

    @property
    def input_high(self) -> np.ndarray:
        return (self.quant_max - self.zero_point) * self.scale

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """Reference numpy fake quantization (used by tests and the ONNX/OpenVINO backends)."""
        scale, zp = self.scale, self.zero_point
        if self.per_channel:
            shape = [1] * x.ndim
            shape[self.channel_axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        q = np.clip(np.round(x / scale) + zp, self.quant_min, self.quant_max)
        return ((q - zp) * scale).astype(x.dtype)
