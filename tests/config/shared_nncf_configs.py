"""Locating NNCF's example configs in the ``shared`` folder beside the repository checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_CONFIG_DIR = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nncf-configs"
).resolve()
SKIP_REASON = f"NNCF example configs not found at {SHARED_CONFIG_DIR} (the shared folder beside the checkout)"


def shared_config_files() -> list[Path]:
    """The example configs, sorted; empty when the shared folder is absent."""
    if not SHARED_CONFIG_DIR.is_dir():
        return []
    return sorted(SHARED_CONFIG_DIR.glob("*.json"))


def shared_config_params() -> list:
    """pytest parameters: one per file, or one skipped parameter naming the missing folder."""
    files = shared_config_files()
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=SKIP_REASON), id="no-shared-configs")]
    return [pytest.param(f, id=f.stem) for f in files]
