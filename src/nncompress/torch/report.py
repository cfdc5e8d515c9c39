"""Quantizer ranges of a compressed torch model in the report's ``quantizer_ranges.json`` form.

Works on models from ``nncompress.quantize`` and from ``create_compressed_model``: both keep their
quantizers on the model's hook manager. A quantizer shared by several targets (unified scales) is
listed once, under its first target.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from nncompress.errors import QuantizationError
from nncompress.quantization.spec import TargetType
from nncompress.torch.quantizers import BaseQuantizer

__all__ = ["quantizer_ranges"]


def _values(array: Any) -> float | list[float]:
    flat = [float(v) for v in np.asarray(array).reshape(-1)]
    return flat[0] if len(flat) == 1 else flat


def quantizer_ranges(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """``{"model": name, "quantizers": [{"name", "kind", "low", "high", "bits"}, ...]}``.

    ``kind`` is ``"weight"`` for quantizers on weights and ``"activation"`` otherwise; ``low`` and
    ``high`` are the float range (one value per channel when per-channel).
    """
    manager = getattr(getattr(model, "nncf", None), "hook_manager", None)
    if manager is None:
        raise QuantizationError(
            f"{type(model).__name__} has no nncompress hooks: pass a model returned by "
            "nncompress.quantize or create_compressed_model"
        )
    seen: set[int] = set()
    rows = []
    for target, hook in manager.items():
        if not isinstance(hook, BaseQuantizer) or id(hook) in seen:
            continue
        seen.add(id(hook))
        params = hook.export_params()
        weight = target.type == TargetType.WEIGHT
        rows.append(
            {
                "name": f"{target.node}|{'weight' if weight else target.type.value}",
                "kind": "weight" if weight else "activation",
                "low": _values(params.input_low),
                "high": _values(params.input_high),
                "bits": int(hook.num_bits),
            }
        )
    if not rows:
        raise QuantizationError(f"{type(model).__name__} has no quantizers")
    return {"model": name or type(model).__name__, "quantizers": rows}
