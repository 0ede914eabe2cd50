"""``vault server -config=FILE``: Vault's configuration file, HCL or JSON.

Understood: ``storage`` (or its older name ``backend``) ``"file" { path }``, ``"inmem" {}`` or
``"postgresql" { connection_url, ha_enabled, cache_path }`` (Vault's keys, and ours: the
node's own directory for snapshots and the version index; the URL may instead come from
``VAULT_PG_CONNECTION_URL``, as Vault allows); ``api_addr`` (what a standby sends clients
to, and the active node's address it tells);
``listener "tcp" { address, tls_disable, tls_cert_file, tls_key_file, max_request_size,
http_read_timeout }``;
``default_lease_ttl``, ``max_lease_ttl``; ``seal "pkcs11" { lib, slot or token_label, pin,
key_label, mechanism, generate_key }`` (each also from ``VAULT_HSM_*``, which wins, as in
Vault; ``VAULT_SEAL_TYPE=pkcs11`` stands for the block; the PIN may be ``env://VAR`` or
``file:///path``): the HSM that auto-unseals the server and holds the ``pkcs11`` mounts'
keys. Without it, ``VAULT_HSM_LIB`` alone gives those mounts an HSM. Accepted and ignored,
as they mean nothing here: ``disable_mlock``, ``ui``, ``cluster_addr``, ``log_level``,
``cluster_name``. HCL is Vault's own dialect (HCL 1), parsed with ``pyhcl``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.hcl import parse_document
from backends.ttl import parse_duration
from eventstore import VaultlogError
from eventstore.hsm import HsmConfig, HsmConfigError
from tools.api import MAX_REQUEST_SIZE

DEFAULT_ADDRESS = "127.0.0.1:8200"
READ_TIMEOUT = 30  # Vault's http_read_timeout
_IGNORED = {"disable_mlock", "ui", "cluster_addr", "log_level", "cluster_name"}
_SEAL_KEYS = {"lib", "slot", "token_label", "pin", "key_label", "mechanism", "generate_key"}
_SEAL_IGNORED = {"hmac_key_label", "hmac_mechanism", "force_rw_session", "disabled"}
_POSTGRES_KEYS = {"connection_url", "ha_enabled", "cache_path", "max_parallel"}
_LISTENER_KEYS = {
    "address",
    "tls_disable",
    "tls_cert_file",
    "tls_key_file",
    "max_request_size",
    "cluster_address",
    "http_read_timeout",
}


class ConfigError(VaultlogError):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    tls_cert_file: str = ""
    tls_key_file: str = ""
    max_request_size: int = MAX_REQUEST_SIZE
    read_timeout: int = READ_TIMEOUT  # seconds a client may stay silent mid-request

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    storage: str  # "file", "inmem" or "postgresql"
    path: Path | None  # the store's directory, or a PostgreSQL node's cache
    listener: Listener
    default_lease_ttl: int = 0
    max_lease_ttl: int = 0
    connection_url: str = ""  # postgresql's
    ha_enabled: bool = False
    api_addr: str = ""  # the listener's URL unless set
    hsm: HsmConfig | None = None  # seal "pkcs11"'s, or the environment's
    auto_unseal: bool = False  # the seal is "pkcs11"

    @property
    def advertised(self) -> str:
        """The address other nodes send clients to."""
        return self.api_addr or self.listener.url


def parse_address(address: str, where: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: address must be HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


def load_config(file: Path) -> ServerConfig:
    """Read and check ``file``; every problem is one ``ConfigError`` line."""
    return parse_config(config_text(file, f"cannot read the configuration {file}"), str(file))


def config_text(file: Path, failed: str) -> str:
    """A configuration file's text; ``ConfigError`` ``failed: why`` if it cannot be read."""
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{failed}: {reason}") from None


def parse_config(text: str, name: str) -> ServerConfig:
    raw = _parse(text, name)
    unknown = set(raw) - {
        "storage",
        "backend",
        "listener",
        "default_lease_ttl",
        "max_lease_ttl",
        "api_addr",
        "seal",
    }
    if unknown - _IGNORED:
        raise ConfigError(f"{name}: unknown key {sorted(unknown - _IGNORED)[0]!r}")
    storage_type, storage = one_block(raw, ("storage", "backend"), name)
    url, ha = "", False
    if storage_type == "file":
        if not isinstance(storage.get("path"), str) or not storage["path"]:
            raise ConfigError(f'{name}: storage "file" needs a path')
        path: Path | None = Path(storage["path"]).expanduser()
    elif storage_type == "inmem":
        path = None
    elif storage_type == "postgresql":
        url, ha, path = postgres_storage(storage, name)
    else:
        raise ConfigError(
            f'{name}: storage "{storage_type}" is not supported (file, inmem, postgresql)'
        )
    listener = _listener(raw, name)
    try:
        default_ttl = parse_duration(raw.get("default_lease_ttl") or 0)
        max_ttl = parse_duration(raw.get("max_lease_ttl") or 0)
    except VaultlogError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    api_addr = raw.get("api_addr") or ""
    if not isinstance(api_addr, str) or (
        api_addr and not api_addr.startswith(("http://", "https://"))
    ):
        raise ConfigError(f"{name}: api_addr must be a URL (http://HOST:PORT)")
    hsm, auto_unseal = _seal(raw, name)
    return ServerConfig(
        storage_type,
        path,
        listener,
        default_ttl,
        max_ttl,
        connection_url=url,
        ha_enabled=ha,
        api_addr=api_addr.rstrip("/"),
        hsm=hsm,
        auto_unseal=auto_unseal,
    )


def _seal(raw: dict[str, Any], name: str) -> tuple[HsmConfig | None, bool]:
    """The HSM and whether it is the seal: ``seal "pkcs11"`` (or ``VAULT_SEAL_TYPE``), else
    ``VAULT_HSM_LIB`` for the ``pkcs11`` mounts alone, else none (Shamir's seal)."""
    if "seal" in raw:
        kind, settings = one_block(raw, ("seal",), name)
        if kind == "shamir":
            return _mounts_hsm(name), False
        if kind != "pkcs11":
            raise ConfigError(f'{name}: seal "{kind}" is not supported (shamir, pkcs11)')
        unknown = set(settings) - _SEAL_KEYS - _SEAL_IGNORED
        if unknown:
            raise ConfigError(f'{name}: unknown seal "pkcs11" key {sorted(unknown)[0]!r}')
    elif os.environ.get("VAULT_SEAL_TYPE", "").lower() == "pkcs11":
        settings = {}
    else:
        return _mounts_hsm(name), False
    try:
        hsm = HsmConfig.from_settings(settings, name)
    except HsmConfigError as exc:
        raise ConfigError(str(exc)) from None
    if not hsm.key_label:
        raise ConfigError(f'{name}: seal "pkcs11" needs key_label (the key that seals)')
    return hsm, True


def _mounts_hsm(name: str) -> HsmConfig | None:
    if not os.environ.get("VAULT_HSM_LIB"):
        return None
    try:
        return HsmConfig.from_settings({}, "the environment")
    except HsmConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def postgres_storage(
    storage: dict[str, Any], name: str, stanza: str = "storage"
) -> tuple[str, bool, Path | None]:
    """``storage "postgresql"`` (or another ``stanza``'s): its URL, whether HA is on, and
    the node's cache."""
    where = f'{name}: {stanza} "postgresql"'
    unknown = set(storage) - _POSTGRES_KEYS
    if unknown:
        raise ConfigError(f'{name}: unknown {stanza} "postgresql" key {sorted(unknown)[0]!r}')
    url = storage.get("connection_url") or os.environ.get("VAULT_PG_CONNECTION_URL", "")
    if not isinstance(url, str) or not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError(f"{where} needs a connection_url (postgresql://...)")
    cache = storage.get("cache_path")
    if cache is not None and (not isinstance(cache, str) or not cache):
        raise ConfigError(f"{where}: cache_path must be a directory")
    ha = str(storage.get("ha_enabled", "false")).lower() in ("1", "true")
    return url, ha, Path(cache).expanduser() if cache else None


def _parse(text: str, name: str) -> dict[str, Any]:
    try:
        return parse_document(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def one_block(raw: dict[str, Any], names: tuple[str, ...], name: str) -> tuple[str, dict]:
    """The single labelled block under one of ``names``: ``storage "file" {...}`` parses
    to ``{"storage": {"file": {...}}}`` (JSON configs may use a list of such objects)."""
    found = [raw[n] for n in names if n in raw]
    if len(found) != 1:
        raise ConfigError(f"{name}: exactly one {names[0]!r} block is required")
    blocks = found[0] if isinstance(found[0], list) else [found[0]]
    if len(blocks) != 1 or not isinstance(blocks[0], dict) or len(blocks[0]) != 1:
        raise ConfigError(f"{name}: exactly one {names[0]!r} block is required")
    ((label, body),) = blocks[0].items()
    if not isinstance(body, dict):
        raise ConfigError(f"{name}: {names[0]} {label!r} must be a block")
    return str(label), body


def _listener(raw: dict[str, Any], name: str) -> Listener:
    kind, body = one_block(raw, ("listener",), name)
    if kind != "tcp":
        raise ConfigError(f'{name}: listener "{kind}" is not supported (tcp)')
    unknown = set(body) - _LISTENER_KEYS
    if unknown:
        raise ConfigError(f"{name}: unknown listener key {sorted(unknown)[0]!r}")
    host, port = parse_address(str(body.get("address") or DEFAULT_ADDRESS), name)
    disabled = str(body.get("tls_disable", "false")).lower() in ("1", "true")
    cert, key = str(body.get("tls_cert_file") or ""), str(body.get("tls_key_file") or "")
    if not disabled and not (cert and key):
        raise ConfigError(
            f"{name}: the listener needs tls_cert_file and tls_key_file, or tls_disable = 1"
        )
    size = body.get("max_request_size", MAX_REQUEST_SIZE)
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"{name}: max_request_size must be a positive number of bytes")
    try:
        timeout = parse_duration(body.get("http_read_timeout", READ_TIMEOUT))
    except VaultlogError as exc:
        raise ConfigError(f"{name}: http_read_timeout: {exc}") from None
    if disabled:
        cert = key = ""
    return Listener(host, port, cert, key, size, max(timeout, 1))
