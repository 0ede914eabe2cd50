"""The ``sys/`` backend: every command that is not a secret's read or write is a request here.

Vault's paths, in the shapes of Vault's answers: ``sys/mounts[/P[/tune]]``, ``sys/remount``
and ``sys/remount/status/ID``, ``sys/internal/ui/mounts[/P]``, ``sys/leases/lookup[/P]``,
``sys/leases/renew[/ID]``, ``sys/leases/revoke[/ID]``, ``sys/leases/revoke-prefix/P`` and
``revoke-force/P``, ``sys/rotate[/keyring]``, ``sys/key-status``, ``sys/audit-hash/P``,
``sys/seal-status``, ``sys/health``, ``sys/leader`` and ``sys/init``; policies and
capabilities (``backends.sys_policy``), auth methods (``backends.sys_auth``), audit
devices (``sys/audit[/NAME]``, ``backends.sys_audit``). Vault 0.5's,
which the seed's commands use: ``sys/renew``, ``sys/revoke[-prefix|-force]/X``, ``sys/leases``. Our
own, for what Vault lacks, under ``sys/vaultlog/``: ``audit`` (the trail), ``who-could-read``,
``verify``, ``history/P``, ``restore/P`` and ``head``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, ClassVar

import msgspec

from backends.auth import ROOT_POLICY, Authorizer
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
from backends.mounting import config_ttl, stage_mount
from backends.password_policy import ROUTE as PASSWORD_POLICIES
from backends.password_policy import serve_password_policies
from backends.paths import clean_path, mount_point
from backends.request import Request, Response, who
from backends.sys_audit import serve_audit
from backends.sys_auth import AUTH_METHODS, serve_auth
from backends.sys_leases import serve_leases
from backends.sys_policy import serve_policies
from backends.ttl import SYSTEM_DEFAULT_TTL
from backends.version import CLUSTER_NAME, VAULT_VERSION
from backends.wrapping import serve_wrapping
from eventstore import ShreddedError
from projections import (
    KeyRotated,
    Mount,
    MountMoved,
    MountRemoved,
    SecretRead,
    StoreState,
)
from projections.audit import AuditFilter, audit_trail, rfc3339, secret_history
from projections.events import MountTuned
from projections.progress import counted

# mount points no one mounts, unmounts or moves (cubbyhole/: a server's, made by init)
RESERVED = ("sys/", "audit/", "auth/", "cubbyhole/")
KV_TYPES = ("kv", "generic")  # KV version 1, under its two names
_UUIDS = uuid.UUID("5b0e5c1e-7a11-4c0f-9d8e-7661756c746c")  # namespace of derived uuids
_STATUS_PATHS = ("seal-status", "health", "leader", "init")


def cluster_uuid(store_id: str) -> str:
    """The store's cluster id, in a UUID's shape (derived: stable for a store)."""
    return str(uuid.uuid5(_UUIDS, store_id))


def health(
    *, initialized: bool, sealed: bool, cluster_id: str = "", standby: bool = False
) -> dict[str, Any]:
    """``sys/health``'s answer, in Vault's shape (the cluster only once unsealed)."""
    data: dict[str, Any] = {
        "initialized": initialized,
        "sealed": sealed,
        "standby": sealed or standby,
        "replication_performance_mode": "unknown" if sealed else "disabled",
        "replication_dr_mode": "unknown" if sealed else "disabled",
        "server_time_utc": int(time.time()),
        "version": VAULT_VERSION,
    }
    if cluster_id:
        data.update(cluster_name=CLUSTER_NAME, cluster_id=cluster_id)
    return data


def seal_status(
    storage: str,
    *,
    t: int,
    n: int,
    initialized: bool = True,
    progress: int = 0,
    nonce: str = "",
    cluster_id: str = "",
    seal_type: str = "shamir",
    recovery_seal: bool = False,
) -> dict[str, Any]:
    """``sys/seal-status``'s answer, in Vault's shape: sealed unless ``cluster_id`` is
    given (it is known only once unsealed); ``t`` and ``n`` are the recovery key's when
    ``recovery_seal`` (an auto-unsealing ``seal_type``), as Vault's."""
    data: dict[str, Any] = {
        "type": seal_type,
        "initialized": initialized,
        "sealed": not cluster_id,
        "t": t,
        "n": n,
        "progress": progress,
        "nonce": nonce,
        "recovery_seal": recovery_seal,
        **({"recovery_seal_type": "shamir"} if recovery_seal else {}),
        "version": VAULT_VERSION,
        "commit_date": "",
        "migration": False,
    }
    if cluster_id:
        data.update(cluster_name=CLUSTER_NAME, cluster_id=cluster_id)
    data["storage_type"] = storage
    return data


class SysBackend:
    """Serves ``sys/``: the mount table, leases, keys, status and the store's history."""

    paths: ClassVar[PathRules] = PathRules(audit_reads=False, reserved=RESERVED)

    def handle(self, view: MountView, request: Request) -> Response:
        session, path, op = view.session, request.path.rstrip("/"), request.operation
        if path == "mounts" or path.startswith("mounts/"):
            return self._mounts(session, path.removeprefix("mounts").lstrip("/"), op)
        if path == "remount" and op == "write":
            return self.remount(session)
        if path.startswith("remount/status/") and op == "read":
            return self.remount_status(session, path.removeprefix("remount/status/"))
        if path == "internal/ui/mounts" and op == "read":
            return self.ui_mounts(session.state)
        if path.startswith("internal/ui/mounts/") and op == "read":
            return self.ui_mount(session, request.path.removeprefix("internal/ui/mounts/"))
        if path in _STATUS_PATHS:
            return self._status(session, path, op)
        if path == "leases" or path.startswith(("leases/", "renew", "revoke")):
            return serve_leases(session, request, path, op)
        if path == PASSWORD_POLICIES or path.startswith(f"{PASSWORD_POLICIES}/"):
            return serve_password_policies(session, request, path, op)
        if path.startswith(("policy", "policies/", "capabilities")):
            return serve_policies(session, request, path, op)
        if path == "auth" or path.startswith("auth/"):
            return serve_auth(session, request, path, op, self.tune)
        if path.startswith("wrapping/"):
            return serve_wrapping(session, request, path, op)
        if path in ("rotate", "rotate/keyring") and op == "write":
            return self.rotate(session)
        if path == "key-status" and op == "read":
            return self.key_status(session)
        if request.path.startswith("audit-hash/") and op == "write":
            return self.audit_hash(session, request.path.removeprefix("audit-hash/"))
        if path == "audit" or path.startswith("audit/") or path == "vaultlog/who-could-read":
            return serve_audit(session, request, path, op)
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

    def _mounts(self, session: Session, target: str, op: str) -> Response:
        if not target and op == "read":
            return self.list_mounts(session.state)
        if target.endswith("/tune") or target == "tune":
            point = target.removesuffix("tune").rstrip("/")
            if op == "read":
                return self.read_tune(session, point)
            if op == "write":
                return self.tune(session, point)
        elif op == "read":
            return self.read_mount(session.state, target)
        elif op == "write":
            return self.mount(session, target)
        elif op == "delete":
            return self.unmount(session, target)
        raise InvalidRequestError(f"unsupported operation: {op} sys/mounts/{target}")

    # ---- the mount table -----------------------------------------------------------------

    def list_mounts(self, state: StoreState) -> Response:
        """The secrets engines (auth methods are ``sys/auth``'s)."""
        mounts = [m for m in state.mounts.sorted() if not m.path.startswith("auth/")]
        return Response(data={m.path: mount_info(m) for m in mounts})

    def read_mount(self, state: StoreState, raw_path: str) -> Response:
        path = mount_point(raw_path)
        mount = state.mounts.at(path)
        if mount is None:
            raise InvalidRequestError(f"No secret engine mount at {path}")
        return Response(data=mount_info(mount))

    def _conflict(self, session: Session, path: str, ignore: str = "", quote: bool = False) -> None:
        for existing in session.state.mounts.by_path:
            if existing != ignore and (path.startswith(existing) or existing.startswith(path)):
                if quote:  # Vault words the two checks differently
                    raise ConflictError(f'path already in use at "{existing}"')
                raise ConflictError(f"path is already in use at {existing}")

    def _reserved(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.paths.reserved)

    def mount(self, session: Session, raw_path: str) -> Response:
        path = mount_point(raw_path)
        data: dict[str, Any] = session.request.data
        backend_type = data.get("type")
        if not backend_type or not isinstance(backend_type, str):
            raise InvalidRequestError("backend type must be specified as a string")
        if self._reserved(path):
            raise InvalidRequestError(f'cannot mount "{path}"')
        if backend_type in AUTH_METHODS:  # an auth method is enabled by sys/auth
            raise InvalidRequestError(f"plugin not found in the catalog: {backend_type}")
        if backend_type in ("system", "token", "cubbyhole"):
            where = {"system": "sys/", "token": "auth/token/"}.get(backend_type, "cubbyhole/")
            raise InvalidRequestError(f"the {backend_type} backend is mounted once, at {where}")
        session.backend(backend_type)  # an unknown type is refused here
        if backend_type in KV_TYPES:
            _kv_version_1(data.get("options"))
        self._conflict(session, path)
        return stage_mount(session, path, backend_type)

    def unmount(self, session: Session, raw_path: str) -> Response:
        """Vault's: unmounting a path where nothing is mounted succeeds, doing nothing."""
        path = mount_point(raw_path)
        if self._reserved(path):
            raise InvalidRequestError(f'cannot unmount "{path}"')
        mount = session.state.mounts.at(path)
        if mount is None:
            return Response()
        # The seed: "all of its secrets are revoked ... If either fails, it remains mounted".
        ExpirationManager(session).revoke_mount(mount.id, "unmount")
        session.stage(MountRemoved(**who(session.request), mount_id=mount.id, path=path))
        return Response()

    def remount(self, session: Session) -> Response:
        """Move a mount; answered with a ``migration_id`` (the request's id) as Vault's
        asynchronous move is, although this one is done before the answer."""
        data = session.request.data
        source, target = data.get("from"), data.get("to")
        if not (source and target and isinstance(source, str) and isinstance(target, str)):
            raise InvalidRequestError("both 'from' and 'to' path must be specified as a string")
        source, target = mount_point(source), mount_point(target)
        if self._reserved(source):
            raise InvalidRequestError(f'cannot remount "{source}"')
        if self._reserved(target):
            raise InvalidRequestError(f"cannot remount to destination {target}")
        if target == source:
            raise InvalidRequestError(f"cannot remount '{source}' onto itself")
        if target.startswith(source):
            raise InvalidRequestError(f"cannot remount '{source}' under itself ('{target}')")
        mount = session.state.mounts.at(source)
        if mount is None:
            raise InvalidRequestError(f'no matching mount at "{source}"')
        self._conflict(session, target, ignore=source, quote=True)
        ExpirationManager(session).revoke_mount(mount.id, "remount")
        request = session.request
        session.stage(
            MountMoved(**who(request), mount_id=mount.id, from_path=source, to_path=target)
        )
        return Response(data={"migration_id": request.request_id})

    def remount_status(self, session: Session, migration_id: str) -> Response:
        """The move a ``migration_id`` names (it finished when it was logged), or nothing."""
        for event in session.store.events():
            if isinstance(event, MountMoved) and event.request_id == migration_id:
                info = {
                    "source_mount": event.from_path,
                    "target_mount": event.to_path,
                    "status": "success",
                }
                return Response(data={"migration_id": migration_id, "migration_info": info})
        return Response()

    def read_tune(self, session: Session, raw_path: str) -> Response:
        """A mount's TTLs as they apply: its own, else the server's, else the system's."""
        path = mount_point(raw_path)
        mount = session.state.mounts.at(path)
        default_ttl, max_ttl = session.lease_ttls
        if mount is None:
            raise InvalidRequestError(f'cannot fetch sysview for path "{path}"')
        data: dict[str, Any] = {
            "default_lease_ttl": mount.default_lease_ttl or default_ttl or SYSTEM_DEFAULT_TTL,
            "description": mount.description,
            "force_no_cache": False,
            "max_lease_ttl": mount.max_lease_ttl or max_ttl or SYSTEM_DEFAULT_TTL,
        }
        options = _options(mount)
        if options is not None:
            data["options"] = options
        if mount.type == "system":
            data["passthrough_request_headers"] = ["Accept"]
        return Response(data=data)

    def tune(self, session: Session, raw_path: str) -> Response:
        """Change a mount's description or lease TTLs (``"system"``: back to the default;
        absent or empty: unchanged). Leases already issued keep their TTLs."""
        path = mount_point(raw_path)
        mount = session.state.mounts.at(path)
        if mount is None:
            raise InvalidRequestError(f'tune of path "{path}" failed: no mount entry found')
        data = session.request.data
        if mount.type in KV_TYPES:
            _kv_version_1(data.get("options"))
        default_ttl = config_ttl(data.get("default_lease_ttl"), mount.default_lease_ttl)
        max_ttl = config_ttl(data.get("max_lease_ttl"), mount.max_lease_ttl)
        if default_ttl and max_ttl and max_ttl < default_ttl:
            raise InvalidRequestError(
                f"backend max lease TTL of {max_ttl} would be less than backend default "
                f"lease TTL of {default_ttl}"
            )
        description = data.get("description")
        description = mount.description if description is None else str(description)
        tuned = replace(
            mount,
            description=description,
            default_lease_ttl=default_ttl,
            max_lease_ttl=max_ttl,
        )
        if tuned != mount:
            session.stage(
                MountTuned(
                    **who(session.request),
                    mount_id=mount.id,
                    description=description,
                    default_lease_ttl=default_ttl,
                    max_lease_ttl=max_ttl,
                )
            )
        return Response()

    def ui_mounts(self, state: StoreState) -> Response:
        return Response(data={"auth": {}, "secret": self.list_mounts(state).data})

    def ui_mount(self, session: Session, raw_path: str) -> Response:
        """The mount serving a path, as the preflight of Vault's ``kv`` commands asks: only
        to a caller whose policies grant something there (the default policy lets every
        token ask)."""
        path, state = clean_path(raw_path), session.state
        found = state.mounts.route(path)
        token = state.tokens.get(session.request.token_id)
        if found is None or (
            token is not None
            and ROOT_POLICY not in token.policies
            and not Authorizer().capabilities(state, token, path)
        ):
            shown = path if path.endswith("/") else f"{path}/"
            raise PermissionDeniedError(
                "preflight capability check returned 403, please ensure client's policies "
                f'grant access to path "{shown}"'
            )
        return Response(data=mount_info(found[0], with_path=True))

    # ---- status ----------------------------------------------------------------------------

    def _status(self, session: Session, path: str, op: str) -> Response:
        if path == "init" and op == "write":
            raise InvalidRequestError("Vault is already initialized")
        if op != "read":
            raise InvalidRequestError(f"unsupported operation: {op} sys/{path}")
        if path == "init":
            return Response(data={"initialized": True})
        if path == "leader":
            return Response(data={"ha_enabled": False})
        cluster_id = cluster_uuid(session.store.keyring.store_id)
        if path == "health":
            return Response(data=health(initialized=True, sealed=False, cluster_id=cluster_id))
        storage = "inmem" if session.store.directory is None else "file"
        return Response(data=seal_status(storage, t=1, n=1, cluster_id=cluster_id))

    # ---- keys ----------------------------------------------------------------------------

    def rotate(self, session: Session) -> Response:
        if not session.store.writable:
            raise WriterNeeded
        term = session.store.rotate(KeyRotated(**who(session.request), term=0))
        return self.key_status(session, term)

    def key_status(self, session: Session, term: int = 0) -> Response:
        """The barrier key term in use; ``encryptions``: the records sealed under it."""
        store = session.store
        term = term or store.keyring.term
        installed = store.keyring.term_installed[term]
        sealed = sum(1 for frame in store.log.frames() if frame.header.term == term)
        return Response(
            data={"encryptions": sealed, "install_time": rfc3339(installed), "term": term}
        )

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
        store = session.store
        events = counted(store.events(), "reading the trail", lambda: store.log.head.seq)
        entries = [e.as_dict() for e in audit_trail(events) if keep.keeps(e)]
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
        inner = msgspec.structs.replace(session.request, operation="write", path=relative)
        target = Session(session.store, inner, session.backends)
        view = MountView(target, mount)
        view.put(relative, view.open_value(sealed, "value", relative))
        session.staged += target.staged
        return Response(data={"restored": True, "seq": from_seq})


# ---- Vault's shapes ----------------------------------------------------------------------


def mount_info(mount: Mount, *, with_path: bool = False) -> dict[str, Any]:
    """A mount as Vault's ``sys/mounts`` shows one (keys in Vault's order, which is
    alphabetical); ``with_path`` adds its mount point, as ``sys/internal/ui/mounts`` does."""
    system = mount.type == "system"
    config: dict[str, Any] = {
        "default_lease_ttl": mount.default_lease_ttl,
        "force_no_cache": False,
        "max_lease_ttl": mount.max_lease_ttl,
    }
    if system:
        config["passthrough_request_headers"] = ["Accept"]
    info: dict[str, Any] = {"accessor": f"{mount.type}_{mount.id[:8]}", "config": config}
    if mount.type not in ("system", "generic"):
        info["deprecation_status"] = "supported"
    info |= {
        "description": mount.description,
        "external_entropy_access": False,
        "local": False,
        "options": _options(mount),
    }
    if with_path:
        info["path"] = mount.path
    info |= {
        "plugin_version": "",
        "running_plugin_version": f"v{VAULT_VERSION}+builtin.vault",
        "running_sha256": "",
        "seal_wrap": system,
        "type": mount.type,
        "uuid": str(uuid.uuid5(_UUIDS, mount.id)),
    }
    return info


def _options(mount: Mount) -> dict[str, str] | None:
    if mount.type == "kv":
        return {"version": "1"}
    return {} if mount.type == "generic" else None


def _kv_version_1(options: object) -> None:
    """Refuse a KV version other than 1 (the only one vaultlog serves)."""
    version = options.get("version") if isinstance(options, dict) else None
    if version not in (None, "", "1", 1):
        raise InvalidRequestError(
            f"KV version {version} is not supported: vaultlog serves KV version 1 only"
        )
