"""Sub-commands of the ``nncompress`` command line that need more than a few lines.

Each module exposes ``add_commands(subparsers)``, registered in ``nncompress.cli._COMMAND_GROUPS``.
Heavy imports (onnx, openvino, torch) happen inside the handlers, never at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nncompress.errors import NNCompressError


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
