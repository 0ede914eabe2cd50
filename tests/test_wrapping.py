"""The cubbyhole and response wrapping on a real `vault server`, through hvac 2.4 and the
real `bao` CLI: each token sees only its own cubbyhole, which goes with the token; an
answer asked with ``X-Vault-Wrap-TTL`` comes back as a single-use wrapping token (in the
shapes of /work/shared/reference/openbao-2.7.2/kv-v1.json and auth-token.json), unwrapped
once, looked up, rewrapped, expired; and nothing wrapped is ever on disk in plaintext."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac import exceptions

from backends import Core, InvalidRequestError, Registry, Request
from eventstore import MemoryStorage
from projections import MountCreated, Store
from tests.servers import (
    DevServer,
    ServerCLI,
    bao_client,
    bao_dev_server,
    config_server,
    root_token,
    running,
    vaultlog_dev_server,
)

INVALID = "wrapping token is not valid or does not exist"
# The envelope of a wrapped answer and its wrap_info, as OpenBao 2.7.2 answers them.
ENVELOPE = {
    "request_id",
    "lease_id",
    "renewable",
    "lease_duration",
    "data",
    "wrap_info",
    "warnings",
    "auth",
}
WRAP_INFO = {"token", "accessor", "ttl", "creation_time", "creation_path"}


def call(
    server: DevServer,
    method: str,
    path: str,
    token: str = "root",
    body: Any = None,
    wrap_ttl: str = "",
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    sent = urllib.request.Request(f"{server.addr}/v1/{path}", data=data, method=method)
    if token:
        sent.add_header("X-Vault-Token", token)
    if wrap_ttl:
        sent.add_header("X-Vault-Wrap-TTL", wrap_ttl)
    try:
        with urllib.request.urlopen(sent, timeout=30) as answer:
            raw, status = answer.read(), answer.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, json.loads(raw) if raw.strip() else None


def client(server: DevServer, token: str = "root") -> hvac.Client:
    return hvac.Client(url=server.addr, token=token)


def new_token(server: DevServer, **body: Any) -> tuple[str, str]:
    """A child of root with ``body``'s settings: (token, accessor)."""
    status, answer = call(server, "POST", "auth/token/create", body=body)
    assert status == 200, answer
    return answer["auth"]["client_token"], answer["auth"]["accessor"]


def trail(server: DevServer, kind: str, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in {"type": kind, **filters}.items())
    status, answer = call(server, "GET", f"sys/vaultlog/audit?{query}")
    assert status == 200, answer
    return list(answer["data"]["entries"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(vaultlog_dev_server(tmp_path_factory.mktemp("wrapping"))) as started:
        yield started


# ---- the cubbyhole ------------------------------------------------------------------------


def test_each_token_sees_only_its_own_cubbyhole(server: DevServer) -> None:
    a, b = (client(server, new_token(server)[0]) for _ in range(2))
    a.write_data("cubbyhole/shared", data={"owner": "a"})
    a.write_data("cubbyhole/dir/only-a", data={"v": "1"})
    b.write_data("cubbyhole/shared", data={"owner": "b"})
    assert a.read("cubbyhole/shared")["data"] == {"owner": "a"}
    assert b.read("cubbyhole/shared")["data"] == {"owner": "b"}
    assert b.read("cubbyhole/dir/only-a") is None
    assert a.list("cubbyhole/")["data"]["keys"] == ["dir/", "shared"]
    assert b.list("cubbyhole")["data"]["keys"] == ["shared"]
    assert client(server).list("cubbyhole/") is None  # root's own is empty
    b.delete("cubbyhole/shared")
    assert b.read("cubbyhole/shared") is None
    assert a.read("cubbyhole/shared")["data"] == {"owner": "a"}


def test_a_revoked_tokens_cubbyhole_is_deleted_with_it(server: DevServer) -> None:
    token, accessor = new_token(server)
    client(server, token).write_data("cubbyhole/k", data={"v": "private"})
    written = trail(server, "secret.written", actor=accessor)
    assert len(written) == 1 and written[0]["path"].startswith("cubbyhole/")
    assert call(server, "POST", "auth/token/revoke", body={"token": token})[0] == 204
    deleted = {e["path"] for e in trail(server, "secret.deleted", path="cubbyhole/")}
    assert written[0]["path"] in deleted
    with pytest.raises(exceptions.Forbidden):
        client(server, token).read("cubbyhole/k")


def test_a_write_creates_or_updates_the_tokens_own_path(server: DevServer) -> None:
    """The existence check looks in the caller's cubbyhole, not another token's."""
    rules = 'path "cubbyhole/*" { capabilities = ["create", "read"] }'
    assert call(server, "PUT", "sys/policy/cubby-create", body={"policy": rules})[0] == 204
    other, _ = new_token(server)
    assert call(server, "PUT", "cubbyhole/k", other, {"v": "theirs"})[0] == 204
    token, _ = new_token(server, policies=["cubby-create"], no_default_policy=True)
    assert call(server, "PUT", "cubbyhole/k", token, {"v": "1"})[0] == 204  # a create
    assert call(server, "PUT", "cubbyhole/k", token, {"v": "2"})[0] == 403  # an update


def test_a_generic_write_creates_or_updates(server: DevServer) -> None:
    rules = 'path "secret/*" { capabilities = ["create"] }'
    assert call(server, "PUT", "sys/policy/secret-create", body={"policy": rules})[0] == 204
    token, _ = new_token(server, policies=["secret-create"])
    assert call(server, "PUT", "secret/created-once", token, {"v": "1"})[0] == 204
    assert call(server, "PUT", "secret/created-once", token, {"v": "2"})[0] == 403


def test_the_cubbyhole_needs_a_token() -> None:
    """Embedded, the local user has no token, hence no cubbyhole."""
    core = Core(Store.in_memory(MemoryStorage()), Registry())
    with pytest.raises(InvalidRequestError, match="mounted once, at cubbyhole/"):
        core.handle(Request("write", "sys/mounts/mine", {"type": "cubbyhole"}))
    mount = MountCreated(
        actor="t", request_id="r", mount_id="c0", path="cubbyhole/", backend_type="cubbyhole"
    )
    core.store.commit([mount])  # as a server's init mounts it
    with pytest.raises(InvalidRequestError, match="cubbyhole requires a token"):
        core.handle(Request("write", "cubbyhole/k", {"v": "1"}))


# ---- response wrapping ------------------------------------------------------------------


def test_a_wrapped_read_is_unwrapped_once(server: DevServer) -> None:
    value = f"wrapped-{uuid.uuid4().hex}"
    root = client(server)
    root.write_data("secret/wrapped", data={"password": value})
    wrapped = root.read("secret/wrapped", wrap_ttl="5m")
    assert set(wrapped) == ENVELOPE and wrapped["data"] is None and wrapped["auth"] is None
    assert wrapped["request_id"] == "" and value not in json.dumps(wrapped)
    info = wrapped["wrap_info"]
    assert set(info) == WRAP_INFO
    assert info["ttl"] == 300 and info["creation_path"] == "secret/wrapped"
    assert info["token"].startswith("s.") and len(info["accessor"]) == 24
    datetime.fromisoformat(info["creation_time"][:26])  # RFC 3339, to the microsecond here
    reads = len(trail(server, "secret.read", path="cubbyhole/"))

    unwrapped = root.sys.unwrap(info["token"])
    assert unwrapped["data"] == {"password": value} and unwrapped["wrap_info"] is None
    assert unwrapped["lease_duration"] > 0  # the original read's
    assert len(trail(server, "secret.read", path="cubbyhole/")) == reads + 1
    with pytest.raises(exceptions.InvalidRequest, match=INVALID):
        root.sys.unwrap(info["token"])
    with pytest.raises(exceptions.InvalidRequest, match=INVALID):  # as its own token: gone
        client(server, info["token"]).sys.unwrap()


def test_an_answer_with_nothing_in_it_is_not_wrapped(server: DevServer) -> None:
    assert call(server, "PUT", "secret/plain", body={"v": "1"}, wrap_ttl="60s") == (204, None)
    assert call(server, "GET", "secret/missing", wrap_ttl="60s") == (404, {"errors": []})
    status, answer = call(server, "GET", "secret/plain", wrap_ttl="forever")
    assert status == 400 and "X-Vault-Wrap-TTL" in answer["errors"][0]


def test_a_wrapped_token_creation_unwraps_to_a_working_token(server: DevServer) -> None:
    root = client(server)
    wrapped = root.auth.token.create(policies=["default"], wrap_ttl="60s")
    info = wrapped["wrap_info"]
    assert wrapped["auth"] is None and set(info) == WRAP_INFO | {"wrapped_accessor"}
    assert info["creation_path"] == "auth/token/create" and info["ttl"] == 60
    receiver = hvac.Client(url=server.addr)
    answer = receiver.auth_cubbyhole(info["token"])  # unwrapped with the wrapping token
    assert answer["auth"]["accessor"] == info["wrapped_accessor"]
    assert receiver.token == answer["auth"]["client_token"] != info["token"]
    assert receiver.auth.token.lookup_self()["data"]["policies"] == ["default"]
    with pytest.raises(exceptions.InvalidRequest, match=INVALID):
        root.sys.unwrap(info["token"])


def test_wrap_lookup_rewrap_and_unwrap(server: DevServer) -> None:
    root, anonymous = client(server), hvac.Client(url=server.addr)
    first = root.sys.wrap(payload={"k": "v"}, ttl=120)["wrap_info"]
    assert first["creation_path"] == "sys/wrapping/wrap"
    looked = anonymous.adapter.post("/v1/sys/wrapping/lookup", json={"token": first["token"]})
    assert looked["data"] == {
        "creation_path": "sys/wrapping/wrap",
        "creation_time": first["creation_time"],
        "creation_ttl": 120,
    }
    second = root.adapter.post("/v1/sys/wrapping/rewrap", json={"token": first["token"]})
    rewrapped = second["wrap_info"]
    assert rewrapped["token"] != first["token"] and rewrapped["ttl"] == 120
    assert rewrapped["creation_path"] == "sys/wrapping/wrap"
    with pytest.raises(exceptions.InvalidRequest, match=INVALID):
        root.sys.unwrap(first["token"])
    assert root.sys.unwrap(rewrapped["token"])["data"] == {"k": "v"}
    status, answer = call(server, "POST", "sys/wrapping/wrap", body={"k": "v"})
    assert (status, answer) == (400, {"errors": ["endpoint requires response wrapping to be used"]})
    status, answer = call(server, "POST", "sys/wrapping/unwrap", body={})  # root wraps nothing
    assert (status, answer) == (400, {"errors": [INVALID]})


def test_an_expired_wrapping_token_unwraps_nothing(server: DevServer) -> None:
    status, answer = call(server, "POST", "sys/wrapping/wrap", body={"k": "v"}, wrap_ttl="1s")
    assert status == 200
    time.sleep(1.5)
    token = answer["wrap_info"]["token"]
    for path in ("sys/wrapping/unwrap", "sys/wrapping/lookup"):
        assert call(server, "POST", path, body={"token": token}) == (400, {"errors": [INVALID]})


def test_nothing_wrapped_is_on_disk_in_plaintext(tmp_path: Path) -> None:
    home = tmp_path / "home"
    value, payload = f"kv-{uuid.uuid4().hex}", f"payload-{uuid.uuid4().hex}"
    with running(config_server(home)) as server:
        token = root_token(server)
        root = client(server, token)
        root.write_data("secret/x", data={"password": value})
        kept = [root.read("secret/x", wrap_ttl="10m")["wrap_info"]["token"]]
        created = root.auth.token.create(policies=["default"], wrap_ttl="10m")["wrap_info"]
        kept.append(created["token"])
        wrapped = root.sys.wrap(payload={"k": payload}, ttl=600)["wrap_info"]["token"]
        rewrapped = root.adapter.post("/v1/sys/wrapping/rewrap", json={"token": wrapped})
        kept.append(rewrapped["wrap_info"]["token"])
        unwrapped = root.sys.unwrap(kept.pop(1))  # one unwrapped, the others left waiting
        secrets = [value, payload, unwrapped["auth"]["client_token"], wrapped, *kept]
    files = [p for p in sorted(home.rglob("*")) if p.is_file()]
    assert files
    found = [
        f"{p.relative_to(home)} holds secret #{i}"
        for p in files
        for i, secret in enumerate(secrets)
        if secret.encode() in p.read_bytes()
    ]
    assert found == []


# ---- the bao CLI ----------------------------------------------------------------------------

_WRAP_VOLATILE = (
    (re.compile(r"\bs\.[A-Za-z0-9]{24}\b"), "<token>"),
    (re.compile(r"(?<=\s)[A-Za-z0-9]{24}$", re.M), "<accessor>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \+0000 UTC"), "<time>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
)


def normalise(text: str) -> str:
    for pattern, replacement in _WRAP_VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def bao_wrapping_session(cli: ServerCLI) -> list[str]:
    """`bao read -wrap-ttl`, `bao unwrap TOKEN` (twice), a wrapped `bao token create`
    unwrapped with the wrapping token as the client's, and the cubbyhole."""
    cli("secrets", "disable", "secret/")  # OpenBao's dev secret/ is KV version 2
    cli("secrets", "enable", "-path=secret", "-version=1", "kv")
    cli("write", "secret/x", "password=hunter2", "ttl=1h")
    shown = [cli("read", "-wrap-ttl=5m", "secret/x")]
    token = re.findall(r"^wrapping_token:\s+(\S+)$", shown[0], re.M)[0]
    shown.append(cli("unwrap", token))
    again = cli.run("unwrap", token)
    shown.append(f"exit {again.returncode}\n{again.stdout}{again.stderr}")
    shown.append(cli("token", "create", "-wrap-ttl=2m", "-policy=default"))
    token = re.findall(r"^wrapping_token:\s+(\S+)$", shown[-1], re.M)[0]
    unwrapped = cli.run("unwrap", "-format=json", BAO_TOKEN=token, VAULT_TOKEN=token)
    assert unwrapped.returncode == 0, unwrapped.stderr
    auth = json.loads(unwrapped.stdout)["auth"]
    shown.append(" ".join(sorted(auth)) + f"\n{auth['policies']}")
    cli("write", "cubbyhole/mine", "a=b")
    shown += [cli("read", "cubbyhole/mine"), cli("list", "cubbyhole/")]
    return [normalise(text) for text in shown]


def test_bao_wraps_and_unwraps_as_against_openbao(tmp_path: Path) -> None:
    with running(bao_dev_server(tmp_path / "bao")) as bao:
        expected = bao_wrapping_session(bao_client(bao, tmp_path / "bao-cli"))
    with running(vaultlog_dev_server(tmp_path / "vaultlog")) as ours:
        got = bao_wrapping_session(bao_client(ours, tmp_path / "vaultlog-cli"))
    assert "wrapping_token_creation_path:    secret/x" in expected[0]
    assert "hunter2" in expected[1] and INVALID in expected[2]
    assert got == expected
