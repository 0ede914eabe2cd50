"""The one place that touches AES-256-GCM, nonces and associated data.

Everything else in vaultlog calls ``Sealer.seal``/``Sealer.open`` and never sees a nonce.
"""

from __future__ import annotations

import os
from hashlib import sha256
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES


class SealError(Exception):
    """Authenticated decryption failed: wrong key, or the bytes or their context changed."""


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


class Seals(Protocol):
    """What seals and opens values: a ``Sealer``, or an ``eventstore.hsm.HsmSealer``
    whose key never leaves the HSM."""

    def seal(self, plaintext: bytes, *context: bytes | str) -> bytes: ...

    def open(self, sealed: bytes, *context: bytes | str) -> bytes: ...


class Sealer:
    """Seals and opens byte strings under one AES-256-GCM key.

    Nonces are random 96-bit values, never derived from a sequence number: after a torn
    write the same seq is written again with a different body, and a counter nonce would
    then repeat under the same key, which breaks GCM outright. Random nonces are safe for
    about 2**32 seals per key; key rotation (a new term) resets that budget.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("AES-256-GCM keys are 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, *context: bytes | str) -> bytes:
        """``nonce | ciphertext | tag``, bound to ``context`` (authenticated, not stored)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, _aad(context))

    def open(self, sealed: bytes, *context: bytes | str) -> bytes:
        """The plaintext, or ``SealError`` if ``sealed`` or its ``context`` changed."""
        if len(sealed) < OVERHEAD:
            raise SealError("sealed value too short")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(context))
        except InvalidTag:
            raise SealError("authentication failed") from None

    def open_after(self, data: bytes, size: int) -> bytes:
        """``open`` of what follows the first ``size`` bytes of ``data``, those bytes its
        one part of context: a record, whose header is its associated data."""
        if len(data) < size + OVERHEAD:
            raise SealError("sealed value too short")
        context = data[:size]
        nonce, sealed = data[size : size + NONCE_BYTES], data[size + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, _aad((context,)))
        except InvalidTag:
            raise SealError("authentication failed") from None


def _aad(context: tuple[bytes | str, ...]) -> bytes:
    """Associated data: each part length-prefixed, so ("ab", "c") and ("a", "bc") differ."""
    if len(context) == 1 and isinstance(context[0], bytes):  # a record header: the hot path
        return len(context[0]).to_bytes(4, "big") + context[0]
    aad = b""
    for part in context:
        data = part if isinstance(part, bytes) else part.encode()
        aad += len(data).to_bytes(4, "big") + data
    return aad


class KeyedHmac:
    """HMAC-SHA256 under one key (RFC 2104), its two padded key blocks hashed once:
    ``hmac.digest`` sets OpenSSL's HMAC up afresh on every call, twice this one's cost,
    and the Core computes one per value written and per token presented."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = (sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = sha256(bytes(b ^ 0x36 for b in block))
        self._outer = sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
