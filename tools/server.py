"""``vault server``: one store, one Core, Vault's HTTP API (``tools.api``) served by uvicorn.

uvicorn (with httptools and uvloop) runs the event loop; the store is served on it, one
request after another, and each answer waits for the disk without holding anything, so
while one sync runs the next requests append behind it and one sync makes them all
durable (group commit). Requests that may wait on AWS run on worker threads. A timer
revokes expired leases and retries failed revocations. SIGTERM and SIGINT stop the server
cleanly: no new requests, the answers under way finish, the store is closed.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from backends import Core, Registry
from backends.auth import TokenAuth
from backends.version import VAULT_VERSION
from eventstore import VaultlogError
from eventstore.hsm import Hsm
from eventstore.hsm import configure as configure_hsm
from projections import Store
from tools.api import Api
from tools.cluster import PostgresSeal
from tools.progress import progress_on_stderr
from tools.seal import AUTO_UNSEAL_EVERY, Seal
from tools.server_config import Listener, ServerConfig

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXPIRE_EVERY = 1.0  # seconds between the timer's runs
MAX_CONNECTIONS = 1024  # open connections and requests at once; beyond, 503
ACCEPT_QUEUE = 256  # connections the kernel holds before accepting them
KEEP_ALIVE = 30  # seconds an idle keep-alive connection stays open


class ServerError(VaultlogError):
    """The server cannot start; one line says why."""


@dataclass(frozen=True)
class Started:
    """What the banner shows."""

    config: ServerConfig
    dev: bool
    root_token: str = ""  # dev mode's: a real server's is said once, by init
    unseal_key: str = ""


def serve(config: ServerConfig, *, dev: bool, root_token: str = "") -> None:
    """Serve until SIGTERM or SIGINT. A dev server is initialised with one key share and
    unsealed at once; any other starts sealed (or uninitialised) and waits for
    ``vault operator init`` and ``unseal``."""
    registry = Registry()

    def make_core(store: Store) -> Core:
        return Core(
            store,
            registry,
            TokenAuth(registry),
            lease_ttls=(config.default_lease_ttl, config.max_lease_ttl),
        )

    hsm = configure_hsm(config.hsm)
    seal = _seal(config, make_core, hsm if config.auto_unseal else None)
    try:
        started = Started(config, dev)
        if dev:
            shape = {"secret_shares": 1, "secret_threshold": 1}
            shape.update(recovery_shares=1, recovery_threshold=1)
            keys = seal.init(shape, root_token=root_token)
            if seal.sealed:
                seal.unseal({"key": keys["keys_base64"][0]})
            key = (keys["keys_base64"] or keys["recovery_keys_base64"])[0]
            started = Started(config, dev, keys["root_token"], key)
        else:
            with progress_on_stderr():  # the replay of a large store, at a terminal
                _auto_unseal(seal)
        listener = config.listener
        api = Api(
            seal, max_request_size=listener.max_request_size, read_timeout=listener.read_timeout
        )
        settings = uvicorn.Config(
            api,
            loop="uvloop",
            http=_protocol(listener.read_timeout),
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,  # no proxy is trusted to name the client
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=10,
            limit_concurrency=MAX_CONNECTIONS,
            backlog=ACCEPT_QUEUE,
            ssl_certfile=listener.tls_cert_file or None,
            ssl_keyfile=listener.tls_key_file or None,
        )
        try:
            settings.load()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ServerError(f"cannot load the TLS certificate or key: {reason}") from None
        listening = _bind(listener)
        stopping = threading.Event()
        timer = threading.Thread(target=_expire_on_timer, args=(seal, stopping), daemon=True)
        timer.start()
        if isinstance(seal, PostgresSeal):
            threading.Thread(target=seal.run, args=(stopping,), daemon=True).start()
        try:
            _Server(settings, started).run([listening])
        finally:
            stopping.set()
            timer.join(timeout=30)
            listening.close()
        print("==> Vault shutdown triggered", flush=True)
    finally:
        seal.close()


def _seal(config: ServerConfig, make_core: Callable[[Store], Core], hsm: Hsm | None) -> Seal:
    if config.storage != "postgresql":
        return Seal(config.path, make_core, hsm=hsm)
    from eventstore.postgres import PostgresStorage

    try:
        return PostgresSeal(
            PostgresStorage(config.connection_url),
            make_core,
            cache=config.path,
            ha=config.ha_enabled,
            api_addr=config.advertised,
            hsm=hsm,
        )
    except OSError as exc:
        raise ServerError(f"cannot use the cache {config.path}: {exc.strerror}") from None


def _bind(listener: Listener) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((listener.host, listener.port))
        listening.listen(ACCEPT_QUEUE)
    except OSError as exc:
        listening.close()
        where = f"{listener.host}:{listener.port}"
        raise ServerError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return listening


class _Server(uvicorn.Server):
    """uvicorn's, printing Vault's banner once it listens, and stopping on SIGTERM or
    SIGINT without dying of the signal afterwards (uvicorn raises it again once stopped):
    the store is closed first, and the server exits 0, as Vault's does."""

    def __init__(self, config: uvicorn.Config, started: Started) -> None:
        super().__init__(config)
        self._banner = started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            _print_banner(self._banner)


def as_get_list(data: bytes) -> bytes:
    """``LIST /v1/p HTTP/1.1...`` as ``GET /v1/p?list=true HTTP/1.1...``, which means the
    same to Vault: httptools knows no LIST method, and hvac sends it."""
    end = data.find(b" ", 5)
    if end < 0:
        return data  # not a whole request line: the parser refuses it as it stands
    target = data[5:end]
    joiner = b"&" if b"?" in target else b"?"
    return b"GET " + target + joiner + b"list=true" + data[end:]


def _protocol(read_timeout: float) -> type:
    """uvicorn's httptools protocol with a deadline for each request's line and headers
    (a client that connects and stalls, or trickles its headers, is dropped after
    ``read_timeout``; the body has its own, in the Api), and Vault's LIST method, taken
    when a request line opens what arrives (clients send one request at a time)."""

    class Protocol(HttpToolsProtocol):  # type: ignore[misc]
        _deadline: Any = None
        _between_messages = True

        def data_received(self, data: bytes) -> None:
            if self._between_messages and data[:5] == b"LIST ":
                data = as_get_list(data)
            super().data_received(data)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._between_messages = True

        def eof_received(self) -> bool:  # type: ignore[override]
            """A client that half-closes after its request still gets its answer."""
            self._eof = True
            return self.cycle is not None and not self.cycle.response_complete

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if getattr(self, "_eof", False) and not self.transport.is_closing():
                self.transport.close()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(read_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._between_messages = False
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Protocol


def _expire_on_timer(seal: Seal, stopping: threading.Event) -> None:
    """Expire leases while unsealed; while sealed for want of the HSM, try again to
    auto-unseal every ``AUTO_UNSEAL_EVERY``."""
    tried = time.monotonic()
    while not stopping.wait(EXPIRE_EVERY):
        try:
            with seal.lock:
                if seal.core is not None:
                    seal.core.expire()
                elif seal.why_sealed and time.monotonic() - tried >= AUTO_UNSEAL_EVERY:
                    tried = time.monotonic()
                    _auto_unseal(seal)
        except VaultlogError as exc:  # said, and tried again at the next tick
            print(f"[ERROR] expiration: {exc}", file=sys.stderr, flush=True)


def _auto_unseal(seal: Seal) -> None:
    """Unseal by the HSM if the seal is ``pkcs11``; say why not, once per reason."""
    before = seal.why_sealed
    why = seal.auto_unseal()
    if why and why != before:
        print(
            f"[ERROR] core: auto-unseal failed, the server stays sealed: {why}",
            file=sys.stderr,
            flush=True,
        )
    elif seal.hsm is not None and seal.core is not None:
        print('[INFO]  core: unsealed with the HSM (seal "pkcs11")', file=sys.stderr, flush=True)


def _print_banner(started: Started) -> None:
    config, listener = started.config, started.config.listener
    tls = "enabled" if listener.tls else "disabled"
    storage = {
        "inmem": "inmem",
        "file": f"file ({config.path})",
        "postgresql": f"postgresql (HA {'available' if config.ha_enabled else 'disabled'})",
    }[config.storage]
    lines = [
        "==> Vault server configuration:",
        "",
        f"             Api Address: {listener.url}",
        f'              Listener 1: tcp (addr: "{listener.host}:{listener.port}", '
        f'max_request_size: "{listener.max_request_size}", tls: "{tls}")',
        f"                 Storage: {storage}",
        f"                 Version: Vault v{VAULT_VERSION} (vaultlog)",
        "",
        "==> Vault server started! Log data will stream in below:",
        "",
    ]
    if started.dev:
        lines += [
            "WARNING! dev mode is enabled! In this mode, Vault runs entirely in-memory",
            "and starts unsealed. Nothing written survives the server.",
            "",
        ]
    lines += [
        "You may need to set the following environment variable:",
        "",
        f"    $ export VAULT_ADDR='{listener.url}'",
        "",
    ]
    if started.dev:
        lines += [
            "The unseal key and root token are displayed below in case you want to",
            "seal/unseal the Vault or re-authenticate.",
            "",
            f"Unseal Key: {started.unseal_key}",
            f"Root Token: {started.root_token}",
            "",
            "Development mode should NOT be used in production installations!",
            "",
        ]
    print("\n".join(lines), flush=True)
