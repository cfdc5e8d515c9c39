"""The ``nncompress`` command line.

Each command group registers itself with ``_COMMAND_GROUPS`` (a function that adds its argparse
sub-parsers); later groups (``quantize``, ``benchmark``, ``report``) plug in the same way. Errors
are printed without a traceback unless ``--debug`` is given; ``--quiet`` (before or after the
command) turns off progress bars and prints only results, warnings and errors. Exit codes are
listed in ``EXIT_CODES`` and in ``nncompress --help``.

    nncompress config validate configs/*.json
    nncompress config schema > schema.json
    nncompress quantize model.onnx --data calib.npy -o model_int8.onnx
    nncompress benchmark model.xml model_int8.xml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence

from nncompress.cli_commands import add_quiet_option
from nncompress.errors import ConfigError, NNCompressError
from nncompress.version import __version__

Handler = Callable[[argparse.Namespace], int]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_FAILURE}    the work failed (quantization error, invalid config found, cannot write output)
  {EXIT_USAGE}    bad usage or input: unknown option, missing or unreadable file, data that does
       not fit the model, an --ignored-scope that names nothing
  {EXIT_INTERRUPTED}  interrupted (Ctrl+C)
Errors are one line on stderr; --debug shows the traceback instead."""


# ------------------------------------------------------------------------------- config
def _config_validate(args: argparse.Namespace) -> int:
    """Exit 0 when every file is valid, 1 when one is invalid, 2 when one cannot be read at all."""
    from nncompress.config.nncf_config import NNCFConfig

    failed = unreadable = 0
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
            unreadable += 1
            print(f"FAIL  {path}: cannot read: {e.strerror or e}")
            continue
        if not args.quiet:
            print(f"OK  {path}")
    if len(args.files) > 1 and not args.quiet:
        print(f"{len(args.files) - failed} valid, {failed} invalid")
    if unreadable:
        return EXIT_USAGE
    return EXIT_FAILURE if failed else EXIT_OK


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
    add_quiet_option(validate, "print only the invalid files and their problems")
    validate.set_defaults(handler=_config_validate)

    schema = config_sub.add_parser("schema", help="print the JSON Schema of the config")
    add_quiet_option(schema, "accepted for symmetry: the schema is the only output")
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
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nncompress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars or chatter: print only results, warnings and errors "
        "(every command also takes --quiet after its name)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_group in _COMMAND_GROUPS:
        add_group(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (see ``EXIT_CODES``: 0 success,
    1 failure of the work, 2 usage or input error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    quiet = contextlib.nullcontext()
    if args.quiet:
        from nncompress.progress import progress_disabled

        quiet = progress_disabled()
    try:
        with quiet:
            return handler(args)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (NNCompressError, OSError) as e:
        if args.debug:
            raise
        print(f"nncompress: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:
        if args.debug:
            raise
        print(
            f"nncompress: internal error: {type(e).__name__}: {e} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("nncompress: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
