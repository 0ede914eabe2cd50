"""``auth/token/``: until tokens are events of their own, it answers ``lookup-self`` for
the one token there is, the root token (the embedded local user counts as root), so that
clients which check their token first (hvac's ``is_authenticated``) can go on."""

from __future__ import annotations

from typing import ClassVar

from backends.contract import MountView, PathRules
from backends.errors import InvalidRequestError
from backends.request import Request, Response


class TokenBackend:
    paths: ClassVar[PathRules] = PathRules(audit_reads=False)

    def handle(self, view: MountView, request: Request) -> Response:
        if request.path.strip("/") == "lookup-self" and request.operation in ("read", "write"):
            return Response(
                data={
                    "creation_ttl": 0,
                    "display_name": "root" if request.actor == "root" else request.actor,
                    "entity_id": "",
                    "expire_time": None,
                    "explicit_max_ttl": 0,
                    "meta": None,
                    "num_uses": 0,
                    "orphan": True,
                    "path": "auth/token/root",
                    "policies": ["root"],
                    "renewable": False,
                    "ttl": 0,
                    "type": "service",
                }
            )
        raise InvalidRequestError(
            f"unsupported path: {request.operation} auth/token/{request.path}"
        )
