"""The ``sys/`` backend: every command that is not a secret's read or write is a request here.

Vault's paths where Vault has one: ``sys/mounts[/P]``, ``sys/remount``, ``sys/renew`` and
``sys/leases/renew``, ``sys/revoke[-prefix|-force]/X`` and ``sys/leases/revoke...``,
``sys/leases/lookup``, ``sys/rotate``, ``sys/key-status``, ``sys/audit-hash/P``. Our own,
for what Vault lacks, under ``sys/vaultlog/``: ``audit`` (the trail), ``verify``,
``history/P``, ``restore/P`` and ``head``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, ClassVar

from backends.contract import MountView, PathRules, Session, WriterNeeded
from backends.errors import (
    ConflictError,
    InvalidRequestError,
    NoHandlerError,
    PermissionDeniedError,
    ShreddedDataError,
)
from backends.expiration import ExpirationManager
from backends.moments import parse_time, resolve_at
from backends.paths import clean_path, mount_point
from backends.request import Request, Response, who
from backends.ttl import parse_duration
from eventstore import ShreddedError
from projections import (
    NANOS,
    KeyRotated,
    MountCreated,
    MountMoved,
    MountRemoved,
    SecretRead,
    StoreState,
)
from projections.audit import AuditFilter, audit_trail, rfc3339, secret_history
from projections.store import new_id

RESERVED = ("sys/", "audit/", "auth/")  # mount points no one mounts, unmounts or moves


class SysBackend:
    """Serves ``sys/``: the mount table, leases, keys and the store's history."""

    paths: ClassVar[PathRules] = PathRules(audit_reads=False, reserved=RESERVED)

    def handle(self, view: MountView, request: Request) -> Response:
        session, path, op = view.session, request.path.rstrip("/"), request.operation
        data = request.data
        leases = ExpirationManager(session)
        if path == "mounts" and op == "read":
            return self.list_mounts(session.state)
        if path.startswith("mounts/") or path == "mounts":
            target = path.removeprefix("mounts").lstrip("/")
            if op == "write":
                return self.mount(session, target)
            if op == "delete":
                return self.unmount(session, target)
        if path == "remount" and op == "write":
            return self.remount(session)
        if path in ("renew", "leases/renew") and op == "write":
            return self.renew(session, leases)
        if path in ("leases", "leases/lookup") and op in ("read", "list", "write"):
            if path == "leases/lookup" and data.get("lease_id"):
                return self.lookup(session, leases, str(data["lease_id"]))
            return self.list_leases(session.state, str(data.get("prefix") or ""))
        if path == "leases/revoke" and op in ("write", "delete"):
            return self.revoke(leases, str(data.get("lease_id") or ""), "revoke/")
        for route, force in (("revoke-prefix/", False), ("revoke-force/", True)):
            for prefix in (route, f"leases/{route}"):
                if request.path.startswith(prefix) and op == "write":
                    return self.revoke(leases, request.path[len(prefix) :], route, force)
        if request.path.startswith("revoke/") and op == "write":
            return self.revoke(leases, request.path.removeprefix("revoke/"), "revoke/")
        if path == "rotate" and op == "write":
            return self.rotate(session)
        if path == "key-status" and op == "read":
            return self.key_status(session)
        if request.path.startswith("audit-hash/") and op == "write":
            return self.audit_hash(session, request.path.removeprefix("audit-hash/"))
        if path == "vaultlog/audit" and op == "read":
            return self.audit(session)
        if path == "vaultlog/verify" and op == "read":
            return self.verify(session)
        if path == "vaultlog/head" and op == "read":
            head = session.store.head
            return Response(data={"seq": head.seq, "hash": head.hash.hex(), "head": str(head)})
        if request.path.startswith("vaultlog/history/") and op == "read":
            return self.history(session, request.path.removeprefix("vaultlog/history/"))
        if request.path.startswith("vaultlog/restore/") and op == "write":
            return self.restore(session, request.path.removeprefix("vaultlog/restore/"))
        raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")

    # ---- the mount table -----------------------------------------------------------------

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

    def _conflict(self, session: Session, path: str, ignore: str = "") -> None:
        for existing in session.state.mounts.by_path:
            if existing != ignore and (path.startswith(existing) or existing.startswith(path)):
                raise ConflictError(f"path is already in use at {existing}")

    def _not_reserved(self, path: str, what: str) -> None:
        if any(path.startswith(p) for p in self.paths.reserved):
            raise PermissionDeniedError(f"cannot {what} '{path}'")

    def mount(self, session: Session, raw_path: str) -> Response:
        path = mount_point(raw_path)
        data: dict[str, Any] = session.request.data
        backend_type = str(data.get("type") or "")
        if not backend_type:
            raise InvalidRequestError("missing backend type")
        self._not_reserved(path, "mount")
        if backend_type == "system":
            raise InvalidRequestError("the system backend is mounted once, at sys/")
        session.backend(backend_type)  # an unknown type is refused here
        self._conflict(session, path)
        config = data.get("config") or {}
        default_ttl = parse_duration(config.get("default_lease_ttl") or 0)
        max_ttl = parse_duration(config.get("max_lease_ttl") or 0)
        if default_ttl and max_ttl and default_ttl > max_ttl:
            raise InvalidRequestError("default lease TTL cannot be greater than max lease TTL")
        session.stage(
            MountCreated(
                **who(session.request),
                mount_id=new_id(),
                path=path,
                backend_type=backend_type,
                description=str(data.get("description") or ""),
                default_lease_ttl=default_ttl,
                max_lease_ttl=max_ttl,
            )
        )
        return Response()

    def unmount(self, session: Session, raw_path: str) -> Response:
        path = mount_point(raw_path)
        self._not_reserved(path, "unmount")
        mount = session.state.mounts.at(path)
        if mount is None:
            raise InvalidRequestError("no matching mount")
        # The seed: "all of its secrets are revoked ... If either fails, it remains mounted".
        ExpirationManager(session).revoke_mount(mount.id, "unmount")
        session.stage(MountRemoved(**who(session.request), mount_id=mount.id, path=path))
        return Response()

    def remount(self, session: Session) -> Response:
        data = session.request.data
        source = mount_point(str(data.get("from") or ""))
        target = mount_point(str(data.get("to") or ""))
        for path in (source, target):
            self._not_reserved(path, "remount")
        if target == source:
            raise InvalidRequestError(f"cannot remount '{source}' onto itself")
        if target.startswith(source):
            raise InvalidRequestError(f"cannot remount '{source}' under itself ('{target}')")
        mount = session.state.mounts.at(source)
        if mount is None:
            raise InvalidRequestError(f"no matching mount at '{source}'")
        self._conflict(session, target, ignore=source)
        ExpirationManager(session).revoke_mount(mount.id, "remount")
        session.stage(
            MountMoved(**who(session.request), mount_id=mount.id, from_path=source, to_path=target)
        )
        return Response()

    # ---- leases --------------------------------------------------------------------------

    def renew(self, session: Session, leases: ExpirationManager) -> Response:
        data = session.request.data
        lease_id = str(data.get("lease_id") or "")
        increment = parse_duration(data.get("increment") or 0)
        lease = leases.renew(lease_id, increment)
        remaining = max(0, round((lease.expires - time.time_ns()) / NANOS))
        return Response(data={}, lease_id=lease.id, lease_duration=remaining, renewable=True)

    def revoke(
        self, leases: ExpirationManager, target: str, route: str, force: bool = False
    ) -> Response:
        if not target:
            raise InvalidRequestError("missing lease id or prefix")
        if route == "revoke/":
            leases.revoke(leases.lookup(target), "explicit")
            return Response(data={"revoked": [target]})
        revoked = leases.revoke_prefix(target, "prefix", force=force)
        return Response(data={"revoked": revoked})

    def lookup(self, session: Session, leases: ExpirationManager, lease_id: str) -> Response:
        lease = leases.lookup(lease_id)
        ttl = max(0, round((lease.expires - time.time_ns()) / NANOS))
        return Response(
            data={
                "id": lease.id,
                "issue_time": rfc3339(lease.issued),
                "expire_time": rfc3339(lease.expires),
                "renewable": lease.renewable,
                "ttl": ttl,
            }
        )

    def list_leases(self, state: StoreState, prefix: str) -> Response:
        now = time.time_ns() if state.seq else 0
        leases = [
            {
                "lease_id": lease.id,
                "path": lease.path,
                "issued": lease.issued,
                "expires": lease.expires,
                "renewable": lease.renewable,
                "expired": lease.expires <= now,
                "failures": lease.failures,
                "last_error": lease.last_error,
            }
            for lease in state.leases_under(prefix)
        ]
        return Response(data={"leases": leases})

    # ---- keys ----------------------------------------------------------------------------

    def rotate(self, session: Session) -> Response:
        if not session.store.writable:
            raise WriterNeeded
        term = session.store.rotate(KeyRotated(**who(session.request), term=0))
        return self.key_status(session, term)

    def key_status(self, session: Session, term: int = 0) -> Response:
        keyring = session.store.keyring
        term = term or keyring.term
        installed = keyring.term_installed[term]
        return Response(data={"term": term, "install_time": rfc3339(installed)})

    def audit_hash(self, session: Session, path: str) -> Response:
        """Vault's ``sys/audit-hash``: the HMAC the trail shows for ``input`` in the mount
        serving ``path``; gone with the mount's data key."""
        value = session.request.data.get("input")
        if not isinstance(value, str):
            raise InvalidRequestError("missing input")
        found = session.state.mounts.route(clean_path(path) or "secret/")
        if found is None or found[0].type == "system":
            raise NoHandlerError(f"no mount serves '{path}'")
        mount = found[0]
        try:
            digest = session.store.value_hmac(mount.id, value)
        except ShreddedError:
            raise ShreddedDataError(session.key_lost(mount)) from None
        return Response(data={"hash": f"hmac-sha256:{digest.hex()}"})

    # ---- the store's history -------------------------------------------------------------

    def audit(self, session: Session) -> Response:
        data = session.request.data
        keep = AuditFilter(
            since=parse_time(str(data["since"])) if data.get("since") else 0,
            until=parse_time(str(data["until"])) if data.get("until") else 0,
            path=clean_path(str(data.get("path") or "")),
            actor=str(data.get("actor") or ""),
            type=str(data.get("type") or ""),
        )
        entries = [e.as_dict() for e in audit_trail(session.store.events()) if keep.keeps(e)]
        return Response(data={"entries": entries})

    def verify(self, session: Session) -> Response:
        against = str(session.request.data.get("against") or "") or None
        try:
            report = session.store.verify(against)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        return Response(
            data={
                "ok": report.ok,
                "records": report.records,
                "head": str(report.head) if report.head else "",
                "bad_seq": report.bad_seq,
                "problem": report.problem,
            }
        )

    def history(self, session: Session, raw_path: str) -> Response:
        path = clean_path(raw_path)
        found = session.state.mounts.route(path)
        current = (found[0].id, found[1]) if found else None
        versions = secret_history(session.store.history_events(path), path, current)
        rows = [
            {
                "seq": e.seq,
                "time": e.time,
                "actor": e.actor,
                "operation": e.operation,
                "value": e.detail,
            }
            for e in versions
        ]
        return Response(data={"versions": rows})

    def restore(self, session: Session, raw_path: str) -> Response:
        """Write back the value a path had at ``at`` (a seq or a time, in the request's
        data), as a new event; the old value's read is audited. The path is followed
        through the mount serving it now, so a version written before a remount can be
        restored too. ``restored`` is false when there was no value then."""
        at = str(session.request.data.get("at") or "")
        if not at:
            raise InvalidRequestError("missing at: the seq or time to restore from")
        from_seq = resolve_at(session.store, at)
        path = clean_path(raw_path)
        found = session.state.mounts.route(path)
        if found is None or found[0].type == "system":
            raise NoHandlerError(f"no handler for route '{path}'")
        mount, relative = found
        sealed = session.store.value_at(mount.id, relative, from_seq)
        session.stage(SecretRead(**who(session.request), mount_id=mount.id, path=relative))
        if sealed is None:
            return Response(data={"restored": False, "seq": from_seq})
        inner = replace(session.request, operation="write", path=relative)
        target = Session(session.store, inner, session.backends)
        view = MountView(target, mount)
        view.put(relative, view.open_value(sealed, "value", relative))
        session.staged += target.staged
        return Response(data={"restored": True, "seq": from_seq})
