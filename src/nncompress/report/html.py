"""One self-contained HTML page for a log or run folder (plots embedded as PNG data URIs).

``collect(folder)`` finds what the folder holds (formats in :mod:`nncompress.report`);
``write_report(folder, out)`` renders it. A missing folder, or one with nothing to report, raises
:class:`ReportInputError`.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncompress.report import plots
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
from nncompress.version import __version__

__all__ = ["MAX_DEPTH", "ReportContents", "collect", "render_html", "write_report"]

MAX_DEPTH = 4  # folder levels searched below the given one (AAT runs sit 2 levels down)
_GRAPH_SUFFIXES = (".dot", ".svg")


@dataclass
class ReportContents:
    """What a folder holds, each item keyed by its path relative to the folder."""

    root: Path
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies: dict[str, dict[str, Any]] = field(default_factory=dict)
    quantizer_ranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    graphs: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.runs
            or self.summaries
            or self.latencies
            or self.quantizer_ranges
            or self.graphs
            or self.images
        )


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        for name in sorted(filenames):
            yield Path(dirpath) / name


def collect(folder: str | Path, *, skip: Path | None = None) -> ReportContents:
    """Read every known file under ``folder`` (ReportInputError for a missing folder or a bad file)."""
    root = Path(folder)
    if not root.exists():
        raise ReportInputError(f"{root}: no such folder")
    if not root.is_dir():
        raise ReportInputError(f"{root}: not a folder")
    contents = ReportContents(root=root)
    readers: dict[str, tuple[Callable[[Path], Any], dict[str, Any]]] = {
        STATS_JSONL: (read_stats_jsonl, contents.runs),
        SUMMARY_JSON: (read_summary, contents.summaries),
        LATENCY_JSON: (read_latency, contents.latencies),
        QUANTIZER_RANGES_JSON: (read_quantizer_ranges, contents.quantizer_ranges),
    }
    for path in _walk(root):
        if skip is not None and path.resolve() == skip.resolve():
            continue
        rel = path.relative_to(root).as_posix()
        if path.name in readers:
            reader, into = readers[path.name]
            data = reader(path)
            if path.name == STATS_JSONL and not data:
                continue  # an empty log: nothing to show
            into[rel] = data
        elif path.suffix in _GRAPH_SUFFIXES:
            contents.graphs.append(rel)
        elif path.suffix.lower() == ".png":
            contents.images.append(rel)
    return contents


# -------------------------------------------------------------------------------- rendering
def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any) -> str:
    if x is None:
        return "&ndash;"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, dict | list):
        return f"<code>{_esc(json.dumps(x))}</code>"
    return _esc(x)


def _png(render: Callable[[Path], Path | None], alt: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = render(Path(tmp) / "plot.png")
        if path is None:
            return f'<p class="note">Plot skipped ({_esc(alt)}): matplotlib is not installed.</p>'
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _stat_scalars(statistics: dict[str, Any]) -> list[str]:
    items = []
    for algo, values in statistics.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                items.append(f"{algo}.{key}={value:.4g}")
    return items


def _run_section(rel: str, records: list[dict[str, Any]], summary: dict[str, Any] | None) -> str:
    uncompressed = summary.get("uncompressed_accuracy") if summary else None
    minimal = summary.get("minimal_tolerable_accuracy") if summary else None
    kwargs = {
        "uncompressed_accuracy": uncompressed if isinstance(uncompressed, int | float) else None,
        "minimal_tolerable_accuracy": minimal if isinstance(minimal, int | float) else None,
    }
    chosen = summary.get("compression_rate") if summary else None
    chosen = chosen if isinstance(chosen, int | float) and not isinstance(chosen, bool) else None
    parts = [f"<h2>Run: {_esc(rel)}</h2>"]
    parts.append(
        _png(
            lambda p: plots.plot_accuracy_vs_compression(records, p, chosen_rate=chosen, **kwargs),
            "accuracy against compression level",
        )
    )
    parts.append(_png(lambda p: plots.plot_accuracy_by_epoch(records, p, **kwargs), "accuracy by epoch"))
    head = ["epoch", "mode", "compression rate", "accuracy", "accuracy drop", "best", "statistics"]
    rows = []
    for r in records:
        stats = _stat_scalars(r.get("statistics", {}))
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{c}</td>"
                for c in (
                    _fmt(r["epoch"]),
                    _fmt(r.get("mode")),
                    _fmt(r.get("compression_rate")),
                    _fmt(r.get("accuracy")),
                    _fmt(r.get("accuracy_drop")),
                    _fmt(bool(r.get("is_best"))),
                    f'<span class="stats">{_esc(", ".join(stats))}</span>',
                )
            )
            + "</tr>"
        )
    parts.append(
        "<h3>Per-epoch statistics</h3><table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )
    return "\n".join(parts)


def _summary_section(rel: str, data: dict[str, Any]) -> str:
    title = data.get("title") or "Summary"
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in data.items() if k != "title")
    return f"<h2>{_esc(title)}</h2><p class='src'>{_esc(rel)}</p><table>{rows}</table>"


def _latency_section(rel: str, data: dict[str, Any]) -> str:
    unit = data.get("unit", "ms")
    rows = "".join(
        f"<tr><td>{_esc(m['name'])}</td><td>{_fmt(float(m['median_ms']))}</td>"
        f"<td>{_fmt(m.get('throughput'))}</td><td>{_fmt(m.get('precision'))}</td></tr>"
        for m in data["models"]
    )
    table = f"<table><tr><th>model</th><th>median {_esc(unit)}</th><th>samples/s</th><th>precision</th></tr>{rows}</table>"
    plot = _png(lambda p: plots.plot_latency(data, p), "latency bars")
    return f"<h2>Latency</h2><p class='src'>{_esc(rel)}</p>{plot}{table}"


def _ranges_section(rel: str, data: dict[str, Any]) -> str:
    plot = _png(lambda p: plots.plot_quantizer_ranges(data, p), "per-layer quantization ranges")
    n_w = sum(q["kind"] == "weight" for q in data["quantizers"])
    n_a = len(data["quantizers"]) - n_w
    return (
        f"<h2>Quantization ranges</h2><p class='src'>{_esc(rel)}: {n_w} weight and {n_a} activation "
        f"quantizers</p>{plot}"
    )


def _links(title: str, items: list[str], root: Path, out: Path) -> str:
    if not items:
        return ""
    base = out.resolve().parent
    lis = "".join(
        f'<li><a href="{_esc(Path(os.path.relpath((root / rel).resolve(), base)).as_posix())}">{_esc(rel)}</a> '
        f"({(root / rel).stat().st_size:,} bytes)</li>"
        for rel in items
    )
    return f"<h2>{_esc(title)}</h2><ul>{lis}</ul>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:0.9em;vertical-align:top}
th{background:#f3f3f3}.stats{font-size:0.8em;color:#555}.src,.note{color:#666;font-size:0.9em}
img{max-width:100%;display:block;margin:0.5em 0}
"""


def render_html(contents: ReportContents, out: Path) -> str:
    """The report page for ``contents`` (links are relative to ``out``'s folder)."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>nncompress report: {_esc(contents.root.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>nncompress report: {_esc(contents.root)}</h1>",
        f"<p class='src'>nncompress {_esc(__version__)}, {datetime.datetime.now():%Y-%m-%d %H:%M}</p>",
    ]
    run_folders = {Path(rel).parent for rel in contents.runs}
    for rel, data in contents.summaries.items():
        if Path(rel).parent not in run_folders:  # a run's summary is shown with the run
            parts.append(_summary_section(rel, data))
    for rel, records in contents.runs.items():
        folder = Path(rel).parent
        summary_rel = (folder / SUMMARY_JSON).as_posix()
        summary = contents.summaries.get(summary_rel)
        if summary is not None:
            parts.append(_summary_section(summary_rel, summary))
        parts.append(_run_section(rel, records, summary))
    for rel, data in contents.latencies.items():
        parts.append(_latency_section(rel, data))
    for rel, data in contents.quantizer_ranges.items():
        parts.append(_ranges_section(rel, data))
    parts.append(_links("Graphs", contents.graphs, contents.root, out))
    parts.append(_links("Images", contents.images, contents.root, out))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``folder`` to ``out`` (default ``folder/report.html``)."""
    root = Path(folder)
    out_path = Path(out) if out is not None else root / "report.html"
    contents = collect(root, skip=out_path if out_path.exists() else None)
    if contents.is_empty():
        raise ReportInputError(
            f"{root}: nothing to report: no {STATS_JSONL}, {SUMMARY_JSON}, {LATENCY_JSON}, "
            f"{QUANTIZER_RANGES_JSON}, graphs (.dot/.svg) or .png files found (searched {MAX_DEPTH} levels deep)"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_html(contents, out_path), encoding="utf-8")
    return out_path
