"""Channel groups of traced zoo models: residual adds, depthwise, squeeze-excitation, concat,
layers left out and why, scopes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_TORCH_TESTS = str(Path(__file__).resolve().parent.parent)
if _TORCH_TESTS not in sys.path:
    sys.path.insert(0, _TORCH_TESTS)

import models as M  # noqa: E402

from nncompress.errors import PruningError, ScopeError  # noqa: E402
from nncompress.pruning.params import FilterPruningParams  # noqa: E402
from nncompress.torch.pruning.engine import TorchFilterPruning  # noqa: E402
from nncompress.torch.tracing import trace  # noqa: E402


def engine_for(name: str, **params):
    section = {"algorithm": "filter_pruning", "params": {}}
    for key in ("ignored_scopes", "target_scopes"):
        if key in params:
            section[key] = params.pop(key)
    section["params"].update(params)
    model = M.build(name)
    graph = trace(model, model.make_input())
    return TorchFilterPruning(model, graph, FilterPruningParams.from_section(section), masked=False)


def node(deps, scope: str) -> str:
    (name,) = [n for n, lay in deps.layers.items() if lay.module_scope == scope]
    return name


def producers(deps, group) -> set[str]:
    return {deps.layers[p].module_scope for p in group.producers}


def test_resnet_stage_residual_group():
    deps = engine_for("resnet", prune_first_conv=True, prune_downsample_convs=True).deps
    stage1 = deps.group_of(node(deps, "layer1.0.conv2"))
    # every conv feeding the adds of stage 1 (the stem feeds the first identity shortcut)
    assert producers(deps, stage1) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert {deps.layers[f].module_scope for f in stage1.followers} == {"bn1", "layer1.0.bn2", "layer1.1.bn2"}
    readers = {deps.layers[c].module_scope for c in stage1.consumers}
    assert readers == {"layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"}
    stage2 = deps.group_of(node(deps, "layer2.0.conv2"))
    assert producers(deps, stage2) == {"layer2.0.conv2", "layer2.0.downsample.0"}
    assert {deps.layers[c].module_scope for c in stage2.consumers} == {"fc"}
    # inner block convs are groups of their own
    assert producers(deps, deps.group_of(node(deps, "layer1.0.conv1"))) == {"layer1.0.conv1"}
    assert not deps.group_of(node(deps, "fc")).prunable


def test_resnet_defaults_leave_out_first_and_downsample_convs():
    deps = engine_for("resnet").deps
    text = deps.describe()
    assert not deps.group_of(node(deps, "conv1")).prunable
    assert not deps.group_of(node(deps, "layer2.0.conv2")).prunable
    assert "first layer 'ResNet/Conv2d[conv1]/conv2d_0' (prune_first_conv is false)" in text
    assert "prune_downsample_convs is false" in text
    assert {producers(deps, g).pop() for g in deps.prunable_groups} == {"layer1.0.conv1", "layer1.1.conv1"}


def test_mobilenet_depthwise_follows_expansion():
    deps = engine_for("mobilenet_v2").deps
    expand = node(deps, "features.2.conv.0.0")
    dw = node(deps, "features.2.conv.1.0")
    group = deps.group_of(expand)
    assert group.prunable and dw in group.followers
    np.testing.assert_array_equal(deps.layers[dw].channel_units, deps.layers[expand].out_units)
    assert {deps.layers[c].module_scope for c in group.consumers} == {"features.2.conv.2"}
    residual = deps.group_of(node(deps, "features.3.conv.2"))
    assert producers(deps, residual) == {"features.2.conv.2", "features.3.conv.2"}


@pytest.mark.parametrize("name", ["senet", "efficientnet"])
def test_squeeze_excitation_convs_follow_block_channels(name):
    deps = engine_for(name).deps
    se = "se" if name == "senet" else "blocks.1.se"
    fc1, fc2 = node(deps, f"{se}.fc1"), node(deps, f"{se}.fc2")
    group = deps.group_of(fc2)
    assert fc1 in group.consumers  # the squeeze conv reads the block's channels
    assert any("Multiply" in c for c in group.couplings)
    if name == "efficientnet":
        assert producers(deps, group) == {"blocks.1.expand.0", "blocks.1.se.fc2"}
        assert group.prunable
    assert deps.group_of(fc1).prunable  # the squeezed channels are a group of their own


def test_unet_concat_reads_each_part_at_its_offset():
    deps = engine_for("unet").deps
    dec1 = deps.layers[node(deps, "dec1.0")]
    up, skip = deps.layers[node(deps, "dec2.2")], deps.layers[node(deps, "enc1.2")]
    np.testing.assert_array_equal(dec1.in_units, np.concatenate([up.out_units, skip.out_units]))
    dec2 = deps.layers[node(deps, "dec2.0")]
    tconv = deps.layers[node(deps, "up2")]
    np.testing.assert_array_equal(dec2.in_units[:16], tconv.out_units)
    assert len(deps.prunable_groups) == 10


def test_transformer_only_mlp_hidden_layers_are_prunable():
    deps = engine_for("transformer").deps
    assert {producers(deps, g).pop() for g in deps.prunable_groups} == {"layers.0.mlp.0", "layers.1.mlp.0"}
    text = deps.describe()
    assert "normalized over channels" in text  # LayerNorm keeps the residual stream whole
    assert "split along channels" in text  # qkv chunk


def test_scopes_keep_filters(tmp_path):
    conv = "ResNet/Sequential[layer1]/BasicBlock[0]/NNCFConv2d[conv1]/conv2d_0"  # NNCF spelling accepted
    deps = engine_for("resnet", ignored_scopes=[conv]).deps
    group = deps.group_of(node(deps, "layer1.0.conv1"))
    assert not group.prunable and "matches ignored_scopes" in group.describe()
    deps = engine_for("resnet", target_scopes=["{re}.*BasicBlock\\[1\\]/Conv2d\\[conv1\\].*"]).deps
    assert [producers(deps, g).pop() for g in deps.prunable_groups] == ["layer1.1.conv1"]
    with pytest.raises(ScopeError, match="matched no node"):
        engine_for("resnet", ignored_scopes=["ResNet/Conv2d[nope]/conv2d_0"])


def test_nothing_to_prune_is_an_error_with_the_groups():
    eng = engine_for("functional")
    with pytest.raises(PruningError, match="no layer of the model can be pruned") as info:
        eng.require_prunable()
    assert "split along channels" in str(info.value)


def test_shared_module_with_input_from_model_stays():
    deps = engine_for("shared", prune_first_conv=True).deps
    assert not deps.prunable_groups
    assert "another use of the weight 'fc.weight'" in deps.describe()
