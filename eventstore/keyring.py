"""The keyring: barrier keys by term, one data key per mount, the audit HMAC key.

It is a small file beside the log, sealed with the unseal key and *replaced atomically*
(temp file, fsync, rename, fsync dir), never appended: destroying a mount's data key must
leave no older copy of it behind in the same file. The file carries a crc32c of its sealed
part, so a damaged keyring is told apart from a wrong unseal key.

A mount may instead keep its key in the HSM (``eventstore.hsm``): its entry is then a
reference, ``pkcs11:<label>``, to a non-extractable key object there, and destroying the
mount's key destroys that object in the token.

The audit HMACs of a mount's values are keyed by a key derived from the mount's data key:
destroying the data key makes them unverifiable too (a short value, a PIN, could otherwise
be confirmed by guessing), while the store-wide audit key keeps paths comparable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from google_crc32c import value as crc32c

from eventstore import hsm
from eventstore.crypto import KEY_BYTES, KeyedHmac, Sealer, SealError, Seals, new_key
from eventstore.errors import ShreddedError, UnsealError
from eventstore.files import write_atomically

KEYRING_FILE = "keyring"
_MAGIC = b"VLKEYRG2"  # then the crc32c of the sealed part
_OLD_MAGIC = b"VLKEYRG1"  # no checksum: damage and a wrong key look alike
_AAD = b"vaultlog keyring v1"


def decode_unseal_key(text: str) -> bytes:
    """The 32 raw bytes of an unseal key written as base64 (as ``vault init`` prints it)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise UnsealError("unseal key is not valid base64") from None
    if len(key) != 32:
        raise UnsealError("unseal key must be 32 bytes encoded as base64")
    return key


def encode_unseal_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def hsm_label_of(key: bytes) -> str:
    """The HSM key label a keyring entry references, or "" for a key held here."""
    if len(key) == KEY_BYTES or not key.startswith(hsm.HSM_REF):
        return ""
    return key[len(hsm.HSM_REF) :].decode()


@dataclass
class Keyring:
    """Key material of one store; mutate through the methods, then ``save``."""

    store_id: str
    terms: dict[int, bytes]
    term_installed: dict[int, int]
    mounts: dict[str, bytes] = field(default_factory=dict)
    audit_key: bytes = b""
    _barriers: dict[int, Sealer] = field(default_factory=dict, repr=False)
    _sealers: dict[str, Seals] = field(default_factory=dict, repr=False)  # mounts'

    _hmac_keys: dict[str, KeyedHmac] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls) -> Keyring:
        return cls(
            store_id=os.urandom(8).hex(),
            terms={1: new_key()},
            term_installed={1: time.time_ns()},
            audit_key=new_key(),
        )

    @property
    def term(self) -> int:
        """The term new records are sealed under."""
        return max(self.terms)

    def barrier(self, term: int) -> Sealer:
        """The sealer of barrier key ``term``."""
        sealer = self._barriers.get(term)
        if sealer is None:
            if term not in self.terms:
                raise UnsealError(f"keyring has no barrier key for term {term}")
            sealer = self._barriers[term] = Sealer(self.terms[term])
        return sealer

    def mount_sealer(self, mount_id: str) -> Seals:
        """The sealer of a mount's data key (in the HSM for an HSM mount);
        ``ShreddedError`` once the key was destroyed."""
        sealer = self._sealers.get(mount_id)
        if sealer is None:
            key = self._mount_key(mount_id)
            label = hsm_label_of(key)
            made = hsm.current().sealer(label) if label else Sealer(key)
            sealer = self._sealers[mount_id] = made
        return sealer

    def value_hmac(self, mount_id: str, value: bytes) -> bytes:
        """The audit HMAC of a value of a mount, under a key derived from the mount's data
        key (inside the HSM for an HSM mount); ``ShreddedError`` once that was destroyed."""
        keyed = self._hmac_keys.get(mount_id)
        if keyed is None:
            key = self._mount_key(mount_id)
            label = hsm_label_of(key)
            if label:
                derived = hsm.current().derive(label, b"vaultlog value hmac")
            else:
                derived = hmac.new(key, b"vaultlog value hmac", hashlib.sha256).digest()
            keyed = self._hmac_keys[mount_id] = KeyedHmac(derived)
        return keyed.digest(value)

    def _mount_key(self, mount_id: str) -> bytes:
        key = self.mounts.get(mount_id)
        if key is None:
            raise ShreddedError(f"the data key of mount {mount_id} was destroyed")
        return key

    def token_id(self, token: str) -> str:
        """The keyed hash a token is known by in the log and the state (the token itself
        is never recorded): HMAC-SHA256 under a key derived from the audit key."""
        keyed = self._hmac_keys.get("")
        if keyed is None:
            key = hmac.new(self.audit_key, b"vaultlog token id", hashlib.sha256).digest()
            keyed = self._hmac_keys[""] = KeyedHmac(key)
        return keyed.digest(token.encode()).hex()

    def add_term(self) -> int:
        """Install a new barrier key; old terms stay so old records remain readable."""
        term = self.term + 1
        self.terms[term] = new_key()
        self.term_installed[term] = time.time_ns()
        return term

    def forget_sealers(self) -> None:
        """Drop cached sealers (after taking a key back)."""
        self._barriers.clear()
        self._sealers.clear()

    def add_mount_key(self, mount_id: str, *, in_hsm: bool = False) -> None:
        """A new data key for a mount, or (``in_hsm``) a reference to the HSM key that the
        store generates once the keyring naming it is saved."""
        if mount_id not in self.mounts:
            self.mounts[mount_id] = (
                hsm.HSM_REF + self.hsm_label(mount_id).encode() if in_hsm else new_key()
            )

    def hsm_label(self, mount_id: str) -> str:
        """The label of a mount's key object in the HSM: the store's prefix, the mount."""
        return f"{self.hsm_prefix}{mount_id}"

    @property
    def hsm_prefix(self) -> str:
        return f"vaultlog-{self.store_id}-"

    def hsm_labels(self) -> dict[str, str]:
        """The HSM key labels this keyring references, by mount id."""
        found = {mount: hsm_label_of(key) for mount, key in self.mounts.items()}
        return {mount: label for mount, label in found.items() if label}

    def shred_mount_key(self, mount_id: str) -> None:
        """Destroy a mount's data key: an HSM key object is destroyed in the token first
        (``HsmUnavailableError`` if it cannot be: the reference stays, to retry)."""
        self._sealers.pop(mount_id, None)
        self._hmac_keys.pop(mount_id, None)
        label = hsm_label_of(self.mounts.get(mount_id, b""))
        if label:
            hsm.current().destroy(label)
        self.mounts.pop(mount_id, None)

    def to_bytes(self, unseal_key: bytes) -> bytes:
        body = msgpack.packb(
            {
                "store_id": self.store_id,
                "terms": self.terms,
                "term_installed": self.term_installed,
                "mounts": self.mounts,
                "audit_key": self.audit_key,
            },
            use_bin_type=True,
        )
        sealed = Sealer(unseal_key).seal(body, _AAD)
        return _MAGIC + crc32c(sealed).to_bytes(4, "big") + sealed

    @classmethod
    def from_bytes(cls, raw: bytes, unseal_key: bytes) -> Keyring:
        if raw.startswith(_MAGIC):
            sealed = raw[len(_MAGIC) + 4 :]
            if crc32c(sealed).to_bytes(4, "big") != raw[len(_MAGIC) : len(_MAGIC) + 4]:
                raise UnsealError("the keyring is damaged: its checksum fails")
            wrong = "wrong unseal key: it does not open this store's keyring"
        elif raw.startswith(_OLD_MAGIC):
            sealed, wrong = raw[len(_OLD_MAGIC) :], "keyring damaged, or wrong unseal key"
        else:
            raise UnsealError("the keyring is damaged: it is not a vaultlog keyring")
        try:
            body = Sealer(unseal_key).open(sealed, _AAD)
        except SealError:
            raise UnsealError(wrong) from None
        fields = msgpack.unpackb(body, raw=False, strict_map_key=False)
        return cls(
            store_id=fields["store_id"],
            terms=fields["terms"],
            term_installed=fields["term_installed"],
            mounts=fields["mounts"],
            audit_key=fields["audit_key"],
        )

    @classmethod
    def load(cls, directory: Path, unseal_key: bytes) -> Keyring:
        try:
            raw = (directory / KEYRING_FILE).read_bytes()
        except FileNotFoundError:
            raise UnsealError(f"no keyring in {directory}") from None
        return cls.from_bytes(raw, unseal_key)

    def save(self, directory: Path, unseal_key: bytes) -> None:
        """Replace the keyring file atomically and durably."""
        write_atomically(directory / KEYRING_FILE, self.to_bytes(unseal_key))
