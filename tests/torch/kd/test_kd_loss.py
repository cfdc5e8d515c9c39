"""Knowledge distillation alone: the loss formulas, when the teacher runs, bad sections."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncompress import NNCFConfig
from nncompress.errors import ConfigError
from nncompress.torch import create_compressed_model
from nncompress.torch.knowledge_distillation import DistillationError, distillation_loss


def _kd_config(sample_size, **section) -> dict:
    return {
        "input_info": {"sample_size": sample_size},
        "compression": {"algorithm": "knowledge_distillation", **section},
    }


def _perturb(model: nn.Module, seed: int = 1, amount: float = 0.2) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(amount * torch.randn(p.shape, generator=gen))


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _soft_ce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    # torch's cross_entropy with probability targets: mean over the batch of -sum p_t log p_s
    return F.cross_entropy(student / temperature, F.softmax(teacher / temperature, dim=1))


def test_mse_is_zero_right_after_creation(digits_net, digits):
    x, _ = digits
    ctrl, model = create_compressed_model(digits_net(), _kd_config([1, 1, 8, 8], type="mse"))
    model.train()
    model(x[:32])
    loss = ctrl.loss()
    assert loss.item() == 0.0
    assert loss.requires_grad  # part of the student's graph


def test_softmax_right_after_creation_is_the_teacher_entropy(digits_net, digits):
    """NNCF's softmax loss is a cross-entropy: with student == teacher it is the teacher's entropy."""
    x, _ = digits
    scale, temperature = 0.5, 3.0
    config = _kd_config([1, 1, 8, 8], type="softmax", scale=scale, temperature=temperature)
    ctrl, model = create_compressed_model(digits_net(), config)
    model.train()
    model(x[:32])
    with torch.no_grad():
        p = F.softmax(ctrl.teacher(x[:32]) / temperature, dim=1)
        entropy = -(p * p.log()).sum(1).mean()
    assert ctrl.loss().item() == pytest.approx(scale * temperature**2 * entropy.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("kd_type", "scale", "temperature"),
    [("mse", 1.0, 1.0), ("mse", 2.5, 1.0), ("softmax", 1.0, 1.0), ("softmax", 3.0, 2.0)],
)
def test_loss_after_changing_the_student_matches_the_formula(digits_net, digits, kd_type, scale, temperature):
    x, _ = digits
    original = digits_net()
    # the teacher is the model as it was given; its BatchNorm follows the student's (train) mode
    reference = copy.deepcopy(original).train()
    config = _kd_config([1, 1, 8, 8], type=kd_type, scale=scale, temperature=temperature)
    ctrl, model = create_compressed_model(original, config)
    _perturb(model)
    model.train()
    student = model(x[:64])
    with torch.no_grad():
        teacher = reference(x[:64])
    if kd_type == "mse":
        expected = scale * ((student - teacher) ** 2).mean()
    else:
        expected = scale * temperature**2 * _soft_ce(student, teacher, temperature)
    loss = ctrl.loss()
    assert loss.item() > 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # gradients reach the student's weights and only them
    loss.backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in ctrl.teacher.parameters())


def test_teacher_batchnorm_follows_the_student_and_never_updates(digits_net, digits):
    x, _ = digits
    ctrl, model = create_compressed_model(digits_net(), _kd_config([1, 1, 8, 8], type="mse"))
    stats = {k: v.clone() for k, v in ctrl.teacher.state_dict().items()}
    model.train()
    model.bn1.eval()  # fine-tuning with one frozen BatchNorm: the teacher's bn1 uses running stats too
    model(x[:32] * 3 + 1)
    assert ctrl.loss().item() == 0.0
    assert ctrl.teacher.bn1.training is False and ctrl.teacher.bn2.training is True
    for k, v in ctrl.teacher.state_dict().items():
        assert torch.equal(v, stats[k]), f"teacher {k} changed"
    assert not torch.equal(model.bn2.running_mean, stats["bn2.running_mean"])  # the student's did


def test_teacher_is_frozen_eval_mode_copy(digits_net):
    original = digits_net()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    ctrl, model = create_compressed_model(original, _kd_config([1, 1, 8, 8], type="mse"))
    teacher = ctrl.teacher
    assert type(teacher) is type(model)._nncf_original_class  # the user's class, not wrapped
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert {id(p) for p in teacher.parameters()}.isdisjoint(id(p) for p in model.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.train()
    assert not teacher.training  # model.train() does not reach the teacher


def test_nested_outputs_are_summed(two_heads):
    torch.manual_seed(0)
    x = torch.randn(7, 6)
    original = two_heads()
    reference = copy.deepcopy(original)
    ctrl, model = create_compressed_model(original, _kd_config([2, 6], type="softmax", temperature=2.0))
    _perturb(model)
    model.train()
    out = model(x)
    ref = reference(x)
    expected = sum(4.0 * _soft_ce(s, t.detach(), 2.0) for s, t in zip(out["heads"], ref["heads"]))
    assert ctrl.loss().item() == pytest.approx(expected.item(), rel=1e-5)  # integer 'label' is skipped


def test_distillation_loss_skips_what_nncf_skips():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3)
    scalar = torch.tensor(1.0, requires_grad=True)
    # a 0-D / 1-D output (a loss the model returns) and an output without grad take no part
    assert distillation_loss((scalar, s.detach()), (scalar.detach(), t), "mse") is None
    four_d = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert distillation_loss(four_d, four_d.detach() + 1, "softmax") is None  # softmax: 2-D only
    assert distillation_loss(four_d, four_d.detach() + 1, "mse").item() == pytest.approx(1.0)
    with pytest.raises(DistillationError, match=r"output\[1\] has shape \(4, 3\).*\(4, 2\)"):
        distillation_loss((scalar, s), (scalar, t[:, :2]), "mse")


def test_eval_mode_and_no_grad_do_not_run_the_teacher(digits_net, digits):
    x, _ = digits
    ctrl, model = create_compressed_model(digits_net(), _kd_config([1, 1, 8, 8], type="mse"))
    _perturb(model)
    calls = _count_calls(ctrl.teacher)
    model.train()
    model(x[:16])
    assert calls[0] == 1 and ctrl.loss().item() > 0
    model.eval()
    model(x[:16])
    assert calls[0] == 1
    assert ctrl.loss().item() == 0.0  # the latest forward was not a training one
    model.train()
    with torch.no_grad():
        model(x[:16])
    assert calls[0] == 1 and ctrl.loss().item() == 0.0


def test_loss_is_that_of_the_latest_forward(digits_net, digits):
    x, _ = digits
    ctrl, model = create_compressed_model(digits_net(), _kd_config([1, 1, 8, 8], type="mse"))
    _perturb(model)
    model.train()
    model(x[:16])
    first = ctrl.loss()
    assert ctrl.loss() is first  # reading twice gives the same value
    model(x[16:48])
    second = ctrl.loss()
    assert second.item() != pytest.approx(first.item())
    with torch.no_grad():
        expected = F.mse_loss(model(x[16:48]), ctrl.teacher(x[16:48]))
    assert second.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_read_before_the_forward_is_a_clear_error_at_backward(digits_net, digits):
    x, _ = digits
    ctrl, model = create_compressed_model(digits_net(), _kd_config([1, 1, 8, 8], type="mse"))
    _perturb(model)
    model.train()
    out = model(x[:16])
    kd = ctrl.loss()  # after the forward: fine
    (out.sum() + kd).backward()
    assert ctrl.loss().item() == pytest.approx(kd.item())  # read again after backward, for logging
    stale = ctrl.loss()  # the next step, but called before the forward pass
    with pytest.raises(DistillationError, match="called before the model's forward pass"):
        (model(x[16:32]).sum() + stale).backward()
    model.zero_grad()
    (model(x[16:32]).sum() + ctrl.loss()).backward()  # the right order works again


def test_unknown_type_is_a_config_error_with_its_path():
    with pytest.raises(ConfigError, match=r"compression\.type: invalid value \"kl\""):
        NNCFConfig.from_dict(_kd_config([1, 4], type="kl"))
    with pytest.raises(ConfigError, match=r"compression\.type"):
        NNCFConfig.from_dict(_kd_config([1, 4]))  # type is required
    with pytest.raises(ConfigError, match=r"compression\.scale"):
        NNCFConfig.from_dict(_kd_config([1, 4], type="mse", scale=0))


def test_values_changed_after_loading_are_checked(digits_net):
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": [
                {"algorithm": "quantization"},
                {"algorithm": "knowledge_distillation", "type": "mse"},
            ],
        }
    )
    config["compression"][1]["type"] = "cosine"
    with pytest.raises(
        ConfigError, match=r"compression\[1\]\.type: is 'cosine'; expected one of: mse, softmax"
    ):
        create_compressed_model(digits_net(), config)
    config["compression"][1]["type"] = "softmax"
    config["compression"][1]["temperature"] = -1
    with pytest.raises(ConfigError, match=r"compression\[1\]\.temperature: must be a finite number > 0"):
        create_compressed_model(digits_net(), config)


def test_model_without_a_usable_output_is_refused():
    class Pixels(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(
        ConfigError, match=r"compression\.type: 'softmax' distillation needs a 2-D .*\(1, 2, 8, 8\)"
    ):
        create_compressed_model(Pixels(), _kd_config([1, 1, 8, 8], type="softmax"))
    ctrl, _ = create_compressed_model(Pixels(), _kd_config([1, 1, 8, 8], type="mse"))  # mse takes 4-D
    assert ctrl.name == "knowledge_distillation"


def test_failed_creation_leaves_no_distillation_behind(digits_net, digits, monkeypatch):
    """A later algorithm failing unwraps the model again: the model must not keep distilling."""
    from nncompress.torch.algorithms.quantization.builder import QuantizationBuilder

    def fail(self, model, context):
        raise RuntimeError("quantization failed on purpose")

    monkeypatch.setattr(QuantizationBuilder, "build_controller", fail)
    model = digits_net()
    config = {
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": [
            {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
            {"algorithm": "knowledge_distillation", "type": "mse"},
        ],
    }
    with pytest.raises(RuntimeError, match="on purpose"):
        create_compressed_model(model, config, dump_graphs=False)
    hooks = list(model._forward_hooks.values())
    assert type(model) is type(digits_net())  # unwrapped again
    model.train()
    model(digits[0][:4])
    assert all(getattr(h, "loss", None) is None for h in hooks)  # inert, teacher released
