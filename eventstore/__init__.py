"""The durable log of opaque encrypted records. Knows nothing about secrets."""

from eventstore.crypto import Sealer, SealError, audit_hmac, new_key
from eventstore.errors import (
    CorruptionError,
    KeyMaterialError,
    ReadOnlyError,
    ShreddedError,
    StoreError,
    StoreLockedError,
    UnsealError,
    VaultlogError,
)
from eventstore.keyring import Keyring, decode_unseal_key, encode_unseal_key
from eventstore.log import FileLog, Frame, Head
from eventstore.record import Record

__all__ = [
    "CorruptionError",
    "FileLog",
    "Frame",
    "Head",
    "KeyMaterialError",
    "Keyring",
    "ReadOnlyError",
    "Record",
    "SealError",
    "Sealer",
    "ShreddedError",
    "StoreError",
    "StoreLockedError",
    "UnsealError",
    "VaultlogError",
    "audit_hmac",
    "decode_unseal_key",
    "encode_unseal_key",
    "new_key",
]
