"""The root key in shares, and the gathering of shares toward an unseal.

Shamir's scheme over GF(256), as Vault splits its root key, from ``pyshamir`` (a port of
Vault's own code): a share is 33 bytes, the key's 32 bytes of y values, then the share's
x coordinate, so shares print in hex and base64 exactly as Vault's do. One share with a
threshold of one is the key itself, as in Vault (and the embedded default's key file).

No combination can tell a wrong or missing share: any shares combine into some key. So
shares are never combined below the threshold, a share given twice counts once, and the
key they make is believed only once it opens the keyring, whose AES-GCM seal
authenticates it (``wrong unseal key: it does not open this store's keyring``). Not yet
wired into the server: seal and init bring it (issue 10).
"""

from __future__ import annotations

import base64
import binascii

import pyshamir  # type: ignore[import-untyped]

from eventstore.errors import UnsealError

KEY_SIZE = 32
SHARE_SIZE = KEY_SIZE + 1
MAX_SHARES = 255  # x coordinates are the bytes 1..255


def split_key(key: bytes, shares: int, threshold: int) -> list[bytes]:
    """``shares`` shares of ``key``, any ``threshold`` of which make it again."""
    if len(key) != KEY_SIZE:
        raise UnsealError(f"the root key must be {KEY_SIZE} bytes")
    if not 1 <= threshold <= shares <= MAX_SHARES:
        raise UnsealError(
            f"invalid seal configuration: need 1 <= threshold <= shares <= {MAX_SHARES},"
            f" not {threshold} of {shares}"
        )
    if shares == 1:
        return [bytes(key)]
    if threshold == 1:
        raise UnsealError("invalid seal configuration: a threshold of 1 needs exactly 1 share")
    return [bytes(share) for share in pyshamir.split(key, shares, threshold)]


def decode_share(text: str) -> bytes:
    """A share (or a one-share key) as Vault prints it: hex or base64."""
    text = text.strip()
    for decode in (bytes.fromhex, _b64):
        try:
            raw = decode(text)
        except ValueError:
            continue
        if len(raw) in (KEY_SIZE, SHARE_SIZE):
            return raw
    raise UnsealError(f"an unseal key is {KEY_SIZE} or {SHARE_SIZE} bytes written in hex or base64")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


class Unsealing:
    """Shares given so far toward ``threshold``; ``add`` returns the key they make once
    there are enough, and starts over."""

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise UnsealError("the threshold must be at least 1")
        self.threshold = threshold
        self._shares: dict[int, bytes] = {}  # by x coordinate

    @property
    def progress(self) -> int:
        return len(self._shares)

    def reset(self) -> None:
        self._shares.clear()

    def add(self, share: bytes) -> bytes | None:
        """Count ``share``; the combined key once ``threshold`` different shares are in
        (then the progress is back to 0), else None. Only the keyring can tell whether
        the key is right."""
        if self.threshold == 1:
            if len(share) != KEY_SIZE:
                raise UnsealError(f"this store has one unseal key, of {KEY_SIZE} bytes")
            return bytes(share)
        if len(share) != SHARE_SIZE or share[-1] == 0:
            raise UnsealError(f"an unseal key share is {SHARE_SIZE} bytes, its last one not 0")
        x = share[-1]
        known = self._shares.get(x)
        if known is not None and known != share:
            self.reset()
            raise UnsealError("two different shares with the same x: one of them is wrong")
        self._shares[x] = bytes(share)
        if len(self._shares) < self.threshold:
            return None
        key = bytes(pyshamir.combine([bytearray(s) for s in self._shares.values()]))
        self.reset()
        return key
