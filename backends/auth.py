"""Server mode's authentication: until tokens and policies exist, one root token.

The token is kept only as a keyed hash, compared in constant time, and dropped from the
request once checked; the request goes on as the root's (``actor`` "root"). A few ``sys/``
paths answer anyone, as in Vault: health, seal status, leader.
"""

from __future__ import annotations

import hmac
import os

from backends.errors import PermissionDeniedError
from backends.request import Request

UNAUTHENTICATED = frozenset({"sys/health", "sys/seal-status", "sys/leader", "sys/init"})


class RootToken:
    """An ``Authenticate`` for the Core that admits the root token only."""

    def __init__(self, token: str) -> None:
        self._key = os.urandom(32)
        self._digest = self._hash(token)

    def _hash(self, token: str) -> bytes:
        return hmac.digest(self._key, token.encode(), "sha256")

    def __call__(self, request: Request) -> Request:
        path = request.path.strip("/")
        if path in UNAUTHENTICATED:
            actor = "anonymous"
        elif request.token and hmac.compare_digest(self._hash(request.token), self._digest):
            actor = "root"
        else:
            raise PermissionDeniedError("permission denied")
        return Request(
            request.operation, request.path, request.data, request.at, actor, request.request_id
        )
