"""``sys/`` leases: look up, list, renew and revoke, in Vault's shapes (``sys/leases/...``)
and the seed's (``sys/renew``, ``sys/revoke[-prefix|-force]/X``, ``sys/leases``)."""

from __future__ import annotations

import time
from typing import Any

from backends.contract import MountView, Session
from backends.errors import InvalidRequestError, ShreddedDataError
from backends.expiration import ExpirationManager, RevocationError
from backends.request import Request, Response
from backends.ttl import human_duration, parse_duration
from projections import NANOS, Lease, StoreState
from projections.audit import rfc3339_nano


def serve_leases(session: Session, request: Request, path: str, op: str) -> Response:
    """``sys/leases/...`` in Vault's shapes, and the seed's ``sys/renew``, ``sys/revoke*``."""
    data, leases = request.data, ExpirationManager(session)
    lease_id = str(data.get("lease_id") or "")
    if path in ("leases", "leases/lookup") and op in ("read", "write") and not lease_id:
        if op == "write":
            raise InvalidRequestError("lease_id must be specified")
        return list_leases(session, str(data.get("prefix") or ""))
    if path == "leases/lookup" and op in ("read", "write"):
        return lookup(session, lease_id)
    if path.startswith("leases/lookup") and op == "list":
        return list_lease_ids(session.state, request.path.removeprefix("leases/lookup"))
    for route in ("renew", "leases/renew"):
        if op == "write" and (path == route or path.startswith(f"{route}/")):
            lease_id = lease_id or request.path[len(route) :].strip("/")
            return renew(session, leases, lease_id, legacy=route == "renew")
    if op in ("write", "delete") and (path == "leases/revoke" or path.startswith("leases/revoke/")):
        lease_id = lease_id or request.path.removeprefix("leases/revoke").strip("/")
        return revoke_lease(session, leases, lease_id, wants_sync(data))
    for route, force in (("revoke-prefix/", False), ("revoke-force/", True)):
        if op == "write" and path.startswith(f"leases/{route}"):
            prefix = request.path.removeprefix(f"leases/{route}")
            return revoke_prefix(session, leases, prefix, force, wants_sync(data))
        if op == "write" and request.path.startswith(route):
            return revoke(leases, request.path[len(route) :], route, force)
    if request.path.startswith("revoke/") and op == "write":
        return revoke(leases, request.path.removeprefix("revoke/"), "revoke/")
    raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")


def renew(session: Session, leases: ExpirationManager, lease_id: str, *, legacy: bool) -> Response:
    if not lease_id:
        raise InvalidRequestError("lease_id must be specified")
    if not legacy:  # Vault's wordings; the seed's renew keeps its own
        found = session.state.leases.get(lease_id)
        if found is None:
            raise InvalidRequestError("lease not found")
        if not found.renewable:
            raise InvalidRequestError("lease is not renewable")
    raw = session.request.data.get("increment") or 0
    increment = parse_duration(raw)
    now = time.time_ns()
    lease = leases.renew(lease_id, increment)
    remaining = max(0, round((lease.expires - now) / NANOS))
    warnings: tuple[str, ...] = ()
    if increment and now + increment * NANOS > lease.max_expires:
        max_ttl = round((lease.max_expires - lease.issued) / NANOS)
        warnings = (
            f'TTL of "{human_duration(increment)}" exceeded the effective max_ttl of '
            f'"{human_duration(max_ttl)}"; TTL value is capped accordingly',
        )
    return Response(
        data={} if legacy else None,
        lease_id=lease.id,
        lease_duration=remaining,
        renewable=True,
        warnings=warnings,
    )


def revoke(leases: ExpirationManager, target: str, route: str, force: bool = False) -> Response:
    """The seed's ``sys/revoke[-prefix|-force]/X``: an unknown lease is an error."""
    if not target:
        raise InvalidRequestError("missing lease id or prefix")
    if route == "revoke/":
        leases.revoke(leases.lookup(target), "explicit")
        return Response(data={"revoked": [target]})
    revoked = leases.revoke_prefix(target, "prefix", force=force)
    return Response(data={"revoked": revoked})


def revoke_lease(
    session: Session, leases: ExpirationManager, lease_id: str, sync: bool
) -> Response:
    """Vault's ``sys/leases/revoke``: an unknown lease is revoked already. Not
    ``sync``: a failure is recorded and retried later, not reported."""
    if not lease_id:
        raise InvalidRequestError("lease_id must be specified")
    lease = session.state.leases.get(lease_id)
    if lease is not None:
        try:
            leases.revoke(lease, "explicit")
        except RevocationError:
            if sync:
                raise
    return Response()


def revoke_prefix(
    session: Session, leases: ExpirationManager, prefix: str, force: bool, sync: bool
) -> Response:
    if not prefix.strip("/"):
        raise InvalidRequestError("missing lease id or prefix")
    if force or sync:
        leases.revoke_prefix(prefix, "prefix", force=force)
        return Response()
    for lease in session.state.leases_under(prefix):
        try:
            leases.revoke(lease, "prefix")
        except RevocationError:
            continue  # recorded; retried on a later open for writing
    return Response()


def lookup(session: Session, lease_id: str) -> Response:
    lease = session.state.leases.get(lease_id)
    if lease is None:
        raise InvalidRequestError("invalid lease")
    ttl = max(0, round((lease.expires - time.time_ns()) / NANOS))
    return Response(
        data={
            "expire_time": rfc3339_nano(lease.expires),
            "id": lease.id,
            "issue_time": rfc3339_nano(lease.issued),
            "last_renewal": rfc3339_nano(lease.last_renewal) if lease.last_renewal else None,
            "path": lease.path,
            "renewable": lease.renewable,
            "ttl": ttl,
        }
    )


def list_lease_ids(state: StoreState, raw_prefix: str) -> Response:
    """Lease ids one level below a prefix (``a/`` for ``a/b/c``), as Vault lists them;
    a prefix must end with ``/``."""
    prefix = raw_prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        return Response()
    keys = sorted({_child(lease, prefix) for lease in state.leases_under(prefix)})
    return Response(data={"keys": keys}) if keys else Response()


def list_leases(session: Session, prefix: str) -> Response:
    state = session.state
    now = time.time_ns() if state.seq else 0
    leases = [
        {
            "lease_id": lease.id,
            "path": lease.path,
            "username": _username(session, lease),
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


def _username(session: Session, lease: Lease) -> str:
    """The user outside the store the lease stands for (an IAM user, a database role),
    opened from the lease's sealed data: "" if its mount's key is gone."""
    mount = session.state.mounts.by_id.get(lease.mount_id)
    if mount is None:
        return ""
    try:
        internal = MountView(session, mount).open_value(lease.internal, "lease", lease.id)
    except ShreddedDataError:
        return ""
    return str(internal.get("username") or "")


def wants_sync(data: dict[str, Any]) -> bool:
    """Whether a revocation asked to be waited for (Vault's ``sync``, true unless false)."""
    sync = data.get("sync", True)
    return not (sync is False or str(sync).lower() in ("false", "0"))


def _child(lease: Lease, prefix: str) -> str:
    head, slash, _ = lease.id[len(prefix) :].partition("/")
    return head + slash
