"""Small torch models for tests: every architecture family the torch backend must handle.

Random weights, tiny sizes (each runs in milliseconds). Every model has ``make_input()``
returning an example input in the form ``trace`` takes: a tensor (one positional argument), a
tuple (positional arguments) or a dict (keyword arguments). ``ZOO`` maps a short name to each
class; ``build(name)`` makes one with a fixed seed, in eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(channels: int = 3, size: int = 32, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=_gen(seed))


# ---------------------------------------------------------------------------------------------
# ResNet
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """conv-bn-relu-maxpool stem, two stages of BasicBlocks (one with downsample), pool, fc."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)

    def make_input(self, batch: int = 1, seed: int = 0):
        return _image(batch=batch, seed=seed)


# ---------------------------------------------------------------------------------------------
# MobileNetV2
# ---------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            ConvBNReLU(cin, hidden, 1),
            ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            ConvBNReLU(3, 8, stride=2),
            InvertedResidual(8, 8, 1, 2),
            InvertedResidual(8, 16, 2, 2),
            InvertedResidual(16, 16, 1, 2),
            ConvBNReLU(16, 32, 1),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)

    def make_input(self, batch: int = 1, seed: int = 0):
        return _image(batch=batch, seed=seed)


# ---------------------------------------------------------------------------------------------
# Squeeze-excitation, EfficientNet
# ---------------------------------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """Global pool, two 1x1 convs, sigmoid gate, channel-wise multiply."""

    def __init__(self, channels: int, squeeze: int, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = activation()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
        return x * s


class LinearSE(nn.Module):
    """SE with linear layers on pooled features."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x):
        s = x.mean((2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class SENet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.se = SqueezeExcitation(16, 4)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.se2 = LinearSE(16, 4)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.se(F.relu(self.conv(x)))
        x = self.se2(F.relu(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))

    def make_input(self, batch: int = 1, seed: int = 0):
        return _image(size=16, batch=batch, seed=seed)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
        )
        self.se = SqueezeExcitation(hidden, max(1, cin // 4), nn.SiLU)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.use_res:
            out = out + x
        return out


class EfficientNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(8, 8, 2, 1), MBConv(8, 16, 4, 2))
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.classifier(self.dropout(torch.flatten(x, 1)))

    def make_input(self, batch: int = 1, seed: int = 0):
        return _image(batch=batch, seed=seed)


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head attention written out: packed qkv linear, chunk, matmul, softmax, matmul."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        att = att.softmax(dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, c)
        return self.proj(y)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, torch_attention: bool):
        super().__init__()
        self.torch_attention = torch_attention
        self.norm1 = nn.LayerNorm(dim)
        if torch_attention:
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        else:
            self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        if self.torch_attention:
            h = self.attn(h, h, h, need_weights=False)[0]
        else:
            h = self.attn(h)
        x = x + h
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Token + position embeddings, one hand-written and one nn.MultiheadAttention layer."""

    def __init__(self, vocab: int = 50, dim: int = 16, heads: int = 2, num_classes: int = 4):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(32, dim)
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, False), EncoderLayer(dim, heads, True)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(positions)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x)[:, 0])

    def make_input(self, batch: int = 2, seed: int = 0):
        return torch.randint(0, 50, (batch, 6), generator=_gen(seed))


# ---------------------------------------------------------------------------------------------
# Recurrent
# ---------------------------------------------------------------------------------------------


class LSTMNet(nn.Module):
    def __init__(self, features: int = 8, hidden: int = 12, num_classes: int = 3):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        out, (h, c) = self.rnn(x)
        return self.fc(out[:, -1])

    def make_input(self, batch: int = 2, seed: int = 0):
        return torch.randn(batch, 5, 8, generator=_gen(seed))


class GRUNet(nn.Module):
    def __init__(self, features: int = 8, hidden: int = 12, num_classes: int = 3):
        super().__init__()
        self.rnn = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        out, h = self.rnn(x)
        return self.fc(h[-1])

    def make_input(self, batch: int = 2, seed: int = 0):
        return torch.randn(batch, 5, 8, generator=_gen(seed))


# ---------------------------------------------------------------------------------------------
# U-Net
# ---------------------------------------------------------------------------------------------


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """Two-level encoder/decoder: max pools, a transposed conv and interpolate up, concat skips."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.enc1 = _double_conv(3, 8)
        self.enc2 = _double_conv(8, 16)
        self.bottom = _double_conv(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = _double_conv(32, 16)
        self.dec1 = _double_conv(24, 8)
        self.out = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        up1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up1, e1], dim=1))
        return self.out(d1)

    def make_input(self, batch: int = 1, seed: int = 0):
        return _image(size=16, batch=batch, seed=seed)


# ---------------------------------------------------------------------------------------------
# Control flow, structured inputs and outputs, shared modules, failures
# ---------------------------------------------------------------------------------------------


class BranchyNet(nn.Module):
    """Takes one of two branches depending on the input's mean."""

    def __init__(self):
        super().__init__()
        self.positive = nn.Linear(8, 4)
        self.negative = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))

    def forward(self, x):
        if x.mean() > 0:
            return self.positive(x)
        return self.negative(x)

    def make_input(self, batch: int = 2, seed: int = 0, positive: bool = True):
        x = torch.randn(batch, 8, generator=_gen(seed)).abs()
        return x if positive else -x


class DictIONet(nn.Module):
    """Keyword inputs (one optional) and a nested dict output."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.meta = nn.Linear(5, 4)
        self.cls = nn.Linear(4, 2)

    def forward(self, image, extra=None, scale: float = 1.0):
        feats = F.relu(self.backbone(image)).mean((2, 3))
        if extra is not None:
            feats = feats + self.meta(extra)
        logits = self.cls(feats) * scale
        return {"logits": logits, "aux": [feats, logits.softmax(-1)], "count": 3}

    def make_input(self, batch: int = 2, seed: int = 0):
        g = _gen(seed)
        return {
            "image": torch.randn(batch, 3, 8, 8, generator=g),
            "extra": torch.randn(batch, 5, generator=g),
        }


class SharedBlockNet(nn.Module):
    """Calls one Linear and one ReLU module twice; returns a tuple."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = self.act(self.fc(x))
        y = self.act(self.fc(y))
        return self.head(y), y

    def make_input(self, batch: int = 2, seed: int = 0):
        return torch.randn(batch, 8, generator=_gen(seed))


class _BadProjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(7, 3)  # expects 7 features, receives 8

    def forward(self, x):
        return self.proj(F.relu(x))


class FailingNet(nn.Module):
    """Raises inside ``block.proj`` (a shape mismatch in ``linear``)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.block = _BadProjection()

    def forward(self, x):
        return self.block(self.fc(x))

    def make_input(self, batch: int = 2, seed: int = 0):
        return torch.randn(batch, 8, generator=_gen(seed))


class FunctionalNet(nn.Module):
    """Functional ops and tensor methods: split, cat, stack, slicing, setitem, views, in-place ops,
    a buffer and a bare parameter used in a matmul, shape queries that are not ops."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)
        self.proj = nn.Parameter(torch.randn(6, 4) * 0.1)
        self.register_buffer("offset", torch.linspace(-1.0, 1.0, 6))

    def forward(self, x):
        y = self.conv(x) + self.offset.view(1, -1, 1, 1)
        a, b = torch.split(y, [2, 4], dim=1)
        z = torch.cat([a.relu(), b * 0.5], dim=1)
        z[:, 0] = 0.0
        t = z.flatten(2).permute(0, 2, 1)
        u = t @ self.proj
        v = u.reshape(x.shape[0], -1)[..., :3]
        s = torch.stack([v, -v.T.T], dim=1).sum(dim=1)
        s += torch.ones(x.size(0), 3)
        n = len(x) + x.dim() + x.numel() // x.numel()
        return s * n, u.transpose(1, 2)

    def make_input(self, batch: int = 2, seed: int = 0):
        return torch.randn(batch, 4, 4, 4, generator=_gen(seed))


class ScaleHook(nn.Module):
    """A hook module with a trainable parameter (stands in for a quantizer in tests)."""

    def __init__(self, scale: float = 2.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x):
        return x * self.scale


ZOO: dict[str, type[nn.Module]] = {
    "resnet": ResNet,
    "mobilenet_v2": MobileNetV2,
    "senet": SENet,
    "efficientnet": EfficientNet,
    "transformer": Transformer,
    "lstm": LSTMNet,
    "gru": GRUNet,
    "unet": UNet,
    "branchy": BranchyNet,
    "dict_io": DictIONet,
    "shared": SharedBlockNet,
    "functional": FunctionalNet,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """A zoo model with deterministic random weights (and BatchNorm statistics), in eval mode."""
    torch.manual_seed(seed)
    model = ZOO[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()
