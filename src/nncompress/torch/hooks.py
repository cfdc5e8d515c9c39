"""Modify a model's real forward at graph positions (``TargetPoint``) named as the tracer names them.

A :class:`HookManager` holds hooks keyed by ``TargetPoint``:

- ``OUTPUT`` port p: ``hook(tensor)`` gets the op's p-th output tensor and returns a replacement;
- ``INPUT`` port p: ``hook(tensor)`` gets the op's p-th tensor argument before the op runs;
- ``WEIGHT`` port p: ``hook(param)`` gets the parameter fed at tensor port p (e.g. returns the
  fake-quantized weight).

A hook returning ``None`` leaves the tensor unchanged (statistic collectors). Several hooks on one
point run in registration order. ``nn.Module`` hooks (quantizers, masks) live in ``self.hooks``
(an ``nn.ModuleDict``), so they are in ``state_dict``, move with ``.to()`` and train; plain
callables are kept aside and not saved. Model inputs are hooked as the ``OUTPUT`` (or ``INPUT``)
port 0 of ``{Root}/nncf_model_input_{i}``, model outputs as the ``INPUT`` (or ``OUTPUT``) port 0
of ``{Root}/nncf_model_output_{i}``.

:meth:`HookManager.run` runs one forward with the hooks applied. It activates a
``TorchFunctionMode`` and two global module hooks (scope tracking) for the duration of the call
only; ops in module scopes without hooks return straight away (one attribute test), and a
manager without hooks runs the forward untouched. Forward hooks users registered on the model's
modules run with the mode suspended, as in tracing: their torch ops are not model ops (wrapped
in the global pre-hook of the module that has them, restored when the call ends). Nothing is
stored on the model, so the wrapped model deep-copies and pickles; hooked ops are plain torch
ops, so ``torch.jit.trace``, ``torch.onnx.export(dynamo=False)`` and ``openvino.convert_model``
record them.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_mod
from torch.overrides import TorchFunctionMode

from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.torch.op_table import call_op_name
from nncompress.torch.tracing import (
    INPUT_OP,
    OUTPUT_OP,
    Suspendable,
    _pop_scope,
    buffer_ids,
    expanded_impl,
    is_state_update,
    map_model_inputs,
    map_structure,
    module_scopes,
    restore_forward_hooks,
    run_forward_hooks_suspended,
)

__all__ = ["Hook", "HookManager", "hook_key"]

Hook = Callable[[torch.Tensor], "torch.Tensor | None"]

_BOUNDARY = re.compile(rf"^(.*)/({INPUT_OP}|{OUTPUT_OP})_(\d+)$")


def hook_key(target: TargetPoint) -> str:
    """The ``ModuleDict`` key of a target point: readable, without dots (``%2E`` escapes them)."""
    text = f"{target.node}|{target.type.value}{target.port}"
    return text.replace("%", "%25").replace(".", "%2E")


def _apply(hooks: list, t: torch.Tensor) -> torch.Tensor:
    for h in hooks:
        r = h(t)
        if r is not None:
            t = r
    return t


@dataclass
class _NodeHooks:
    """Hooks of one node: tensor-argument port -> hooks (weights first), output port -> hooks."""

    args: dict[int, list] = field(default_factory=dict)
    outputs: dict[int, list] = field(default_factory=dict)

    def call(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        if self.args:
            args, kwargs = _replace_arg_ports(args, kwargs, self.args)
        out = func(*args, **kwargs)
        if self.outputs:
            out = _replace_output_ports(out, self.outputs)
        return out


def _hook_ports(value: Any, hooks: dict[int, list], port: list[int]) -> Any:
    """``value`` with the hooks of each tensor port applied (ports numbered in flattening order,
    ``port`` carrying the count); containers are rebuilt only when something changed."""
    if isinstance(value, torch.Tensor):
        p = port[0]
        port[0] += 1
        fns = hooks.get(p)
        return value if fns is None else _apply(fns, value)
    if isinstance(value, (tuple, list)):
        items = [_hook_ports(v, hooks, port) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        cls = type(value)
        if cls is list or cls is tuple:
            return cls(items)
        return cls(*items) if hasattr(cls, "_fields") else cls(items)
    return value


def _replace_arg_ports(args: tuple, kwargs: dict, hooks: dict[int, list]) -> tuple[tuple, dict]:
    port = [0]
    new_args = tuple(_hook_ports(a, hooks, port) for a in args)
    new_kwargs = {k: _hook_ports(v, hooks, port) for k, v in kwargs.items()} if kwargs else kwargs
    return new_args, new_kwargs


def _replace_output_ports(out: Any, hooks: dict[int, list]) -> Any:
    return _hook_ports(out, hooks, [0])


@dataclass
class _Index:
    """Hooks arranged for the runtime (derived from the manager's points, rebuilt on change)."""

    nodes: dict[str, _NodeHooks]
    scopes: frozenset[str]
    inputs: dict[int, list]
    outputs: dict[int, list]


class _Runtime(TorchFunctionMode, Suspendable):
    """Active during one hooked forward: names ops like the tracer and applies hooks."""

    def __init__(
        self, index: _Index, scopes: dict[int, tuple[str, bool]], root: tuple[str, bool], model: nn.Module
    ):
        super().__init__()
        self.model = model
        self.index = index
        self.scopes = scopes
        self.stack = [root]
        self.hooked = root[1]
        self.counters: dict[tuple[str, str], int] = {}
        self.thread = threading.get_ident()
        self.seen: list[str] | None = None  # op names, when recording (tests)
        self._buffers: set[int] | None = None
        self._outside: list[tuple[dict, Any, Callable]] = []  # user forward hooks, wrapped

    def buffers(self) -> set[int]:
        if self._buffers is None:  # computed on the first hooked op only
            self._buffers = buffer_ids(self.model)
        return self._buffers

    def pre_hook(self, module: nn.Module, _args: Any) -> None:
        if threading.get_ident() != self.thread:
            return
        if module._forward_hooks:  # wrapped before PyTorch reads them after the forward
            self._outside.extend(run_forward_hooks_suspended(module, self))
        entry = self.scopes.get(id(module))
        if entry is not None:
            self.stack.append(entry)
            self.hooked = entry[1]

    def restore_forward_hooks(self) -> None:
        restore_forward_hooks(self._outside)
        self._outside = []

    def post_hook(self, module: nn.Module, _args: Any, _output: Any) -> None:
        entry = self.scopes.get(id(module))
        if entry is not None and threading.get_ident() == self.thread:
            _pop_scope(self.stack, entry)
            self.hooked = self.stack[-1][1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if not self.hooked or self.suspended:  # fast path: no hook in this module scope
            return func(*args, **kwargs)
        name = call_op_name(func, args, kwargs)
        if name is None:
            return func(*args, **kwargs)
        impl = expanded_impl(func)
        if impl is not None:
            with self:
                return impl(*args, **kwargs)
        if is_state_update(name, args, self.buffers):
            return func(*args, **kwargs)
        scope = self.stack[-1][0]
        key = (scope, name)
        k = self.counters.get(key, 0)
        self.counters[key] = k + 1
        node = f"{scope}/{name}_{k}"
        if self.seen is not None:
            self.seen.append(node)
        hooks = self.index.nodes.get(node)
        if hooks is None:
            return func(*args, **kwargs)
        return hooks.call(func, args, kwargs)


class HookManager(nn.Module):
    """Hooks at graph positions, applied by :meth:`run` during a model's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks = nn.ModuleDict()
        # target -> entries in registration order: a str is a key of self.hooks, else a callable
        self._points: dict[TargetPoint, list[Any]] = {}
        self._enabled = True
        self._index: _Index | None = None
        self._record_all = False

    # -- registry ---------------------------------------------------------------------------
    def add(self, target: TargetPoint, hook: Hook | nn.Module, *, first: bool = False) -> str | None:
        """Register ``hook`` at ``target``, after the hooks already there (before them if ``first``).

        Returns the ``ModuleDict`` key of an ``nn.Module`` hook (its ``state_dict`` prefix is
        ``hooks.<key>.``), ``None`` for a plain callable.
        """
        if not isinstance(target, TargetPoint):
            raise TypeError(f"HookManager.add: target must be a TargetPoint, got {type(target).__name__}")
        if not callable(hook):
            raise TypeError(f"HookManager.add: hook at {target} is not callable ({type(hook).__name__})")
        entries = self._points.setdefault(target, [])
        key: str | None = None
        entry: Any = hook
        if isinstance(hook, nn.Module):
            base = hook_key(target)
            key, i = base, 0
            while key in self.hooks:
                i += 1
                key = f"{base}|{i}"
            self.hooks[key] = hook
            entry = key
        if first:
            entries.insert(0, entry)
        else:
            entries.append(entry)
        self._index = None
        return key

    def remove(self, target: TargetPoint, hook: Hook | nn.Module | None = None) -> None:
        """Remove ``hook`` from ``target`` (every hook at ``target`` when ``hook`` is None)."""
        entries = self._points.get(target, [])
        keep = []
        for entry in entries:
            current = self.hooks[entry] if isinstance(entry, str) else entry
            if hook is None or current is hook:
                if isinstance(entry, str):
                    del self.hooks[entry]
            else:
                keep.append(entry)
        if keep:
            self._points[target] = keep
        else:
            self._points.pop(target, None)
        self._index = None

    def remove_callable(self, target: TargetPoint, hook: Hook | nn.Module) -> None:
        """Remove one hook from ``target`` (same as ``remove(target, hook)``)."""
        self.remove(target, hook)

    def remove_all(self) -> None:
        """Remove every hook."""
        for target in list(self._points):
            self.remove(target)

    def hooks_at(self, target: TargetPoint) -> list:
        """Hooks at ``target`` in the order they run."""
        return [self.hooks[e] if isinstance(e, str) else e for e in self._points.get(target, [])]

    @property
    def targets(self) -> list[TargetPoint]:
        return [t for t, entries in self._points.items() if entries]

    def items(self) -> Iterator[tuple[TargetPoint, Any]]:
        """``(target, hook)`` pairs in registration order per target."""
        for target in self._points:
            for hook in self.hooks_at(target):
                yield target, hook

    def __len__(self) -> int:
        return sum(len(e) for e in self._points.values())

    def has_hooks(self) -> bool:
        return any(self._points.values())

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run forwards without hooks inside the block."""
        previous = self._enabled
        self._enabled = False
        try:
            yield
        finally:
            self._enabled = previous

    # -- runtime ------------------------------------------------------------------------------
    def _build_index(self) -> _Index:
        nodes: dict[str, _NodeHooks] = {}
        inputs: dict[int, list] = {}
        outputs: dict[int, list] = {}
        weights: dict[str, dict[int, list]] = {}
        for target, entries in self._points.items():
            fns = [self.hooks[e] if isinstance(e, str) else e for e in entries]
            if not fns:
                continue
            boundary = _BOUNDARY.match(target.node)
            if boundary is not None:
                kind = inputs if boundary.group(2) == INPUT_OP else outputs
                kind.setdefault(int(boundary.group(3)), []).extend(fns)
                continue
            hooks = nodes.setdefault(target.node, _NodeHooks())
            if target.type is TargetType.OUTPUT:
                hooks.outputs.setdefault(target.port, []).extend(fns)
            elif target.type is TargetType.WEIGHT:
                weights.setdefault(target.node, {}).setdefault(target.port, []).extend(fns)
            else:
                hooks.args.setdefault(target.port, []).extend(fns)
        for node, ports in weights.items():  # weight hooks run before input hooks on the same port
            args = nodes[node].args
            for port, fns in ports.items():
                args[port] = fns + args.get(port, [])
        scopes = frozenset(node.rsplit("/", 1)[0] for node in nodes)
        return _Index(nodes, scopes, inputs, outputs)

    def index(self) -> _Index:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def run(self, model: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Call ``forward(*args, **kwargs)`` with the hooks applied; returns its output.

        ``forward`` is ``model``'s forward (what the wrapped model passes) or ``model`` itself,
        which hooks a plain, unwrapped model for one call.
        """
        if not self._enabled or not (self._points or self._record_all):
            return forward(*args, **kwargs)
        index = self.index()
        if index.inputs:
            args, kwargs = map_model_inputs(
                model, args, kwargs, lambda i, _p, _k, t: _input_hook(index, i, t)
            )
        if index.nodes or self._record_all:
            output = self._run_scoped(model, index, forward, args, kwargs)
        else:
            output = forward(*args, **kwargs)
        if index.outputs:
            counter = [0]

            def visit(_path: str, t: torch.Tensor) -> torch.Tensor:
                i = counter[0]
                counter[0] += 1
                fns = index.outputs.get(i)
                return t if fns is None else _apply(fns, t)

            output = map_structure(output, visit)
        return output

    def _run_scoped(
        self, model: nn.Module, index: _Index, forward: Callable, args: tuple, kwargs: dict
    ) -> Any:
        record = self._record_all
        hooked = index.scopes
        scopes = {key: (scope, record or scope in hooked) for key, (scope, _) in module_scopes(model).items()}
        runtime = _Runtime(index, scopes, scopes[id(model)], model)
        if record:
            runtime.seen = self._seen
        pre = _module_mod.register_module_forward_pre_hook(runtime.pre_hook)
        post = _module_mod.register_module_forward_hook(runtime.post_hook, always_call=True)
        try:
            with runtime:
                return forward(*args, **kwargs)
        finally:
            pre.remove()
            post.remove()
            runtime.restore_forward_hooks()

    @contextlib.contextmanager
    def record_op_names(self) -> Iterator[list[str]]:
        """Collect the name of every op the runtime sees in the block (for tests and debugging)."""
        self._record_all = True
        self._seen: list[str] = []
        names: list[str] = []
        try:
            yield names
        finally:
            names.extend(self._seen)
            self._record_all = False
            del self._seen

    # -- state ----------------------------------------------------------------------------------
    def _replicate_for_data_parallel(self) -> HookManager:
        replica = super()._replicate_for_data_parallel()
        replica._index = None  # the cached index holds this device's modules; replicas rebuild theirs
        return replica

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_index"] = None  # derived; rebuilt on the next forward
        return state

    def extra_repr(self) -> str:
        callables = sum(1 for e in self._points.values() for x in e if not isinstance(x, str))
        return f"points={len(self.targets)}, plain_callables={callables}"


def _input_hook(index: _Index, i: int, t: torch.Tensor) -> torch.Tensor:
    fns = index.inputs.get(i)
    return t if fns is None else _apply(fns, t)
