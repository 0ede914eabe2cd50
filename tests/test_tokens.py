"""Tokens on a real `vault server`: every endpoint refuses a request without a valid token
(none, unknown, revoked, expired, used up) with 403, and records the refusal; the token
tree's revocation takes its children and their aws leases with it (the IAM users are
deleted at moto's loopback IAM endpoint); hvac 2.4's token calls; and tokens rebuilt from
the log equal the live ones."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac import exceptions

from backends import Core, Registry, Request
from backends.auth import WRAPPING_INVALID, TokenAuth
from backends.errors import PermissionDeniedError
from projections import Store, replay
from tests.iam_endpoint import MotoServer
from tests.servers import DevServer, running, vaultlog_dev_server
from tools.seal import Seal

# Every endpoint the server serves behind a token, by method and path.
ENDPOINTS = [
    ("GET", "secret/x"),
    ("PUT", "secret/x"),
    ("DELETE", "secret/x"),
    ("LIST", "secret/"),
    ("GET", "sys/mounts"),
    ("POST", "sys/mounts/new"),
    ("DELETE", "sys/mounts/secret"),
    ("GET", "sys/mounts/secret/tune"),
    ("POST", "sys/mounts/secret/tune"),
    ("POST", "sys/remount"),
    ("GET", "sys/remount/status/x"),
    ("GET", "sys/internal/ui/mounts"),
    ("PUT", "sys/leases/lookup"),
    ("LIST", "sys/leases/lookup/aws/"),
    ("PUT", "sys/leases/renew"),
    ("PUT", "sys/leases/revoke"),
    ("PUT", "sys/leases/revoke-prefix/aws"),
    ("PUT", "sys/leases/revoke-force/aws"),
    ("PUT", "sys/renew/x"),
    ("PUT", "sys/revoke/x"),
    ("PUT", "sys/rotate"),
    ("GET", "sys/key-status"),
    ("PUT", "sys/audit-hash/secret"),
    ("GET", "sys/vaultlog/audit"),
    ("GET", "sys/vaultlog/verify"),
    ("GET", "sys/vaultlog/head"),
    ("GET", "sys/vaultlog/history/secret/x"),
    ("PUT", "sys/vaultlog/restore/secret/x"),
    ("GET", "sys/policy"),
    ("PUT", "sys/policy/p"),
    ("GET", "sys/policies/acl/p"),
    ("GET", "sys/auth"),
    ("POST", "sys/auth/userpass"),
    ("GET", "sys/audit"),
    ("PUT", "sys/audit/file"),
    ("POST", "sys/capabilities-self"),
    ("PUT", "sys/seal"),
    ("POST", "sys/wrapping/wrap"),
    ("POST", "auth/token/create"),
    ("POST", "auth/token/create-orphan"),
    ("GET", "auth/token/lookup-self"),
    ("POST", "auth/token/lookup"),
    ("POST", "auth/token/lookup-accessor"),
    ("POST", "auth/token/renew-self"),
    ("POST", "auth/token/renew"),
    ("POST", "auth/token/revoke-self"),
    ("POST", "auth/token/revoke"),
    ("POST", "auth/token/revoke-accessor"),
    ("POST", "auth/token/revoke-orphan"),
    ("LIST", "auth/token/accessors"),
    ("GET", "cubbyhole/x"),
    ("PUT", "cubbyhole/x"),
    ("GET", "aws/creds/deploy"),
    ("GET", "no/such/mount"),
]
DENIED = {"errors": ["permission denied"]}
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}


def call(
    server: DevServer, method: str, path: str, token: str = "", body: Any = None
) -> tuple[int, Any]:
    """A write sends ``{"value": "x"}`` unless given a body."""
    if method not in ("GET", "LIST", "DELETE") and body is None:
        body = {"value": "x"}
    return server.request(method, path, body, token)


def create(server: DevServer, token: str = "root", **body: Any) -> str:
    status, answer = call(server, "POST", "auth/token/create", token, body)
    assert status == 200, answer
    return str(answer["auth"]["client_token"])


def denials(server: DevServer) -> list[dict[str, Any]]:
    status, body = call(server, "GET", "sys/vaultlog/audit?type=request.denied", "root")
    assert status == 200
    return list(body["data"]["entries"])


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer
) -> Iterator[DevServer]:
    env = {"AWS_ENDPOINT_URL_IAM": moto_server.url, "AWS_EC2_METADATA_DISABLED": "true"}
    home = tmp_path_factory.mktemp("tokens")
    with running(vaultlog_dev_server(home, env=env)) as started:
        yield started


def refused_everywhere(server: DevServer, token: str) -> None:
    before = len(denials(server))
    for method, path in ENDPOINTS:
        assert call(server, method, path, token) == (403, DENIED), (method, path, token[:2])
    recorded = denials(server)[before:]
    assert len(recorded) == len(ENDPOINTS)
    assert {e["actor"] for e in recorded} == {"anonymous"}  # an invalid token names no one
    assert all(token not in json.dumps(e) for e in recorded if token)
    # unwrap takes the caller's token as the wrapping token: Vault says that it is not one
    expected = (400, {"errors": [WRAPPING_INVALID]}) if token else (403, DENIED)
    assert call(server, "POST", "sys/wrapping/unwrap", token, {}) == expected


def test_no_token_and_an_unknown_token_are_refused_everywhere(server: DevServer) -> None:
    refused_everywhere(server, "")
    refused_everywhere(server, "s.NotATokenOfThisServer00")


def test_a_revoked_token_is_refused_everywhere(server: DevServer) -> None:
    token = create(server, policies=["root"])
    assert call(server, "GET", "sys/mounts", token)[0] == 200
    assert call(server, "POST", "auth/token/revoke", "root", {"token": token})[0] == 204
    refused_everywhere(server, token)


def test_an_expired_token_is_refused_everywhere(server: DevServer) -> None:
    token = create(server, policies=["root"], ttl="1s")
    time.sleep(1.5)
    refused_everywhere(server, token)


def test_a_used_up_token_is_refused_everywhere(server: DevServer) -> None:
    token = create(server, policies=["root"], num_uses=3)
    assert call(server, "GET", "sys/mounts", token)[0] == 200
    status, body = call(server, "GET", "auth/token/lookup-self", token)
    assert status == 200 and body["data"]["num_uses"] == 1  # after this request's use, as Vault
    assert call(server, "GET", "sys/mounts", token)[0] == 200  # the last use
    refused_everywhere(server, token)
    assert call(server, "POST", "auth/token/lookup", "root", {"token": token}) == (
        403,
        {"errors": ["bad token"]},
    )


def test_the_timer_revokes_an_expired_token(server: DevServer) -> None:
    client = hvac.Client(url=server.addr, token="root")
    accessor = client.auth.token.create(policies=["default"], ttl="1s")["auth"]["accessor"]
    deadline = time.monotonic() + 10
    while accessor in client.auth.token.list_accessors()["data"]["keys"]:
        assert time.monotonic() < deadline, "the expired token was never revoked"
        time.sleep(0.2)
    _status, body = call(server, "GET", "sys/vaultlog/audit?type=token.revoked", "root")
    reasons = {e["detail"]["accessor"]: e["detail"]["reason"] for e in body["data"]["entries"]}
    assert reasons[accessor] == "expired"


@pytest.fixture
def aws(server: DevServer) -> Iterator[hvac.Client]:
    client = hvac.Client(url=server.addr, token="root")
    client.sys.enable_secrets_engine("aws", path="aws")
    try:
        client.secrets.aws.configure_root_iam_credentials(
            "AKIAROOT", "root-secret-key", region="us-east-1"
        )
        client.secrets.aws.create_or_update_role(
            "deploy", "iam_user", policy_document=POLICY, legacy_params=True
        )
        yield client
    finally:
        client.sys.revoke_force("aws/")
        client.sys.disable_secrets_engine("aws")


def iam_users(moto: MotoServer) -> set[str]:
    return {u["UserName"] for u in moto.iam().list_users()["Users"]}


def test_revoking_a_token_revokes_its_children_and_their_aws_leases(
    server: DevServer, aws: hvac.Client, moto_server: MotoServer
) -> None:
    parent = create(server, policies=["root"])
    child = create(server, parent, policies=["root"])
    grandchild = create(server, child, policies=["root"])
    orphan = create(server, child, policies=["root"], no_parent=True)  # root may: an orphan
    users = {}
    for name, token in (("parent", parent), ("child", child), ("grandchild", grandchild)):
        status, body = call(server, "GET", "aws/creds/deploy", token)
        assert status == 200, body
        users[name] = body["data"]["access_key"]
    status, body = call(server, "GET", "aws/creds/deploy", orphan)
    orphan_lease = body["lease_id"]
    assert len(iam_users(moto_server)) >= 4
    before = iam_users(moto_server)

    assert call(server, "POST", "auth/token/revoke", "root", {"token": child})[0] == 204
    for token in (child, grandchild):
        assert call(server, "GET", "auth/token/lookup-self", token) == (403, DENIED)
    assert call(server, "GET", "auth/token/lookup-self", parent)[0] == 200
    assert call(server, "GET", "auth/token/lookup-self", orphan)[0] == 200
    gone = before - iam_users(moto_server)
    assert len(gone) == 2  # the child's and the grandchild's IAM users, no other
    status, body = call(server, "PUT", "sys/leases/lookup", "root", {"lease_id": orphan_lease})
    assert status == 200  # the orphan's lease lives on

    status, body = call(server, "GET", "sys/vaultlog/audit", "root")
    reasons = [
        e["detail"]["reason"] for e in body["data"]["entries"] if e["operation"] == "lease.revoked"
    ]
    assert reasons.count("token") >= 2

    assert call(server, "POST", "auth/token/revoke", "root", {"token": parent})[0] == 204
    assert len(before - iam_users(moto_server)) == 3


def test_revoke_orphan_keeps_the_children(server: DevServer) -> None:
    parent = create(server, policies=["root"])
    child = create(server, parent, policies=["default"])
    assert call(server, "POST", "auth/token/revoke-orphan", "root", {"token": parent})[0] == 204
    status, body = call(server, "GET", "auth/token/lookup-self", child)
    assert status == 200 and body["data"]["orphan"] is True


def test_hvac_token_create_lookup_renew_revoke(server: DevServer) -> None:
    client = hvac.Client(url=server.addr, token="root")
    created = client.auth.token.create(
        policies=["default"], ttl="1h", meta={"team": "x"}, display_name="ci"
    )["auth"]
    assert created["policies"] == ["default"] and created["lease_duration"] == 3600
    token, accessor = created["client_token"], created["accessor"]
    looked = client.auth.token.lookup(token)["data"]
    assert (looked["display_name"], looked["meta"], looked["path"]) == (
        "token-ci",
        {"team": "x"},
        "auth/token/create",
    )
    assert client.auth.token.lookup_accessor(accessor)["data"]["id"] == ""
    mine = hvac.Client(url=server.addr, token=token)
    assert mine.is_authenticated()
    assert mine.auth.token.lookup_self()["data"]["accessor"] == accessor
    assert mine.auth.token.renew_self(increment="30m")["auth"]["lease_duration"] == 1800
    with pytest.raises(exceptions.Forbidden):  # the default policy does not allow it
        mine.auth.token.create(policies=["default"])
    orphan = client.auth.token.create_orphan(policies=["default"])["auth"]
    assert orphan["orphan"] is True
    client.auth.token.revoke_accessor(accessor)
    assert not mine.is_authenticated()
    with pytest.raises(exceptions.InvalidRequest, match="invalid duration"):
        client.auth.token.create(ttl="forever")


def test_a_token_is_never_in_the_trail(server: DevServer) -> None:
    token = create(server, policies=["root"])
    call(server, "PUT", "secret/by-token", token, {"value": "v"})
    _status, body = call(server, "GET", "sys/vaultlog/audit", "root")
    text = json.dumps(body)
    assert token not in text and token[2:] not in text
    actors = {e["actor"] for e in body["data"]["entries"] if e["path"] == "secret/by-token"}
    assert len(actors) == 1 and actors.pop().startswith("token:")


def test_tokens_rebuilt_from_the_log_equal_the_live_ones(tmp_path: Path) -> None:
    """Replay property: a store's tokens and policies folded from its log, from a snapshot,
    and at a past seq, equal what the live store held then."""
    registry = Registry()

    def make_core(store: Store) -> Core:
        return Core(store, registry, TokenAuth(registry))

    seal = Seal(tmp_path / "data", make_core)
    keys = seal.init({"secret_shares": 1, "secret_threshold": 1})
    seal.unseal({"key": keys["keys_base64"][0]})
    core = seal.core
    assert core is not None
    root = keys["root_token"]

    def serve(path: str, token: str = root, **data: Any) -> Any:
        return core.handle(Request("write", path, data, token=token))

    made = [serve("auth/token/create", policies=["root"], ttl="1h").auth["client_token"]]
    for i in range(30):
        if i == 15:
            middle_seq, middle = core.store.state.seq, core.store.state.copy()
        parent = made[i % len(made)]
        try:
            answer = serve("auth/token/create", parent, num_uses=i % 3, ttl=f"{i + 5}m")
        except PermissionDeniedError:  # a parent revoked (or used up) already
            continue
        made.append(answer.auth["client_token"])
        if i % 4 == 3:
            core.handle(Request("write", "auth/token/revoke", {"token": made[-2]}, token=root))
    live = core.store.state
    rebuilt = replay(core.store.events())
    assert (rebuilt.tokens, rebuilt.accessors, rebuilt.policies) == (
        live.tokens,
        live.accessors,
        live.policies,
    )
    past = core.store.state_at(middle_seq)
    assert (past.tokens, past.accessors) == (middle.tokens, middle.accessors)
    core.store.snapshot()
    seal.seal()
    seal.unseal({"key": keys["keys_base64"][0]})
    assert seal.core is not None
    assert seal.core.store.state.tokens == live.tokens
    seal.close()
