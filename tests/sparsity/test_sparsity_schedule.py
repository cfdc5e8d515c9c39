"""Core sparsity pieces (numpy only): schedules as NNCF 2.x computes them, parameters, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.errors import CompressionStateError, ConfigError
from nncompress.sparsity import (
    SparsityParams,
    exponential_level,
    importance,
    make_sparsity_scheduler,
    multistep_level,
    polynomial_level,
    select_threshold,
    select_thresholds,
)
from nncompress.sparsity.statistics import (
    LayerThreshold,
    MagnitudeSparsityStatistics,
    SparsifiedLayerSummary,
    SparsifiedModelStatistics,
)


class FakeController:
    """Records what a scheduler asks of a controller."""

    def __init__(self, reached: float = 0.0):
        self.levels: list[float] = []
        self.frozen = False
        self.freeze_calls = 0
        self.reached_sparsity = reached

    def set_sparsity_level(self, level: float) -> None:
        assert not self.frozen, "a frozen controller must not get new levels from the scheduler"
        self.levels.append(level)

    def freeze(self) -> None:
        self.frozen = True
        self.freeze_calls += 1


def params(algorithm: str = "magnitude_sparsity", init: float | None = None, **p) -> SparsityParams:
    section = {"algorithm": algorithm, "params": p}
    if init is not None:
        section["sparsity_init"] = init
    return SparsityParams.from_section(section)


# -- level functions ---------------------------------------------------------------------------


def test_polynomial_level_concave_convex_and_linear():
    linear = polynomial_level(init=0.0, target=0.5, target_epoch=4, power=1.0, concave=True)
    assert [linear(e) for e in range(6)] == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
    concave = polynomial_level(init=0.1, target=0.5, target_epoch=4, power=2.0, concave=True)
    convex = polynomial_level(init=0.1, target=0.5, target_epoch=4, power=2.0, concave=False)
    # concave: target - (target - init) * (1 - p)^power; convex: init + (target - init) * p^power
    assert concave(1) == pytest.approx(0.5 - 0.4 * 0.75**2)
    assert convex(1) == pytest.approx(0.1 + 0.4 * 0.25**2)
    assert concave(1) > convex(1)
    assert concave(0) == pytest.approx(0.1) and convex(0) == pytest.approx(0.1)
    # fractional epochs: step 2 of 4 in epoch 1 is epoch 1.5
    assert linear(1, 2, 4) == pytest.approx(0.5 * 1.5 / 4)
    assert polynomial_level(init=0.1, target=0.6, target_epoch=0, power=0.9, concave=True)(0) == 0.6


def test_exponential_level_decays_density_geometrically():
    f = exponential_level(init=0.2, target=0.8, target_epoch=10)
    assert f(0) == pytest.approx(0.2) and f(10) == pytest.approx(0.8) and f(50) == pytest.approx(0.8)
    for e in range(11):
        assert 1 - f(e) == pytest.approx(0.8 * (0.2 / 0.8) ** (e / 10))
    assert all(a < b for a, b in zip([f(e) for e in range(10)], [f(e) for e in range(1, 11)]))


def test_multistep_level():
    f = multistep_level([2, 5], [0.1, 0.4, 0.7])
    assert [f(e) for e in range(7)] == [0.1, 0.1, 0.4, 0.4, 0.4, 0.7, 0.7]
    with pytest.raises(ConfigError, match="one more entry"):
        multistep_level([2, 5], [0.1, 0.4])


# -- schedulers with a controller ---------------------------------------------------------------


def test_polynomial_scheduler_sets_levels_by_epoch_and_freezes():
    ctrl = FakeController()
    s = make_sparsity_scheduler(
        ctrl,
        params(
            init=0.1,
            schedule="polynomial",
            sparsity_target=0.5,
            sparsity_target_epoch=4,
            power=1.0,
            sparsity_freeze_epoch=6,
        ),
    )
    assert s.current_sparsity_level == pytest.approx(0.1)  # before the first epoch
    for _ in range(8):
        s.epoch_step()
        for _ in range(3):
            s.step()  # per-epoch mode: steps do not change the level
    assert ctrl.levels == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.5])  # epochs 0..5
    assert ctrl.frozen and ctrl.freeze_calls == 1  # frozen at epoch 6, not asked again at 7
    assert s.current_epoch == 7 and s.current_step == 23


def test_polynomial_scheduler_per_optimizer_step():
    ctrl = FakeController()
    s = make_sparsity_scheduler(
        ctrl,
        params(
            init=0.0,
            schedule="polynomial",
            sparsity_target=0.4,
            sparsity_target_epoch=2,
            power=1.0,
            update_per_optimizer_step=True,
            steps_per_epoch=4,
        ),
    )
    s.epoch_step()
    assert ctrl.levels == []  # per-step mode: the level moves with steps
    for _ in range(4):
        s.step()
    assert ctrl.levels == pytest.approx([0.0, 0.05, 0.1, 0.15])
    s.epoch_step()
    s.step()
    assert ctrl.levels[-1] == pytest.approx(0.2)
    for _ in range(2):
        s.step()
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        s.epoch_step()  # 3 steps ran, 4 announced


def test_polynomial_scheduler_counts_first_epoch_without_steps_per_epoch():
    ctrl = FakeController()
    s = make_sparsity_scheduler(
        ctrl,
        params(
            schedule="polynomial",
            sparsity_target=0.4,
            sparsity_target_epoch=2,
            power=1.0,
            update_per_optimizer_step=True,
        ),
    )
    s.epoch_step()
    for _ in range(5):
        s.step()
    assert ctrl.levels == [] and s.current_epoch == -1 and s.current_step == -1
    s.epoch_step()  # learns 5 steps per epoch; this is epoch 0
    assert s.steps_per_epoch == 5 and s.current_epoch == 0
    s.step()
    s.step()
    assert ctrl.levels == pytest.approx([0.0, 0.04])


def test_exponential_and_multistep_schedulers():
    ctrl = FakeController()
    s = make_sparsity_scheduler(
        ctrl, params("rb_sparsity", init=0.0, sparsity_target=0.75, sparsity_target_epoch=2)
    )
    assert s.name == "exponential"  # RB's default
    for _ in range(3):
        s.epoch_step()
    assert ctrl.levels == pytest.approx([0.0, 0.5, 0.75])
    ctrl = FakeController()
    s = make_sparsity_scheduler(
        ctrl, params(schedule="multistep", multistep_steps=[1, 3], multistep_sparsity_levels=[0.2, 0.4, 0.6])
    )
    assert s.target_level == 0.6
    for _ in range(5):
        s.epoch_step()
    assert ctrl.levels == [0.2, 0.4, 0.4, 0.6, 0.6]


def test_adaptive_scheduler_raises_level_after_patience():
    ctrl = FakeController(reached=0.0)
    s = make_sparsity_scheduler(
        ctrl, params("rb_sparsity", init=0.1, schedule="adaptive", sparsity_target=0.2, patience=2)
    )
    s.epoch_step()
    assert ctrl.levels == [0.1]  # 0.0 reached: far from 0.1, no bad epoch
    ctrl.reached_sparsity = 0.09  # within 0.03 of the level
    s.epoch_step()
    s.epoch_step()
    assert ctrl.levels == pytest.approx([0.1, 0.1, 0.15])
    ctrl.reached_sparsity = 0.2
    for _ in range(4):
        s.epoch_step()
    assert ctrl.levels[-1] == pytest.approx(0.2)  # capped at the target
    state = s.get_state()
    other = make_sparsity_scheduler(
        FakeController(),
        params("rb_sparsity", init=0.1, schedule="adaptive", sparsity_target=0.2, patience=2),
    )
    other.load_state(state)
    assert other.current_sparsity_level == s.current_sparsity_level and other.current_epoch == s.current_epoch
    with pytest.raises(CompressionStateError, match="num_bad_epochs"):
        other.load_state({"current_step": 0, "current_epoch": 0})


def test_scheduler_state_round_trip():
    p = params(
        schedule="polynomial",
        sparsity_target=0.5,
        sparsity_target_epoch=4,
        update_per_optimizer_step=True,
        steps_per_epoch=3,
    )
    a = make_sparsity_scheduler(FakeController(), p)
    a.epoch_step()
    for _ in range(2):
        a.step()
    b = make_sparsity_scheduler(FakeController(), p)
    b.load_state(a.get_state())
    assert b.current_sparsity_level == a.current_sparsity_level
    a.step()
    b.step()
    assert b.current_sparsity_level == pytest.approx(a.current_sparsity_level)


# -- parameters --------------------------------------------------------------------------------


def test_params_read_schema_defaults():
    p = params()
    assert (p.schedule, p.sparsity_target, p.sparsity_target_epoch, p.sparsity_freeze_epoch) == (
        "polynomial",
        0.5,
        90,
        100,
    )
    assert p.mode == "global" and p.weight_importance == "normed_abs" and p.power == 0.9 and p.concave
    assert params("rb_sparsity").schedule == "exponential"


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"params": {"sparsity_target": 1.2}}, r"params.sparsity_target.*\[0, 1\)"),
        ({"params": {"sparsity_target": 1.0}}, r"params.sparsity_target.*\[0, 1\)"),
        ({"sparsity_init": -0.1}, r"sparsity_init.*\[0, 1\)"),
        (
            {
                "params": {
                    "schedule": "multistep",
                    "multistep_steps": [2, 4],
                    "multistep_sparsity_levels": [0.1, 0.5],
                }
            },
            "multistep_sparsity_levels: needs one more entry",
        ),
        (
            {
                "params": {
                    "schedule": "multistep",
                    "multistep_steps": [4, 2],
                    "multistep_sparsity_levels": [0, 0.1, 0.5],
                }
            },
            "multistep_steps: steps must increase",
        ),
        ({"params": {"schedule": "adaptive"}}, "adaptive.*magnitude_sparsity has no such loss"),
        ({"sparsity_init": 0.6, "params": {"sparsity_target": 0.3}}, "below sparsity_init"),
    ],
)
def test_bad_params_are_config_errors_with_paths(section, match):
    with pytest.raises(ConfigError, match=match) as info:
        SparsityParams.from_section({"algorithm": "magnitude_sparsity", **section}, "compression[1]")
    assert all(path.startswith("compression[1].") for path, _ in info.value.problems)


def test_config_validation_catches_out_of_range_and_multistep():
    from nncompress import NNCFConfig

    with pytest.raises(ConfigError, match="sparsity_target"):
        NNCFConfig.from_dict(
            {
                "input_info": {"sample_size": [1, 3]},
                "compression": {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 1.5}},
            }
        )
    with pytest.raises(ConfigError, match="one more entry"):
        NNCFConfig.from_dict(
            {
                "input_info": {"sample_size": [1, 3]},
                "compression": {
                    "algorithm": "rb_sparsity",
                    "params": {
                        "schedule": "multistep",
                        "multistep_steps": [1],
                        "multistep_sparsity_levels": [0.5],
                    },
                },
            }
        )


# -- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 0.1, 0.33, 0.5, 0.9])
def test_threshold_zeroes_the_level_within_one_weight(level):
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(size=1000))
    t = select_threshold(values, level)
    zeroed = int((values <= t).sum())
    assert abs(zeroed - level * values.size) <= 1


def test_global_and_local_thresholds():
    rng = np.random.default_rng(1)
    small = rng.normal(scale=0.01, size=(50, 4))  # a layer of small weights
    big = rng.normal(scale=1.0, size=(100,))
    level = 0.5
    for kind in ("abs", "normed_abs"):
        imps = [importance(small, kind), importance(big, kind)]
        local = select_thresholds(imps, level, "local")
        for v, t in zip(imps, local):
            assert abs(int((v <= t).sum()) - level * v.size) <= 1  # each layer reaches the level
        glob = select_thresholds(imps, level, "global")
        assert glob[0] == glob[1]
        zeroed = [int((v <= t).sum()) for v, t in zip(imps, glob)]
        assert abs(sum(zeroed) - level * 300) <= 1  # the layers together reach it
        if kind == "abs":
            assert zeroed == [150, 0]  # |w| alone: only the small layer loses weights
        else:
            assert zeroed[0] < 150 and zeroed[1] > 5  # normed: both layers lose weights
    assert importance(np.zeros(3), "normed_abs").tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="sparsity_level_setting_mode"):
        select_thresholds([small], 0.5, "per_layer")


def test_statistics_string_shows_layers_and_total():
    layers = [
        SparsifiedLayerSummary(
            "Net/Conv2d[a]/conv2d_0", (4, 1, 3, 3), 0.5, 36 / 136 * 100, zeros=18, numel=36
        ),
        SparsifiedLayerSummary(
            "Net/Linear[fc]/linear_0", (10, 10), 0.25, 100 / 136 * 100, zeros=25, numel=100
        ),
    ]
    model = SparsifiedModelStatistics(43 / 150, 43 / 136, layers, total_params=150, total_zeros=43)
    text = MagnitudeSparsityStatistics(
        model, [LayerThreshold(s.name, 0.1) for s in layers], 0.5, 0.3
    ).to_str()
    assert "Net/Conv2d[a]/conv2d_0" in text and "18/36" in text and "4x1x3x3" in text
    assert "43/136" in text and "31.6%" in text and "28.7%" in text  # 43/136 and 43/150
    assert "Sparsity level set: 30.0%" in text
