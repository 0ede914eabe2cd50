"""The record codec: ``length | crc32c | header | ciphertext``, the same bytes on every storage.

The header (format version, seq, timestamp, key term, hash of the previous record) stays
plaintext so a log can be checked without keys, and it is the AES-GCM associated data, so a
record cannot be moved, reordered or re-dated without failing authentication. Each record
carries the SHA-256 of the previous record's bytes: the hash chain.

Storages (``FileLog``, ``MemoryLog``, later PostgreSQL) keep these bytes and hand back
``Frame``s; sealing a batch (``seal_batch``) and opening a frame (``open_frame``) happen
here, above them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from hashlib import sha256
from typing import NamedTuple

from google_crc32c import value as crc32c

from eventstore.crypto import OVERHEAD, Sealer, SealError
from eventstore.errors import CorruptionError
from eventstore.keyring import Keyring

VERSION = 1
PREFIX = struct.Struct(">II")  # length of header + ciphertext, crc32c of header + ciphertext
HEADER = struct.Struct(">BQQI32s")  # version, seq, timestamp (ns), key term, previous hash
GENESIS_HASH = bytes(32)
MIN_PAYLOAD = HEADER.size + OVERHEAD
NO_HINT = 0


class Header(NamedTuple):
    version: int
    seq: int
    timestamp: int
    term: int
    prev_hash: bytes


class Head(NamedTuple):
    """The last record's seq and hash: what an operator writes down to detect rewriting.
    A named tuple, as ``Record`` is: the log makes one per batch it writes."""

    seq: int
    hash: bytes
    timestamp: int = 0

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash.hex()}"


class Record(NamedTuple):
    """One decrypted record: its place in the log and the opaque body it carries.

    ``hint`` is the storage's own note of where the record lies (0: none). It is opaque:
    callers may keep it and hand it back to ``LogReader.frame`` to find the record
    faster, and must never read anything into it. (A named tuple: made once per record
    read or written, and a frozen dataclass takes three times as long to make.)
    """

    seq: int
    timestamp: int
    term: int
    body: bytes
    hint: int = NO_HINT


class Frame(NamedTuple):
    """One well-formed record found in a storage, not yet decrypted.

    ``segment`` and ``offset`` name where it was found, for error messages (a file log's
    segment file and byte offset); ``hint`` is what callers may keep.
    """

    segment: str
    offset: int
    end: int
    header: Header
    payload: bytes
    hash: bytes
    hint: int = NO_HINT


def encode(
    body: bytes, *, seq: int, timestamp: int, term: int, prev_hash: bytes, sealer: Sealer
) -> bytes:
    """The bytes of one record, body sealed under the barrier key with the header as AAD."""
    header = HEADER.pack(VERSION, seq, timestamp, term, prev_hash)
    payload = header + sealer.seal(body, header)
    return PREFIX.pack(len(payload), crc32c(payload)) + payload


def seq_hint(seq: int, offset: int) -> int:
    """The hint of a storage that finds a record by its seq alone."""
    return seq


def seal_batch(
    keyring: Keyring,
    bodies: Sequence[bytes],
    head: Head,
    timestamp: int,
    hint: Callable[[int, int], int] = seq_hint,
) -> tuple[list[bytes], list[Record], Head]:
    """The records that follow ``head``: their bytes, the records, and the new head.

    Every record of a batch carries the same timestamp, never earlier than the head's.
    ``hint(seq, offset)`` gives each record's hint from its seq and where its bytes start
    within the batch.
    """
    term = keyring.term
    sealer = keyring.barrier(term)
    timestamp = max(timestamp, head.timestamp)
    seq, prev, offset = head.seq, head.hash, 0
    raws, records = [], []
    for body in bodies:
        seq += 1
        raw = encode(body, seq=seq, timestamp=timestamp, term=term, prev_hash=prev, sealer=sealer)
        prev = record_hash(raw)
        raws.append(raw)
        records.append(Record(seq, timestamp, term, body, hint(seq, offset)))
        offset += len(raw)
    return raws, records, Head(seq, prev, timestamp)


def open_frame(keyring: Keyring, frame: Frame) -> Record:
    """Decrypt one frame under its key term; ``CorruptionError`` if it does not open."""
    h = frame.header
    try:
        body = keyring.barrier(h.term).open_after(frame.payload, HEADER.size)
    except SealError:
        raise CorruptionError(
            "record fails authentication (wrong key or altered bytes)",
            segment=frame.segment,
            offset=frame.offset,
            seq=h.seq,
            kind="authentication failure",
        ) from None
    return Record(h.seq, h.timestamp, h.term, body, frame.hint)


def parse(raw: bytes, *, segment: str, offset: int, hint: int, seq: int) -> Frame:
    """The frame of one whole record's bytes, said to be record ``seq``: framing,
    checksum, version and seq checked (the chain is the caller's: it needs the record
    before)."""

    def fail(what: str, kind: str = "corruption") -> CorruptionError:
        return CorruptionError(what, segment=segment, offset=offset, seq=seq, kind=kind)

    if len(raw) < PREFIX.size:
        raise fail("record cut short")
    length, crc = PREFIX.unpack_from(raw)
    if length < MIN_PAYLOAD or PREFIX.size + length != len(raw):
        raise fail("record length field damaged")
    payload = raw[PREFIX.size :]
    if crc32c(payload) != crc:
        raise fail("checksum mismatch")
    header = Header._make(HEADER.unpack_from(payload))
    if header.version != VERSION:
        raise fail(f"unknown record format version {header.version}")
    if header.seq != seq:
        raise fail(f"expected seq {seq} but found seq {header.seq}", "missing or reordered records")
    return Frame(segment, offset, offset + len(raw), header, payload, record_hash(raw), hint)


def check_link(frame: Frame, prev_hash: bytes) -> None:
    """Raise unless ``frame`` names ``prev_hash`` as the record before it."""
    if frame.header.prev_hash != prev_hash:
        raise CorruptionError(
            "hash chain broken (previous record changed)",
            segment=frame.segment,
            offset=frame.offset,
            seq=frame.header.seq,
            kind="rewritten history",
        )


def record_hash(raw: bytes | memoryview) -> bytes:
    """What the next record carries as ``prev_hash``: SHA-256 of this record's bytes."""
    return sha256(raw).digest()


def checksum_ok(payload: bytes | memoryview, crc: int) -> bool:
    return crc32c(payload) == crc
