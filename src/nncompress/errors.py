"""One exception hierarchy for the whole project.

Every error names what is wrong and where (a JSON path, a module scope, a node name), so a user
can fix the input without reading our code. Subclasses also derive from the built-in exception a
caller would naturally catch (``ValueError``, ``TypeError``, ``RuntimeError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class NNCompressError(Exception):
    """Base class of every error raised on purpose by nncompress."""


class ConfigError(NNCompressError, ValueError):
    """An invalid configuration: lists every problem found, each with its JSON path.

    ``problems`` holds ``(json_path, message)`` pairs, in document order.
    """

    def __init__(self, problems: Sequence[tuple[str, str]] | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems: list[tuple[str, str]] = list(problems)
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        head = "Invalid NNCF config"
        if self.source:
            head += f" ({self.source})"
        n = len(self.problems)
        head += f": {n} problem{'s' if n != 1 else ''}"
        lines = [head]
        for path, msg in self.problems:
            where = path if path else "<root>"
            lines.append(f"  - {where}: {msg}")
        return "\n".join(lines)


class UnsupportedModelError(NNCompressError, TypeError):
    """The object passed as a model is of a kind no installed backend handles."""


class TracingError(NNCompressError, RuntimeError):
    """A model could not be traced; the message names the module scope and the op."""


class GraphError(NNCompressError, RuntimeError):
    """The graph is inconsistent (a missing node, a broken edge)."""


class DatasetError(NNCompressError, ValueError):
    """The calibration or validation data is empty, of the wrong shape or of the wrong type."""


class ScopeError(NNCompressError, ValueError):
    """An ignored/target scope matched nothing, or names a node that does not exist."""

    def __init__(self, message: str, unmatched: Iterable[str] = ()):
        self.unmatched = list(unmatched)
        super().__init__(message)


class QuantizationError(NNCompressError, RuntimeError):
    """Quantization could not be done as asked (for example: nothing to quantize)."""


class PruningError(NNCompressError, RuntimeError):
    """Pruning could not be done as asked (a layer left without channels, an unprunable group)."""


class CompressionStateError(NNCompressError, ValueError):
    """A saved compression state is corrupt or does not match the model it is loaded into."""


class ExportError(NNCompressError, RuntimeError):
    """Export to ONNX or OpenVINO IR failed or produced a model that disagrees with the source."""


class BackendNotAvailableError(NNCompressError, ImportError):
    """A backend framework (torch, onnx, openvino, tensorflow) is needed but not installed."""


class NNCompressWarning(UserWarning):
    """Warnings about things left uncompressed (unsupported ops, skipped tensors)."""


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """A ' Did you mean ...?' suffix for an unknown name, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=cutoff)
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean '{close[0]}'?"
    return " Did you mean one of " + ", ".join(f"'{c}'" for c in close) + "?"


class ExtraStructNotRegisteredError(NNCompressError, KeyError):
    """A runtime object (data loader, criterion...) was requested from an NNCFConfig that lacks it.

    A ``KeyError`` so code written for NNCF's ``get_extra_struct`` keeps working, with a readable
    message instead of a quoted key.
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message
