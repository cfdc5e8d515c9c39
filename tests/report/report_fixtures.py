"""A log folder with one of each file the report renders (small, written in code)."""

from __future__ import annotations

import json
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def epoch_records() -> list[dict]:
    rates = [0.3, 0.4, 0.5, 0.45]
    accuracies = [0.95, 0.94, 0.90, 0.93]
    return [
        {
            "epoch": i,
            "mode": "adaptive_compression_level",
            "compression_rate": rate,
            "accuracy": acc,
            "accuracy_drop": 0.96 - acc,
            "is_best": acc >= 0.93,
            "statistics": {
                "filter_pruning": {"pruning_level": rate, "flops_reduction": rate * 1.5, "notes": []}
            },
        }
        for i, (rate, acc) in enumerate(zip(rates, accuracies))
    ]


def make_log_folder(root: Path) -> Path:
    """``root`` with graphs at the top and an accuracy-aware run two levels down."""
    run = root / "accuracy_aware_training" / "2026-01-01__00-00-00"
    run.mkdir(parents=True)
    (run / "compression_stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epoch_records()))
    (run / "summary.json").write_text(
        json.dumps(
            {
                "title": "AAT run",
                "uncompressed_accuracy": 0.96,
                "compression_rate": 0.45,
                "criterion_met": True,
            }
        )
    )
    (root / "summary.json").write_text(
        json.dumps({"title": "Demo on digits", "model": "DigitsCNN", "epochs": 3})
    )
    (root / "latency.json").write_text(
        json.dumps(
            {
                "unit": "ms",
                "device": "CPU",
                "models": [
                    {"name": "fp32", "median_ms": 2.0, "throughput": 500.0, "precision": "FP32"},
                    {"name": "int8", "median_ms": 0.8, "throughput": 1250.0, "precision": "INT8"},
                ],
            }
        )
    )
    (root / "quantizer_ranges.json").write_text(
        json.dumps(
            {
                "model": "DigitsCNN",
                "quantizers": [
                    {
                        "name": "conv1|weight",
                        "kind": "weight",
                        "low": [-0.5, -0.2, -0.3],
                        "high": [0.5, 0.2, 0.3],
                        "bits": 8,
                    },
                    {"name": "relu1|output", "kind": "activation", "low": 0.0, "high": 4.0},
                ],
            }
        )
    )
    (root / "original_graph.dot").write_text("digraph G { a -> b }\n")
    return root
