"""NNCF's own example configs with sparsity build a compressed model of a small zoo model.

Only ``input_info`` (the zoo models are small), data-driven sample counts and scope validation
(the scopes name layers of NNCF's models, not ours) are adjusted; everything else is NNCF's file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from models import build

from nncompress import NNCFConfig
from nncompress.torch import create_compressed_model, register_default_init_args

NNCF_CONFIGS = Path(__file__).resolve().parents[4] / "shared" / "data" / "nncf-configs"  # beside the checkout
ALGORITHMS = ("magnitude_sparsity", "rb_sparsity", "const_sparsity")
FILES = (
    sorted(
        p.name
        for pattern in ("torch_*sparsity*.json", "tests_torch_*sparsity*.json")
        for p in NNCF_CONFIGS.glob(pattern)
    )
    if NNCF_CONFIGS.is_dir()
    else []
)


def _zoo_name(file_name: str) -> str:
    if "mobilenet" in file_name:
        return "mobilenet_v2"
    if "unet" in file_name or "icnet" in file_name:
        return "unet"
    return "resnet"


def test_configs_are_found():
    if not NNCF_CONFIGS.is_dir():
        pytest.skip(f"{NNCF_CONFIGS} is not available")
    assert len(FILES) >= 8, FILES


@pytest.mark.parametrize("name", FILES)
def test_nncf_sparsity_config_builds(name):
    config = NNCFConfig.from_json(NNCF_CONFIGS / name)
    model = build(_zoo_name(name))
    x = model.make_input(batch=4)
    config["input_info"] = {"sample_size": [1, *x.shape[1:]]}
    sections = config.algorithm_sections()
    for section in sections:
        if "ignored_scopes" in section or "target_scopes" in section:
            section["validate_scopes"] = False
        if section["algorithm"] in ("quantization", "magnitude_sparsity"):
            init = section.setdefault("initializer", {})
            init["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 4}
            if section["algorithm"] == "quantization":
                init.setdefault("range", {})["num_init_samples"] = 4
    register_default_init_args(
        config, torch.utils.data.DataLoader(list(zip(x, torch.zeros(4, dtype=torch.long))), batch_size=2)
    )
    ctrl, cmodel = create_compressed_model(model, config)
    stats = ctrl.statistics()
    configured = [s["algorithm"] for s in sections if s["algorithm"] in ALGORITHMS]
    assert configured
    for algorithm in configured:
        sparsity = getattr(stats, algorithm)
        layers = sparsity.model_statistics.sparsified_layers_summary
        assert layers, f"{algorithm} sparsified nothing"
        section = next(s for s in sections if s["algorithm"] == algorithm)
        init = section.get("sparsity_init", 0.0)
        if algorithm == "magnitude_sparsity":
            assert sparsity.model_statistics.sparsity_level_for_layers == pytest.approx(init, abs=0.01)
        if algorithm == "rb_sparsity":
            assert sparsity.target_sparsity_level == pytest.approx(init)
    ctrl.scheduler.epoch_step()
    with torch.no_grad():
        assert torch.isfinite(cmodel.eval()(x)).all()
