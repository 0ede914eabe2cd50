"""kill -9 while a database credential is being issued: no role is left behind after the
next open, whichever step the process died at."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from projections import IntentCompleted, IntentRecorded, LeaseIssued
from tests.conftest import VaultCLI, vault_executable
from tools.bench.database import kill_trials
from tools.bench.postgres import CREATION, AppDatabase


def _wait_for(check: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _sleeping_sessions(app_db: AppDatabase) -> int:
    with app_db.superuser() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'"
            " AND datname = %s",
            (app_db.name,),
        ).fetchone()
    return int(row[0]) if row else 0


def _outcomes(vault: VaultCLI) -> list[str]:
    return [e.outcome for e in vault.events() if isinstance(e, IntentCompleted)]


def test_kill_between_the_intent_and_create_role(database: VaultCLI, app_db: AppDatabase) -> None:
    """The creation statements start by sleeping: the intent is durable, CREATE ROLE has
    not run, and the process is killed there."""
    database(
        "write",
        "database/roles/readonly",
        f"creation_statements=SELECT pg_sleep(30); {CREATION}",
    )
    before = app_db.roles()
    child = subprocess.Popen(
        [vault_executable(), "read", "database/creds/readonly"],
        env=database.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: _sleeping_sessions(app_db) == 1, "the creation statements to start")
    assert [e.action for e in database.events() if isinstance(e, IntentRecorded)] == ["create_role"]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not [e for e in database.events() if isinstance(e, LeaseIssued)]

    database("write", "secret/x", "value=1")  # the next open rolls the intent back
    assert _outcomes(database) == ["rolled_back"]
    _wait_for(lambda: _sleeping_sessions(app_db) == 0, "PostgreSQL to end the dead session")
    assert app_db.roles() == before
    assert database.run("leases").stderr == "No leases found\n"


PAUSE_AFTER_CREATE = """
import sys, time
from backends.contract import MountView
from tools.cli import main

issue_lease = MountView.issue_lease

def paused(self, *args, **kwargs):
    print("created", flush=True)  # the role is committed in PostgreSQL, the lease is not
    time.sleep(60)
    return issue_lease(self, *args, **kwargs)

MountView.issue_lease = paused
sys.argv = ["vault", "read", "-format=json", "database/creds/readonly"]
main()
"""


def test_kill_between_create_role_and_the_lease(database: VaultCLI, app_db: AppDatabase) -> None:
    """The one window no statement can hold open: the role is committed and the lease is
    not. The child is the real CLI with a pause put in at that line, then SIGKILLed."""
    before = app_db.roles()
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSE_AFTER_CREATE],
        env=database.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "created"
    made = app_db.roles() - before
    assert len(made) == 1  # it exists, and no lease says so
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not [e for e in database.events() if isinstance(e, LeaseIssued)]

    database("write", "secret/x", "value=1")
    assert app_db.roles() == before
    assert _outcomes(database) == ["rolled_back"]
    assert database.run("leases").stderr == "No leases found\n"


def test_kill_trials_leave_no_role_without_a_lease(database: VaultCLI, app_db: AppDatabase) -> None:
    """Twelve kills spread from the intent to well past the end of an issue: none leaves a
    role behind, and the trials did cover both sides (the three left alone lease too)."""
    assert kill_trials(database.env, app_db, trials=12) == 0
    leases = [e for e in database.events() if isinstance(e, LeaseIssued)]
    assert len(leases) > 3  # the three left alone, and some trials reached the end
    assert "rolled_back" in _outcomes(database)  # and some were killed before it
    assert json.loads(database("read", "-format=json", "database/creds/readonly"))["data"]
