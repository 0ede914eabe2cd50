"""The database backend against the PostgreSQL the tests start, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from projections import IntentRecorded, LeaseIssued, LeaseRevoked
from tests.conftest import VaultCLI
from tools.bench.postgres import CREATION, AppDatabase


def issue(vault: VaultCLI, path: str = "database/creds/readonly") -> dict[str, Any]:
    return json.loads(vault("read", "-format=json", path))


def logs_in(app_db: AppDatabase, data: dict[str, Any]) -> bool:
    try:
        app_db.connect(data["username"], data["password"]).close()
    except psycopg.OperationalError:
        return False
    return True


def test_issue_then_query_then_revoke(database: VaultCLI, app_db: AppDatabase) -> None:
    table = database("read", "database/creds/readonly")  # Vault 0.5's table, embedded
    rows = dict(line.split(None, 1) for line in table.splitlines()[1:])
    assert list(rows) == ["lease_id", "lease_duration", "lease_renewable", "password", "username"]
    assert rows["lease_duration"].strip() == "3600"
    assert rows["username"].startswith("v-")

    secret = issue(database)
    user, password = secret["data"]["username"], secret["data"]["password"]
    assert secret["lease_id"].startswith("database/creds/readonly/")
    assert secret["lease_duration"] == 3600 and secret["renewable"] is True
    assert len(user) <= 63 and user.split("-")[2] == "readonly"
    assert len(password) == 20
    session = app_db.connect(user, password)
    assert session.execute("SELECT name FROM items ORDER BY id").fetchall() == [("one",), ("two",)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("INSERT INTO items VALUES (3, 'three')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("SELECT * FROM private.hidden")

    database("lease", "revoke", secret["lease_id"])
    assert user not in app_db.roles()
    with pytest.raises(psycopg.OperationalError):  # its open session was ended
        session.execute("SELECT 1")
    assert app_db.sessions(user) == 0
    assert not logs_in(app_db, secret["data"])


def test_valid_until_follows_the_lease_and_renew_extends_it(
    database: VaultCLI, app_db: AppDatabase
) -> None:
    secret = issue(database)
    user = secret["data"]["username"]
    first = app_db.valid_until(user)
    assert isinstance(first, type(app_db.valid_until(user)))
    ahead = first.timestamp() - time.time()  # type: ignore[attr-defined]
    assert 3500 < ahead <= 3600
    renewed = json.loads(
        database("lease", "renew", "-format=json", "-increment=5h", secret["lease_id"])
    )
    assert renewed["lease_duration"] == 5 * 3600
    later = app_db.valid_until(user).timestamp()  # type: ignore[attr-defined]
    assert 5 * 3600 - 100 < later - time.time() <= 5 * 3600


def test_short_ttl_expires_and_drops_the_role(database: VaultCLI, app_db: AppDatabase) -> None:
    database(
        "write",
        "database/roles/brief",
        "db_name=app",
        "default_ttl=1s",
        "max_ttl=2s",
        f"creation_statements={CREATION}",
    )
    database("write", "database/config/app", "allowed_roles=readonly,brief")
    secret = issue(database, "database/creds/brief")
    assert secret["lease_duration"] == 1
    time.sleep(1.2)
    database("write", "secret/x", "value=1")  # the next open for writing expires it
    assert secret["data"]["username"] not in app_db.roles()
    reasons = [e.reason for e in database.events() if isinstance(e, LeaseRevoked)]
    assert reasons == ["expired"]


def test_revoke_prefix_and_unmount_drop_every_role(database: VaultCLI, app_db: AppDatabase) -> None:
    before = app_db.roles()
    users = {issue(database)["data"]["username"] for _ in range(3)}
    assert users <= app_db.roles()
    database("lease", "revoke", "-prefix", "database/creds/readonly")
    assert app_db.roles() == before
    users = {issue(database)["data"]["username"] for _ in range(2)}
    assert users <= app_db.roles()
    database("secrets", "disable", "database/")
    assert app_db.roles() == before
    assert {e.reason for e in database.events() if isinstance(e, LeaseRevoked)} == {
        "prefix",
        "unmount",
    }


def test_rotate_root_changes_the_admin_password(database: VaultCLI, app_db: AppDatabase) -> None:
    assert logs_in(app_db, {"username": app_db.admin, "password": app_db.password})
    database("write", "-f", "database/rotate-root/app")
    assert not logs_in(app_db, {"username": app_db.admin, "password": app_db.password})
    secret = issue(database)  # the store logs in with the new one
    assert logs_in(app_db, secret["data"])
    shown = json.loads(database("read", "-format=json", "database/config/app"))["data"]
    assert "password" not in shown and "password" not in shown["connection_details"]
    assert shown["connection_details"]["username"] == app_db.admin
    for path in database.home.rglob("*"):  # neither password is on disk in plaintext
        if path.is_file():
            assert app_db.password.encode() not in path.read_bytes(), path


def test_config_and_roles_read_back_in_vaults_shape(database: VaultCLI) -> None:
    config = json.loads(database("read", "-format=json", "database/config/app"))["data"]
    assert config["plugin_name"] == "postgresql-database-plugin"
    assert config["allowed_roles"] == ["readonly"]
    assert config["verify_connection"] is True
    role = json.loads(database("read", "-format=json", "database/roles/readonly"))["data"]
    assert role["db_name"] == "app"
    assert role["default_ttl"] == 3600 and role["max_ttl"] == 86400
    assert role["creation_statements"] == [CREATION]
    assert database("list", "database/roles").split()[-1] == "readonly"
    assert database("list", "database/config").split()[-1] == "app"


def test_refusals_are_one_line_and_change_nothing(database: VaultCLI, app_db: AppDatabase) -> None:
    before = len(database.events())
    cases = [
        (["read", "database/creds/nosuch"], "unknown role: nosuch"),
        (["write", "database/roles/other", "db_name=app", f"creation_statements={CREATION}"], ""),
        (["read", "database/creds/other"], '"other" is not an allowed role'),
        (["write", "database/roles/x", f"creation_statements={CREATION}"], "empty database name"),
        (["write", "database/roles/x", "db_name=app"], "creation_statements are required"),
        (
            ["write", "database/roles/x", "db_name=app", "creation_statements=SELECT {{nope}}"],
            "unknown template variable {{nope}}",
        ),
        (["write", "database/config/b", "connection_url=x"], "empty plugin name"),
        (
            ["write", "database/config/b", "plugin_name=mysql-database-plugin"],
            "mysql-database-plugin",
        ),
        (
            [
                "write",
                "database/config/b",
                "plugin_name=postgresql-database-plugin",
                f"connection_url={app_db.template_url}",
                f"username={app_db.admin}",
                "password=wrong",
            ],
            "password authentication failed",
        ),
    ]
    for args, expected in cases:
        result = database.run(*args)
        if not expected:
            assert result.returncode == 0, result.stderr
            before += 1
            continue
        assert result.returncode in (1, 2), (args, result.stdout)
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr and "wrong" not in result.stderr
    assert len(database.events()) == before


def test_injection_through_names_and_values_is_refused(
    database: VaultCLI, app_db: AppDatabase
) -> None:
    before = app_db.roles("")
    for name in ['x"; DROP ROLE postgres; --', "x'y", "a b", "-lead"]:
        result = database.run(
            "write", f"database/roles/{name}", "db_name=app", f"creation_statements={CREATION}"
        )
        assert result.returncode != 0, name
        assert database.run("read", f"database/creds/{name}").returncode != 0
    assert app_db.roles("") == before


def test_intents_are_recorded_before_the_role_and_completed(database: VaultCLI) -> None:
    issue(database)
    kinds = [
        type(e).__name__
        for e in database.events()
        if type(e).__name__ in ("IntentRecorded", "IntentCompleted", "LeaseIssued")
    ]
    assert kinds == ["IntentRecorded", "LeaseIssued", "IntentCompleted"]
    events = database.events()
    assert [e.action for e in events if isinstance(e, IntentRecorded)] == ["create_role"]
    assert len([e for e in events if isinstance(e, LeaseIssued)]) == 1


def test_vault_05_postgresql_mount(vault: VaultCLI, app_db: AppDatabase) -> None:
    vault("mount", "postgresql")
    vault(
        "write",
        "postgresql/config/connection",
        f"connection_url={app_db.url(app_db.admin, app_db.password)}",
    )
    vault("write", "postgresql/config/lease", "lease=1h", "lease_max=24h")
    sql = (
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
        "VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
    )
    vault("write", "postgresql/roles/readonly", f"sql={sql}")
    assert "sql" in json.loads(vault("read", "-format=json", "postgresql/roles/readonly"))["data"]
    secret = issue(vault, "postgresql/creds/readonly")
    assert secret["lease_duration"] == 3600
    assert logs_in(app_db, secret["data"])
    vault("revoke", secret["lease_id"])
    assert secret["data"]["username"] not in app_db.roles("")


SHORT_POLICY = """
length = 12
rule "charset" {
  charset = "abcdefghij"
  min-chars = 2
}
rule "charset" {
  charset = "0123456789"
  min-chars = 3
}
"""


def test_passwords_follow_the_connections_password_policy(
    database: VaultCLI, app_db: AppDatabase
) -> None:
    (database.home / "short.hcl").write_text(SHORT_POLICY)
    database("write", "sys/policies/password/short", "policy=@short.hcl")
    assert database("list", "sys/policies/password").split()[-1] == "short"
    generated = json.loads(database("read", "-format=json", "sys/policies/password/short/generate"))
    assert _meets_short_policy(generated["data"]["password"])

    database("write", "database/config/app", "password_policy=short")
    secret = issue(database)
    assert _meets_short_policy(secret["data"]["password"])
    assert logs_in(app_db, secret["data"])

    (database.home / "quotes.hcl").write_text('length = 8\nrule "charset" { charset = "ab\'" }\n')
    database("write", "sys/policies/password/quotes", "policy=@quotes.hcl")
    refused = database.run("write", "database/config/app", "password_policy=quotes")
    assert refused.returncode != 0 and "not safe in SQL" in refused.stderr
    missing = database.run("write", "database/config/app", "password_policy=nosuch")
    assert missing.returncode != 0 and 'password policy "nosuch" not found' in missing.stderr
    (database.home / "impossible.hcl").write_text(
        'length = 4\nrule "charset" { charset = "a"\n min-chars = 5 }\n'
    )
    impossible = database.run("write", "sys/policies/password/x", "policy=@impossible.hcl")
    assert impossible.returncode != 0 and "more characters than length" in impossible.stderr


def _meets_short_policy(password: str) -> bool:
    return (
        len(password) == 12
        and set(password) <= set("abcdefghij0123456789")
        and sum(c.isdigit() for c in password) >= 3
        and sum(c.isalpha() for c in password) >= 2
    )


def test_history_says_who_obtained_which_user_and_when_it_lived(database: VaultCLI) -> None:
    secret = issue(database)
    user = secret["data"]["username"]
    alive_seq = max(e.seq for e in database.events())
    database("revoke", secret["lease_id"])
    assert user in database("leases", f"-at={alive_seq}")  # the user was alive then
    assert database.run("leases").stderr == "No leases found\n"
    trail = database("audit", "-path=database/creds/")
    issued = [line for line in trail.splitlines() if "lease.issued" in line]
    revoked = [line for line in trail.splitlines() if "lease.revoked" in line]
    assert len(issued) == 1 and secret["lease_id"] in issued[0]
    assert len(revoked) == 1 and "reason=explicit" in revoked[0]
    assert secret["data"]["password"] not in trail


def test_static_role_password_rotated_by_the_store(database: VaultCLI, app_db: AppDatabase) -> None:
    with app_db.superuser() as conn:
        conn.execute(f"CREATE ROLE \"app_{app_db.admin}\" LOGIN PASSWORD 'initial'")
    user = f"app_{app_db.admin}"
    database("write", "database/config/app", "allowed_roles=readonly,app")
    database(
        "write",
        "database/static-roles/app",
        "db_name=app",
        f"username={user}",
        "rotation_period=5s",
    )
    assert not logs_in(app_db, {"username": user, "password": "initial"})  # rotated at once
    first = json.loads(database("read", "-format=json", "database/static-creds/app"))["data"]
    assert first["username"] == user and first["rotation_period"] == 5
    assert 0 < first["ttl"] <= 5
    assert logs_in(app_db, first)
    role = json.loads(database("read", "-format=json", "database/static-roles/app"))["data"]
    assert role["username"] == user and "password" not in role

    database("write", "-f", "database/rotate-role/app")
    second = json.loads(database("read", "-format=json", "database/static-creds/app"))["data"]
    assert second["password"] != first["password"]
    assert logs_in(app_db, second) and not logs_in(app_db, first)

    time.sleep(5.2)
    database("write", "secret/x", "value=1")  # a writer's open rotates what is due
    third = json.loads(database("read", "-format=json", "database/static-creds/app"))["data"]
    assert third["password"] != second["password"] and logs_in(app_db, third)
    for path in database.home.rglob("*"):
        if path.is_file():
            assert third["password"].encode() not in path.read_bytes(), path
    refused = database.run(
        "write", "database/static-roles/bad", "db_name=app", "username=x'y", "rotation_period=1h"
    )
    assert refused.returncode != 0 and "not safe in SQL" in refused.stderr


def test_commands_that_do_not_talk_to_the_database_do_not_import_psycopg(
    database: VaultCLI,
) -> None:
    """A writer's open looks at the database mount's static roles on the timer's behalf:
    that, and settings read back, never import the driver (170 ms a command)."""
    probe = (
        "import sys\n"
        "from tools.cli import main\n"
        "for argv in (['vault', 'write', 'secret/x', 'value=1'],"
        " ['vault', 'read', 'database/roles/readonly']):\n"
        "    sys.argv = argv\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        "print('psycopg' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=database.env, capture_output=True, text=True, check=True
    )
    assert "creation_statements" in result.stdout
    assert result.stderr.strip() == "False"


def test_revocation_finds_grants_in_every_schema(database: VaultCLI, app_db: AppDatabase) -> None:
    """A role left holding a privilege cannot be dropped: the default revocation must find
    the schema and column grants the creation statements made."""
    wide = (
        CREATION + ' GRANT USAGE ON SCHEMA reports TO "{{name}}";'
        ' GRANT SELECT ON reports.daily TO "{{name}}"; GRANT UPDATE (name) ON items TO "{{name}}";'
    )
    database("write", "database/roles/readonly", f"creation_statements={wide}")
    secret = issue(database)
    with app_db.connect(secret["data"]["username"], secret["data"]["password"]) as session:
        assert session.execute("SELECT count(*) FROM reports.daily").fetchone() == (0,)
    database("lease", "revoke", secret["lease_id"])
    assert secret["data"]["username"] not in app_db.roles()
