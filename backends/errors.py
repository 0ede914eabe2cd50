"""Request errors: what a backend answers when a request cannot be served.

VaultlogError (eventstore.errors)
 ├── RequestError               the request is wrong; the store is unchanged
 │    ├── InvalidRequestError   bad or missing input (HTTP 400)
 │    │    └── PastRequestError a request of the past tried to change something
 │    ├── PermissionDeniedError a protected path (HTTP 403)
 │    ├── NoHandlerError        no mount serves the path (HTTP 404)
 │    ├── ConflictError         the path is already in use (HTTP 400, as Vault)
 │    ├── ShreddedDataError     the data asked for was deleted by unmounting (HTTP 410)
 │    └── UpstreamError         an outside system (AWS) failed (HTTP 502)
 └── AuditFailedError           no audit device could write the log's new entries (HTTP 500)
"""

from __future__ import annotations

from eventstore import VaultlogError


class RequestError(VaultlogError):
    """The request cannot be served; nothing was appended."""

    status = 400


class InvalidRequestError(RequestError):
    status = 400


class PermissionDeniedError(RequestError):
    """Refused by authentication or policy; ``actor`` names who asked ("" when nobody
    could be told: no token, or one that is not valid)."""

    status = 403

    def __init__(self, message: str, *, actor: str = "") -> None:
        super().__init__(message)
        self.actor = actor
        self.seq = 0  # the record of the refusal, durable before the answer


class NoHandlerError(RequestError):
    status = 404


class ConflictError(RequestError):
    status = 400  # Vault answers "path is already in use" with a 400


class UpstreamError(RequestError):
    status = 502


class ShreddedDataError(RequestError):
    status = 410


class AuditFailedError(VaultlogError):
    """No enabled audit device could write: requests are refused until one can (as Vault
    does). What was served before is in the log, and is written once a device can."""


class PastRequestError(InvalidRequestError):
    """A request asked of the past tried to change the store or the world outside it."""
