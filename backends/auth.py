"""Server mode's authentication and authorisation: tokens, their policies, and the ACL.

Every request but a few (health, seal status, leader, init, unseal, and the login paths
an auth method declares) carries a token. The token is looked up by its keyed hash
(``Keyring.token_id``; the token itself is never kept), refused if unknown, expired or
used up, and the request is checked against the ACL of the token's policies before it is
routed. A refusal is recorded (``request.denied``) and answered 403; the actor of every
event of an admitted request is the token's display name and accessor, never the token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from backends.contract import Backend, Backends
from backends.errors import InvalidRequestError, PermissionDeniedError, RequestError
from backends.policy import ACL, CAPABILITIES, Policy, parse_policy
from backends.request import Request
from projections.state import Mount, StoreState, Token
from projections.store import Store

UNAUTHENTICATED = frozenset(
    {"sys/health", "sys/seal-status", "sys/leader", "sys/init", "sys/unseal", "sys/wrapping/lookup"}
)
# Paths that need ``sudo`` besides their capability (Vault's "root paths"): exact, or a
# prefix when they end with ``*``.
SUDO_PATHS = (
    "sys/auth/*",
    "sys/remount",
    "sys/audit",
    "sys/audit/*",
    "sys/rotate",
    "sys/rotate/*",
    "sys/seal",
    "sys/step-down",
    "sys/revoke-prefix/*",
    "sys/revoke-force/*",
    "sys/leases",
    "sys/leases/revoke-prefix/*",
    "sys/leases/revoke-force/*",
    "sys/leases/lookup/*",
    "sys/vaultlog/*",
    "auth/token/revoke-orphan*",
    "auth/token/accessors*",
)
DENIED = "permission denied"
WRAPPING_INVALID = "wrapping token is not valid or does not exist"
ACL_DENIED = "1 error occurred:\n\t* permission denied\n\n"  # Vault's words for a policy's no
ROOT_POLICY = "root"
DEFAULT_POLICY = "default"
# Vault's built-in ``default`` policy, trimmed to the paths this server serves.
DEFAULT_POLICY_RULES = """
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "sys/renew" { capabilities = ["update"] }
path "cubbyhole/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "cubbyhole" { capabilities = ["list"] }
path "sys/wrapping/wrap" { capabilities = ["update"] }
path "sys/wrapping/lookup" { capabilities = ["update"] }
path "sys/wrapping/unwrap" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
path "sys/tools/hash" { capabilities = ["update"] }
path "sys/tools/hash/*" { capabilities = ["update"] }
"""
# A wrapping token may only unwrap, look up or rewrap what it wraps.
WRAPPING_POLICY = "response-wrapping"
WRAPPING_POLICY_RULES = """
path "cubbyhole/response" { capabilities = ["read"] }
path "sys/wrapping/*" { capabilities = ["update"] }
"""
BUILTIN_POLICIES = {DEFAULT_POLICY: DEFAULT_POLICY_RULES, WRAPPING_POLICY: WRAPPING_POLICY_RULES}
_OPERATION_CAPABILITY = {"read": "read", "list": "list", "delete": "delete"}

Authenticate = Callable[[Store, Request], Request]


def token_actor(token: Token) -> str:
    """Who a token's request acts as, in every event: its display name and accessor."""
    return f"{token.display_name}:{token.accessor}"


def policy_rules(state: StoreState, name: str) -> str | None:
    """The rules of policy ``name`` as they stand (a built-in one unless rewritten)."""
    rules = state.policies.get(name)
    return BUILTIN_POLICIES.get(name) if rules is None else rules


def live_token(state: StoreState, token_id: str, now: int | None = None) -> Token | None:
    """The token, if it can still be used: known, not expired, not used up."""
    token = state.tokens.get(token_id)
    if token is None or token.num_uses < 0:
        return None
    now = time.time_ns() if now is None else now
    if token.expires and token.expires <= now:
        return None
    return token


_SUDO = re.compile(
    "|".join(re.escape(p[:-1]) + ".*" if p.endswith("*") else re.escape(p) for p in SUDO_PATHS)
)


def is_sudo_path(path: str) -> bool:
    return _SUDO.fullmatch(path) is not None


class Authorizer:
    """Builds and caches the ACL of a set of policies, as their rules stand."""

    def __init__(self) -> None:
        # by the policies and the state's ``policy_seq``, which changes with any policy
        self._cache: dict[tuple[tuple[str, ...], int], ACL] = {}

    def acl(self, state: StoreState, policies: tuple[str, ...]) -> ACL:
        if ROOT_POLICY in policies:
            return _ROOT_ACL
        key = (policies, state.policy_seq)
        acl = self._cache.get(key)
        if acl is None:
            if len(self._cache) > 1024:
                self._cache.clear()
            acl = ACL(_parsed(name, policy_rules(state, name)) for name in policies)
            self._cache[key] = acl
        return acl

    def capabilities(self, state: StoreState, token: Token, path: str) -> frozenset[str]:
        return self.acl(state, token.policies).capabilities(path)


_ROOT_ACL = ACL((), root=True)


def _parsed(name: str, rules: str | None) -> Policy:
    if rules is None:  # a policy named on a token but never written grants nothing
        return Policy(name, {})
    try:
        return parse_policy(name, rules)
    except RequestError:  # written before a stricter parser: grants nothing, never more
        return Policy(name, {})


class TokenAuth:
    """The Core's authentication in server mode. ``exists(path)`` answers whether a write
    to ``path`` updates (the path holds a value) or creates, for policies that grant only
    one of the two."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self.authorizer = Authorizer()

    def __call__(self, store: Store, request: Request) -> Request:
        path = request.path
        if path.rstrip("/") in UNAUTHENTICATED or self._login_path(store.state, path):
            return _as(request, "anonymous", "")
        if not request.token:
            raise PermissionDeniedError(DENIED)
        state = store.state
        token = live_token(state, store.keyring.token_id(request.token))
        if token is None:
            if path == "sys/wrapping/unwrap" and not request.data.get("token"):
                # the token is the wrapping token itself: Vault says that it is not valid
                raise InvalidRequestError(WRAPPING_INVALID)
            raise PermissionDeniedError(DENIED)
        actor = token_actor(token)
        if ROOT_POLICY not in token.policies:
            needed = self._needed(state, token, request)
            if needed is None:
                raise PermissionDeniedError(ACL_DENIED, actor=actor)
        return _as(request, actor, token.id)

    def _needed(self, state: StoreState, token: Token, request: Request) -> str | None:
        """The capability the request uses, if the token's policies grant it (and sudo,
        where the path needs it); None if they do not."""
        path = request.path
        granted = self.authorizer.capabilities(state, token, path)
        if not granted or (is_sudo_path(path) and "sudo" not in granted):
            return None
        if request.operation != "write":
            needed = _OPERATION_CAPABILITY[request.operation]
        elif "create" in granted and "update" in granted:
            return "update"
        else:
            needed = "update" if self._exists(state, path, token.id) else "create"
        return needed if needed in granted else None

    def _exists(self, state: StoreState, path: str, token_id: str) -> bool:
        """Whether a write to ``path`` changes a value that is there (Vault's existence
        check), the token's own where each token has its own; for backends that do not
        store values at their paths, always."""
        found = self._served_by(state, path)
        if found is None or not found[0].paths.existence_check:
            return True
        backend, mount, relative = found
        if backend.paths.per_token:
            relative = f"{token_id}/{relative}"
        return relative in state.data.get(mount.id, {})

    def _login_path(self, state: StoreState, path: str) -> bool:
        found = self._served_by(state, path) if path.startswith("auth/") else None
        if found is None:
            return False
        backend, _, relative = found
        return relative.startswith(backend.paths.unauthenticated)

    def _served_by(self, state: StoreState, path: str) -> tuple[Backend, Mount, str] | None:
        """The backend, mount and path inside it that serve ``path``, if any does."""
        found = state.mounts.route(path)
        if found is None:
            return None
        try:
            return self.backends.get(found[0].type), found[0], found[1]
        except RequestError:
            return None


def _as(request: Request, actor: str, token_id: str) -> Request:
    return Request(
        request.operation,
        request.path,
        request.data,
        request.at,
        actor,
        request.request_id,
        request.token,
        token_id,
        request.wrap_ttl,
    )


def capabilities_of(
    authorizer: Authorizer, state: StoreState, token: Token, path: str
) -> list[str]:
    """What ``sys/capabilities*`` answers: sorted capabilities, ``root`` for a root
    token, ``deny`` for none."""
    if ROOT_POLICY in token.policies:
        return ["root"]
    granted = authorizer.capabilities(state, token, path)
    return sorted(granted & CAPABILITIES) or ["deny"]
