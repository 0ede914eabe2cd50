"""What vaultlog is measured against: the disk, the codec, and a peer.

- raw fsync: 100-byte appends to one file, ``os.fsync`` after each;
- raw codec: msgpack + AES-256-GCM (fresh nonce, associated data as long as a record
  header) on a real ``secret.written`` body;
- the peer: the ``eventsourcing`` library on a SQLite file (WAL) with its AES cipher.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore import new_key
from eventstore.record import HEADER
from tools.bench.harness import VALUE, Report

PEER_PAGES = (100, 1_000, 10_000)  # notification log page sizes tried; the fastest counts
PEER_CIPHER_TOPIC = "eventsourcing.cryptography:AESCipher"  # AES-GCM from `cryptography`


# ---- the machine's limits --------------------------------------------------------------


def raw_fsync_rate(directory: Path, n: int) -> float:
    """100-byte appends to one file, each followed by ``os.fsync``, per second."""
    payload = b"x" * 100
    fd = os.open(directory / "bench-raw-fsync", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, payload)
            os.fsync(fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)


def raw_codec_rates(body: bytes, n: int) -> tuple[float, float]:
    """(encode, decode) per second of msgpack + AES-256-GCM with a fresh nonce each time,
    on an event like ``body``, with associated data as long as a record header."""
    event = msgpack.unpackb(body, raw=False)
    aead = AESGCM(new_key())
    aad = os.urandom(HEADER.size)
    sealed = []
    start = time.perf_counter()
    for _ in range(n):
        nonce = os.urandom(12)
        sealed.append(nonce + aead.encrypt(nonce, msgpack.packb(event, use_bin_type=True), aad))
    encode_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for item in sealed:
        msgpack.unpackb(aead.decrypt(item[:12], item[12:], aad), raw=False)
    return encode_rate, n / (time.perf_counter() - start)


# ---- the peer: eventsourcing on SQLite -------------------------------------------------


def peer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"eventsourcing {version('eventsourcing')}"
    except PackageNotFoundError:
        return "eventsourcing not installed"


class Peer:
    """An ``eventsourcing`` application on a SQLite file (WAL) with AES-GCM on every event.

    One secret written is one new aggregate whose creation event carries path and value.
    """

    def __init__(self, directory: Path) -> None:
        from eventsourcing.application import Application
        from eventsourcing.cryptography import AESCipher
        from eventsourcing.domain import Aggregate, event

        class Secret(Aggregate):
            @event("Written")
            def __init__(self, path: str, value: dict[str, str]) -> None:
                self.path, self.value = path, value

        class SecretStore(Application):
            log_section_size = max(PEER_PAGES)

        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.secret = Secret
        self.app = SecretStore(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(directory / "peer.sqlite"),
                "CIPHER_TOPIC": PEER_CIPHER_TOPIC,
                "CIPHER_KEY": AESCipher.create_key(32),
            }
        )
        self.count = 0

    def pragmas(self) -> tuple[str, int]:
        """(journal_mode, synchronous) of its connections: WAL, and 2 (FULL) = durable."""
        factory: Any = self.app.factory  # the SQLite factory: its datastore is not typed
        with factory.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            return mode, cursor.fetchone()[0]

    def single_rate(self, n: int) -> float:
        """One event per durable save, per second."""
        start = time.perf_counter()
        for i in range(self.count, self.count + n):
            self.app.save(self.secret(f"secret/k{i}", VALUE))
        self.count += n
        return n / (time.perf_counter() - start)

    def batch_rate(self, n: int) -> float:
        """``n`` events in one save (one transaction), per second."""
        start = time.perf_counter()
        self.app.save(
            *[self.secret(f"secret/k{i}", VALUE) for i in range(self.count, self.count + n)]
        )
        self.count += n
        return n / (time.perf_counter() - start)

    def read_back_rate(self, page: int) -> float:
        """Every event, decrypted and decoded, through the notification log, per second."""
        log, mapper = self.app.notification_log, self.app.mapper
        start, read = 1, 0
        began = time.perf_counter()
        while True:
            notifications = log.select(start, page)
            for notification in notifications:
                mapper.to_domain_event(notification)
            read += len(notifications)
            if len(notifications) < page:
                break
            start = notifications[-1].id + 1
        elapsed = time.perf_counter() - began
        assert read == self.count, (read, self.count)
        return read / elapsed

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def close(self) -> None:
        self.app.close()


def open_peer(directory: Path, report: Report) -> Peer | None:
    """The peer, its configuration noted in ``report``; None (noted) if not installed."""
    try:
        peer = Peer(directory)
    except ImportError:
        report.note("The peer was skipped: `pip install 'eventsourcing>=9.5,<9.6'` to compare.")
        return None
    mode, synchronous = peer.pragmas()
    durable = "durable per commit" if synchronous >= 2 else "NOT durable per commit"
    report.note(
        f"Peer: {peer_version()}, PERSISTENCE_MODULE=eventsourcing.sqlite, "
        f"CIPHER_TOPIC={PEER_CIPHER_TOPIC}; SQLite journal_mode={mode}, "
        f"synchronous={synchronous} ({durable})."
    )
    return peer
