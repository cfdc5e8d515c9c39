"""Reports of what a compression run left in a folder: PNG plots and one self-contained HTML page.

``write_report(folder)`` (or ``nncompress report FOLDER``) looks through ``folder`` (and its
sub-folders, 4 levels deep) for the files below, renders each it finds, and writes
``folder/report.html`` with the plots embedded (no other file is needed to view it). Plots need
matplotlib (``pip install nncompress[report]``); without it they are skipped with a warning and the
tables are still written. Backend-neutral: nothing here imports a framework.

Files it reads (all optional; unknown keys are ignored, wrong types are errors naming the file and
the JSON path):

``compression_stats.jsonl`` (written by the accuracy-aware training loop, one JSON object a line)::

    {"epoch": 3, "mode": "adaptive_compression_level" | "early_exit", "compression_rate": 0.4 | null,
     "accuracy": 0.91 | null, "accuracy_drop": 0.02 | null, "is_best": true,
     "statistics": {"<algorithm>": {...}}}

``summary.json``: facts about a run, shown as a table::

    {"title": "Demo: ResNet-8 on digits",          # optional
     "<any key>": <number | string | bool | null | list | object>, ...}

``latency.json``: measured inference latency, drawn as "latency bars"::

    {"unit": "ms",                                  # optional, default "ms"
     "device": "CPU",                               # optional
     "models": [{"name": "fp32", "median_ms": 1.84,
                 "throughput": 543.0,                # optional, samples/s
                 "precision": "FP32",                # optional
                 "group": "resnet"}, ...]}           # optional: speed-ups are shown against the
                                                     # first model of the same group

``quantizer_ranges.json``: the ranges of the quantizers, drawn as "per-layer quantization ranges"::

    {"model": "resnet8",                            # optional
     "quantizers": [{"name": "conv1|weight", "kind": "weight" | "activation",
                     "low": -0.5 | [per-channel lows], "high": 0.5 | [per-channel highs],
                     "bits": 8}, ...]}               # bits optional

Graphs (``*.dot``, ``*.svg``) and PNG images already in the folder are listed and linked.
"""

from __future__ import annotations

from nncompress.report.formats import (
    LATENCY_JSON,
    QUANTIZER_RANGES_JSON,
    STATS_JSONL,
    SUMMARY_JSON,
    ReportInputError,
    read_latency,
    read_quantizer_ranges,
    read_stats_jsonl,
    read_summary,
)
from nncompress.report.html import ReportContents, collect, write_report
from nncompress.report.plots import (
    plot_accuracy_by_epoch,
    plot_accuracy_vs_compression,
    plot_latency,
    plot_quantizer_ranges,
)

__all__ = [
    "LATENCY_JSON",
    "QUANTIZER_RANGES_JSON",
    "STATS_JSONL",
    "SUMMARY_JSON",
    "ReportContents",
    "ReportInputError",
    "collect",
    "plot_accuracy_by_epoch",
    "plot_accuracy_vs_compression",
    "plot_latency",
    "plot_quantizer_ranges",
    "read_latency",
    "read_quantizer_ranges",
    "read_stats_jsonl",
    "read_summary",
    "write_report",
]
