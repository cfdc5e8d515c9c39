"""Scopes and quantizer ids as NNCF 2.x configs write them, resolved against our graph.

Our node names follow NNCF's (``ResNet/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]/conv2d_0``)
with two differences that configs written for NNCF expose:

- NNCF replaces some modules by its own subclasses, so its scopes read ``NNCFConv2d[conv1]``,
  ``NNCFLinear[fc]``, ``NNCFBatchNorm2d[bn1]``...; we keep the user's classes. The ``NNCF``
  prefix of those class names is dropped, in plain names and in ``{re}`` patterns alike.
- NNCF names model inputs ``/nncf_model_input_0``; we prefix the root class
  (``ResNet/nncf_model_input_0``), as for every other node.

Quantizer ids are NNCF's: ``<node>|WEIGHT`` for a weight, ``<node>|OUTPUT`` for an op's output
(``|OUTPUT<k>`` for output port k > 0), ``<node>|INPUT<k>`` for input port k of an op. A quantizer
shared by several tensors (unified scales) joins its ids with ``;``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nncompress.errors import ConfigError, ScopeError, did_you_mean
from nncompress.graph import Graph, op_kinds
from nncompress.quantization.spec import TargetPoint, TargetType

__all__ = ["ScopeResolver", "normalize_nncf_scope", "quantizer_id"]

# torch modules NNCF swaps for its own "NNCF<Name>" subclasses
_NNCF_MODULES = (
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Linear",
    "EmbeddingBag",
    "Embedding",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "LayerNorm",
)
_NNCF_PREFIX = re.compile(r"NNCF(?=(?:" + "|".join(_NNCF_MODULES) + r")(?![A-Za-z0-9_]))")
_BOUNDARY_OPS = ("/nncf_model_input_", "/nncf_model_output_")


def normalize_nncf_scope(scope: str, root: str) -> str:
    """An NNCF scope (name or pattern body) in our naming: no ``NNCF`` class prefixes, and the
    root class in front of model inputs/outputs."""
    text = _NNCF_PREFIX.sub("", scope)
    if text.startswith(_BOUNDARY_OPS):
        text = root + text
    return text


def quantizer_id(target: TargetPoint) -> str:
    """NNCF's id of the quantizer at ``target`` (see the module docstring)."""
    if target.type is TargetType.WEIGHT:
        return f"{target.node}|WEIGHT"
    if target.type is TargetType.OUTPUT:
        return f"{target.node}|OUTPUT" + (str(target.port) if target.port else "")
    return f"{target.node}|INPUT{target.port}"


def _as_list(scopes: Any, what: str) -> list[str]:
    if scopes is None:
        return []
    if isinstance(scopes, str):
        return [scopes]
    if isinstance(scopes, Iterable) and all(isinstance(s, str) for s in scopes):
        return list(scopes)
    raise ConfigError([(what, f"expected a scope string or a list of them, got {scopes!r}")])


class ScopeResolver:
    """Matches NNCF-style scopes (names and ``{re}`` patterns) against the nodes of a graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.root = graph.name
        self.names = [n.name for n in graph.nodes]
        self.op_names = {n.name for n in graph.nodes if n.kind not in (op_kinds.INPUT, op_kinds.OUTPUT)}

    def normalize(self, scope: str) -> str:
        if scope.startswith("{re}"):
            return "{re}" + normalize_nncf_scope(scope[4:], self.root)
        return normalize_nncf_scope(scope, self.root)

    def matcher(self, scope: str) -> re.Pattern[str] | str:
        """A compiled pattern for a ``{re}`` scope, else the normalized exact name."""
        text = self.normalize(scope)
        if text.startswith("{re}"):
            try:
                return re.compile(text[4:])
            except re.error as exc:
                raise ConfigError([(scope, f"not a valid regular expression: {exc}")]) from None
        return text

    @staticmethod
    def matches(matcher: re.Pattern[str] | str, name: str) -> bool:
        if isinstance(matcher, str):
            return name == matcher
        return matcher.search(name) is not None

    def match(self, scopes: Any, what: str, *, validate: bool = True) -> set[str]:
        """Names of the nodes matched by ``scopes``; with ``validate`` a scope matching nothing is
        a ``ScopeError`` (listing every such scope, with a suggestion for misspelled names)."""
        matched: set[str] = set()
        unmatched: list[str] = []
        for scope in _as_list(scopes, what):
            matcher = self.matcher(scope)
            hits = {n for n in self.names if self.matches(matcher, n)}
            if not hits:
                unmatched.append(scope)
            matched |= hits
        if unmatched and validate:
            hint = did_you_mean(self.normalize(unmatched[0]), self.names) if len(unmatched) == 1 else ""
            raise ScopeError(
                f"{what}: {', '.join(repr(s) for s in unmatched)} matched no node of the model.{hint} "
                "Node names are printed by `nncompress.torch.trace(model, example).summary()`.",
                unmatched,
            )
        return matched

    def normalize_overrides(self, overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
        """``scope_overrides`` with every scope key in our naming."""
        result: dict[str, dict[str, Any]] = {}
        for group, entries in dict(overrides or {}).items():
            result[group] = {self.normalize(key): value for key, value in dict(entries or {}).items()}
        return result
