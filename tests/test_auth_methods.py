"""Policies, capabilities and the auth methods (userpass, approle) on a real `vault server`
with a file store, over HTTP, mostly through hvac 2.4: the shapes and words of
/work/shared/reference/openbao-2.7.2/sys-policy.json and auth-token.json, a policy's
denials as 403s recorded in the trail, logins that answer tokens, disabling a method
revoking its tokens, and passwords and secret ids that never reach the disk or the log."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
from hvac import exceptions

from tests.conftest import vault_executable
from tests.servers import (
    DevServer,
    ServerCLI,
    bao_client,
    config_server,
    root_token,
    running,
)

ACL_DENIED = "1 error occurred:\n\t* permission denied\n\n"
APP_READER = 'path "secret/app/*" {\n  capabilities = ["read"]\n}\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(config_server(tmp_path_factory.mktemp("auth-methods"))) as started:
        yield started


@pytest.fixture
def root(server: DevServer) -> hvac.Client:
    return hvac.Client(url=server.addr, token=root_token(server))


def call(
    server: DevServer, method: str, path: str, body: object = None, token: str | None = None
) -> tuple[int, Any]:
    """One request, root's unless another token (or "" for none) is given: status, JSON."""
    return server.request(method, path, body, root_token(server) if token is None else token)


def marker(kind: str) -> str:
    """A value that can only be found where it was put."""
    return f"{kind}-{os.urandom(12).hex()}"


def denials(server: DevServer) -> list[dict[str, Any]]:
    status, body = call(server, "GET", "sys/vaultlog/audit?type=request.denied")
    assert status == 200
    return list(body["data"]["entries"])


# ---- policies ------------------------------------------------------------------------------


def test_policies_on_the_legacy_and_the_acl_paths(root: hvac.Client) -> None:
    root.sys.create_or_update_policy("hvp", APP_READER)
    read = root.sys.read_policy("hvp")
    assert read["rules"] == read["data"]["rules"] == APP_READER  # legacy: also at the top
    assert read["data"] == {"name": "hvp", "rules": APP_READER}  # Vault 1.15's shape
    listed = root.sys.list_policies()
    assert listed["keys"] == listed["policies"] == listed["data"]["keys"]
    assert listed["keys"][-1] == "root" and {"default", "hvp"} <= set(listed["keys"])

    root.sys.create_or_update_acl_policy("MixedCase", APP_READER)  # names are lower-cased
    acl = root.sys.read_acl_policy("mixedcase")
    assert "policy" not in acl and acl["data"]["policy"] == APP_READER
    assert acl["data"]["name"] == "mixedcase"
    keys = root.sys.list_acl_policies()["data"]["keys"]
    assert keys[-1] == "root" and keys[:-1] == sorted(keys[:-1])
    assert {"default", "hvp", "mixedcase"} <= set(keys)
    assert "response-wrapping" not in keys

    root.sys.create_or_update_acl_policy("hvp", 'path "x" { capabilities = ["list"] }')
    assert (
        root.sys.read_acl_policy("hvp")["data"]["policy"] == 'path "x" { capabilities = ["list"] }'
    )
    root.sys.delete_policy("hvp")
    root.sys.delete_acl_policy("mixedcase")
    for read_it in (root.sys.read_policy, root.sys.read_acl_policy):
        with pytest.raises(exceptions.InvalidPath):
            read_it("hvp")
    assert "hvp" not in root.sys.list_acl_policies()["data"]["keys"]

    builtin = root.sys.read_policy("default")["data"]
    assert 'path "sys/capabilities-self"' in builtin["rules"]
    assert root.sys.read_acl_policy("root")["data"] == {"name": "root", "policy": ""}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("PUT", "sys/policy/root", {"policy": APP_READER}, 400, 'cannot update "root" policy'),
        (
            "PUT",
            "sys/policies/acl/Root",
            {"policy": APP_READER},
            400,
            'cannot update "root" policy',
        ),
        (
            "PUT",
            "sys/policy/response-wrapping",
            {"policy": APP_READER},
            400,
            'cannot update "response-wrapping" policy',
        ),
        ("DELETE", "sys/policy/default", None, 400, "cannot delete default policy"),
        ("DELETE", "sys/policies/acl/root", None, 400, 'cannot delete "root" policy'),
        ("PUT", "sys/policies/acl/empty", {}, 400, "'policy' parameter not supplied or empty"),
        (
            "PUT",
            "sys/policy/empty",
            {"policy": ""},
            400,
            "'policy' parameter not supplied or empty",
        ),
        ("PUT", "sys/policy/bad", {"policy": 'path "x" {'}, 400, "failed to parse policy: "),
        (
            "PUT",
            "sys/policies/acl/bad2",
            {"policy": 'path "x" { capabilities = ["fly"] }'},
            400,
            "failed to parse policy: ",
        ),
        ("GET", "sys/policy/nosuch", None, 404, None),
        ("GET", "sys/policies/acl/nosuch", None, 404, None),
        ("DELETE", "sys/policy/nosuch", None, 204, None),
    ],
)
def test_policy_errors_in_vaults_words(
    server: DevServer, method: str, path: str, body: object, status: int, error: str | None
) -> None:
    got, answer = call(server, method, path, body)
    assert got == status
    if error is None:
        assert answer in (None, {"errors": []})
    else:
        assert answer["errors"][0].startswith(error)
    assert call(server, "GET", "sys/policy/bad")[0] == 404  # nothing half-written


def test_the_legacy_rules_key_is_taken_with_vaults_warning(server: DevServer) -> None:
    status, answer = call(server, "PUT", "sys/policy/legacy", {"rules": APP_READER})
    assert status == 200
    assert answer["warnings"] == ["'rules' is deprecated, please use 'policy' instead"]
    assert call(server, "GET", "sys/policy/legacy")[1]["rules"] == APP_READER
    assert call(server, "PUT", "sys/policies/acl/legacy2", {"rules": APP_READER})[0] == 400


def test_a_policy_grants_its_paths_and_every_denial_is_in_the_trail(
    server: DevServer, root: hvac.Client
) -> None:
    root.write("secret/app/config", value="1")
    root.write("secret/other", value="2")
    root.sys.create_or_update_acl_policy("app-reader", APP_READER)
    created = root.auth.token.create(policies=["app-reader"], ttl="1h")["auth"]
    token, accessor = created["client_token"], created["accessor"]
    reader = hvac.Client(url=server.addr, token=token)

    assert reader.read("secret/app/config")["data"] == {"value": "1"}
    before = len(denials(server))
    refused = [
        ("PUT", "secret/app/config", {"value": "x"}),
        ("GET", "secret/other", None),
        ("DELETE", "secret/app/config", None),
        ("GET", "sys/policy", None),
    ]
    for method, path, body in refused:
        assert call(server, method, path, body, token) == (403, {"errors": [ACL_DENIED]})
    with pytest.raises(exceptions.Forbidden):
        reader.write("secret/app/new", value="x")

    recorded = denials(server)[before:]
    assert [(e["path"], e["detail"]["operation"]) for e in recorded] == [
        ("secret/app/config", "write"),
        ("secret/other", "read"),
        ("secret/app/config", "delete"),
        ("sys/policy", "read"),
        ("secret/app/new", "write"),
    ]
    assert {e["actor"] for e in recorded} == {f"token-token:{accessor}"}  # hvac names it "token"
    assert {e["detail"]["reason"] for e in recorded} == {"permission denied"}
    assert root.read("secret/app/config")["data"] == {"value": "1"}  # the refused write left it


def test_capabilities_self_and_of_another_token(server: DevServer, root: hvac.Client) -> None:
    root.sys.create_or_update_acl_policy("app-reader", APP_READER)
    token = root.auth.token.create(policies=["app-reader"], ttl="1h")["auth"]["client_token"]
    paths = ["secret/app/x", "secret/other"]

    status, answer = call(server, "POST", "sys/capabilities-self", {"paths": paths}, token)
    assert status == 200
    expected = {"secret/app/x": ["read"], "secret/other": ["deny"]}
    assert answer["data"] == expected and answer["secret/app/x"] == ["read"]  # also at the top
    status, answer = call(server, "POST", "sys/capabilities-self", {"path": "secret/app/x"}, token)
    assert answer["data"] == {"secret/app/x": ["read"], "capabilities": ["read"]}

    status, answer = call(
        server, "POST", "sys/capabilities", {"token": token, "paths": ["secret/app/y"]}
    )
    assert answer["data"] == {"secret/app/y": ["read"], "capabilities": ["read"]}
    status, answer = call(server, "POST", "sys/capabilities-self", {"paths": ["anything"]})
    assert answer["data"] == {"anything": ["root"], "capabilities": ["root"]}

    assert call(server, "POST", "sys/capabilities-self", {}, token) == (
        400,
        {"errors": ["paths must be supplied"]},
    )
    assert call(server, "POST", "sys/capabilities", {"token": "s.nosuch", "paths": ["a"]}) == (
        400,
        {"errors": ["invalid token"]},
    )
    # Another token's capabilities are not the default policy's to see.
    status, _ = call(server, "POST", "sys/capabilities", {"token": token, "paths": ["a"]}, token)
    assert status == 403


# ---- auth methods --------------------------------------------------------------------------


def test_enable_list_tune_and_disable_an_auth_method(server: DevServer, root: hvac.Client) -> None:
    root.sys.enable_auth_method("userpass", path="people", description="humans")
    methods = root.sys.list_auth_methods()
    assert methods["data"] == {k: v for k, v in methods.items() if k.endswith("/")}
    assert methods["data"]["token/"]["type"] == "token"
    assert methods["data"]["token/"]["options"] is None
    people = methods["data"]["people/"]
    assert (people["type"], people["description"]) == ("userpass", "humans")
    assert people["accessor"].startswith("auth_userpass_")
    assert people["config"]["token_type"] == "default-service"
    assert "auth/people/" not in root.sys.list_mounted_secrets_engines()["data"]

    tune = root.sys.read_auth_method_tuning("people")
    assert tune["data"]["default_lease_ttl"] == 768 * 3600 == tune["default_lease_ttl"]
    root.sys.tune_auth_method("people", default_lease_ttl="1h", description="tuned")
    tune = root.sys.read_auth_method_tuning("people")["data"]
    assert (tune["default_lease_ttl"], tune["description"]) == (3600, "tuned")
    assert root.sys.list_auth_methods()["data"]["people/"]["config"]["default_lease_ttl"] == 3600

    refusals = [
        ("POST", "sys/auth/people", {"type": "userpass"}, "path is already in use at people/"),
        ("POST", "sys/auth/token", {"type": "userpass"}, "path is already in use at token/"),
        ("POST", "sys/auth/kv", {"type": "kv"}, "plugin not found in the catalog: kv"),
        ("POST", "sys/auth/x", {}, "backend type must be specified as a string"),
        ("DELETE", "sys/auth/token", None, "token credential backend cannot be disabled"),
        ("POST", "sys/mounts/auth/x", {"type": "kv"}, 'cannot mount "auth/x/"'),
        (
            "POST",
            "sys/mounts/up",
            {"type": "userpass"},
            "plugin not found in the catalog: userpass",
        ),
        (
            "POST",
            "sys/auth/nosuch/tune",
            {"default_lease_ttl": "1h"},
            'tune of path "auth/nosuch/" failed: no mount entry found',
        ),
        ("GET", "sys/auth/nosuch/tune", None, 'cannot fetch sysview for path "auth/nosuch/"'),
    ]
    for method, path, body, error in refusals:
        assert call(server, method, path, body) == (400, {"errors": [error]}), path

    root.sys.disable_auth_method("people")
    assert "people/" not in root.sys.list_auth_methods()["data"]
    assert call(server, "DELETE", "sys/auth/people")[0] == 204  # nothing there: done


def test_userpass_users_and_logins_with_hvac(server: DevServer, root: hvac.Client) -> None:
    root.sys.enable_auth_method("userpass")
    root.sys.create_or_update_acl_policy("app-reader", APP_READER)
    password = marker("pw")
    root.auth.userpass.create_or_update_user("Alice", password, token_policies="app-reader")
    user = root.auth.userpass.read_user("alice")["data"]
    assert user["token_policies"] == ["app-reader"] and user["token_type"] == "default"
    assert "password" not in json.dumps(user) and password not in json.dumps(user)
    assert "alice" in root.auth.userpass.list_user()["data"]["keys"]

    alice = hvac.Client(url=server.addr)
    auth = alice.auth.userpass.login("alice", password)["auth"]
    assert auth["policies"] == ["app-reader", "default"]
    assert auth["metadata"] == {"username": "alice"} and auth["orphan"] is True
    me = alice.auth.token.lookup_self()["data"]
    assert (me["display_name"], me["path"]) == ("userpass-alice", "auth/userpass/login/alice")
    root.write("secret/app/config", value="1")
    assert alice.read("secret/app/config")["data"] == {"value": "1"}

    for name, given in (("alice", password + "x"), ("nobody", password)):
        status, answer = call(
            server, "POST", f"auth/userpass/login/{name}", {"password": given}, ""
        )
        assert (status, answer) == (400, {"errors": ["invalid username or password"]})
    with pytest.raises(exceptions.InvalidRequest):
        hvac.Client(url=server.addr).auth.userpass.login("alice", "wrong")

    new_password = marker("pw")
    root.auth.userpass.update_password_on_user("alice", new_password)
    assert call(server, "POST", "auth/userpass/login/alice", {"password": password}, "")[0] == 400
    assert hvac.Client(url=server.addr).auth.userpass.login("alice", new_password)["auth"]
    call(server, "POST", "auth/userpass/users/alice/policies", {"policies": "a,b"})
    assert root.auth.userpass.read_user("alice")["data"]["policies"] == ["a", "b"]
    status, answer = call(server, "POST", "auth/userpass/users/bob", {"token_policies": "a"})
    assert (status, answer) == (400, {"errors": ["must provide either password or password_hash"]})
    root.auth.userpass.delete_user("alice")
    with pytest.raises(exceptions.InvalidPath):
        root.auth.userpass.read_user("alice")


def test_approle_roles_secret_ids_and_logins_with_hvac(
    server: DevServer, root: hvac.Client
) -> None:
    root.sys.enable_auth_method("approle")
    approle = root.auth.approle
    approle.create_or_update_approle(
        "App", token_policies=["app-reader"], token_ttl="10m", secret_id_num_uses=2
    )
    role = approle.read_role("app")["data"]
    assert (role["token_policies"], role["token_ttl"], role["secret_id_num_uses"]) == (
        ["app-reader"],
        600,
        2,
    )
    assert role["bind_secret_id"] is True
    assert "app" in approle.list_roles()["data"]["keys"]
    approle.update_role_id("app", "my-role-id")
    assert approle.read_role_id("app")["data"]["role_id"] == "my-role-id"

    made = approle.generate_secret_id("app")["data"]
    secret_id, accessor = made["secret_id"], made["secret_id_accessor"]
    assert made["secret_id_num_uses"] == 2
    assert approle.list_secret_id_accessors("app")["data"]["keys"] == [accessor]
    assert approle.read_secret_id("app", secret_id)["data"]["secret_id_accessor"] == accessor

    machine = hvac.Client(url=server.addr)
    auth = machine.auth.approle.login("my-role-id", secret_id)["auth"]
    assert auth["metadata"] == {"role_name": "app"} and auth["lease_duration"] == 600
    assert auth["policies"] == ["app-reader", "default"]
    assert machine.auth.token.lookup_self()["data"]["display_name"] == "approle"
    assert approle.read_secret_id("app", secret_id)["data"]["secret_id_num_uses"] == 1
    assert hvac.Client(url=server.addr).auth.approle.login("my-role-id", secret_id)["auth"]
    with pytest.raises(exceptions.InvalidPath):  # its second use was its last: none left
        approle.list_secret_id_accessors("app")
    invalid = (400, {"errors": ["invalid role or secret ID"]})
    body = {"role_id": "my-role-id", "secret_id": secret_id}
    assert call(server, "POST", "auth/approle/login", body, "") == invalid
    assert call(server, "POST", "auth/approle/login", {**body, "role_id": "nope"}, "") == invalid
    assert call(server, "POST", "auth/approle/login", {"role_id": "my-role-id"}, "") == (
        400,
        {"errors": ["missing secret_id"]},
    )

    another = approle.generate_secret_id("app")["data"]["secret_id"]
    approle.destroy_secret_id("app", another)
    assert call(server, "POST", "auth/approle/login", {**body, "secret_id": another}, "") == invalid
    status, answer = call(server, "POST", "auth/approle/role/ghost/secret-id", {})
    assert (status, answer) == (404, {"errors": ['role "ghost" does not exist']})
    approle.delete_role("app")
    with pytest.raises(exceptions.InvalidPath):
        approle.read_role("app")


def test_disabling_an_auth_method_revokes_its_tokens(server: DevServer, root: hvac.Client) -> None:
    root.sys.enable_auth_method("userpass", path="temp")
    password = marker("pw")
    root.auth.userpass.create_or_update_user("carol", password, mount_point="temp")
    carol = hvac.Client(url=server.addr)
    carol.auth.userpass.login("carol", password, mount_point="temp")
    accessor = carol.auth.token.lookup_self()["data"]["accessor"]
    other = root.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]

    root.sys.disable_auth_method("temp")
    assert call(server, "GET", "auth/token/lookup-self", token=carol.token)[0] == 403
    assert call(server, "GET", "auth/token/lookup-self", token=other)[0] == 200  # not its
    _, body = call(server, "GET", "sys/vaultlog/audit?type=token.revoked")
    reasons = {e["detail"]["accessor"]: e["detail"]["reason"] for e in body["data"]["entries"]}
    assert reasons[accessor] == "auth-disabled"
    # No method there now: a login is a request without a token to an unknown path.
    assert call(server, "POST", "auth/temp/login/carol", {"password": password}, "")[0] == 403


def test_the_bao_cli_enables_logs_in_and_makes_secret_ids(
    server: DevServer, root: hvac.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The commands of OpenBao's auth docs, with the real `bao`; `write -f` sends ``null``."""
    bao = bao_client(server, tmp_path_factory.mktemp("bao-cli"))
    bao.token = root_token(server)
    bao("auth", "enable", "-path=cli-users", "userpass")
    assert "cli-users/" in bao("auth", "list")
    password = marker("pw")
    bao("write", "auth/cli-users/users/erin", f"password={password}", "token_policies=default")
    out = bao(
        "login",
        "-method=userpass",
        "-path=cli-users",
        "-no-store",
        "-format=json",
        "username=erin",
        f"password={password}",
    )
    assert json.loads(out)["auth"]["metadata"] == {"username": "erin"}
    bao("auth", "enable", "-path=cli-machines", "approle")
    bao("write", "-f", "auth/cli-machines/role/r1")
    made = json.loads(bao("write", "-f", "-format=json", "auth/cli-machines/role/r1/secret-id"))
    assert set(made["data"]) >= {"secret_id", "secret_id_accessor"}
    bao("auth", "disable", "cli-users")
    assert "cli-users/" not in bao("auth", "list")


def test_passwords_and_secret_ids_never_reach_the_disk_or_the_log(
    server: DevServer, root: hvac.Client
) -> None:
    """The store's files are encrypted, the password is kept only as a hash and the secret
    id only as an HMAC: neither, nor their usual encodings, is in any file or the log."""
    if "userpass/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("userpass")
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    password, custom = marker("password"), marker("secretid")
    root.auth.userpass.create_or_update_user("dave", password)
    hvac.Client(url=server.addr).auth.userpass.login("dave", password)
    call(server, "POST", "auth/userpass/login/dave", {"password": password + "!"}, "")
    root.auth.approle.create_or_update_approle("svc", token_policies=["default"])
    role_id = root.auth.approle.read_role_id("svc")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("svc")["data"]["secret_id"]
    root.auth.approle.create_custom_secret_id("svc", custom)
    for given in (secret_id, custom):
        hvac.Client(url=server.addr).auth.approle.login(role_id, given)
    root.auth.approle.read_secret_id("svc", custom)

    files = [p for p in (server.home / "data").rglob("*") if p.is_file()]
    assert files, "the store wrote nothing"
    stored = b"".join(p.read_bytes() for p in files)
    _, trail = call(server, "GET", "sys/vaultlog/audit")
    for secret in (password, secret_id, custom):
        for form in forms(secret):
            assert form not in stored
            assert form.decode("latin-1") not in server.log(tail=None)
            assert form.decode("latin-1") not in json.dumps(trail)


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, raw.hex().encode(), base64.b64encode(raw), base64.b64encode(raw).rstrip(b"=")]


def test_bao_kv_works_for_a_token_its_policy_allows(
    server: DevServer, root: hvac.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`bao kv` asks sys/internal/ui/mounts/PATH first: any token may ask (the default
    policy), and is told only where its policies grant something."""
    root.sys.create_or_update_acl_policy("kv-reader", APP_READER)
    root.secrets.kv.v1.create_or_update_secret("app/cfg", {"k": "v"}, mount_point="secret")
    token = root.auth.token.create(policies=["kv-reader"])["auth"]["client_token"]
    bao = bao_client(server, tmp_path_factory.mktemp("bao-kv"))
    bao.token = token
    assert "k      v" in bao("kv", "get", "secret/app/cfg")
    refused = bao.run("kv", "get", "secret/other")
    assert refused.returncode == 2
    assert "preflight capability check returned 403" in refused.stderr

    # A policy's refusal, as bao prints it (Go's multierror text) and as the seed's
    # commands print it (one line).
    vault = ServerCLI(vault_executable(), server, bao.home, token)
    theirs, ours = (cli.run("kv", "put", "secret/app/cfg", "k=x") for cli in (bao, vault))
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    assert "* 1 error occurred:\n\t* permission denied\n" in ours.stderr
    seed = vault.run("write", "secret/app/cfg", "k=x")
    assert (seed.returncode, seed.stderr) == (
        1,
        "Error writing data to secret/app/cfg: permission denied\n",
    )
