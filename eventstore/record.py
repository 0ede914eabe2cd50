"""Record framing: ``length | crc32c | header | ciphertext``.

The header (format version, seq, timestamp, key term, hash of the previous record) stays
plaintext so a log can be checked without keys, and it is the AES-GCM associated data, so a
record cannot be moved, reordered or re-dated without failing authentication.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import NamedTuple

from google_crc32c import value as crc32c

from eventstore.crypto import OVERHEAD, Sealer

VERSION = 1
PREFIX = struct.Struct(">II")  # length of header + ciphertext, crc32c of header + ciphertext
HEADER = struct.Struct(">BQQI32s")  # version, seq, timestamp (ns), key term, previous hash
GENESIS_HASH = bytes(32)
MIN_PAYLOAD = HEADER.size + OVERHEAD


class Header(NamedTuple):
    version: int
    seq: int
    timestamp: int
    term: int
    prev_hash: bytes


@dataclass(frozen=True, slots=True)
class Record:
    """One decrypted record: its place in the log and the opaque body it carries."""

    seq: int
    timestamp: int
    term: int
    body: bytes
    at: tuple[str, int] | None = None  # (segment file, offset) where the record starts


def encode(
    body: bytes, *, seq: int, timestamp: int, term: int, prev_hash: bytes, sealer: Sealer
) -> bytes:
    """The bytes of one record, body sealed under the barrier key with the header as AAD."""
    header = HEADER.pack(VERSION, seq, timestamp, term, prev_hash)
    payload = header + sealer.seal(body, header)
    return PREFIX.pack(len(payload), crc32c(payload)) + payload


def record_hash(raw: bytes | memoryview) -> bytes:
    """What the next record carries as ``prev_hash``: SHA-256 of this record's bytes."""
    return hashlib.sha256(raw).digest()


def checksum_ok(payload: bytes | memoryview, crc: int) -> bool:
    return crc32c(payload) == crc
