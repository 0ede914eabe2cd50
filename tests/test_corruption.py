"""Damage on disk, as a failing disk, a crash or a tamperer leaves it, on a real file log.

A torn tail (an append cut short by a crash) was never acknowledged and is dropped quietly;
anything else is corruption: reported with segment, offset and seq, and never "repaired".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google_crc32c import value as crc32c

import eventstore.log
from eventstore import CorruptionError, FileLog, Keyring
from eventstore.lock import WriterLock
from eventstore.log import SEGMENT_MAGIC, Frame, segment_name
from eventstore.record import GENESIS_HASH, HEADER, PREFIX

BODIES = [b"body of record %d " % seq + b"#" * (seq * 5) for seq in range(1, 6)]
SEGMENT = segment_name(1)


@dataclass
class Store:
    """A log of five records, each appended on its own, and where they sit in the file."""

    directory: Path
    keyring: Keyring
    frames: list[Frame]

    @property
    def segment(self) -> Path:
        return self.directory / SEGMENT

    def writer(self) -> FileLog:
        lock = WriterLock(self.directory)
        lock.acquire(timeout=5)
        return FileLog.open_writer(self.directory, self.keyring, lock)

    def reader(self) -> FileLog:
        return FileLog(self.directory, self.keyring)

    def files(self) -> dict[str, bytes]:
        """Every file's bytes, but the lock file (acquiring the lock writes its pid)."""
        return {p.name: p.read_bytes() for p in self.directory.iterdir() if p.name != "lock"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    directory = tmp_path / "store"
    directory.mkdir()
    keyring = Keyring.create()
    lock = WriterLock(directory)
    lock.acquire(timeout=5)
    writer = FileLog.open_writer(directory, keyring, lock)
    for body in BODIES:
        writer.append([body])
    writer.close()
    yield Store(directory, keyring, list(FileLog(directory, keyring).frames()))


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def read_until_error(log: FileLog) -> tuple[list[int], CorruptionError]:
    """The seqs read before the log reported corruption, and the report."""
    seen = []
    with pytest.raises(CorruptionError) as raised:
        for record in log.records():
            seen.append(record.seq)
    return seen, raised.value


def chain_is_whole(log: FileLog) -> list[bytes]:
    """Every body, after checking seqs run 1.. and each record names its predecessor."""
    frames = list(log.frames())
    assert [f.header.seq for f in frames] == list(range(1, len(frames) + 1))
    for previous, frame in zip([None, *frames], frames, strict=False):
        assert frame.header.prev_hash == (previous.hash if previous else GENESIS_HASH)
    return [log.open_frame(f).body for f in frames]


# Where in a record to flip a bit: (offset within the record, mask).
PLACES = {
    "length-low-bit": (3, 0x01),  # one byte more or less: still inside the file
    "length-high-bit": (0, 0x80),  # claims 2 GiB: runs past the end of the file
    "crc": (6, 0x10),
    "version": (PREFIX.size, 0x02),
    "seq": (PREFIX.size + 8, 0x01),
    "timestamp": (PREFIX.size + 12, 0x04),
    "prev-hash": (PREFIX.size + 30, 0x01),
    "ciphertext": (PREFIX.size + HEADER.size + 20, 0x40),
}


@pytest.mark.parametrize("place", PLACES)
def test_a_damaged_earlier_record_is_reported_where_it_is(store: Store, place: str) -> None:
    damaged = store.frames[1]  # seq 2 of 5
    where, mask = PLACES[place]
    flip(store.segment, damaged.offset + where, mask)

    seen, error = read_until_error(store.reader())
    assert seen == [1]
    assert (error.seq, error.segment, error.offset) == (2, SEGMENT, damaged.offset)
    assert f"segment {SEGMENT} at offset {damaged.offset} (seq 2)" in str(error)


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("seq", [2, 5], ids=["earlier-record", "last-record"])
def test_a_writer_refuses_a_damaged_log_and_changes_nothing(
    store: Store, place: str, seq: int
) -> None:
    damaged = store.frames[seq - 1]
    where, mask = PLACES[place]
    flip(store.segment, damaged.offset + where, mask)
    before = store.files()

    with pytest.raises(CorruptionError) as raised:
        store.writer().close()
    assert (raised.value.seq, raised.value.segment, raised.value.offset) == (
        seq,
        SEGMENT,
        damaged.offset,
    )
    assert store.files() == before
    with pytest.raises(CorruptionError):  # and a reader reports the same record
        list(store.reader().records())


def test_a_torn_last_record_is_dropped_and_appending_resumes(store: Store) -> None:
    pristine = store.segment.read_bytes()
    last = store.frames[-1]
    for cut in range(1, last.end - last.offset):
        store.segment.write_bytes(pristine[: last.end - cut])

        assert [r.body for r in store.reader().records()] == BODIES[:4]
        writer = store.writer()
        try:
            assert (writer.head.seq, writer.head.hash) == (4, store.frames[3].hash)
            assert store.segment.stat().st_size == last.offset  # the torn tail was cut off
            assert [r.seq for r in writer.append([b"again"])] == [5]
        finally:
            writer.close()
        assert chain_is_whole(store.reader()) == [*BODIES[:4], b"again"]


def test_a_zero_filled_tail_is_torn(store: Store) -> None:
    """A crash can leave a file extended with zeros where the last write should be."""
    with open(store.segment, "ab") as f:
        f.write(bytes(300))
    assert [r.body for r in store.reader().records()] == BODIES
    writer = store.writer()
    try:
        assert writer.head.seq == 5
        assert writer.append([b"six"])[0].seq == 6
    finally:
        writer.close()
    assert chain_is_whole(store.reader()) == [*BODIES, b"six"]


@pytest.mark.parametrize("kept", range(len(SEGMENT_MAGIC)))
def test_a_new_segment_cut_short_in_its_magic_is_torn(store: Store, kept: int) -> None:
    new_segment = store.directory / segment_name(6)
    new_segment.write_bytes(SEGMENT_MAGIC[:kept])

    assert [r.body for r in store.reader().records()] == BODIES
    writer = store.writer()
    try:
        assert writer.head.seq == 5
        assert new_segment.read_bytes() == SEGMENT_MAGIC
        assert writer.append([b"six"])[0].seq == 6
    finally:
        writer.close()
    assert len(new_segment.read_bytes()) > len(SEGMENT_MAGIC)
    assert chain_is_whole(store.reader()) == [*BODIES, b"six"]


@pytest.mark.parametrize("kept", [0, 3, 7])
def test_the_first_segment_cut_short_in_its_magic_is_torn(tmp_path: Path, kept: int) -> None:
    directory = tmp_path / "store"
    directory.mkdir()
    (directory / segment_name(1)).write_bytes(SEGMENT_MAGIC[:kept])
    store = Store(directory, Keyring.create(), [])
    assert list(store.reader().records()) == []
    writer = store.writer()
    try:
        assert writer.head.seq == 0
        assert writer.append([b"one"])[0].seq == 1
    finally:
        writer.close()
    assert chain_is_whole(store.reader()) == [b"one"]


def test_a_segment_with_foreign_bytes_is_corruption(store: Store) -> None:
    (store.directory / segment_name(6)).write_bytes(b"PK\x03\x04 not a segment")
    with pytest.raises(CorruptionError) as raised:
        store.writer().close()
    assert (raised.value.seq, raised.value.segment, raised.value.offset) == (6, segment_name(6), 0)


def raw_records(store: Store) -> list[bytes]:
    data = store.segment.read_bytes()
    return [data[f.offset : f.end] for f in store.frames]


def rewrite(store: Store, records: list[bytes]) -> None:
    store.segment.write_bytes(SEGMENT_MAGIC + b"".join(records))


def reframe(raw: bytes, **changes: object) -> bytes:
    """``raw`` with header fields changed and its length and crc recomputed to match."""
    payload = raw[PREFIX.size :]
    fields = dict(
        zip(
            ("version", "seq", "timestamp", "term", "prev_hash"),
            HEADER.unpack_from(payload),
            strict=True,
        )
    )
    fields.update(changes)
    payload = HEADER.pack(*fields.values()) + payload[HEADER.size :]
    return PREFIX.pack(len(payload), crc32c(payload)) + payload


def test_swapped_records_are_detected(store: Store) -> None:
    records = raw_records(store)
    records[1], records[2] = records[2], records[1]
    rewrite(store, records)
    seen, error = read_until_error(store.reader())
    assert seen == [1]
    assert (error.seq, error.offset) == (2, store.frames[1].offset)
    assert "expected seq 2 but found seq 3" in str(error)
    with pytest.raises(CorruptionError):
        store.writer().close()


def test_a_removed_record_is_detected(store: Store) -> None:
    records = raw_records(store)
    del records[2]
    rewrite(store, records)
    seen, error = read_until_error(store.reader())
    assert seen == [1, 2]
    assert error.seq == 3 and "found seq 4" in str(error)


def test_a_removed_record_with_renumbered_headers_breaks_the_hash_chain(store: Store) -> None:
    records = raw_records(store)
    del records[2]
    rewrite(store, [*records[:2], *(reframe(r, seq=seq) for seq, r in enumerate(records[2:], 3))])
    seen, error = read_until_error(store.reader())
    assert seen == [1, 2]
    assert error.seq == 3 and "hash chain" in str(error)


def test_a_removed_record_with_a_forged_chain_fails_authentication(store: Store) -> None:
    """Even with seqs and hashes rewritten to fit, the header is AES-GCM associated data."""
    records = raw_records(store)
    del records[2]
    forged = records[:2]
    for seq, raw in enumerate(records[2:], 3):
        forged.append(reframe(raw, seq=seq, prev_hash=eventstore.record.record_hash(forged[-1])))
    rewrite(store, forged)
    assert [f.header.seq for f in store.reader().frames()] == [1, 2, 3, 4]
    seen, error = read_until_error(store.reader())
    assert seen == [1, 2]
    assert error.seq == 3 and "authentication" in str(error)


def test_a_missing_middle_segment_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventstore.log, "SEGMENT_BYTES", 256)
    directory = tmp_path / "store"
    directory.mkdir()
    store = Store(directory, Keyring.create(), [])
    writer = store.writer()
    for i in range(12):
        writer.append([b"record %d " % i + b"." * 60])
    writer.close()
    segments = store.reader().segments()
    assert len(segments) >= 3
    first, name = segments[1]
    (directory / name).unlink()
    seen, error = read_until_error(store.reader())
    assert seen == list(range(1, first))
    assert (error.seq, error.segment) == (first, segments[2][1])


def test_another_stores_keyring_fails_authentication_at_seq_1(store: Store) -> None:
    seen, error = read_until_error(FileLog(store.directory, Keyring.create()))
    assert seen == []
    assert (error.seq, error.segment, error.offset) == (1, SEGMENT, len(SEGMENT_MAGIC))
    assert "authentication" in str(error)


def test_the_undamaged_log_reads_whole(store: Store) -> None:
    """The control for the tests above: before any damage, every record reads back."""
    assert chain_is_whole(store.reader()) == BODIES
