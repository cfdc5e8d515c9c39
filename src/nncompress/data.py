"""Dataset: the calibration/validation data wrapper of the public API (as ``nncf.Dataset``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nncompress.errors import DatasetError


class Dataset:
    """Wraps any iterable (a DataLoader, a list, a generator factory) and a ``transform_fn``.

    ``transform_fn`` turns one item of ``data_source`` into the model's input (a tensor, a tuple
    of positional inputs, or a dict of keyword inputs), so user data loaders need no change.
    """

    def __init__(self, data_source: Iterable[Any], transform_fn: Callable[[Any], Any] | None = None):
        if data_source is None:
            raise DatasetError(
                "Dataset: data_source is None; pass an iterable such as a DataLoader or a list"
            )
        if not hasattr(data_source, "__iter__"):
            raise DatasetError(
                f"Dataset: data_source of type {type(data_source).__name__} is not iterable; "
                "pass a DataLoader, a list or another iterable"
            )
        self._data_source = data_source
        self._transform_fn = transform_fn or (lambda x: x)

    def get_data(self, indices: Iterable[int] | None = None) -> Iterator[Any]:
        """The raw items (optionally only those at sorted ``indices``)."""
        return self._select(self._data_source, indices)

    def get_inference_data(self, indices: Iterable[int] | None = None) -> Iterator[Any]:
        """The model inputs: each raw item passed through ``transform_fn``."""
        for item in self._select(self._data_source, indices):
            yield self._transform_fn(item)

    def get_length(self) -> int | None:
        """Number of items when the source knows it, else None."""
        try:
            return len(self._data_source)  # type: ignore[arg-type]
        except TypeError:
            return None

    def get_batch_size(self) -> int | None:
        return getattr(self._data_source, "batch_size", None)

    @staticmethod
    def _select(source: Iterable[Any], indices: Iterable[int] | None) -> Iterator[Any]:
        if indices is None:
            yield from source
            return
        wanted = sorted(set(indices))
        if not wanted:
            return
        pos = 0
        for i, item in enumerate(source):
            if i == wanted[pos]:
                yield item
                pos += 1
                if pos == len(wanted):
                    return
