"""Channel rules: for each op kind, how channels go through the op (a registry).

A rule gets the :class:`~nncompress.pruning.propagation.Propagation` and the node; it reads the
input channel maps, sets the output maps, and joins or fixes atoms. Register a rule for a new op
kind with :func:`register_channel_rule`; kinds without a rule fix the channels they read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np

from nncompress.graph import Node
from nncompress.graph import op_kinds as K
from nncompress.pruning.propagation import FIXED, ChannelMap, Propagation, RuleInput, Shape, fits, known_shape

__all__ = ["CHANNEL_RULES", "Rule", "grouped_conv_mode", "opaque", "pass_through", "register_channel_rule"]

# ---------------------------------------------------------------------------------------------
# channel rules: op kind -> how channels go through it
# ---------------------------------------------------------------------------------------------

Rule = Callable[[Propagation, Node], None]
CHANNEL_RULES: dict[str, Rule] = {}


def register_channel_rule(kinds: str | Iterable[str], rule: Rule) -> None:
    """Register (or override) the channel rule of one or several op kinds."""
    for kind in (kinds,) if isinstance(kinds, str) else kinds:
        CHANNEL_RULES[kind] = rule


def opaque(why: str) -> Rule:
    """A rule for ops whose use of channels cannot be followed: their inputs' channels are fixed."""

    def rule(ctx: Propagation, node: Node) -> None:
        ctx.fix_inputs(node, why)

    return rule


def _data_input(ctx: Propagation, node: Node, port: int = 0) -> RuleInput | None:
    for inp in ctx.inputs(node):
        if inp.port == port:
            return inp
    return None


def _mapped_input(ctx: Propagation, node: Node) -> RuleInput | None:
    """The data input if it carries channels; otherwise None, with the node's outputs set to none."""
    inp = _data_input(ctx, node)
    if inp is None or inp.map is None:
        ctx.set_all_outputs(node, None)
        return None
    return inp


def _fix_other_inputs(ctx: Propagation, node: Node, keep_port: int, why: str) -> None:
    for inp in ctx.inputs(node):
        if inp.port != keep_port:
            ctx.fix_map(inp.map, f"read by {ctx.label(node)}, which {why}")


def pass_through(ctx: Propagation, node: Node) -> None:
    """Unary ops that keep channels where they are (activations, pooling, dropout, casts...)."""
    inp = _data_input(ctx, node)
    _fix_other_inputs(ctx, node, 0, "uses it as a parameter tensor")
    ctx.set_all_outputs(node, inp.map if inp is not None else None)


def _rule_constant(ctx: Propagation, node: Node) -> None:
    # ``zeros_like(x)`` follows x's shape at run time: keep the map when the shape is the same
    inp = _data_input(ctx, node)
    if inp is not None and inp.map is not None and inp.shape == ctx.out_shape(node):
        ctx.set_all_outputs(node, inp.map)


def _rule_output(ctx: Propagation, node: Node) -> None:
    for inp in ctx.inputs(node):
        ctx.fix_map(inp.map, f"reaches model output '{node.name}'")


def _conv_channel_axis(node: Node, shape: Shape | None) -> int:
    kernel = node.attrs.get("kernel_size") or ()
    if shape is None or not kernel:
        return 1
    if node.attrs.get("channel_axis") is not None:  # channels-last layouts (Keras) say so
        return int(node.attrs["channel_axis"]) % len(shape)
    return max(0, len(shape) - len(kernel) - 1)


def _first_weight(node: Node) -> tuple[int, object] | None:
    if not node.weights:
        return None
    port = min(node.weights)
    return port, node.weights[port]


def _rule_conv(ctx: Propagation, node: Node) -> None:
    found = _first_weight(node)
    inp = _data_input(ctx, node)
    if found is None:
        ctx.fix_inputs(node, "is a convolution with a computed weight")
        return
    _, w = found
    groups = int(node.attrs.get("groups", 1) or 1)
    transpose = bool(node.attrs.get("transpose"))
    cin, cout = node.attrs.get("in_channels"), node.attrs.get("out_channels")
    out_shape = ctx.out_shape(node)
    axis = _conv_channel_axis(node, out_shape)
    if cin is None or cout is None:
        ctx.fix_inputs(node, "has unknown channel counts")
        return
    depthwise = groups > 1 and groups == cin and not transpose
    if depthwise:
        _depthwise(ctx, node, inp, w, cin, cout, axis)
        return
    if groups > 1:
        if transpose or cin % groups or cout % groups:
            why = (
                f"is a grouped {'transposed ' if transpose else ''}convolution (groups={groups}) whose "
                "channels cannot be removed group by group, so it is left out"
            )
            ctx.fix_inputs(node, why)
            atoms = ctx.produce(node, cout, w.name, w.out_channel_axis, 0)
            for a in atoms.tolist():
                ctx.atoms.fix(a, f"filters of the grouped convolution '{node.name}' (groups={groups})")
            ctx.set_all_outputs(node, ChannelMap(axis, atoms))
            return
        _grouped(ctx, node, inp, w, cin, cout, groups, axis)
        return
    _fix_other_inputs(ctx, node, 0, "uses it as a computed weight")
    ctx.consume(node, inp, cin, axis, w.name, w.in_channel_axis)
    atoms = ctx.produce(node, cout, w.name, w.out_channel_axis, 0)
    ctx.set_all_outputs(node, ChannelMap(axis, atoms))


def _depthwise(
    ctx: Propagation, node: Node, inp: RuleInput | None, w, cin: int, cout: int, axis: int
) -> None:
    if inp is None or inp.map is None:
        return
    cmap = inp.map
    if cmap.axis != axis or len(cmap) != cin or cout % cin:
        ctx.fix_map(cmap, f"read by {ctx.label(node)} on another axis or with other channel counts")
        return
    out_atoms = np.repeat(cmap.atoms, cout // cin)
    atoms = ctx.follow(node, ChannelMap(axis, out_atoms), w.name, w.out_channel_axis)
    if atoms is None:
        return
    lay = ctx.layer(node, w.name)
    lay.in_units = ctx.bind(node, w.name, "in", cmap.atoms)
    ctx.set_all_outputs(node, ChannelMap(axis, atoms))


def grouped_conv_mode(cin: int, cout: int, groups: int) -> str:
    """How a grouped convolution (``1 < groups < cin``) is pruned so that its groups stay equal:

    - ``"whole_groups"``: a group is removed with its input and output channels (the layer keeps
      fewer groups); ``groups`` units to choose from;
    - ``"per_offset"``: channel ``i`` of every group is removed together, on the input side and on
      the output side (the layer keeps its groups, each one smaller); ``cin/groups + cout/groups``
      units.

    The mode with more units (more freedom for the ranking) wins.
    """
    return "whole_groups" if groups >= cin // groups + cout // groups else "per_offset"


def _grouped(
    ctx: Propagation, node: Node, inp: RuleInput | None, w, cin: int, cout: int, groups: int, axis: int
) -> None:
    """A grouped convolution: whole groups removed, or the same offsets in every group (see
    :func:`grouped_conv_mode`); either way the cut layer has groups of equal size."""
    cin_g, cout_g = cin // groups, cout // groups
    start = len(ctx.couplings)
    _grouped_joins(ctx, node, inp, w, cin, cout, groups, axis, cin_g, cout_g)
    # the joins above note "GroupConvolution 'name'"; the notes of _grouped_joins say how
    generic = f"{node.kind} '{node.name}'"
    ctx.couplings[start:] = [(a, t) for a, t in ctx.couplings[start:] if t != generic]


def _grouped_joins(
    ctx: Propagation,
    node: Node,
    inp: RuleInput | None,
    w,
    cin: int,
    cout: int,
    groups: int,
    axis: int,
    cin_g: int,
    cout_g: int,
) -> None:
    cmap = inp.map if inp is not None else None
    readable = cmap is not None and cmap.axis == axis and len(cmap) == cin
    if cmap is not None and not readable:
        ctx.fix_map(cmap, f"read by {ctx.label(node)} on another axis or with other channel counts")
    mode = grouped_conv_mode(cin, cout, groups)
    # whole groups follow the producer's channels: only when there are some (not a model input)
    # and the layer's own filters may go (not an ignored layer)
    if mode == "whole_groups" and readable and (cmap.atoms >= 0).any() and node.name not in ctx.excluded:
        # the channels of one group are one unit: its inputs (other layers' filters) and its filters
        rows = cmap.atoms.reshape(groups, cin_g)
        reps = np.array([next((a for a in r.tolist() if a >= 0), FIXED) for r in rows], dtype=np.int64)
        for r, rep in zip(rows, reps.tolist()):
            if rep >= 0:
                ctx.join(node, np.full(cin_g, rep, dtype=np.int64), r)
                ctx.couplings.append((rep, f"{ctx.label(node)} (groups={groups}: whole groups removed)"))
        atoms = ctx.follow(node, ChannelMap(axis, np.repeat(reps, cout_g)), w.name, w.out_channel_axis)
        if atoms is None:
            ctx.set_all_outputs(node, None)
            return
        lay = ctx.layer(node, w.name)
        lay.in_units = ctx.bind(node, w.name, "in", cmap.atoms)
        ctx.set_all_outputs(node, ChannelMap(axis, atoms))
        return
    # per offset: input offset i of every group is one unit, and so is output offset j
    note = f"{ctx.label(node)} (groups={groups}: the same channels removed from every group)"
    if readable:
        rows = cmap.atoms.reshape(groups, cin_g)
        for r in rows[1:]:
            ctx.join(node, rows[0], r)
        for a in rows[0].tolist():
            if a >= 0:
                ctx.couplings.append((a, note))
        ctx.consume(node, inp, cin, axis, w.name, w.in_channel_axis)
    else:
        ctx.consume(node, None, cin, axis, w.name, w.in_channel_axis)
    atoms = ctx.produce(node, cout, w.name, w.out_channel_axis, 0)
    outs = atoms.reshape(groups, cout_g)
    for r in outs[1:]:
        ctx.join(node, outs[0], r)
    for a in outs[0].tolist():
        ctx.couplings.append((a, note))
    ctx.set_all_outputs(node, ChannelMap(axis, atoms))


def _rule_matmul(ctx: Propagation, node: Node) -> None:
    found = _first_weight(node)
    if found is None or found[0] != 1 or len(found[1].shape) != 2:
        ctx.fix_inputs(node, "multiplies activations together (their channels mix)")
        return
    _, w = found
    inp = _data_input(ctx, node)
    _fix_other_inputs(ctx, node, 0, "uses it as a computed weight")
    in_shape = inp.shape if inp is not None else None
    out_shape = ctx.out_shape(node)
    cin, cout = w.shape[w.in_channel_axis], w.shape[w.out_channel_axis]
    if in_shape is not None:
        ctx.consume(node, inp, cin, len(in_shape) - 1, w.name, w.in_channel_axis)
    out_axis = len(out_shape) - 1 if out_shape is not None else 1
    atoms = ctx.produce(node, cout, w.name, w.out_channel_axis, 0)
    ctx.set_all_outputs(node, ChannelMap(out_axis, atoms))


def _rule_embedding(ctx: Propagation, node: Node) -> None:
    found = _first_weight(node)
    out_shape = ctx.out_shape(node)
    if found is None or len(found[1].shape) != 2 or out_shape is None:
        return
    _, w = found
    atoms = ctx.produce(node, w.shape[1], w.name, 1, None)
    ctx.set_all_outputs(node, ChannelMap(len(out_shape) - 1, atoms))


def _rule_pool(ctx: Propagation, node: Node) -> None:
    """Pooling keeps the channels; a global pooling of a channels-last tensor that drops the
    spatial axes (Keras' ``GlobalAveragePooling2D``: ``(N, H, W, C) -> (N, C)``) moves them to
    the last axis of its output."""
    inp = _data_input(ctx, node)
    _fix_other_inputs(ctx, node, 0, "uses it as a parameter tensor")
    cmap = inp.map if inp is not None else None
    out = ctx.out_shape(node)
    if (
        cmap is not None
        and inp.shape is not None
        and out is not None
        and not fits(cmap, out)
        and cmap.axis == len(inp.shape) - 1
        and len(out) >= 2
        and out[-1] == len(cmap)
    ):
        cmap = ChannelMap(len(out) - 1, cmap.atoms)
    ctx.set_all_outputs(node, cmap)


def _rule_norm(ctx: Propagation, node: Node) -> None:
    """BatchNorm / InstanceNorm: per-channel parameters on axis 1; followers."""
    inp = _data_input(ctx, node)
    _fix_other_inputs(ctx, node, 0, "uses it as a statistic")
    if inp is None or inp.map is None:
        ctx.set_all_outputs(node, None)
        return
    cmap = inp.map
    expected = node.attrs.get("channel_axis", 1)  # channels-last layouts (Keras) say so
    if inp.shape is not None and expected is not None:
        expected = int(expected) % len(inp.shape)
    if cmap.axis != expected:
        ctx.fix_map(cmap, f"normalized by {ctx.label(node)} along another axis")
        ctx.set_all_outputs(node, cmap)
        return
    # a follower even without affine parameters: its running statistics are per channel
    found = _first_weight(node)
    atoms = ctx.follow(node, cmap, found[1].name if found else None, 0)
    ctx.set_all_outputs(node, cmap if atoms is None else ChannelMap(cmap.axis, atoms))


def _rule_prelu(ctx: Propagation, node: Node) -> None:
    inp = _data_input(ctx, node)
    found = _first_weight(node)
    if inp is None or inp.map is None:
        ctx.set_all_outputs(node, None)
        return
    cmap = inp.map
    if found is not None and found[1].shape and found[1].shape[0] > 1:
        if cmap.axis != 1 or found[1].shape[0] != len(cmap):
            ctx.fix_map(cmap, f"scaled per channel by {ctx.label(node)} along another axis")
        else:
            atoms = ctx.follow(node, cmap, found[1].name, 0)
            if atoms is not None:
                cmap = ChannelMap(cmap.axis, atoms)
    ctx.set_all_outputs(node, cmap)


def _normalized_axes(node: Node, rank: int) -> set[int]:
    shape = node.attrs.get("normalized_shape")
    if isinstance(shape, int):
        n = 1
    elif isinstance(shape, tuple):
        n = len(shape)
    else:
        n = rank  # unknown: assume everything
    return set(range(rank - n, rank))


def _rule_layer_norm(ctx: Propagation, node: Node) -> None:
    inp = _data_input(ctx, node)
    _fix_other_inputs(ctx, node, 0, "uses it as a statistic")
    if inp is None or inp.map is None:
        ctx.set_all_outputs(node, None)
        return
    rank = len(inp.shape) if inp.shape is not None else inp.map.axis + 1
    if inp.map.axis in _normalized_axes(node, rank):
        ctx.fix_map(
            inp.map, f"normalized over channels by {ctx.label(node)} (removing one changes the others)"
        )
    ctx.set_all_outputs(node, inp.map)


def _rule_group_norm(ctx: Propagation, node: Node) -> None:
    inp = _data_input(ctx, node)
    if inp is not None:
        ctx.fix_map(inp.map, f"normalized in groups of channels by {ctx.label(node)}")
        ctx.set_all_outputs(node, inp.map)


def _axes_attr(node: Node, rank: int | None) -> set[int] | None:
    axis = node.attrs.get("axis")
    if axis is None:
        return None
    items = axis if isinstance(axis, tuple) else (axis,)
    out = set()
    for a in items:
        if not isinstance(a, int):
            return None
        if a < 0:
            if rank is None:
                return None
            a += rank
        out.add(a)
    return out


def _rule_over_axis(what: str) -> Rule:
    """Softmax, L2 normalization: channel-wise ops along ``axis``; fixed when that is the channel axis."""

    def rule(ctx: Propagation, node: Node) -> None:
        inp = _mapped_input(ctx, node)
        if inp is None:
            return
        rank = len(inp.shape) if inp.shape is not None else None
        axes = _axes_attr(node, rank)
        if axes is None or inp.map.axis in axes:
            ctx.fix_map(inp.map, f"{what} across channels by {ctx.label(node)}")
        ctx.set_all_outputs(node, inp.map)

    return rule


def _rule_reduce(ctx: Propagation, node: Node) -> None:
    inp = _mapped_input(ctx, node)
    if inp is None:
        return
    rank = len(inp.shape) if inp.shape is not None else None
    axes = _axes_attr(node, rank)
    cmap = inp.map
    if axes is None or cmap.axis in axes:
        ctx.fix_map(cmap, f"reduced across channels by {ctx.label(node)}")
        ctx.set_all_outputs(node, None)
        return
    keepdim = bool(node.attrs.get("keepdim"))
    axis = cmap.axis if keepdim else cmap.axis - sum(1 for a in axes if a < cmap.axis)
    ctx.set_all_outputs(node, ChannelMap(axis, cmap.atoms))


def _rule_elementwise(ctx: Propagation, node: Node) -> None:
    """Broadcasting binary ops: channels meeting at the same output position are joined."""
    out_shape = ctx.out_shape(node)
    inputs = ctx.inputs(node)
    if out_shape is None:
        for inp in inputs:
            ctx.fix_map(inp.map, f"combined by {ctx.label(node)} whose output shape is unknown")
        return
    rank = len(out_shape)
    placed: list[tuple[int, ChannelMap, str]] = []
    for inp in inputs:
        if inp.map is None:
            continue
        in_rank = len(inp.shape) if inp.shape is not None else rank
        axis = inp.map.axis + (rank - in_rank)
        if not (0 <= axis < rank) or out_shape[axis] != len(inp.map):
            ctx.fix_map(inp.map, f"broadcast by {ctx.label(node)} over its channel axis")
            continue
        placed.append((axis, ChannelMap(axis, inp.map.atoms), inp.src))
    if not placed:
        ctx.set_all_outputs(node, None)
        return
    axes = {a for a, _, _ in placed}
    if len(axes) > 1:
        for _, cmap, _ in placed:
            ctx.fix_map(cmap, f"combined by {ctx.label(node)} with channels on another axis")
        ctx.set_all_outputs(node, None)
        return
    axis = placed[0][0]
    result = placed[0][1]
    for _, cmap, _ in placed[1:]:
        ctx.join(node, result.atoms, cmap.atoms)
    # an operand without a map but with a full channel dimension (a constant, a model input)
    for inp in inputs:
        if inp.map is not None or inp.shape is None:
            continue
        a = axis - (rank - len(inp.shape))
        if 0 <= a < len(inp.shape) and inp.shape[a] not in (1, None):
            ctx.join(node, result.atoms, np.full(len(result), FIXED), source=f"from '{inp.src}'")
    for w in node.weights.values():
        a = axis - (rank - len(w.shape))
        if 0 <= a < len(w.shape) and w.shape[a] > 1:
            ctx.fix_map(result, f"combined by {ctx.label(node)} with the parameter '{w.name}'")
    ctx.set_all_outputs(node, result)


def _rule_concat(ctx: Propagation, node: Node) -> None:
    out_shape = ctx.out_shape(node)
    inputs = ctx.inputs(node)
    mapped = [inp for inp in inputs if inp.map is not None]
    if not mapped:
        ctx.set_all_outputs(node, None)
        return

    def give_up(why: str) -> None:
        for inp in mapped:
            ctx.fix_map(inp.map, f"concatenated by {ctx.label(node)}: {why}")
        ctx.set_all_outputs(node, None)

    if out_shape is None or any(inp.shape is None for inp in inputs):
        give_up("shapes unknown")
        return
    rank = len(out_shape)
    cat = node.attrs.get("axis")
    if not isinstance(cat, int):
        give_up("axis unknown")
        return
    cat %= rank
    stacked = all(len(inp.shape) == rank - 1 for inp in inputs)
    if not stacked and all(inp.map.axis == cat for inp in mapped):
        parts = [
            inp.map.atoms if inp.map is not None else np.full(int(inp.shape[cat]), FIXED, dtype=np.int64)
            for inp in inputs
        ]
        ctx.set_all_outputs(node, ChannelMap(cat, np.concatenate(parts)))
        return
    # concatenated (or stacked) along another axis: channel c of every input meets at c
    axes = {inp.map.axis + (1 if stacked and inp.map.axis >= cat else 0) for inp in mapped}
    if len(axes) != 1 or len({len(inp.map) for inp in mapped}) != 1:
        give_up("channels on different axes")
        return
    axis = axes.pop()
    result = mapped[0].map.atoms
    for inp in mapped[1:]:
        ctx.join(node, result, inp.map.atoms)
    if len(mapped) < len(inputs):
        unmapped = next(inp for inp in inputs if inp.map is None)
        ctx.join(node, result, np.full(len(result), FIXED), source=f"from '{unmapped.src}'")
    ctx.set_all_outputs(node, ChannelMap(axis, result))


def _dims_for_map(in_shape: Shape, out_shape: Shape, axis: int, atoms: np.ndarray) -> ChannelMap | None:
    """Where channels on ``axis`` of ``in_shape`` end up after a reshape to ``out_shape``.

    Found by matching products of leading dimensions: the channel dimension either survives as a
    dimension (``(N, C, H, W) -> (N, C, H*W)``) or merges with neighbours into one dimension
    (``flatten``: ``(N, C, H, W) -> (N, C*H*W)``, channel c -> features c*H*W..(c+1)*H*W-1).
    """
    if in_shape and out_shape and in_shape[0] is None and out_shape[0] is None:
        in_shape, out_shape = (1, *in_shape[1:]), (1, *out_shape[1:])  # an unknown batch (Keras) stays
    if not (known_shape(in_shape) and known_shape(out_shape)):
        return None
    in_pre = [1]
    for d in in_shape:
        in_pre.append(in_pre[-1] * d)
    out_pre = [1]
    for d in out_shape:
        out_pre.append(out_pre[-1] * d)
    for b in range(len(out_shape)):
        for j in range(axis + 1):
            if out_pre[b] != in_pre[j]:
                continue
            for k in range(axis + 1, len(in_shape) + 1):
                if in_pre[k] // in_pre[j] != out_shape[b]:
                    continue
                inner = in_pre[k] // in_pre[axis + 1]
                outer = in_pre[axis] // in_pre[j]
                if outer == 1 and inner == 1:
                    return ChannelMap(b, atoms)
                # merged block: index = ((o * C) + c) * inner + i
                expanded = np.tile(np.repeat(atoms, inner), outer)
                return ChannelMap(b, expanded)
    return None


def _rule_reshape(ctx: Propagation, node: Node) -> None:
    inp = _data_input(ctx, node)
    _fix_other_inputs(ctx, node, 0, "uses it as a shape")
    if inp is None or inp.map is None:
        ctx.set_all_outputs(node, None)
        return
    out_shape = ctx.out_shape(node)
    moved = None
    if inp.shape is not None and out_shape is not None:
        moved = _dims_for_map(tuple(inp.shape), out_shape, inp.map.axis, inp.map.atoms)
    if moved is None:
        ctx.fix_map(inp.map, f"reshaped by {ctx.label(node)} in a way that splits or reorders channels")
        ctx.set_all_outputs(node, None)
        return
    ctx.set_all_outputs(node, moved)


def _rule_transpose(ctx: Propagation, node: Node) -> None:
    inp = _mapped_input(ctx, node)
    if inp is None:
        return
    rank = len(inp.shape) if inp.shape is not None else None
    dims = node.attrs.get("dims")
    a = inp.map.axis
    new_axis = None
    if isinstance(dims, tuple) and node.op_type in ("permute", "movedim") and rank is not None:
        perm = [d % rank for d in dims if isinstance(d, int)]
        if len(perm) == rank and a in perm:
            new_axis = perm.index(a)
    elif (
        isinstance(dims, tuple)
        and len(dims) == 2
        and rank is not None
        and all(isinstance(d, int) for d in dims)
    ):
        d0, d1 = dims[0] % rank, dims[1] % rank
        new_axis = d1 if a == d0 else d0 if a == d1 else a
    elif rank == 2 and node.op_type in ("t", "T", "mT", "H", "mH", "adjoint"):
        new_axis = 1 - a
    elif rank is not None and rank >= 2 and node.op_type in ("mT", "mH", "adjoint"):
        new_axis = rank - 1 if a == rank - 2 else rank - 2 if a == rank - 1 else a
    if new_axis is None:
        ctx.fix_map(inp.map, f"transposed by {ctx.label(node)} in an unknown way")
        ctx.set_all_outputs(node, None)
        return
    ctx.set_all_outputs(node, ChannelMap(new_axis, inp.map.atoms))


_INDEX_INT = re.compile(r"^-?\d+$")


def _split_index(text: str) -> list[str] | None:
    if not (text.startswith("[") and text.endswith("]")):
        return None
    body = text[1:-1]
    if "[" in body or "tensor" in body:
        return None
    return [t.strip() for t in body.split(",")] if body.strip() else []


def _rule_getitem(ctx: Propagation, node: Node) -> None:
    inp = _mapped_input(ctx, node)
    if inp is None:
        return
    cmap = inp.map
    out_shape = ctx.out_shape(node)
    tokens = _split_index(str(node.attrs.get("index", "")))
    rank = len(inp.shape) if inp.shape is not None else None
    new_axis = None
    if tokens is not None and rank is not None:
        consumed = sum(1 for t in tokens if t not in ("None", "..."))
        if "..." in tokens:
            i = tokens.index("...")
            tokens = tokens[:i] + [":"] * (rank - consumed) + tokens[i + 1 :]
        tokens = tokens + [":"] * max(0, rank - sum(1 for t in tokens if t != "None"))
        in_dim, out_dim = 0, 0
        ok = True
        for t in tokens:
            if t == "None":
                out_dim += 1
                continue
            if in_dim == cmap.axis:
                if t == ":" or t == "::":
                    new_axis = out_dim
                else:
                    ok = False
            if _INDEX_INT.match(t):
                in_dim += 1
                continue
            in_dim += 1
            out_dim += 1
        if not ok:
            new_axis = None
    elif (
        tokens is None
        and node.op_type != "__getitem__"
        and out_shape is not None
        and inp.shape is not None
        and len(out_shape) == len(inp.shape)
        and out_shape[cmap.axis] == inp.shape[cmap.axis]
    ):
        # narrow/select/slice without index text: fine only when the channel dimension is untouched
        new_axis = cmap.axis
    result = ChannelMap(new_axis, cmap.atoms) if new_axis is not None else None
    if result is None or not fits(result, out_shape):
        ctx.fix_map(cmap, f"sliced or indexed on the channel axis by {ctx.label(node)}")
        ctx.set_all_outputs(node, None)
        return
    ctx.set_all_outputs(node, result)


def _rule_split(ctx: Propagation, node: Node) -> None:
    inp = _mapped_input(ctx, node)
    if inp is None:
        return
    rank = len(inp.shape) if inp.shape is not None else None
    axes = _axes_attr(node, rank)
    if axes is None or inp.map.axis in axes:
        ctx.fix_map(inp.map, f"split along channels by {ctx.label(node)} (split sizes are fixed)")
        ctx.set_all_outputs(node, None)
        return
    if node.op_type == "unbind":
        (a,) = axes
        axis = inp.map.axis - (1 if a < inp.map.axis else 0)
        ctx.set_all_outputs(node, ChannelMap(axis, inp.map.atoms))
        return
    ctx.set_all_outputs(node, inp.map)


def _rule_same_shape(what: str) -> Rule:
    """Broadcast, tile, pad, interpolate: fine while the channel dimension keeps its size and place."""

    def rule(ctx: Propagation, node: Node) -> None:
        inp = _mapped_input(ctx, node)
        if inp is None:
            return
        out_shape = ctx.out_shape(node)
        cmap = inp.map
        if out_shape is not None and inp.shape is not None and len(out_shape) > len(inp.shape):
            cmap = ChannelMap(cmap.axis + len(out_shape) - len(inp.shape), cmap.atoms)
        if node.kind == K.PAD:
            pads = node.attrs.get("pads")
            rank = len(inp.shape) if inp.shape is not None else None
            if not isinstance(pads, tuple) or rank is None or cmap.axis >= rank - len(pads) // 2:
                ctx.fix_map(inp.map, f"{what} along channels by {ctx.label(node)}")
                ctx.set_all_outputs(node, None)
                return
        if not fits(cmap, out_shape):
            ctx.fix_map(inp.map, f"{what} along channels by {ctx.label(node)}")
            ctx.set_all_outputs(node, None)
            return
        ctx.set_all_outputs(node, cmap)

    return rule


def _rule_nothing(ctx: Propagation, node: Node) -> None:
    """Ops whose output carries no channels (shape queries)."""


register_channel_rule(K.OUTPUT, _rule_output)
register_channel_rule((K.INPUT, K.SHAPE_OF), _rule_nothing)
register_channel_rule(K.CONSTANT, _rule_constant)
register_channel_rule(K.CONVOLUTION_KINDS, _rule_conv)
register_channel_rule(K.MATMUL, _rule_matmul)
register_channel_rule(K.EMBEDDING, _rule_embedding)
register_channel_rule((K.BATCH_NORM, K.INSTANCE_NORM), _rule_norm)
register_channel_rule(K.PRELU, _rule_prelu)
register_channel_rule(K.LAYER_NORM, _rule_layer_norm)
register_channel_rule(K.GROUP_NORM, _rule_group_norm)
register_channel_rule((K.SOFTMAX, K.LOG_SOFTMAX), _rule_over_axis("normalized"))
register_channel_rule(K.NORMALIZE_L2, _rule_over_axis("normalized"))
register_channel_rule((K.REDUCE_MEAN, K.REDUCE_MAX, K.REDUCE_MIN, K.REDUCE_SUM, K.REDUCE_L2), _rule_reduce)
register_channel_rule(
    (
        K.RELU,
        K.CLAMP,
        K.ELU,
        K.GELU,
        K.SIGMOID,
        K.HSIGMOID,
        K.HSWISH,
        K.SWISH,
        K.MISH,
        K.TANH,
        K.EXP,
        K.LOG,
        K.SQRT,
        K.ABS,
        K.NEGATIVE,
        K.ERF,
        K.LOGICAL_NOT,
        K.DROPOUT,
        K.IDENTITY,
        K.CONVERT,
        K.CONVERT_LIKE,
    ),
    pass_through,
)
register_channel_rule((K.MAX_POOL, K.AVG_POOL), _rule_pool)
register_channel_rule(
    (
        K.ADD,
        K.SUBTRACT,
        K.MULTIPLY,
        K.DIVIDE,
        K.POWER,
        K.MAXIMUM,
        K.MINIMUM,
        K.FLOOR_MOD,
        K.LESS,
        K.LESS_EQUAL,
        K.GREATER,
        K.GREATER_EQUAL,
        K.EQUAL,
        K.NOT_EQUAL,
        K.LOGICAL_AND,
        K.LOGICAL_OR,
        K.LOGICAL_XOR,
    ),
    _rule_elementwise,
)
register_channel_rule(K.CONCAT, _rule_concat)
register_channel_rule((K.RESHAPE, K.FLATTEN, K.SQUEEZE, K.UNSQUEEZE), _rule_reshape)
register_channel_rule(K.TRANSPOSE, _rule_transpose)
register_channel_rule((K.STRIDED_SLICE, K.SLICE, K.CROP), _rule_getitem)
register_channel_rule((K.SPLIT, K.VARIADIC_SPLIT), _rule_split)
register_channel_rule(K.BROADCAST, _rule_same_shape("broadcast"))
register_channel_rule(K.TILE, _rule_same_shape("repeated"))
register_channel_rule(K.PAD, _rule_same_shape("padded"))
register_channel_rule(K.INTERPOLATE, _rule_same_shape("resized"))
register_channel_rule(K.GATHER, opaque("gathers elements by index (channels may be reordered)"))
register_channel_rule(K.SHUFFLE_CHANNELS, opaque("shuffles channels"))
register_channel_rule(K.SCALED_DOT_PRODUCT_ATTENTION, opaque("computes attention (mixes channels)"))
register_channel_rule((K.LSTM, K.GRU, K.RNN), opaque("is a recurrent layer (not pruned)"))
register_channel_rule(K.EMBEDDING_BAG, _rule_nothing)
