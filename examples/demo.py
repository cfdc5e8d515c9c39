"""End-to-end demo of nncompress, one step per function; run from the repository root:

    .venv/bin/python examples/demo.py

Step 1 loads and validates an NNCF config, prints the effective value of every parameter of each
algorithm (set in the file, or the schema default), and shows that a misspelled config is rejected
with the path of each mistake. Later steps (post-training quantization, quantization-aware
training, pruning) are appended as functions and called from ``main``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from nncompress import NNCFConfig
from nncompress.config import effective_params
from nncompress.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
# NNCF's example configs live in the shared folder beside the checkout, when it is present.
SHARED_CONFIGS = REPO.parent / "shared" / "data" / "nncf-configs"
DEMO_CONFIG = "torch_classification_resnet34_imagenet_pruning_geometric_median_kd.json"

# Used when the shared folder is absent: the same kind of config, inline.
BUILTIN_CONFIG: dict[str, Any] = {
    "model": "resnet34",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "compression": [
        {
            "algorithm": "filter_pruning",
            "pruning_init": 0.1,
            "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 20},
        },
        {"algorithm": "knowledge_distillation", "type": "softmax"},
    ],
}


def heading(title: str) -> None:
    print(f"\n=== {title} ===")


def load_demo_config() -> tuple[NNCFConfig, str]:
    """The demo config and where it came from."""
    path = SHARED_CONFIGS / DEMO_CONFIG
    if path.is_file():
        return NNCFConfig.from_json(path), str(path.relative_to(REPO.parent))
    return NNCFConfig.from_dict(BUILTIN_CONFIG), "built-in example (shared configs not found)"


def print_effective_values(config: NNCFConfig) -> None:
    """A table per algorithm: parameter, effective value, and whether it is the schema default."""
    for section in config.algorithm_sections():
        name = section["algorithm"]
        rows = [p for p in effective_params(section) if p.value is not None]
        width = max(len(p.path) for p in rows) if rows else 10
        print(
            f"\n[{name}]  ({sum(not p.is_default for p in rows)} set in the file, "
            f"{sum(p.is_default for p in rows)} from schema defaults)"
        )
        print(f"  {'parameter':<{width}}  {'value':<24} source")
        for p in rows:
            source = "default" if p.is_default else "config"
            print(f"  {p.path:<{width}}  {p.value!s:<24} {source}")


def misspelled_copy(config: NNCFConfig) -> dict[str, Any]:
    """The config with typical mistakes: a misspelled top-level key, parameter and value."""
    broken = copy.deepcopy(dict(config))
    broken["target_devise"] = "CPU"
    section = broken["compression"][0] if isinstance(broken["compression"], list) else broken["compression"]
    params = section.setdefault("params", {})
    params["pruning_targt"] = params.pop("pruning_target", 0.5)
    params["schedule"] = "exponental"
    return broken


def step_1_config() -> NNCFConfig:
    """Load and validate a config, show effective values, show a rejected config."""
    heading("Step 1: configuration")
    config, source = load_demo_config()
    names = ", ".join(s["algorithm"] for s in config.algorithm_sections())
    print(f"Loaded {source}: valid; algorithms: {names}")
    print(f"Model inputs: {config.input_infos()}")
    print_effective_values(config)

    print("\nThe same config with three typos is rejected, every problem with its path:")
    try:
        NNCFConfig.from_dict(misspelled_copy(config))
    except ConfigError as e:
        print(e)
    else:  # pragma: no cover - would mean validation is broken
        raise SystemExit("a misspelled config was accepted")
    return config


def main() -> None:
    step_1_config()


if __name__ == "__main__":
    main()
