"""The version index answers reads of the past exactly as a replay would, and it is never
trusted: missing, damaged, stale or foreign, it changes no answer.

Sorted runs are made tiny here (a run after 4 appended entries, blocks of 3 entries) so
that every store has a run of several blocks beside its appended file.

Each case asks every path that ever existed at every seq, once through the index and once
on a copy of the store without it (where the Core replays from the nearest snapshot), and
compares the answers: data, or the error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google_crc32c import value as crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import projections.sortedrun
import projections.versions
from backends import Core, Request, RequestError
from eventstore import encode_unseal_key, new_key
from projections import Store, decode
from projections.audit import secret_history
from projections.sortedrun import RUN_FILE
from projections.verify import VerifyReport
from projections.versions import ENTRY_SIZE, INDEX_FILE, VersionIndex
from tests.conftest import open_core
from tests.strategies import MOUNT_POINTS, SECRET_NAMES, build_store, operations

PATHS = [mount + name for mount in MOUNT_POINTS for name in SECRET_NAMES]


@pytest.fixture(autouse=True, scope="module")
def small_runs() -> Iterator[None]:
    saved = projections.versions.COMPACT_MIN, projections.sortedrun.BLOCK
    projections.versions.COMPACT_MIN, projections.sortedrun.BLOCK = 4, 3
    yield
    projections.versions.COMPACT_MIN, projections.sortedrun.BLOCK = saved


def answer(core: Core, path: str, seq: int) -> tuple[str, Any]:
    try:
        return "data", core.handle(Request("read", path, at=str(seq))).data
    except RequestError as exc:
        return type(exc).__name__, str(exc)


def answers(directory: Path, key: bytes, head: int | None = None) -> list[tuple[str, Any]]:
    """Every path at every seq (up to ``head``), from a reader of ``directory``."""
    reader = open_core(directory, key, write=False)
    try:
        head = reader.store.state.seq if head is None else head
        return [answer(reader, path, seq) for seq in range(head + 1) for path in PATHS]
    finally:
        reader.store.close()


def audit_key(directory: Path, key: bytes) -> bytes:
    """The store's audit key, from a reader."""
    reader = Store.open(directory, key, write=False)
    try:
        return reader.keyring.audit_key
    finally:
        reader.close()


def verify_store(directory: Path, key: bytes) -> VerifyReport:
    """What ``audit verify`` finds, from a reader."""
    reader = Store.open(directory, key, write=False)
    try:
        return reader.verify()
    finally:
        reader.close()


def replayed_answers(directory: Path, key: bytes, into: Path) -> list[tuple[str, Any]]:
    """The same questions, answered by replay: a copy of the store with no index."""
    shutil.copytree(directory, into)
    (into / INDEX_FILE).unlink()
    (into / RUN_FILE).unlink(missing_ok=True)
    return answers(into, key)


def histories(directory: Path, key: bytes, *, from_index: bool) -> list[list[Any]]:
    """``vault history`` of every path, from the index's events or the whole log's."""
    reader = Store.open(directory, key, write=False)
    try:
        out = []
        for path in PATHS:
            if from_index:
                index = VersionIndex.load(directory, reader.keyring.audit_key)
                assert index is not None
                events = index.history_events(reader.log, path)
            else:
                events = [decode(record) for record in reader.log.records()]
            found = reader.state.mounts.route(path)
            current = (found[0].id, found[1]) if found else None
            out.append(secret_history(events, path, current))
        return out
    finally:
        reader.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=20))
def test_the_index_answers_as_replay_does(ops: list[tuple[Any, ...]]) -> None:
    key = new_key()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build_store(store, key, ops)
        assert (store / INDEX_FILE).exists()
        assert answers(store, key) == replayed_answers(store, key, Path(tmp) / "replay")
        from_log = histories(store, key, from_index=False)
        assert histories(store, key, from_index=True) == from_log


SESSION = [
    ("write", "secret/", "a", {"v": "1"}),
    ("mount", "team/"),
    ("write", "team/", "dir/c", {"v": "1"}),
    ("write", "secret/", "a", {"v": "2"}),
    ("remount", "team/", "other/"),
    ("write", "other/", "dir/c", {"v": "2"}),
    ("delete", "secret/", "a"),
    ("mount", "kv/"),
    ("write", "kv/", "b", {"v": "1"}),
    ("unmount", "kv/"),
    ("write", "secret/", "a", {"v": "3"}),
]


@pytest.fixture(scope="module")
def session_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[Any]]:
    """A store built by ``SESSION``, and what replay answers about its past."""
    key = new_key()
    store = tmp_path_factory.mktemp("index") / "store"
    build_store(store, key, SESSION)
    assert (store / RUN_FILE).exists()
    expected = replayed_answers(store, key, tmp_path_factory.mktemp("replay") / "store")
    assert ("data", {"v": "2"}) in expected and ("data", {"v": "3"}) in expected
    assert any(kind == "ShreddedDataError" for kind, _ in expected)
    return store, key, expected


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def swap_tags(path: Path, at: int = 8) -> None:
    """The first and the third entry from ``at`` trade tags: each now says its record is
    something else."""
    data = bytearray(path.read_bytes())
    other = at + 2 * ENTRY_SIZE
    first, third = data[at : at + 16], data[other : other + 16]
    data[at : at + 16], data[other : other + 16] = third, first
    path.write_bytes(bytes(data))


def from_another_store(path: Path) -> None:
    other = path.parent.parent / "other"
    build_store(other, new_key(), SESSION)
    shutil.copyfile(other / path.name, path)


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# Damage to the appended file (versions.idx) or the sorted run (versions.run).
DAMAGE: dict[str, Callable[[Path], None]] = {
    "deleted": lambda store: (store / INDEX_FILE).unlink(),
    "emptied": lambda store: (store / INDEX_FILE).write_bytes(b""),
    "flipped": lambda store: flip_middle(store / INDEX_FILE),
    "cut in half": lambda store: cut_in_half(store / INDEX_FILE),
    "garbage appended": lambda store: (store / INDEX_FILE).write_bytes(
        (store / INDEX_FILE).read_bytes() + os.urandom(100)
    ),
    "another store's": lambda store: from_another_store(store / INDEX_FILE),
    "run deleted": lambda store: (store / RUN_FILE).unlink(),
    "run flipped": lambda store: flip_middle(store / RUN_FILE),
    "run cut in half": lambda store: cut_in_half(store / RUN_FILE),
    "run's tags swapped": lambda store: swap_tags(store / RUN_FILE, at=48),
    "run from another store": lambda store: from_another_store(store / RUN_FILE),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_index_changes_no_answer_and_a_writer_repairs_it(
    session_store: tuple[Path, bytes, list[Any]], tmp_path: Path, damage: str
) -> None:
    store, key, expected = session_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    DAMAGE[damage](copy)
    assert answers(copy, key) == expected

    # A writer indexes the log anew where it cannot trust the index: damage at the end when
    # it opens, damage anywhere when it is asked about the past.
    writer = open_core(copy, key, write=True)
    head = writer.store.state.seq
    assert answer(writer, "secret/a", 3) == ("data", {"v": "1"})  # audited: one more record
    writer.store.close()
    audit = audit_key(copy, key)
    index, pristine = VersionIndex.load(copy, audit), VersionIndex.load(store, audit)
    assert index is not None and pristine is not None
    assert index.covered == pristine.covered + 1 == head + 1
    # Rebuilt or resumed, the same entries as the pristine index (a read adds none).
    assert index.entries() == pristine.entries()
    assert answers(copy, key, head) == expected


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from backends import Core, Registry, Request
    from eventstore import decode_unseal_key
    from projections import Store

    key = decode_unseal_key(os.environ["KEY"])
    store = Store.open(Path(sys.argv[1]), key, write=True, lock_timeout=10)
    core = Core(store, Registry())
    core.maintain()
    for i in range(50):
        core.handle(Request("write", f"secret/k{i % 7}", {"v": str(i)}))
    print("written", flush=True)
    sys.stdin.read()  # killed here, before close saves the index
    """
)


def test_writes_a_killed_writer_never_indexed_are_answered_then_indexed(tmp_path: Path) -> None:
    key = new_key()
    store = tmp_path / "store"
    build_store(store, key, [("write", "secret/", "a", {"v": "0"})])
    before = VersionIndex.load(store, audit_key(store, key))
    assert before is not None
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(store)],
        env={**os.environ, "KEY": encode_unseal_key(key)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stdout.readline() == b"written\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)

    reader = open_core(store, key, write=False)
    after_kill = VersionIndex.load(store, reader.store.keyring.audit_key)
    assert after_kill is not None and after_kill.covered == before.covered < reader.store.state.seq
    expected = replayed_answers(store, key, tmp_path / "replay")
    assert answers(store, key) == expected  # the writes past the checkpoint, from the log

    writer_again = open_core(store, key, write=True)
    writer_again.store.close()
    indexed = VersionIndex.load(store, reader.store.keyring.audit_key)
    assert indexed is not None and indexed.covered == reader.store.state.seq
    reader.store.close()
    assert answers(store, key) == expected


def test_the_index_names_no_path(session_store: tuple[Path, bytes, list[Any]]) -> None:
    store, _, _ = session_store
    data = (store / INDEX_FILE).read_bytes()
    for word in (b"secret", b"team", b"dir/c", b"other", b"kv/"):
        assert word not in data


def test_a_forged_index_with_a_valid_checksum_is_caught_by_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries pointing at each other's records, the checksum made to fit: readers still
    answer from the log, and ``audit verify`` names the first wrong entry."""
    monkeypatch.setattr(projections.versions, "COMPACT_MIN", 10**9)  # one appended file
    key, store = new_key(), tmp_path / "store"
    build_store(store, key, SESSION)
    expected = replayed_answers(store, key, tmp_path / "replay")
    path = store / INDEX_FILE
    swap_tags(path)  # the entries of seq 1 (a mount) and seq 3 (a write)
    data = bytearray(path.read_bytes())
    last = len(data) - ENTRY_SIZE  # the final checkpoint: tag, then the checksum
    data[last + 12 : last + 16] = crc32c(bytes(data[8:last])).to_bytes(4)
    path.write_bytes(bytes(data))
    assert VersionIndex.load(store, audit_key(store, key))

    assert answers(store, key) == expected
    report = verify_store(store, key)
    assert (report.bad_seq, report.problem) == (1, "the version index does not match the log")


def test_verify_passes_a_store_with_a_run(session_store: tuple[Path, bytes, list[Any]]) -> None:
    store, key, _ = session_store
    assert verify_store(store, key).ok
