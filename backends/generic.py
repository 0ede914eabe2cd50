"""The ``generic`` backend: stores what it is given, sealed with the mount's data key."""

from __future__ import annotations

from typing import Any, ClassVar

from backends.contract import MountView, PathRules
from backends.errors import InvalidRequestError
from backends.request import Request, Response
from backends.ttl import SYSTEM_DEFAULT_TTL, parse_duration


class GenericBackend:
    """Vault 0.5's passthrough: a ``ttl`` key only sets the lease duration shown on read."""

    paths: ClassVar[PathRules] = PathRules(existence_check=True)

    def handle(self, view: MountView, request: Request) -> Response:
        path, op = request.path, request.operation
        if op == "list":
            if path and not path.endswith("/"):
                path += "/"
            return Response(data={"keys": view.list(path)})
        if not path or path.endswith("/"):
            raise InvalidRequestError(f"missing secret name after '{view.mount.path}{path}'")
        if op == "read":
            value = view.get(path)
            if value is None:
                return Response()
            return Response(data=value, lease_duration=self._ttl(view, value))
        if op == "write":
            if not request.data:
                raise InvalidRequestError("missing data fields")
            self._ttl(view, request.data)  # reject a bad ttl before it is stored
            view.put(path, dict(request.data))
            return Response()
        if op == "delete":
            if view.get(path) is not None:
                view.delete(path)
            return Response()
        raise InvalidRequestError(f"unsupported operation: {op}")

    @staticmethod
    def _ttl(view: MountView, value: dict[str, Any]) -> int:
        raw = value.get("ttl", value.get("lease"))
        if raw is not None:
            return parse_duration(raw)
        return view.mount.default_lease_ttl or SYSTEM_DEFAULT_TTL
