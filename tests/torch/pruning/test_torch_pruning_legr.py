"""LeGR (interlayer_ranking_type: learned_ranking) on a tiny digits CNN: the evolutionary search,
its coefficients in the ranking, files and compression state, errors, NNCF's example configs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.data import digits_loaders, train_digits_model  # noqa: E402
from examples.models import DigitsCNN  # noqa: E402
from nncompress.config import NNCFConfig  # noqa: E402
from nncompress.errors import CompressionStateError, ConfigError  # noqa: E402
from nncompress.pruning.legr import EvolutionSearch, LeGRParams, save_ranking_coeffs  # noqa: E402
from nncompress.torch.initialization import register_default_init_args  # noqa: E402
from nncompress.torch.model_creation import create_compressed_model  # noqa: E402

NNCF_CONFIGS = Path(__file__).resolve().parents[4] / "shared" / "data" / "nncf-configs"  # beside the checkout
SMALL_LEGR = {"generations": 5, "train_steps": 3, "population_size": 3, "num_samples": 2, "random_seed": 7}
LAYERS = {"features.0", "features.3", "features.7"}  # the three convolutions of DigitsCNN


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    train, _ = digits_loaders(batch_size=64, seed=0)
    return train_digits_model(DigitsCNN(width=8), epochs=2, train_loader=train).state_dict()


def _model(state) -> DigitsCNN:
    model = DigitsCNN(width=8)
    model.load_state_dict(state)
    return model


def train_steps_fn(loader, model, optimizer, compression_ctrl, steps):
    """NNCF's LeGR training hook: ``steps`` optimizer steps on the masked model."""
    done = 0
    while done < steps:
        for x, y in loader:
            compression_ctrl.scheduler.step()
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y) + compression_ctrl.loss()
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break


def validate_fn(model, loader):
    correct, total, loss = 0, 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    return correct / total, loss / total


def _config(params=None, *, legr=None, register=True, input_info=None, **section):
    p = {
        "interlayer_ranking_type": "learned_ranking",
        "pruning_target": 0.5,
        "legr_params": dict(legr or SMALL_LEGR),
    }
    p.update(params or {})
    config = NNCFConfig.from_dict(
        {
            "input_info": input_info or {"sample_size": [2, 1, 8, 8]},
            "compression": {"algorithm": "filter_pruning", "params": p, **section},
        }
    )
    if register:
        train, val = digits_loaders(batch_size=64, seed=0)  # fresh loaders: the same batches every run
        config = register_default_init_args(
            config, train, train_steps_fn=train_steps_fn, val_loader=val, validate_fn=validate_fn
        )
    return config


def test_search_learns_coefficients_and_restores_the_model(trained, tmp_path):
    path = tmp_path / "coeffs.json"
    model = _model(trained)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    ctrl, cmodel = create_compressed_model(model, _config({"save_ranking_coeffs_path": str(path)}))
    coeffs = ctrl.ranking_coeffs
    assert set(coeffs) == LAYERS
    # the identity is tried first; random candidates follow; the best reward wins
    assert len(ctrl.legr_rewards) == SMALL_LEGR["generations"]
    assert not all(c == (1.0, 0.0) for c in coeffs.values())
    # LeGR's defaults: every layer may be pruned, one global ranking
    assert ctrl.params.all_weights and ctrl.params.prune_first_conv and ctrl.params.prune_downsample_convs
    # the search trained candidates but leaves the weights as they were, without masks
    # (BatchNorm statistics are re-estimated afterwards by the config's BatchNorm adaptation)
    after = dict(cmodel.named_parameters())
    for k, v in before.items():
        torch.testing.assert_close(after[k].detach(), v, rtol=0, atol=0)
    assert ctrl.engine.keep.all()
    assert json.loads(path.read_text()) == {k: list(v) for k, v in coeffs.items()}

    # the same seed, the same data: the same coefficients
    ctrl2, _ = create_compressed_model(_model(trained), _config())
    assert ctrl2.ranking_coeffs == coeffs
    assert ctrl2.legr_rewards == ctrl.legr_rewards
    assert max(ctrl.legr_rewards) == pytest.approx(max(ctrl2.legr_rewards))


def test_coefficients_change_the_ranking(trained, tmp_path):
    # a large shift on one layer lifts all its filters above every other filter: the global
    # ranking takes the whole level from the other layers
    path = tmp_path / "shifted.json"
    save_ranking_coeffs(
        path, {"features.0": (1.0, 0.0), "features.3": (1.0, 0.0), "features.7": (1.0, 100.0)}
    )
    ctrl, _ = create_compressed_model(
        _model(trained), _config({"load_ranking_coeffs_path": str(path)}, register=False)
    )
    ctrl.set_pruning_level(0.3)
    removed = ctrl.pruning_record().removed_channels()
    assert removed.get("features.7", 0) == 0 and removed["features.0"] + removed["features.3"] == 16
    # the plain global ranking (L2 of weights normalized per layer, as NNCF) takes them all from
    # features.7, the widest layer (its normalized filters are the smallest)
    plain = _config(
        {"interlayer_ranking_type": "unweighted_ranking", "all_weights": True, "prune_first_conv": True},
        legr={},
        register=False,
    )
    plain["compression"]["params"].pop("legr_params")
    ctrl_plain, _ = create_compressed_model(_model(trained), plain)
    ctrl_plain.set_pruning_level(0.3)
    assert ctrl_plain.pruning_record().removed_channels()["features.7"] == 16
    # a scale of 0 with a negative shift sinks a layer: it loses channels first
    save_ranking_coeffs(
        path, {"features.0": (1.0, 0.0), "features.3": (0.0, -100.0), "features.7": (1.0, 0.0)}
    )
    ctrl, _ = create_compressed_model(
        _model(trained), _config({"load_ranking_coeffs_path": str(path)}, register=False)
    )
    ctrl.set_pruning_level(0.1)
    removed = ctrl.pruning_record().removed_channels()
    assert set(removed) == {"features.3", "features.4"}  # the conv and its BatchNorm
    assert removed["features.3"] == 5  # floor(0.1 * 56)


def test_saved_coefficients_load_and_come_back_with_the_state(trained, tmp_path):
    path = tmp_path / "learned.json"
    config = _config({"save_ranking_coeffs_path": str(path)}, pruning_init=0.2)
    ctrl, cmodel = create_compressed_model(_model(trained), config)
    state = ctrl.get_compression_state()
    # loaded from the file: no search, no LeGRInitArgs needed, the same masks
    ctrl_file, _ = create_compressed_model(
        _model(trained), _config({"load_ranking_coeffs_path": str(path)}, register=False, pruning_init=0.2)
    )
    assert ctrl_file.ranking_coeffs == ctrl.ranking_coeffs  # floats survive JSON exactly
    assert ctrl_file.legr_rewards == []
    assert ctrl_file.pruning_record().to_dict() == ctrl.pruning_record().to_dict()
    # rebuilt from the compression state: the coefficients come back, later levels rank alike
    ctrl_state, model_state = create_compressed_model(
        _model(trained), _config(register=False, pruning_init=0.2), compression_state=state
    )
    model_state.load_state_dict(cmodel.state_dict())
    assert ctrl_state.ranking_coeffs == ctrl.ranking_coeffs  # floats survive JSON exactly
    ctrl.set_pruning_level(0.4)
    ctrl_state.set_pruning_level(0.4)
    assert ctrl_state.pruning_record().to_dict() == ctrl.pruning_record().to_dict()


def test_errors_name_what_is_wrong(trained, tmp_path):
    with pytest.raises(ConfigError, match="LeGRInitArgs.*register_default_init_args"):
        create_compressed_model(_model(trained), _config(register=False))
    with pytest.raises(ConfigError, match="all_weights.*must be true"):
        create_compressed_model(_model(trained), _config({"all_weights": False}))
    plain_legr = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {"algorithm": "filter_pruning", "params": {"legr_params": {"generations": 2}}},
        }
    )
    with pytest.raises(ConfigError, match="legr_params.*only used by interlayer_ranking_type"):
        create_compressed_model(_model(trained), plain_legr)
    bad = tmp_path / "bad.json"
    save_ranking_coeffs(bad, {"features.0": (1.0, 0.0), "conv9": (1.0, 0.0)})
    with pytest.raises(
        ConfigError, match=r"load_ranking_coeffs_path.*missing \['features.3', 'features.7'\].*conv9"
    ):
        create_compressed_model(
            _model(trained), _config({"load_ranking_coeffs_path": str(bad)}, register=False)
        )
    with pytest.raises(ConfigError, match="no ranking coefficients file"):
        create_compressed_model(
            _model(trained),
            _config({"load_ranking_coeffs_path": str(tmp_path / "none.json")}, register=False),
        )
    bad.write_text(json.dumps({k: "x" for k in LAYERS}))
    with pytest.raises(ConfigError, match=r"must be \[scale, shift\]"):
        create_compressed_model(
            _model(trained), _config({"load_ranking_coeffs_path": str(bad)}, register=False)
        )
    # a state saved without learned ranking cannot feed a learned-ranking config
    same_layers = {"all_weights": True, "prune_first_conv": True, "prune_downsample_convs": True}
    plain = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [2, 1, 8, 8]},
            "compression": {"algorithm": "filter_pruning", "params": same_layers},
        }
    )
    ctrl, _ = create_compressed_model(_model(trained), plain)
    with pytest.raises(CompressionStateError, match="no ranking coefficients"):
        create_compressed_model(
            _model(trained), _config(register=False), compression_state=ctrl.get_compression_state()
        )


def test_evolution_search_is_seeded_and_keeps_the_best():
    params = LeGRParams(generations=12, population_size=4, num_samples=2, random_seed=3)
    runs = []
    for _ in range(2):
        search = EvolutionSearch({"a": 0.5, "b": 1.0, "c": 0.1}, params)
        asked = []
        for _ in range(12):
            action = search.ask()
            asked.append(action)
            # reward: closeness of a's scale to 2
            search.tell(-abs(action["a"][0] - 2.0))
        runs.append((asked, search.best, search.rewards))
    assert runs[0] == runs[1]
    asked, best, rewards = runs[0]
    assert asked[0] == {"a": (1.0, 0.0), "b": (1.0, 0.0), "c": (1.0, 0.0)}
    assert len({json.dumps(a, sort_keys=True) for a in asked}) > 6  # random candidates differ
    assert best == asked[int(np.argmax(rewards))]
    other = EvolutionSearch({"a": 0.5, "b": 1.0, "c": 0.1}, LeGRParams(random_seed=4))
    other.ask()
    other.tell(0.0)
    assert other.ask() != runs[0][0][1]


@pytest.mark.parametrize(
    "name",
    [
        "torch_classification_resnet18_imagenet_pruning_learned_ranking.json",
        "tests_torch_weekly_classification_cifar100_mobilenet_v2_learned_ranking.json",
    ],
)
def test_nncf_example_configs_build(trained, name):
    path = NNCF_CONFIGS / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    data = json.loads(path.read_text())
    data["input_info"] = {"sample_size": [2, 1, 8, 8]}
    sections = data["compression"] if isinstance(data["compression"], list) else [data["compression"]]
    (section,) = [s for s in sections if s["algorithm"] == "filter_pruning"]
    section["params"]["legr_params"].update({"generations": 3, "train_steps": 2, "population_size": 2})
    config = NNCFConfig.from_dict(data)
    train, val = digits_loaders(batch_size=64, seed=0)
    config = register_default_init_args(
        config, train, train_steps_fn=train_steps_fn, val_loader=val, validate_fn=validate_fn
    )
    ctrl, model = create_compressed_model(_model(trained), config)
    assert set(ctrl.ranking_coeffs) == LAYERS and len(ctrl.legr_rewards) == 3
    target = section["params"]["pruning_flops_target"]
    init = section.get("pruning_init", 0.0)
    assert ctrl.flops_reduction >= init - 1e-9
    ctrl.compression_rate = target
    assert ctrl.flops_reduction >= target
    stripped = ctrl.strip()
    x = torch.randn(2, 1, 8, 8)
    assert stripped(x).shape == (2, 10)
