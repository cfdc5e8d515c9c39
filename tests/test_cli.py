"""The ``nncompress`` command line: config validation, schema output, version, error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nncompress import cli
from nncompress.errors import ConfigError
from nncompress.version import __version__

VALID = {"input_info": {"sample_size": [1, 3, 8, 8]}, "compression": {"algorithm": "quantization"}}
INVALID = {
    "input_info": {"sample_size": [1, 3, 8, 8]},
    "compression": {"algorithm": "quantization", "weights": {"bits": 1}},
    "compresion": {},
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, content in (
        ("good", json.dumps(VALID)),
        ("bad", json.dumps(INVALID)),
        ("broken", "{\n  oops\n}"),
    ):
        out[name] = tmp_path / f"{name}.json"
        out[name].write_text(content)
    return out


def test_validate_valid_file(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "validate", str(files["good"])]) == 0
    assert capsys.readouterr().out == f"OK  {files['good']}\n"


def test_validate_invalid_file_lists_every_problem(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["config", "validate", str(files["bad"])]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"FAIL  {files['bad']}: 2 problems"
    assert out[1].startswith("  compression.weights.bits: 1 is out of range; expected an integer in [2, 8]")
    assert out[2].startswith("  compresion: unknown top-level key 'compresion'")


def test_validate_several_files_reports_each_and_fails_if_any_invalid(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = [str(files["good"]), str(files["broken"]), str(tmp_path / "missing.json")]
    # a file that cannot be read is an input error (2), which outranks an invalid one (1)
    assert cli.main(["config", "validate", *args]) == 2
    out = capsys.readouterr().out
    assert f"OK  {files['good']}" in out
    assert f"FAIL  {files['broken']}: 1 problem" in out and "line 2, column 3" in out
    assert "missing.json: cannot read: No such file or directory" in out
    assert out.rstrip().endswith("1 valid, 2 invalid")


def test_schema_command_prints_the_schema_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    from nncompress.config import NNCFConfig

    assert cli.main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == NNCFConfig.schema()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nncompress {__version__}"


@pytest.mark.parametrize("argv", [[], ["config"], ["config", "validate"], ["frobnicate"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage: nncompress" in capsys.readouterr().err


def test_errors_have_no_traceback_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: object) -> int:
        raise ConfigError("something is wrong")

    monkeypatch.setattr(cli, "_config_schema", boom)
    assert cli.main(["config", "schema"]) == 1
    err = capsys.readouterr().err
    assert "nncompress: error: Invalid NNCF config" in err and "Traceback" not in err
    with pytest.raises(ConfigError):
        cli.main(["--debug", "config", "schema"])


def test_module_entry_point_runs_as_a_process(files: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nncompress.cli", "config", "validate", str(files["bad"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "compression.weights.bits" in result.stdout and result.stderr == ""
