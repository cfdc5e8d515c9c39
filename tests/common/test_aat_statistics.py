"""Compression statistics as JSON lines: any algorithm's statistics object becomes plain JSON data."""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from aat_fakes import FakeController, FakeModel

from nncompress.api.compression import NNCFStatistics, Statistics
from nncompress.common.accuracy_aware_training import AccuracyAwareLogWriter, statistics_to_dict
from nncompress.common.accuracy_aware_training.statistics import to_jsonable
from nncompress.errors import NNCompressWarning


class Color(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Layer:
    name: str
    kept: np.int64


@dataclass
class RichStatistics(Statistics):
    level: np.float32
    layers: list[Layer] = field(default_factory=list)
    mask: np.ndarray = field(default_factory=lambda: np.array([1, 0, 1]))
    color: Color = Color.RED
    bad: float = float("nan")

    @property
    def broken(self) -> float:
        raise ZeroDivisionError("no layers")

    @property
    def kept_total(self) -> int:
        return int(sum(layer.kept for layer in self.layers))

    def to_str(self) -> str:
        return "rich"


class PlainStatistics(Statistics):
    def __init__(self) -> None:
        self.sparsity = 0.5
        self._private = "hidden"

    def to_str(self) -> str:
        return "plain"


class OwnDict(Statistics):
    def to_dict(self) -> dict:
        return {"given": (1, 2)}

    def to_str(self) -> str:
        return "own"


def test_statistics_to_dict_is_json():
    stats = NNCFStatistics()
    stats.register(
        "rich", RichStatistics(np.float32(0.25), [Layer("conv", np.int64(3)), Layer("fc", np.int64(4))])
    )
    stats.register("plain", PlainStatistics())
    stats.register("own", OwnDict())
    result = statistics_to_dict(stats)
    assert json.loads(json.dumps(result)) == result
    assert result["rich"] == {
        "level": 0.25,
        "layers": [{"name": "conv", "kept": 3}, {"name": "fc", "kept": 4}],
        "mask": [1, 0, 1],
        "color": "red",
        "bad": None,  # NaN is not JSON
        "kept_total": 7,  # public properties are included; a failing one is left out
    }
    assert result["plain"] == {"sparsity": 0.5}
    assert result["own"] == {"given": [1, 2]}
    assert statistics_to_dict(None) == {}
    assert statistics_to_dict(PlainStatistics()) == {"statistics": {"sparsity": 0.5}}


def test_to_jsonable_edge_cases():
    assert to_jsonable({1: {2, 1}, "t": (np.bool_(True),), "inf": float("inf")}) == {
        "1": [1, 2],
        "t": [True],
        "inf": None,
    }
    assert to_jsonable(object()).startswith("<object object")


def test_log_writer_without_matplotlib_writes_the_rest(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    writer = AccuracyAwareLogWriter(tmp_path, "early_exit")
    stats = FakeController(FakeModel(), rate=0.5).statistics()
    writer.write_epoch(
        epoch=0, compression_rate=0.5, accuracy=0.9, accuracy_drop=0.01, is_best=True, statistics=stats
    )
    with pytest.warns(NNCompressWarning, match="matplotlib is not installed"):
        assert writer.write_plot(uncompressed_accuracy=0.91) is None
    assert not (tmp_path / "accuracy_vs_compression.png").exists()
    record = json.loads((tmp_path / "compression_stats.jsonl").read_text())
    assert record == {
        "epoch": 0,
        "mode": "early_exit",
        "compression_rate": 0.5,
        "accuracy": 0.9,
        "accuracy_drop": 0.01,
        "is_best": True,
        "statistics": {
            "filter_pruning": {"level": 0.5, "layers": [{"name": "conv", "kept": 3}], "kept_ratio": 0.5}
        },
    }
    assert "fake level 0.5000" in (tmp_path / "compression_stats.txt").read_text()


def test_importing_the_loop_and_the_report_loads_no_framework():
    import subprocess

    code = (
        "import sys, nncompress.common.accuracy_aware_training, nncompress.report, nncompress.cli_commands.report\n"
        "print(sorted(m for m in ('torch', 'onnx', 'openvino', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
