"""The expiration manager: renews and revokes leases, and rolls back unfinished intents.

Every outcome is an event, so the set of live leases is whatever replay says it is. A
revocation that fails is recorded (``lease.revoke_failed``) and retried on later opens
for writing, with exponential backoff; it is never silently dropped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from backends.errors import InvalidRequestError, NoHandlerError, RequestError
from backends.request import Request, who
from backends.ttl import SYSTEM_DEFAULT_TTL
from projections import (
    NANOS,
    IntentCompleted,
    Lease,
    LeaseRenewed,
    LeaseRevoked,
    LeaseRevokeFailed,
)

if TYPE_CHECKING:
    from backends.core import Core, LeasingBackend

MAX_BACKOFF = 3600  # seconds between retries of a failing revocation, at most


class RevocationError(RequestError):
    """A backend could not revoke a lease; the failure is recorded and retried later."""


def backoff(failures: int) -> int:
    """Seconds to wait before retrying after ``failures`` failed attempts: 1, 2, 4, ..."""
    return min(2 ** max(failures - 1, 0), MAX_BACKOFF)


def bounded_ttls(
    default_ttl: int, max_ttl: int, requested: int = 0, requested_max: int = 0
) -> tuple[int, int]:
    """``(ttl, max_ttl)`` of a new lease: the backend's wish bounded by the mount's limits."""
    limit = max_ttl or SYSTEM_DEFAULT_TTL
    if requested_max:
        limit = min(limit, requested_max)
    ttl = requested or default_ttl or SYSTEM_DEFAULT_TTL
    return min(ttl, limit), limit


class ExpirationManager:
    def __init__(self, core: Core) -> None:
        self.core = core

    def _request(self) -> Request:
        """The request on whose behalf the store itself acts (expiry, retries, rollback)."""
        return Request("delete", "sys/leases", actor=self.core.actor)

    def revoke(self, lease: Lease, reason: str, request: Request | None = None) -> None:
        """Revoke through the backend and record it; on failure record that and raise."""
        core = self.core
        request = request or self._request()
        mount = core.state.mounts.by_id[lease.mount_id]
        view = core.view(mount, request)
        try:
            internal = view.open_value(lease.internal, "lease", lease.id)
            leasing(core, mount.type).revoke(view, internal)
        except Exception as exc:  # any failure of an outside system must be recorded
            error = _one_line(exc)
            core.stage(
                LeaseRevokeFailed(
                    **who(request),
                    lease_id=lease.id,
                    reason=reason,
                    error=error,
                    attempt=lease.failures + 1,
                )
            )
            core.commit()
            raise RevocationError(f"failed to revoke lease '{lease.id}': {error}") from None
        core.stage(LeaseRevoked(**who(request), lease_id=lease.id, reason=reason))
        core.commit()

    def revoke_prefix(
        self, prefix: str, reason: str, request: Request, *, force: bool = False
    ) -> list[str]:
        """Revoke every live lease under ``prefix``; stop at the first failure unless forced.

        Forced: a lease whose revocation fails is dropped anyway, recorded as ``forced``.
        """
        revoked = []
        for lease in self.core.state.leases_under(prefix):
            try:
                self.revoke(lease, reason, request)
            except RevocationError:
                if not force:
                    raise
                self.core.stage(LeaseRevoked(**who(request), lease_id=lease.id, reason="forced"))
                self.core.commit()
            revoked.append(lease.id)
        return revoked

    def revoke_mount(self, mount_id: str, reason: str, request: Request) -> None:
        """Revoke every lease issued by one mount (before unmount or remount)."""
        for lease in sorted(self.core.state.leases.values(), key=lambda x: x.id):
            if lease.mount_id == mount_id:
                self.revoke(lease, reason, request)

    def renew(self, lease_id: str, increment: int, request: Request) -> Lease:
        lease = self.core.state.leases.get(lease_id)
        if lease is None or not lease.renewable:
            raise InvalidRequestError("lease not found or lease is not renewable")
        now = time.time_ns()
        if lease.expires <= now:
            raise InvalidRequestError("lease expired")
        expires = min(now + (increment or lease.ttl) * NANOS, lease.max_expires)
        self.core.stage(LeaseRenewed(**who(request), lease_id=lease.id, expires=expires))
        self.core.commit()
        return self.core.state.leases[lease.id]

    def lookup(self, lease_id: str) -> Lease:
        lease = self.core.state.leases.get(lease_id)
        if lease is None:
            raise NoHandlerError(f"lease not found: {lease_id}")
        return lease

    def expire_due(self) -> None:
        """Revoke expired leases and retry failed revocations whose backoff has passed."""
        now = time.time_ns()
        for lease in sorted(self.core.state.leases.values(), key=lambda x: x.expires):
            due = lease.expires <= now or lease.failures > 0
            waited = now >= lease.last_failure + backoff(lease.failures) * NANOS
            if due and waited:
                reason = lease.pending_reason or "expired"
                try:
                    self.revoke(lease, reason, self._request())
                except RevocationError:
                    continue  # recorded; retried on a later open

    def roll_back_intents(self) -> None:
        """Undo actions that were started but whose outcome never reached the log."""
        core = self.core
        for intent in sorted(core.state.intents.values(), key=lambda x: x.time):
            mount = core.state.mounts.by_id[intent.mount_id]
            request = self._request()
            view = core.view(mount, request)
            try:
                data: dict[str, Any] = view.open_value(intent.data, "intent", intent.id)
                leasing(core, mount.type).roll_back(view, intent.action, data)
            except Exception:  # left pending: tried again on the next open
                continue
            core.stage(IntentCompleted(**who(request), intent_id=intent.id, outcome="rolled_back"))
            core.commit()


def leasing(core: Core, backend_type: str) -> LeasingBackend:
    """The backend of a mount that issued leases (only those have leases or intents)."""
    return cast("LeasingBackend", core.backend(backend_type))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
