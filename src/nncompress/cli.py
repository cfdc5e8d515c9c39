"""The ``nncompress`` command line.

Each command group registers itself with ``_COMMAND_GROUPS`` (a function that adds its argparse
sub-parsers); later groups (``quantize``, ``benchmark``, ``report``) plug in the same way. Errors
are printed without a traceback unless ``--debug`` is given.

    nncompress config validate configs/*.json
    nncompress config schema > schema.json
    nncompress quantize model.onnx --data calib.npy -o model_int8.onnx
    nncompress benchmark model.xml model_int8.xml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from nncompress.errors import ConfigError, NNCompressError
from nncompress.version import __version__

Handler = Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------------- config
def _config_validate(args: argparse.Namespace) -> int:
    from nncompress.config.nncf_config import NNCFConfig

    failed = 0
    for path in args.files:
        try:
            NNCFConfig.from_json(path)
        except ConfigError as e:
            failed += 1
            n = len(e.problems)
            print(f"FAIL  {path}: {n} problem{'s' if n != 1 else ''}")
            for where, message in e.problems:
                print(f"  {where or '<root>'}: {message}")
            continue
        except OSError as e:
            failed += 1
            print(f"FAIL  {path}: cannot read: {e.strerror or e}")
            continue
        print(f"OK  {path}")
    if len(args.files) > 1:
        print(f"{len(args.files) - failed} valid, {failed} invalid")
    return 1 if failed else 0


def _config_schema(args: argparse.Namespace) -> int:
    from nncompress.config.nncf_config import NNCFConfig

    print(json.dumps(NNCFConfig.schema(), indent=2, sort_keys=True))
    return 0


def _add_config_commands(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="validate configs, print the config schema")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)

    validate = config_sub.add_parser(
        "validate", help="check NNCF JSON configs; prints every problem with its JSON path"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="JSON config file(s)")
    validate.set_defaults(handler=_config_validate)

    schema = config_sub.add_parser("schema", help="print the JSON Schema of the config")
    schema.set_defaults(handler=_config_schema)


def _add_quantize_commands(subparsers: argparse._SubParsersAction) -> None:
    from nncompress.cli_commands import quantize

    quantize.add_commands(subparsers)


def _add_benchmark_commands(subparsers: argparse._SubParsersAction) -> None:
    from nncompress.cli_commands import benchmark

    benchmark.add_commands(subparsers)


def _add_report_commands(subparsers: argparse._SubParsersAction) -> None:
    from nncompress.cli_commands import report

    report.add_commands(subparsers)


# Command groups in the order they appear in --help.
_COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_config_commands,
    _add_quantize_commands,
    _add_benchmark_commands,
    _add_report_commands,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and for documentation)."""
    parser = argparse.ArgumentParser(
        prog="nncompress",
        description="Make trained neural networks smaller and faster (NNCF-compatible).",
    )
    parser.add_argument("--version", action="version", version=f"nncompress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_group in _COMMAND_GROUPS:
        add_group(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 success, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (NNCompressError, OSError) as e:
        if args.debug:
            raise
        print(f"nncompress: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if args.debug:
            raise
        print(
            f"nncompress: internal error: {type(e).__name__}: {e} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("nncompress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
