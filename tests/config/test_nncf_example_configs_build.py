"""Every NNCF torch example config in the shared folder builds a compressed model, or is refused.

Configs whose algorithms nncompress supports (quantization, filter_pruning, magnitude / rb / const
sparsity, knowledge_distillation, with or without ``accuracy_aware_training``) build with
``create_compressed_model`` on a small zoo model of the same input family (images; segmentation
nets get the small U-Net). Only what cannot fit a small model is adjusted: ``input_info``, the
number of init samples, scope validation (the scopes name layers of NNCF's models), the layers of
a manual ``bitwidth_per_scope`` (its bit widths are mapped onto our layers) and the size of the
LeGR search. With an ``accuracy_aware_training`` section the loop of its mode runs two epochs of
fake training. Configs that need what nncompress does not do (HAWQ / AutoQ precision search,
bootstrapNAS) raise a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
SHARED_CONFIGS = REPO.parent / "shared" / "data" / "nncf-configs"
_TORCH_TESTS = str(REPO / "tests" / "torch")
if _TORCH_TESTS not in sys.path:
    sys.path.insert(0, _TORCH_TESTS)

import torch.nn.functional as F  # noqa: E402
from models import build  # noqa: E402

from nncompress.common.accuracy_aware_training import (  # noqa: E402
    AdaptiveCompressionTrainingLoop,
    EarlyExitCompressionTrainingLoop,
    create_accuracy_aware_training_loop,
)
from nncompress.config import NNCFConfig  # noqa: E402
from nncompress.errors import ConfigError  # noqa: E402
from nncompress.torch import create_compressed_model, register_default_init_args  # noqa: E402

SUPPORTED = {
    "quantization",
    "filter_pruning",
    "magnitude_sparsity",
    "rb_sparsity",
    "const_sparsity",
    "knowledge_distillation",
}
TORCH_PREFIXES = ("torch_", "tests_torch_", "experimental_torch_")
SMALL_LEGR = {"generations": 2, "train_steps": 1, "population_size": 2, "num_samples": 1, "random_seed": 0}
SKIP_REASON = f"NNCF example configs not found at {SHARED_CONFIGS} (the shared folder beside the checkout)"


def _sections(data: dict[str, Any]) -> list[dict[str, Any]]:
    comp = data.get("compression", [])
    return list(comp) if isinstance(comp, list) else [comp]


def unsupported_feature(data: dict[str, Any]) -> tuple[str, str] | None:
    """``(key path, name)`` of the first feature nncompress refuses, or None when it builds."""
    if "bootstrapNAS" in data:
        return "bootstrapNAS", "bootstrapNAS"
    for section in _sections(data):
        if section["algorithm"] not in SUPPORTED:
            return "compression", section["algorithm"]
        ptype = section.get("initializer", {}).get("precision", {}).get("type")
        if ptype in ("hawq", "autoq"):
            return f"compression.{section['algorithm']}.initializer.precision.type", ptype
    return None


def _torch_files() -> list[Path]:
    if not SHARED_CONFIGS.is_dir():
        return []
    return sorted(p for p in SHARED_CONFIGS.glob("*.json") if p.name.startswith(TORCH_PREFIXES))


def _params(supported: bool) -> list:
    files = [
        f for f in _torch_files() if (unsupported_feature(json.loads(f.read_text())) is None) == supported
    ]
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=SKIP_REASON), id="no-shared-configs")]
    return [pytest.param(f, id=f.stem) for f in files]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _zoo_name(file_name: str) -> str:
    if "mobilenet" in file_name:
        return "mobilenet_v2"
    if "unet" in file_name or "icnet" in file_name:
        return "unet"
    return "resnet"  # resnet, squeezenet, inception, googlenet, efficientnet, vgg/ssd: image nets


def _loader(x: torch.Tensor) -> torch.utils.data.DataLoader:
    labels = torch.arange(len(x)) % 2
    return torch.utils.data.DataLoader(list(zip(x, labels)), batch_size=2)


def _task_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if out.dim() == 4:  # segmentation: one label per image, broadcast over the pixels
        y = y.view(-1, 1, 1).expand(-1, *out.shape[2:])
    return F.cross_entropy(out, y)


def _train_steps_fn(loader, model, optimizer, compression_ctrl, steps):
    for _, (x, y) in zip(range(steps), loader):
        optimizer.zero_grad()
        (_task_loss(model(x), y) + compression_ctrl.loss()).backward()
        optimizer.step()


def _validate_fn(model, loader):
    with torch.no_grad():
        x, y = next(iter(loader))
        out = model(x)
        return float((out.argmax(1) == y.view(-1, *[1] * (out.dim() - 2))).float().mean()), float(
            _task_loss(out, y)
        )


def _weight_quantizer_ids(data: dict[str, Any], name: str, x: torch.Tensor) -> list[str]:
    """Our model's weight quantizers (a build without the manual precision table)."""
    probe = copy.deepcopy(data)
    for section in _sections(probe):
        section.get("initializer", {}).pop("precision", None)
    config = NNCFConfig.from_dict(probe)
    register_default_init_args(config, _loader(x))
    ctrl, _ = create_compressed_model(build(name), config)
    return list(ctrl.weight_quantizers)


def _adapt(data: dict[str, Any], name: str, x: torch.Tensor) -> dict[str, Any]:
    """NNCF's config, fitted to a small model (see the module docstring)."""
    data["input_info"] = {"sample_size": [1, *x.shape[1:]]}
    for section in _sections(data):
        if "ignored_scopes" in section or "target_scopes" in section:
            section["validate_scopes"] = False
        init = section.get("initializer")
        if isinstance(init, dict):
            if "range" in init:
                init["range"]["num_init_samples"] = 4
            if "batchnorm_adaptation" in init:
                init["batchnorm_adaptation"]["num_bn_adaptation_samples"] = 4
        if section["algorithm"] == "quantization":
            init = section.setdefault("initializer", {})
            init.setdefault("range", {})["num_init_samples"] = 4
            init["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 4}
        params = section.get("params", {})
        if params.get("interlayer_ranking_type") == "learned_ranking":
            params.setdefault("legr_params", {}).update(SMALL_LEGR)
    for section in _sections(data):
        table = section.get("initializer", {}).get("precision", {}).get("bitwidth_per_scope")
        if table:
            ours = _weight_quantizer_ids(data, name, x)
            bits = [b for b, scope in table if scope.endswith("|WEIGHT")]
            section["initializer"]["precision"]["bitwidth_per_scope"] = [
                [bits[i % len(bits)], qid] for i, qid in enumerate(ours)
            ]
    aat = data.get("accuracy_aware_training")
    if aat:
        params = aat.setdefault("params", {})
        params["maximal_total_epochs"] = 2
        if aat["mode"] == "adaptive_compression_level":
            params["initial_training_phase_epochs"] = min(params.get("initial_training_phase_epochs", 1), 1)
    return data


def _algorithm_names(ctrl) -> list[str]:
    children = getattr(ctrl, "child_ctrls", None)
    return sorted(c.algorithm_name for c in children) if children is not None else [ctrl.algorithm_name]


def _run_aat(config: NNCFConfig, ctrl, model, x: torch.Tensor, tmp_path: Path) -> None:
    mode = config["accuracy_aware_training"]["mode"]
    calls = {"train": 0}
    accuracy = 0.75

    def train_epoch_fn(compression_ctrl, model, epoch=None, optimizer=None, lr_scheduler=None):
        calls["train"] += 1
        model.train()
        optimizer.zero_grad()
        (_task_loss(model(x), torch.arange(len(x)) % 2) + compression_ctrl.loss()).backward()
        optimizer.step()

    def validate_fn(model, epoch=None):
        return accuracy  # no drop, within any budget: adaptive mode raises the level every epoch

    def configure_optimizers_fn():
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        return optimizer, None

    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=accuracy)
    expected = (
        AdaptiveCompressionTrainingLoop
        if mode == "adaptive_compression_level"
        else EarlyExitCompressionTrainingLoop
    )
    assert type(loop) is expected
    start_rate = ctrl.compression_rate if mode == "adaptive_compression_level" else None
    result = loop.run(model, train_epoch_fn, validate_fn, configure_optimizers_fn, log_dir=tmp_path)
    assert result is model
    runner = loop.runner
    assert 0 <= runner.cumulative_epoch_count <= 2 and calls["train"] == runner.cumulative_epoch_count
    stats = loop.statistics
    assert stats.criterion_met and stats.compressed_accuracy == pytest.approx(accuracy)
    records = (runner.log_dir / "compression_stats.jsonl").read_text().splitlines()
    assert len(records) >= 1 + runner.cumulative_epoch_count
    if mode == "adaptive_compression_level":
        # always within budget: the search only raised the level (or stopped at the maximum)
        assert ctrl.compression_rate == pytest.approx(stats.compression_rate)
        assert stats.compression_rate >= start_rate - 1e-9
        assert stats.compression_rate > start_rate or start_rate >= runner.maximal_compression_rate - 0.05


@pytest.mark.parametrize("path", _params(supported=True))
def test_supported_nncf_torch_config_builds(path: Path, tmp_path: Path) -> None:
    data = json.loads(path.read_text())
    name = _zoo_name(path.name)
    model = build(name)
    x = model.make_input(batch=4)
    with torch.no_grad():
        reference = model(x)
    data = _adapt(data, name, x)
    config = NNCFConfig.from_dict(data)
    legr = any(
        s.get("params", {}).get("interlayer_ranking_type") == "learned_ranking" for s in _sections(data)
    )
    extra = (
        {"train_steps_fn": _train_steps_fn, "val_loader": _loader(x), "validate_fn": _validate_fn}
        if legr
        else {}
    )
    register_default_init_args(config, _loader(x), **extra)
    ctrl, cmodel = create_compressed_model(model, config)

    if not _sections(data):  # nothing to compress: the wrapped model computes what the model did
        with torch.no_grad():
            torch.testing.assert_close(cmodel.eval()(x), reference)
    configured = sorted(s["algorithm"] for s in _sections(data))
    assert _algorithm_names(ctrl) == configured  # none for NNCF's uncompressed baselines
    stats = ctrl.statistics()
    for algorithm in configured:
        if algorithm != "knowledge_distillation":
            assert getattr(stats, algorithm) is not None
    table = [
        t
        for s in _sections(data)
        for t in s.get("initializer", {}).get("precision", {}).get("bitwidth_per_scope", [])
    ]
    quantization = next(
        (c for c in getattr(ctrl, "child_ctrls", [ctrl]) if c.algorithm_name == "quantization"), None
    )
    for bits, qid in table:
        assert int(quantization.weight_quantizers[qid].num_bits) == bits
    ctrl.scheduler.epoch_step()
    cmodel.train()
    out = cmodel(x)
    assert out.shape == reference.shape
    loss = _task_loss(out, torch.arange(len(x)) % 2) + ctrl.loss()
    assert torch.isfinite(loss)
    loss.backward()
    with torch.no_grad():
        assert torch.isfinite(cmodel.eval()(x)).all()
    if "accuracy_aware_training" in data:
        _run_aat(config, ctrl, cmodel, x, tmp_path)


@pytest.mark.parametrize("path", _params(supported=False))
def test_unsupported_nncf_torch_config_is_refused(path: Path) -> None:
    data = json.loads(path.read_text())
    key, feature = unsupported_feature(data)
    name = _zoo_name(path.name)
    model = build(name)
    x = model.make_input(batch=4)
    data["input_info"] = {"sample_size": [1, *x.shape[1:]]}
    config = NNCFConfig.from_dict(data)
    register_default_init_args(config, _loader(x))
    with pytest.raises(ConfigError) as info:
        create_compressed_model(model, config)
    assert any(path_.startswith(key) and feature in msg for path_, msg in info.value.problems), info.value


def test_the_torch_configs_are_classified() -> None:
    files = _torch_files()
    if not files:
        pytest.skip(SKIP_REASON)
    features = {f.name: unsupported_feature(json.loads(f.read_text())) for f in files}
    refused = {feature for found in features.values() if found for _, feature in [found]}
    assert refused == {"bootstrapNAS", "hawq", "autoq"}
    supported = [n for n, found in features.items() if found is None]
    assert len(supported) >= 40
    with_aat = [
        n for n in supported if "accuracy_aware_training" in json.loads((SHARED_CONFIGS / n).read_text())
    ]
    assert len(with_aat) == 4
