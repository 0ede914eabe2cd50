"""The expiration manager: renews and revokes leases, and rolls back unfinished intents.

Every outcome is an event, so the set of live leases is whatever replay says it is. A
revocation that fails is recorded (``lease.revoke_failed``) and retried on later opens
for writing, with exponential backoff; it is never silently dropped.
"""

from __future__ import annotations

import time
from typing import Any, cast

from backends.contract import LeasingBackend, MountView, ScheduledBackend, Session
from backends.errors import InvalidRequestError, NoHandlerError, RequestError
from backends.request import Request, who
from projections import (
    NANOS,
    IntentCompleted,
    Lease,
    LeaseRenewed,
    LeaseRevoked,
    LeaseRevokeFailed,
)

MAX_BACKOFF = 3600  # seconds between retries of a failing revocation, at most


class RevocationError(RequestError):
    """A backend could not revoke a lease; the failure is recorded and retried later."""


def backoff(failures: int) -> int:
    """Seconds to wait before retrying after ``failures`` failed attempts: 1, 2, 4, ..."""
    return min(2 ** max(failures - 1, 0), MAX_BACKOFF)


def store_request() -> Request:
    """The request on whose behalf the store itself acts (expiry, retries, rollback)."""
    return Request("delete", "sys/leases", actor="vaultlog")


class ExpirationManager:
    """Leases served inside one session: its request names who revokes, and each outcome
    is committed as soon as it is known (the outside world has changed already)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def revoke(self, lease: Lease, reason: str) -> None:
        """Revoke through the backend and record it; on failure record that and raise."""
        session, request = self.session, self.session.request
        mount = session.state.mounts.by_id[lease.mount_id]
        view = MountView(session, mount)
        try:
            internal = view.open_value(lease.internal, "lease", lease.id)
            leasing(session, mount.type).revoke(view, internal)
        except Exception as exc:  # any failure of an outside system must be recorded
            error = _one_line(exc)
            session.stage(
                LeaseRevokeFailed(
                    **who(request),
                    lease_id=lease.id,
                    reason=reason,
                    error=error,
                    attempt=lease.failures + 1,
                )
            )
            session.commit()
            raise RevocationError(f"failed to revoke lease '{lease.id}': {error}") from None
        session.stage(LeaseRevoked(**who(request), lease_id=lease.id, reason=reason))
        session.commit()

    def revoke_prefix(self, prefix: str, reason: str, *, force: bool = False) -> list[str]:
        """Revoke every live lease under ``prefix``; stop at the first failure unless forced.

        Forced: a lease whose revocation fails is dropped anyway, recorded as ``forced``.
        """
        revoked = []
        session = self.session
        for lease in session.state.leases_under(prefix):
            try:
                self.revoke(lease, reason)
            except RevocationError:
                if not force:
                    raise
                forced = LeaseRevoked(**who(session.request), lease_id=lease.id, reason="forced")
                session.stage(forced)
                session.commit()
            revoked.append(lease.id)
        return revoked

    def revoke_mount(self, mount_id: str, reason: str) -> None:
        """Revoke every lease issued by one mount (before unmount or remount)."""
        for lease in sorted(self.session.state.leases.values(), key=lambda x: x.id):
            if lease.mount_id == mount_id:
                self.revoke(lease, reason)

    def renew(self, lease_id: str, increment: int) -> Lease:
        session = self.session
        lease = session.state.leases.get(lease_id)
        if lease is None or not lease.renewable:
            raise InvalidRequestError("lease not found or lease is not renewable")
        now = time.time_ns()
        if lease.expires <= now:
            raise InvalidRequestError("lease expired")
        expires = min(now + (increment or lease.ttl) * NANOS, lease.max_expires)
        mount = session.state.mounts.by_id[lease.mount_id]
        view = MountView(session, mount)
        internal = view.open_value(lease.internal, "lease", lease.id)
        leasing(session, mount.type).renew(view, internal, expires)
        session.stage(LeaseRenewed(**who(session.request), lease_id=lease.id, expires=expires))
        session.commit()
        return session.state.leases[lease.id]

    def lookup(self, lease_id: str) -> Lease:
        lease = self.session.state.leases.get(lease_id)
        if lease is None:
            raise NoHandlerError(f"lease not found: {lease_id}")
        return lease

    def expire_due(self) -> None:
        """Revoke expired leases and retry failed revocations whose backoff has passed."""
        now = time.time_ns()
        for lease in sorted(self.session.state.leases.values(), key=lambda x: x.expires):
            due = lease.expires <= now or lease.failures > 0
            waited = now >= lease.last_failure + backoff(lease.failures) * NANOS
            if due and waited:
                reason = lease.pending_reason or "expired"
                try:
                    self.revoke(lease, reason)
                except RevocationError:
                    continue  # recorded; retried on a later open

    def run_due(self) -> None:
        """What scheduled backends have due (a static role's rotation); a failure is theirs
        to record, and is tried again on a later tick."""
        session = self.session
        for mount in session.state.mounts.sorted():
            if mount.type in session.backends.scheduled:
                backend = cast(ScheduledBackend, session.backend(mount.type))
                backend.run_due(MountView(session, mount))
                session.commit()

    def roll_back_intents(self) -> None:
        """Undo actions that were started but whose outcome never reached the log."""
        session = self.session
        for intent in sorted(session.state.intents.values(), key=lambda x: x.time):
            mount = session.state.mounts.by_id[intent.mount_id]
            view = MountView(session, mount)
            try:
                data: dict[str, Any] = view.open_value(intent.data, "intent", intent.id)
                leasing(session, mount.type).roll_back(view, intent.action, data)
            except Exception:  # left pending: tried again on the next open
                continue
            request = session.request
            session.stage(
                IntentCompleted(**who(request), intent_id=intent.id, outcome="rolled_back")
            )
            session.commit()


def leasing(session: Session, backend_type: str) -> LeasingBackend:
    """The backend of a mount that issued leases (only those have leases or intents)."""
    return cast(LeasingBackend, session.backend(backend_type))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
