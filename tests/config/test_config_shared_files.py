"""Every NNCF example config in the shared folder loads, and the accessors work on each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_nncf_configs import shared_config_files, shared_config_params

from nncompress.config import NNCFConfig, effective_params, find_problems
from nncompress.config.root_keys import likely_intended_key
from nncompress.config.schema import ROOT_KEYS


@pytest.mark.parametrize("path", shared_config_params())
def test_shared_config_loads(path: Path) -> None:
    config = NNCFConfig.from_json(path)
    assert config == json.loads(path.read_text())
    for section in config.algorithm_sections():
        params = effective_params(section)
        assert params, section["algorithm"]
        # Every value a file sets is reported as set, not as a default.
        set_paths = {p.path for p in params if not p.is_default}
        assert all(any(p.startswith(key) for p in set_paths) for key in section if key != "algorithm")
    infos = config.input_infos()
    assert all(info["sample_size"] and info["type"] and info["filler"] for info in infos)


def test_shared_folder_has_the_expected_configs() -> None:
    files = shared_config_files()
    if not files:
        pytest.skip("shared NNCF configs are absent")
    assert len(files) >= 80
    assert all(find_problems(json.loads(f.read_text())) == [] for f in files)


def test_application_keys_of_shared_configs_are_not_mistaken_for_typos() -> None:
    files = shared_config_files()
    if not files:
        pytest.skip("shared NNCF configs are absent")
    app_keys = {k for f in files for k in json.loads(f.read_text()) if k not in ROOT_KEYS}
    assert {"model", "batch_size", "epochs", "optimizer", "dataset"} <= app_keys
    assert {k: likely_intended_key(k) for k in app_keys if likely_intended_key(k)} == {}
