"""The database backend's figures: ``python -m tools.bench.database``.

Against a throwaway PostgreSQL on 127.0.0.1, it prints the median time to issue and to
revoke one credential in-process, over HTTP (a ``vault server`` on a file store) and as a
whole ``vault`` process, beside the same role created and dropped by psycopg directly in
the same run; then the roles left behind after 30 ``kill -9`` trials (must be 0).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import psycopg

from backends import Request
from eventstore import encode_unseal_key, new_key
from projections import Event, IntentCompleted, IntentRecorded, Store
from tools.bench import open_writer
from tools.bench.postgres import CREATION, AppDatabase, PostgresServer
from tools.bench.server import start_vaultlog

VAULT = Path(sys.executable).parent / "vault"
ROUNDS = 30


def setup_requests(app: AppDatabase) -> list[Request]:
    """Mount ``database/``, configure ``app`` and the ``readonly`` role."""
    config = dict(arg.split("=", 1) for arg in app.config_args("readonly"))
    role = {"db_name": "app", "default_ttl": "1h", "creation_statements": CREATION}
    return [
        Request("write", "sys/mounts/database", {"type": "database"}),
        Request("write", "database/config/app", config),
        Request("write", "database/roles/readonly", role),
    ]


def timed(work: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work(*args)
    return time.perf_counter() - start, result


def raw_baseline(app: AppDatabase) -> tuple[float, float]:
    """CREATE ROLE + GRANT in one transaction, then REVOKE + DROP ROLE, by psycopg on one
    connection: the work a credential costs PostgreSQL itself."""
    created, dropped = [], []
    with app.connect(app.admin, app.password) as conn:
        for i in range(ROUNDS):
            name = f"raw-{os.getpid()}-{i}"
            statements = CREATION.replace("{{name}}", name).replace("{{password}}", "Pw-1aaaa")
            statements = statements.replace("{{expiration}}", "2100-01-01 00:00:00+0000")
            start = time.perf_counter()
            with conn.transaction():
                for query in statements.split(";"):
                    if query.strip():
                        conn.execute(query.encode())
            created.append(time.perf_counter() - start)
            start = time.perf_counter()
            conn.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{name}"'.encode())
            conn.execute(f'DROP ROLE "{name}"'.encode())
            dropped.append(time.perf_counter() - start)
    return median(created), median(dropped)


def in_process(home: Path, app: AppDatabase) -> tuple[float, float]:
    core = open_writer(home / "inproc", new_key())
    try:
        for request in setup_requests(app):
            core.handle(request)
        issued, revoked = [], []
        for _ in range(ROUNDS):
            took, answer = timed(core.handle, Request("read", "database/creds/readonly"))
            issued.append(took)
            lease = {"lease_id": answer.lease_id}
            took, _ = timed(core.handle, Request("write", "sys/leases/revoke", lease))
            revoked.append(took)
    finally:
        core.store.close()
    return median(issued), median(revoked)


def over_http(home: Path, app: AppDatabase) -> tuple[float, float]:
    server = start_vaultlog(home, VAULT)
    try:
        for request in setup_requests(app):
            server.must("PUT", request.path, request.data)
        issued, revoked = [], []
        for _ in range(ROUNDS):
            took, answer = timed(server.must, "GET", "database/creds/readonly")
            issued.append(took)
            lease = {"lease_id": answer["lease_id"]}
            took, _ = timed(server.must, "PUT", "sys/leases/revoke", lease)
            revoked.append(took)
    finally:
        server.stop()
    return median(issued), median(revoked)


def whole_process(env: dict[str, str], rounds: int = 9) -> tuple[float, float]:
    issued, revoked = [], []
    for _ in range(rounds):
        took, out = timed(_vault, env, "read", "-format=json", "database/creds/readonly")
        issued.append(took)
        lease = json.loads(out)["lease_id"]
        took, _ = timed(_vault, env, "revoke", lease)
        revoked.append(took)
    return median(issued), median(revoked)


def _vault(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [str(VAULT), *args], env=env, capture_output=True, text=True, check=True
    ).stdout


def kill_trials(env: dict[str, str], app: AppDatabase, trials: int) -> int:
    """Kill ``vault read database/creds/readonly`` at moments spread over the issue itself:
    from the moment its session shows in PostgreSQL (its pool opens around the time the
    intent is made durable) to twice as long as the slowest of three issues left alone took
    from there to print its lease on this machine. So the kills fall before CREATE ROLE,
    between it and the lease, and after it, however loaded the machine is. Each kill is
    followed by an open that rolls back what it left, so every trial starts as those left
    alone did. The number of roles made meanwhile that are alive with no live lease."""
    before = app.roles()
    with app.superuser() as watcher:
        span = max(_issue(env, app, watcher, kill_after=None) for _ in range(3))
        for i in range(trials):
            _issue(env, app, watcher, kill_after=2 * span * i / max(trials - 1, 1))
            _vault(env, "write", "secret/x", "value=1")  # rolls back what the kill left
    leases = subprocess.run([str(VAULT), "leases"], env=env, capture_output=True, text=True)
    leased = {line.split()[1] for line in leases.stdout.splitlines()[1:]}
    return len(app.roles() - before - leased)


def _issue(
    env: dict[str, str],
    app: AppDatabase,
    watcher: psycopg.Connection[tuple[Any, ...]],
    kill_after: float | None,
) -> float:
    """One ``vault read database/creds/readonly``, killed ``kill_after`` seconds after its
    database session shows, or left alone: then the seconds from that moment until it
    printed the lease."""
    deadline = time.monotonic() + 5  # the last issue's session gone, so this one shows
    while _connected(watcher, app) and time.monotonic() < deadline:
        time.sleep(0.002)
    child = subprocess.Popen(
        [str(VAULT), "read", "database/creds/readonly"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    while child.poll() is None and not _connected(watcher, app):
        time.sleep(0.002)
    shown = time.monotonic()
    if kill_after is None:
        child.stdout.readline()
    else:
        time.sleep(kill_after)
        os.kill(child.pid, signal.SIGKILL)
    took = time.monotonic() - shown
    child.communicate()
    return took


def _connected(watcher: psycopg.Connection[tuple[Any, ...]], app: AppDatabase) -> bool:
    row = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vaultlog'"
        " AND datname = %s",
        (app.name,),
    ).fetchone()
    return bool(row and row[0])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="vaultlog-bench-db-"))
    server = PostgresServer()
    server.start()
    try:
        app = AppDatabase.create(server)
        raw_create, raw_drop = raw_baseline(app)
        print(f"raw psycopg, one connection: create {ms(raw_create)}, drop {ms(raw_drop)}")
        issue, revoke = in_process(home, app)
        print(
            f"in-process: issue {ms(issue)} ({issue / raw_create:.1f}x raw create), "
            f"revoke {ms(revoke)} ({revoke / raw_drop:.1f}x raw drop)"
        )
        issue, revoke = over_http(home, app)
        print(
            f"over HTTP (vault server, file store): issue {ms(issue)} "
            f"({issue / raw_create:.1f}x), revoke {ms(revoke)} ({revoke / raw_drop:.1f}x)"
        )
        key = new_key()
        env = dict(
            os.environ,
            HOME=str(home),
            VAULTLOG_DIR=str(home / "cli"),
            VAULTLOG_UNSEAL_KEY=encode_unseal_key(key),
        )
        for request in setup_requests(app):
            _vault(env, *_as_cli(request))
        issue, revoke = whole_process(env)
        print(f"whole vault process: issue {ms(issue)}, revoke {ms(revoke)}")
        first = max(e.seq for e in _events(home / "cli", key)) + 1
        left = kill_trials(env, app, 30)
        events = [e for e in _events(home / "cli", key) if e.seq >= first]
        outcomes = collections.Counter(e.outcome for e in events if isinstance(e, IntentCompleted))
        print(
            f"30 kill -9 trials, after 3 issues left alone: {left} roles left behind; intents "
            f"{sum(isinstance(e, IntentRecorded) for e in events)}, rolled back by the next "
            f"open {outcomes['rolled_back']}, completed with a lease {outcomes['done']}"
        )
    finally:
        server.close()


def _events(directory: Path, key: bytes) -> list[Event]:
    reader = Store.open(directory, key, write=False)
    try:
        return list(reader.events())
    finally:
        reader.close()


def _as_cli(request: Request) -> list[str]:
    """A setup request as ``vault write`` arguments."""
    return ["write", request.path, *(f"{k}={v}" for k, v in request.data.items())]


if __name__ == "__main__":
    main()
