"""Progress bars: one switch (``set_progress``, ``NNCOMPRESS_NO_PROGRESS``, ``--quiet``,
``show_progress``) for the bars of PTQ calibration, BatchNorm adaptation, QAT range
initialization, the LeGR search and accuracy-aware training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nncompress
from nncompress import progress as progress_mod
from nncompress.progress import ENV_VAR, StageProgress, progress, progress_disabled, progress_enabled

_COMMON = str(Path(__file__).resolve().parent / "common")


@pytest.fixture(autouse=True)
def bars_on(monkeypatch: pytest.MonkeyPatch):
    """Every test starts with bars on, whatever the environment of the test run says."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    nncompress.set_progress(True)
    yield
    nncompress.set_progress(True)


# ------------------------------------------------------------------------------ the switch
def test_progress_draws_a_bar_on_stderr_and_yields_every_item(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(range(5), "Counting sheep")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    # tqdm draws the start at once (later redraws are rate-limited), with the total
    assert "Counting sheep" in captured.err and "0/5" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("how", ["set_progress", "env", "env_word", "block", "per_call"])
def test_every_switch_turns_bars_off(how: str, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [1, 2, 3]
    enabled = True
    if how == "set_progress":
        nncompress.set_progress(False)
    elif how == "env":
        monkeypatch.setenv(ENV_VAR, "1")
    elif how == "env_word":
        monkeypatch.setenv(ENV_VAR, "yes")
    elif how == "per_call":
        enabled = False
    with progress_disabled() if how == "block" else _nothing():
        wrapped = progress(items, "Counting sheep", enabled=enabled)
        assert wrapped is items  # no wrapper at all: len() and indexing keep working
        bar = StageProgress(enabled=enabled)
        bar("A stage", 1, 3)
        bar.close()
    assert capsys.readouterr().err == ""


def test_env_var_off_values_keep_bars_and_env_wins_over_set_progress(monkeypatch) -> None:
    for value in ("", "0", "false", "OFF"):
        monkeypatch.setenv(ENV_VAR, value)
        assert progress_enabled()
    monkeypatch.setenv(ENV_VAR, "1")
    nncompress.set_progress(True)
    assert not progress_enabled()


def test_progress_disabled_restores_the_previous_switch() -> None:
    nncompress.set_progress(False)
    with progress_disabled():
        assert not progress_enabled()
    assert not progress_enabled()
    nncompress.set_progress(True)
    with pytest.raises(RuntimeError), progress_disabled():
        raise RuntimeError("boom")
    assert progress_enabled()


def test_set_progress_rejects_non_bools() -> None:
    with pytest.raises(TypeError, match="True or False"):
        nncompress.set_progress("no")  # type: ignore[arg-type]


def test_stage_progress_opens_one_bar_per_stage(capsys) -> None:
    with StageProgress() as bar:
        for i in range(1, 4):
            bar("Stage one", i, 3)
        bar("Stage two", 1, None)
    err = capsys.readouterr().err
    assert "Stage one" in err and "3/3" in err and "Stage two" in err


def test_missing_tqdm_means_no_bar_not_an_error(monkeypatch, capsys) -> None:
    monkeypatch.setattr(progress_mod, "_tqdm_class", lambda: None)
    items = [1, 2]
    assert progress(items, "x") is items
    StageProgress()("x", 1, 2)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------ PTQ
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")


class _ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "net.onnx"
    torch.manual_seed(0)
    torch.onnx.export(
        _ConvNet().eval(), (torch.randn(1, 3, 6, 6),), str(path), input_names=["x"], dynamo=False
    )
    return path


def _calibration() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, 6, 6)).astype(np.float32) for _ in range(4)]


@pytest.mark.parametrize("switch", ["on", "show_progress", "set_progress"])
def test_ptq_calibration_bar_follows_the_switches(onnx_model, switch, capsys) -> None:
    from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters

    if switch == "set_progress":
        nncompress.set_progress(False)
    advanced = AdvancedQuantizationParameters(show_progress=switch != "show_progress")
    qmodel = nncompress.quantize(
        onnx.load(str(onnx_model)), nncompress.Dataset(_calibration()), advanced_parameters=advanced
    )
    assert any(n.op_type == "QuantizeLinear" for n in qmodel.graph.node)
    err = capsys.readouterr().err
    if switch == "on":
        assert "Statistics collection" in err
    else:
        assert err == ""


@pytest.mark.parametrize("where", ["after", "before", "none"])
def test_cli_quiet_silences_bars_and_chatter(onnx_model, tmp_path, capsys, where: str) -> None:
    from nncompress import cli

    data = tmp_path / "calib.npy"
    np.save(data, np.concatenate(_calibration()))
    out = tmp_path / "q.onnx"
    argv = ["quantize", str(onnx_model), "--data", str(data), "-o", str(out)]
    argv = {"after": [*argv, "--quiet"], "before": ["--quiet", *argv], "none": argv}[where]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    if where == "none":
        assert "Statistics collection" in captured.err and f"Saved {out}" in captured.out
    else:
        assert captured.err == "" and captured.out == ""
    assert progress_enabled()  # --quiet does not leak out of the command


# ------------------------------------------------------------------------------ torch
def _loader(n: int = 8, batch: int = 4):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 2, (n,), generator=g)),
        batch_size=batch,
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_batchnorm_adaptation_bar(enabled: bool, capsys) -> None:
    from nncompress.torch.initialization import BNAdaptationInitArgs, run_bn_adaptation

    nncompress.set_progress(enabled)
    model = _ConvNet()
    assert run_bn_adaptation(model, BNAdaptationInitArgs(_loader()), num_samples=8) == 2
    assert float(model.bn.running_mean.abs().sum()) > 0  # the statistics were really re-estimated
    err = capsys.readouterr().err
    assert ("BatchNorm adaptation" in err and "0/2" in err) if enabled else err == ""


@pytest.mark.parametrize("enabled", [True, False])
def test_qat_range_initialization_bar(enabled: bool, capsys) -> None:
    from nncompress.torch.initialization import register_default_init_args
    from nncompress.torch.model_creation import create_compressed_model

    nncompress.set_progress(enabled)
    config = nncompress.NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 3, 6, 6]},
            "compression": {
                "algorithm": "quantization",
                "initializer": {
                    "range": {"num_init_samples": 8, "type": "min_max"},
                    "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
                },
            },
        }
    )
    config = register_default_init_args(config, _loader())
    ctrl, _ = create_compressed_model(_ConvNet(), config)
    assert ctrl is not None
    err = capsys.readouterr().err
    assert ("Range initialization (min_max)" in err) if enabled else err == ""


def _legr_steps(loader, model, optimizer, compression_ctrl, steps):
    for done, (x, y) in enumerate(loader, start=1):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if done >= steps:
            return


def _legr_validate(model, loader):
    with torch.no_grad():
        losses = [float(torch.nn.functional.cross_entropy(model(x), y)) for x, y in loader]
    return 0.5, sum(losses) / len(losses)


@pytest.mark.parametrize("enabled", [True, False])
def test_legr_search_bar(enabled: bool, capsys) -> None:
    from nncompress.torch.initialization import register_default_init_args
    from nncompress.torch.model_creation import create_compressed_model

    nncompress.set_progress(enabled)
    legr = {"generations": 3, "train_steps": 1, "population_size": 2, "num_samples": 2, "random_seed": 1}
    config = nncompress.NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 3, 6, 6]},
            "compression": {
                "algorithm": "filter_pruning",
                "params": {
                    "interlayer_ranking_type": "learned_ranking",
                    "pruning_target": 0.5,
                    "legr_params": legr,
                },
            },
        }
    )
    config = register_default_init_args(
        config, _loader(), train_steps_fn=_legr_steps, val_loader=_loader(), validate_fn=_legr_validate
    )
    torch.manual_seed(0)
    ctrl, _ = create_compressed_model(_ConvNet(), config)
    assert len(ctrl.legr_rewards) == 3
    err = capsys.readouterr().err
    assert ("LeGR search (generations)" in err and "0/3" in err) if enabled else "LeGR" not in err


@pytest.mark.parametrize("verbose", [True, False])
def test_accuracy_aware_training_epoch_bar(verbose: bool, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(_COMMON)
    from aat_fakes import FakeController, FakeModel, Recorder, aat_config

    from nncompress.common.accuracy_aware_training import create_accuracy_aware_training_loop

    model = FakeModel()
    ctrl = FakeController(model, rate=0.3)
    rec = Recorder(ctrl, lambda rate, epochs: 0.5 + 0.1 * epochs)  # reaches 0.9 after 4 epochs
    config = aat_config("early_exit", maximal_absolute_accuracy_degradation=0.0, maximal_total_epochs=6)
    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=0.9, verbose=verbose)
    loop.run(model, rec.train_epoch_fn, rec.validate_fn, rec.configure_optimizers_fn, log_dir=tmp_path)
    assert len(rec.train_calls) == 4 and loop.statistics.criterion_met
    assert loop.runner.progress is None  # the bar is gone with the run
    err = capsys.readouterr().err
    if verbose:
        assert "Accuracy-aware training (epochs)" in err and "4/6" in err
    else:
        assert "Accuracy-aware training (epochs)" not in err


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_module_is_light() -> None:
    # the helper is core code: importing it must not pull in a framework (or tqdm before a bar)
    import subprocess

    code = "import nncompress.progress, sys; print(' '.join(sorted(sys.modules)))"
    mods = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not {"torch", "onnx", "openvino", "tqdm"} & mods
