"""The Core: the request pipeline, and nothing else.

authenticate -> clean the path -> route (longest mount prefix) -> the backend, in a
session of its own (a read-only one for a request of the past) -> commit -> wrap the
answer if asked (``backends.wrapping``) -> answer once durable and written to the
audit devices (``backends.audit_devices``). The store beneath it
(``projections.store.Store``) owns the log, the keys, the state and the past; the
backends come from the registry the front door hands in.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import replace

import msgspec

from backends.audit_devices import AuditDevices
from backends.auth import Authenticate
from backends.contract import Backends, MountView, Session, key_lost
from backends.errors import (
    AuditFailedError,
    InvalidRequestError,
    NoHandlerError,
    PermissionDeniedError,
    RequestError,
    ShreddedDataError,
)
from backends.expiration import ExpirationManager, store_request
from backends.moments import resolve_at
from backends.paths import clean_path
from backends.request import Request, Response
from backends.token import expire_tokens, revoke_tree
from backends.wrapping import wrap
from projections import Mount, SecretRead, StoreState
from projections.events import RequestDenied, TokenUsed
from projections.store import Store

SYSTEM = Mount("system", "sys/", "system")  # sys/ never moves: served without the state
TOKENS = Mount("token", "auth/token/", "token")  # nor does auth/token/


def local_user(store: Store, request: Request) -> Request:
    """Embedded mode's authentication: the request is the local user's, ``user@host``,
    who holds the keys and may do anything (as the root token)."""
    return _rebuilt(request, request.path, actor())


def _rebuilt(request: Request, path: str, actor: str) -> Request:
    # ``dataclasses.replace`` costs several microseconds: requests are rebuilt in the hot path
    return Request(
        request.operation,
        path,
        request.data,
        request.at,
        actor,
        request.request_id,
        request.token,
        request.token_id,
        request.wrap_ttl,
    )


class Core:
    """Serves requests against one open store. Thread-safe: requests are served one at a
    time, but each waits for the disk after the store is released, so one sync serves
    every thread waiting (group commit). ``serve`` leaves the waiting to the caller: a
    server's event loop waits for many requests' seqs at once (``tools.api``)."""

    def __init__(
        self,
        store: Store,
        backends: Backends,
        authenticate: Authenticate = local_user,
        *,
        lease_ttls: tuple[int, int] = (0, 0),
    ) -> None:
        """``lease_ttls``: the server's default and maximum lease TTL, for mounts that set
        none of their own (0: Vault's system default)."""
        self.store, self.backends, self.authenticate = store, backends, authenticate
        self.lease_ttls = lease_ttls
        self.audit = AuditDevices(store)

    def handle(self, request: Request) -> Response:
        """Serve ``request``; the answer comes only once all it could have seen is durable."""
        try:
            response, seq = self.serve(request)
        except PermissionDeniedError as exc:
            self.store.flush()  # the refusal's record
            self.audited(exc.seq)
            raise
        self.store.flush(seq)
        self.audited(seq)
        return response

    def audited(self, seq: int) -> None:
        """Write the events up to ``seq``, once durable, to the audit devices: the answer
        is given only if one could (``AuditFailedError`` otherwise)."""
        if seq and self.audit.enabled:
            with self.store.lock:
                self.audit.write(seq)

    def serve(self, request: Request) -> tuple[Response, int]:
        """Serve ``request`` without waiting for the disk: the answer, and the seq that must
        be durable before it is given (0: nothing to wait for). A server waits for many
        requests' seqs with one sync (group commit)."""
        path = clean_path(request.path)
        if not path.strip("/"):
            raise InvalidRequestError("missing path")
        if request.operation == "list" and not path.endswith("/"):
            path += "/"  # a list names a folder, with or without its slash (as Vault's)
        if path != request.path or request.actor:  # the actor is authentication's to say
            request = _rebuilt(request, path, "")
        with self.store.lock:
            if self.audit.behind:  # refused before it is served while no device can write
                self.audit.catch_up()
            request = self._authenticate(request)
            warnings = len(self.store.warnings)
            if request.token_id:
                self._spend_use(request)
            response = self._serve(request)
            if request.wrap_ttl:
                session = Session(self.store, request, self.backends)
                response = wrap(session, response, ttl=request.wrap_ttl, path=request.path)
            if request.token_id:
                self._revoke_if_used_up(request)
            said = tuple(self.store.warnings[warnings:])
            seq = self.store.written
        if said:
            response = msgspec.structs.replace(response, warnings=response.warnings + said)
        return response, seq

    def calls_out(self, request: Request) -> bool:
        """Whether serving ``request`` may wait on a system outside the store (AWS), as
        requests to such a backend may, and changes under ``sys/`` (revoking leases)."""
        path = request.path.lstrip("/")
        if path == "sys" or path.startswith("sys/"):
            return request.operation not in ("read", "list")
        if path.startswith("auth/token/"):  # revoking a token revokes its leases
            return request.operation == "write" and "revoke" in path
        found = self.store.state.mounts.route(path)
        if found is None or request.at:
            return False
        try:
            return self.backends.get(found[0].type).paths.calls_out
        except RequestError:  # a type no backend serves: refused when served
            return False

    def _serve(self, request: Request) -> Response:
        past: StoreState | None = None
        if request.at:
            if request.operation not in ("read", "list"):
                raise InvalidRequestError("only reads and lists can look at the past")
            seq = resolve_at(self.store, request.at)
            if seq < self.store.state.seq:
                past = self._past(request, seq)
        mount, relative = self._route(request.path, past, request.at)
        inner = _rebuilt(request, relative, request.actor)
        session = Session(self.store, inner, self.backends, past=past, lease_ttls=self.lease_ttls)
        backend = self.backends.get(mount.type)
        response = backend.handle(MountView(session, mount), inner)
        if request.operation == "read" and backend.paths.audit_reads and self.store.writable:
            # Every read of a secret is recorded before it is answered, the past's too.
            session.staged.append(
                SecretRead(
                    actor=request.actor,
                    request_id=request.request_id,
                    mount_id=mount.id,
                    path=relative,
                )
            )
        session.commit()
        return response

    def authorize(self, request: Request) -> Request:
        """``request`` as authenticated and authorised, or refused (and recorded), without
        serving it: for what a server does itself (sealing)."""
        with self.store.lock:
            return self._authenticate(_rebuilt(request, clean_path(request.path), ""))

    def _authenticate(self, request: Request) -> Request:
        try:
            return self.authenticate(self.store, request)
        except PermissionDeniedError as exc:
            self._record_denial(request, exc)
            exc.seq = self.store.written
            raise

    def _record_denial(self, request: Request, exc: PermissionDeniedError) -> None:
        """Every refusal is a fact of the log, naming who asked (never their token)."""
        if not self.store.writable:
            return
        self.store.commit(
            [
                RequestDenied(
                    actor=exc.actor or "anonymous",
                    request_id=request.request_id,
                    operation=request.operation,
                    path=request.path,
                    reason=str(exc).replace("1 error occurred:\n\t* ", "").strip(),
                )
            ]
        )

    def _spend_use(self, request: Request) -> None:
        token = self.store.state.tokens[request.token_id]
        if token.num_uses > 0:
            self.store.commit(
                [TokenUsed(actor=request.actor, request_id=request.request_id, token_id=token.id)]
            )

    def _revoke_if_used_up(self, request: Request) -> None:
        token = self.store.state.tokens.get(request.token_id)
        if token is not None and token.num_uses < 0:
            with contextlib.suppress(RequestError):  # a lease that will not go: the timer retries
                revoke_tree(Session(self.store, request, self.backends), token, "uses")

    def _past(self, request: Request, seq: int) -> StoreState:
        """The state a request of the past reads: for a read of a mount's value, only the
        mount table then and that value (from the version index), else the whole state
        then (the leases, the tokens, the policies)."""
        if request.operation == "read" and not request.path.startswith(("sys/", "auth/")):
            return self.store.state_for_read(request.path, seq)
        return self.store.state_at(seq)

    def _route(self, path: str, past: StoreState | None, at: str) -> tuple[Mount, str]:
        if path == "sys" or path.startswith("sys/"):  # before the state: verify needs none
            return SYSTEM, path.removeprefix("sys").lstrip("/")
        if path.startswith("auth/token/") or path == "auth/token":
            return TOKENS, path.removeprefix("auth/token").lstrip("/")
        state = self.store.state if past is None else past
        found = state.mounts.route(path)
        if found is None:
            when = f" at seq {state.seq}" if at else ""
            raise NoHandlerError(f'no handler for route "{path}"{when}. route entry not found.')
        mount, relative = found
        if mount.id not in self.store.keyring.mounts:
            raise ShreddedDataError(key_lost(self.store, mount))
        default_ttl, max_ttl = self.lease_ttls
        if (default_ttl and not mount.default_lease_ttl) or (max_ttl and not mount.max_lease_ttl):
            mount = replace(
                mount,
                default_lease_ttl=mount.default_lease_ttl or default_ttl,
                max_lease_ttl=mount.max_lease_ttl or max_ttl,
            )
        return mount, relative

    def maintain(self) -> None:
        """What a writer does on opening: roll back unfinished intents, then ``expire``."""
        with self.store.lock:
            self._leases().roll_back_intents()
        self.expire()

    def expire(self) -> None:
        """Revoke what expired, retry failed revocations whose backoff has passed, and do
        what scheduled backends have due: on opening, and on a server's timer."""
        with self.store.lock:
            self._leases().expire_due()
            self._leases().run_due()
            expire_tokens(Session(self.store, store_request(), self.backends))
            seq = self.store.written
        self.store.flush()
        with contextlib.suppress(AuditFailedError):  # the next request is refused, and says why
            self.audited(seq)

    def _leases(self) -> ExpirationManager:
        return ExpirationManager(Session(self.store, store_request(), self.backends))


@functools.cache
def actor() -> str:
    """``user@host``: who acts in embedded mode (as getpass would, without its imports)."""
    user = os.environ.get("LOGNAME") or os.environ.get("USER")
    if not user:
        import pwd

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"
