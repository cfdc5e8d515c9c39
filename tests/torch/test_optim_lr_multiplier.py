"""``compression_lr_multiplier``: the gradient scaling without the helper, the parameter groups
of ``get_parameter_groups`` with it, and never both at once."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nncompress import NNCFConfig
from nncompress.errors import ConfigError
from nncompress.torch import create_compressed_model
from nncompress.torch.optim import (
    compression_lr_multiplier,
    compression_modules,
    get_parameter_groups,
    mark_compression_module,
)

LR = 1.0  # large steps: parameter deltas well above float32 rounding of the parameters
X = torch.randn(16, 6, generator=torch.Generator().manual_seed(3)) * 2


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(6, 12)
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _config(top=None, quant=None, extra=()) -> dict:
    section = {
        "algorithm": "quantization",
        "initializer": {
            "range": {"num_init_samples": 0},
            "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
        },
    }
    if quant is not None:
        section["compression_lr_multiplier"] = quant
    config = {"input_info": {"sample_size": [2, 6]}, "compression": [section, *extra]}
    if top is not None:
        config["compression_lr_multiplier"] = top
    return config


def _compressed(**kwargs):
    return create_compressed_model(Net(), _config(**kwargs), dump_graphs=False)


def _is_quantizer_param(name: str) -> bool:
    return name.startswith("_nncf.")


def _one_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.zero_grad()
    (model(X) - 1).pow(2).mean().backward()
    optimizer.step()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def _assert_ratio(scaled: dict, plain: dict, multiplier: float) -> None:
    moved = 0
    for name, delta in plain.items():
        if _is_quantizer_param(name):
            torch.testing.assert_close(scaled[name], multiplier * delta, rtol=1e-4, atol=1e-6)
            moved += int(delta.abs().max() > 1e-3)
        else:  # the model's own weights are not affected
            torch.testing.assert_close(scaled[name], delta, rtol=1e-6, atol=1e-8)
    assert moved > 0, "no quantizer parameter moved: the test would prove nothing"


def test_without_the_helper_sgd_steps_are_multiplied():
    _, plain = _compressed()
    _, scaled = _compressed(quant=4.0)
    d1 = _one_step(plain, torch.optim.SGD(plain.parameters(), lr=LR))
    d4 = _one_step(scaled, torch.optim.SGD(scaled.parameters(), lr=LR))
    _assert_ratio(d4, d1, 4.0)


def test_with_the_helper_the_multiplier_applies_once():
    ctrl1, plain = _compressed()
    ctrl4, scaled = _compressed(quant=4.0)
    groups = get_parameter_groups(ctrl4, LR)
    assert [(g["name"], g["lr"], g["lr_multiplier"]) for g in groups] == [
        ("model", LR, 1.0),
        ("quantization", pytest.approx(LR * 4.0), 4.0),
    ]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in scaled.parameters())  # each parameter once
    d1 = _one_step(plain, torch.optim.SGD(get_parameter_groups(ctrl1, LR), lr=LR))
    d4 = _one_step(scaled, torch.optim.SGD(groups, lr=LR))
    _assert_ratio(d4, d1, 4.0)  # not 16: the gradient scaling is off once groups carry it


def test_per_algorithm_value_overrides_the_top_level_one():
    _, plain = _compressed()
    _, both = _compressed(top=2.0, quant=5.0)
    _, top_only = _compressed(top=3.0)
    d1 = _one_step(plain, torch.optim.SGD(plain.parameters(), lr=LR))
    _assert_ratio(_one_step(both, torch.optim.SGD(both.parameters(), lr=LR)), d1, 5.0)
    _assert_ratio(_one_step(top_only, torch.optim.SGD(top_only.parameters(), lr=LR)), d1, 3.0)
    assert get_parameter_groups(top_only, LR)[1]["lr"] == pytest.approx(LR * 3.0)


def test_a_config_given_to_the_helper_decides():
    ctrl, model = _compressed(quant=4.0)
    groups = get_parameter_groups(model, LR, config=NNCFConfig.from_dict(_config(top=7.0)))
    assert groups[1]["lr"] == pytest.approx(LR * 7.0)
    groups = get_parameter_groups(model, LR, config=_config())  # no multiplier at all
    assert groups[1]["lr"] == pytest.approx(LR)


def test_deep_copies_keep_the_gradient_scaling():
    _, plain = _compressed()
    _, scaled = _compressed(quant=4.0)
    twin = copy.deepcopy(scaled)  # new parameter objects: hooked again on the first forward
    d1 = _one_step(plain, torch.optim.SGD(plain.parameters(), lr=LR))
    _assert_ratio(_one_step(twin, torch.optim.SGD(twin.parameters(), lr=LR)), d1, 4.0)


def test_adam_gets_the_multiplier_only_through_groups():
    ctrl, model = _compressed(quant=10.0)
    deltas = _one_step(model, torch.optim.Adam(get_parameter_groups(ctrl, 1e-3)))
    for name, delta in deltas.items():
        moved = delta[delta.abs() > 0].abs()
        if moved.numel():  # Adam's first step is lr * sign(grad)
            expected = 1e-2 if _is_quantizer_param(name) else 1e-3
            torch.testing.assert_close(moved, torch.full_like(moved, expected), rtol=1e-3, atol=0)


def test_bad_multipliers_are_config_errors_with_their_path():
    with pytest.raises(ConfigError, match=r"compression_lr_multiplier: 0 is out of range"):
        NNCFConfig.from_dict(_config(top=0))
    with pytest.raises(ConfigError, match=r"compression\[0\]\.compression_lr_multiplier: -1 is out of range"):
        NNCFConfig.from_dict(_config(quant=-1))
    config = NNCFConfig.from_dict(_config(quant=2.0))
    config["compression"][0]["compression_lr_multiplier"] = 0.0  # changed after validation
    with pytest.raises(
        ConfigError, match=r"compression\[0\]\.compression_lr_multiplier: must be a finite number > 0"
    ):
        create_compressed_model(Net(), config, dump_graphs=False)
    assert (
        compression_lr_multiplier({"compression_lr_multiplier": 2, "compression": {"algorithm": "x"}}, "x")
        == 2.0
    )
    with pytest.raises(
        ConfigError, match=r"^.*\n  - compression_lr_multiplier: must be a number > 0, got 'fast'"
    ):
        compression_lr_multiplier({"compression_lr_multiplier": "fast"}, "quantization")
    _, model = _compressed()
    with pytest.raises(ConfigError, match=r"base_lr: must be a number >= 0"):
        get_parameter_groups(model, -1.0)
    with pytest.raises(TypeError, match="compressed torch model or its controller"):
        get_parameter_groups(object(), 0.1)


class Gate(nn.Module):
    """A plug-in's trainable compression parameter (like a learned sparsity mask)."""

    def __init__(self, n: int):
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return x * torch.sigmoid(self.logit)


def test_any_marked_module_takes_part():
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 4), Gate(4))

    plain, scaled = make(), make()
    mark_compression_module(plain[1], "my_sparsity")
    mark_compression_module(scaled[1], "my_sparsity", 3.0)
    assert compression_modules(scaled) == {"my_sparsity": [scaled[1]]}

    def step(model, opt):
        before = model[1].logit.detach().clone()
        opt.zero_grad()
        (model(X) - 1).pow(2).mean().backward()
        opt.step()
        return model[1].logit.detach() - before

    d1 = step(plain, torch.optim.SGD(plain.parameters(), lr=LR))
    d3 = step(scaled, torch.optim.SGD(scaled.parameters(), lr=LR))
    assert d1.abs().sum() > 0
    torch.testing.assert_close(d3, 3 * d1)
    groups = get_parameter_groups(scaled, LR)
    assert [g["name"] for g in groups] == ["model", "my_sparsity"] and groups[1]["lr"] == pytest.approx(
        3 * LR
    )
    d3g = step(scaled, torch.optim.SGD(groups, lr=LR))
    assert d3g.abs().sum() > 0
    with pytest.raises(ValueError, match="already holds compression parameters of 'my_sparsity'"):
        mark_compression_module(scaled[1], "quantization")


def test_distillation_teacher_is_not_in_the_groups():
    kd = {"algorithm": "knowledge_distillation", "type": "mse"}
    ctrl, model = create_compressed_model(Net(), _config(quant=2.0, extra=[kd]), dump_graphs=False)
    groups = get_parameter_groups(ctrl, LR)
    assert [g["name"] for g in groups] == ["model", "quantization"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    dp_groups = get_parameter_groups(nn.DataParallel(model), LR)
    assert [len(g["params"]) for g in dp_groups] == [len(g["params"]) for g in groups]
