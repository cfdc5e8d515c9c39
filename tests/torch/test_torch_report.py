"""Quantizer ranges of compressed torch models, in the form the HTML report reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import nncompress
from nncompress.errors import QuantizationError
from nncompress.report import read_quantizer_ranges
from nncompress.torch.report import quantizer_ranges


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_ranges_of_a_ptq_model_match_its_quantizers(tmp_path):
    torch.manual_seed(0)
    data = [torch.randn(4, 1, 8, 8) for _ in range(4)]
    q = nncompress.quantize(
        Net(),
        nncompress.Dataset(data),
        subset_size=16,
        advanced_parameters=_quiet(),
        fast_bias_correction=False,
    )
    ranges = quantizer_ranges(q, "net")
    assert ranges["model"] == "net"
    by_name = {r["name"]: r for r in ranges["quantizers"]}
    conv_w = by_name["Net/Conv2d[conv]/conv2d_0|weight"]
    assert conv_w["kind"] == "weight" and conv_w["bits"] == 8 and len(conv_w["high"]) == 4
    # symmetric per-channel weights: the range covers each filter's largest magnitude
    w = q.conv.weight.detach().abs().amax(dim=(1, 2, 3)).numpy()
    assert np.all(np.asarray(conv_w["high"]) >= w * 0.99)
    acts = [r for r in ranges["quantizers"] if r["kind"] == "activation"]
    assert acts and all(r["low"] <= r["high"] for r in acts)
    path = tmp_path / "quantizer_ranges.json"
    path.write_text(json.dumps(ranges))
    assert len(read_quantizer_ranges(path)["quantizers"]) == len(ranges["quantizers"])


def test_a_model_without_quantizers_is_an_error():
    with pytest.raises(QuantizationError, match="no nncompress hooks"):
        quantizer_ranges(Net())


def _quiet():
    from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters

    return AdvancedQuantizationParameters(show_progress=False)
