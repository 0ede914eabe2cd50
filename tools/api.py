"""Vault's HTTP API over a Core: a WSGI application, in the shapes of the captures.

``/v1/<path>``: GET reads (``?list=true`` lists), LIST lists, PUT and POST write, DELETE
deletes. A read's query parameters are its data (``at`` asks for the past); a write's data
is its JSON body. The token comes in ``X-Vault-Token`` or ``Authorization: Bearer``.

Answers: 200 with Vault's envelope; 204 for a write with nothing to say; 404 with
``{"errors": []}`` for a read of nothing; ``{"errors": [...]}`` with the error's status
otherwise. A few ``sys/`` answers also carry their data at the top level, and health, seal
status, leader and init carry only their data, as Vault's do.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from backends import Core, Request, RequestError, Response
from backends.request import Operation
from eventstore import VaultlogError
from tools.transport import BARE_PATHS

MAX_REQUEST_SIZE = 32 * 1024 * 1024  # Vault's default max_request_size
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]

_OPERATIONS: dict[str, Operation] = {
    "GET": "read",
    "HEAD": "read",
    "LIST": "list",
    "PUT": "write",
    "POST": "write",
    "DELETE": "delete",
}
_REASONS = {
    200: "OK",
    202: "Accepted",
    204: "No Content",
    299: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    472: "Standby",
    473: "Performance Standby",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_TRUE = ("true", "1", "t", "yes")
_JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


class HttpError(Exception):
    """A request refused before it reached the Core."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.close = status, close


def data_at_top_level(operation: str, path: str) -> bool:
    """Whether Vault copies this answer's data beside the envelope (a compatibility
    leftover of its oldest endpoints)."""
    if operation == "read":
        return path == "sys/mounts" or path.startswith("sys/mounts/") or path == "sys/key-status"
    return operation == "write" and (path == "sys/remount" or path.startswith("sys/audit-hash/"))


class Api:
    """The WSGI application: every request becomes one ``Core.handle``."""

    def __init__(self, core: Core, *, max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self.core, self.max_request_size = core, max_request_size

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            status, body, close = self._serve(environ, method)
        except HttpError as exc:
            status, body, close = exc.status, {"errors": [str(exc)]}, exc.close
        headers = list(_JSON)
        if close:
            headers.append(("Connection", "close"))
        payload = b"" if body is None or method == "HEAD" else json.dumps(body).encode()
        headers.append(("Content-Length", str(len(payload))))
        start_response(f"{status} {_REASONS.get(status, 'Unknown')}", headers)
        return [payload]

    def _serve(self, environ: Environ, method: str) -> tuple[int, Any, bool]:
        raw_path = environ.get("PATH_INFO", "")
        try:
            full = raw_path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise HttpError(400, "the path is not valid UTF-8") from None
        if not full.startswith("/v1/"):
            return 404, {"errors": []}, False
        path = full.removeprefix("/v1/")
        operation = _OPERATIONS.get(method)
        if operation is None or (method == "HEAD" and path != "sys/health"):
            raise HttpError(405, f"unsupported method {method[:16]!r}")
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        at = query.pop("at", "")
        if operation == "read" and query.pop("list", "").lower() in _TRUE:
            operation = "list"
        if environ.get("HTTP_X_VAULT_WRAP_TTL"):
            raise HttpError(400, "response wrapping is not supported by this server yet")
        data: dict[str, Any] = self._body(environ) if operation == "write" else query
        if operation == "delete":
            data = {}
        request = Request(
            operation,
            path,
            data,
            at=at,
            request_id=_request_id(),
            token=_token(environ),
        )
        try:
            response = self.core.handle(request)
        except RequestError as exc:
            return exc.status, {"errors": [str(exc)]}, False
        except VaultlogError as exc:  # the store failed: its message is one line, no secret
            return 500, {"errors": [str(exc)]}, False
        except Exception as exc:
            _log_internal(request, exc)
            return 500, {"errors": ["internal error"]}, False
        return self._answer(request, response, query)

    def _body(self, environ: Environ) -> dict[str, Any]:
        length_header = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        if length_header:
            try:
                length = int(length_header)
            except ValueError:
                raise HttpError(400, "invalid Content-Length", close=True) from None
            if length > self.max_request_size:
                raise HttpError(413, "http: request body too large", close=True)
            raw = stream.read(length) if length else b""
        else:  # chunked, or nothing
            raw = stream.read(self.max_request_size + 1)
            if len(raw) > self.max_request_size:
                raise HttpError(413, "http: request body too large", close=True)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"failed to decode JSON input: {_first_line(exc)}") from None
        if not isinstance(value, dict):
            raise HttpError(400, "failed to decode JSON input: the body must be a JSON object")
        return value

    def _answer(
        self, request: Request, response: Response, query: dict[str, str]
    ) -> tuple[int, Any, bool]:
        path, operation = request.path.strip("/"), request.operation
        data = response.data
        if path in BARE_PATHS:
            if data is None:
                return 404, {"errors": []}, False
            return (_health_status(data, query) if path == "sys/health" else 200), data, False
        if data is None or (operation == "list" and not data.get("keys")):
            if operation in ("read", "list"):
                return 404, {"errors": []}, False
            if not response.lease_id and not response.warnings:
                if path.startswith(("sys/leases/revoke", "sys/revoke")) and _async(request):
                    return 202, None, False
                return 204, None, False
        body: dict[str, Any] = {}
        if data is not None and data_at_top_level(operation, path):
            body.update(data)
        body.update(
            request_id=request.request_id,
            lease_id=response.lease_id,
            renewable=response.renewable,
            lease_duration=response.lease_duration,
            data=data,
            wrap_info=None,
            warnings=list(response.warnings) or None,
            auth=None,
        )
        return 200, body, False


def _request_id() -> str:
    """A random id in a UUID's shape, as Vault's request ids are (``uuid4`` costs more)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _token(environ: Environ) -> str:
    token = environ.get("HTTP_X_VAULT_TOKEN", "")
    if not token:
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    return str(token)


def _async(request: Request) -> bool:
    """A revocation the client asked not to wait for (``sync: false``, as ``bao lease
    revoke`` sends): served all the same before answering, but answered 202 as Vault does."""
    sync = request.data.get("sync", True)
    return sync is False or str(sync).lower() in ("false", "0")


def _health_status(data: dict[str, Any], query: dict[str, str]) -> int:
    """Vault's health codes, each overridable with a query parameter."""
    if not data.get("initialized", True):
        key, default = "uninitcode", 501
    elif data.get("sealed"):
        key, default = "sealedcode", 503
    elif data.get("standby"):
        key, default = "standbycode", 429
        if query.get("standbyok", "").lower() in _TRUE:
            key, default = "activecode", 200
    else:
        key, default = "activecode", 200
    try:
        return int(query.get(key, default))
    except ValueError:
        return default


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _log_internal(request: Request, exc: BaseException) -> None:
    """A bug: its place in the code goes to the server's log, never its message (which
    could hold a value) and never to the client."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    print(
        f"internal error serving {request.operation} {request.path!r} "
        f"(request {request.request_id}): {type(exc).__name__}\n{frames}",
        file=sys.stderr,
        flush=True,
    )
