"""Errors the log can raise; every one carries a message fit to show a user on one line.

    VaultlogError                 base of every error vaultlog raises on purpose
     ├── StoreError               the store cannot be used as asked
     │    ├── StoreLockedError    another live process holds the writer lock
     │    ├── ReadOnlyError       an fsync failed earlier; the store accepts no more writes
     │    │    └── UnavailableError  the database went away or another writer appended
     │    ├── MissingRecordError  a record asked for by seq is not in the log
     │    └── CorruptionError     a record inside the log is damaged or missing (where, seq)
     └── KeyMaterialError       a key needed to open something is missing or wrong
          ├── UnsealError         the unseal key is missing or does not open the keyring
          ├── ShreddedError       the data key of a mount was destroyed (crypto-shredding)
          └── HsmUnavailableError the HSM holding a key cannot be reached (or is not set up)

Backends extend the tree with request errors (see ``backends.errors``).
"""

from __future__ import annotations


class VaultlogError(Exception):
    """Base of every error vaultlog raises on purpose; ``str()`` is the user-facing message."""


class StoreError(VaultlogError):
    """The store cannot be used as asked."""


class StoreLockedError(StoreError):
    """Another live process holds the writer lock for longer than we were willing to wait."""


class ReadOnlyError(StoreError):
    """A failed fsync made the store read-only for the rest of this process."""


class UnavailableError(ReadOnlyError):
    """The log's database cannot be reached, or another writer appended first; nothing of
    the failed write was acknowledged. That log object is done: open it again (the
    database, not this process's memory, says what is durable)."""


class MissingRecordError(StoreError):
    """A record asked for by seq is not in the log (past the head, or never written)."""


class CorruptionError(StoreError):
    """A record inside the log is damaged, or records are missing; nothing was modified.

    ``segment`` and ``offset`` say where, for a storage that has such places.
    """

    def __init__(
        self,
        message: str,
        *,
        seq: int,
        segment: str = "",
        offset: int = 0,
        kind: str = "corruption",
    ) -> None:
        where = f" in segment {segment} at offset {offset}" if segment else ""
        super().__init__(f"{message}{where} (seq {seq})")
        self.segment = segment
        self.offset = offset
        self.seq = seq
        self.kind = kind  # corruption, missing records, rewritten history, authentication


class KeyMaterialError(VaultlogError):
    """A key needed to open something is missing or wrong."""


class UnsealError(KeyMaterialError):
    """The unseal key is missing or does not open the keyring."""


class ShreddedError(KeyMaterialError):
    """The data key that sealed a value was destroyed on purpose (crypto-shredding)."""


class HsmUnavailableError(KeyMaterialError):
    """The HSM that holds a key is not there (removed, unreachable, or not configured):
    nothing was sealed or opened; the same request works once it is back."""
