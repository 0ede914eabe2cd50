"""hvac 2.4, the Python client most Vault users have, against `vault server`: the sys mount
and lease calls, KV version 1, status and authentication, in the shapes of
/work/shared/reference/openbao-2.7.2/hvac-calls.json. Each test runs against a dev server
and a `-config` server with storage "file"."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac import exceptions

from tests.cluster import Cluster
from tests.iam_endpoint import MotoServer
from tests.servers import DevServer, config_server, root_token, running, vaultlog_dev_server
from tools.bench.postgres import PostgresServer

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}
# What one mount's tune answer carries, at the top level and in data (sys-mounts-tune.json).
TUNE_KEYS = {"default_lease_ttl", "max_lease_ttl", "description", "force_no_cache"}
ENVELOPE = ["request_id", "lease_id", "renewable", "lease_duration", "data"]


def start(kind: str, home: Path, moto: MotoServer) -> DevServer:
    """A dev server, or a -config server on a file store in ``home/data``. boto3 in the
    server finds moto's IAM through its environment (hvac's configure_root_iam_credentials
    has no field for our backend's ``endpoint``)."""
    env = {"AWS_ENDPOINT_URL_IAM": moto.url, "AWS_EC2_METADATA_DISABLED": "true"}
    if kind == "dev":
        return vaultlog_dev_server(home, env=env)
    return config_server(home, env=env)


def hvac_client(server: DevServer, token: str | None = None) -> hvac.Client:
    """hvac on the server, with its root token unless given another."""
    return hvac.Client(url=server.addr, token=root_token(server) if token is None else token)


@pytest.fixture(scope="module", params=["dev", "file", "cluster"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    moto_server: MotoServer,
) -> Iterator[DevServer]:
    """A dev server, a -config server on files, or a standby of a cluster of three nodes
    on PostgreSQL (every call forwarded to the active node)."""
    home = tmp_path_factory.mktemp(f"hvac-{request.param}")
    if request.param == "cluster":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        env = {"AWS_ENDPOINT_URL_IAM": moto_server.url, "AWS_EC2_METADATA_DISABLED": "true"}
        cluster = Cluster.of(home, postgres.new_database(), 3, env=env)
        try:
            cluster.start()
            yield cluster.standbys()[0]
        finally:
            cluster.stop()
        return
    with running(start(request.param, home, moto_server)) as started:
        yield started


@pytest.fixture
def client(server: DevServer) -> Iterator[hvac.Client]:
    opened = hvac_client(server)
    try:
        yield opened
    finally:
        opened.adapter.close()


def mounts(client: hvac.Client) -> dict[str, Any]:
    return dict(client.sys.list_mounted_secrets_engines()["data"])


# ---- authentication and status -------------------------------------------------------------


def test_is_authenticated_with_the_root_token(client: hvac.Client) -> None:
    """hvac asks GET auth/token/lookup-self (hvac-calls.json "is_authenticated()")."""
    assert client.is_authenticated() is True


def test_is_not_authenticated_with_a_wrong_token(server: DevServer) -> None:
    assert hvac_client(server, "wrong-token").is_authenticated() is False
    assert hvac_client(server, "").is_authenticated() is False


def test_a_wrong_token_is_forbidden(server: DevServer) -> None:
    wrong = hvac_client(server, "s.wrongwrongwrongwrongwron")
    for call in (
        lambda: wrong.sys.list_mounted_secrets_engines(),
        lambda: wrong.sys.enable_secrets_engine("generic", path="intruder"),
        lambda: wrong.secrets.kv.v1.read_secret("anything", mount_point="secret"),
        lambda: wrong.secrets.kv.v1.create_or_update_secret(
            "anything", {"v": "1"}, mount_point="secret"
        ),
        lambda: wrong.sys.read_lease("aws/creds/deploy/x"),
    ):
        with pytest.raises(exceptions.Forbidden) as raised:
            call()
        assert raised.value.errors == ["permission denied"]
    assert "intruder/" not in mounts(hvac_client(server))


def standing_by(server: DevServer) -> bool:
    """Whether the server is a standby of a cluster (health then answers 429)."""
    return server.call("GET", "sys/leader").get("is_self") is False


def test_health_status(server: DevServer, client: hvac.Client) -> None:
    standby = standing_by(server)
    health = client.sys.read_health_status(method="GET", standby_ok=standby)
    assert isinstance(health, dict)
    assert {k: health[k] for k in ("initialized", "sealed", "standby")} == {
        "initialized": True,
        "sealed": False,
        "standby": standby,
    }
    assert isinstance(health["version"], str) and health["version"]
    assert abs(health["server_time_utc"] - time.time()) < 60
    head = client.sys.read_health_status()  # hvac's default is HEAD
    assert head.status_code == (429 if standby else 200) and head.content == b""
    if standby:
        assert client.sys.read_health_status(method="GET", standby_code=299).status_code == 299
    else:
        assert client.sys.read_health_status(method="GET", active_code=299).status_code == 299


def test_health_needs_no_token(server: DevServer) -> None:
    anonymous = hvac_client(server, "")
    health = anonymous.sys.read_health_status(method="GET", standby_ok=True)
    assert health["sealed"] is False
    assert anonymous.sys.read_seal_status()["sealed"] is False


def test_seal_status(server: DevServer, client: hvac.Client) -> None:
    status = client.sys.read_seal_status()
    assert {k: status[k] for k in ("type", "initialized", "sealed", "t", "n", "progress")} == {
        "type": "shamir",
        "initialized": True,
        "sealed": False,
        "t": 1,
        "n": 1,
        "progress": 0,
    }
    config = "" if "-dev" in server.argv else (server.home / "server.hcl").read_text()
    expected = "inmem" if not config else "postgresql" if "postgresql" in config else "file"
    assert status["storage_type"] == expected
    assert client.sys.is_sealed() is False
    assert client.sys.is_initialized() is True
    assert client.seal_status["sealed"] is False


# ---- the mount table ------------------------------------------------------------------------


def test_mount_tune_move_and_disable(client: hvac.Client) -> None:
    assert client.sys.enable_secrets_engine("generic", path="hvgen").status_code == 204
    assert (
        client.sys.enable_secrets_engine(
            "kv", path="hv1", description="kv one", options={"version": "1"}
        ).status_code
        == 204
    )
    table = mounts(client)
    assert table["hvgen/"]["type"] == "generic"
    assert table["hv1/"]["type"] == "kv"
    assert table["hv1/"]["options"] == {"version": "1"}
    assert table["hv1/"]["description"] == "kv one"
    assert table["secret/"]["type"] in ("generic", "kv")
    assert "sys/" in table

    tune = client.sys.read_mount_configuration("hv1")
    assert list(tune)[-len(ENVELOPE) - 3 :][: len(ENVELOPE)] == ENVELOPE
    assert set(tune["data"]) >= TUNE_KEYS and set(tune) >= TUNE_KEYS
    assert tune["data"]["options"] == {"version": "1"}
    assert tune["data"]["description"] == "kv one"
    assert isinstance(tune["data"]["default_lease_ttl"], int)
    assert tune["data"]["default_lease_ttl"] == tune["data"]["max_lease_ttl"] > 0

    tuned = client.sys.tune_mount_configuration(
        "hv1", default_lease_ttl="3600s", max_lease_ttl="8600s", description="tuned"
    )
    assert tuned.status_code == 204
    tune = client.sys.read_mount_configuration("hv1")["data"]
    assert (tune["default_lease_ttl"], tune["max_lease_ttl"], tune["description"]) == (
        3600,
        8600,
        "tuned",
    )
    client.sys.tune_mount_configuration("hv1", default_lease_ttl="1h")  # hvac-calls.json's
    assert client.sys.read_mount_configuration("hv1")["data"]["default_lease_ttl"] == 3600
    with pytest.raises(exceptions.InvalidRequest) as raised:
        client.sys.tune_mount_configuration("hv1", default_lease_ttl="100h", max_lease_ttl="10h")
    assert "would be less than" in str(raised.value)
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.tune_mount_configuration("nosuch", default_lease_ttl="1h")
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.read_mount_configuration("nosuch")

    client.secrets.kv.v1.create_or_update_secret("moving", {"v": "along"}, mount_point="hvgen")
    moved = client.sys.move_backend("hvgen", "hvgen2")
    assert isinstance(moved, dict) and moved["migration_id"] == moved["data"]["migration_id"]
    table = mounts(client)
    assert "hvgen/" not in table and table["hvgen2/"]["type"] == "generic"
    assert client.secrets.kv.v1.read_secret("moving", mount_point="hvgen2")["data"] == {
        "v": "along"
    }
    with pytest.raises(exceptions.InvalidPath):
        client.secrets.kv.v1.read_secret("moving", mount_point="hvgen")

    assert client.sys.disable_secrets_engine("hvgen2").status_code == 204
    assert client.sys.disable_secrets_engine("hvgen2").status_code == 204  # gone: no-op
    assert client.sys.disable_secrets_engine("hv1").status_code == 204
    table = mounts(client)
    assert "hvgen2/" not in table and "hv1/" not in table


def test_mount_errors(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("kv", path="taken", options={"version": "1"})
    try:
        with pytest.raises(exceptions.InvalidRequest) as raised:
            client.sys.enable_secrets_engine("kv", path="taken", options={"version": "1"})
        assert raised.value.errors == ["path is already in use at taken/"]
        with pytest.raises(exceptions.InvalidRequest):
            client.sys.enable_secrets_engine("nosuchengine", path="bogus")
        with pytest.raises(exceptions.InvalidRequest) as raised:
            client.sys.enable_secrets_engine("kv", path="sys")
        assert raised.value.errors == ['cannot mount "sys/"']
        with pytest.raises(exceptions.InvalidRequest) as raised:
            client.sys.disable_secrets_engine("sys")
        assert raised.value.errors == ['cannot unmount "sys/"']
        with pytest.raises(exceptions.InvalidRequest) as raised:
            client.sys.move_backend("nosuch", "other")
        assert raised.value.errors == ['no matching mount at "nosuch/"']
    finally:
        client.sys.disable_secrets_engine("taken")


# ---- KV version 1 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend_type", "options"), [("generic", None), ("kv", {"version": "1"})], ids=str
)
def test_kv_v1(client: hvac.Client, backend_type: str, options: dict[str, str] | None) -> None:
    mount = f"kv-{backend_type}"
    client.sys.enable_secrets_engine(backend_type, path=mount, options=options)
    kv = client.secrets.kv.v1
    try:
        created = kv.create_or_update_secret("a", {"v": "1"}, mount_point=mount)
        assert created.status_code == 204  # after a GET that found nothing (hvac-calls.json)
        read = kv.read_secret("a", mount_point=mount)
        assert list(read)[: len(ENVELOPE)] == ENVELOPE
        assert read["data"] == {"v": "1"}
        assert read["lease_id"] == "" and read["renewable"] is False
        assert read["lease_duration"] > 0

        typed = {"n": 1, "f": 1.5, "b": True, "l": [1, "a"], "o": {"k": "v"}, "z": None}
        kv.create_or_update_secret("typed", typed, mount_point=mount)
        assert kv.read_secret("typed", mount_point=mount)["data"] == typed
        kv.create_or_update_secret("a", {"v": "2", "w": "x"}, method="PUT", mount_point=mount)
        assert kv.read_secret("a", mount_point=mount)["data"] == {"v": "2", "w": "x"}
        kv.create_or_update_secret("dir/b", {"v": "3"}, mount_point=mount)
        kv.create_or_update_secret("dir/sub/c", {"v": "4"}, mount_point=mount)

        assert kv.list_secrets("", mount_point=mount)["data"]["keys"] == ["a", "dir/", "typed"]
        assert kv.list_secrets("dir", mount_point=mount)["data"]["keys"] == ["b", "sub/"]
        with pytest.raises(exceptions.InvalidPath):
            kv.list_secrets("nothing", mount_point=mount)

        assert kv.delete_secret("a", mount_point=mount).status_code == 204
        assert kv.delete_secret("a", mount_point=mount).status_code == 204  # idempotent
        with pytest.raises(exceptions.InvalidPath):
            kv.read_secret("a", mount_point=mount)
        assert kv.list_secrets("", mount_point=mount)["data"]["keys"] == ["dir/", "typed"]

        # the generic client calls of hvac-calls.json
        client.write_data(f"{mount}/generic", data={"v": "5"})
        assert client.read(f"{mount}/generic")["data"] == {"v": "5"}
        assert "generic" in client.list(mount)["data"]["keys"]
        client.delete(f"{mount}/generic")
        assert client.read(f"{mount}/generic") is None
    finally:
        client.sys.disable_secrets_engine(mount)


def test_kv_v1_errors(client: hvac.Client) -> None:
    kv = client.secrets.kv.v1
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret("missing", mount_point="secret")
    with pytest.raises(exceptions.InvalidPath) as raised:
        kv.read_secret("x", mount_point="nomount")
    assert "no handler for route" in str(raised.value)
    with pytest.raises(exceptions.InvalidRequest) as raised:
        kv.create_or_update_secret("empty", {}, mount_point="secret")
    assert raised.value.errors == ["missing data fields"]


# ---- leases, from the aws backend against moto -------------------------------------------------


def iam_users(moto: MotoServer) -> set[str]:
    return {u["UserName"] for u in moto.iam().list_users()["Users"]}


def access_keys(moto: MotoServer) -> set[str]:
    iam = moto.iam()
    return {
        key["AccessKeyId"]
        for user in iam.list_users()["Users"]
        for key in iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]
    }


@pytest.fixture
def aws(client: hvac.Client) -> Iterator[hvac.Client]:
    client.sys.enable_secrets_engine("aws", path="aws")
    try:
        client.secrets.aws.configure_root_iam_credentials(
            "AKIAROOT", "root-secret-key", region="us-east-1"
        )
        client.secrets.aws.create_or_update_role(
            "deploy", "iam_user", policy_document=POLICY, legacy_params=True
        )
        client.secrets.aws.configure_lease("1h", "3h")
        yield client
    finally:
        with contextlib.suppress(exceptions.VaultError):
            client.sys.revoke_force("aws/")
        client.sys.disable_secrets_engine("aws")


def test_read_renew_and_revoke_a_lease(aws: hvac.Client, moto_server: MotoServer) -> None:
    secret = aws.secrets.aws.generate_credentials("deploy")
    lease_id = secret["lease_id"]
    assert lease_id.startswith("aws/creds/deploy/")
    assert (secret["renewable"], secret["lease_duration"]) == (True, 3600)
    assert secret["data"]["access_key"] in access_keys(moto_server)

    looked = aws.sys.read_lease(lease_id)
    assert looked["lease_id"] == "" and looked["lease_duration"] == 0
    lease = looked["data"]
    assert set(lease) >= {
        "id",
        "issue_time",
        "expire_time",
        "last_renewal",
        "path",
        "renewable",
        "ttl",
    }
    assert (lease["id"], lease["path"], lease["renewable"]) == (
        lease_id,
        "aws/creds/deploy",
        True,
    )
    assert lease["last_renewal"] is None
    assert 3590 <= lease["ttl"] <= 3600
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", lease["expire_time"])

    renewed = aws.sys.renew_lease(lease_id, increment=600)
    assert renewed["lease_id"] == lease_id
    assert renewed["renewable"] is True
    assert 590 <= renewed["lease_duration"] <= 600

    assert aws.sys.revoke_lease(lease_id).status_code == 204
    assert secret["data"]["access_key"] not in access_keys(moto_server)
    with pytest.raises(exceptions.InvalidRequest) as raised:
        aws.sys.read_lease(lease_id)
    assert raised.value.errors == ["invalid lease"]
    assert aws.sys.revoke_lease(lease_id).status_code == 204  # unknown: Vault says 204 too


def test_a_renewal_shows_in_the_lookup(aws: hvac.Client) -> None:
    """Vault's lookup says when a lease was last renewed (null until then)."""
    lease_id = aws.secrets.aws.generate_credentials("deploy")["lease_id"]
    assert aws.sys.read_lease(lease_id)["data"]["last_renewal"] is None
    aws.sys.renew_lease(lease_id, increment=600)
    last = aws.sys.read_lease(lease_id)["data"]["last_renewal"]
    assert isinstance(last, str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", last)


def test_list_leases_under_a_prefix(aws: hvac.Client) -> None:
    """hvac lists without a trailing slash; Vault's HTTP layer adds one to every LIST."""
    ids = sorted(aws.secrets.aws.generate_credentials("deploy")["lease_id"] for _ in range(2))
    suffixes = [lease_id.rsplit("/", 1)[1] for lease_id in ids]
    slashed = aws.adapter.list("/v1/sys/leases/lookup/aws/creds/deploy/")
    assert slashed["data"]["keys"] == suffixes
    assert aws.adapter.list("/v1/sys/leases/lookup/aws/")["data"]["keys"] == ["creds/"]
    assert aws.sys.list_leases("aws/creds/deploy")["data"]["keys"] == suffixes


def test_revoke_prefix(aws: hvac.Client, moto_server: MotoServer) -> None:
    aws.secrets.aws.create_or_update_role(
        "other", "iam_user", policy_document=POLICY, legacy_params=True
    )
    deploy = [aws.secrets.aws.generate_credentials("deploy") for _ in range(2)]
    other = aws.secrets.aws.generate_credentials("other")
    keys = access_keys(moto_server)
    assert {s["data"]["access_key"] for s in [*deploy, other]} <= keys

    assert aws.sys.revoke_prefix("aws/creds/deploy").status_code == 204
    keys = access_keys(moto_server)
    assert not {s["data"]["access_key"] for s in deploy} & keys
    assert other["data"]["access_key"] in keys
    for secret in deploy:
        with pytest.raises(exceptions.InvalidRequest):
            aws.sys.read_lease(secret["lease_id"])
    assert aws.sys.read_lease(other["lease_id"])["data"]["id"] == other["lease_id"]
    with pytest.raises(exceptions.InvalidPath):
        aws.sys.list_leases("aws/creds/deploy")

    assert aws.sys.revoke_prefix("aws/creds").status_code == 204
    assert other["data"]["access_key"] not in access_keys(moto_server)
    assert aws.sys.revoke_prefix("nosuch").status_code == 204


def test_the_mounts_answer_is_json_vault_tools_can_read(client: hvac.Client) -> None:
    """The whole mount table round-trips through JSON with Vault's per-mount keys."""
    table = mounts(client)
    json.dumps(table)
    for path, entry in table.items():
        assert path.endswith("/")
        assert {
            "type",
            "description",
            "config",
            "accessor",
            "options",
            "local",
            "seal_wrap",
        } <= set(entry), (path, entry)
