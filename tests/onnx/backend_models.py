"""Small torch models and helpers shared by the ONNX and OpenVINO backend tests.

Every model has random weights (fixed seed), runs in milliseconds, and is exported with
``export_onnx`` (TorchScript exporter, opset 17 by default, dynamic batch) or converted with
``to_openvino``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ConvNet(nn.Module):
    """conv-bn-relu, conv-bn + residual add + relu, depthwise conv, global pool, linear."""

    input_shape = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        z = F.relu(self.bn2(self.conv2(y)) + y)
        z = F.relu(self.pw(self.dw(z)))
        z = F.adaptive_avg_pool2d(z, 1).flatten(1)
        return self.fc(z)


class MLP(nn.Module):
    """linear-relu-linear-relu-linear on [batch, features] (Gemm in ONNX)."""

    input_shape = (32,)

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 8)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class SeqMLP(nn.Module):
    """Linear layers on [batch, tokens, features] (MatMul + bias Add in ONNX)."""

    input_shape = (6, 16)

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class ConcatNet(nn.Module):
    """Two conv branches concatenated, then a conv: the concat inputs share one scale."""

    input_shape = (3, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 6, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), torch.sigmoid(self.b(x)) * 3.0], dim=1)
        return self.head(F.max_pool2d(self.up(y), 2))


class TinyBlock(nn.Module):
    """LayerNorm feeding two linears (SmoothQuant's case), an activation outlier channel."""

    input_shape = (5, 16)

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.q = nn.Linear(16, 16)
        self.k = nn.Linear(16, 16)
        self.out = nn.Linear(16, 8)
        with torch.no_grad():
            self.ln.weight[3] = 12.0  # one large channel: what SmoothQuant moves into the weights

    def forward(self, x):
        h = self.ln(x)
        return self.out(F.relu(self.q(h)) + self.k(h))


class SensitiveMLP(nn.Module):
    """fc1's channel 0 is 1000x larger (fc2 undoes it): fc2's per-tensor input quantizer rounds
    every other channel to zero, so fc2 is the op to keep in float."""

    input_shape = (16,)

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 10)
        with torch.no_grad():
            self.fc2.bias.zero_()
            self.fc3.bias.zero_()
            self.fc1.weight[0] *= 1000.0
            self.fc1.bias[0] = 1000.0
            self.fc2.weight[:, 0] /= 1000.0

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class SmallMapConvs(nn.Module):
    """Two 3x3 "same" convolutions on a 4x4 map: a border tap reads padding at a quarter of the
    output positions, so summing all taps overstates how an input shift moves the output mean."""

    input_shape = (4, 4, 4)

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        with torch.no_grad():  # biases away from 0: every correction passes the threshold
            self.c1.bias.add_(3.0)
            self.c2.bias.add_(3.0)

    def forward(self, x):
        return self.c2(self.c1(x))


def build(cls: type[nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = cls().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def example(model: nn.Module, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *model.input_shape, generator=g)


def calibration_data(model: nn.Module, n: int = 8, batch: int = 2, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *model.input_shape)).astype(np.float32) for _ in range(n)]


def export_onnx(model: nn.Module, opset: int = 17, dynamic_batch: bool = True):
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example(model),),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None,
        )
    return onnx.load_from_string(buf.getvalue())


def to_openvino(model: nn.Module):
    import openvino as ov

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ov.convert_model(model, example_input=example(model))


def sqnr(reference: np.ndarray, value: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    reference, value = np.asarray(reference, np.float64), np.asarray(value, np.float64)
    noise = np.sum((reference - value) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference**2) / noise))


def spy_workers(monkeypatch, adapter_module) -> list[int]:
    """The ``workers`` of every statistics pass of ``adapter_module`` (its ``run_in_order``)."""
    seen: list[int] = []
    real = adapter_module.run_in_order

    def spy(items, run, workers):
        seen.append(workers)
        return real(items, run, workers)

    monkeypatch.setattr(adapter_module, "run_in_order", spy)
    return seen
