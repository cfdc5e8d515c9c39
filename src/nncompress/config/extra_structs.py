"""Runtime objects attached to a config (data loaders, loss criteria, evaluation functions).

They are not JSON: they are never validated or serialized, and a deep copy of the config shares
them (copying a data loader would copy its dataset).
"""

from __future__ import annotations

from collections.abc import Iterable

from nncompress.errors import ConfigError, ExtraStructNotRegisteredError


class NNCFExtraConfigStruct:
    """Optional base class of extra structs; any object can be registered, keyed by its class."""

    @classmethod
    def get_id(cls) -> str:
        """A readable name of the struct kind (NNCF scripts call this)."""
        return cls.__name__


class ExtraStructs:
    """A registry of extra structs keyed by class: one object per class."""

    def __init__(self) -> None:
        self._by_class: dict[type, object] = {}

    def register(self, structs: Iterable[object]) -> None:
        """Attach ``structs``; registering a second object of the same class is an error."""
        structs = list(structs)
        seen: set[type] = set()
        for struct in structs:
            cls = type(struct)
            if cls in self._by_class or cls in seen:
                raise ConfigError(
                    f"an extra struct of type {cls.__name__} is already registered with this config; "
                    "register each kind once"
                )
            seen.add(cls)
        for struct in structs:
            self._by_class[type(struct)] = struct

    def get(self, cls: type) -> object:
        """The struct registered for ``cls`` (or the single registered subclass instance of it)."""
        _check_class(cls)
        if cls in self._by_class:
            return self._by_class[cls]
        matches = [s for s in self._by_class.values() if isinstance(s, cls)]
        if len(matches) == 1:
            return matches[0]
        registered = ", ".join(sorted(c.__name__ for c in self._by_class)) or "none"
        name = getattr(cls, "__name__", repr(cls))
        if matches:
            raise ExtraStructNotRegisteredError(
                f"several registered extra structs are instances of {name}; ask for their exact class "
                f"(registered: {registered})"
            )
        raise ExtraStructNotRegisteredError(
            f"no extra struct of type {name} is registered with this config (registered: {registered}); "
            "attach one with config.register_extra_structs([...])"
        )

    def has(self, cls: type) -> bool:
        """Whether ``get(cls)`` would succeed."""
        _check_class(cls)
        if cls in self._by_class:
            return True
        return sum(isinstance(s, cls) for s in self._by_class.values()) == 1

    def all(self) -> list[object]:
        """Every registered struct, in registration order."""
        return list(self._by_class.values())

    def copy(self) -> ExtraStructs:
        """A new registry holding the same objects (not copies of them)."""
        other = ExtraStructs()
        other._by_class = dict(self._by_class)
        return other


def _check_class(cls: object) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"extra structs are looked up by class, got {cls!r}")
