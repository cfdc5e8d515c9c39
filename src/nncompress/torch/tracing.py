"""Dynamic tracing of a torch model into an ``nncompress.graph.Graph``.

``trace(model, example_input)`` runs the model once on the example input with a
``TorchFunctionMode`` active and records every op that reaches ``__torch_function__``: functional
ops, ``torch.*`` functions, tensor methods and operators. Python control flow is followed as it
runs, so the graph holds the branch actually taken. Nothing outlives the call: the mode is active
only inside it, the module hooks that track scopes are removed in ``finally``, the model's buffers
(BatchNorm running statistics...) and the CPU random state are restored, and the forward runs
under ``torch.no_grad()`` in the model's current train/eval mode.

Naming (shared with the hook runtime, ``nncompress.torch.hooks``):

- a module's scope is built from the module hierarchy:
  ``{RootClass}/{Class}[{attr}]/...``, e.g. ``ResNet/Sequential[layer1]/BasicBlock[0]``; the
  attribute is the module's name in its parent (an index inside Sequential/ModuleList);
  ``Node.module_scope`` is the dotted path (``layer1.0``, ``""`` for the root);
- an op is ``{scope}/{op}_{k}`` where ``op`` is :func:`op_table.call_op_name` (``conv2d``, ``linear``,
  ``__add__``, ``cat``...) and ``k`` counts the calls of that op in that scope during one forward,
  from 0. A module called twice keeps counting: its first call gives ``Linear[fc]/linear_0``, its
  second ``Linear[fc]/linear_1``;
- model inputs are ``{RootClass}/nncf_model_input_{i}`` and outputs
  ``{RootClass}/nncf_model_output_{i}``.

Nodes: one per op call whose output holds tensors, with ``op_type`` = op name and ``kind`` from
``op_table.OP_TABLE`` (``op_kinds.UNKNOWN`` otherwise). Every ``nn.Parameter`` argument is recorded
in ``Node.weights`` at its tensor port (the op's bias argument, or a parameter named ``bias*``,
goes to ``Node.bias`` instead); parameters, buffers and other constants are never edges. Ports
count tensor arguments (positional, through lists, then keyword) and tensor outputs (through
tuples and lists). Ops creating tensors from nothing (``torch.arange``) are nodes without inputs;
nodes with neither inputs nor consumers are dropped. In-place updates of buffers
(``num_batches_tracked += 1``) are neither nodes nor counted, so train-only bookkeeping does not
shift names. ``nn.MultiheadAttention`` is traced through (``op_table.EXPANDED_FUNCTIONS``).

Example inputs: a tuple is the positional arguments, a dict the keyword arguments, anything else
(a tensor, a list) the single positional argument; ``keyword_inputs`` adds keyword arguments.
Model inputs are numbered positional arguments first (flattened through tuples, lists and
dicts), then keyword arguments in the order of the forward's signature.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import types
from collections.abc import Callable, Container, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nncompress.errors import TracingError
from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo
from nncompress.graph import op_kinds as K
from nncompress.torch.op_table import (
    EXPANDED_FUNCTIONS,
    OP_TABLE,
    CallArgs,
    OpSpec,
    call_op_name,
    weight_axes,
)

__all__ = [
    "INPUT_OP",
    "NNCF_ATTR",
    "OUTPUT_OP",
    "class_name",
    "input_node_name",
    "module_scopes",
    "normalize_example_input",
    "output_node_name",
    "trace",
]

# the attribute of a wrapped model holding nncompress's own modules; never part of the graph
NNCF_ATTR = "_nncf"
INPUT_OP = "nncf_model_input"
OUTPUT_OP = "nncf_model_output"


# ---------------------------------------------------------------------------------------------
# naming
# ---------------------------------------------------------------------------------------------


def class_name(module: nn.Module) -> str:
    """The user's class name of a module (the original class of a wrapped model)."""
    cls = type(module)
    return getattr(cls, "_nncf_original_class", cls).__name__


def input_node_name(root: str, index: int) -> str:
    return f"{root}/{INPUT_OP}_{index}"


def output_node_name(root: str, index: int) -> str:
    return f"{root}/{OUTPUT_OP}_{index}"


def module_scopes(model: nn.Module) -> dict[int, tuple[str, str]]:
    """``id(module) -> (scope, dotted path)`` for the model and every submodule.

    The scope follows the module hierarchy (``Root/Sequential[layer1]/BasicBlock[0]``); a module
    registered twice keeps its first name (as ``named_modules`` does). nncompress's own modules
    (the ``_nncf`` attribute of a wrapped model) are left out.
    """
    root = class_name(model)
    scopes: dict[int, tuple[str, str]] = {id(model): (root, "")}

    def walk(module: nn.Module, scope: str, dotted: str) -> None:
        for name, child in module._modules.items():
            if child is None or id(child) in scopes or name == NNCF_ATTR:
                continue
            child_scope = f"{scope}/{class_name(child)}[{name}]"
            child_dotted = f"{dotted}.{name}" if dotted else name
            scopes[id(child)] = (child_scope, child_dotted)
            walk(child, child_scope, child_dotted)

    walk(model, root, "")
    return scopes


# ---------------------------------------------------------------------------------------------
# structures of tensors
# ---------------------------------------------------------------------------------------------


def iter_arg_tensors(args: tuple, kwargs: Mapping) -> Iterator[tuple[torch.Tensor, int | str]]:
    """Tensor arguments of an op call in port order: positional (through lists/tuples) then keyword.

    Yields ``(tensor, key)`` where key is the argument's position or keyword.
    """
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield a, i
        elif isinstance(a, (tuple, list)):
            for t in _leaves(a):
                yield t, i
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            yield v, k
        elif isinstance(v, (tuple, list)):
            for t in _leaves(v):
                yield t, k


def _leaves(seq: Any) -> Iterator[torch.Tensor]:
    for v in seq:
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (tuple, list)):
            yield from _leaves(v)


def flatten_tensors(value: Any) -> list[torch.Tensor]:
    """Tensors of an op's output, through nested tuples and lists, in port order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return list(_leaves(value))
    return []


def _rebuild_sequence(original: tuple | list, items: list) -> Any:
    if isinstance(original, list):
        return items if type(original) is list else type(original)(items)
    cls = type(original)
    if cls is tuple:
        return tuple(items)
    if hasattr(cls, "_fields"):  # namedtuple
        return cls(*items)
    return cls(items)  # torch.return_types structseq, other tuple subclasses


def _rebuild_mapping(original: Mapping, items: dict) -> Any:
    if type(original) is dict:
        return items
    import copy

    new = copy.copy(original)
    for k, v in items.items():
        new[k] = v  # type: ignore[index]
    return new


def map_structure(value: Any, fn: Callable[[str, torch.Tensor], torch.Tensor], path: str = "") -> Any:
    """``value`` with every tensor leaf ``t`` (at ``path``) replaced by ``fn(path, t)``.

    Walks tuples (named too), lists and mappings in order; containers are rebuilt only when a
    leaf changed, so leaves visited in the same order number the same way at trace and run time.
    """
    if isinstance(value, torch.Tensor):
        return fn(path, value)
    if isinstance(value, (tuple, list)):
        items = [map_structure(v, fn, f"{path}[{i}]") for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value)):
            return value
        return _rebuild_sequence(value, items)
    if isinstance(value, Mapping):
        new_items = {k: map_structure(v, fn, f"{path}[{k!r}]") for k, v in value.items()}
        if all(new_items[k] is value[k] for k in new_items):
            return value
        return _rebuild_mapping(value, new_items)
    return value


_SIGNATURES: dict[Any, inspect.Signature | None] = {}


def _forward_parameter_order(model: nn.Module) -> dict[str, int]:
    cls = type(model)
    forward = model.__dict__.get("_nncf_instance_forward") or model.__dict__.get("forward")
    if forward is None:
        forward = getattr(cls, "_nncf_original_class", cls).forward
    try:
        sig = _SIGNATURES[forward]
    except (KeyError, TypeError):
        try:
            sig = inspect.signature(forward)
        except (TypeError, ValueError):
            sig = None
        with contextlib.suppress(TypeError):
            _SIGNATURES[forward] = sig
    if sig is None:
        return {}
    return {name: i for i, name in enumerate(sig.parameters)}


def ordered_kwargs(model: nn.Module, kwargs: Mapping) -> list[str]:
    """Keyword argument names in the forward signature's order (unknown ones after, as given)."""
    if len(kwargs) < 2:
        return list(kwargs)
    order = _forward_parameter_order(model)
    big = len(order)
    return sorted(kwargs, key=lambda k: order.get(k, big))


def map_model_inputs(
    model: nn.Module,
    args: tuple,
    kwargs: dict,
    fn: Callable[[int, str, str | None, torch.Tensor], torch.Tensor],
) -> tuple[tuple, dict]:
    """Apply ``fn(index, path, keyword, tensor)`` to every tensor input, numbered as the tracer does."""
    counter = [0]

    def leaf(keyword: str | None) -> Callable[[str, torch.Tensor], torch.Tensor]:
        def visit(path: str, t: torch.Tensor) -> torch.Tensor:
            i = counter[0]
            counter[0] += 1
            return fn(i, path, keyword, t)

        return visit

    new_args = tuple(map_structure(a, leaf(None), f"args[{i}]") for i, a in enumerate(args))
    new_kwargs = dict(kwargs)
    for k in ordered_kwargs(model, kwargs):
        new_kwargs[k] = map_structure(kwargs[k], leaf(k), f"kwargs[{k!r}]")
    return new_args, new_kwargs


def normalize_example_input(example_input: Any, keyword_inputs: Mapping | None = None) -> tuple[tuple, dict]:
    """``(args, kwargs)`` for ``model(*args, **kwargs)`` from an example input (see module doc)."""
    if isinstance(example_input, tuple):
        args, kwargs = example_input, {}
    elif isinstance(example_input, Mapping) and keyword_inputs is None:
        args, kwargs = (), dict(example_input)
    elif example_input is None:
        args, kwargs = (), {}
    else:
        args, kwargs = (example_input,), {}
    if keyword_inputs:
        kwargs = {**kwargs, **keyword_inputs}
    return args, kwargs


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def tensor_info(t: torch.Tensor) -> TensorInfo:
    return TensorInfo(tuple(int(d) for d in t.shape), dtype_name(t.dtype))


def is_state_update(name: str, args: tuple, buffers: Callable[[], Container[int]]) -> bool:
    """An in-place op on a buffer (``num_batches_tracked += 1``): bookkeeping, neither counted nor a node.

    Train-only buffer updates would otherwise shift the op counters between a trace in eval mode
    and a forward in train mode.
    """
    if not args or not isinstance(args[0], torch.Tensor):
        return False
    if name.startswith("__"):
        inplace = name == "__setitem__" or (name.startswith("__i") and name not in _NOT_INPLACE_DUNDERS)
    else:
        inplace = name.endswith("_")
    return inplace and id(args[0]) in buffers()


_NOT_INPLACE_DUNDERS = frozenset({"__index__", "__int__", "__invert__", "__iter__"})


def buffer_ids(model: nn.Module) -> set[int]:
    """Ids of the model's buffers (nncompress's own left out)."""
    return {id(b) for name, b in model.named_buffers() if not name.startswith(NNCF_ATTR + ".")}


def expanded_impl(func: Any) -> Callable[..., Any] | None:
    """The implementation to trace through for an expanded function (see ``op_table``)."""
    if type(func) is types.FunctionType:
        return EXPANDED_FUNCTIONS.get(func)
    return None


# ---------------------------------------------------------------------------------------------
# the tracer
# ---------------------------------------------------------------------------------------------


class Suspendable:
    """A function mode that lets pass, unnamed and unhooked, the ops run while ``suspended``."""

    suspended: int = 0


def run_forward_hooks_suspended(module: nn.Module, mode: Suspendable) -> list[tuple[dict, Any, Callable]]:
    """Wrap the forward hooks registered on ``module`` so they run with ``mode`` suspended;
    returns what ``restore_forward_hooks`` puts back.

    PyTorch runs a module's own forward hooks after the global ones (where the scope of the
    module is left), so torch ops in a user's hook (``feats.append(out.mean((2, 3)))``, a
    distillation loss) would be named as ops of the enclosing scope and take the names, and the
    quantizers, of the model's own ops there. They are not model ops: they run unseen. Pre-hooks
    are left alone (weight norm and pruning masks compute the module's weight in them).
    """
    hooks = module._forward_hooks
    patched = []
    for key, fn in list(hooks.items()):
        if getattr(fn, "_nncompress_suspends", None) is not mode:
            hooks[key] = _run_suspended(fn, mode)
            patched.append((hooks, key, fn))
    return patched


def restore_forward_hooks(patched: list[tuple[dict, Any, Callable]]) -> None:
    for hooks, key, fn in reversed(patched):
        if key in hooks:
            hooks[key] = fn


def _run_suspended(fn: Callable, mode: Suspendable) -> Callable:
    def hook(*args: Any, **kwargs: Any) -> Any:
        mode.suspended += 1
        try:
            return fn(*args, **kwargs)
        finally:
            mode.suspended -= 1

    hook._nncompress_suspends = mode  # type: ignore[attr-defined]
    return hook


class _Tracer(TorchFunctionMode, Suspendable):
    """Records ops into a Graph while active; one instance per ``trace`` call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.root = class_name(model)
        self.graph = Graph(self.root)
        self.scopes = module_scopes(model)
        self.stack: list[tuple[str, str]] = [self.scopes[id(model)]]
        self.params = {
            id(p): name for name, p in model.named_parameters() if not name.startswith(NNCF_ATTR + ".")
        }
        self.buffers = buffer_ids(model)
        self.get_buffers = lambda: self.buffers
        self.producers: dict[int, tuple[str, int]] = {}
        self.alive: list[torch.Tensor] = []  # keeps every seen tensor alive: ids stay unique
        self.counters: dict[tuple[str, str], int] = {}
        self.failures: dict[int, tuple[BaseException, str, str, str | None, str | None]] = {}
        self.outer_exc = sys.exc_info()[1]

    # -- module scopes --------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, _args: Any) -> None:
        entry = self.scopes.get(id(module))
        if entry is not None:
            self.stack.append(entry)

    def post_hook(self, module: nn.Module, _args: Any, _output: Any) -> None:
        entry = self.scopes.get(id(module))
        if entry is None:
            return
        exc = sys.exc_info()[1]
        if exc is not None and exc is not self.outer_exc and id(exc) not in self.failures:
            self.failures[id(exc)] = (exc, entry[0], entry[1], None, None)
        _pop_scope(self.stack, entry)

    # -- ops --------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if self.suspended:
            return func(*args, **kwargs)
        name = call_op_name(func, args, kwargs)
        if name is None:
            return func(*args, **kwargs)
        impl = expanded_impl(func)
        if impl is not None:
            with self:
                return impl(*args, **kwargs)
        if is_state_update(name, args, self.get_buffers):
            return func(*args, **kwargs)
        scope, dotted = self.stack[-1]
        key = (scope, name)
        k = self.counters.get(key, 0)
        self.counters[key] = k + 1
        node_name = f"{scope}/{name}_{k}"
        try:
            out = func(*args, **kwargs)
        except Exception as exc:
            if id(exc) not in self.failures:
                self.failures[id(exc)] = (exc, scope, dotted, node_name, name)
            raise
        self._add_node(node_name, name, dotted, args, kwargs, out)
        return out

    def _add_node(self, node_name: str, name: str, dotted: str, args: tuple, kwargs: dict, out: Any) -> None:
        outs = flatten_tensors(out)
        if not outs and name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
            outs = [args[0]]  # x[i] = y modifies x
        if not outs:
            return
        spec = OP_TABLE.get(name)
        attrs = _attrs(spec, args, kwargs, outs)
        if spec is None:
            kind = K.UNKNOWN
        elif spec.refine is not None:
            kind = spec.refine(attrs)
        else:
            kind = spec.kind
        node = self.graph.add_node(Node(node_name, name, kind, dotted, attrs))
        for port, (t, key) in enumerate(iter_arg_tensors(args, kwargs)):
            pname = self.params.get(id(t))
            if pname is not None:
                if _is_bias(spec, key, pname):
                    if node.bias is None:
                        node.bias = pname
                else:
                    out_axis, in_axis = weight_axes(spec, t, port)
                    node.weights[port] = WeightInfo(
                        pname, tuple(int(d) for d in t.shape), dtype_name(t.dtype), out_axis, in_axis
                    )
                continue
            producer = self.producers.get(id(t))
            if producer is not None:
                self.graph.add_edge(Edge(producer[0], producer[1], node_name, port, tensor_info(t)))
        for port, t in enumerate(outs):
            self.producers[id(t)] = (node_name, port)
            self.alive.append(t)

    # -- graph boundary --------------------------------------------------------------------
    def add_inputs(self, args: tuple, kwargs: dict) -> None:
        def visit(i: int, path: str, keyword: str | None, t: torch.Tensor) -> torch.Tensor:
            attrs: dict[str, Any] = {
                "path": path,
                "shape": tuple(int(d) for d in t.shape),
                "dtype": dtype_name(t.dtype),
            }
            if keyword is not None:
                attrs["keyword"] = keyword
            name = input_node_name(self.root, i)
            self.graph.add_node(Node(name, INPUT_OP, K.INPUT, "", attrs))
            self.producers[id(t)] = (name, 0)
            self.alive.append(t)
            return t

        map_model_inputs(self.model, args, kwargs, visit)

    def add_outputs(self, output: Any) -> None:
        counter = [0]

        def visit(path: str, t: torch.Tensor) -> torch.Tensor:
            name = output_node_name(self.root, counter[0])
            counter[0] += 1
            self.graph.add_node(Node(name, OUTPUT_OP, K.OUTPUT, "", {"path": path}))
            producer = self.producers.get(id(t))
            if producer is not None:
                self.graph.add_edge(Edge(producer[0], producer[1], name, 0, tensor_info(t)))
            return t

        map_structure(output, visit)

    def drop_isolated_nodes(self) -> None:
        """Remove ops with neither inputs nor consumers: state updates such as BatchNorm's
        ``num_batches_tracked += 1`` in train mode, unused constants. Names are unaffected."""
        for node in self.graph.nodes:
            if (
                node.kind not in (K.INPUT, K.OUTPUT)
                and not self.graph.in_edges(node.name)
                and not self.graph.out_edges(node.name)
            ):
                self.graph.remove_node(node.name)

    def failure_message(self, exc: BaseException) -> str:
        record = None
        seen: set[int] = set()
        cur: BaseException | None = exc
        while cur is not None and id(cur) not in seen:
            seen.add(id(cur))
            record = self.failures.get(id(cur))
            if record is not None:
                break
            cur = cur.__cause__ or cur.__context__
        if record is None:
            scope, dotted, node, op = self.stack[-1][0], self.stack[-1][1], None, None
        else:
            _, scope, dotted, node, op = record
        where = f"module '{dotted}' ({scope})" if dotted else f"the root module ({scope})"
        what = f" while executing op '{op}' (node '{node}')" if node else ""
        return f"Tracing {self.root} failed in {where}{what}: {type(exc).__name__}: {exc}"


def _pop_scope(stack: list, entry: tuple) -> None:
    if stack[-1] is entry:
        stack.pop()
        return
    for i in range(len(stack) - 1, 0, -1):  # unbalanced (a hook was skipped): unwind to it
        if stack[i] is entry:
            del stack[i:]
            return


def _attrs(spec: OpSpec | None, args: tuple, kwargs: dict, outs: list) -> dict:
    if spec is None or spec.attrs is None:
        return {}
    try:
        return spec.attrs(CallArgs(args, kwargs), outs)
    except Exception:  # attributes are best effort: an odd call must not break tracing
        return {}


def _is_bias(spec: OpSpec | None, key: int | str, param_name: str) -> bool:
    if spec is not None and spec.bias_arg is not None:
        return key in spec.bias_arg
    if spec is not None and spec.weight_arg is not None and key in spec.weight_arg:
        return False
    return param_name.rsplit(".", 1)[-1].startswith("bias")


class _BufferSnapshot:
    """Buffers of a model, restored after tracing (BatchNorm statistics in train mode...)."""

    def __init__(self, model: nn.Module):
        self.saved = [
            (m, name, b, b.detach().clone())
            for m in model.modules()
            for name, b in m._buffers.items()
            if b is not None
        ]
        self.rng = torch.get_rng_state()

    def restore(self) -> None:
        with torch.no_grad():
            for module, name, original, copy in self.saved:
                module._buffers[name] = original
                original.copy_(copy)
        torch.set_rng_state(self.rng)


def trace(model: nn.Module, example_input: Any, *, keyword_inputs: Mapping | None = None) -> Graph:
    """Run ``model`` once on ``example_input`` and return the graph of the ops it executed.

    The model is left as it was: same train/eval mode, parameters, buffers, no hooks left behind.
    Raises ``TracingError`` naming the module scope and op when the model fails.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"trace() expects a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = normalize_example_input(example_input, keyword_inputs)
    tracer = _Tracer(model)
    handles = []
    snapshot = _BufferSnapshot(model)
    manager = model._modules.get(NNCF_ATTR)
    disabled = manager.disabled() if hasattr(manager, "disabled") else contextlib.nullcontext()
    try:
        # the user's forward hooks, wrapped before the tracer adds its own
        outside = [p for module in model.modules() for p in run_forward_hooks_suspended(module, tracer)]
        handles.append(_Restore(outside))
        for module in model.modules():
            if module is not model and id(module) in tracer.scopes:
                handles.append(module.register_forward_pre_hook(tracer.pre_hook))
                handles.append(module.register_forward_hook(tracer.post_hook, always_call=True))
        tracer.add_inputs(args, kwargs)
        with disabled, torch.no_grad(), tracer:
            output = model(*args, **kwargs)
        tracer.add_outputs(output)
        tracer.drop_isolated_nodes()
    except TracingError:
        raise
    except Exception as exc:
        raise TracingError(tracer.failure_message(exc) + _non_tensor_hint(args, kwargs)) from exc
    finally:
        for h in handles:
            h.remove()
        snapshot.restore()
    return tracer.graph


class _Restore:
    """Puts wrapped forward hooks back with the hook handles (``remove``) when tracing ends."""

    def __init__(self, patched: list):
        self.patched = patched

    def remove(self) -> None:
        restore_forward_hooks(self.patched)


def _non_tensor_hint(args: tuple, kwargs: dict) -> str:
    """A hint when the input holds numpy arrays (calibration data made for ONNX or OpenVINO)."""
    found: list[str] = []

    def visit(x: Any) -> None:
        if isinstance(x, (list, tuple)):
            for v in x:
                visit(v)
        elif isinstance(x, Mapping):
            for v in x.values():
                visit(v)
        elif type(x).__module__ == "numpy" and hasattr(x, "shape"):
            found.append(f"numpy array of shape {tuple(x.shape)}")

    visit((args, kwargs))
    if not found:
        return ""
    return (
        f". The input holds a {found[0]}: a torch model takes torch.Tensor inputs; convert them in "
        "the Dataset's transform_fn (e.g. torch.from_numpy)"
    )
