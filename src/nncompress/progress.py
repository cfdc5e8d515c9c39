"""Progress bars for the long steps (calibration, BatchNorm adaptation, range initialization,
LeGR search, accuracy-aware training), all behind one switch.

Bars are tqdm bars on stderr that disappear when done (``leave=False``). They show unless one of
these turns them off:

- ``nncompress.set_progress(False)`` (or the :func:`progress_disabled` block);
- the environment variable ``NNCOMPRESS_NO_PROGRESS`` set to anything but ``""``/``0``/``false``;
- the ``--quiet`` option of the ``nncompress`` command line;
- a per-call ``enabled=False`` (``AdvancedQuantizationParameters(show_progress=False)``).

    import nncompress
    nncompress.set_progress(False)   # no bars from here on

Backend-neutral: tqdm is imported only when a bar is really drawn, and a missing tqdm means no
bars rather than an error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = [
    "ENV_VAR",
    "StageProgress",
    "progress",
    "progress_disabled",
    "progress_enabled",
    "set_progress",
]

ENV_VAR = "NNCOMPRESS_NO_PROGRESS"
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})

_switch = True  # the process-wide switch of set_progress

T = TypeVar("T")


def set_progress(enabled: bool) -> None:
    """Turn every progress bar of nncompress on or off for this process.

    ``NNCOMPRESS_NO_PROGRESS=1`` in the environment still wins over ``set_progress(True)``, so a CI
    job can silence scripts it does not own.
    """
    global _switch
    if not isinstance(enabled, bool):
        raise TypeError(f"set_progress expects True or False, got {enabled!r}")
    _switch = enabled


def progress_enabled() -> bool:
    """Whether bars are drawn now: the switch is on and ``NNCOMPRESS_NO_PROGRESS`` is not set."""
    return _switch and os.environ.get(ENV_VAR, "").strip().lower() in _FALSE_WORDS


@contextlib.contextmanager
def progress_disabled() -> Iterator[None]:
    """No bars inside the block; the switch gets back its previous value afterwards."""
    global _switch
    previous = _switch
    _switch = False
    try:
        yield
    finally:
        _switch = previous


def _tqdm_class() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is never worth a crash
        return None
    return tqdm


def progress(
    iterable: Iterable[T], desc: str, total: int | None = None, *, enabled: bool = True
) -> Iterable[T]:
    """``iterable`` with a bar named ``desc`` while it is consumed (``iterable`` itself when bars
    are off, so ``len()`` and the like keep working).

    ``total`` is the expected number of items (taken from ``len(iterable)`` when it has one).

        for batch in progress(loader, "BatchNorm adaptation", total=num_batches):
            model(batch)
    """
    if not (enabled and progress_enabled()):
        return iterable
    tqdm = _tqdm_class()
    if tqdm is None:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


class StageProgress:
    """A bar per stage, fed by calls ``bar(stage, done, total)`` (the core algorithms'
    ``ProgressCallback``); a new stage name closes the previous bar and opens the next.

    Whether bars show is decided when a stage opens (``enabled`` and :func:`progress_enabled`).
    Use as a context manager, or call :meth:`close`, so the last bar is cleared.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar: Any = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            if self.enabled and progress_enabled():
                tqdm = _tqdm_class()
                if tqdm is not None:
                    self._bar = tqdm(total=total, desc=stage, leave=False, dynamic_ncols=True)
        if self._bar is None:
            return
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        """Clear the current bar (if any)."""
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
