"""Which filters and inputs of a grouped convolution survive pruning, group by group.

Backend-neutral (numpy): the torch and Keras layer surgery both cut a grouped convolution from
the per-group lists this returns.
"""

from __future__ import annotations

import numpy as np

from nncompress.errors import PruningError

__all__ = ["grouped_kept_parts"]


def grouped_kept_parts(
    what: str, groups: int, cin_g: int, cout_g: int, in_keep: np.ndarray, out_keep: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per kept group: its kept filters (global indices) and kept inputs (offsets in the group).

    Every kept group must keep as many inputs and filters as the others; a group that keeps
    neither is dropped (``groups`` shrinks). ``what`` names the layer in errors.
    """
    in_keep, out_keep = np.asarray(in_keep), np.asarray(out_keep)
    rows: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    for g in range(groups):
        ins = in_keep[(in_keep >= g * cin_g) & (in_keep < (g + 1) * cin_g)] - g * cin_g
        outs = out_keep[(out_keep >= g * cout_g) & (out_keep < (g + 1) * cout_g)]
        if len(ins) == 0 and len(outs) == 0:
            continue
        if len(ins) == 0 or len(outs) == 0:
            raise PruningError(
                f"{what} (groups={groups}): group {g} would keep {len(ins)} inputs "
                f"and {len(outs)} filters; a group keeps both or neither"
            )
        rows.append(outs)
        offsets.append(ins)
    if not rows:
        raise PruningError(f"{what} (groups={groups}) would keep no group")
    if len({len(r) for r in rows}) != 1 or len({len(o) for o in offsets}) != 1:
        raise PruningError(
            f"{what} (groups={groups}): the kept groups would differ in size "
            f"(filters {[len(r) for r in rows]}, inputs {[len(o) for o in offsets]})"
        )
    return rows, offsets
