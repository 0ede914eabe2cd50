"""Vault's HTTP API over a Core: an ASGI application, in the shapes of the captures.

``/v1/<path>``: GET reads (``?list=true`` lists), LIST lists, PUT and POST write, DELETE
deletes. A read's query parameters are its data (``at`` asks for the past); a write's data
is its JSON body. The token comes in ``X-Vault-Token`` or ``Authorization: Bearer``.

Answers: 200 with Vault's envelope; 204 for a write with nothing to say; 404 with
``{"errors": []}`` for a read of nothing; ``{"errors": [...]}`` with the error's status
otherwise. A few ``sys/`` answers also carry their data at the top level, and health, seal
status, leader and init carry only their data, as Vault's do.

One thread, the event loop's, serves the store: each request is served at once and then
waits, without holding anything, until its seq is durable; a thread of its own syncs the
log for every request waiting (group commit). That thread belongs to the store that wrote
the seqs: a node of a cluster that stood by and took over again has a new store and a new
group commit, so no answer is given for a record because another store synced. A request
that may wait on a system outside the store (an AWS call) is served on a worker thread
instead, so it never stalls the loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from backends import Core, PermissionDeniedError, Request, RequestError, Response
from backends.errors import AuditFailedError
from backends.request import Operation, random_id
from backends.sys import cluster_uuid
from backends.sys_leases import wants_sync
from backends.ttl import parse_duration
from eventstore import HsmUnavailableError, UnavailableError, VaultlogError
from projections import Store
from tools.cluster import FORWARDED, forward, index_asked, index_header
from tools.remote import BARE_PATHS
from tools.seal import Seal

MAX_REQUEST_SIZE = 32 * 1024 * 1024  # Vault's default max_request_size
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_OPERATIONS: dict[str, Operation] = {
    "GET": "read",
    "HEAD": "read",
    "LIST": "list",
    "PUT": "write",
    "POST": "write",
    "DELETE": "delete",
}
_TRUE = ("true", "1", "t", "yes")
SEAL_PATHS = BARE_PATHS | {"sys/seal", "sys/step-down"}  # the seal's, sealed or not
_ACTIVE_ONLY = {"sys/seal", "sys/step-down"}  # a standby forwards these to the active node
_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


@dataclass(frozen=True)
class Passed:
    """An answer another node gave, passed on as it came (a standby's forwarding)."""

    payload: bytes
    headers: list[tuple[bytes, bytes]]


class HttpError(Exception):
    """A request refused before it reached the Core."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.close = status, close


_TOP_LEVEL_READS = frozenset(
    {"sys/mounts", "sys/key-status", "sys/auth", "sys/policy", "sys/audit"}
)
_TOP_LEVEL_WRITES = frozenset(
    {"sys/remount", "sys/capabilities", "sys/capabilities-self", "sys/capabilities-accessor"}
)


def data_at_top_level(operation: str, path: str) -> bool:
    """Whether Vault copies this answer's data beside the envelope (a compatibility
    leftover of its oldest endpoints)."""
    if operation == "read":
        prefixes = ("sys/mounts/", "sys/auth/", "sys/policy/")
        return path in _TOP_LEVEL_READS or path.startswith(prefixes)
    return operation == "write" and (
        path in _TOP_LEVEL_WRITES or path.startswith("sys/audit-hash/")
    )


class Durability:
    """Group commit of one store for the event loop: ``await wait(seq)`` returns once
    ``seq`` is durable. One thread syncs the store for every waiter at once; a failed sync
    fails them all, and every later wait for a seq not durable by then (the store is
    read-only from then on). Bound to the store that wrote the seqs: a node that stood by
    and took over again waits on a new one, so a seq is never taken as durable because
    another store synced."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._wanted = self._durable = 0
        self._failed: BaseException | None = None  # why a sync failed: no more will succeed
        self._wake = threading.Condition()
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._sync, name="group-commit", daemon=True)
        self._thread.start()

    @property
    def durable(self) -> int:
        """The last seq known durable."""
        return self._durable

    def stop(self, wait: bool = True) -> None:
        """End the thread once the waiters so far are answered (``wait``: join it)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if wait and self._thread.is_alive():
            self._thread.join(timeout=30)

    async def wait(self, seq: int) -> None:
        if seq <= self._durable:
            return
        if self._failed is not None:  # never durable now: the thread syncs no more
            raise self._failed.with_traceback(None)  # the same error, its trace not grown
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._order), future))
        with self._wake:
            if seq > self._wanted:
                self._wanted = seq
                self._wake.notify()
        await future

    def _sync(self) -> None:
        synced = 0
        while True:
            with self._wake:
                while self._wanted <= synced and not self._stopping:
                    self._wake.wait()
                if self._wanted <= synced:
                    return
                target = self._wanted
            error: BaseException | None = None
            try:
                self.store.flush(target)
            except BaseException as exc:  # told to every waiter; the log is read-only now
                error = exc
            else:
                synced = target
            self._loop.call_soon_threadsafe(self._release, synced, error)
            if error is not None:
                synced = target  # the waiters are answered; later writes fail on their own

    def _release(self, synced: int, error: BaseException | None) -> None:
        self._durable = max(self._durable, synced)
        self._failed = self._failed or error
        while self._waiters and (error is not None or self._waiters[0][0] <= synced):
            future = heapq.heappop(self._waiters)[2]
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)


class Api:
    """The ASGI application: every request becomes one ``Core.serve`` of the unsealed
    store; the seal's own paths are answered by the ``Seal``, sealed or not."""

    def __init__(
        self,
        seal: Seal,
        *,
        max_request_size: int = MAX_REQUEST_SIZE,
        read_timeout: float = 30.0,
        threads: int = 8,
    ) -> None:
        self.seal, self.max_request_size, self.read_timeout = seal, max_request_size, read_timeout
        self._durability: Durability | None = None  # of the store served last
        self._workers = ThreadPoolExecutor(threads, thread_name_prefix="calls-out")

    def _group_commit(self, store: Store) -> Durability:
        """The group commit of ``store``; the last store's is ended once its waiters are
        answered (by its own store's sync: it fails if that store could not commit)."""
        current = self._durability
        if current is None or current.store is not store:
            if current is not None:
                current.stop(wait=False)
            current = self._durability = Durability(store)
        return current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        try:
            status, body, close = await self._serve(scope, receive, method)
        except HttpError as exc:
            status, body, close = exc.status, {"errors": [str(exc)]}, exc.close
        if isinstance(body, Passed):
            headers, payload = list(body.headers), body.payload
        else:
            headers = list(_JSON) + self._index()
            payload = b"" if body is None else json.dumps(body).encode()
        if close:
            headers.append((b"connection", b"close"))
        if method == "HEAD":
            payload = b""
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _index(self) -> list[tuple[bytes, bytes]]:
        """``X-Vault-Index`` of a node of a shared store: the seq durable now, which
        every answer given so far is at or before."""
        core = self.seal.core
        if core is None or self.seal.storage_type != "postgresql":
            return []
        current = self._durability
        durable = current.durable if current is not None and current.store is core.store else 0
        index = index_header(cluster_uuid(core.store.keyring.store_id), durable)
        return [(b"x-vault-index", index.encode())]

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._workers.shutdown(wait=True)
                if self._durability is not None:
                    self._durability.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _serve(self, scope: Scope, receive: Receive, method: str) -> tuple[int, Any, bool]:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        try:
            full = unquote_to_bytes(raw_path.split(b"?", 1)[0]).decode("utf-8")
        except UnicodeError:
            raise HttpError(400, "the path is not valid UTF-8") from None
        if not full.startswith("/v1/"):
            return 404, {"errors": []}, False
        path = full.removeprefix("/v1/")
        operation = _OPERATIONS.get(method)
        if operation is None or (method == "HEAD" and path != "sys/health"):
            raise HttpError(405, f"unsupported method {method[:16]!r}", close=True)
        query_string = scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        at = query.pop("at", "")
        if operation == "read" and query.pop("list", "").lower() in _TRUE:
            operation = "list"
        headers = _headers(scope)
        wrap_ttl = _wrap_ttl(headers)
        has_body = "content-length" in headers or "transfer-encoding" in headers
        body = await self._body(receive, headers) if has_body else {}
        data: dict[str, Any] = body if operation == "write" else query
        if operation == "delete":
            data = {}
        request = Request(
            operation,
            path,
            data,
            at=at,
            request_id=_request_id(),
            token=_token(headers),
            wrap_ttl=wrap_ttl,
        )
        core: Core | None = None
        try:
            if path.strip("/") in _ACTIVE_ONLY and self.seal.standby:
                return await self._pass_on(scope, method, headers, body)  # as Vault forwards
            if path.strip("/") in SEAL_PATHS:
                return await self._seal_path(request, query)
            core = self.seal.core
            if core is None:
                if self.seal.standby:
                    return await self._pass_on(scope, method, headers, body)
                return 503, {"errors": ["Vault is sealed"]}, False
            asked = index_asked(headers.get("x-vault-index", ""))
            if asked > core.store.head.seq:
                return 412, {"errors": ["required index state not present"]}, False
            if core.calls_out(request):
                loop = asyncio.get_running_loop()
                response = await loop.run_in_executor(self._workers, core.handle, request)
            else:
                response, seq = core.serve(request)
                await self._durable(core, seq)
        except RequestError as exc:
            if isinstance(exc, PermissionDeniedError) and exc.seq and core is not None:
                try:
                    await self._durable(core, exc.seq)  # the refusal is recorded first
                except AuditFailedError as failed:
                    return 500, {"errors": [str(failed)]}, False
            return exc.status, {"errors": [str(exc)]}, False
        except (UnavailableError, HsmUnavailableError) as exc:  # nothing was recorded
            return 503, {"errors": [str(exc)]}, False
        except VaultlogError as exc:  # the store failed: its message is one line, no secret
            return 500, {"errors": [str(exc)]}, False
        except Exception as exc:
            _log_internal(request, exc)
            return 500, {"errors": ["internal error"]}, False
        return self._answer(request, response, query)

    async def _pass_on(
        self, scope: Scope, method: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any, bool]:
        """A standby's answer: the active node's, forwarded, or a redirect to it."""
        leader = self.seal.leader_address()
        if not leader or FORWARDED in headers:
            return 503, {"errors": ["no active node to forward the request to"]}, False
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"")
        if query:
            target += "?" + query.decode("latin-1")
        if "x-vault-no-request-forwarding" in headers:
            location = [(b"location", (leader + target).encode("latin-1"))]
            return 307, Passed(b"", location + _JSON), False
        raw = json.dumps(body).encode() if body else b""
        loop = asyncio.get_running_loop()
        try:
            status, payload, kept = await loop.run_in_executor(
                self._workers, forward, leader, method, target, headers, raw
            )
        except VaultlogError as exc:
            return 503, {"errors": [str(exc)]}, False
        return status, Passed(payload, kept), False

    async def _durable(self, core: Core, seq: int) -> None:
        """Wait until ``seq`` of ``core``'s store is durable, then until the audit devices
        have it too."""
        await self._group_commit(core.store).wait(seq)
        core.audited(seq)

    async def _seal_path(self, request: Request, query: dict[str, str]) -> tuple[int, Any, bool]:
        """What the seal answers itself: its status, health, init, unseal and seal. Init
        and unseal (which opens and replays the store) run on a worker thread."""
        seal, path, op = self.seal, request.path.strip("/"), request.operation
        loop = asyncio.get_running_loop()
        if path == "sys/health" and op == "read":
            data = seal.health()
            return _health_status(data, query), data, False
        if path == "sys/seal-status" and op == "read":
            return 200, seal.status(), False
        if path == "sys/leader" and op == "read":
            return 200, seal.leader(), False
        if path == "sys/init" and op == "read":
            return 200, {"initialized": seal.initialized}, False
        if path == "sys/init" and op == "write":
            return 200, await loop.run_in_executor(self._workers, seal.init, request.data), False
        if path == "sys/unseal" and op == "write":
            return 200, await loop.run_in_executor(self._workers, seal.unseal, request.data), False
        if path == "sys/step-down" and op == "write":
            core = seal.core
            if core is None:
                return 503, {"errors": ["this node is not active"]}, False
            core.authorize(request)
            await self._group_commit(core.store).wait(core.store.written)
            await loop.run_in_executor(self._workers, seal.step_down)
            return 204, None, False
        if path == "sys/seal" and op == "write":
            core = seal.core
            if core is not None:
                core.authorize(request)
                await self._group_commit(core.store).wait(core.store.written)
                seal.seal()
            return 204, None, False
        return 405, {"errors": [f"unsupported operation: {op} {path}"]}, False

    async def _body(self, receive: Receive, headers: dict[str, str]) -> dict[str, Any]:
        """The JSON object in the body: refused past ``max_request_size`` as soon as it
        says or grows so, and when the client stalls for ``read_timeout``."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_request_size:
            raise HttpError(413, "http: request body too large", close=True)
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                raise HttpError(408, "timed out reading the request body", close=True) from None
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the client went away", close=True)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_size:
                raise HttpError(413, "http: request body too large", close=True)
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"failed to decode JSON input: {_first_line(exc)}") from None
        if value is None:  # `bao write -f` sends ``null``: no data, as Vault takes it
            return {}
        if not isinstance(value, dict):
            raise HttpError(400, "failed to decode JSON input: the body must be a JSON object")
        return value

    def _answer(
        self, request: Request, response: Response, query: dict[str, str]
    ) -> tuple[int, Any, bool]:
        path, operation = request.path.strip("/"), request.operation
        data = response.data
        if response.wrap_info is not None:  # Vault's: nothing of the answer but its wrapping
            return 200, _envelope("", response), False
        if path in BARE_PATHS:
            if data is None:
                return 404, {"errors": []}, False
            return (_health_status(data, query) if path == "sys/health" else 200), data, False
        if (data is None or (operation == "list" and not data.get("keys"))) and not response.auth:
            if operation in ("read", "list"):
                return 404, {"errors": []}, False
            if not response.lease_id and not response.warnings:
                # Served all the same before answering; answered 202 when the client asked
                # not to wait (``sync: false``, as ``bao lease revoke`` sends), as Vault does.
                revoking = path.startswith(("sys/leases/revoke", "sys/revoke"))
                if revoking and not wants_sync(request.data):
                    return 202, None, False
                return 204, None, False
        body: dict[str, Any] = {}
        if data is not None and data_at_top_level(operation, path):
            body.update(data)
        # An unwrapped answer keeps the id of the request it answered, as Vault's.
        body.update(_envelope(response.request_id or request.request_id, response))
        return 200, body, False


def _envelope(request_id: str, response: Response) -> dict[str, Any]:
    """Vault's envelope of an answer."""
    return {
        "request_id": request_id,
        "lease_id": response.lease_id,
        "renewable": response.renewable,
        "lease_duration": response.lease_duration,
        "data": response.data,
        "wrap_info": response.wrap_info,
        "warnings": list(response.warnings) or None,
        "auth": response.auth,
    }


def _wrap_ttl(headers: dict[str, str]) -> int:
    """Seconds of ``X-Vault-Wrap-TTL`` (0: the answer is not to be wrapped)."""
    raw = headers.get("x-vault-wrap-ttl", "").strip()
    if not raw:
        return 0
    try:
        return parse_duration(raw)
    except RequestError as exc:
        raise HttpError(400, f"error parsing X-Vault-Wrap-TTL: {exc}") from None


def _request_id() -> str:
    """A random id in a UUID's shape, as Vault's request ids are (``uuid4`` costs more)."""
    h = random_id() + random_id()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


def _token(headers: dict[str, str]) -> str:
    token = headers.get("x-vault-token", "")
    if not token:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    return token


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
