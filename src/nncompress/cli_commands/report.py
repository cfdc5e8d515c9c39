"""``nncompress report``: an HTML page with PNG plots of what a log or run folder holds.

    nncompress report runs/ -o report.html

Renders the accuracy-aware training logs (``compression_stats.jsonl``), ``summary.json``,
``latency.json`` and ``quantizer_ranges.json`` files, and lists graphs and images (see
:mod:`nncompress.report` for the formats). Exit codes: 0 written, 2 bad usage, a missing folder,
a folder with nothing to report or a file not in its format.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from nncompress.cli_commands import UsageError, add_quiet_option, usage_errors


def report_command(args: argparse.Namespace) -> int:
    from nncompress.report.formats import ReportInputError
    from nncompress.report.html import collect, write_report

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = write_report(args.log_dir, args.output)
    except ReportInputError as e:
        raise UsageError(str(e)) from e
    for w in caught:
        print(f"nncompress: warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        contents = collect(args.log_dir, skip=out)
        found = [
            f"{len(contents.runs)} training log(s)",
            f"{len(contents.summaries)} summary file(s)",
            f"{len(contents.latencies)} latency file(s)",
            f"{len(contents.quantizer_ranges)} quantizer range file(s)",
            f"{len(contents.graphs)} graph(s)",
            f"{len(contents.images)} image(s)",
        ]
        print(f"Found {', '.join(found)} in {args.log_dir}")
        print(f"Wrote {out}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML report with plots of a log or run folder",
        description="Look through LOG_DIR (4 levels deep) for accuracy-aware training logs "
        "(compression_stats.jsonl), summary.json, latency.json, quantizer_ranges.json, graphs and "
        "images, and write one self-contained HTML page with PNG plots (plots need matplotlib).",
    )
    p.add_argument("log_dir", metavar="LOG_DIR", help="the folder to report on")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.html",
        default=None,
        help="the HTML file to write (default LOG_DIR/report.html)",
    )
    add_quiet_option(p, "print only warnings and errors")
    p.set_defaults(handler=usage_errors(report_command))
