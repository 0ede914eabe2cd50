"""Point in time: any read-only view asked ``-at=SEQ`` or ``-at=TIME`` answers as it did then.

The CLI session writes down, at a few checkpoints, what ``read``, ``list`` and ``mounts``
answered, with the log's head seq and the wall time; afterwards the same questions asked
``-at=`` that seq or that time must get the same answers. In-process, a property test checks
``Store.state_at(s)`` against a replay of the first ``s`` events, with and without snapshots.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import Core, MountView, Request, RequestError, Session
from eventstore import FileLog, Keyring, new_key
from projections import MountRemoved, decode, replay
from projections.snapshot import snapshot_seqs
from tests.conftest import VaultCLI, open_core
from tests.strategies import MOUNT_POINTS, SECRET_NAMES, build_store, operations, run_operation

QUESTIONS = (
    ("read", "-format=json", "secret/a"),
    ("read", "secret/dir/b"),
    ("list", "secret/"),
    ("mounts",),
)
BY_TIME = (QUESTIONS[0], QUESTIONS[3])  # fewer questions by time: it is the same lookup after


def answer(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, result.stdout, result.stderr


@dataclass
class Checkpoint:
    seq: int
    time: str  # RFC 3339, to the microsecond
    answers: dict[tuple[str, ...], tuple[int, str, str]]


def head_seq(vault: VaultCLI) -> int:
    keyring = Keyring.load(vault.data_dir, vault.unseal_key())
    return [frame.header.seq for frame in FileLog(vault.data_dir, keyring).frames()][-1]


def checkpoint(vault: VaultCLI, *extra: tuple[str, ...]) -> Checkpoint:
    """Ask every question now (reads append audit events), then note the head and time."""
    answers = {q: answer(vault.run(*q)) for q in (*QUESTIONS, *extra)}
    seq = head_seq(vault)
    now = datetime.fromtimestamp(time.time_ns() / 1e9, UTC).isoformat(timespec="microseconds")
    return Checkpoint(seq, now, answers)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.rstrip("\n")


def test_the_past_answers_as_it_did_then(vault: VaultCLI) -> None:
    vault.env["VAULTLOG_SNAPSHOT_EVERY"] = "3"  # many snapshots to start replay from
    vault("write", "secret/a", "v=1")
    vault("write", "secret/dir/b", "v=1", "user=x")
    first = checkpoint(vault)

    vault("mount", "-path=tmp", "generic")
    vault("write", "tmp/x", "v=tmp")
    vault("write", "secret/a", "v=2")
    tmp_read = ("read", "-field=v", "tmp/x")
    second = checkpoint(vault, tmp_read)
    assert second.answers[tmp_read] == (0, "tmp\n", "")

    vault("delete", "secret/dir/b")
    vault("write", "secret/a", "v=3", "extra=yes")
    vault("remount", "tmp/", "tmp2/")
    third = checkpoint(vault)

    vault("unmount", "tmp2/")
    vault("write", "secret/c", "v=1")
    vault("mount", "-path=tmp", "generic")  # a new mount where the shredded one once was
    vault("write", "tmp/x", "v=new")

    # The checkpoints saw different things, so matching them means something.
    assert len({str(c.answers) for c in (first, second, third)}) == 3
    assert first.answers[QUESTIONS[1]][0] == 0 and third.answers[QUESTIONS[1]][0] == 1
    assert len(snapshot_seqs(vault.data_dir)) >= 3

    for point in (first, second, third):
        for question in QUESTIONS:
            got = answer(vault.run(*question, f"-at={point.seq}"))
            assert got == point.answers[question], (point.seq, question)
        for question in BY_TIME:
            got = answer(vault.run(*question, f"-at={point.time}"))
            assert got == point.answers[question], (point.time, question)

    # The shredded mount: its values are gone, by seq and by time, under either name.
    removed = next(e for e in vault.events() if isinstance(e, MountRemoved))
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(removed.time // 1_000_000_000))
    for at, path in ((second.seq, "tmp/x"), (second.time, "tmp/x"), (third.seq, "tmp2/x")):
        line = one_line_error(vault.run("read", f"-at={at}", path))
        assert line == f"Error reading {path}: the data of mount 'tmp2/' was deleted at {when}"
    line = one_line_error(vault.run("list", f"-at={second.seq}", "tmp/"))
    assert line.endswith(f"the data of mount 'tmp2/' was deleted at {when}")
    # ... while the new mount at the same path answers for the present.
    assert vault("read", "-field=v", "tmp/x") == "new\n"

    # Before the store existed there was nothing to route to. (The redesign refuses a
    # moment before the store's first record outright, as the defect "-at past the head,
    # in the future, before the store" asks, instead of routing in an empty state.)
    line = one_line_error(vault.run("read", "-at=1h", "secret/a"))
    assert line.startswith("Error reading secret/a: the store did not exist yet at "), line


# ---- in-process: state_at(s) is the replay of the first s events ---------------------------

reads = st.tuples(st.just("read"), st.sampled_from(MOUNT_POINTS), st.sampled_from(SECRET_NAMES))


run = run_operation


@pytest.mark.parametrize("snapshot_every", [2, None], ids=["snapshots", "no-snapshots"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.one_of(operations, reads), max_size=20))
def test_state_at_every_seq_is_the_replay_of_that_prefix(
    snapshot_every: int | None, ops: list[tuple[Any, ...]]
) -> None:
    key = new_key()
    every = snapshot_every or 10**9
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        core = open_core(directory, key, write=True, snapshot_every=every)
        try:
            for op in ops:
                run(core, op)
            events = [decode(record) for record in core.store.log.records()]
            assert core.store.state.seq == len(events)
            for s in range(len(events) + 1):
                assert core.store.state_at(s) == replay(events[:s]), s
        finally:
            core.store.close()

        # as the CLI's -at opens it
        reader = open_core(directory, key, write=False, snapshot_every=every)
        try:
            for s in range(len(events) + 1):
                assert reader.store.state_at(s) == replay(events[:s]), s
        finally:
            reader.store.close()
        if snapshot_every is None:
            assert snapshot_seqs(directory) == []
        elif len(events) >= 2 * snapshot_every:
            assert snapshot_seqs(directory)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(operations, max_size=20))
def test_reads_of_the_past_through_the_version_index_match_the_replay(
    ops: list[tuple[Any, ...]],
) -> None:
    """A Core answers reads of the past from the version index; every (seq, path) must get
    what the replayed state at that seq holds."""
    key = new_key()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build_store(directory, key, ops)
        reader = open_core(directory, key, write=False)
        try:
            events = [decode(record) for record in reader.store.log.records()]
            paths = [m + n for m in MOUNT_POINTS for n in SECRET_NAMES]
            for s in range(len(events) + 1):
                state = replay(events[:s])
                for path in paths:
                    # Seq 0, before the first record, is now refused as a moment the store
                    # did not exist yet (an InvalidRequestError), not routed in the empty
                    # state (see the defect "-at past the head, in the future, before the
                    # store").
                    expected = expected_read(reader, state, path) if s else "InvalidRequestError"
                    try:
                        got = reader.handle(Request("read", path, at=str(s))).data
                    except RequestError as exc:
                        got = type(exc).__name__
                    assert got == expected, (s, path)
        finally:
            reader.store.close()


def expected_read(core: Core, state: Any, path: str) -> Any:
    """What reading ``path`` in ``state`` gives, or the name of the error it raises."""
    found = state.mounts.route(path)
    if found is None:
        return "NoHandlerError"
    mount, relative = found
    if mount.id not in core.store.keyring.mounts:
        return "ShreddedDataError"
    if not relative or relative.endswith("/"):
        return "InvalidRequestError"
    session = Session(core.store, Request("read", path), core.backends, past=state)
    return MountView(session, mount).get(relative)
