"""Masks during training and physical channel removal: masked == stripped, smaller models, records
that replay onto fresh models, the controller (schedule, level, FLOPs target, statistics, state),
exported files, and errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

_TORCH_TESTS = str(Path(__file__).resolve().parent.parent)
if _TORCH_TESTS not in sys.path:
    sys.path.insert(0, _TORCH_TESTS)

import models as M  # noqa: E402

from nncompress.api.compression import CompressionStage  # noqa: E402
from nncompress.config import NNCFConfig  # noqa: E402
from nncompress.errors import ConfigError, PruningError  # noqa: E402
from nncompress.pruning import PruningRecord, count_cost  # noqa: E402
from nncompress.torch.model_creation import create_compressed_model  # noqa: E402
from nncompress.torch.pruning import apply_pruning_record, prune_filters  # noqa: E402
from nncompress.torch.pruning.masks import ChannelMask  # noqa: E402
from nncompress.torch.tracing import trace  # noqa: E402

ALL_LAYERS = {"prune_first_conv": True, "prune_downsample_convs": True}


def compress(name: str, seed: int = 0, *, batch: int = 2, section_extra=None, **params):
    model = M.build(name, seed)
    x = model.make_input(batch=batch)
    info = {"sample_size": list(x.shape)}
    if not x.is_floating_point():
        info["type"] = "long"
    section = {"algorithm": "filter_pruning", "params": params}
    if "pruning_init" in params:
        section["pruning_init"] = params.pop("pruning_init")
    section.update(section_extra or {})
    config = NNCFConfig.from_dict({"input_info": info, "compression": section})
    ctrl, model = create_compressed_model(model, config)
    return ctrl, model, x


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, x) -> int:
    return count_cost(trace(model, x)).flops


def scramble_weights(model: nn.Module, seed: int = 1) -> None:
    """Give filters clearly different norms (random init makes them alike)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                scale = torch.rand(m.weight.shape[0], generator=g) * 2 + 0.05
                m.weight.mul_(scale.view(-1, *([1] * (m.weight.dim() - 1))))


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2", "senet", "efficientnet", "unet", "transformer"])
def test_masked_equals_stripped_and_is_smaller(name):
    ctrl, model, x = compress(name, schedule="baseline", pruning_steps=1, **ALL_LAYERS)
    original = M.build(name)
    ctrl.set_pruning_level(0.5)
    with torch.no_grad():
        masked = model(x)
    stripped = ctrl.strip()
    assert type(stripped) is type(original) and not hasattr(stripped, "_nncf")
    assert not any(isinstance(m, ChannelMask) for m in stripped.modules())
    with torch.no_grad():
        got = stripped(x)
    torch.testing.assert_close(got, masked, atol=1e-5, rtol=1e-5)
    stats = ctrl.statistics().filter_pruning
    # the statistics predict the real model exactly
    assert n_params(stripped) == stats.params_now < stats.params == n_params(original)
    assert flops(stripped, x) == stats.flops_now < stats.flops == flops(original, x)
    # each prunable group lost floor(level * n) filters: the layers say so
    record = ctrl.pruning_record()
    for group in ctrl.engine.deps.prunable_groups:
        for p in group.producers:
            lay = ctrl.engine.deps.layers[p]
            kept = record.layers[lay.module_scope]["out"].keep
            assert len(kept) == group.num_channels - group.num_channels // 2


def test_flops_and_params_fall_at_least_as_the_level_implies():
    ctrl, model, x = compress("unet", **ALL_LAYERS)
    for level in (0.25, 0.5, 0.75):
        ctrl.set_pruning_level(level)
        stats = ctrl.statistics().filter_pruning
        # every conv but the output one loses `level` of its filters and of its inputs
        assert stats.flops_reduction >= level
        assert stats.params_reduction >= level


def test_record_replays_onto_a_fresh_model(tmp_path):
    ctrl, model, x = compress("efficientnet", pruning_init=0.4, **ALL_LAYERS)
    stripped = ctrl.strip()
    ctrl.pruning_record().save(tmp_path / "pruning.json")
    torch.save(stripped.state_dict(), tmp_path / "weights.pt")
    fresh = M.EfficientNet()  # a new instance of the class: nothing pickled
    apply_pruning_record(fresh, PruningRecord.load(tmp_path / "pruning.json"))
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt"))
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), stripped(x))
    # the record does not fit the pruned model a second time, nor another model
    with pytest.raises(PruningError, match="the record was made for"):
        apply_pruning_record(fresh, PruningRecord.load(tmp_path / "pruning.json"))
    with pytest.raises(PruningError, match="has no module"):
        apply_pruning_record(M.ResNet(), PruningRecord.load(tmp_path / "pruning.json"))


def test_record_that_empties_a_layer_is_refused():
    ctrl, model, x = compress("resnet", pruning_init=0.5)
    data = ctrl.pruning_record().to_dict()
    path = next(iter(data["layers"]))
    data["layers"][path]["out"]["keep"] = []
    with pytest.raises(PruningError, match=f"'{path}'.*keeps no channel"):
        apply_pruning_record(M.ResNet(), data)


def test_scheduler_raises_the_level_and_stage():
    ctrl, model, x = compress(
        "resnet", schedule="exponential", pruning_target=0.6, pruning_steps=4, num_init_steps=1
    )
    schedule = ctrl.scheduler.schedule
    assert ctrl.compression_stage() == CompressionStage.UNCOMPRESSED
    levels = []
    for epoch in range(7):
        ctrl.scheduler.epoch_step()
        for _ in range(2):
            ctrl.scheduler.step()
        levels.append(ctrl.pruning_level)
        assert ctrl.pruning_level == pytest.approx(schedule.level(epoch))
    assert levels[0] == levels[1] == 0.0 and levels[-1] == pytest.approx(0.6)
    assert levels == sorted(levels)
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
    masks = [m for m in model.modules() if isinstance(m, ChannelMask)]
    assert masks and min(float(m.mask.mean()) for m in masks) < 1.0


def test_compression_rate_and_level_setters():
    ctrl, model, x = compress("mobilenet_v2")
    ctrl.compression_rate = 0.3
    assert ctrl.compression_rate == pytest.approx(0.3) == ctrl.pruning_level
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED
    before = ctrl.statistics().filter_pruning.params_now
    ctrl.set_pruning_level(0.6)
    assert ctrl.statistics().filter_pruning.params_now < before
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        ctrl.set_pruning_level(1.0)
    text = ctrl.statistics().to_str()
    assert "filter_pruning" in text and "Parameters:" in text and "features.2.conv.0.0" in text


def test_pruned_channels_stay_pruned_as_the_level_grows():
    ctrl, model, x = compress("resnet")
    scramble_weights(model)
    ctrl.set_pruning_level(0.25)
    first = ctrl.engine.keep.copy()
    # training would move the weights: make the removed filters the largest
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("conv1.weight"):
                p.mul_(100.0)
    ctrl.set_pruning_level(0.5)
    assert not (ctrl.engine.keep & ~first).any()


def test_flops_target_is_reached_within_tolerance():
    ctrl, model, x = compress(
        "resnet", schedule="baseline", pruning_flops_target=0.4, pruning_steps=1, **ALL_LAYERS
    )
    scramble_weights(model)
    assert ctrl.compression_rate == 0.0
    ctrl.scheduler.epoch_step()
    reached = ctrl.compression_rate
    assert 0.4 <= reached < 0.5
    stripped = ctrl.strip()
    assert 1 - flops(stripped, x) / flops(M.build("resnet"), x) == pytest.approx(reached)
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED


def test_unreachable_flops_target_fails_at_creation():
    with pytest.raises(PruningError, match="cannot be reached"):
        compress("resnet", pruning_flops_target=0.9)


def test_model_without_prunable_layers_fails_at_creation():
    with pytest.raises(PruningError, match="no layer of the model can be pruned"):
        compress("functional")


def test_compression_state_round_trip():
    ctrl, model, x = compress("senet", pruning_init=0.5)
    state = ctrl.get_compression_state()
    weights = model.state_dict()
    fresh = M.build("senet", seed=3)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": list(x.shape)},
            "compression": {"algorithm": "filter_pruning", "pruning_init": 0.5},
        }
    )
    ctrl2, model2 = create_compressed_model(fresh, config, compression_state=state)
    model2.load_state_dict(weights)
    assert ctrl2.pruning_level == pytest.approx(0.5)
    assert ctrl2.pruning_record().to_dict() == ctrl.pruning_record().to_dict()
    with torch.no_grad():
        torch.testing.assert_close(model2(x), model(x))


def test_batchnorm_adaptation_after_a_level_change():
    from torch.utils.data import DataLoader, TensorDataset

    from nncompress.torch.initialization import register_default_init_args

    model = M.build("resnet")
    data = torch.randn(16, 3, 32, 32)
    loader = DataLoader(TensorDataset(data, torch.zeros(16, dtype=torch.long)), batch_size=8)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [2, 3, 32, 32]},
            "compression": {
                "algorithm": "filter_pruning",
                "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 16}},
            },
        }
    )
    config = register_default_init_args(config, loader)
    ctrl, model = create_compressed_model(model, config)
    bn = model.layer1[0].bn2
    before = bn.running_mean.clone()
    model.eval()
    ctrl.set_pruning_level(0.5)
    assert torch.equal(bn.running_mean, before)  # only asked for: not by set_pruning_level alone
    ctrl.set_pruning_level(0.5, run_batchnorm_adaptation=True)
    assert not torch.allclose(bn.running_mean, before)
    assert not model.training and not bn.training  # modes restored after the adaptation
    before = bn.running_mean.clone()
    ctrl.compression_rate = 0.3  # a level change from the training loop adapts on its own
    assert not torch.allclose(bn.running_mean, before)


def test_prune_filters_at_once():
    model = M.build("mobilenet_v2")
    x = model.make_input(batch=2)
    pruned, record = prune_filters(model, x, {"params": {"pruning_target": 0.5}})
    assert n_params(pruned) < n_params(model)
    assert pruned(x).shape == model(x).shape
    assert record.layers and all(
        len(a["out"].keep) < a["out"].size for a in record.layers.values() if "out" in a
    )
    again = apply_pruning_record(M.build("mobilenet_v2"), record)
    assert n_params(again) == n_params(pruned)
    _, by_flops = prune_filters(model, x, flops_target=0.3)
    assert by_flops.layers


def test_export_files_shrink(tmp_path):
    pytest.importorskip("onnxruntime")
    from nncompress.torch.export import export, run_onnxruntime

    ctrl, model, x = compress("unet", pruning_init=0.5, **ALL_LAYERS)
    stripped = ctrl.strip()
    dense = export(M.build("unet"), tmp_path / "dense.onnx", x)
    pruned = ctrl.export_model(str(tmp_path / "pruned.onnx"))
    assert pruned.stat().st_size < 0.4 * dense.stat().st_size
    with torch.no_grad():
        expected = stripped(x).numpy()
    np.testing.assert_allclose(run_onnxruntime(pruned, x)[0], expected, atol=1e-4, rtol=1e-4)
    pytest.importorskip("openvino")
    ir = ctrl.export_model(str(tmp_path / "pruned.xml"))
    dense_ir = export(M.build("unet"), tmp_path / "dense.xml", x)
    assert ir.with_suffix(".bin").stat().st_size < 0.4 * dense_ir.with_suffix(".bin").stat().st_size


def test_strip_detects_hidden_channel_use():
    class FixedView(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.register_buffer("offset", torch.linspace(0, 1, 8).view(1, 8, 1, 1))
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.c2(torch.relu(self.c1(x))) + self.offset  # a buffer: invisible to the graph
            return self.head(y)

    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 3, 8, 8]}, "compression": {"algorithm": "filter_pruning"}}
    )
    ctrl, model = create_compressed_model(FixedView(), config)
    ctrl.set_pruning_level(0.5)
    with pytest.raises(PruningError, match="fails to run|differs"):
        ctrl.strip()


class OddLayers(nn.Module):
    """PReLU and InstanceNorm follow their conv; a grouped conv keeps equal groups; a view flattens."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 12, 3, padding=1)
        self.act = nn.PReLU(12)
        self.norm = nn.InstanceNorm2d(12, affine=True)
        self.c2 = nn.Conv2d(12, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.c3 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = self.c2(self.norm(self.act(self.c1(torch.relu(self.stem(x))))))
        x = torch.relu(self.c3(self.grouped(x)))
        return self.fc(x.view(x.shape[0], -1))


def test_prelu_instancenorm_grouped_conv_and_view_flatten():
    torch.manual_seed(0)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [2, 3, 8, 8]},
            "compression": {"algorithm": "filter_pruning", "params": {"prune_downsample_convs": True}},
        }
    )
    ctrl, model = create_compressed_model(OddLayers(), config)
    text = ctrl.describe_groups()
    assert "groups=2: the same channels removed from every group" in text
    deps = ctrl.engine.deps
    scopes = {deps.layers[p].module_scope for g in deps.prunable_groups for p in g.producers}
    assert scopes == {"c1", "c2", "grouped", "c3"}  # the stem is the first layer
    ctrl.set_pruning_level(0.5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        masked = model(x)
    stripped = ctrl.strip()
    assert stripped.act.num_parameters == 6 and stripped.norm.num_features == 6
    assert stripped.grouped.groups == 2 and stripped.grouped.in_channels == stripped.c2.out_channels == 4
    assert stripped.fc.in_features == 3 * 16  # c3 kept 3 of 6 filters, 16 features each
    with torch.no_grad():
        torch.testing.assert_close(stripped(x), masked, atol=1e-5, rtol=1e-5)


class EmbeddingBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.hidden = nn.Linear(16, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(torch.relu(self.hidden(self.emb(ids).mean(dim=1))))


def test_embedding_dimensions_are_pruned():
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [2, 5], "type": "long"},
            "compression": {
                "algorithm": "filter_pruning",
                "pruning_init": 0.5,
                "params": {"prune_first_conv": True},
            },
        }
    )
    ctrl, model = create_compressed_model(EmbeddingBag(), config)
    ids = torch.randint(0, 20, (2, 5))
    with torch.no_grad():
        masked = model(ids)
    stripped = ctrl.strip()
    assert stripped.emb.embedding_dim == 8 and stripped.hidden.in_features == 8
    assert stripped.hidden.out_features == 4 and stripped.out.in_features == 4
    with torch.no_grad():
        torch.testing.assert_close(stripped(ids), masked)


def test_batchnorms_unmasked_still_strip_exactly():
    ctrl, model, x = compress("mobilenet_v2", pruning_init=0.5, prune_batch_norms=False)
    bn = model.features[1].conv[0][1]
    assert not any(
        isinstance(h, ChannelMask) and "batch_norm" in t.node for t, h in model.nncf.hook_manager.items()
    )
    with torch.no_grad():
        masked = model(x)
    stripped = ctrl.strip()
    assert stripped.features[1].conv[0][1].num_features < bn.num_features
    with torch.no_grad():
        torch.testing.assert_close(stripped(x), masked, atol=1e-5, rtol=1e-5)
