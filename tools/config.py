"""Where an embedded store lives, and where its unseal key comes from (DESIGN.md, "Keys")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eventstore import UnsealError, decode_unseal_key, encode_unseal_key, new_key
from eventstore.files import fsync_dir
from eventstore.keyring import KEYRING_FILE

UNSEAL_ENV = "VAULTLOG_UNSEAL_KEY"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home() / fallback


def data_dir() -> Path:
    value = os.environ.get("VAULTLOG_DIR")
    return Path(value) if value else _xdg("XDG_DATA_HOME", ".local/share") / "vaultlog"


def unseal_key_file() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "vaultlog" / "unseal.key"


@dataclass(frozen=True)
class StoreLocation:
    directory: Path
    unseal_key: bytes
    key_source: str  # the file it came from, or the environment variable
    created_key: bool = False


def locate_store(*, create: bool = True, directory: Path | None = None) -> StoreLocation:
    """The data directory (``directory``, else ``VAULTLOG_DIR`` or the XDG default) and
    unseal key; on first use a new key is created (0600)."""
    directory = data_dir() if directory is None else directory
    env_key = os.environ.get(UNSEAL_ENV)
    if env_key:
        return StoreLocation(directory, decode_unseal_key(env_key), f"${UNSEAL_ENV}")
    path = unseal_key_file()
    key = _read_key(path)
    made = key is None and (directory / KEYRING_FILE).exists()
    if made:  # a first use elsewhere writes the key before the keyring: both, since our look?
        key = _read_key(path)
    if key is not None:
        return StoreLocation(directory, key, str(path))
    if made or not create:
        raise UnsealError(f"no unseal key: set {UNSEAL_ENV} or restore {path}")
    return StoreLocation(directory, _create_key_file(path), str(path), created_key=True)


def _read_key(path: Path) -> bytes | None:
    """The unseal key in ``path``; None if there is no such file."""
    try:
        return decode_unseal_key(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsealError(f"cannot read unseal key {path}: {exc.strerror}") from None


def _create_key_file(path: Path) -> bytes:
    """Write a new unseal key without ever replacing one another process just wrote."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = new_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (encode_unseal_key(key) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created the key first
    except FileExistsError:
        return decode_unseal_key(path.read_text())
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return key
