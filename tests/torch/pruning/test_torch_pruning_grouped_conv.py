"""Grouped convolutions (1 < groups < channels): whole groups removed, or the same channels of every
group; the cut layer is an ordinary ``nn.Conv2d`` with equal groups and the masked model's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nncompress.config import NNCFConfig
from nncompress.pruning.rules import grouped_conv_mode
from nncompress.torch.model_creation import create_compressed_model


class ResNeXtBlock(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1 bottleneck with a residual add; ``groups`` and ``width`` pick the
    mode: many small groups (whole groups removed) or few large ones (the same offsets)."""

    def __init__(self, width: int, groups: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.reduce = nn.Conv2d(16, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.grouped = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.expand = nn.Conv2d(width, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bn1(self.reduce(x)))
        y = torch.relu(self.bn2(self.grouped(y)))
        x = torch.relu(x + self.bn3(self.expand(y)))
        x = torch.relu(self.head(x))
        return self.fc(x.mean(dim=(2, 3)))


def _randomize(model: nn.Module, seed: int = 3) -> None:
    """Distinct filter norms and non-trivial BatchNorm statistics, so masks and cuts matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(
                    (torch.rand(m.weight.shape[0], generator=g) * 2 + 0.05).view(
                        -1, *[1] * (m.weight.dim() - 1)
                    )
                )
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)


def _compress(width: int, groups: int, section_extra=None, **params):
    torch.manual_seed(0)
    model = ResNeXtBlock(width, groups)
    _randomize(model)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [2, 3, 8, 8]},
            "compression": {"algorithm": "filter_pruning", "params": params, **(section_extra or {})},
        }
    )
    ctrl, cmodel = create_compressed_model(model, config)
    return ctrl, cmodel, model


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mode_picks_more_units():
    assert grouped_conv_mode(64, 64, 32) == "whole_groups"  # 32 groups of 2: 32 units vs 4
    assert grouped_conv_mode(64, 64, 2) == "per_offset"  # 2 groups of 32: 64 units vs 2
    assert grouped_conv_mode(32, 32, 8) == "whole_groups"  # tie (8 vs 4 + 4): whole groups
    assert grouped_conv_mode(16, 16, 4) == "per_offset"  # 4 units vs 4 + 4


@pytest.mark.parametrize(
    ("width", "groups", "mode"),
    [(32, 16, "whole_groups"), (32, 2, "per_offset"), (16, 4, "per_offset"), (32, 8, "whole_groups")],
)
def test_grouped_conv_masked_equals_stripped(width, groups, mode):
    assert grouped_conv_mode(width, width, groups) == mode
    ctrl, cmodel, original = _compress(width, groups)
    deps = ctrl.engine.deps
    text = ctrl.describe_groups()
    assert "grouped" not in text or "left out" not in text.split("grouped")[0][-80:]
    expected = (
        "whole groups removed" if mode == "whole_groups" else "the same channels removed from every group"
    )
    assert f"groups={groups}: {expected}" in text, text
    ctrl.set_pruning_level(0.5)
    x = torch.randn(2, 3, 8, 8)
    cmodel.eval()
    with torch.no_grad():
        masked = cmodel(x)
    stripped = ctrl.strip()
    conv = stripped.grouped
    assert isinstance(conv, nn.Conv2d)
    cin_g, cout_g = width // groups, width // groups
    if mode == "whole_groups":
        # fewer groups, each of the original size
        assert conv.groups < groups and conv.in_channels == conv.groups * cin_g
        assert conv.out_channels == conv.groups * cout_g
        assert deps.layers[deps.graph.node(_node(deps, "grouped")).name].channel_units is not None
    else:
        # same groups, each smaller by the same count
        assert conv.groups == groups
        assert conv.in_channels < width and conv.out_channels < width
        assert conv.in_channels % groups == 0 and conv.out_channels % groups == 0
    assert conv.weight.shape == (conv.out_channels, conv.in_channels // conv.groups, 3, 3)
    assert stripped.reduce.out_channels == conv.in_channels == stripped.bn1.num_features
    assert stripped.expand.in_channels == conv.out_channels == stripped.bn2.num_features
    assert _n_params(stripped) < _n_params(original)
    with torch.no_grad():
        torch.testing.assert_close(stripped.eval()(x), masked, atol=1e-5, rtol=1e-5)
    # the statistics predict the cut model
    from nncompress.pruning import count_cost
    from nncompress.torch.tracing import trace

    stats = ctrl.statistics().filter_pruning
    assert _n_params(stripped) == stats.params_now < stats.params == _n_params(original)
    assert count_cost(trace(stripped, x)).flops == stats.flops_now < stats.flops


def _node(deps, scope: str) -> str:
    return next(n for n, lay in deps.layers.items() if lay.module_scope == scope)


def test_per_offset_removes_the_same_offsets_from_every_group():
    width, groups = 32, 2
    ctrl, cmodel, original = _compress(width, groups)
    ctrl.set_pruning_level(0.5)
    record = ctrl.pruning_record()
    half = width // groups
    out_keep = np.array(record.layers["grouped"]["out"].keep)
    in_keep = np.array(record.layers["grouped"]["in"].keep)
    for keep in (out_keep, in_keep):
        first, second = keep[keep < half], keep[keep >= half] - half
        np.testing.assert_array_equal(first, second)
        assert 0 < len(first) < half
    # the input channels of the grouped conv are reduce's filters: they go together
    np.testing.assert_array_equal(np.array(record.layers["reduce"]["out"].keep), in_keep)


def test_grouped_conv_exports_to_openvino(tmp_path):
    pytest.importorskip("openvino")
    from nncompress.torch.export import run_openvino

    ctrl, cmodel, original = _compress(32, 16)
    ctrl.set_pruning_level(0.5)
    x = torch.randn(2, 3, 8, 8)
    cmodel.eval()
    with torch.no_grad():
        masked = cmodel(x).numpy()
    xml = ctrl.export_model(str(tmp_path / "grouped.xml"))
    (got,) = run_openvino(xml, x.numpy())
    np.testing.assert_allclose(got, masked, atol=1e-4, rtol=1e-4)
    assert "GroupConvolution" in Path(xml).read_text(encoding="utf-8")


def test_ignored_grouped_conv_keeps_its_filters_and_groups():
    # like an ignored ordinary conv, its filters stay; it still reads fewer inputs (the same
    # offsets of every group), so its groups stay equal
    ctrl, cmodel, _ = _compress(32, 16, {"ignored_scopes": ["{re}.*grouped.*"]})
    ctrl.set_pruning_level(0.5)
    x = torch.randn(2, 3, 8, 8)
    cmodel.eval()
    with torch.no_grad():
        masked = cmodel(x)
    stripped = ctrl.strip()
    assert stripped.grouped.groups == 16 and stripped.grouped.out_channels == 32
    assert stripped.grouped.in_channels == stripped.reduce.out_channels == 16
    with torch.no_grad():
        torch.testing.assert_close(stripped.eval()(x), masked, atol=1e-5, rtol=1e-5)
