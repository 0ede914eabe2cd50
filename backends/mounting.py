"""Adding a mount to the table, the one way ``sys/mounts`` and ``sys/auth`` both do it."""

from __future__ import annotations

from backends.contract import Session
from backends.errors import InvalidRequestError
from backends.request import Response, who
from backends.ttl import parse_duration
from eventstore import hsm
from projections import MountCreated
from projections.store import new_id


def config_ttl(value: object, current: int = 0) -> int:
    """A TTL of a mount's config: absent or empty keeps ``current``; ``system`` is 0."""
    if value is None or value == "":
        return current
    if value == "system":
        return 0
    return parse_duration(value)


def stage_mount(session: Session, path: str, backend_type: str) -> Response:
    """Stage a new mount of ``backend_type`` at ``path`` (checked by the caller), with the
    request's ``description`` and ``config`` (its lease TTLs); a backend whose key is in
    the HSM is refused unless this process has one."""
    key_in_hsm = session.backend(backend_type).paths.key_in_hsm
    if key_in_hsm and not hsm.configured():
        raise InvalidRequestError(
            f'the {backend_type} backend needs an HSM: configure seal "pkcs11" in the '
            "server's configuration (or VAULT_HSM_LIB and its companions)"
        )
    data = session.request.data
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise InvalidRequestError("config must be an object")
    default_ttl = config_ttl(config.get("default_lease_ttl"))
    max_ttl = config_ttl(config.get("max_lease_ttl"))
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
            key_in_hsm=key_in_hsm,
        )
    )
    return Response()
