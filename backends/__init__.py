"""Request handling: the backend contract, the registry, the Core and one module per backend."""

import typing as _typing

from eventstore import lazy as _lazy

if _typing.TYPE_CHECKING:
    from backends.contract import (
        Backend,
        LeasingBackend,
        MountView,
        PathRules,
        Session,
        WriterNeeded,
    )
    from backends.core import Core, actor, local_user
    from backends.errors import (
        ConflictError,
        InvalidRequestError,
        NoHandlerError,
        PermissionDeniedError,
        RequestError,
        ShreddedDataError,
        UpstreamError,
    )
    from backends.registry import Registry
    from backends.request import Request, Response

_WHERE = {
    "Backend": "backends.contract",
    "ConflictError": "backends.errors",
    "Core": "backends.core",
    "InvalidRequestError": "backends.errors",
    "LeasingBackend": "backends.contract",
    "MountView": "backends.contract",
    "NoHandlerError": "backends.errors",
    "PathRules": "backends.contract",
    "PermissionDeniedError": "backends.errors",
    "Registry": "backends.registry",
    "Request": "backends.request",
    "RequestError": "backends.errors",
    "Response": "backends.request",
    "Session": "backends.contract",
    "ShreddedDataError": "backends.errors",
    "UpstreamError": "backends.errors",
    "WriterNeeded": "backends.contract",
    "actor": "backends.core",
    "local_user": "backends.core",
}
__getattr__, __dir__ = _lazy.exports(__name__, _WHERE, globals())

__all__ = [
    "Backend",
    "ConflictError",
    "Core",
    "InvalidRequestError",
    "LeasingBackend",
    "MountView",
    "NoHandlerError",
    "PathRules",
    "PermissionDeniedError",
    "Registry",
    "Request",
    "RequestError",
    "Response",
    "Session",
    "ShreddedDataError",
    "UpstreamError",
    "WriterNeeded",
    "actor",
    "local_user",
]
