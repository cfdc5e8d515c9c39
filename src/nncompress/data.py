"""Dataset: the calibration/validation data wrapper of the public API (as ``nncf.Dataset``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nncompress.errors import DatasetError


class _Replay:
    """A one-shot iterator (a generator) made re-iterable: items are kept as they are first
    drawn, so a later pass sees the same first items. PTQ reads its calibration items more than
    once (fast bias correction runs the quantized model on the first ones again), where NNCF
    reads them once; without this a generator that works with NNCF would give the second pass
    nothing."""

    def __init__(self, source: Iterator[Any]):
        self._source = source
        self._seen: list[Any] = []
        self._exhausted = False
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Any]:
        i = 0
        while True:
            with self._lock:
                if i == len(self._seen) and not self._exhausted:
                    try:
                        self._seen.append(next(self._source))
                    except StopIteration:
                        self._exhausted = True
                if i == len(self._seen):
                    return
                item = self._seen[i]
            yield item
            i += 1


class Dataset:
    """Wraps any iterable (a DataLoader, a list, a generator) and a ``transform_fn``.

    ``transform_fn`` turns one item of ``data_source`` into the model's input (a tensor, a tuple
    of positional inputs, or a dict of keyword inputs), so user data loaders need no change.
    A re-iterable source (a list, a DataLoader) is read again for every pass, nothing kept. A
    one-shot source (a generator) is kept in memory as it is read, up to the items the
    passes asked for (``subset_size``), so that later passes see the same items.
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
        # a generator or another iterator; a DataLoader is not one (and iter() would start its workers)
        one_shot = isinstance(data_source, Iterator)
        self._items: Iterable[Any] = _Replay(data_source) if one_shot else data_source
        self._transform_fn = transform_fn or (lambda x: x)

    def get_data(self, indices: Iterable[int] | None = None) -> Iterator[Any]:
        """The raw items (optionally only those at sorted ``indices``)."""
        return self._select(self._items, indices)

    def get_inference_data(self, indices: Iterable[int] | None = None) -> Iterator[Any]:
        """The model inputs: each raw item passed through ``transform_fn``."""
        for item in self._select(self._items, indices):
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
