"""nncompress.torch.load_state: NNCF 2.x's checkpoint helper."""

from __future__ import annotations

import pytest
import torch
from qat_digits import DigitsCNN

from nncompress import NNCFConfig
from nncompress.errors import CompressionStateError
from nncompress.torch import create_compressed_model, load_state

CONFIG = {
    "input_info": {"sample_size": [1, 1, 8, 8]},
    "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
}


def test_uncompressed_checkpoint_loads_into_a_compressed_model():
    source = DigitsCNN(seed=1)
    _, model = create_compressed_model(DigitsCNN(seed=2), NNCFConfig.from_dict(CONFIG), dump_graphs=False)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # as saved from DDP
    loaded = load_state(model, state)
    assert loaded == len(source.state_dict())
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_resume_requires_every_key_and_names_the_missing_ones():
    _, model = create_compressed_model(DigitsCNN(seed=2), NNCFConfig.from_dict(CONFIG), dump_graphs=False)
    with pytest.raises(CompressionStateError, match=r"missing: .*_nncf"):
        load_state(model, DigitsCNN(seed=1).state_dict(), is_resume=True)
    assert load_state(model, model.state_dict(), is_resume=True) == len(model.state_dict())
