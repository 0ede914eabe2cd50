"""A server's seal: uninitialised, sealed or unsealed, as Vault's.

``init`` makes a root key, splits it into shares (Shamir over GF(256), ``eventstore.shamir``)
and creates the store's keyring sealed by it, with the root token as the store's first
``token.created``; nothing of the key is kept. ``unseal`` gathers shares up to the
threshold; the key they make is believed only once it opens the keyring (AES-GCM
authenticates it), and only then is the store opened and served. ``seal`` closes the
store and forgets the key. The share count and threshold are not secret: a store on
files keeps them in ``seal.json`` beside the log (a store the embedded CLI created has
none: its key file is its one share).

A store in memory keeps its keyring sealed in memory while the server is sealed, so the
log survives a seal and an unseal; the server holds ``server.lock`` on a store on files
for as long as it runs, sealed or not, so no second server serves it.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends import Core, InvalidRequestError, Request, Session
from backends.sys import cluster_uuid, health, seal_status
from backends.token import issue
from eventstore import Keyring, MemoryStorage, StoreError, UnsealError, new_key
from eventstore.files import write_atomically
from eventstore.keyring import KEYRING_FILE
from eventstore.lock import WriterLock
from eventstore.shamir import MAX_SHARES, Unsealing, decode_share, split_key
from projections import MountCreated, Store
from projections.store import new_id

SEAL_FILE = "seal.json"
SERVER_LOCK = "server.lock"
CUBBYHOLE = ("cubbyhole/", "cubbyhole", "per-token private secret storage")


class Seal:
    """The seal of one server's store; ``core`` is None unless unsealed."""

    def __init__(self, path: Path | None, make_core: Callable[[Store], Core]) -> None:
        self.path, self.make_core = path, make_core
        self.core: Core | None = None
        self.lock = threading.RLock()
        self._unsealing: Unsealing | None = None
        self._nonce = ""
        self._memory = MemoryStorage()
        self._sealed_keyring: bytes | None = None  # a store in memory, while sealed
        self._shape = (0, 0)  # shares and threshold of a store in memory
        self._root_key = b""  # a store in memory's, while unsealed
        self._guard: WriterLock | None = None
        if path is not None:
            self._hold(path)

    def _hold(self, directory: Path) -> None:
        """Hold ``server.lock`` in ``directory`` for the server's life: no second one."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._guard = WriterLock(directory, SERVER_LOCK)
        self._guard.acquire(0)

    # ---- what it is ----------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        if self.path is None:
            return self._sealed_keyring is not None or self.core is not None
        return (self.path / KEYRING_FILE).exists()

    @property
    def sealed(self) -> bool:
        return self.core is None

    @property
    def standby(self) -> bool:
        """Unsealed but not serving: another node is active (``tools.cluster``)."""
        return False

    def leader_address(self) -> str:
        """Where the active node listens, for a standby to send requests to."""
        return ""

    def leader(self) -> dict[str, Any]:
        """``sys/leader``'s answer."""
        return {"ha_enabled": False}

    def step_down(self) -> None:
        """Leave the active role to another node: a server alone stays active, as Vault."""

    def shape(self) -> tuple[int, int]:
        """``(shares, threshold)``; (0, 0) before init."""
        if not self.initialized:
            return 0, 0
        if self.path is None:
            return self._shape
        try:
            raw = (self.path / SEAL_FILE).read_bytes()
        except FileNotFoundError:
            return 1, 1  # the embedded default: one key, in a file
        except OSError as exc:
            raise StoreError(f"cannot read {self.path / SEAL_FILE}: {exc.strerror}") from None
        return read_shape(raw, str(self.path / SEAL_FILE))

    @property
    def storage_type(self) -> str:
        """What ``seal-status`` names the storage."""
        return "inmem" if self.path is None else "file"

    def status(self) -> dict[str, Any]:
        shares, threshold = self.shape()
        storage = self.storage_type
        core = self.core
        if core is not None:
            cluster_id = cluster_uuid(core.store.keyring.store_id)
            return seal_status(storage, t=threshold, n=shares, cluster_id=cluster_id)
        progress = self._unsealing.progress if self._unsealing is not None else 0
        return seal_status(
            storage,
            t=threshold,
            n=shares,
            initialized=self.initialized,
            progress=progress,
            nonce=self._nonce if progress else "",
        )

    def health(self) -> dict[str, Any]:
        core = self.core
        if core is None:
            return health(initialized=self.initialized, sealed=True)
        return health(
            initialized=True, sealed=False, cluster_id=cluster_uuid(core.store.keyring.store_id)
        )

    # ---- init ----------------------------------------------------------------------------

    def init(self, data: dict[str, Any], *, root_token: str = "") -> dict[str, Any]:
        """Initialise: the shares (hex and base64) and the root token, said once."""
        with self.lock:
            if self.initialized:
                raise InvalidRequestError("Vault is already initialized")
            shares = _count(data, "secret_shares")
            threshold = _count(data, "secret_threshold")
            _check_shape(shares, threshold)
            root_key = new_key()
            keys = split_key(root_key, shares, threshold)
            store = self._create(root_key, shares, threshold)
            try:
                token = _first_events(store, self.make_core(store), root_token)
                store.flush()
                self._created(store, root_key, shares, threshold)
            finally:
                store.close()
            return {
                "keys": [key.hex() for key in keys],
                "keys_base64": [base64.b64encode(key).decode() for key in keys],
                "root_token": token,
            }

    # ---- unseal and seal -----------------------------------------------------------------

    def unseal(self, data: dict[str, Any]) -> dict[str, Any]:
        """Count one share (or ``reset``); open the store once the threshold is reached."""
        with self.lock:
            if not self.initialized:
                raise InvalidRequestError("Vault is not initialized")
            if self.core is not None:
                return self.status()
            if _true(data.get("reset")):
                self._unsealing = None
                return self.status()
            given = data.get("key")
            if not given or not isinstance(given, str):
                raise InvalidRequestError(
                    "'key' must be specified in request body as JSON, or 'reset' set to true"
                )
            try:
                share = decode_share(given)
            except UnsealError:
                raise InvalidRequestError("'key' must be a valid hex or base64 string") from None
            _, threshold = self.shape()
            if self._unsealing is None:
                self._unsealing = Unsealing(threshold)
                self._nonce = str(uuid.uuid4())
            try:
                key = self._unsealing.add(share)
            except UnsealError as exc:
                self._unsealing = None
                raise InvalidRequestError(str(exc)) from None
            if key is None:
                return self.status()
            self._unsealing = None
            try:
                store = self._open(key)
            except UnsealError as exc:
                raise InvalidRequestError(str(exc)) from None
            if store is not None:
                self._serve(store)
            return self.status()

    def _serve(self, store: Store) -> None:
        """Serve ``store`` from now on, once what opening a writer runs has run."""
        try:
            core = self.make_core(store)
            core.maintain()
        except BaseException:
            store.close()
            raise
        self.core = core

    def _create(self, root_key: bytes, shares: int, threshold: int) -> Store:
        """A new store, its keyring sealed by ``root_key``, the seal's shape saved."""
        if self.path is None:
            return Store.in_memory(self._memory, Keyring.create())
        write_atomically(self.path / SEAL_FILE, shape_json(shares, threshold))
        return Store.open(self.path, root_key, write=True, lock_timeout=0)

    def _created(self, store: Store, root_key: bytes, shares: int, threshold: int) -> None:
        """After init: a store in memory keeps its keyring sealed, and its shape."""
        if self.path is None:
            self._sealed_keyring = store.keyring.to_bytes(root_key)
            self._shape = (shares, threshold)

    def _open(self, key: bytes) -> Store | None:
        """The store ``key`` opens, to serve (None: this node stands by)."""
        if self.path is None:
            assert self._sealed_keyring is not None
            keyring = Keyring.from_bytes(self._sealed_keyring, key)
            self._root_key = key
            return Store.in_memory(self._memory, keyring)
        return Store.open(self.path, key, write=True, lock_timeout=0)

    def seal(self) -> None:
        """Close the store and forget its keys (sealing a sealed server does nothing)."""
        with self.lock:
            core, self.core = self.core, None
            if core is None:
                return
            with core.store.lock:
                try:
                    core.store.flush()
                finally:
                    if self.path is None:
                        self._sealed_keyring = core.store.keyring.to_bytes(self._root_key)
                        self._root_key = b""
                    core.store.close()

    def close(self) -> None:
        self.seal()
        if self._guard is not None:
            self._guard.release()


def shape_json(shares: int, threshold: int) -> bytes:
    """The seal's shape as saved (not secret)."""
    return json.dumps(
        {"type": "shamir", "secret_shares": shares, "secret_threshold": threshold}
    ).encode()


def read_shape(raw: bytes, where: str) -> tuple[int, int]:
    """``(shares, threshold)`` of a saved shape."""
    try:
        config = json.loads(raw)
        return int(config["secret_shares"]), int(config["secret_threshold"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"cannot read {where}: {exc}") from None


def _first_events(store: Store, core: Core, root_token: str) -> str:
    """The root token and the cubbyhole mount of a new server store; the root token."""
    session = Session(store, Request("write", "sys/init", actor="vaultlog"), core.backends)
    auth = issue(
        session,
        policies=["root"],
        path="auth/token/root",
        display="root",
        ttl=0,
        renewable=False,
        token=root_token,
    )
    if store.state.mounts.at(CUBBYHOLE[0]) is None:
        path, backend_type, description = CUBBYHOLE
        session.stage(
            MountCreated(
                actor="vaultlog",
                request_id=session.request.request_id,
                mount_id=new_id(),
                path=path,
                backend_type=backend_type,
                description=description,
            )
        )
    session.commit()
    return str(auth["client_token"])


def _count(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number") from None


def _check_shape(shares: int, threshold: int) -> None:
    problem = ""
    if shares < 1:
        problem = "shares must be at least one"
    elif threshold < 1:
        problem = "threshold must be at least one"
    elif threshold > shares:
        problem = "threshold cannot be larger than shares"
    elif shares > 1 and threshold == 1:
        problem = "threshold must be greater than one for multiple shares"
    elif shares > MAX_SHARES:
        problem = f"shares must be at most {MAX_SHARES}"
    if problem:
        raise InvalidRequestError(f"invalid seal configuration: {problem}")


def _true(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1")
