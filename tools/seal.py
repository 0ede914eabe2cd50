"""A server's seal: uninitialised, sealed or unsealed, as Vault's.

``init`` makes a root key, splits it into shares (Shamir over GF(256), ``eventstore.shamir``)
and creates the store's keyring sealed by it, with the root token as the store's first
``token.created``; nothing of the key is kept. ``unseal`` gathers shares up to the
threshold; the key they make is believed only once it opens the keyring (AES-GCM
authenticates it), and only then is the store opened and served. ``seal`` closes the
store and forgets the key. The share count and threshold are not secret: a store on
files keeps them in ``seal.json`` beside the log (a store the embedded CLI created has
none: its key file is its one share).

With ``seal "pkcs11"`` (``hsm``) the root key is instead sealed by an AES key that lives
in the HSM and is never extractable, and kept so wrapped in ``seal.json``: the server
unseals itself whenever the HSM is there ("auto-unseal": at start, after init, and every
``AUTO_UNSEAL_EVERY`` while sealed for want of it, but not after ``vault operator seal``),
and init hands out *recovery* key shares instead of unseal key shares, as Vault does. A
recovery key cannot open the store: the HSM must be there; its shares unseal a server that
an operator sealed (the key they make is checked against the HSM-sealed copy). Without the
HSM, or with it lacking the key, the server stays sealed and says why.

A store in memory keeps its keyring sealed in memory while the server is sealed, so the
log survives a seal and an unseal; the server holds ``server.lock`` on a store on files
for as long as it runs, sealed or not, so no second server serves it.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends import Core, InvalidRequestError, Request, Session
from backends.sys import cluster_uuid, health, seal_status
from backends.token import issue
from eventstore import (
    HsmUnavailableError,
    Keyring,
    MemoryStorage,
    SealError,
    StoreError,
    UnsealError,
    new_key,
)
from eventstore.files import write_atomically
from eventstore.keyring import KEYRING_FILE
from eventstore.lock import WriterLock
from eventstore.shamir import MAX_SHARES, Unsealing, decode_share, split_key
from projections import MountCreated, Store
from projections.store import new_id

if TYPE_CHECKING:
    from eventstore.hsm import Hsm, HsmSealer

SEAL_FILE = "seal.json"
AUTO_UNSEAL_EVERY = 5.0  # seconds between tries while the HSM is missing
SERVER_LOCK = "server.lock"
CUBBYHOLE = ("cubbyhole/", "cubbyhole", "per-token private secret storage")


class Seal:
    """The seal of one server's store; ``core`` is None unless unsealed. ``hsm``: the
    seal is ``pkcs11``, its root key sealed by the HSM's key ``hsm.config.key_label``."""

    def __init__(
        self,
        path: Path | None,
        make_core: Callable[[Store], Core],
        *,
        hsm: Hsm | None = None,
    ) -> None:
        self.path, self.make_core, self.hsm = path, make_core, hsm
        self.core: Core | None = None
        self.lock = threading.RLock()
        self.sealed_by_operator = False  # no auto-unseal until unsealed by hand
        self.why_sealed = ""  # what stopped the last auto-unseal
        self._unsealing: Unsealing | None = None
        self._nonce = ""
        self._memory = MemoryStorage()
        self._sealed_keyring: bytes | None = None  # a store in memory, while sealed
        self._config: bytes | None = None  # a store in memory's seal configuration
        self._root_key = b""  # a store in memory's, while unsealed
        self._guard: WriterLock | None = None
        if path is not None:
            self._hold(path)

    def _hold(self, directory: Path) -> None:
        """Hold ``server.lock`` in ``directory`` for the server's life: no second one."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._guard = WriterLock(directory, SERVER_LOCK)
        self._guard.acquire(0)

    @property
    def kind(self) -> str:
        """The seal's type, as ``seal-status`` names it."""
        return "pkcs11" if self.hsm is not None else "shamir"

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
        """``(shares, threshold)`` (of the recovery key for ``pkcs11``); (0, 0) before init."""
        if not self.initialized:
            return 0, 0
        config = self.config()
        return config.shares, config.threshold

    def config(self) -> SealConfig:
        """The seal's configuration as saved (a store the embedded CLI created has none:
        its key file is its one share)."""
        raw = self._saved_config()
        return SealConfig.parse(raw, self._where) if raw is not None else SealConfig()

    @property
    def _where(self) -> str:
        return str(self.path / SEAL_FILE) if self.path is not None else "the seal's shape"

    def _saved_config(self) -> bytes | None:
        if self.path is None:
            return self._config
        try:
            return (self.path / SEAL_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self._where}: {exc.strerror}") from None

    def _save_config(self, raw: bytes) -> None:
        if self.path is None:
            self._config = raw
        else:
            write_atomically(self.path / SEAL_FILE, raw)

    @property
    def storage_type(self) -> str:
        """What ``seal-status`` names the storage."""
        return "inmem" if self.path is None else "file"

    def status(self) -> dict[str, Any]:
        shares, threshold = self.shape()
        storage = self.storage_type
        core = self.core
        kind, recovery = self.kind, self.hsm is not None
        if core is not None:
            cluster_id = cluster_uuid(core.store.keyring.store_id)
            return seal_status(
                storage,
                t=threshold,
                n=shares,
                cluster_id=cluster_id,
                seal_type=kind,
                recovery_seal=recovery,
            )
        progress = self._unsealing.progress if self._unsealing is not None else 0
        return seal_status(
            storage,
            t=threshold,
            n=shares,
            initialized=self.initialized,
            progress=progress,
            nonce=self._nonce if progress else "",
            seal_type=kind,
            recovery_seal=recovery,
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
        """Initialise: the shares (hex and base64) and the root token, said once; with an
        HSM, recovery shares, and the server unsealed at once."""
        with self.lock:
            if self.initialized:
                raise InvalidRequestError("Vault is already initialized")
            if self.hsm is not None:
                return self._init_with_hsm(data, root_token)
            shares = _count(data, "secret_shares")
            threshold = _count(data, "secret_threshold")
            _check_shape(shares, threshold)
            root_key = new_key()
            keys = split_key(root_key, shares, threshold)
            config = SealConfig("shamir", shares, threshold)
            token = self._initialise(root_key, config, root_token)
            return {
                "keys": [key.hex() for key in keys],
                "keys_base64": [base64.b64encode(key).decode() for key in keys],
                "root_token": token,
            }

    def _init_with_hsm(self, data: dict[str, Any], root_token: str) -> dict[str, Any]:
        assert self.hsm is not None
        shares = _count(data, "recovery_shares")
        threshold = _count(data, "recovery_threshold")
        _check_shape(shares, threshold, "recovery ")
        root_key, recovery_key = new_key(), new_key()
        sealer = self._hsm_sealer(create=True)
        config = SealConfig(
            "pkcs11",
            shares,
            threshold,
            root_key=sealer.seal(root_key, _ROOT_KEY),
            recovery_key=sealer.seal(recovery_key, _RECOVERY_KEY),
            key_label=self.hsm.config.key_label,
        )
        keys = split_key(recovery_key, shares, threshold)
        token = self._initialise(root_key, config, root_token)
        store = self._open(root_key)
        if store is not None:
            self._serve(store)
        return {
            "keys": [],
            "keys_base64": [],
            "recovery_keys": [key.hex() for key in keys],
            "recovery_keys_base64": [base64.b64encode(key).decode() for key in keys],
            "root_token": token,
        }

    def _initialise(self, root_key: bytes, config: SealConfig, root_token: str) -> str:
        """Create the store sealed by ``root_key``; the root token."""
        store = self._create(root_key, config.to_json())
        try:
            token = _first_events(store, self.make_core(store), root_token)
            store.flush()
            self._created(store, root_key)
        finally:
            store.close()
        return token

    def _hsm_sealer(self, *, create: bool = False) -> HsmSealer:
        """The HSM's sealer of the seal's key; ``InvalidRequestError`` if the token lacks
        it (and may not make it), ``HsmUnavailableError`` if the HSM is not there."""
        assert self.hsm is not None
        label = self.hsm.config.key_label
        if not self.hsm.has_key(label):
            if not (create and self.hsm.config.generate_key):
                raise InvalidRequestError(
                    f'the HSM has no key "{label}" (set generate_key = "true" to create it)'
                )
            self.hsm.generate(label)
        return self.hsm.sealer(label)

    # ---- auto-unseal -----------------------------------------------------------------------

    def auto_unseal(self) -> str:
        """Unseal with the HSM if it can be done now; "" once unsealed, else why not (also
        kept in ``why_sealed``). Nothing is tried before init or after an operator seal."""
        with self.lock:
            if self.core is not None or self.standby:
                return ""
            if self.sealed_by_operator or not self.initialized:
                return self.why_sealed
            try:
                config = self._config_of_this_kind()
                if self.hsm is None:
                    return ""  # Shamir's: unsealed by hand
                store = self._open(self._unwrapped(config).root_key)
            except (HsmUnavailableError, UnsealError, InvalidRequestError) as exc:
                self.why_sealed = str(exc)
                return self.why_sealed
            self.why_sealed = ""
            if store is not None:
                self._serve(store)
            return ""

    def _config_of_this_kind(self) -> SealConfig:
        """The saved config; ``InvalidRequestError`` if this server's seal is another."""
        config = self.config()
        if config.type != self.kind:
            raise InvalidRequestError(
                f'this store was initialised with seal "{config.type}"; the server is '
                f'configured with seal "{self.kind}" (seal migration is not supported)'
            )
        return config

    def _unwrapped(self, config: SealConfig) -> SealConfig:
        """``config`` with its root and recovery keys opened by the HSM."""
        sealer = self._hsm_sealer()
        try:
            return SealConfig(
                config.type,
                config.shares,
                config.threshold,
                root_key=sealer.open(config.root_key, _ROOT_KEY),
                recovery_key=sealer.open(config.recovery_key, _RECOVERY_KEY),
                key_label=config.key_label,
            )
        except SealError:
            raise UnsealError(
                f"the HSM's key \"{config.key_label}\" does not open this store's root key"
            ) from None

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
                store = self._open(self._root_key_from(key))
            except UnsealError as exc:
                raise InvalidRequestError(str(exc)) from None
            self.sealed_by_operator = False
            if store is not None:
                self._serve(store)
            return self.status()

    def _root_key_from(self, key: bytes) -> bytes:
        """The root key the shares' key stands for: itself, or (``pkcs11``) the HSM's
        copy once the recovery key it makes is the one init handed out."""
        config = self._config_of_this_kind()
        if self.hsm is None:
            return key
        unwrapped = self._unwrapped(config)
        if not hmac.compare_digest(key, unwrapped.recovery_key):
            raise InvalidRequestError("the recovery key shares do not make this store's key")
        return unwrapped.root_key

    def _serve(self, store: Store) -> None:
        """Serve ``store`` from now on, once what opening a writer runs has run."""
        try:
            core = self.make_core(store)
            core.maintain()
        except BaseException:
            store.close()
            raise
        self.core = core

    def _create(self, root_key: bytes, config: bytes) -> Store:
        """A new store, its keyring sealed by ``root_key``, the seal's config saved."""
        self._save_config(config)
        if self.path is None:
            return Store.in_memory(self._memory, Keyring.create())
        return Store.open(self.path, root_key, write=True, lock_timeout=0)

    def _created(self, store: Store, root_key: bytes) -> None:
        """After init: a store in memory keeps its keyring sealed."""
        if self.path is None:
            self._sealed_keyring = store.keyring.to_bytes(root_key)

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
            self.sealed_by_operator = True
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


_ROOT_KEY = "vaultlog root key"  # associated data of the HSM-sealed root key
_RECOVERY_KEY = "vaultlog recovery key"


@dataclass(frozen=True)
class SealConfig:
    """The seal as saved beside the store (not secret: the keys in it are sealed by the
    HSM). ``shares``/``threshold``: of the unseal key, or (``pkcs11``) the recovery key."""

    type: str = "shamir"
    shares: int = 1  # the embedded default: one key, in a file
    threshold: int = 1
    root_key: bytes = b""  # pkcs11: sealed by the HSM's key (opened, in ``_unwrapped``'s)
    recovery_key: bytes = b""
    key_label: str = ""

    def to_json(self) -> bytes:
        if self.type == "shamir":
            config: dict[str, Any] = {"secret_shares": self.shares}
            config["secret_threshold"] = self.threshold
        else:
            config = {"recovery_shares": self.shares, "recovery_threshold": self.threshold}
            config["key_label"] = self.key_label
            config["root_key"] = base64.b64encode(self.root_key).decode()
            config["recovery_key"] = base64.b64encode(self.recovery_key).decode()
        return json.dumps({"type": self.type, **config}).encode()

    @classmethod
    def parse(cls, raw: bytes, where: str) -> SealConfig:
        try:
            config = json.loads(raw)
            if config.get("type", "shamir") == "shamir":
                return cls("shamir", int(config["secret_shares"]), int(config["secret_threshold"]))
            return cls(
                str(config["type"]),
                int(config["recovery_shares"]),
                int(config["recovery_threshold"]),
                root_key=base64.b64decode(config["root_key"]),
                recovery_key=base64.b64decode(config["recovery_key"]),
                key_label=str(config.get("key_label", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
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


def _check_shape(shares: int, threshold: int, what: str = "") -> None:
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
        raise InvalidRequestError(f"invalid {what}seal configuration: {problem}")


def _true(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1")
