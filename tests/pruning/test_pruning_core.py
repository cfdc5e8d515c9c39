"""The backend-neutral pruning core on hand-built graphs: groups, importance, selection, FLOPs,
schedules, records and config errors (numpy only, no framework)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nncompress.errors import ConfigError, PruningError
from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo
from nncompress.graph import op_kinds as K
from nncompress.pruning import (
    FIXED,
    PruningRecord,
    analyze_channels,
    build_record,
    count_cost,
    filter_importance,
    make_schedule,
    select_channels,
    select_for_flops,
    unit_importance,
)
from nncompress.pruning.params import FilterPruningParams
from nncompress.pruning.selection import removed_count


class Toy:
    """Builds a Graph op by op; every op has one output whose shape is given."""

    def __init__(self) -> None:
        self.g = Graph("Toy")
        self.shapes: dict[str, tuple] = {}
        self.n = 0

    def _add(self, kind: str, inputs: list[str], shape: tuple | None, op_type: str = "", **kw) -> str:
        name = f"Toy/{op_type or kind}_{self.n}"
        self.n += 1
        node = Node(
            name, op_type or kind, kind, kw.pop("scope", name), kw.pop("attrs", {}), kw.pop("weights", {})
        )
        node.bias = kw.pop("bias", None)
        self.g.add_node(node)
        for port, src in enumerate(inputs):
            self.g.add_edge(Edge(src, 0, name, port, TensorInfo(self.shapes[src])))
        if shape is not None:
            self.shapes[name] = shape
        return name

    def input(self, shape: tuple) -> str:
        return self._add(K.INPUT, [], shape, "nncf_model_input")

    def output(self, src: str) -> str:
        return self._add(K.OUTPUT, [src], None, "nncf_model_output")

    def conv(
        self, src: str, cout: int, *, k: int = 3, stride: int = 1, groups: int = 1, scope: str = ""
    ) -> str:
        n, cin, h, w = self.shapes[src]
        oh, ow = h // stride, w // stride
        attrs = {
            "in_channels": cin,
            "out_channels": cout,
            "groups": groups,
            "kernel_size": (k, k),
            "stride": (stride, stride),
            "transpose": False,
        }
        kind = (
            K.CONVOLUTION
            if groups == 1
            else (K.DEPTHWISE_CONVOLUTION if groups == cin else K.GROUP_CONVOLUTION)
        )
        scope = scope or f"conv{self.n}"
        weights = {1: WeightInfo(f"{scope}.weight", (cout, cin // groups, k, k))}
        return self._add(kind, [src], (n, cout, oh, ow), "conv2d", attrs=attrs, weights=weights, scope=scope)

    def bn(self, src: str) -> str:
        c = self.shapes[src][1]
        scope = f"bn{self.n}"
        weights = {3: WeightInfo(f"{scope}.weight", (c,))}
        return self._add(
            K.BATCH_NORM,
            [src],
            self.shapes[src],
            "batch_norm",
            weights=weights,
            bias=f"{scope}.bias",
            scope=scope,
        )

    def unary(self, kind: str, src: str, shape: tuple | None = None, **attrs) -> str:
        return self._add(kind, [src], shape or self.shapes[src], attrs=attrs)

    def binary(self, kind: str, a: str, b: str) -> str:
        return self._add(kind, [a, b], self.shapes[a])

    def concat(self, srcs: list[str], axis: int = 1) -> str:
        shape = list(self.shapes[srcs[0]])
        shape[axis] = sum(self.shapes[s][axis] for s in srcs)
        return self._add(K.CONCAT, srcs, tuple(shape), "cat", attrs={"axis": axis})

    def linear(self, src: str, out: int, scope: str = "") -> str:
        n, f = self.shapes[src]
        scope = scope or f"fc{self.n}"
        weights = {1: WeightInfo(f"{scope}.weight", (out, f))}
        return self._add(
            K.MATMUL, [src], (n, out), "linear", weights=weights, bias=f"{scope}.bias", scope=scope
        )


def analyze(g: Graph, **kw):
    opts = {"prune_first_conv": True, "prune_downsample_convs": True}
    opts.update(kw)
    return analyze_channels(g, **opts)


def residual_toy():
    t = Toy()
    x = t.input((1, 3, 8, 8))
    stem = t.unary(K.RELU, t.bn(t.conv(x, 8, scope="stem")))
    a = t.unary(K.RELU, t.bn(t.conv(stem, 8, scope="a1")))
    a = t.bn(t.conv(a, 8, scope="a2"))
    s = t.unary(K.RELU, t.binary(K.ADD, a, stem))
    head = t.conv(s, 4, scope="head")
    t.output(t.unary(K.REDUCE_MEAN, head, (1, 4), axis=(2, 3), keepdim=False))
    return t


# -- groups ----------------------------------------------------------------------------------


def test_residual_add_joins_producers_and_batchnorm_follows():
    t = residual_toy()
    deps = analyze(t.g)
    stem, a2 = "Toy/conv2d_1", "Toy/conv2d_7"
    group = deps.group_of(stem)
    assert group is deps.group_of(a2)
    assert set(group.producers) == {stem, a2}
    assert any("Add" in c for c in group.couplings)
    assert len(group.followers) == 2  # the BatchNorms after stem and a2
    assert "Toy/conv2d_4" in group.consumers  # a1 reads the stem's channels
    assert group.num_channels == 8 and group.prunable
    # the head's channels reach the model output: left out, with the reason printed
    head = deps.group_of("Toy/conv2d_11")
    assert not head.prunable
    assert "reaches model output" in head.describe()


def test_first_and_downsample_convs_are_left_out_with_reasons():
    t = Toy()
    x = t.input((1, 3, 8, 8))
    c1 = t.conv(x, 8)
    c2 = t.conv(t.unary(K.RELU, c1), 8, stride=2)
    c3 = t.conv(c2, 8)
    t.output(t.conv(c3, 2))
    deps = analyze(t.g, prune_first_conv=False, prune_downsample_convs=False)
    text = deps.describe()
    assert not deps.group_of(c1).prunable and "prune_first_conv is false" in text
    assert not deps.group_of(c2).prunable and "prune_downsample_convs is false" in text
    assert deps.group_of(c3).prunable
    deps = analyze(t.g)
    assert deps.group_of(c1).prunable and deps.group_of(c2).prunable


def test_depthwise_follows_its_producer_and_grouped_convs_keep_equal_groups():
    t = Toy()
    x = t.input((1, 3, 8, 8))
    expand = t.conv(t.conv(x, 4), 8, k=1)
    dw = t.conv(expand, 8, groups=8)
    project = t.conv(dw, 4, k=1)
    grouped = t.conv(project, 8, groups=2)
    t.output(t.conv(grouped, 2))
    deps = analyze(t.g)
    g = deps.group_of(expand)
    assert dw in g.followers and project in g.consumers
    np.testing.assert_array_equal(deps.layers[dw].channel_units, deps.layers[expand].out_units)
    # groups=2 of 4 channels: the same offset of both groups goes together (project's filters
    # i and i + 2 form one unit, and so do the grouped conv's filters j and j + 4)
    p_units, g_units = deps.layers[project].out_units, deps.layers[grouped].out_units
    np.testing.assert_array_equal(p_units[:2], p_units[2:])
    np.testing.assert_array_equal(g_units[:4], g_units[4:])
    assert len(set(g_units.tolist())) == 4
    np.testing.assert_array_equal(deps.layers[grouped].in_units, p_units)
    assert "groups=2: the same channels removed from every group" in deps.group_of(project).describe()
    assert deps.group_of(project).prunable and deps.group_of(grouped).prunable
    # 8 groups of 1 input and 2 filters: whole groups (the grouped conv follows its inputs)
    t = Toy()
    x = t.input((1, 3, 8, 8))
    a = t.conv(t.conv(x, 4), 8, k=1)
    grouped = t.conv(a, 16, groups=8)
    t.output(t.conv(grouped, 2))
    deps = analyze(t.g)
    assert grouped in deps.group_of(a).followers
    np.testing.assert_array_equal(deps.layers[grouped].channel_units, np.repeat(deps.layers[a].out_units, 2))


def test_concat_offsets_and_flatten_into_linear():
    t = Toy()
    x = t.input((1, 3, 4, 4))
    a = t.conv(x, 2, scope="a")
    b = t.conv(x, 3, scope="b")
    cat = t.concat([a, b])
    c = t.conv(cat, 2, scope="c")
    flat = t.unary(K.FLATTEN, c, (1, 2 * 16), start_dim=1, end_dim=3)
    fc = t.linear(flat, 5)
    t.output(fc)
    deps = analyze(t.g)
    a_units, b_units = deps.layers[a].out_units, deps.layers[b].out_units
    np.testing.assert_array_equal(deps.layers[c].in_units, np.concatenate([a_units, b_units]))
    # channel k of c feeds features k*16 .. k*16+15 of the linear layer
    c_units = deps.layers[c].out_units
    np.testing.assert_array_equal(deps.layers[fc].in_units, np.repeat(c_units, 16))


def test_concat_with_a_model_input_part_keeps_those_positions_fixed():
    t = Toy()
    x = t.input((1, 3, 4, 4))
    a = t.conv(x, 2)
    cat = t.concat([a, x])
    c = t.conv(cat, 2)
    t.output(c)
    deps = analyze(t.g)
    units = deps.layers[c].in_units
    assert list(units[2:]) == [FIXED] * 3 and (units[:2] >= 0).all()


def test_squeeze_excitation_convs_follow_the_block():
    t = Toy()
    x = t.input((1, 3, 8, 8))
    body_conv = t.conv(t.conv(x, 4), 8, scope="body")
    body = t.unary(K.RELU, body_conv)
    pooled = t.unary(K.AVG_POOL, body, (1, 8, 1, 1))
    fc1 = t.conv(pooled, 2, k=1, scope="fc1")
    fc2 = t.conv(t.unary(K.RELU, fc1), 8, k=1, scope="fc2")
    gated = t.binary(K.MULTIPLY, body, t.unary(K.SIGMOID, fc2))
    out = t.conv(gated, 2, scope="out")
    t.output(out)
    deps = analyze(t.g)
    group = deps.group_of(body_conv)
    assert set(group.producers) == {body_conv, fc2}  # SE's expand conv is joined to the block channels
    assert fc1 in group.consumers and out in group.consumers  # SE's squeeze conv reads them
    assert deps.group_of(fc1).prunable


def test_reduction_over_channels_fixes_them():
    t = Toy()
    x = t.input((1, 3, 8, 8))
    c = t.conv(t.conv(x, 4), 6)
    t.output(t.unary(K.REDUCE_MEAN, c, (1, 8, 8), axis=(1,), keepdim=False))
    deps = analyze(t.g)
    assert "reduced across channels" in deps.group_of(c).describe()
    assert not deps.group_of(c).prunable


def test_excluded_and_unsupported_layers():
    t = residual_toy()
    deps = analyze(t.g, excluded={"Toy/conv2d_4": "'a1' matches ignored_scopes"})
    assert not deps.group_of("Toy/conv2d_4").prunable
    assert "ignored_scopes" in deps.describe()
    deps = analyze(t.g, supports=lambda node, role: "no pruner" if node.module_scope == "a2" else None)
    assert not deps.group_of("Toy/conv2d_1").prunable  # a2 is joined to the stem: the group stays


# -- importance, selection, FLOPs ----------------------------------------------------------------


def test_importance_criteria_on_known_weights():
    w = np.array([[1.0, -2.0, 2.0], [0.0, 0.0, 1.0], [3.0, 0.0, 4.0]])
    np.testing.assert_allclose(filter_importance(w, 0, "L1"), [5.0, 1.0, 7.0])
    np.testing.assert_allclose(filter_importance(w, 0, "L2"), [3.0, 1.0, 5.0])
    d01, d02, d12 = math.dist(w[0], w[1]), math.dist(w[0], w[2]), math.dist(w[1], w[2])
    np.testing.assert_allclose(
        filter_importance(w, 0, "geometric_median"), [d01 + d02, d01 + d12, d02 + d12], rtol=1e-9
    )
    # filters along axis 1 (transposed convolutions)
    np.testing.assert_allclose(filter_importance(w.T, 1, "L1"), [5.0, 1.0, 7.0])
    with pytest.raises(ConfigError, match="unknown filter importance"):
        filter_importance(w, 0, "L3")


def _toy_weights(deps, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for lay in deps.producers():
        shape = [1] * 4
        shape[0] = len(lay.out_units)
        shape[1] = 3
        out[lay.weight] = rng.normal(size=shape) * (1 + np.arange(shape[0])).reshape(-1, 1, 1, 1)
    return out


def test_group_importance_averages_coupled_filters():
    t = residual_toy()
    deps = analyze(t.g)
    weights = {lay.weight: np.ones((len(lay.out_units), 2)) for lay in deps.producers()}
    stem = deps.layers["Toy/conv2d_1"]
    weights[stem.weight] = np.arange(16, dtype=float).reshape(8, 2)  # L1 = 1, 5, 9, ...
    imp = unit_importance(deps, weights, "L1")
    # stem and a2 share units: mean of stem's L1 and a2's (=2)
    np.testing.assert_allclose(imp[stem.out_units], (np.arange(8) * 4 + 1 + 2) / 2)


def test_global_importance_sums_normalized_or_learned_scores():
    t = residual_toy()
    deps = analyze(t.g)
    weights = {lay.weight: np.ones((len(lay.out_units), 2)) for lay in deps.producers()}
    stem = deps.layers["Toy/conv2d_1"]
    weights[stem.weight] = np.arange(16, dtype=float).reshape(8, 2)
    a2 = next(
        lay
        for lay in deps.producers()
        if lay.weight != stem.weight and set(lay.out_units) == set(stem.out_units)
    )
    stem_l1 = np.arange(8) * 4 + 1.0
    # NNCF's global ranking: each layer's weights over their L2 norm, summed over coupled layers
    imp = unit_importance(deps, weights, "L1", normalize=True, reduce="sum")
    expected = stem_l1 / np.linalg.norm(weights[stem.weight]) + 2.0 / np.linalg.norm(weights[a2.weight])
    np.testing.assert_allclose(imp[stem.out_units], expected)
    # LeGR: scale * score + shift per layer (by module path), then summed; others stay (1, 0)
    key = deps.short_name(stem.node)
    imp = unit_importance(deps, weights, "L1", reduce="sum", coeffs={key: (0.5, -3.0)})
    np.testing.assert_allclose(imp[stem.out_units], 0.5 * stem_l1 - 3.0 + 2.0)
    with pytest.raises(PruningError, match="reduce"):
        unit_importance(deps, weights, "L1", reduce="max")


def test_round_to_keeps_multiples_like_nncf():
    # NNCF 2.19: kept = ceil((n - n * level) / 8) * 8
    assert [removed_count(32, p, 8) for p in (0.1, 0.22, 0.25, 0.35, 0.5)] == [0, 0, 8, 8, 16]
    assert [removed_count(32, p) for p in (0.1, 0.22, 0.25, 0.35, 0.5)] == [3, 7, 8, 11, 16]
    assert removed_count(8, 0.5, 8) == 0 and removed_count(6, 0.9, 8) == 0
    t = residual_toy()
    deps = analyze(t.g)
    imp = unit_importance(deps, _toy_weights(deps), "L2")
    # two groups of 8 channels: at 0.7, 3 stay (floor(5.6) go), rounded up to 4; at 0.5 with
    # round_to=8 nothing goes; the rounded selection keeps the most important of the plain one
    for level, round_to, plain_kept, rounded_kept in ((0.7, 4, 3, 4), (0.5, 8, 4, 8)):
        plain = select_channels(deps, imp, level, all_weights=False)
        rounded = select_channels(deps, imp, level, all_weights=False, round_to=round_to)
        for g in deps.prunable_groups:
            assert int(plain.keep[g.units].sum()) == plain_kept
            assert int(rounded.keep[g.units].sum()) == rounded_kept
            assert (rounded.keep[g.units] >= plain.keep[g.units]).all()
    with pytest.raises(PruningError, match="round_to"):
        select_channels(deps, imp, 0.5, all_weights=False, round_to=0)


def test_per_group_and_global_selection():
    t = residual_toy()
    deps = analyze(t.g)
    imp = unit_importance(deps, _toy_weights(deps), "L2")
    sel = select_channels(deps, imp, 0.5, all_weights=False)
    for g in deps.prunable_groups:
        assert (~sel.keep[g.units]).sum() == g.num_channels // 2
        removed = g.units[~sel.keep[g.units]]
        kept = g.units[sel.keep[g.units]]
        assert imp[removed].max() <= imp[kept].min()
    glob = select_channels(deps, imp, 0.5, all_weights=True)
    total = sum(g.num_channels for g in deps.prunable_groups)
    assert glob.num_removed == total // 2
    # a global level that would empty a group keeps its best channel and says so
    imp2 = np.full(deps.num_units, 10.0)
    weak = deps.prunable_groups[0]
    imp2[weak.units] = np.linspace(0.1, 0.2, weak.num_channels)
    assert int(0.6 * total) > weak.num_channels  # the 60% least important include all of it
    glob = select_channels(deps, imp2, 0.6, all_weights=True)
    assert glob.keep[weak.units].sum() == 1 and glob.keep[weak.units][-1]
    assert any("most important channel is kept" in n for n in glob.notes)


def test_pruning_level_must_be_below_one():
    t = residual_toy()
    deps = analyze(t.g)
    imp = np.ones(deps.num_units)
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"\[0, 1\)"):
            select_channels(deps, imp, bad, all_weights=False)
    with pytest.raises(ConfigError, match="pruning_target"):
        FilterPruningParams.from_section({"algorithm": "filter_pruning", "params": {"pruning_target": 1.0}})
    with pytest.raises(ConfigError, match="all_weights"):
        FilterPruningParams.from_section(
            {
                "algorithm": "filter_pruning",
                "params": {"interlayer_ranking_type": "learned_ranking", "all_weights": False},
            }
        )
    legr = FilterPruningParams.from_section(
        {"algorithm": "filter_pruning", "params": {"interlayer_ranking_type": "learned_ranking"}}
    )
    assert legr.learned_ranking and legr.all_weights and legr.prune_first_conv and legr.prune_downsample_convs
    assert legr.legr is not None and legr.legr.generations == 400 and legr.legr.max_pruning is None
    with pytest.raises(ConfigError, match="legr_params"):
        FilterPruningParams.from_section({"algorithm": "filter_pruning", "params": {"legr_params": {}}})


def test_flops_and_params_counting():
    t = Toy()
    x = t.input((2, 3, 8, 8))
    c1 = t.conv(x, 4)
    c2 = t.conv(t.unary(K.RELU, c1), 6, stride=2)
    flat = t.unary(K.FLATTEN, c2, (2, 6 * 16), start_dim=1, end_dim=3)
    t.output(t.linear(flat, 10))
    cost = count_cost(t.g)
    f1 = 2 * 64 * 4 * 3 * 9
    f2 = 2 * 16 * 6 * 4 * 9
    f3 = 2 * 96 * 10
    assert cost.flops == f1 + f2 + f3
    assert cost.params == 4 * 3 * 9 + 6 * 4 * 9 + 96 * 10 + 10
    deps = analyze(t.g)
    keep = np.ones(deps.num_units, dtype=bool)
    keep[deps.layers[c1].out_units[:2]] = False  # 4 -> 2 filters
    keep[deps.layers[c2].out_units[:3]] = False  # 6 -> 3 filters: 48 linear inputs
    pruned = count_cost(t.g, deps, keep)
    assert pruned.flops == 2 * 64 * 2 * 3 * 9 + 2 * 16 * 3 * 2 * 9 + 2 * 48 * 10
    assert pruned.params == 2 * 3 * 9 + 3 * 2 * 9 + 48 * 10 + 10


def test_flops_target_search():
    t = residual_toy()
    deps = analyze(t.g)
    imp = unit_importance(deps, _toy_weights(deps), "L2")
    original = count_cost(t.g).flops
    for target in (0.2, 0.4):
        sel = select_for_flops(t.g, deps, imp, target, all_weights=False)
        reached = 1 - sel.cost.flops / original
        assert target <= reached < target + 0.2
        # a slightly lower level does not reach the target: the search found the smallest level
        lower = select_channels(deps, imp, max(sel.level - 0.01, 0.0), all_weights=False)
        assert 1 - count_cost(t.g, deps, lower.keep).flops / original <= reached
    with pytest.raises(PruningError, match="cannot be reached"):
        select_for_flops(t.g, deps, imp, 0.99, all_weights=False)


# -- schedules ---------------------------------------------------------------------------------


def test_schedules():
    base = make_schedule("baseline", initial=0.1, target=0.5, steps=10, num_init_steps=2)
    assert [base.level(e) for e in (-1, 0, 1, 2, 50)] == [0.1, 0.1, 0.1, 0.5, 0.5]
    exp = make_schedule("exponential", initial=0.0, target=0.5, steps=10, num_init_steps=1)
    assert exp.level(-1) == exp.level(0) == exp.level(1) == 0.0
    # NNCF 2.x counting: the target is reached in the pruning_steps-th epoch (t = steps - 1)
    assert exp.level(6) == pytest.approx(1 - 0.5 ** (5 / 9))
    assert exp.level(9) < 0.5 and exp.level(10) == exp.level(100) == 0.5
    three = make_schedule("exponential", initial=0.1, target=0.5, steps=3, num_init_steps=0)
    assert [round(three.level(e), 3) for e in range(4)] == [0.1, 0.329, 0.5, 0.5]
    levels = [exp.level(e) for e in range(12)]
    assert levels == sorted(levels)
    bias = make_schedule("exponential_with_bias", initial=0.2, target=0.6, steps=8, num_init_steps=0)
    assert bias.level(0) == pytest.approx(0.2) and bias.level(7) == pytest.approx(0.6)
    levels = [bias.level(e) for e in range(9)]
    assert levels == sorted(levels)
    # fast early: more than half of the way after a quarter of the steps
    assert levels[2] - 0.2 > (0.6 - 0.2) / 2
    with pytest.raises(ConfigError, match="unknown schedule"):
        make_schedule("linear", initial=0, target=0.5, steps=3, num_init_steps=0)


# -- records -----------------------------------------------------------------------------------


def test_record_round_trip_and_validation(tmp_path):
    t = residual_toy()
    deps = analyze(t.g)
    imp = unit_importance(deps, _toy_weights(deps), "L1")
    sel = select_channels(deps, imp, 0.5, all_weights=False)
    record = build_record(deps, sel.keep)
    assert set(record.layers) == {"stem", "a1", "a2", "head", "bn2", "bn5", "bn8"}
    assert len(record.layers["a1"]["out"].keep) == 4 and len(record.layers["head"]["in"].keep) == 4
    assert record.layers["stem"]["out"] == record.layers["head"]["in"]  # joined by the residual add
    path = record.save(tmp_path / "record.json")
    again = PruningRecord.load(path)
    assert again.to_dict() == record.to_dict()
    assert json.loads(path.read_text())["format"] == "nncompress.pruning_record"
    bad = record.to_dict()
    bad["layers"]["a1"]["out"]["keep"] = []
    with pytest.raises(PruningError, match="'a1'.*keeps no channel"):
        PruningRecord.from_dict(bad)
    bad["layers"]["a1"]["out"]["keep"] = [3, 1]
    with pytest.raises(PruningError, match="ascending"):
        PruningRecord.from_dict(bad)
    with pytest.raises(PruningError, match="not a pruning record"):
        PruningRecord.from_dict({"layers": {}})
