"""``nncompress report LOG_DIR``: writes the HTML report; exit code 2 with a clear message for a
missing or empty folder and for a file not in its format."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))

from report_fixtures import make_log_folder  # noqa: E402

from nncompress import cli  # noqa: E402


def test_report_writes_html_and_says_what_it_found(tmp_path, capsys):
    root = make_log_folder(tmp_path / "logs")
    assert cli.main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    assert (
        "Found 1 training log(s), 2 summary file(s), 1 latency file(s), 1 quantizer range file(s), 1 graph(s)"
        in out
    )
    assert f"Wrote {root / 'report.html'}" in out
    assert (root / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_report_output_and_quiet(tmp_path, capsys):
    root = make_log_folder(tmp_path / "logs")
    target = tmp_path / "site" / "index.html"
    assert cli.main(["report", str(root), "-o", str(target), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert "Latency bars" not in target.read_text()  # titles are inside the images
    assert 'alt="latency bars"' in target.read_text()


@pytest.mark.parametrize("case", ["missing", "empty", "bad"])
def test_report_bad_input_exits_2(tmp_path, capsys, case):
    folder = tmp_path / "logs"
    if case != "missing":
        folder.mkdir()
    if case == "bad":
        (folder / "latency.json").write_text(json.dumps({"models": [{"name": 3, "median_ms": 1.0}]}))
    assert cli.main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    expected = {
        "missing": "no such folder",
        "empty": "nothing to report",
        "bad": "latency.json: models[0].name: expected a string",
    }[case]
    assert err.startswith("nncompress: error: ") and expected in err
    assert not (folder / "report.html").exists()


def test_report_is_listed_in_help(capsys):
    assert cli.main(["--help"]) == 0
    assert "report" in capsys.readouterr().out
    assert cli.main(["report"]) == 2  # LOG_DIR is required
