"""``HttpTransport``: the CLI's requests sent to a server (``VAULT_ADDR``), in the shapes
``tools.api`` takes and gives. It imports neither the log nor the projections, so a
command over HTTP starts without them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from backends.errors import (
    InvalidRequestError,
    NoHandlerError,
    PermissionDeniedError,
    RequestError,
    ShreddedDataError,
    UpstreamError,
)
from backends.request import Request, Response
from eventstore.errors import StoreError, VaultlogError

# Vault answers its unauthenticated paths with their data alone, no envelope.
BARE_PATHS = frozenset({"sys/health", "sys/seal-status", "sys/leader", "sys/init", "sys/unseal"})


@dataclass(frozen=True)
class ApiError:
    """What a server said when it refused a request, for Vault's "Error making API request"."""

    method: str
    url: str
    status: int
    errors: list[str]


def api_error(exc: BaseException) -> ApiError | None:
    """The server's refusal behind ``exc`` (None for an embedded one)."""
    return getattr(exc, "api_error", None)


_ERRORS: dict[int, type[RequestError]] = {
    400: InvalidRequestError,
    403: PermissionDeniedError,
    404: NoHandlerError,
    410: ShreddedDataError,
    502: UpstreamError,
}
_METHODS = {"read": "GET", "list": "LIST", "write": "PUT", "delete": "DELETE"}


class HttpTransport:
    """Sends each request to a vaultlog (or Vault) server over one keep-alive connection.

    A read's data goes in the query string and a write's in a JSON body, as ``tools.api``
    takes them; the server's errors come back as the same ``RequestError`` classes an
    embedded Core raises, with the same messages.
    """

    def __init__(
        self, address: str, token: str = "", *, cacert: str = "", skip_verify: bool = False
    ) -> None:
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"VAULT_ADDR must be an http:// or https:// address, not {address!r}")
        self.address, self.token = address.rstrip("/"), token
        self._parts, self._cacert, self._skip_verify = parts, cacert, skip_verify
        self._connection: Any = None

    def _connect(self) -> Any:
        import http.client

        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=90)
        import ssl

        try:
            context = ssl.create_default_context(cafile=self._cacert or None)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StoreError(f"cannot load VAULT_CACERT {self._cacert}: {reason}") from None
        if self._skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(host, port, timeout=90, context=context)

    def handle(self, request: Request, *, method: str = "") -> Response:
        """Send ``request``; ``method`` overrides the HTTP method of its operation (a
        write is a PUT unless told POST, as Vault's client posts some calls)."""
        method = method or _METHODS[request.operation]
        target = "/v1/" + quote(request.path.lstrip("/"), safe="/")
        query: dict[str, str] = {}
        body: bytes | None = None
        if request.operation in ("read", "list"):
            query = {k: v if isinstance(v, str) else json.dumps(v) for k, v in request.data.items()}
        elif request.operation == "write":
            body = json.dumps(request.data).encode()
        if request.at:
            query["at"] = request.at
        if query:
            target += "?" + urlencode(query)
        headers = {"X-Vault-Request": "true"}
        if self.token:
            headers["X-Vault-Token"] = self.token
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, raw = self._send(method, target, body, headers)
        return self._response(request, method, target, status, raw)

    def _send(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        import http.client

        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request(method, target, body=body, headers=headers)
                answer = self._connection.getresponse()
                return answer.status, answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the server closed: once more, anew
                if attempt == 2 or method not in ("GET", "LIST"):
                    closed = f"{method} {self.address}{target}: the server closed the connection"
                    raise StoreError(closed) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise StoreError(f"cannot reach the server at {self.address}: {reason}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _response(
        self, request: Request, method: str, target: str, status: int, raw: bytes
    ) -> Response:
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        bare = body if request.path.strip("/") in BARE_PATHS and isinstance(body, dict) else None
        if bare is not None and "errors" not in bare:  # health: 429, 501 or 503 with its data
            return Response(data=bare)
        if status in (200, 202, 204):
            if not isinstance(body, dict):
                return Response(data=None)
            warnings = body.get("warnings") or ()
            return Response(
                data=body.get("data"),
                lease_id=body.get("lease_id") or "",
                lease_duration=int(body.get("lease_duration") or 0),
                renewable=bool(body.get("renewable")),
                warnings=tuple(str(w) for w in warnings),
                request_id=str(body.get("request_id") or ""),
                auth=body.get("auth") if isinstance(body.get("auth"), dict) else None,
            )
        errors = body.get("errors") if isinstance(body, dict) else None
        errors = [str(e) for e in errors] if isinstance(errors, list) else []
        if status == 404 and not errors and request.operation in ("read", "list"):
            return Response(data=None)
        message = "; ".join(errors) or f"the server answered {status}"
        if status >= 500:
            exc: VaultlogError = VaultlogError(message)
        else:
            exc = _ERRORS.get(status, RequestError)(message)
        exc.api_error = ApiError(method, f"{self.address}{target}", status, errors)  # type: ignore[attr-defined]
        raise exc
