"""``compression_lr_multiplier``: a different learning rate for the parameters compression adds.

Quantizer scales (``scale``, ``input_low``, ``input_range``) and learned sparsity masks often
train better with a larger or smaller learning rate than the model's weights. The config sets it
at the top level (every algorithm) and per algorithm section (that algorithm; it wins)::

    {"compression_lr_multiplier": 2.0,
     "compression": [{"algorithm": "quantization", "compression_lr_multiplier": 10.0}, ...]}

Two ways to get it, with the same effect on plain SGD:

- **Parameter groups** (recommended, exact for every optimizer, Adam included)::

      optimizer = torch.optim.Adam(get_parameter_groups(ctrl, base_lr=1e-3))

  :func:`get_parameter_groups` returns the model's ordinary parameters with ``lr=base_lr`` and
  one group per algorithm with ``lr=base_lr * multiplier``. Learning-rate schedulers scale each
  group's ``lr``, so the ratio stays.
- **Nothing** (NNCF 2.x's behaviour): with ``torch.optim.SGD(model.parameters(), lr)`` the
  gradients of compression parameters are multiplied by the multiplier, which multiplies their
  SGD step by it. Adaptive optimizers (Adam) normalize gradients, so for them the multiplier
  mostly vanishes: use the groups.

Once :func:`get_parameter_groups` has put a module's parameters in groups it switches that
module's gradient scaling off, so the multiplier is never applied twice.

Algorithms tag the modules that hold their trainable parameters with
:func:`mark_compression_module`; the helper finds them by that tag, so any algorithm (built-in
or a plug-in) takes part without changes here.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nncompress.errors import ConfigError

__all__ = [
    "compression_lr_multiplier",
    "compression_modules",
    "get_parameter_groups",
    "mark_compression_module",
]

PARAM = "compression_lr_multiplier"
# attributes on a compression module (plain attributes: copied with the module, pickled with it)
ALGORITHM_ATTR = "_nncf_compression_algorithm"
MULTIPLIER_ATTR = "_nncf_lr_multiplier"
IN_GROUPS_ATTR = "_nncf_lr_multiplier_in_param_groups"
# attribute on a parameter whose gradient is scaled (not copied by deepcopy: a copy's new
# parameters get their own hook on the copy's first forward)
_SCALED_ATTR = "_nncf_grad_scaled"


def _sections(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(json path, section)`` of every compression section of ``config``."""
    compression = config.get("compression")
    if isinstance(compression, Mapping):
        return [("compression", compression)]
    if isinstance(compression, (list, tuple)):
        return [(f"compression[{i}]", s) for i, s in enumerate(compression) if isinstance(s, Mapping)]
    return []


def _checked(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError([(path, f"must be a number > 0, got {value!r}")])
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError([(path, f"must be a finite number > 0, got {value!r}")])
    return value


def compression_lr_multiplier(config: Mapping[str, Any], algorithm: str) -> float | None:
    """The multiplier ``algorithm`` gets from ``config``: its section's value, else the top-level
    one, else None (no multiplier). A value that is not a number > 0 raises ``ConfigError`` with
    its JSON path (the schema checks on load; this catches values set later in code)."""
    for path, section in _sections(config):
        if section.get("algorithm") == algorithm and PARAM in section:
            return _checked(section[PARAM], f"{path}.{PARAM}")
    if PARAM in config and config[PARAM] is not None:
        return _checked(config[PARAM], PARAM)
    return None


class _GradScale:
    """A gradient hook: multiplies by the owning module's multiplier unless parameter groups
    already carry it. Holds the module weakly (a hook must not keep its module alive)."""

    def __init__(self, module: nn.Module):
        self._module = weakref.ref(module)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        module = self._module()
        if module is None:
            return grad
        multiplier = module.__dict__.get(MULTIPLIER_ATTR)
        if multiplier is None or module.__dict__.get(IN_GROUPS_ATTR, False):
            return grad
        return grad * multiplier


def _hook_parameters(module: nn.Module) -> None:
    for param in module._parameters.values():
        # replicas made by DataParallel hold non-leaf copies: their gradients reach the
        # original (hooked) leaf, so hooking them too would scale twice
        if param is None or not param.is_leaf or getattr(param, _SCALED_ATTR, False):
            continue
        param.register_hook(_GradScale(module))
        setattr(param, _SCALED_ATTR, True)


def _hook_on_forward(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: hooks parameters that are new since marking (a deep copy of the model,
    channels pruned by strip, ``load_state_dict(assign=True)``). Skipped when no gradient flows
    (inference, export) and while tracing or compiling."""
    if not torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    _hook_parameters(module)


def mark_compression_module(module: nn.Module, algorithm: str, lr_multiplier: float | None = None) -> None:
    """Tag ``module``'s parameters as compression parameters of ``algorithm``.

    :func:`get_parameter_groups` then puts them in ``algorithm``'s group; with ``lr_multiplier``
    (None: no multiplier) their gradients are also multiplied by it until the groups take over.
    Builders call this once per module they insert (quantizers; sparsity masks).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"mark_compression_module expects a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(algorithm, str) or not algorithm:
        raise ValueError(f"mark_compression_module: algorithm must be a non-empty name, got {algorithm!r}")
    if lr_multiplier is not None:
        lr_multiplier = _checked(lr_multiplier, PARAM)
    previous = module.__dict__.get(ALGORITHM_ATTR)
    if previous is not None and previous != algorithm:
        raise ValueError(
            f"{type(module).__name__} already holds compression parameters of '{previous}', not '{algorithm}'"
        )
    module.__dict__[ALGORITHM_ATTR] = algorithm
    module.__dict__[MULTIPLIER_ATTR] = lr_multiplier
    if lr_multiplier is not None and lr_multiplier != 1.0:
        _hook_parameters(module)
        if _hook_on_forward not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(_hook_on_forward)


def compression_modules(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The tagged modules of ``model`` by algorithm name, in module order (each module once)."""
    found: dict[str, list[nn.Module]] = {}
    for module in dict.fromkeys(model.modules()):
        algorithm = module.__dict__.get(ALGORITHM_ATTR)
        if algorithm is not None:
            found.setdefault(algorithm, []).append(module)
    return found


def get_parameter_groups(
    model_or_ctrl: Any, base_lr: float, config: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Optimizer parameter groups that apply ``compression_lr_multiplier``.

    ``model_or_ctrl`` is the compressed model (also inside ``DataParallel`` /
    ``DistributedDataParallel``) or its controller. Returns, skipping empty groups::

        [{"params": [...model weights...], "lr": base_lr, "name": "model", "lr_multiplier": 1.0},
         {"params": [...quantizer scales...], "lr": base_lr * m_q, "name": "quantization",
          "lr_multiplier": m_q}, ...]

    Every parameter of the model is in exactly one group (no groups for a model without any) (frozen ones too, as in
    ``model.parameters()``). Multipliers come from ``config`` when given (per-algorithm value,
    else top-level, else 1), otherwise from the config the model was compressed with. The
    gradient scaling that applies the multiplier without groups is switched off for the grouped
    modules, so it applies once. Pass the list to any optimizer:
    ``torch.optim.SGD(get_parameter_groups(ctrl, 0.01), lr=0.01, momentum=0.9)``.
    """
    model = model_or_ctrl if isinstance(model_or_ctrl, nn.Module) else getattr(model_or_ctrl, "model", None)
    if not isinstance(model, nn.Module):
        raise TypeError(
            "get_parameter_groups expects a compressed torch model or its controller, got "
            f"{type(model_or_ctrl).__name__}"
        )
    if isinstance(base_lr, bool) or not isinstance(base_lr, (int, float)) or not base_lr >= 0:
        raise ConfigError(
            [("base_lr", f"must be a number >= 0, got {base_lr!r}")], source="get_parameter_groups"
        )
    claimed: set[int] = set()
    groups: list[dict[str, Any]] = []
    for algorithm, modules in compression_modules(model).items():
        if config is not None:
            multiplier = compression_lr_multiplier(config, algorithm)
        else:
            values = {m.__dict__.get(MULTIPLIER_ATTR) for m in modules}
            multiplier = values.pop() if len(values) == 1 else None
            if values:  # modules of one algorithm disagree: only a config can settle it
                raise ConfigError(
                    [(PARAM, f"the '{algorithm}' modules carry different multipliers; pass the config")],
                    source="get_parameter_groups",
                )
        multiplier = 1.0 if multiplier is None else multiplier
        params = []
        for module in modules:
            for param in module.parameters():
                if id(param) not in claimed:
                    claimed.add(id(param))
                    params.append(param)
            module.__dict__[IN_GROUPS_ATTR] = True
        if params:
            groups.append(
                {"params": params, "lr": base_lr * multiplier, "name": algorithm, "lr_multiplier": multiplier}
            )
    regular = [p for p in model.parameters() if id(p) not in claimed]
    if regular:
        groups.insert(0, {"params": regular, "lr": float(base_lr), "name": "model", "lr_multiplier": 1.0})
    return groups
