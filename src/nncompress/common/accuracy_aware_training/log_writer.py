"""The files the accuracy-aware loop writes into its log folder, one line per validated epoch.

- ``compression_stats.jsonl``: one JSON object per line and epoch::

      {"epoch": 3, "mode": "adaptive_compression_level", "compression_rate": 0.4,
       "accuracy": 0.91, "accuracy_drop": 0.02, "is_best": true,
       "statistics": {"filter_pruning": {"pruning_level": 0.4, ...}}}

  ``epoch`` counts training epochs done so far (0: validated before any fine-tuning);
  ``compression_rate`` is the level the loop set (adaptive) or the controller's
  ``compression_rate`` (early exit; null when no algorithm has one); ``accuracy_drop`` is the
  absolute drop ``uncompressed - accuracy``; ``is_best`` says the epoch's model was saved as a
  best checkpoint when the line was written; ``statistics`` is ``ctrl.statistics()`` as JSON,
  per algorithm.
- ``compression_stats.txt``: the same epochs, with ``ctrl.statistics().to_str()``.
- ``accuracy_vs_compression.png``: accuracy against compression level (by epoch when no level is
  known), written when the run ends; skipped with a warning without matplotlib.
- ``summary.json``: the outcome of the run (the ``summary.json`` format of :mod:`nncompress.report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nncompress.api.compression import NNCFStatistics
from nncompress.common.accuracy_aware_training.statistics import statistics_to_dict, to_jsonable

__all__ = ["AccuracyAwareLogWriter", "STATS_JSONL", "STATS_TXT", "PLOT_PNG", "SUMMARY_JSON"]

STATS_JSONL = "compression_stats.jsonl"
STATS_TXT = "compression_stats.txt"
PLOT_PNG = "accuracy_vs_compression.png"
SUMMARY_JSON = "summary.json"


class AccuracyAwareLogWriter:
    """Appends epoch records to ``log_dir`` and writes the plot and the summary at the end."""

    def __init__(self, log_dir: Path, mode: str):
        self.log_dir = Path(log_dir)
        self.mode = mode
        self.records: list[dict[str, Any]] = []
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def write_epoch(
        self,
        *,
        epoch: int,
        compression_rate: float | None,
        accuracy: float | None,
        accuracy_drop: float | None,
        is_best: bool,
        statistics: NNCFStatistics | None,
    ) -> dict[str, Any]:
        """Append one epoch to the JSON lines and the text log; returns the record written."""
        record = {
            "epoch": int(epoch),
            "mode": self.mode,
            "compression_rate": to_jsonable(None if compression_rate is None else float(compression_rate)),
            "accuracy": to_jsonable(None if accuracy is None else float(accuracy)),
            "accuracy_drop": to_jsonable(None if accuracy_drop is None else float(accuracy_drop)),
            "is_best": bool(is_best),
            "statistics": statistics_to_dict(statistics),
        }
        with open(self.log_dir / STATS_JSONL, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
        head = f"Epoch {epoch} ({self.mode})"
        facts = [
            f"compression rate: {'n/a' if compression_rate is None else f'{compression_rate:.4f}'}",
            f"accuracy: {'n/a' if accuracy is None else f'{accuracy:.4f}'}",
            f"accuracy drop: {'n/a' if accuracy_drop is None else f'{accuracy_drop:.4f}'}",
            f"best: {'yes' if is_best else 'no'}",
        ]
        text = statistics.to_str() if statistics is not None else "No compression statistics."
        with open(self.log_dir / STATS_TXT, "a", encoding="utf-8") as f:
            f.write(f"{'=' * 78}\n{head}: " + ", ".join(facts) + f"\n{'-' * 78}\n{text}\n\n")
        self.records.append(record)
        return record

    def write_plot(
        self,
        *,
        uncompressed_accuracy: float | None = None,
        minimal_tolerable_accuracy: float | None = None,
        chosen_rate: float | None = None,
    ) -> Path | None:
        """``accuracy_vs_compression.png`` from the records so far (None without matplotlib)."""
        from nncompress.report.plots import plot_accuracy_vs_compression

        return plot_accuracy_vs_compression(
            self.records,
            self.log_dir / PLOT_PNG,
            uncompressed_accuracy=uncompressed_accuracy,
            minimal_tolerable_accuracy=minimal_tolerable_accuracy,
            chosen_rate=chosen_rate,
        )

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.log_dir / SUMMARY_JSON
        path.write_text(json.dumps(to_jsonable(summary), indent=2) + "\n", encoding="utf-8")
        return path
