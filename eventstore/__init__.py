"""The durable log of opaque encrypted records. Knows nothing about secrets."""

import typing as _typing

from eventstore import lazy as _lazy

if _typing.TYPE_CHECKING:
    from eventstore.crypto import Sealer, SealError, new_key
    from eventstore.errors import (
        CorruptionError,
        HsmUnavailableError,
        KeyMaterialError,
        MissingRecordError,
        ReadOnlyError,
        ShreddedError,
        StoreError,
        StoreLockedError,
        UnavailableError,
        UnsealError,
        VaultlogError,
    )
    from eventstore.interface import LogReader, LogWriter, TornTail
    from eventstore.keyring import Keyring, decode_unseal_key, encode_unseal_key
    from eventstore.log import FileLog
    from eventstore.memory import MemoryLog, MemoryStorage
    from eventstore.postgres import PostgresLog, PostgresStorage
    from eventstore.record import NO_HINT, Frame, Head, Record

_WHERE = {
    "CorruptionError": "eventstore.errors",
    "FileLog": "eventstore.log",
    "Frame": "eventstore.record",
    "Head": "eventstore.record",
    "HsmUnavailableError": "eventstore.errors",
    "KeyMaterialError": "eventstore.errors",
    "Keyring": "eventstore.keyring",
    "LogReader": "eventstore.interface",
    "LogWriter": "eventstore.interface",
    "MemoryLog": "eventstore.memory",
    "MemoryStorage": "eventstore.memory",
    "MissingRecordError": "eventstore.errors",
    "NO_HINT": "eventstore.record",
    "PostgresLog": "eventstore.postgres",
    "PostgresStorage": "eventstore.postgres",
    "ReadOnlyError": "eventstore.errors",
    "Record": "eventstore.record",
    "SealError": "eventstore.crypto",
    "Sealer": "eventstore.crypto",
    "ShreddedError": "eventstore.errors",
    "StoreError": "eventstore.errors",
    "StoreLockedError": "eventstore.errors",
    "TornTail": "eventstore.interface",
    "UnavailableError": "eventstore.errors",
    "UnsealError": "eventstore.errors",
    "VaultlogError": "eventstore.errors",
    "decode_unseal_key": "eventstore.keyring",
    "encode_unseal_key": "eventstore.keyring",
    "new_key": "eventstore.crypto",
}
__getattr__, __dir__ = _lazy.exports(__name__, _WHERE, globals())

__all__ = [
    "NO_HINT",
    "CorruptionError",
    "FileLog",
    "Frame",
    "Head",
    "HsmUnavailableError",
    "KeyMaterialError",
    "Keyring",
    "LogReader",
    "LogWriter",
    "MemoryLog",
    "MemoryStorage",
    "MissingRecordError",
    "PostgresLog",
    "PostgresStorage",
    "ReadOnlyError",
    "Record",
    "SealError",
    "Sealer",
    "ShreddedError",
    "StoreError",
    "StoreLockedError",
    "TornTail",
    "UnavailableError",
    "UnsealError",
    "VaultlogError",
    "decode_unseal_key",
    "encode_unseal_key",
    "new_key",
]
