"""Progress of the long walks over the log (replay, verify, the audit trail, index
rebuilds), told to whoever listens: a bar on a terminal (``tools.progress``), else nobody.

A listener is process-wide (``listening``), so a walk on any thread reports; without one,
a walk's iterator is returned untouched and costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
Reporter = Callable[[str, int, int], None]  # phase, done, expected (0: unknown)
EVERY = 2048  # items between reports

_listener: Reporter | None = None


@contextlib.contextmanager
def listening(report: Reporter | None) -> Iterator[None]:
    """Send the walks' progress to ``report`` for a while (None: to nobody)."""
    global _listener
    before, _listener = _listener, report
    try:
        yield
    finally:
        _listener = before


def counted(items: Iterable[T], phase: str, expected: Callable[[], int]) -> Iterable[T]:
    """``items``, reporting every ``EVERY`` of them while someone listens."""
    report = _listener
    if report is None:
        return items
    return _counting(items, phase, expected(), report)


def _counting(items: Iterable[T], phase: str, expected: int, report: Reporter) -> Iterator[T]:
    done = 0
    for item in items:
        yield item
        done += 1
        if done % EVERY == 0:
            report(phase, done, expected)
    report(phase, done, max(expected, done))
