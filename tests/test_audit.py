"""The audit trail, replayed from the log through the installed ``vault``.

One scripted session (mount, write, read, remount, delete, unmount) is run once; its trail
must name every operation, path (as it stood then), mount and actor, in order, and show
written values only as their audit HMACs. History and restore follow a secret across a
remount; ``-since``/``-until`` ages are checked on a store whose records were dated days
apart, so no assertion depends on how long the commands took.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import eventstore.log
from backends import Request, actor
from eventstore import encode_unseal_key, new_key
from tests.conftest import VaultCLI, cli_env, open_core

HMAC = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")
DAY = 86_400 * 1_000_000_000


def new_secret() -> str:
    return f"s3cret-{uuid.uuid4().hex}"


def rfc3339(nanos: int) -> str:
    """``nanos`` as RFC 3339 with microseconds, as an operator would paste it."""
    return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat(timespec="microseconds")


@dataclass
class Session:
    vault: VaultCLI
    me: str
    secrets: dict[str, str]  # name -> the value written
    between: int  # a wall time between seq 6 and seq 7


def trail(vault: VaultCLI, *flags: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in vault("audit", "-format=json", *flags).splitlines()]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    home = tmp_path_factory.mktemp("audit")
    vault = VaultCLI(home, cli_env(home))
    s = {name: new_secret() for name in ("password", "token1", "token2", "token3", "tmp")}
    vault("write", "secret/db", f"password={s['password']}", "user=admin")  # 3
    assert vault("read", "-field=password", "secret/db") == f"{s['password']}\n"  # 4
    vault("mount", "-path=team", "generic")  # 5
    vault("write", "team/app", f"token={s['token1']}")  # 6
    between = time.time_ns()
    vault("write", "team/app", f"token={s['token2']}")  # 7
    vault("remount", "team/", "crew/")  # 8
    assert vault("read", "-field=token", "crew/app") == f"{s['token2']}\n"  # 9
    vault("delete", "crew/app")  # 10
    vault("write", "crew/app", f"token={s['token3']}")  # 11
    missing = vault.run("read", "secret/missing")  # 12: a read that finds nothing is audited
    assert missing.returncode == 1
    vault("mount", "-path=tmp", "generic")  # 13
    vault("write", "tmp/x", f"key={s['tmp']}")  # 14
    vault("unmount", "tmp/")  # 15
    return Session(vault, actor(), s, between)


def expected_trail(me: str) -> list[tuple[str, str, str, str]]:
    """(operation, path, mount, actor) of seqs 1.. of the session."""
    return [
        ("mount.created", "sys/", "sys/", "vaultlog"),
        ("mount.created", "secret/", "secret/", "vaultlog"),
        ("secret.written", "secret/db", "secret/", me),
        ("secret.read", "secret/db", "secret/", me),
        ("mount.created", "team/", "team/", me),
        ("secret.written", "team/app", "team/", me),
        ("secret.written", "team/app", "team/", me),
        ("mount.moved", "crew/", "crew/", me),
        ("secret.read", "crew/app", "crew/", me),
        ("secret.deleted", "crew/app", "crew/", me),
        ("secret.written", "crew/app", "crew/", me),
        ("secret.read", "secret/missing", "secret/", me),
        ("mount.created", "tmp/", "tmp/", me),
        ("secret.written", "tmp/x", "tmp/", me),
        ("mount.removed", "tmp/", "tmp/", me),
    ]


def test_the_trail_is_the_session_in_order(session: Session) -> None:
    entries = trail(session.vault)
    assert [e["seq"] for e in entries] == list(range(1, 16))
    got = [(e["operation"], e["path"], e["mount"], e["actor"]) for e in entries]
    assert got == expected_trail(session.me)
    times = [e["time"] for e in entries]
    assert times == sorted(times)
    assert entries[7]["detail"] == {"from": "team/"}
    assert entries[1]["detail"] == {"type": "generic"}
    # A remount keeps the mount: the same id before and after, and the trail still says
    # team/app for what was written before it.
    assert entries[5]["mount_id"] == entries[7]["mount_id"] == entries[10]["mount_id"]
    # Written values appear as HMACs only, one per key.
    written = [e for e in entries if e["operation"] == "secret.written"]
    assert [sorted(e["detail"]) for e in written] == [
        ["password", "user"],
        ["token"],
        ["token"],
        ["token"],
        ["key"],
    ]
    assert all(HMAC.match(v) for e in written for v in e["detail"].values())
    assert len({e["detail"]["token"] for e in written[1:4]}) == 3  # different values differ


def test_the_table_lists_every_entry(session: Session) -> None:
    lines = session.vault("audit").splitlines()
    assert lines[0].split() == [
        "Seq",
        "Time",
        "Actor",
        "Operation",
        "Path",
        "Mount",
        "Lease",
        "ID",
        "Detail",
    ]
    rows = [line.split() for line in lines[1:]]
    assert [(int(r[0]), r[3], r[4]) for r in rows] == [
        (seq, op, path) for seq, (op, path, _, _) in enumerate(expected_trail(session.me), 1)
    ]
    detail = trail(session.vault, "-type=secret.written")[0]["detail"]
    assert rows[2][6:] == [f"password={detail['password']}", f"user={detail['user']}"]


def test_no_value_appears_in_any_audit_output(session: Session) -> None:
    vault = session.vault
    outputs = [
        vault("audit"),
        vault("audit", "-format=json"),
        vault("audit", "-path=crew/", "-format=json"),
        vault("audit", "-type=secret.written"),
        vault("history", "crew/app"),
        vault("history", "secret/db"),
    ]
    for value in session.secrets.values():
        for out in outputs:
            assert value not in out


def test_audit_hash_of_a_value_is_the_hmac_in_the_trail(session: Session) -> None:
    vault, s = session.vault, session.secrets
    written = trail(vault, "-type=secret.written")
    assert vault("audit-hash", s["password"]) == f"{written[0]['detail']['password']}\n"
    # HMACs are keyed per mount: token1 was written in team/, which is crew/ since the remount.
    token1 = vault("audit-hash", "-path=crew/", s["token1"])
    assert token1 == f"{written[1]['detail']['token']}\n"
    # An unmount destroys the mount's data key, and with it the key of its value HMACs: the
    # shredded mount's values can no longer be confirmed against its trail.
    gone = vault.run("audit-hash", "-path=tmp/", s["tmp"])
    assert gone.returncode != 0
    assert "Traceback" not in gone.stderr
    assert len(gone.stderr.splitlines()) == 1, gone.stderr


@pytest.mark.parametrize(
    ("flags", "seqs"),
    [
        (("-path=crew/",), [8, 9, 10, 11]),  # team/app was its name before the remount
        (("-path=team",), [5, 6, 7]),
        (("-path=/tmp/x",), [14]),
        (("-type=secret.read",), [4, 9, 12]),
        (("-type=secret",), [3, 4, 6, 7, 9, 10, 11, 12, 14]),
        (("-type=mount",), [1, 2, 5, 8, 13, 15]),
        (("-type=secret.rea",), []),  # a family is a whole dotted prefix
        (("-actor=vaultlog",), [1, 2]),
        (("-path=crew/", "-type=secret.written"), [11]),
        (("-since=1h",), list(range(1, 16))),
        (("-until=1h",), []),
        (("-since=2000-01-01T00:00:00Z", "-until=2999-01-01T00:00:00+02:00"), list(range(1, 16))),
    ],
)
def test_filters_select_the_right_entries(
    session: Session, flags: tuple[str, ...], seqs: list[int]
) -> None:
    assert [e["seq"] for e in trail(session.vault, *flags)] == seqs


def test_actor_filter_keeps_the_users_own_entries(session: Session) -> None:
    assert [e["seq"] for e in trail(session.vault, f"-actor={session.me}")] == list(range(3, 16))


def test_since_and_until_split_at_an_rfc3339_time(session: Session) -> None:
    at = rfc3339(session.between)
    assert [e["seq"] for e in trail(session.vault, f"-until={at}")] == list(range(1, 7))
    assert [e["seq"] for e in trail(session.vault, f"-since={at}")] == list(range(7, 16))


def test_a_bad_time_is_one_line(session: Session) -> None:
    result = session.vault.run("audit", "-since=last tuesday")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "invalid time" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def dated(vault: VaultCLI, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A store whose writes were appended ten days, three days and five hours ago."""
    key = new_key()
    vault.env["VAULTLOG_UNSEAL_KEY"] = encode_unseal_key(key)
    now = time.time_ns()
    clock = SimpleNamespace(time_ns=lambda: now - 10 * DAY)
    monkeypatch.setattr(eventstore.log, "time", clock)
    core = open_core(vault.data_dir, key, write=True)
    try:
        for name, age in (("old", 10 * DAY), ("mid", 3 * DAY), ("new", 5 * DAY // 24)):
            clock.time_ns = lambda age=age: now - age
            core.handle(Request("write", f"secret/{name}", {"v": "1"}))
    finally:
        core.store.close()
    monkeypatch.undo()
    return {"now": now}


@pytest.mark.parametrize(
    ("flags", "paths"),
    [
        (("-since=7d",), ["secret/mid", "secret/new"]),
        (("-until=2d",), ["sys/", "secret/", "secret/old", "secret/mid"]),
        (("-since=7d", "-until=1d"), ["secret/mid"]),
        (("-since=3d1h", "-until=2d23h"), ["secret/mid"]),
    ],
)
def test_ages_select_by_time(
    vault: VaultCLI, dated: dict[str, int], flags: tuple[str, ...], paths: list[str]
) -> None:
    assert [e["path"] for e in trail(vault, *flags)] == paths


def test_rfc3339_times_select_by_time(vault: VaultCLI, dated: dict[str, int]) -> None:
    now = dated["now"]
    since, until = rfc3339(now - 4 * DAY), rfc3339(now - 2 * DAY)
    assert [e["path"] for e in trail(vault, f"-since={since}", f"-until={until}")] == ["secret/mid"]
    zoned = datetime.fromtimestamp((now - DAY) / 1e9).astimezone().isoformat()  # local offset
    assert [e["path"] for e in trail(vault, f"-since={zoned}")] == ["secret/new"]


def history_rows(vault: VaultCLI, path: str) -> list[tuple[int, str, str]]:
    """(seq, operation, value column) of ``vault history``."""
    lines = vault("history", path).splitlines()
    assert lines[0].split() == ["Seq", "Time", "Actor", "Operation", "Value"]
    return [(int(r[0]), r[3], " ".join(r[4:])) for r in map(str.split, lines[1:])]


def test_history_lists_every_version_across_a_remount(session: Session) -> None:
    vault = session.vault
    hmacs = {e["seq"]: e["detail"] for e in trail(vault, "-type=secret.written")}
    assert history_rows(vault, "crew/app") == [
        (6, "secret.written", f"token={hmacs[6]['token']}"),  # written as team/app
        (7, "secret.written", f"token={hmacs[7]['token']}"),
        (10, "secret.deleted", "-"),
        (11, "secret.written", f"token={hmacs[11]['token']}"),
    ]
    assert history_rows(vault, "secret/db") == [
        (3, "secret.written", f"password={hmacs[3]['password']} user={hmacs[3]['user']}")
    ]
    gone = vault.run("history", "secret/never")
    assert (gone.returncode, gone.stderr) == (1, "No history found for secret/never\n")


@pytest.fixture
def copy(session: Session, tmp_path: Path) -> VaultCLI:
    """A private copy of the session's store, for commands that append."""
    home = tmp_path / "copy"
    shutil.copytree(session.vault.home, home)
    return VaultCLI(home, cli_env(home))


def test_restore_writes_an_older_version_back_as_a_new_event(
    session: Session, copy: VaultCLI
) -> None:
    vault, s = copy, session.secrets
    vault("write", "crew/app", "token=newer")  # 16
    out = vault("restore", "crew/app", "-at=11")  # 17: the audited read, 18: the write
    assert out == "Success! Restored 'crew/app' as it was at seq 11\n"
    assert vault("read", "-field=token", "crew/app") == f"{s['token3']}\n"

    entries = {e["seq"]: e for e in trail(vault, "-path=crew/app")}
    assert [(seq, entries[seq]["operation"]) for seq in (16, 17, 18, 19)] == [
        (16, "secret.written"),
        (17, "secret.read"),
        (18, "secret.written"),
        (19, "secret.read"),
    ]
    assert entries[18]["detail"] == entries[11]["detail"]  # the same value, as a new version
    assert [seq for seq, _, _ in history_rows(vault, "crew/app")] == [6, 7, 10, 11, 16, 18]

    # Restoring a moment when the secret did not exist writes nothing.
    missing = vault.run("restore", "crew/app", "-at=10")
    assert (missing.returncode, missing.stderr) == (1, "No value found at crew/app at seq 10\n")
    assert [e["operation"] for e in trail(vault)][19:] == ["secret.read"]


def test_restore_a_version_from_before_a_remount(session: Session, copy: VaultCLI) -> None:
    result = copy.run("restore", "crew/app", "-at=6")
    assert (result.returncode, result.stderr) == (0, "")
    assert copy("read", "-field=token", "crew/app") == f"{session.secrets['token1']}\n"
