"""``vault server``: one store, one Core, Vault's HTTP API (``tools.api``) served by cheroot.

Requests are served on a bounded pool of threads, so while one request waits for the disk
the others append behind it and one sync makes them all durable (group commit). A timer
revokes expired leases and retries failed revocations. SIGTERM and SIGINT stop the server
cleanly: no new requests, the answers under way finish, the store is closed.
"""

from __future__ import annotations

import secrets
import signal
import string
import sys
import threading
from dataclasses import dataclass
from types import FrameType

from backends import Core, Registry
from backends.auth import RootToken
from backends.version import VAULT_VERSION
from eventstore import VaultlogError
from projections import Store
from tools.api import Api
from tools.config import locate_store
from tools.server_config import Listener, ServerConfig

EXPIRE_EVERY = 1.0  # seconds between the timer's runs
THREADS = 32  # requests served at once; more wait in the accept queue
ACCEPT_QUEUE = 256  # connections accepted and waiting for a thread, at most


class ServerError(VaultlogError):
    """The server cannot start; one line says why."""


def new_root_token() -> str:
    """A token in OpenBao's format (``s.`` and 24 random base-62 characters)."""
    alphabet = string.ascii_letters + string.digits
    return "s." + "".join(secrets.choice(alphabet) for _ in range(24))


@dataclass(frozen=True)
class Started:
    """What the banner shows."""

    config: ServerConfig
    root_token: str
    dev: bool
    unseal_key_source: str


def open_store(config: ServerConfig) -> tuple[Store, str]:
    """The store the configuration names, opened for writing (refused at once when another
    process holds it), and where its unseal key came from."""
    if config.path is None:
        return Store.in_memory(), ""
    location = locate_store(directory=config.path)
    return Store.open(config.path, location.unseal_key, write=True, lock_timeout=0), str(
        location.key_source
    )


def serve(config: ServerConfig, *, dev: bool, root_token: str = "") -> None:
    """Serve until SIGTERM or SIGINT."""
    from cheroot import wsgi

    root_token = root_token or new_root_token()
    store, key_source = open_store(config)
    try:
        core = Core(
            store,
            Registry(),
            RootToken(root_token),
            lease_ttls=(config.default_lease_ttl, config.max_lease_ttl),
        )
        core.maintain()
        listener = config.listener
        server = wsgi.Server(
            (listener.host, listener.port),
            Api(core, max_request_size=listener.max_request_size),
            numthreads=THREADS,
            request_queue_size=ACCEPT_QUEUE,
            accepted_queue_size=ACCEPT_QUEUE,
            timeout=listener.read_timeout,
            server_name="vaultlog",
        )
        server.max_request_body_size = 0  # the Api answers 413 itself, in Vault's shape
        if listener.tls:
            server.ssl_adapter = _tls(listener)
        try:
            server.prepare()
        except OSError as exc:
            where = f"{listener.host}:{listener.port}"
            raise ServerError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        _print_banner(Started(config, root_token, dev, key_source))
        stopping = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            if not stopping.is_set():
                stopping.set()
                threading.Thread(target=server.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        timer = threading.Thread(target=_expire_on_timer, args=(core, stopping), daemon=True)
        timer.start()
        server.serve()
        stopping.set()
        server.stop()
        timer.join(timeout=10)
        print("==> Vault shutdown triggered", flush=True)
    finally:
        store.close()


def _tls(listener: Listener) -> object:
    import ssl

    from cheroot.ssl.builtin import BuiltinSSLAdapter

    try:
        adapter = BuiltinSSLAdapter(listener.tls_cert_file, listener.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ServerError(f"cannot load the TLS certificate or key: {reason}") from None
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter


def _expire_on_timer(core: Core, stopping: threading.Event) -> None:
    while not stopping.wait(EXPIRE_EVERY):
        try:
            core.expire()
        except VaultlogError as exc:  # said, and tried again at the next tick
            print(f"[ERROR] expiration: {exc}", file=sys.stderr, flush=True)


def _print_banner(started: Started) -> None:
    config, listener = started.config, started.config.listener
    tls = "enabled" if listener.tls else "disabled"
    storage = "inmem" if config.path is None else f"file ({config.path})"
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
        lines.append("Unseal Key: none (dev mode: the keys live in this process only)")
    else:
        lines.append(f"Unseal Key: {started.unseal_key_source}")
    lines += [f"Root Token: {started.root_token}", ""]
    if started.dev:
        lines += ["Development mode should NOT be used in production installations!", ""]
    print("\n".join(lines), flush=True)
