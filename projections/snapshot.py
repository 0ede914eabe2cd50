"""Snapshots: the projections at one seq, sealed, so replay starts near the end.

A snapshot names the seq and the hash of the record it stands at; it is used only when
that record's hash in the log matches. Each mount's values form a section sealed with the
mount's data key, so unmounting (destroying the key) shreds the snapshot's copy too; a
snapshot with a section that no longer opens is passed over for an older one. A damaged
snapshot is ignored, never trusted: the log is the truth.
"""

from __future__ import annotations

import os
import struct
from dataclasses import astuple, dataclass
from pathlib import Path

import msgpack

from eventstore import Head, Keyring
from eventstore.files import write_atomically
from eventstore.log import segment_name
from projections.state import Intent, Lease, Mount, MountTable, RemovedMount, StoreState

SNAPSHOT_DIR = "snapshots"
_MAGIC = b"VLSNAP01"
# seq, timestamp, key term, hash of the record at seq, and where that record starts in the
# log (first seq of its segment, offset), so replay resumes there without reading before it
_HEADER = struct.Struct(">QQI32sQQ")


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: StoreState
    head: Head
    at: tuple[str, int] | None  # (segment file, offset) of the record at head.seq


def snapshot_dir(directory: Path) -> Path:
    return directory / SNAPSHOT_DIR


def snapshot_seqs(directory: Path) -> list[int]:
    """Seqs of the snapshot files present, oldest first."""
    try:
        names = os.listdir(snapshot_dir(directory))
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".snap") and n[:-5].isdigit())


def write_snapshot(
    directory: Path,
    keyring: Keyring,
    state: StoreState,
    head: Head,
    at: tuple[str, int] | None = None,
) -> None:
    """Seal ``state`` (which stands at ``head``, found at ``at``) into a snapshot file."""
    assert state.seq == head.seq
    sections = {}
    for mount_id, values in state.data.items():
        packed = msgpack.packb(values, use_bin_type=True)
        sections[mount_id] = keyring.mount_sealer(mount_id).seal(
            packed, "snapshot", mount_id, str(head.seq)
        )
    body = msgpack.packb(
        {
            "mounts": [astuple(m) for m in state.mounts.sorted()],
            "removed": [astuple(r) for r in state.removed.values()],
            "leases": [astuple(x) for x in state.leases.values()],
            "intents": [astuple(x) for x in state.intents.values()],
            "sections": sections,
        },
        use_bin_type=True,
    )
    term = keyring.term
    segment, offset = (int(at[0].split(".")[0]), at[1]) if at else (0, 0)
    header = _HEADER.pack(head.seq, head.timestamp, term, head.hash, segment, offset)
    sealed = keyring.barrier(term).seal(body, "snapshot", header)
    folder = snapshot_dir(directory)
    folder.mkdir(mode=0o700, exist_ok=True)
    write_atomically(folder / f"{head.seq:020d}.snap", _MAGIC + header + sealed)


def read_snapshot(directory: Path, keyring: Keyring, seq: int) -> Snapshot:
    """The snapshot at ``seq``; raises if it is damaged or a section no longer opens."""
    raw = (snapshot_dir(directory) / f"{seq:020d}.snap").read_bytes()
    if not raw.startswith(_MAGIC) or len(raw) < len(_MAGIC) + _HEADER.size:
        raise ValueError("not a snapshot")
    header = raw[len(_MAGIC) : len(_MAGIC) + _HEADER.size]
    found_seq, timestamp, term, record_hash, segment, offset = _HEADER.unpack(header)
    if found_seq != seq:
        raise ValueError("snapshot file name and contents disagree")
    body = keyring.barrier(term).open(raw[len(_MAGIC) + _HEADER.size :], "snapshot", header)
    fields = msgpack.unpackb(body, raw=False)
    state = StoreState(seq=seq, mounts=MountTable())
    for row in fields["mounts"]:
        state.mounts.add(Mount(*row))
    state.removed = {row[0]: RemovedMount(*row) for row in fields["removed"]}
    state.leases = {row[0]: Lease(*row) for row in fields["leases"]}
    state.intents = {row[0]: Intent(*row) for row in fields["intents"]}
    for mount_id, sealed in fields["sections"].items():
        plain = keyring.mount_sealer(mount_id).open(sealed, "snapshot", mount_id, str(seq))
        state.data[mount_id] = msgpack.unpackb(plain, raw=False)
    at = (segment_name(segment), offset) if segment else None
    return Snapshot(state, Head(seq, record_hash, timestamp), at)


def latest_snapshot(directory: Path, keyring: Keyring, at_most: int | None) -> Snapshot | None:
    """The newest snapshot at or below ``at_most`` that opens; damaged ones are skipped."""
    for seq in reversed(snapshot_seqs(directory)):
        if at_most is not None and seq > at_most:
            continue
        try:
            return read_snapshot(directory, keyring, seq)
        except Exception:  # damaged, shredded or foreign: never trusted, rebuilt from the log
            continue
    return None
