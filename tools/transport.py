"""Transports: how a front door's requests reach a Core. One method, ``handle``.

The CLI talks to a ``Transport`` and never to a store: ``EmbeddedTransport`` opens the
store in this process for each request; an HTTP transport (server mode) is the other.
"""

from __future__ import annotations

import os
from typing import Protocol

from backends import Core, Registry, Request, Response, WriterNeeded
from eventstore import StoreError
from projections import Store
from projections.store import SNAPSHOT_EVERY
from tools.config import StoreLocation

# Requests a reader answers (no lock, no audit record): the rest need the writer, and a
# request that turns out to change the store is served again by one.
_READER_PATHS = ("sys/mounts", "sys/leases", "sys/key-status", "sys/vaultlog/")


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
            try:
                return self._serve(request, write=False)
            except WriterNeeded:
                pass
        return self._serve(request, write=True)

    def _serve(self, request: Request, *, write: bool) -> Response:
        store = Store.open(
            self.location.directory,
            self.location.unseal_key,
            write=write,
            lock_timeout=self.lock_timeout,
            snapshot_every=self.snapshot_every,
        )
        try:
            core = Core(store, self.registry)
            if write:
                core.maintain()
            return core.handle(request)
        finally:
            store.close()


def needs_writer(request: Request) -> bool:
    """Whether serving ``request`` appends: writes, deletes, and every audited read."""
    if request.operation == "list":
        return False
    path = request.path.lstrip("/")
    if request.operation == "read" and path.startswith(_READER_PATHS):
        return False
    return not path.startswith("sys/audit-hash/")
