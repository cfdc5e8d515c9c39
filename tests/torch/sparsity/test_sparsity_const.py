"""const_sparsity: the zeros a model already has stay zero through fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch
from qat_digits import DigitsCNN, train

from nncompress import NNCFConfig
from nncompress.api.compression import CompressionStage
from nncompress.errors import ConfigError
from nncompress.torch import create_compressed_model

LAYERS = ("conv1.weight", "conv2.weight", "fc.weight")


def sparse_model(state, fraction: float = 0.6) -> tuple[DigitsCNN, dict[str, torch.Tensor]]:
    """The digits CNN with ``fraction`` of each weight (the smallest) set to zero in place."""
    model = DigitsCNN()
    model.load_state_dict(state)
    zero = {}
    with torch.no_grad():
        for name in LAYERS:
            w = model.get_parameter(name)
            k = int(fraction * w.numel())
            cut = w.abs().reshape(-1).kthvalue(k).values
            zero[name] = w.abs() <= cut
            w[zero[name]] = 0.0
    return model, zero


def config() -> NNCFConfig:
    return NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": {"algorithm": "const_sparsity"}}
    )


@pytest.mark.parametrize("optimizer", ["adamw", "sgd_momentum"])
def test_zeros_survive_training(digits_state, digits_data, optimizer):
    x_tr, y_tr, _, _ = digits_data
    model, zero = sparse_model(digits_state)
    ctrl, cmodel = create_compressed_model(model, config())
    before = {n: cmodel.get_parameter(n).detach().clone() for n in LAYERS}
    if optimizer == "adamw":
        opt = torch.optim.AdamW(cmodel.parameters(), lr=1e-2, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(cmodel.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    train(cmodel, x_tr[:512], y_tr[:512], epochs=2, optimizer=opt, ctrl=ctrl)
    for n in LAYERS:
        w = cmodel.get_parameter(n).detach()
        assert torch.all(w[zero[n]] == 0), n  # no gradient, no decay can revive them
        assert not torch.equal(w[~zero[n]], before[n][~zero[n]])  # the others trained
    stats = ctrl.statistics().const_sparsity.model_statistics
    for s, n in zip(stats.sparsified_layers_summary, LAYERS):
        assert s.zeros >= int(zero[n].sum())
    assert ctrl.compression_rate == pytest.approx(stats.sparsity_level_for_layers)
    assert ctrl.compression_rate >= 0.6 - 1e-3
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
    stripped = ctrl.strip()
    for n in LAYERS:
        assert torch.all(stripped.get_parameter(n)[zero[n]] == 0)


def test_effective_zeros_hold_even_if_a_parameter_is_changed(digits_state, digits_data):
    """The mask is fixed at creation: writing into a masked weight does not change the output."""
    _, _, x_te, _ = digits_data
    model, zero = sparse_model(digits_state)
    ctrl, cmodel = create_compressed_model(model, config())
    with torch.no_grad():
        ref = cmodel.eval()(x_te)
        cmodel.conv2.weight[zero["conv2.weight"]] = 5.0
        assert torch.equal(cmodel(x_te), ref)
    stripped = ctrl.strip()
    assert torch.all(stripped.conv2.weight[zero["conv2.weight"]] == 0)


def test_state_and_rate_cannot_be_set(digits_state, digits_data):
    _, _, x_te, _ = digits_data
    model, _ = sparse_model(digits_state, 0.3)
    ctrl, cmodel = create_compressed_model(model, config())
    state = copy.deepcopy(ctrl.get_compression_state())
    weights = copy.deepcopy(cmodel.state_dict())
    ctrl2, cmodel2 = create_compressed_model(DigitsCNN(seed=1), config(), compression_state=state)
    cmodel2.load_state_dict(weights)
    with torch.no_grad():
        assert torch.equal(cmodel2.eval()(x_te), cmodel.eval()(x_te))
    with pytest.raises(ConfigError, match="const_sparsity keeps the zeros"):
        ctrl.compression_rate = 0.5
