"""vaultlog stores as the figures make, open and take apart, through the public API only:
``Store.open``, ``Core(store, Registry())``, ``Session``/``MountView`` and ``Store.commit``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backends import Core, MountView, Registry, Request, Session, local_user
from projections import Event, Mount, SecretWritten, Store, encode
from projections.snapshot import snapshot_dir
from projections.store import SNAPSHOT_EVERY
from tools.bench.harness import VALUE, Sizes
from tools.transport import open_core


def snapshot_every_from_env() -> int:
    """``VAULTLOG_SNAPSHOT_EVERY``, which the CLI passes to ``Store.open``."""
    value = os.environ.get("VAULTLOG_SNAPSHOT_EVERY")
    return int(value) if value else SNAPSHOT_EVERY


def open_writer(directory: Path, key: bytes, snapshot_every: int = SNAPSHOT_EVERY) -> Core:
    """A writer's Core as the front door opens one. Close it with ``core.store.close()``."""
    return open_core(directory, key, write=True, snapshot_every=snapshot_every)


def open_reader(directory: Path, key: bytes) -> Core:
    """A read-only Core with its state built: a reader replays (from the nearest snapshot)
    on first use of ``store.state``, so that is part of what opening costs."""
    store = Store.open(directory, key, write=False)
    try:
        _ = store.state
    except BaseException:
        store.close()
        raise
    return Core(store, Registry())


def timed_open(directory: Path, key: bytes) -> tuple[float, Core]:
    start = time.perf_counter()
    core = open_reader(directory, key)
    return time.perf_counter() - start, core


def put_batch(
    store: Store,
    mount: Mount,
    writes: Iterable[tuple[str, dict[str, Any]]],
    request: Request,
    registry: Registry | None = None,
) -> list[Event]:
    """Stage a ``secret.written`` per (path, value) of ``mount``, sealed as a write through
    the Core seals it, in one session of ``request``, and commit them at once (durable at
    ``store.flush()``): the events as written."""
    session = Session(store, request, registry or Registry())
    view = MountView(session, mount)
    with store.lock:
        for path, value in writes:
            view.put(path, value)
        return session.commit()


def build_log(
    directory: Path, key: bytes, sizes: Sizes, between: Callable[[], None]
) -> tuple[list[float], int, int]:
    """A store of ``sizes.events`` secret writes over ``sizes.keyspace`` paths, staged and
    committed ``sizes.batch`` at a time (one fsync each), calling ``between`` after each;
    (batch rates, seq before the first, the store's ``snapshot_every``)."""
    core = open_writer(directory, key, snapshot_every_from_env())
    store = core.store
    try:
        base = store.state.seq
        mount = store.state.mounts.at("secret/")
        assert mount is not None
        registry = Registry()
        rates, written = [], 0
        while written < sizes.events:
            n = min(sizes.batch, sizes.events - written)
            start = time.perf_counter()
            writes = ((f"k{j % sizes.keyspace}", VALUE) for j in range(written, written + n))
            put_batch(
                store, mount, writes, local_user(store, Request("write", "secret/x")), registry
            )
            store.flush()  # one fsync for the batch
            rates.append(n / (time.perf_counter() - start))
            written += n
            between()
        return rates, base, store.snapshot_every
    finally:
        store.close()


@contextmanager
def aside(directory: Path, *names: str) -> Iterator[None]:
    """The store without some of its derived files (snapshots, version index) for a while."""
    moved = [name for name in names if (directory / name).exists()]
    for name in moved:
        (directory / name).rename(directory.parent / f"{name}-aside")
    try:
        yield
    finally:
        for name in moved:
            (directory.parent / f"{name}-aside").rename(directory / name)


def snapshot_at_head(store: Store) -> None:
    """Write a snapshot of ``store`` at its head."""
    store.snapshot()


def first_secret_written(directory: Path, key: bytes) -> bytes:
    """The record body of the log's first ``secret.written`` event: the event encoded
    again, which gives the bytes it was written as."""
    store = Store.open(directory, key, write=False)
    try:
        for event in store.events():
            if isinstance(event, SecretWritten):
                return encode(event)
    finally:
        store.close()
    raise LookupError("no secret.written event in the log")


def segment_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


def snapshot_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in snapshot_dir(directory).glob("*.snap"))
