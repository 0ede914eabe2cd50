"""The ``cubbyhole`` backend: each token's private storage, at ``cubbyhole/``.

A token sees only its own paths: values are kept in the mount under ``<token_id>/<path>``,
sealed with the mount's data key like any other, and go with the token when it is revoked
(``backends.token.destroy_cubbyhole``). Read, write, list and delete answer in KV version
1's shapes, without leases. A wrapped answer waits in its wrapping token's cubbyhole, at
``response`` (``backends.wrapping``).
"""

from __future__ import annotations

from typing import ClassVar

from backends.contract import MountView, PathRules
from backends.errors import InvalidRequestError
from backends.request import Request, Response

UNWRAP_INSTEAD = (  # OpenBao's words for a wrapping token reading its answer directly
    "Reading from 'cubbyhole/response' is deprecated. Please use sys/wrapping/unwrap to "
    "unwrap responses, as it provides additional security checks and other benefits."
)


class CubbyholeBackend:
    """Vault's cubbyhole: per-token key/value storage, mounted once by init."""

    paths: ClassVar[PathRules] = PathRules(existence_check=True, per_token=True)

    def handle(self, view: MountView, request: Request) -> Response:
        if not request.token_id:
            raise InvalidRequestError("cubbyhole requires a token")
        own, path, op = f"{request.token_id}/", request.path, request.operation
        if op == "list":
            if path and not path.endswith("/"):
                path += "/"
            return Response(data={"keys": view.list(own + path)})
        if not path or path.endswith("/"):
            raise InvalidRequestError("missing path")
        if op == "read":
            value = view.get(own + path)
            if value is None:
                return Response()
            warnings = (UNWRAP_INSTEAD,) if path == "response" else ()
            return Response(data=value, warnings=warnings)
        if op == "write":
            if not request.data:
                raise InvalidRequestError("missing data fields")
            view.put(own + path, dict(request.data))
            return Response()
        if op == "delete":
            if view.get(own + path) is not None:
                view.delete(own + path)
            return Response()
        raise InvalidRequestError(f"unsupported operation: {op}")
