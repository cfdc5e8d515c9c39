"""The wrapped model: the user's own object, with hooks applied in its forward.

``wrap_model(model, graph)`` swaps the class of ``model`` in place to ``Wrapped(UserClass,
NNCFNetwork)`` (one class per user class, created on first use), so ``isinstance(m, UserClass)``
and ``isinstance(m, NNCFNetwork)`` both hold and every attribute and method of the user's model
keeps working. The wrapped ``forward`` runs the user's forward with the hooks of ``m._nncf``
(an :class:`NNCFInterface`, i.e. a :class:`~nncompress.torch.hooks.HookManager` that also holds
the graph) applied; ``state_dict`` keys of hook modules read ``_nncf.hooks.<key>.<name>``.

``m.nncf`` gives the NNCF-style interface: ``graph``, ``hook_manager``, ``insert``,
``remove_hooks``, ``get_original_model`` / ``strip_hooks``.

The wrapped class pickles and deep-copies by reference to the user's class (``__reduce_ex__``),
so copies get the same wrapped class. During the user's forward the ``_nncf`` child is hidden
from ``_modules``, so forwards that iterate over children (``nn.Sequential``) do not see it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

from torch import nn

from nncompress.graph import Graph
from nncompress.quantization.spec import TargetPoint
from nncompress.torch.hooks import Hook, HookManager
from nncompress.torch.tracing import NNCF_ATTR

__all__ = ["NNCFInterface", "NNCFNetwork", "is_wrapped", "unwrap_model", "wrap_model"]

_WRAPPED_CLASSES: dict[type, type] = {}
_HIDDEN = "_nncf_during_forward"  # where the interface sits while hidden from _modules


class NNCFInterface(HookManager):
    """The ``_nncf`` child of a wrapped model: its hooks (saved in ``state_dict``) and its graph."""

    def __init__(self, graph: Graph | None = None) -> None:
        super().__init__()
        self.graph = graph

    def get_graph(self) -> Graph | None:
        return self.graph


class NNCFNetwork:
    """Mixin of every wrapped model class; ``isinstance(model, NNCFNetwork)`` tells a wrapped model."""

    _nncf_original_class: type

    @property
    def nncf(self) -> _NNCFAccessor:
        return _NNCFAccessor(self)

    def _nncf_forward(self, *args: Any, **kwargs: Any) -> Any:
        modules = self.__dict__["_modules"]
        interface = modules.get(NNCF_ATTR)
        forward = self.__dict__.get("_nncf_instance_forward")
        if forward is None:
            forward = type(self)._nncf_original_class.forward.__get__(self)
        if interface is None:
            return forward(*args, **kwargs)
        # hide our child from the user's forward (nn.Sequential iterates over _modules)
        del modules[NNCF_ATTR]
        self.__dict__[_HIDDEN] = interface
        try:
            return interface.run(self, forward, args, kwargs)
        finally:
            modules[NNCF_ATTR] = interface
            self.__dict__.pop(_HIDDEN, None)

    def _nncf_reduce_ex(self, protocol: int) -> tuple:
        return (_restore_wrapped, (type(self)._nncf_original_class,), self.__getstate__())


def _restore_wrapped(original_class: type) -> Any:
    cls = _wrapped_class(original_class)
    return cls.__new__(cls)


def _wrapped_class(cls: type) -> type:
    wrapped = _WRAPPED_CLASSES.get(cls)
    if wrapped is None:

        def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
            return NNCFNetwork._nncf_forward(self, *args, **kwargs)

        # exporters (torch.jit.trace, torch.onnx.export, openvino.convert_model) bind keyword
        # example inputs by the forward's signature: show them the user's one
        functools.update_wrapper(forward, cls.forward, assigned=("__doc__", "__name__"), updated=())
        with contextlib.suppress(TypeError, ValueError):  # no signature: keep *args, **kwargs
            forward.__signature__ = inspect.signature(cls.forward)
        namespace = {
            "forward": forward,
            "__reduce_ex__": NNCFNetwork._nncf_reduce_ex,
            "_nncf_original_class": cls,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        }
        wrapped = type(cls.__name__, (cls, NNCFNetwork), namespace)
        _WRAPPED_CLASSES[cls] = wrapped
    return wrapped


def is_wrapped(model: Any) -> bool:
    return isinstance(model, NNCFNetwork)


def wrap_model(model: nn.Module, graph: Graph | None = None) -> nn.Module:
    """Turn ``model`` (in place) into a wrapped model carrying ``graph``; returns the same object.

    The caller deep-copies first when the original must stay untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"wrap_model expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, NNCFNetwork):
        raise TypeError(f"{type(model).__name__} is already wrapped; use model.nncf to change its hooks")
    if NNCF_ATTR in model._modules or NNCF_ATTR in model.__dict__:
        raise TypeError(f"{type(model).__name__} already has an attribute '{NNCF_ATTR}'")
    instance_forward = model.__dict__.pop("forward", None)
    if instance_forward is not None:  # a forward assigned to the instance would bypass ours
        model.__dict__["_nncf_instance_forward"] = instance_forward
    model.add_module(NNCF_ATTR, NNCFInterface(graph))
    model.__class__ = _wrapped_class(type(model))
    return model


def unwrap_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The user's model without our class, ``_nncf`` child and hooks (a deep copy unless ``inplace``)."""
    if not isinstance(model, NNCFNetwork):
        return model if inplace else copy.deepcopy(model)
    original = type(model)._nncf_original_class
    if inplace:
        target = model
    else:
        # a shell sharing the model's state except our child; deepcopy then copies only the user's part
        shell = original.__new__(original)
        shell.__dict__.update(model.__dict__)
        shell.__dict__["_modules"] = {k: v for k, v in model._modules.items() if k != NNCF_ATTR}
        forward = shell.__dict__.pop("_nncf_instance_forward", None)
        target = copy.deepcopy(shell)
        if forward is not None:
            if isinstance(forward, types.MethodType) and forward.__self__ is model:
                forward = types.MethodType(forward.__func__, target)
            target.__dict__["_nncf_instance_forward"] = forward
    target.__class__ = original
    target.__dict__["_modules"].pop(NNCF_ATTR, None)
    instance_forward = target.__dict__.pop("_nncf_instance_forward", None)
    if instance_forward is not None:
        target.__dict__["forward"] = instance_forward
    return target


class _NNCFAccessor:
    """``model.nncf``: what NNCF's ``NNCFNetwork.nncf`` offers, over our hook manager."""

    __slots__ = ("_model",)

    def __init__(self, model: nn.Module):
        self._model = model

    @property
    def hook_manager(self) -> NNCFInterface:
        model = self._model
        interface = model._modules.get(NNCF_ATTR)
        return model.__dict__[_HIDDEN] if interface is None else interface

    @property
    def graph(self) -> Graph | None:
        return self.hook_manager.graph

    @graph.setter
    def graph(self, value: Graph) -> None:
        self.hook_manager.graph = value

    def get_graph(self) -> Graph | None:
        return self.graph

    def insert(self, target: TargetPoint, hook: Hook | nn.Module) -> str | None:
        """Add a hook at ``target`` (see ``HookManager.add``)."""
        return self.hook_manager.add(target, hook)

    def remove_hooks(self, target: TargetPoint | None = None) -> None:
        """Remove the hooks at ``target``, or every hook."""
        if target is None:
            self.hook_manager.remove_all()
        else:
            self.hook_manager.remove(target)

    def hooks_disabled(self):
        """Context manager: forwards inside run without hooks."""
        return self.hook_manager.disabled()

    def get_original_model(self) -> nn.Module:
        """A deep copy of the user's model, of the user's class, without our hooks."""
        return unwrap_model(self._model)

    def strip_hooks(self, inplace: bool = False) -> nn.Module:
        """The user's model without our class and hooks (a copy, or this object when ``inplace``)."""
        return unwrap_model(self._model, inplace=inplace)

    def record_op_names(self) -> Callable:
        return self.hook_manager.record_op_names()
