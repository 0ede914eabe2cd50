"""Transports: how a front door's requests reach a Core. One method, ``handle``.

The CLI talks to a ``Transport`` and never to a store: ``EmbeddedTransport`` opens the
store in this process for each request; ``tools.remote.HttpTransport`` sends it to a
server (``VAULT_ADDR``), which serves it with the same Core, so both give the same answers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Protocol

from backends import Core, Registry, Request, Response, WriterNeeded
from eventstore import StoreError
from projections import Store
from projections.store import SNAPSHOT_EVERY
from tools.config import StoreLocation

# Requests a reader answers (no lock, no audit record): the rest need the writer, and a
# request that turns out to change the store is served again by one.
_READER_PATHS = (
    "sys/mounts",
    "sys/leases",
    "sys/key-status",
    "sys/audit",
    "sys/vaultlog/",
    "sys/remount/status/",
    "sys/internal/ui/mounts",
    "sys/seal-status",
    "sys/health",
    "sys/leader",
    "sys/init",
)


class Transport(Protocol):
    def handle(self, request: Request) -> Response: ...


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise StoreError(f"{name} must be a number of seconds or events, not {raw!r}")
    return value


class EmbeddedTransport:
    """Serves each request in this process: opens the store, serves, closes it."""

    def __init__(self, location: StoreLocation, registry: Registry | None = None) -> None:
        self.location = location
        self.registry = registry or Registry()
        self.lock_timeout = _number("VAULTLOG_LOCK_TIMEOUT", 30.0)
        self.snapshot_every = int(_number("VAULTLOG_SNAPSHOT_EVERY", SNAPSHOT_EVERY))

    def handle(self, request: Request) -> Response:
        if not needs_writer(request):
            with contextlib.suppress(WriterNeeded):  # it changes the store after all
                return self._serve(request, write=False)
        return self._serve(request, write=True)

    def _serve(self, request: Request, *, write: bool) -> Response:
        core = open_core(
            self.location.directory,
            self.location.unseal_key,
            write=write,
            lock_timeout=self.lock_timeout,
            snapshot_every=self.snapshot_every,
            registry=self.registry,
        )
        try:
            return core.handle(request)
        finally:
            core.store.close()


def open_core(
    directory: Path,
    unseal_key: bytes,
    *,
    write: bool,
    lock_timeout: float = 30.0,
    snapshot_every: int | None = None,
    registry: Registry | None = None,
) -> Core:
    """A Core over the store in ``directory``, as the embedded front door opens one: a
    writer also runs what opening for writing runs (rollback, expiry). Close it with
    ``core.store.close()``. ``snapshot_every``: None for the default."""
    every = SNAPSHOT_EVERY if snapshot_every is None else snapshot_every
    store = Store.open(
        directory, unseal_key, write=write, lock_timeout=lock_timeout, snapshot_every=every
    )
    core = Core(store, registry or Registry())
    if write:
        try:
            core.maintain()
        except BaseException:
            store.close()
            raise
    return core


def needs_writer(request: Request) -> bool:
    """Whether serving ``request`` appends: writes, deletes, and every audited read."""
    if request.operation == "list":
        return False
    path = request.path.lstrip("/")
    if request.operation == "read" and path.startswith(_READER_PATHS):
        return False
    return not path.startswith("sys/audit-hash/")
