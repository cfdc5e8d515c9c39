"""How to cut channels out of each torch layer type: a registry keyed by module class.

A :class:`LayerPruner` says which channel axes a layer has (``sizes``) and removes channels
(``prune``): ``"out"`` are its output channels (filters, BatchNorm features, embedding
dimensions), ``"in"`` its input channels (a linear layer's input features). Every parameter and
buffer along that axis is sliced and the layer's attributes (``out_channels``, ``in_features``,
``num_features``, ``groups``...) are updated, so the module stays a consistent, ordinary layer.

Register a pruner for a custom layer type::

    register_layer_pruner(MyConv, LayerPruner(sizes=my_sizes, prune=my_prune, roles={"producer"}))

Layers without a pruner are left out of pruning (the channel groups say so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from nncompress.errors import PruningError
from nncompress.pruning.grouped import grouped_kept_parts

__all__ = ["LAYER_PRUNERS", "LayerPruner", "find_pruner", "register_layer_pruner"]

Keep = Mapping[str, torch.Tensor]  # axis ("out"/"in") -> kept indices (int64, ascending)


@dataclass(frozen=True)
class LayerPruner:
    """``sizes(module)`` -> channel count per axis; ``prune(module, keep)`` cuts in place.

    ``roles`` are the parts the layer may play in a channel group: "producer" (its filters are
    pruned), "consumer" (its input channels are), "follower" (per-channel parameters that follow
    another layer's filters: BatchNorm, depthwise convolution).
    """

    sizes: Callable[[nn.Module], dict[str, int]]
    prune: Callable[[nn.Module, Keep], None]
    roles: frozenset[str] = field(default_factory=lambda: frozenset({"producer", "consumer"}))
    check: Callable[[nn.Module, str], str | None] | None = None


LAYER_PRUNERS: dict[type, LayerPruner] = {}


def register_layer_pruner(cls: type, pruner: LayerPruner) -> None:
    """Register (or replace) the pruner of a module class (subclasses use it too)."""
    LAYER_PRUNERS[cls] = pruner


def find_pruner(module: nn.Module) -> LayerPruner | None:
    """The pruner registered for ``module``'s class or its nearest base class."""
    for cls in type(module).__mro__:
        pruner = LAYER_PRUNERS.get(cls)
        if pruner is not None:
            return pruner
    return None


def _param(module: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    old = getattr(module, name, None)
    if old is None:
        return
    new = old.detach().index_select(dim, keep.to(old.device)).clone()
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module._buffers[name] = new


# -- convolutions -----------------------------------------------------------------------------


def _is_depthwise(m: nn.modules.conv._ConvNd) -> bool:
    return m.groups > 1 and m.groups == m.in_channels and not m.transposed


def _conv_sizes(m: nn.Module) -> dict[str, int]:
    return {"out": m.out_channels, "in": m.in_channels}


def _conv_check(m: nn.Module, role: str) -> str | None:
    if m.groups == 1:
        return None
    if role == "follower" and _is_depthwise(m):
        return None
    if not m.transposed and m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0:
        return None  # grouped: whole groups (follower) or the same offsets of every group
    return f"'{type(m).__name__}' with groups={m.groups} is only pruned as a depthwise convolution"


def _grouped_prune(m: nn.Module, keep: Keep) -> None:
    """Cut a grouped convolution: every kept group must keep as many inputs and filters as the
    others (a group keeping neither is dropped, and ``groups`` shrinks)."""
    groups = m.groups
    cin_g, cout_g = m.in_channels // groups, m.out_channels // groups
    in_keep = keep.get("in", torch.arange(m.in_channels))
    out_keep = keep.get("out", torch.arange(m.out_channels))
    np_rows, np_offsets = grouped_kept_parts(
        f"grouped {type(m).__name__}", groups, cin_g, cout_g, in_keep.cpu().numpy(), out_keep.cpu().numpy()
    )
    rows = [torch.as_tensor(r, dtype=torch.long) for r in np_rows]
    offsets = [torch.as_tensor(o, dtype=torch.long) for o in np_offsets]
    weight = m.weight.detach()
    parts = [
        weight.index_select(0, r.to(weight.device)).index_select(1, o.to(weight.device))
        for r, o in zip(rows, offsets)
    ]
    new = torch.cat(parts, 0).clone()
    m.weight = nn.Parameter(new, requires_grad=m.weight.requires_grad)
    _param(m, "bias", 0, torch.cat(rows))
    m.groups = len(rows)
    m.out_channels = sum(len(r) for r in rows)
    m.in_channels = len(rows) * len(offsets[0])


def _conv_prune(m: nn.Module, keep: Keep) -> None:
    out_keep, in_keep = keep.get("out"), keep.get("in")
    if _is_depthwise(m):
        # filters follow input channels: both axes are cut together, groups = kept inputs
        if in_keep is None or out_keep is None:
            raise PruningError(
                f"depthwise {type(m).__name__} needs both 'in' and 'out' kept channels (groups = inputs)"
            )
        mult = m.out_channels // m.in_channels
        if len(out_keep) != len(in_keep) * mult:
            raise PruningError(
                f"depthwise {type(m).__name__}: {len(out_keep)} kept filters do not match "
                f"{len(in_keep)} kept inputs x {mult}"
            )
        _param(m, "weight", 0, out_keep)
        _param(m, "bias", 0, out_keep)
        m.in_channels = m.groups = len(in_keep)
        m.out_channels = len(out_keep)
        return
    if m.groups != 1 and not m.transposed:
        _grouped_prune(m, keep)
        return
    if m.groups != 1:
        raise PruningError(f"{type(m).__name__} with groups={m.groups} cannot have channels removed")
    out_dim, in_dim = (1, 0) if m.transposed else (0, 1)
    if out_keep is not None:
        _param(m, "weight", out_dim, out_keep)
        _param(m, "bias", 0, out_keep)
        m.out_channels = len(out_keep)
    if in_keep is not None:
        _param(m, "weight", in_dim, in_keep)
        m.in_channels = len(in_keep)


_CONV = LayerPruner(_conv_sizes, _conv_prune, frozenset({"producer", "consumer", "follower"}), _conv_check)
register_layer_pruner(nn.Conv1d, _CONV)
register_layer_pruner(nn.Conv2d, _CONV)
register_layer_pruner(nn.Conv3d, _CONV)
register_layer_pruner(nn.ConvTranspose1d, _CONV)
register_layer_pruner(nn.ConvTranspose2d, _CONV)
register_layer_pruner(nn.ConvTranspose3d, _CONV)


# -- linear ----------------------------------------------------------------------------------


def _linear_prune(m: nn.Module, keep: Keep) -> None:
    if "out" in keep:
        _param(m, "weight", 0, keep["out"])
        _param(m, "bias", 0, keep["out"])
        m.out_features = len(keep["out"])
    if "in" in keep:
        _param(m, "weight", 1, keep["in"])
        m.in_features = len(keep["in"])


register_layer_pruner(
    nn.Linear, LayerPruner(lambda m: {"out": m.out_features, "in": m.in_features}, _linear_prune)
)


# -- normalization, activations with parameters, embeddings -----------------------------------


def _norm_prune(m: nn.Module, keep: Keep) -> None:
    idx = keep["out"]
    for name in ("weight", "bias", "running_mean", "running_var"):
        _param(m, name, 0, idx)
    m.num_features = len(idx)


_NORM = LayerPruner(lambda m: {"out": m.num_features}, _norm_prune, frozenset({"follower"}))
register_layer_pruner(nn.modules.batchnorm._BatchNorm, _NORM)
register_layer_pruner(nn.modules.instancenorm._InstanceNorm, _NORM)


def _prelu_prune(m: nn.Module, keep: Keep) -> None:
    if m.num_parameters > 1:
        _param(m, "weight", 0, keep["out"])
        m.num_parameters = len(keep["out"])


register_layer_pruner(
    nn.PReLU, LayerPruner(lambda m: {"out": m.num_parameters}, _prelu_prune, frozenset({"follower"}))
)


def _embedding_prune(m: nn.Module, keep: Keep) -> None:
    _param(m, "weight", 1, keep["out"])
    m.embedding_dim = len(keep["out"])


register_layer_pruner(
    nn.Embedding,
    LayerPruner(lambda m: {"out": m.embedding_dim}, _embedding_prune, frozenset({"producer"})),
)
