"""Several servers on one PostgreSQL store: one active node, standbys that follow the log.

Every node is unsealed on its own (as Vault's). An unsealed node tries to become the one
writer: the writer's advisory lock, held on the very connection it inserts through, is
the HA lock, so a node can only append while it holds it (and the log's unique seq makes
even a mistaken second writer fail rather than fork). The active node serves, runs the
expiration timer and the lease reaper, and says where it listens in the ``leader`` row.

A standby follows the log (``LISTEN`` for each commit, and a catch-up read at least every
``FOLLOW_EVERY``) into a reader's state, so that taking over costs only the records it has
not seen; it forwards every request to the active node, or redirects (307) a client that
asks with ``X-Vault-No-Request-Forwarding``, as Vault does. Forwarding every request, reads
included, means no client reads an older state from a standby than it wrote; every answer
carries ``X-Vault-Index`` (the durable seq then, in Vault's shape) and an active node that
is asked for a newer index than it holds answers 412.

When the active node dies its session ends and PostgreSQL drops the lock; a standby takes
it within ``FOLLOW_EVERY``. An active node that loses its connection (PostgreSQL restarted)
steps down at once: its writes already fail, and it stands by until it can lock again.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backends import Core, InvalidRequestError
from backends.sys import cluster_uuid, health, seal_status
from eventstore import StoreError, StoreLockedError, UnavailableError
from eventstore.keyring import KEYRING_FILE
from projections import Store
from projections.audit import rfc3339_nano
from projections.store import new_id
from tools.seal import SEAL_FILE, Seal

if TYPE_CHECKING:  # psycopg is imported only by a server on PostgreSQL
    from eventstore.hsm import Hsm
    from eventstore.postgres import PostgresStorage

FOLLOW_EVERY = 0.25  # seconds between a standby's catch-up reads and lock attempts
STEP_AT_MOST = 0.1  # seconds: the most often a node steps, however often others commit
LEADER = "leader"  # the meta row naming the active node
HOLD_BACK = 3.0  # seconds a node that stepped down leaves the lock to the others
FORWARD_TIMEOUT = 60.0
FORWARDED = "x-vaultlog-forwarded"  # set on a forwarded request: never forwarded twice
_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class PostgresSeal(Seal):
    """The seal of one node of a store in PostgreSQL; ``ha``: stand by while another node
    is active (without it, a second node cannot unseal while the first serves)."""

    def __init__(
        self,
        storage: PostgresStorage,
        make_core: Callable[[Store], Core],
        *,
        cache: Path | None,
        ha: bool,
        api_addr: str,
        hsm: Hsm | None = None,
    ) -> None:
        super().__init__(None, make_core, hsm=hsm)
        self.storage, self.cache, self.ha, self.api_addr = storage, cache, ha, api_addr
        self.node_id = new_id()
        self._key = b""  # the root key while unsealed, active or standing by
        self._follower: Store | None = None
        self._known_initialized = False
        self._active_since = ""
        self._hold_back_until = 0.0
        self._checked = 0.0
        self._leader = ""  # the active node's api_addr, as last read
        if cache is not None:
            self._hold(cache)

    @property
    def storage_type(self) -> str:
        return "postgresql"

    @property
    def initialized(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = self.storage.meta(KEYRING_FILE) is not None
        return self._known_initialized

    def _saved_config(self) -> bytes | None:
        found = self.storage.meta(SEAL_FILE)
        return found[1] if found else None

    @property
    def standby(self) -> bool:
        return bool(self._key) and self.core is None

    def health(self) -> dict[str, Any]:
        if not self._key:
            return super().health()
        store = self.core.store if self.core is not None else self._follower
        cluster_id = cluster_uuid(store.keyring.store_id) if store is not None else ""
        return health(initialized=True, sealed=False, cluster_id=cluster_id, standby=self.standby)

    def status(self) -> dict[str, Any]:
        if self.standby and self._follower is not None:  # unsealed, as Vault says
            shares, threshold = self.shape()
            cluster_id = cluster_uuid(self._follower.keyring.store_id)
            return seal_status(
                self.storage_type,
                t=threshold,
                n=shares,
                cluster_id=cluster_id,
                seal_type=self.kind,
                recovery_seal=self.hsm is not None,
            )
        return super().status()

    # ---- init, unseal, seal ----------------------------------------------------------------

    def _create(self, root_key: bytes, config: bytes) -> Store:
        from eventstore.postgres import INIT_LOCK

        with self.storage.holding(INIT_LOCK):  # of two nodes initialising at once, one wins
            if self.storage.meta(KEYRING_FILE) is not None:
                raise InvalidRequestError("Vault is already initialized")
            # A shape left by an init that failed before the keyring was made is replaced.
            self.storage.set_meta(SEAL_FILE, config)
            return Store.open_postgres(
                self.storage, root_key, write=True, cache=self.cache, lock_timeout=5
            )

    def _open(self, key: bytes) -> Store | None:
        follower = Store.open_postgres(self.storage, key, write=False, cache=self.cache)
        self._key = key  # it opens the keyring: believed
        self._follower = follower
        if not self.ha:
            try:
                return self._take_over()
            except StoreLockedError:
                self._forget()
                raise InvalidRequestError(
                    "another server serves this store (set ha_enabled to stand by)"
                ) from None
        with contextlib.suppress(StoreLockedError, UnavailableError):
            return self._take_over()
        return None

    def _take_over(self) -> Store:
        """The writer's store, from what this node followed; ``StoreLockedError`` while
        another node is active."""
        store = Store.open_postgres(
            self.storage, self._key, write=True, cache=self.cache, follower=self._follower
        )
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        self._active_since = rfc3339_nano(time.time_ns())  # Go's form, as Vault's
        address = json.dumps({"address": self.api_addr, "node": self.node_id})
        try:
            self.storage.set_meta(LEADER, address.encode())
        except UnavailableError:
            store.close()
            raise
        return store

    def seal(self) -> None:
        with self.lock:
            core, self.core = self.core, None
            if core is not None:
                _close_flushed(core.store)
            self._forget()

    def close(self) -> None:
        super().close()
        self.storage.close()

    def _forget(self) -> None:
        self._key = b""
        if self._follower is not None:
            self._follower.close()
            self._follower = None

    def step_down(self) -> None:
        """Leave the active role to another node for ``HOLD_BACK`` seconds."""
        with self.lock:
            self._hold_back_until = time.monotonic() + HOLD_BACK
            self._stand_by("asked to step down")

    def _stand_by(self, why: str) -> None:
        core, self.core = self.core, None
        if core is None:
            return
        print(f"[INFO] core: standing by: {why}", file=sys.stderr, flush=True)
        _close_flushed(core.store)

    # ---- following the active node ---------------------------------------------------------

    def step(self) -> None:
        """One turn of the node's loop: the active node checks it still holds the lock;
        a standby catches up and tries to take over."""
        with self.lock:
            if not self._key:
                return
            core = self.core
            if core is not None:
                now = time.monotonic()
                if now - self._checked >= FOLLOW_EVERY:
                    self._checked = now
                    log = core.store.log
                    alive = getattr(log, "alive", None)
                    if alive is not None and not alive():
                        self._stand_by(f"the log failed: {getattr(log, 'broken', '')}")
                return
            try:
                if self._follower is None:
                    self._follower = Store.open_postgres(
                        self.storage, self._key, write=False, cache=self.cache
                    )
                with self._follower.lock:
                    self._follower.catch_up()
                self._leader = self._read_leader()
                if time.monotonic() < self._hold_back_until or not self.storage.writer_lock_free():
                    return
                store = self._take_over()
            except (StoreLockedError, UnavailableError):
                return
            except StoreError as exc:
                print(f"[ERROR] core: cannot follow the log: {exc}", file=sys.stderr, flush=True)
                if self._follower is not None:
                    self._follower.close()
                    self._follower = None
                return
            self._serve(store)
            print("[INFO] core: this node is active", file=sys.stderr, flush=True)

    def run(self, stopping: threading.Event) -> None:
        """Step at the commits anyone makes (at most every ``STEP_AT_MOST``: a standby
        catches up in batches, not record by record, so it leaves the cores to the active
        node), and at least every ``FOLLOW_EVERY``."""
        from eventstore.postgres import wait_for_appends

        last = 0.0
        for seq in wait_for_appends(self.storage, stopping, FOLLOW_EVERY):
            now = time.monotonic()
            if seq and now - last < STEP_AT_MOST:
                continue
            last = now
            try:
                self.step()
            except Exception as exc:  # said; the next turn tries again
                print(f"[ERROR] core: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def leader_address(self) -> str:
        """The active node's address, as last read (every step of a standby)."""
        if not self._leader or self._leader == self.api_addr:  # not yet known, or stale
            self._leader = self._read_leader()
        return "" if self._leader == self.api_addr else self._leader

    def _read_leader(self) -> str:
        try:
            found = self.storage.meta(LEADER)
        except UnavailableError:
            return ""
        return str(json.loads(found[1]).get("address", "")) if found else ""

    def leader(self) -> dict[str, Any]:
        active = self.core is not None
        data: dict[str, Any] = {"ha_enabled": self.ha, "is_self": active}
        if active:
            data["active_time"] = self._active_since
        data["leader_address"] = self.api_addr if active else self.leader_address()
        data["leader_cluster_address"] = ""
        data["performance_standby"] = False
        data["performance_standby_last_remote_wal"] = 0
        return data


def _close_flushed(store: Store) -> None:
    """Close a writer once what it was asked to write is committed, or has failed: the
    requests waiting on it are answered by that, never by the next store."""
    with store.lock:
        try:
            store.flush()
        except StoreError:
            pass  # unacknowledged writes: the next active reads what landed
        finally:
            store.close()


# ---- the index a client has seen -----------------------------------------------------------


def index_header(cluster_id: str, seq: int) -> str:
    """``X-Vault-Index`` in Vault's shape: base64 of ``{"cluster", "value"}``."""
    raw = json.dumps({"cluster": cluster_id, "value": str(seq)}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def index_asked(header: str) -> int:
    """The seq an ``X-Vault-Index`` a client echoes names (0 if none or unreadable)."""
    try:
        value = json.loads(base64.b64decode(header, validate=True)).get("value", "0")
        return int(value)
    except (ValueError, TypeError, AttributeError):
        return 0


# ---- forwarding --------------------------------------------------------------------------


_held = threading.local()  # each forwarding thread's connection to the active node
REUSE_IDLE = 10.0  # seconds a forwarding connection may idle and still be used (< keep-alive)


def _connection(leader: str) -> http.client.HTTPConnection:
    """This thread's connection to ``leader``, kept alive between requests."""
    held = getattr(_held, "connection", None)
    if held is not None:
        address, conn, used = held
        if address == leader and time.monotonic() - used < REUSE_IDLE:
            return conn  # type: ignore[no-any-return]
        conn.close()
    place = urlsplit(leader)
    connection_type = (
        http.client.HTTPSConnection if place.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection_type(place.hostname or "127.0.0.1", place.port, timeout=FORWARD_TIMEOUT)
    _held.connection = (leader, conn, time.monotonic())
    return conn


def forward(
    leader: str, method: str, target: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Send a request on to the active node at ``leader``; its status, body and headers.
    ``UnavailableError`` if it cannot be reached (never sent twice: a request that failed
    may have been served)."""
    sent = {k: v for k, v in headers.items() if k not in _HOP_HEADERS}
    sent[FORWARDED] = "1"
    if body:
        sent["content-length"] = str(len(body))
    conn = _connection(leader)
    try:
        conn.request(method, target, body=body or None, headers=sent)
        answer = conn.getresponse()
        payload = answer.read()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        _held.connection = None
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UnavailableError(f"the active node cannot be reached ({reason})") from None
    if answer.will_close:
        conn.close()
        _held.connection = None
    else:
        _held.connection = (leader, conn, time.monotonic())
    kept = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in answer.getheaders()
        if name.lower() in ("content-type", "cache-control", "x-vault-index", "location")
    ]
    return answer.status, payload, kept
