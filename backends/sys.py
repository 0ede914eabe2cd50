"""The ``sys/`` backend: the mount table (mount, unmount, remount, list)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from backends.errors import ConflictError, InvalidRequestError, PermissionDeniedError
from backends.request import Request, Response
from backends.router import normalize_mount_path
from backends.ttl import parse_duration
from projections import NANOS, MountCreated, MountMoved, MountRemoved, StoreState

if TYPE_CHECKING:
    from backends.core import Core, MountView

PROTECTED_PATHS = ("sys/", "audit/", "auth/")
MOUNTABLE_TYPES = ("generic", "aws")


class SysBackend:
    """Serves ``sys/mounts[/<path>]``, ``sys/remount``, ``sys/renew``, ``sys/revoke*/``
    and ``sys/leases``."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def handle(self, view: MountView, request: Request) -> Response:
        path, op = request.path.rstrip("/"), request.operation
        if path == "mounts" and op == "read":
            return self.list_mounts(view.state)
        if path.startswith("mounts/") and op == "write":
            return self.mount(request, path.removeprefix("mounts/"))
        if path.startswith("mounts/") and op == "delete":
            return self.unmount(request, path.removeprefix("mounts/"))
        if path == "remount" and op == "write":
            return self.remount(request)
        if path == "renew" and op == "write":
            return self.renew(request)
        if path == "leases" and op in ("read", "list"):
            return self.list_leases(view.state, str(request.data.get("prefix") or ""))
        for route, force in (
            ("revoke/", False),
            ("revoke-prefix/", False),
            ("revoke-force/", True),
        ):
            if request.path.startswith(route) and op == "write":
                return self.revoke(request, request.path.removeprefix(route), route, force)
        raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")

    def list_mounts(self, state: StoreState) -> Response:
        return Response(
            data={
                mount.path: {
                    "type": mount.type,
                    "description": mount.description,
                    "config": {
                        "default_lease_ttl": mount.default_lease_ttl,
                        "max_lease_ttl": mount.max_lease_ttl,
                    },
                }
                for mount in state.mounts.sorted()
            }
        )

    def _conflict(self, path: str, ignore: str = "") -> None:
        for existing in self.core.state.mounts.by_path:
            if existing != ignore and (path.startswith(existing) or existing.startswith(path)):
                raise ConflictError(f"path is already in use at {existing}")

    def mount(self, request: Request, raw_path: str) -> Response:
        path = normalize_mount_path(raw_path)
        if not path:
            raise InvalidRequestError("missing mount path")
        data: dict[str, Any] = request.data
        backend_type = str(data.get("type") or "")
        if not backend_type:
            raise InvalidRequestError("missing backend type")
        if any(path.startswith(p) for p in PROTECTED_PATHS):
            raise PermissionDeniedError(f"cannot mount '{path}'")
        if backend_type not in MOUNTABLE_TYPES:
            raise InvalidRequestError(f"unknown backend type: {backend_type}")
        self._conflict(path)
        config = data.get("config") or {}
        default_ttl = parse_duration(config.get("default_lease_ttl") or 0)
        max_ttl = parse_duration(config.get("max_lease_ttl") or 0)
        if default_ttl and max_ttl and default_ttl > max_ttl:
            raise InvalidRequestError("default lease TTL cannot be greater than max lease TTL")
        from backends.core import new_id

        self.core.stage(
            MountCreated(
                actor=request.actor,
                request_id=request.request_id,
                mount_id=new_id(),
                path=path,
                backend_type=backend_type,
                description=str(data.get("description") or ""),
                default_lease_ttl=default_ttl,
                max_lease_ttl=max_ttl,
            )
        )
        return Response()

    def unmount(self, request: Request, raw_path: str) -> Response:
        path = normalize_mount_path(raw_path)
        if any(path.startswith(p) for p in PROTECTED_PATHS):
            raise PermissionDeniedError(f"cannot unmount '{path}'")
        mount = self.core.state.mounts.at(path)
        if mount is None:
            raise InvalidRequestError("no matching mount")
        # The seed: "all of its secrets are revoked ... If either fails, it remains mounted".
        self.core.expiration.revoke_mount(mount.id, "unmount", request)
        self.core.stage(
            MountRemoved(
                actor=request.actor, request_id=request.request_id, mount_id=mount.id, path=path
            )
        )
        return Response()

    def remount(self, request: Request) -> Response:
        source = normalize_mount_path(str(request.data.get("from") or ""))
        target = normalize_mount_path(str(request.data.get("to") or ""))
        if not source or not target:
            raise InvalidRequestError("both 'from' and 'to' paths are required")
        for path in (source, target):
            if any(path.startswith(p) for p in PROTECTED_PATHS):
                raise PermissionDeniedError(f"cannot remount '{path}'")
        mount = self.core.state.mounts.at(source)
        if mount is None:
            raise InvalidRequestError(f"no matching mount at '{source}'")
        self._conflict(target, ignore=source)
        self.core.expiration.revoke_mount(mount.id, "remount", request)
        self.core.stage(
            MountMoved(
                actor=request.actor,
                request_id=request.request_id,
                mount_id=mount.id,
                from_path=source,
                to_path=target,
            )
        )
        return Response()

    def renew(self, request: Request) -> Response:
        lease_id = str(request.data.get("lease_id") or "")
        increment = parse_duration(request.data.get("increment") or 0)
        lease = self.core.expiration.renew(lease_id, increment, request)
        remaining = max(0, round((lease.expires - time.time_ns()) / NANOS))
        return Response(data={}, lease_id=lease.id, lease_duration=remaining, renewable=True)

    def revoke(self, request: Request, target: str, route: str, force: bool) -> Response:
        if not target:
            raise InvalidRequestError("missing lease id or prefix")
        expiration = self.core.expiration
        if route == "revoke/":
            expiration.revoke(expiration.lookup(target), "explicit", request)
            return Response(data={"revoked": [target]})
        revoked = expiration.revoke_prefix(target, "prefix", request, force=force)
        return Response(data={"revoked": revoked})

    def list_leases(self, state: StoreState, prefix: str) -> Response:
        leases = [
            {
                "lease_id": lease.id,
                "path": lease.path,
                "issued": lease.issued,
                "expires": lease.expires,
                "renewable": lease.renewable,
                "failures": lease.failures,
                "last_error": lease.last_error,
            }
            for lease in state.leases_under(prefix)
        ]
        return Response(data={"leases": leases})
