"""The durable log of opaque encrypted records. Knows nothing about secrets."""

from eventstore.crypto import Sealer, SealError, audit_hmac, new_key
from eventstore.errors import (
    CorruptionError,
    KeyMaterialError,
    MissingRecordError,
    ReadOnlyError,
    ShreddedError,
    StoreError,
    StoreLockedError,
    UnsealError,
    VaultlogError,
)
from eventstore.interface import LogReader, LogWriter, TornTail
from eventstore.keyring import Keyring, decode_unseal_key, encode_unseal_key
from eventstore.log import FileLog
from eventstore.memory import MemoryLog, MemoryStorage
from eventstore.record import NO_HINT, Frame, Head, Record

__all__ = [
    "NO_HINT",
    "CorruptionError",
    "FileLog",
    "Frame",
    "Head",
    "KeyMaterialError",
    "Keyring",
    "LogReader",
    "LogWriter",
    "MemoryLog",
    "MemoryStorage",
    "MissingRecordError",
    "ReadOnlyError",
    "Record",
    "SealError",
    "Sealer",
    "ShreddedError",
    "StoreError",
    "StoreLockedError",
    "TornTail",
    "UnsealError",
    "VaultlogError",
    "audit_hmac",
    "decode_unseal_key",
    "encode_unseal_key",
    "new_key",
]
