"""The accuracy-aware loops' decisions, on a fake controller whose accuracy is known in advance."""

from __future__ import annotations

import json
import logging

import pytest
from aat_fakes import FakeController, FakeModel, FixedController, Recorder, aat_config

from nncompress.common.accuracy_aware_training import (
    AccuracyAwareTrainingError,
    AdaptiveCompressionTrainingLoop,
    EarlyExitCompressionTrainingLoop,
    create_accuracy_aware_training_loop,
)
from nncompress.errors import ConfigError

ADAPTIVE = "adaptive_compression_level"


def _records(loop) -> list[dict]:
    lines = (loop.runner.log_dir / "compression_stats.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _run(loop, rec: Recorder, model: FakeModel, tmp_path, **kwargs):
    return loop.run(
        model,
        rec.train_epoch_fn,
        rec.validate_fn,
        configure_optimizers_fn=rec.configure_optimizers_fn,
        log_dir=tmp_path,
        **kwargs,
    )


def test_adaptive_settles_on_the_highest_level_within_budget(tmp_path):
    # within budget (drop <= 0.01) exactly up to level 0.55
    model = FakeModel()
    ctrl = FakeController(model, rate=0.3)
    rec = Recorder(ctrl, lambda rate, epochs: 0.9 if rate <= 0.55 + 1e-9 else 0.8)
    config = aat_config(
        ADAPTIVE,
        maximal_absolute_accuracy_degradation=0.01,
        initial_training_phase_epochs=1,
        patience_epochs=1,
        initial_compression_rate_step=0.1,
        compression_rate_step_reduction_factor=0.5,
        minimal_compression_rate_step=0.025,
        maximal_total_epochs=50,
    )
    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=0.9)
    assert isinstance(loop, AdaptiveCompressionTrainingLoop)
    best = _run(loop, rec, model, tmp_path)

    # up by 0.1 while within budget, then halve the step at every change of direction until < 0.025
    assert [c["rate"] for c in rec.train_calls] == [0.4, 0.5, 0.6, 0.55, 0.575, 0.5625]
    # the learning rate of each restart is reduced with every change of direction
    assert [c["lr"] for c in rec.train_calls] == [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    assert [c["epoch"] for c in rec.train_calls] == [0, 1, 2, 3, 4, 5]
    assert ctrl.scheduler_disabled
    # the returned model is the 0.55 checkpoint (a copy: the model is not a torch module)
    assert best is not model and best.trained_at[-1] == 0.55
    assert ctrl.compression_rate == 0.55
    stats = loop.statistics
    assert stats.criterion_met and stats.compression_rate == 0.55
    assert stats.compressed_accuracy == 0.9 and stats.accuracy_budget == pytest.approx(0.01)
    assert loop.runner.compressed_training_history[0.6] == pytest.approx(-0.09)
    records = _records(loop)
    assert [r["compression_rate"] for r in records] == [0.3, 0.4, 0.5, 0.6, 0.55, 0.575, 0.5625]
    assert all(r["mode"] == ADAPTIVE for r in records)
    summary = json.loads((loop.runner.log_dir / "summary.json").read_text())
    assert summary["criterion_met"] is True and summary["compression_rate"] == 0.55
    assert summary["best_checkpoint"] == "acc_aware_checkpoint_best.pkl"


def test_adaptive_cannot_meet_the_target_keeps_the_most_accurate_model(tmp_path, caplog):
    model = FakeModel()
    ctrl = FakeController(model, rate=0.3)
    # every level loses accuracy; less compression loses less
    rec = Recorder(ctrl, lambda rate, epochs: 0.85 - 0.1 * rate)
    config = aat_config(
        ADAPTIVE,
        maximal_relative_accuracy_degradation=0.0,
        initial_training_phase_epochs=1,
        patience_epochs=1,
        maximal_total_epochs=20,
    )
    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=0.9)
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        best = _run(loop, rec, model, tmp_path)
    # down by 0.1 per epoch until the level would go below 0
    assert [c["rate"] for c in rec.train_calls] == [0.3, 0.2, 0.1, 0.0]
    assert "Cannot produce a compressed model within the accuracy budget" in caplog.text
    assert "returning the most accurate model kept" in caplog.text
    stats = loop.statistics
    assert not stats.criterion_met
    assert stats.compression_rate == 0.0 and best.trained_at[-1] == 0.0
    assert stats.compressed_accuracy == pytest.approx(0.85) and stats.accuracy_budget < 0
    assert json.loads((loop.runner.log_dir / "summary.json").read_text())["criterion_met"] is False


def test_adaptive_stops_at_maximal_compression_rate(tmp_path):
    model = FakeModel()
    ctrl = FakeController(model, rate=0.7)
    rec = Recorder(ctrl, lambda rate, epochs: 0.9)
    config = aat_config(ADAPTIVE, maximal_absolute_accuracy_degradation=0.01, initial_training_phase_epochs=0)
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9, maximal_compression_rate=0.85)
    _run(loop, rec, model, tmp_path)
    assert [c["rate"] for c in rec.train_calls] == [0.8]
    assert loop.statistics.compression_rate == 0.8 and loop.statistics.criterion_met


def test_adaptive_respects_maximal_total_epochs(tmp_path):
    model = FakeModel()
    ctrl = FakeController(model, rate=0.3)
    rec = Recorder(ctrl, lambda rate, epochs: 0.5)  # never within budget
    config = aat_config(
        ADAPTIVE,
        maximal_absolute_accuracy_degradation=0.01,
        initial_training_phase_epochs=2,
        patience_epochs=3,
        maximal_total_epochs=4,
    )
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    _run(loop, rec, model, tmp_path)
    assert len(rec.train_calls) == 4 and loop.runner.cumulative_epoch_count == 4
    assert not loop.statistics.criterion_met


def test_early_exit_stops_as_soon_as_within_budget(tmp_path):
    model = FakeModel()
    ctrl = FixedController(model, name="quantization")
    rec = Recorder(ctrl, lambda rate, epochs: min(0.8 + 0.03 * epochs, 0.89))
    config = aat_config("early_exit", "quantization", maximal_absolute_accuracy_degradation=0.02)
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    assert isinstance(loop, EarlyExitCompressionTrainingLoop)
    best = _run(loop, rec, model, tmp_path)
    # 0.80, 0.83, 0.86, 0.89: within 0.02 of 0.90 after the third epoch
    assert len(rec.train_calls) == 3
    assert rec.validate_epochs == [0, 1, 2, 3]
    assert best.epochs == 3 and loop.statistics.criterion_met
    assert loop.statistics.compressed_accuracy == pytest.approx(0.89)
    records = _records(loop)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert all(r["compression_rate"] is None for r in records)  # quantization has no level
    assert [r["is_best"] for r in records] == [True, True, True, True]
    # one scheduler step per epoch that did not end the loop
    assert rec.schedulers[0].steps == 2


def test_early_exit_stops_at_maximal_total_epochs_and_keeps_the_best(tmp_path):
    model = FakeModel()
    ctrl = FixedController(model, name="quantization")
    accuracies = {0: 0.80, 1: 0.86, 2: 0.84, 3: 0.83}
    rec = Recorder(ctrl, lambda rate, epochs: accuracies[epochs])
    config = aat_config(
        "early_exit", "quantization", maximal_absolute_accuracy_degradation=0.01, maximal_total_epochs=3
    )
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    best = _run(loop, rec, model, tmp_path)
    assert len(rec.train_calls) == 3
    assert best.epochs == 1  # the checkpoint of the most accurate epoch
    stats = loop.statistics
    assert not stats.criterion_met and stats.compressed_accuracy == 0.86
    assert stats.accuracy_drop == pytest.approx(0.04)
    assert stats.relative_accuracy_drop == pytest.approx(100 * 0.04 / 0.9)
    assert [r["is_best"] for r in _records(loop)] == [True, True, False, False]


def test_early_stopping_fn_and_dump_checkpoint_fn_are_called(tmp_path):
    model = FakeModel()
    ctrl = FixedController(model, name="quantization")
    rec = Recorder(ctrl, lambda rate, epochs: 0.5)
    dumps = []

    def dump(m, c, runner, save_dir):
        dumps.append((m, c, runner.cumulative_epoch_count, save_dir))

    config = aat_config("early_exit", "quantization", maximal_absolute_accuracy_degradation=0.01)
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    _run(loop, rec, model, tmp_path, dump_checkpoint_fn=dump, early_stopping_fn=lambda acc: True)
    assert len(rec.train_calls) == 1
    assert [d[2] for d in dumps] == [0, 1]
    assert dumps[0][0] is model and dumps[0][1] is ctrl and dumps[0][3] == loop.runner.log_dir


def test_log_dir_comes_from_the_config_and_is_timestamped(tmp_path):
    model = FakeModel()
    ctrl = FixedController(model, name="quantization")
    rec = Recorder(ctrl, lambda rate, epochs: 0.9)
    config = aat_config("early_exit", "quantization", maximal_absolute_accuracy_degradation=0.01)
    config["log_dir"] = str(tmp_path / "logs")
    first = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    first.run(model, rec.train_epoch_fn, rec.validate_fn)
    second = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    second.run(model, rec.train_epoch_fn, rec.validate_fn)
    for loop in (first, second):
        assert loop.runner.log_dir.parent == tmp_path / "logs" / "accuracy_aware_training"
    assert first.runner.log_dir != second.runner.log_dir
    assert rec.train_calls == []  # within budget right after compression: no training at all


def test_missing_section_is_a_config_error():
    config = aat_config("early_exit")
    del config["accuracy_aware_training"]
    with pytest.raises(ConfigError, match="accuracy_aware_training: missing"):
        create_accuracy_aware_training_loop(config, FakeController(FakeModel()), 0.9)


def test_adaptive_needs_a_controller_with_a_settable_level():
    config = aat_config(ADAPTIVE, maximal_absolute_accuracy_degradation=0.01)
    with pytest.raises(ConfigError, match=r"accuracy_aware_training\.mode.*quantization.*early_exit"):
        create_accuracy_aware_training_loop(config, FixedController(FakeModel(), name="quantization"), 0.9)


def test_bad_arguments_are_clear_errors(tmp_path):
    config = aat_config("early_exit", "quantization", maximal_absolute_accuracy_degradation=0.01)
    model = FakeModel()
    ctrl = FixedController(model, name="quantization")
    with pytest.raises(AccuracyAwareTrainingError, match="uncompressed_model_accuracy must be a finite"):
        create_accuracy_aware_training_loop(config, ctrl, float("nan"))
    with pytest.raises(TypeError, match="compression_ctrl must be the controller"):
        create_accuracy_aware_training_loop(config, object(), 0.9)
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    with pytest.raises(AccuracyAwareTrainingError, match=r"no statistics yet: run\(\) has not validated"):
        loop.statistics  # noqa: B018
    with pytest.raises(AccuracyAwareTrainingError, match=r"validate_fn \(epoch 0\) must be a number"):
        loop.run(model, lambda *a, **k: None, lambda m, epoch=None: "high", log_dir=tmp_path)
    with pytest.raises(TypeError, match="'validate_fn' must be a function"):
        loop.run(model, lambda *a, **k: None, None, log_dir=tmp_path)
    bad_config = aat_config("early_exit", "quantization")  # no accuracy budget
    with pytest.raises(ConfigError, match="no accuracy budget"):
        create_accuracy_aware_training_loop(bad_config, ctrl, 0.9)


def test_a_failing_epoch_propagates_and_keeps_the_log(tmp_path):
    model = FakeModel()
    ctrl = FixedController(model, name="quantization")
    rec = Recorder(ctrl, lambda rate, epochs: 0.5)

    def train_epoch_fn(*args, **kwargs):
        raise RuntimeError("out of memory")

    config = aat_config("early_exit", "quantization", maximal_absolute_accuracy_degradation=0.01)
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    with pytest.raises(RuntimeError, match="out of memory"):
        loop.run(model, train_epoch_fn, rec.validate_fn, log_dir=tmp_path)
    assert [r["epoch"] for r in _records(loop)] == [0]
    assert (loop.runner.log_dir / "accuracy_vs_compression.png").exists()
    assert not (loop.runner.log_dir / "summary.json").exists()  # no outcome for a run that failed


def test_adaptive_controller_in_a_composite():
    from nncompress.api.composite import CompositeCompressionAlgorithmController
    from nncompress.common.accuracy_aware_training import find_adaptive_controller

    model = FakeModel()
    pruning = FakeController(model, name="filter_pruning")
    quantization = FixedController(model, name="quantization")
    composite = CompositeCompressionAlgorithmController(model, [quantization, pruning])
    assert find_adaptive_controller(composite) is pruning
    loop = create_accuracy_aware_training_loop(
        aat_config(ADAPTIVE, maximal_absolute_accuracy_degradation=0.01), composite, 0.9
    )
    assert loop.adaptive_controller is pruning and loop.compression_controller is composite

    both = CompositeCompressionAlgorithmController(
        model, [pruning, FakeController(model, name="rb_sparsity")]
    )
    with pytest.raises(ConfigError, match="several can be adjusted: filter_pruning, rb_sparsity"):
        find_adaptive_controller(both)
    # a built-in algorithm whose level is fixed does not count, even with a compression_rate setter
    with pytest.raises(ConfigError, match=r"algorithms: const_sparsity"):
        find_adaptive_controller(FakeController(model, name="const_sparsity"))
