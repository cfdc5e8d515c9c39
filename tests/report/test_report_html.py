"""The HTML report of a log folder: every file found is rendered, plots are embedded PNGs, bad
inputs are errors naming the file and the value."""

from __future__ import annotations

import base64
import json
import re
import sys

import pytest
from report_fixtures import PNG_SIGNATURE, epoch_records, make_log_folder

from nncompress.errors import NNCompressWarning
from nncompress.report import (
    ReportInputError,
    plot_accuracy_vs_compression,
    plot_latency,
    plot_quantizer_ranges,
    read_quantizer_ranges,
    read_stats_jsonl,
    write_report,
)


def _embedded_pngs(text: str) -> dict[str, bytes]:
    found = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', text)
    return {alt: base64.b64decode(data) for alt, data in found}


def test_report_renders_everything_in_the_folder(tmp_path):
    root = make_log_folder(tmp_path / "logs")
    out = write_report(root)
    assert out == root / "report.html"
    text = out.read_text()
    images = _embedded_pngs(text)
    assert set(images) == {
        "accuracy against compression level",
        "accuracy by epoch",
        "latency bars",
        "per-layer quantization ranges",
    }
    assert all(png[:8] == PNG_SIGNATURE for png in images.values())
    # the run's summary and the folder's summary, the per-epoch table with the statistics
    assert "<h2>AAT run</h2>" in text and "<h2>Demo on digits</h2>" in text
    assert "accuracy_aware_training/2026-01-01__00-00-00/compression_stats.jsonl" in text
    assert text.count("<td>adaptive_compression_level</td>") == 4
    assert "filter_pruning.pruning_level=0.45" in text and "filter_pruning.flops_reduction=0.675" in text
    # latency table, ranges summary, graph link relative to the report
    assert "<td>int8</td><td>0.8</td><td>1250</td><td>INT8</td>" in text
    assert "1 weight and 1 activation quantizers" in text
    assert '<a href="original_graph.dot">original_graph.dot</a>' in text


def test_report_elsewhere_links_relative_to_it_and_skips_its_own_output(tmp_path):
    root = make_log_folder(tmp_path / "logs")
    out = write_report(root, tmp_path / "out" / "r.html")
    assert '<a href="../logs/original_graph.dot">' in out.read_text()
    first = write_report(root).read_text()
    second = write_report(root).read_text()  # the first report in the folder changes nothing
    assert set(_embedded_pngs(first)) == set(_embedded_pngs(second)) and len(_embedded_pngs(first)) == 4


def test_plots_are_pngs(tmp_path):
    assert plot_accuracy_vs_compression(epoch_records(), tmp_path / "a.png", chosen_rate=0.45).read_bytes()[
        :8
    ] == (PNG_SIGNATURE)
    root = make_log_folder(tmp_path / "logs")
    ranges = read_quantizer_ranges(root / "quantizer_ranges.json")
    assert ranges["quantizers"][1]["low"] == [0.0]  # scalars become one-value lists
    assert plot_quantizer_ranges(ranges, tmp_path / "q.png").read_bytes()[:8] == PNG_SIGNATURE
    latency = json.loads((root / "latency.json").read_text())
    assert plot_latency(latency, tmp_path / "l.png").read_bytes()[:8] == PNG_SIGNATURE
    # no compression level recorded (quantization only): drawn by epoch
    no_level = [{**r, "compression_rate": None} for r in epoch_records()]
    assert plot_accuracy_vs_compression(no_level, tmp_path / "e.png").read_bytes()[:8] == PNG_SIGNATURE


def test_without_matplotlib_plots_are_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.warns(NNCompressWarning, match=r"matplotlib is not installed.*nncompress\[report\]"):
        assert plot_accuracy_vs_compression(epoch_records(), tmp_path / "a.png") is None
    assert not (tmp_path / "a.png").exists()
    root = make_log_folder(tmp_path / "logs")
    with pytest.warns(NNCompressWarning):
        text = write_report(root).read_text()
    assert "data:image/png" not in text
    assert text.count("Plot skipped") == 4 and "<td>int8</td>" in text


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "latency.json",
            {"models": [{"name": "a", "median_ms": "fast"}]},
            r"latency\.json: models\[0\]\.median_ms",
        ),
        ("latency.json", {"models": []}, "models: expected a non-empty list"),
        (
            "latency.json",
            {"models": [{"name": "a", "median_ms": 1.0, "group": 3}]},
            r"latency\.json: models\[0\]\.group: expected a string",
        ),
        ("summary.json", [1, 2], r"summary\.json: <root>: expected a JSON object"),
        (
            "quantizer_ranges.json",
            {"quantizers": [{"name": "q", "low": [0, 1], "high": [1]}]},
            "'low' has 2 values but 'high' has 1",
        ),
        (
            "quantizer_ranges.json",
            {"quantizers": [{"name": "q", "low": 2, "high": 1}]},
            "'low' is above 'high'",
        ),
        (
            "quantizer_ranges.json",
            {"quantizers": [{"name": "q", "kind": "bias", "low": 0, "high": 1}]},
            r"quantizers\[0\]\.kind: expected 'weight' or 'activation'",
        ),
    ],
)
def test_bad_files_are_errors_naming_file_and_path(tmp_path, name, content, message):
    (tmp_path / name).write_text(json.dumps(content))
    with pytest.raises(ReportInputError, match=message):
        write_report(tmp_path)


def test_bad_stats_lines_name_the_line(tmp_path):
    good = json.dumps(epoch_records()[0])
    path = tmp_path / "compression_stats.jsonl"
    path.write_text(good + "\n\n" + "{oops\n")
    with pytest.raises(ReportInputError, match=r"line 3: not valid JSON"):
        read_stats_jsonl(path)
    path.write_text(good + "\n" + json.dumps({**epoch_records()[1], "accuracy": "high"}) + "\n")
    with pytest.raises(ReportInputError, match=r"line 2: accuracy: expected a number or null"):
        read_stats_jsonl(path)
    path.write_text(json.dumps({**epoch_records()[0], "epoch": 1.5}) + "\n")
    with pytest.raises(ReportInputError, match=r"line 1: epoch: expected an integer"):
        read_stats_jsonl(path)


def test_missing_or_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ReportInputError, match="no such folder"):
        write_report(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "compression_stats.jsonl").write_text("")
    with pytest.raises(ReportInputError, match="nothing to report"):
        write_report(tmp_path)
    with pytest.raises(ReportInputError, match="not a folder"):
        write_report(tmp_path / "notes.txt")
