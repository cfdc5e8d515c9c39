"""PNG plots of a run: accuracy against compression level, accuracy by epoch, per-layer
quantization ranges, latency bars.

matplotlib is imported only when a plot is drawn, through its object API (no pyplot, no global
backend switch). Without matplotlib each function warns (``NNCompressWarning``) and returns None.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nncompress.errors import NNCompressWarning

__all__ = [
    "MAX_QUANTIZERS_PLOTTED",
    "plot_accuracy_by_epoch",
    "plot_accuracy_vs_compression",
    "plot_latency",
    "plot_quantizer_ranges",
]

MAX_QUANTIZERS_PLOTTED = 120


def _figure(what: str, width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(
            NNCompressWarning(
                f"matplotlib is not installed (pip install 'nncompress[report]'): the plot of {what} is skipped"
            ),
            stacklevel=3,
        )
        return None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _reference_lines(ax: Any, uncompressed: float | None, minimal: float | None) -> None:
    if uncompressed is not None:
        ax.axhline(uncompressed, color="tab:green", linestyle="--", linewidth=1, label="uncompressed")
    if minimal is not None:
        ax.axhline(minimal, color="tab:red", linestyle=":", linewidth=1, label="minimal tolerable")


def plot_accuracy_vs_compression(
    records: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    uncompressed_accuracy: float | None = None,
    minimal_tolerable_accuracy: float | None = None,
    chosen_rate: float | None = None,
) -> Path | None:
    """Accuracy of every validated epoch against its compression level (``compression_stats``
    records); the line joins the best accuracy per level, a vertical line marks ``chosen_rate``
    (the level of the returned model). Without levels (e.g. quantization only) the accuracy is
    drawn by epoch instead. Returns the PNG path (None without matplotlib)."""
    points = [
        (float(r["compression_rate"]), float(r["accuracy"]), bool(r.get("is_best")))
        for r in records
        if r.get("compression_rate") is not None and r.get("accuracy") is not None
    ]
    if not points:
        return plot_accuracy_by_epoch(
            records,
            out,
            uncompressed_accuracy=uncompressed_accuracy,
            minimal_tolerable_accuracy=minimal_tolerable_accuracy,
            title="Accuracy against compression level (no level recorded: by epoch)",
        )
    fig = _figure("accuracy against compression level", 6.4, 4.2)
    if fig is None:
        return None
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=18, alpha=0.5, label="epochs")
    best: dict[float, float] = {}
    for rate, acc, _ in points:
        best[rate] = max(acc, best.get(rate, acc))
    rates = sorted(best)
    ax.plot(rates, [best[r] for r in rates], marker="o", linewidth=1.5, label="best per level")
    saved = [(rate, acc) for rate, acc, is_best in points if is_best]
    if saved:
        ax.scatter(
            [s[0] for s in saved],
            [s[1] for s in saved],
            marker="*",
            s=90,
            color="tab:orange",
            label="saved as best",
        )
    _reference_lines(ax, uncompressed_accuracy, minimal_tolerable_accuracy)
    if chosen_rate is not None:
        ax.axvline(chosen_rate, color="tab:gray", linewidth=1, label=f"returned model ({chosen_rate:.4g})")
    ax.set_xlabel("compression level (compression_rate)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against compression level")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_accuracy_by_epoch(
    records: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    uncompressed_accuracy: float | None = None,
    minimal_tolerable_accuracy: float | None = None,
    title: str = "Accuracy and compression level by epoch",
) -> Path | None:
    """Accuracy per validated epoch, with the compression level on a second axis when known."""
    rows = [r for r in records if r.get("accuracy") is not None]
    fig = _figure("accuracy by epoch", 6.4, 4.2)
    if fig is None:
        return None
    ax = fig.add_subplot()
    ax.plot([r["epoch"] for r in rows], [r["accuracy"] for r in rows], marker="o", label="accuracy")
    _reference_lines(ax, uncompressed_accuracy, minimal_tolerable_accuracy)
    rated = [r for r in records if r.get("compression_rate") is not None]
    if rated:
        ax2 = ax.twinx()
        ax2.step(
            [r["epoch"] for r in rated],
            [r["compression_rate"] for r in rated],
            where="pre",  # a record's level is the one its epoch was trained at
            color="tab:purple",
            alpha=0.6,
            label="compression level",
        )
        ax2.set_ylabel("compression level")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if rated:
        more = ax2.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=8, loc="lower left")
    return _save(fig, out)


def _short_names(names: Sequence[str]) -> list[str]:
    """Quantizer names without the root-class prefix they all share (``ResNet/...``)."""
    heads = {name.split("/", 1)[0] for name in names}
    if len(heads) == 1 and all("/" in name for name in names):
        return [name.split("/", 1)[1] for name in names]
    return list(names)


def plot_quantizer_ranges(data: dict[str, Any], out: str | Path) -> Path | None:
    """Per-layer quantization ranges: one bar per quantizer from its lowest to its highest bound
    (per-channel quantizers also show the median channel's range, darker). Weights and
    activations get their own panel and scale (weight ranges are often 100x smaller). ``data`` is
    a read ``quantizer_ranges.json``; at most ``MAX_QUANTIZERS_PLOTTED`` quantizers are drawn."""
    quantizers = list(data["quantizers"])[:MAX_QUANTIZERS_PLOTTED]
    colors = {"weight": "tab:blue", "activation": "tab:orange"}
    panels = [(kind, [q for q in quantizers if q["kind"] == kind]) for kind in colors]
    panels = [(kind, qs) for kind, qs in panels if qs]
    labels = dict(zip((id(q) for q in quantizers), _short_names([q["name"] for q in quantizers])))
    longest = max((len(label) for label in labels.values()), default=10)
    n = len(quantizers)
    fig = _figure(
        "per-layer quantization ranges", 4.5 + 0.055 * longest, max(2.5, 0.22 * n + 1.0 * len(panels))
    )
    if fig is None:
        return None
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=[len(qs) + 1 for _, qs in panels])[:, 0]
    for ax, (kind, qs) in zip(axes, panels):
        for i, q in enumerate(qs):
            low, high = min(q["low"]), max(q["high"])
            ax.barh(i, high - low, left=low, height=0.6, color=colors[kind], alpha=0.45)
            if len(q["low"]) > 1:
                lows, highs = sorted(q["low"]), sorted(q["high"])
                mid_low, mid_high = lows[len(lows) // 2], highs[len(highs) // 2]
                ax.barh(i, mid_high - mid_low, left=mid_low, height=0.3, color=colors[kind])
        ax.set_yticks(range(len(qs)), [labels[id(q)] for q in qs], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0.0, color="black", linewidth=0.5)
        per_channel = any(len(q["low"]) > 1 for q in qs)
        ax.set_title(
            f"{kind} quantizers ({len(qs)})"
            + (": pale = all channels, dark = median channel" if per_channel else ""),
            fontsize=9,
        )
        ax.set_xlabel("range [low, high]", fontsize=8)
    title = "Per-layer quantization ranges"
    if data.get("model"):
        title += f" ({data['model']})"
    if len(data["quantizers"]) > n:
        title += f", first {n} of {len(data['quantizers'])}"
    fig.suptitle(title)
    return _save(fig, out)


def plot_latency(data: dict[str, Any], out: str | Path) -> Path | None:
    """Latency bars: median latency per model (a read ``latency.json``), each labelled with its
    speed-up over the first model of its ``group`` (models without a group: the first model)."""
    models = data["models"]
    unit = data.get("unit", "ms")
    fig = _figure("latency bars", 6.4, max(2.5, 0.5 * len(models) + 1.5))
    if fig is None:
        return None
    ax = fig.add_subplot()
    values = [float(m["median_ms"]) for m in models]
    groups = [m.get("group") for m in models]
    palette = ["tab:blue", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:gray"]
    color_of = {g: palette[i % len(palette)] for i, g in enumerate(dict.fromkeys(groups))}
    bars = ax.barh(range(len(models)), values, color=[color_of[g] for g in groups], alpha=0.7)
    ax.set_yticks(range(len(models)), [m["name"] for m in models])
    ax.invert_yaxis()
    reference = {}
    for group, value in zip(groups, values):
        reference.setdefault(group, value)
    for bar, value, group in zip(bars, values, groups):
        ref = reference[group]
        speedup = f" ({ref / value:.2f}x)" if value > 0 and ref > 0 else ""
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {value:.3g} {unit}{speedup}",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, max(values) * 1.35 if max(values) > 0 else 1.0)
    if max(values) > 0 and min(v for v in values if v > 0) < max(values) / 50:
        ax.set_xscale("log")  # models of very different sizes: keep the small ones visible
        ax.set_xlim(min(v for v in values if v > 0) / 2, max(values) * 4)
    device = f", {data['device']}" if data.get("device") else ""
    ax.set_title(f"Latency bars (median {unit}{device})")
    ax.set_xlabel(f"median latency ({unit}); (speed-up over the first model of its group)")
    return _save(fig, out)
