"""Request handling: the Core, the router and one module per backend type."""

from backends.core import Core, MountView, actor
from backends.errors import (
    ConflictError,
    InvalidRequestError,
    NoHandlerError,
    PermissionDeniedError,
    RequestError,
    UpstreamError,
)
from backends.request import Request, Response

__all__ = [
    "ConflictError",
    "Core",
    "InvalidRequestError",
    "MountView",
    "NoHandlerError",
    "PermissionDeniedError",
    "Request",
    "RequestError",
    "Response",
    "UpstreamError",
    "actor",
]
