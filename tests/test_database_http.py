"""The database backend served over HTTP by a real ``vault server -dev``, to hvac 2.4 and
the real ``bao`` CLI, against the PostgreSQL the tests start."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest

from tests.servers import DevServer, bao_client, running, vaultlog_dev_server
from tools.bench.postgres import CREATION, AppDatabase, PostgresServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(vaultlog_dev_server(tmp_path_factory.mktemp("database-http"))) as started:
        yield started


def mounted(server: DevServer, app_db: AppDatabase, path: str) -> hvac.Client:
    """``path`` mounted as a database backend, ``app`` configured, role ``readonly``."""
    client = hvac.Client(url=server.addr, token="root")
    client.sys.enable_secrets_engine("database", path=path)
    client.secrets.database.configure(
        "app",
        "postgresql-database-plugin",
        mount_point=path,
        allowed_roles=["readonly"],
        connection_url=app_db.template_url,
        username=app_db.admin,
        password=app_db.password,
    )
    client.secrets.database.create_role(
        "readonly",
        "app",
        [CREATION],
        default_ttl="1h",
        max_ttl="24h",
        mount_point=path,
    )
    return client


@pytest.fixture
def client(server: DevServer, app_db: AppDatabase, request: pytest.FixtureRequest) -> hvac.Client:
    path = f"db-{request.node.name[-20:].replace('_', '-')}"
    made = mounted(server, app_db, path)
    made.mount = path  # type: ignore[attr-defined]
    return made


def creds(client: hvac.Client) -> dict[str, Any]:
    answer: dict[str, Any] = client.secrets.database.generate_credentials(
        "readonly",
        mount_point=client.mount,  # type: ignore[attr-defined]
    )
    return answer


def test_hvac_issue_query_renew_revoke(client: hvac.Client, app_db: AppDatabase) -> None:
    mount = client.mount  # type: ignore[attr-defined]
    shown = client.secrets.database.read_connection("app", mount_point=mount)["data"]
    assert shown["plugin_name"] == "postgresql-database-plugin"
    assert app_db.password not in str(shown)
    role = client.secrets.database.read_role("readonly", mount_point=mount)["data"]
    assert role["db_name"] == "app" and role["default_ttl"] == 3600
    assert client.secrets.database.list_roles(mount_point=mount)["data"]["keys"] == ["readonly"]

    secret = creds(client)
    assert secret["lease_duration"] == 3600 and secret["renewable"] is True
    user, password = secret["data"]["username"], secret["data"]["password"]
    with app_db.connect(user, password) as session:
        assert session.execute("SELECT count(*) FROM items").fetchone() == (2,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            session.execute("DELETE FROM items")

    renewed = client.sys.renew_lease(secret["lease_id"], increment=7200)
    assert renewed["lease_duration"] == 7200
    ahead = app_db.valid_until(user).timestamp() - time.time()  # type: ignore[attr-defined]
    assert 7000 < ahead <= 7200

    client.sys.revoke_lease(secret["lease_id"])
    assert user not in app_db.roles()

    client.secrets.database.rotate_root_credentials("app", mount_point=mount)
    with pytest.raises(psycopg.OperationalError):
        app_db.connect(app_db.admin, app_db.password)
    client.secrets.database.reset_connection("app", mount_point=mount)
    again = creds(client)  # the store logs in with the password only it knows
    app_db.connect(again["data"]["username"], again["data"]["password"]).close()


def test_bao_cli_reads_credentials(server: DevServer, client: hvac.Client, tmp_path: Path) -> None:
    bao = bao_client(server, tmp_path / "bao")
    table = bao("read", f"{client.mount}/creds/readonly")  # type: ignore[attr-defined]
    rows = dict(line.split(None, 1) for line in table.splitlines()[2:])
    assert rows["lease_id"].startswith(f"{client.mount}/creds/readonly/")  # type: ignore[attr-defined]
    assert rows["lease_duration"].strip() == "1h"
    assert rows["lease_renewable"].strip() == "true"
    assert rows["username"].startswith("v-root-readonly-")


def test_token_revocation_revokes_its_database_leases(
    server: DevServer, client: hvac.Client, app_db: AppDatabase
) -> None:
    child_token = client.auth.token.create(policies=["root"])["auth"]["client_token"]
    child = hvac.Client(url=server.addr, token=child_token)
    child.mount = client.mount  # type: ignore[attr-defined]
    mine, other = creds(child), creds(client)
    client.auth.token.revoke(child_token)
    assert mine["data"]["username"] not in app_db.roles()
    assert other["data"]["username"] in app_db.roles()


def test_display_name_carrying_sql_is_cut_out(
    server: DevServer, client: hvac.Client, app_db: AppDatabase
) -> None:
    before = app_db.roles("")
    token = client.auth.token.create(policies=["root"], display_name='a"; DROP ROLE x; --')
    held = hvac.Client(url=server.addr, token=token["auth"]["client_token"])
    held.mount = client.mount  # type: ignore[attr-defined]
    secret = creds(held)
    user = secret["data"]["username"]
    assert user.startswith("v-token-a-")  # Vault's display name, then cut to 8
    assert set(user) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    assert app_db.roles("") - before == {user}
    app_db.connect(user, secret["data"]["password"]).close()


def test_database_down_during_revocation(server: DevServer, tmp_path: Path) -> None:
    """The lease stays, shown failing; the server's timer revokes it once the database is
    back, exactly once."""
    own = PostgresServer()
    own.start()
    try:
        app_db = AppDatabase.create(own)
        client = mounted(server, app_db, "db-outage")
        secret = client.secrets.database.generate_credentials("readonly", mount_point="db-outage")
        user, lease_id = secret["data"]["username"], secret["lease_id"]
        own.stop()

        status, answer = server.request(
            "PUT", "sys/leases/revoke", {"lease_id": lease_id, "sync": True}, token="root"
        )
        assert status == 400 and len(answer["errors"]) == 1, answer
        assert answer["errors"][0].startswith(f"failed to revoke lease '{lease_id}': ")
        assert "\n" not in answer["errors"][0] and app_db.password not in answer["errors"][0]
        assert "connection" in answer["errors"][0]
        listed = server.call("GET", "sys/leases?prefix=db-outage/", token="root")["data"]["leases"]
        assert [(x["lease_id"], x["username"]) for x in listed] == [(lease_id, user)]
        assert listed[0]["failures"] >= 1 and listed[0]["last_error"]

        own.start()  # the same data directory and port
        assert user in app_db.roles()
        deadline = time.monotonic() + 30
        while server.call("GET", "sys/leases?prefix=db-outage/", token="root")["data"]["leases"]:
            assert time.monotonic() < deadline, "the timer did not revoke the lease"
            time.sleep(0.5)
        assert user not in app_db.roles()
        trail = server.call(
            "GET", "sys/vaultlog/audit?path=db-outage/&type=lease.revoked", token="root"
        )
        assert len(trail["data"]["entries"]) == 1
        assert "Traceback" not in server.log(tail=None)
    finally:
        own.close()
