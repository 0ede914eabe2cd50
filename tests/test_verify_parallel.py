"""``audit verify`` in ranges at once finds what one walk from seq 1 finds: the same seq,
the same problem, the same count and head, whatever is damaged and wherever.

Stores are small here (a few hundred records, a snapshot every 40) and the threshold for
walking in ranges is lowered to match. The walk in ranges runs in a fresh interpreter
(``in_ranges``): it forks only from a process with one thread, which a test session with
a server thread left over would not be; what it found is compared with one walk in this
process (``in_one_walk``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import eventstore.log
import projections.verify
from backends import Request
from eventstore import FileLog, Frame, Head, Keyring, encode_unseal_key, new_key
from eventstore.log import segment_name
from eventstore.record import encode
from projections import Store
from projections.snapshot import read_snapshot, snapshot_dir, snapshot_seqs, write_snapshot
from projections.verify import _Found, _joined, cut_candidates, verify_store
from projections.versions import VersionIndex
from tests.conftest import open_core

EVERY = 40  # records between snapshots
WRITES = 400

IN_RANGES = textwrap.dedent(
    """
    import json, os, pickle, signal, sys, time
    from multiprocessing.connection import Connection
    from pathlib import Path
    import projections.verify as verify
    from eventstore import decode_unseal_key
    from projections import Store
    from projections.progress import listening

    directory, options = Path(sys.argv[1]), json.loads(sys.argv[2])
    verify.PARALLEL_MIN_RECORDS = 100
    verify.WORKER_GRACE = options["grace"]
    marks = Path(options["marks"])

    def started():
        (marks / str(os.getpid())).touch()
        if options["worker"] == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if options["worker"] == "hangs":
            time.sleep(3600)

    cuts, joins, told = [], [], []
    walk_in_ranges, joined = verify._walk_in_ranges, verify._joined

    def walking(log, checks, starts, *rest):
        cuts.extend(starts)
        return walk_in_ranges(log, checks, starts, *rest)

    def joining(before, after):
        joins.append(after.count)
        return joined(before, after)

    def sending(connection, found, send=Connection.send):  # what a worker sends, kept
        (marks / f"sent-{os.getpid()}").write_bytes(pickle.dumps(found))
        send(connection, found)

    verify._worker_started, verify._walk_in_ranges, verify._joined = started, walking, joining
    Connection.send = sending
    store = Store.open(directory, decode_unseal_key(os.environ["KEY"]), write=False)
    with listening(lambda *said: told.append(said)):
        report = store.verify(options["against"])
    print(json.dumps({
        "report": [report.records, str(report.head or ""), report.bad_seq, report.problem],
        "cuts": cuts,
        "joins": joins,
        "workers": len([name for name in os.listdir(marks) if name.isdigit()]),
        "sent": [str(path) for path in marks.glob("sent-*")],
        "progress": told[-1] if told else None,
    }))
    """
)


def in_ranges(
    directory: Path,
    key: bytes,
    *,
    against: str | None = None,
    worker: str = "walks",
    grace: float = 60.0,
) -> dict[str, Any]:
    """What ``Store.verify`` finds in a fresh interpreter (one thread: ranges at once),
    and how: the cuts, the workers started and joined, what they sent, the last progress
    report."""
    marks = tempfile.mkdtemp(dir=directory.parent, prefix="workers-")  # a file per worker
    options = {"against": against, "worker": worker, "grace": grace, "marks": marks}
    done = subprocess.run(
        [sys.executable, "-c", IN_RANGES, str(directory), json.dumps(options)],
        env={**os.environ, "KEY": encode_unseal_key(key)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def in_one_walk(directory: Path, key: bytes, against: str | None = None) -> list[Any]:
    """What one walk from seq 1, in this process, finds: as ``in_ranges`` says it."""
    reader = Store.open(directory, key, write=False)
    try:
        report = verify_store(reader.log, reader.keyring, directory, against=against, workers=1)
    finally:
        reader.close()
    return [report.records, str(report.head or ""), report.bad_seq, report.problem]


def build(directory: Path, key: bytes, requests: Iterable[Request]) -> None:
    core = open_core(directory, key, write=True, snapshot_every=EVERY)
    try:
        for request in requests:
            core.handle(request)
    finally:
        core.store.close()


def writes(count: int, start: int = 0, mount: str = "secret/") -> Iterator[Request]:
    return (Request("write", f"{mount}k{i % 20}", {"v": str(i)}) for i in range(start, count))


def frames_of(directory: Path, key: bytes) -> list[Frame]:
    return list(FileLog(directory, Keyring.load(directory, key)).frames())


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, int]:
    """A sound store, and where a walk in ranges cuts it."""
    key = new_key()
    directory = tmp_path_factory.mktemp("template") / "store"
    build(directory, key, writes(WRITES))
    assert len(snapshot_seqs(directory)) >= 5
    found = in_ranges(directory, key)
    assert found["report"] == in_one_walk(directory, key)
    (cut,) = found["cuts"]
    return directory, key, cut


@pytest.fixture
def store(template: tuple[Path, bytes, int], tmp_path: Path) -> tuple[Path, bytes, int]:
    """A copy of the template, to damage."""
    directory, key, cut = template
    shutil.copytree(directory, tmp_path / "store")
    return tmp_path / "store", key, cut


def same_in_ranges(directory: Path, key: bytes, against: str | None = None) -> dict[str, Any]:
    """What the walk in ranges found, after checking it is what one walk finds."""
    found = in_ranges(directory, key, against=against)
    assert found["report"] == in_one_walk(directory, key, against)
    assert found["cuts"]  # (a worker may be stopped before it starts: damage before the cut)
    return found


def test_a_sound_store_verifies_in_ranges_as_in_one_walk(template: tuple[Path, bytes, int]) -> None:
    directory, key, cut = template
    found = in_ranges(directory, key)
    records, head, bad_seq, problem = found["report"]
    assert (bad_seq, problem) == (0, "")
    assert records == len(frames_of(directory, key)) == int(head.split(":")[0])
    assert found["report"] == in_one_walk(directory, key)
    # One worker walked the range after the cut, and its findings were joined on.
    assert found["workers"] == 1 and found["joins"] == [records - cut]
    assert WRITES // 4 < cut < records - WRITES // 4
    # The version index compared with the log covers records on both sides of the cut.
    index = VersionIndex.load(directory, Keyring.load(directory, key).audit_key)
    assert index is not None and index.covered > cut
    # This process's bar counts its own range, and ends full.
    assert found["progress"] == ["verifying", cut, cut]


def test_what_a_worker_sends_back_holds_no_key(template: tuple[Path, bytes, int]) -> None:
    directory, key, _ = template
    (sent,) = in_ranges(directory, key)["sent"]
    data = Path(sent).read_bytes()
    keyring = Keyring.load(directory, key)
    keys = [key, keyring.audit_key, *keyring.terms.values(), *keyring.mounts.values()]
    assert len(data) > 1000 and len(keys) >= 5
    assert not [k for k in keys if k in data]


@pytest.mark.parametrize("where", ["before the cut", "after the cut"])
@pytest.mark.parametrize("recorded", ["kept", "rewritten"])
def test_a_recorded_head_is_checked_in_either_range(
    template: tuple[Path, bytes, int], where: str, recorded: str
) -> None:
    directory, key, cut = template
    frame = frames_of(directory, key)[cut - 10 if where == "before the cut" else cut + 10]
    digest = frame.hash.hex() if recorded == "kept" else "ab" * 32
    found = same_in_ranges(directory, key, f"{frame.header.seq}:{digest}")
    records, _, bad_seq, problem = found["report"]
    assert found["joins"] == [records - cut]  # the worker's range, joined on
    if recorded == "kept":
        assert problem == "" and records > cut
    else:
        assert bad_seq == frame.header.seq and problem.startswith("rewritten history")


def test_a_flipped_byte_after_the_cut(store: tuple[Path, bytes, int]) -> None:
    directory, key, cut = store
    frame = frames_of(directory, key)[cut + 5 - 1]
    flip(directory / frame.segment, (frame.offset + frame.end) // 2)
    found = same_in_ranges(directory, key)
    records, _, bad_seq, problem = found["report"]
    assert (records, bad_seq, found["joins"]) == (cut + 4, cut + 5, [4])
    assert problem.startswith("corruption: checksum mismatch")


@pytest.mark.parametrize("after", [0, 1, 2], ids=["cut", "cut+1", "cut+2"])
def test_a_record_rewritten_at_the_cut_breaks_the_chain_there(
    store: tuple[Path, bytes, int], after: int
) -> None:
    """Re-sealed with the store's own key (an insider), so only the chain tells."""
    directory, key, cut = store
    at = cut + after
    rewrite(directory, key, frames_of(directory, key)[at - 1], prev_hash=os.urandom(32))
    found = same_in_ranges(directory, key)
    records, _, bad_seq, problem = found["report"]
    assert (records, bad_seq) == (at - 1, at)
    assert found["joins"] == ([after - 1] if after else [])
    assert problem.startswith("rewritten history: hash chain broken")


def test_a_record_changed_at_the_cut_is_told_by_the_snapshot_there(
    store: tuple[Path, bytes, int],
) -> None:
    """The record a worker's snapshot stands at, re-sealed with another timestamp: its
    hash changes, so the worker's start no longer matches it."""
    directory, key, cut = store
    frame = frames_of(directory, key)[cut - 1]
    rewrite(directory, key, frame, timestamp=frame.header.timestamp + 1)
    records, _, bad_seq, problem = same_in_ranges(directory, key)["report"]
    assert (records, bad_seq) == (cut, cut)
    assert problem == f"snapshot at seq {cut} does not match the log"


def test_a_damaged_snapshot_at_the_cut(store: tuple[Path, bytes, int]) -> None:
    """The walk in ranges cuts elsewhere; the damage is found where one walk finds it."""
    directory, key, cut = store
    path = snapshot_dir(directory) / f"{cut:020d}.snap"
    flip(path, path.stat().st_size // 2)
    found = same_in_ranges(directory, key)
    assert found["report"][0] == found["report"][2] == cut
    assert found["report"][3] == f"damaged snapshot at seq {cut}"
    assert found["cuts"] != [cut]


def test_a_forged_snapshot_at_the_cut(store: tuple[Path, bytes, int]) -> None:
    """Sealed with the store's keys but holding another value: the worker starts from a
    wrong state, and the range ending at the cut tells."""
    directory, key, cut = store
    keyring = Keyring.load(directory, key)
    snapshot = read_snapshot(directory, keyring, cut)
    mount = snapshot.state.mounts.at("secret/")
    assert mount is not None
    snapshot.state.data[mount.id]["k3"] = snapshot.state.data[mount.id]["k4"]
    write_snapshot(directory, keyring, snapshot.state, snapshot.head, snapshot.hint)
    found = in_ranges(directory, key)
    assert found["cuts"] == [cut]
    assert found["report"] == in_one_walk(directory, key)
    assert found["report"][2:] == [cut, f"snapshot at seq {cut} does not match the log"]


@pytest.mark.parametrize(
    "cut_at", ["torn in the last record", "after the cut", "before the cut", "at the cut"]
)
def test_a_truncated_log(store: tuple[Path, bytes, int], cut_at: str) -> None:
    directory, key, cut = store
    frames = frames_of(directory, key)
    size = {
        "torn in the last record": frames[-1].offset + 10,
        "after the cut": frames[cut + 10].end,
        "before the cut": frames[cut - 10].end,
        "at the cut": frames[cut - 1].end,
    }[cut_at]
    os.truncate(directory / segment_name(1), size)
    found = same_in_ranges(directory, key)
    records, _, bad_seq, problem = found["report"]
    assert found["joins"] == ([] if cut_at == "before the cut" else [records - cut])
    if cut_at == "torn in the last record":
        assert (bad_seq, problem.split(":")[0]) == (len(frames), "torn tail")
    else:
        assert records == bad_seq - 1 and problem.startswith("missing records")


def test_a_log_of_many_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker finds its first record in a segment of its own; then a segment after the
    cut goes missing."""
    monkeypatch.setattr(eventstore.log, "SEGMENT_BYTES", 4096)
    key, directory = new_key(), tmp_path / "store"
    build(directory, key, writes(WRITES))
    segments = sorted(directory.glob("*.seg"))
    assert len(segments) > 10
    found = same_in_ranges(directory, key)
    (cut,) = found["cuts"]
    assert found["report"][3] == "" and found["joins"] == [found["report"][0] - cut]
    gone = [path for path in segments if int(path.name[:20]) > cut + 1][1]
    gone.unlink()
    records, _, bad_seq, problem = same_in_ranges(directory, key)["report"]
    assert (bad_seq, records) == (int(gone.name[:20]), int(gone.name[:20]) - 1)
    assert problem.startswith("missing records")


@pytest.mark.parametrize("worker", ["killed", "hangs"])
def test_a_lost_worker_has_its_range_walked_here(
    store: tuple[Path, bytes, int], worker: str
) -> None:
    directory, key, cut = store
    frame = frames_of(directory, key)[cut + 20 - 1]
    flip(directory / frame.segment, (frame.offset + frame.end) // 2)
    began = time.monotonic()
    found = in_ranges(directory, key, worker=worker, grace=1.0)
    assert time.monotonic() - began < 30
    assert found["report"] == in_one_walk(directory, key)
    assert found["report"][2] == cut + 20
    assert found["cuts"] == [cut] and found["workers"] == 1 and found["joins"] == []


def test_a_mount_created_after_the_cut_without_its_key_in_the_keyring(tmp_path: Path) -> None:
    """Snapshots after it cannot be read (its section's key is gone): the cut is before it,
    and the worker says which mount is without a key, the seq it was created at."""
    key, directory = new_key(), tmp_path / "store"
    build(directory, key, [*writes(300), Request("write", "sys/mounts/kv", {"type": "kv"})])
    build(directory, key, writes(400, 300, mount="kv/"))
    keyring = Keyring.load(directory, key)
    reader = Store.open(directory, key, write=False)
    kv = reader.state.mounts.at("kv/")
    reader.close()
    assert kv is not None
    del keyring.mounts[kv.id]
    keyring.save(directory, key)
    records, _, bad_seq, problem = same_in_ranges(directory, key)["report"]
    assert records == 403 and bad_seq == 303 and "the live mount 'kv/' has no data key" in problem


def test_snapshots_shredded_by_an_unmount_are_not_cut_at(tmp_path: Path) -> None:
    """Before the unmount, every snapshot holds the mount's values, whose key is gone."""
    key, directory = new_key(), tmp_path / "store"
    build(
        directory,
        key,
        [
            Request("write", "sys/mounts/kv", {"type": "kv"}),
            *writes(230, mount="kv/"),
            Request("delete", "sys/mounts/kv"),
            *writes(400, 230),
        ],
    )
    unmounted = len(frames_of(directory, key)) - 170
    found = in_ranges(directory, key)
    assert found["report"] == in_one_walk(directory, key)
    assert found["report"][3] == ""
    (cut,) = found["cuts"]
    assert cut > unmounted and found["workers"] == 1


@pytest.fixture
def no_forks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Worker processes forked from here mark ``marks``; ranges start small."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(projections.verify, "PARALLEL_MIN_RECORDS", 100)
    monkeypatch.setattr(
        projections.verify, "_worker_started", lambda: (marks / str(os.getpid())).touch()
    )
    yield marks
    assert list(marks.iterdir()) == []


def test_with_a_second_thread_running_one_walk(
    template: tuple[Path, bytes, int], no_forks: Path
) -> None:
    directory, key, _ = template
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        reader = Store.open(directory, key, write=False)
        report = reader.verify()
        reader.close()
    finally:
        stop.set()
        thread.join()
    assert [report.records, str(report.head), report.bad_seq, report.problem] == in_one_walk(
        directory, key
    )


@pytest.mark.parametrize("snapshots", [0, 1])
def test_a_store_with_fewer_than_two_snapshots_is_walked_once(
    tmp_path: Path, no_forks: Path, snapshots: int
) -> None:
    key, directory = new_key(), tmp_path / "store"
    core = open_core(directory, key, write=True, snapshot_every=10**9)
    for request in writes(300):
        core.handle(request)
    if snapshots:
        core.store.snapshot()
    core.store.close()
    assert len(snapshot_seqs(directory)) == snapshots
    reader = Store.open(directory, key, write=False)
    report = reader.verify()
    reader.close()
    assert report.ok and report.records == 302


def test_cuts_fall_at_the_snapshots_nearest_to_even_ranges() -> None:
    snapshots = [1002 * 2**n for n in range(7)] + [114002, 164002]
    assert cut_candidates(snapshots, 200_000, 2)[0][:3] == [114002, 64128, 164002]
    assert [c[0] for c in cut_candidates(range(0, 1000, 10), 1000, 4)] == [250, 500, 750]
    assert cut_candidates([500, 1000], 1000, 2) == [[500]]  # none at the end


# ---- damage --------------------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def rewrite(directory: Path, key: bytes, frame: Frame, **header: Any) -> None:
    """Record ``frame`` sealed again with the store's key, some header fields changed."""
    keyring = Keyring.load(directory, key)
    h = frame.header
    fields = {"seq": h.seq, "timestamp": h.timestamp, "term": h.term, "prev_hash": h.prev_hash}
    body = FileLog(directory, keyring).open_frame(frame).body
    raw = encode(body, **{**fields, **header}, sealer=keyring.barrier(h.term))
    assert len(raw) == frame.end - frame.offset
    with open(directory / frame.segment, "r+b") as f:
        f.seek(frame.offset)
        f.write(raw)


@pytest.mark.parametrize("changed", ["prev_hash", "timestamp"])
def test_the_join_checks_a_workers_first_record_against_the_record_before(
    template: tuple[Path, bytes, int], changed: str
) -> None:
    """A worker's own scan checks the link out of the record its snapshot stands at, but a
    worker that had to look for its first record from the start of a segment could not:
    the join does, in the words of the scan."""
    directory, key, cut = template
    last, first = frames_of(directory, key)[cut - 1 : cut + 1]
    h = last.header
    before = _Found(cut, Head(cut, last.hash, h.timestamp), None, False, None, None, {}, [], [])
    if changed == "prev_hash":
        header = first.header._replace(prev_hash=bytes(32))
    else:
        header = first.header._replace(timestamp=h.timestamp - 1)
    after = replace(before, first=first._replace(header=header))
    problem = _joined(before, after).problem
    if changed == "prev_hash":
        where = f"in segment {first.segment} at offset {first.offset} (seq {cut + 1})"
        assert problem == (
            cut + 1,
            f"rewritten history: hash chain broken (previous record changed) {where}",
        )
    else:
        assert problem == (cut + 1, "timestamps go backwards")
