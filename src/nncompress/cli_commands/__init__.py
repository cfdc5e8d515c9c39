"""Sub-commands of the ``nncompress`` command line that need more than a few lines.

Each module exposes ``add_commands(subparsers)``, registered in ``nncompress.cli._COMMAND_GROUPS``.
Heavy imports (onnx, openvino, torch) happen inside the handlers, never at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nncompress.errors import NNCompressError


def add_quiet_option(
    parser: argparse.ArgumentParser, help: str = "no progress bars; print only results"
) -> None:
    """``--quiet`` after a command name; it shares ``args.quiet`` with ``nncompress --quiet``.

    The default is left out (``SUPPRESS``) so a sub-command does not reset a ``--quiet`` given
    before it: the main parser's ``False`` is the only default.
    """
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=help)


class UsageError(NNCompressError, ValueError):
    """A bad argument or input file: the command exits with code 2 and this message."""


def usage_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap ``handler`` so a ``UsageError`` prints ``nncompress: error: ...`` and returns 2
    (re-raised with ``--debug``)."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except UsageError as e:
            if getattr(args, "debug", False):
                raise
            print(f"nncompress: error: {e}", file=sys.stderr)
            return 2

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped
