"""A progress bar on stderr (rich's), for long work at a terminal; nothing otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a command over HTTP imports no projection (tests/test_server.py)
    from projections.progress import Reporter


@contextlib.contextmanager
def progress_on_stderr(enabled: bool = True) -> Iterator[Reporter | None]:
    """A bar per phase while stderr is a terminal (and ``enabled``: off for JSON output);
    the walks of the log report to it meanwhile. None when there is no bar."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        auto_refresh=False,  # no refresh thread: a single-threaded walk may fork workers
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, done: int, expected: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=expected or None)
            bar.update(tasks[phase], completed=done, total=max(expected, done) or None)
            bar.refresh()

        from projections.progress import listening

        with listening(report):
            yield report
