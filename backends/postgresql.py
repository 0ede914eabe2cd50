"""Vault 0.5's ``postgresql`` mount type, on the database backend's implementation.

Paths: ``config/connection`` (``connection_url``, ``max_open_connections``,
``verify_connection``), ``config/lease`` (``lease``, ``lease_max``), ``roles/NAME``
(``sql``, ``revocation_sql``) and ``creds/NAME``. The connection is kept as the database
backend keeps one named ``connection``, allowed for every role, and a role as one of its
roles, so issuing, renewing, revoking and rolling back are the same code.
"""

from __future__ import annotations

import uuid
from typing import Any

from backends.contract import MountView
from backends.database import NAME, DatabaseBackend, display_name
from backends.errors import NoHandlerError
from backends.request import Request, Response
from backends.ttl import lease_settings, parse_duration

CONNECTION = "connection"


class LegacyPostgresBackend(DatabaseBackend):
    def handle(self, view: MountView, request: Request) -> Response:
        path, op, data = request.path.rstrip("/"), request.operation, request.data
        if path == "config/connection" and op == "write":
            url = data.get("connection_url") or data.get("value")
            config = {
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "allowed_roles": "*",
                "max_open_connections": data.get("max_open_connections") or 2,
                "verify_connection": data.get("verify_connection", True),
            }
            return self.config(view, Request("write", "", config), CONNECTION)
        if path == "config/lease":
            if op == "read":
                return Response(data=view.get("config/lease"))
            if op == "write":
                return self.write_lease(view, data)
        if path == "roles" and op == "list":
            return super().handle(view, request)
        kind, _, name = path.partition("/")
        if kind == "roles" and name and NAME.fullmatch(name):
            if op == "write":
                data = {
                    "db_name": CONNECTION,
                    "creation_statements": data.get("sql"),
                    "revocation_statements": data.get("revocation_sql"),
                }
                return self.role(view, Request("write", "", data), name)
            return self.role(view, request, name)
        if kind == "creds" and name and op == "read" and NAME.fullmatch(name):
            return self.issue(view, request, name)
        raise NoHandlerError(f"unsupported path: {op} {view.mount.path}{request.path}")

    def write_lease(self, view: MountView, data: dict[str, Any]) -> Response:
        view.put("config/lease", lease_settings(data))
        return Response()

    def issue(self, view: MountView, request: Request, role_name: str) -> Response:
        lease = view.get("config/lease") or {}
        role = view.get(f"roles/{role_name}")
        if role is not None:  # 0.5's lease settings stand for the role's TTLs
            role = dict(
                role,
                default_ttl=parse_duration(lease.get("lease") or 0) or 3600,
                max_ttl=parse_duration(lease.get("lease_max") or 0),
            )
        return self.issue_role(view, request, role_name, role)

    def shown_role(self, role: dict[str, Any]) -> dict[str, Any]:
        shown = {"sql": ";".join(role["creation_statements"])}
        if role["revocation_statements"]:
            shown["revocation_sql"] = ";".join(role["revocation_statements"])
        return shown

    def username(self, request: Request, role_name: str) -> str:
        """0.5's: the display name (26 characters at most), a dash and a UUID."""
        return f"{display_name(request)[:26]}-{uuid.uuid4()}"[:63]
