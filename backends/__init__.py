"""Request handling: the backend contract, the registry, the Core and one module per backend."""

from backends.contract import Backend, LeasingBackend, MountView, PathRules, Session, WriterNeeded
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
