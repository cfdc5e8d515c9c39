"""Config key -> algorithm builder: how ``create_compressed_model`` finds each algorithm.

Built-in algorithms register themselves when their module is imported; ``_BUILTIN_MODULES``
names those modules so a builder is imported only when a config asks for it. Other code
(plug-ins, tests) registers with the decorator::

    @register_algorithm_builder("my_algorithm")
    class MyBuilder(PTCompressionAlgorithmBuilder): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from nncompress.errors import ConfigError, did_you_mean

__all__ = [
    "get_algorithm_builder",
    "register_algorithm_builder",
    "registered_algorithms",
    "unregister_algorithm_builder",
]

_BUILDERS: dict[str, type] = {}

# algorithm name (the "algorithm" value of a compression section) -> module registering its builder
# built-in builders seen at registration, so an unregistered built-in comes back on lookup
_BUILTIN_CLASSES: dict[str, type] = {}
_BUILTIN_MODULES: dict[str, str] = {
    "quantization": "nncompress.torch.algorithms.quantization",
    "filter_pruning": "nncompress.torch.pruning.builder",
    "magnitude_sparsity": "nncompress.torch.sparsity.magnitude",
    "rb_sparsity": "nncompress.torch.sparsity.rb",
    "const_sparsity": "nncompress.torch.sparsity.const",
    "knowledge_distillation": "nncompress.torch.knowledge_distillation.builder",
}


def register_algorithm_builder(name: str, *, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: the builder for compression sections with ``"algorithm": name``."""

    def decorate(cls: type) -> type:
        if name in _BUILDERS and not replace and _BUILDERS[name] is not cls:
            raise ValueError(
                f"an algorithm builder for '{name}' is already registered ({_BUILDERS[name].__qualname__})"
            )
        _BUILDERS[name] = cls
        if name in _BUILTIN_MODULES and cls.__module__.startswith(_BUILTIN_MODULES[name]):
            _BUILTIN_CLASSES[name] = cls
        cls.algorithm_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def unregister_algorithm_builder(name: str) -> None:
    """Remove the builder registered for ``name`` (built-ins come back on the next lookup)."""
    _BUILDERS.pop(name, None)


def registered_algorithms() -> list[str]:
    """Names with a builder: registered ones and built-ins (imported on first use)."""
    return sorted(set(_BUILDERS) | set(_BUILTIN_MODULES))


def get_algorithm_builder(name: str) -> type:
    """The builder class for ``name``; ``ConfigError`` naming the available ones if there is none."""
    if name not in _BUILDERS and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
        if name not in _BUILDERS and name in _BUILTIN_CLASSES:  # unregistered after its import
            _BUILDERS[name] = _BUILTIN_CLASSES[name]
    cls = _BUILDERS.get(name)
    if cls is None:
        available = registered_algorithms()
        raise ConfigError(
            [
                (
                    "compression",
                    f"algorithm '{name}' is not available for torch models in this version "
                    f"(available: {', '.join(available)}).{did_you_mean(name, available)}",
                )
            ]
        )
    return cls
