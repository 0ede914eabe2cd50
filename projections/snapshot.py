"""Snapshots: the projections at one seq, sealed, so replay starts near the end.

A snapshot names the seq and the hash of the record it stands at; it is used only when
that record's hash in the log matches. Each mount's values form a section sealed with the
mount's data key, so unmounting (destroying the key) shreds the snapshot's copy too; a
snapshot with a section that no longer opens is passed over for an older one. A damaged
snapshot is ignored, never trusted: the log is the truth.

The file: magic, header (the AAD of everything else), the length of the sealed table, the
table (sealed with the barrier key: mounts, removed mounts, leases, intents, and where
each section lies), then the sections. Opening a store reads the table only; a section
is read when its mount's values are first needed (``MountData``). A section is a run of
chunks of at most ``CHUNK`` values, each sealed on its own (its place in the run is part
of its associated data) behind its length: loading one holds a chunk's bytes at a time
beside the values, never the whole section twice over.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, MutableMapping
from dataclasses import astuple, dataclass, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import msgpack

from eventstore import Head, Keyring, ShreddedError
from eventstore.files import write_atomically
from projections.state import (
    AuditDevice,
    Intent,
    Lease,
    Mount,
    MountData,
    MountTable,
    RemovedMount,
    StoreState,
    Token,
)

SNAPSHOT_DIR = "snapshots"
_MAGIC = b"VLSNAP04"  # 03 sealed a section whole, 02 kept file positions: passed over, rebuilt
# seq, timestamp, key term, hash of the record at seq, and the log's hint for that record,
# so replay resumes there without reading before it
_HEADER = struct.Struct(">QQI32sQ")
_TABLE_LENGTH = struct.Struct(">I")
_CHUNK_LENGTH = struct.Struct(">I")
CHUNK = 2048  # values per sealed chunk of a section


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: StoreState
    head: Head
    hint: int  # the log's hint for the record at head.seq (0: none)


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
    hint: int = 0,
) -> None:
    """Seal ``state`` (which stands at ``head``, whose record has ``hint``) into a file."""
    assert state.seq == head.seq
    sections, places = [], {}
    offset = 0
    for mount_id, values in state.data.items():
        size = 0
        for chunk in _sealed_chunks(keyring, mount_id, head.seq, values):
            sections.append(chunk)
            size += len(chunk)
        places[mount_id] = [offset, size, len(values)]
        offset += size
    table = msgpack.packb(
        {
            "mounts": [astuple(m) for m in state.mounts.sorted()],
            "removed": [astuple(r) for r in state.removed.values()],
            "leases": [astuple(x) for x in state.leases.values()],
            "intents": [astuple(x) for x in state.intents.values()],
            "tokens": [astuple(x) for x in state.tokens.values()],
            "policies": state.policies,
            "policy_seq": state.policy_seq,
            "token_roles": state.token_roles,
            "password_policies": state.password_policies,
            "audit_devices": [astuple(x) for x in state.audit_devices.values()],
            "sections": places,
        },
        use_bin_type=True,
    )
    term = keyring.term
    header = _HEADER.pack(head.seq, head.timestamp, term, head.hash, hint)
    sealed = keyring.barrier(term).seal(table, "snapshot", header)
    folder = snapshot_dir(directory)
    folder.mkdir(mode=0o700, exist_ok=True)
    data = b"".join([_MAGIC, header, _TABLE_LENGTH.pack(len(sealed)), sealed, *sections])
    write_atomically(folder / f"{head.seq:020d}.snap", data)


def _sealed_chunks(
    keyring: Keyring, mount_id: str, seq: int, values: MutableMapping[str, bytes]
) -> Iterator[bytes]:
    """A section: each run of ``CHUNK`` values packed and sealed, behind its length."""
    sealer, items = keyring.mount_sealer(mount_id), iter(values.items())
    for index in range(-(-len(values) // CHUNK)):
        packed = msgpack.packb(dict(islice(items, CHUNK)), use_bin_type=True)
        sealed = sealer.seal(packed, "snapshot", mount_id, str(seq), str(index))
        yield _CHUNK_LENGTH.pack(len(sealed)) + sealed


def read_snapshot(directory: Path, keyring: Keyring, seq: int, *, lazy: bool = False) -> Snapshot:
    """The snapshot at ``seq``; raises if it is damaged or a section no longer opens.

    ``lazy`` reads the sections only when their values are first needed: a damaged one is
    then found late (see ``MountData``), one whose key is gone still raises now.
    """
    f = open(snapshot_dir(directory) / f"{seq:020d}.snap", "rb")  # noqa: SIM115 - kept if lazy
    try:
        snapshot = _read(f, keyring, seq, lazy)
    except BaseException:
        f.close()
        raise
    if not lazy:
        f.close()
    return snapshot


def _read(f: BinaryIO, keyring: Keyring, seq: int, lazy: bool) -> Snapshot:
    prefix = f.read(len(_MAGIC) + _HEADER.size + _TABLE_LENGTH.size)
    if not prefix.startswith(_MAGIC) or len(prefix) < len(_MAGIC) + _HEADER.size + 4:
        raise ValueError("not a snapshot of this version")
    header = prefix[len(_MAGIC) : len(_MAGIC) + _HEADER.size]
    found_seq, timestamp, term, record_hash, hint = _HEADER.unpack(header)
    if found_seq != seq:
        raise ValueError("snapshot file name and contents disagree")
    (length,) = _TABLE_LENGTH.unpack_from(prefix, len(_MAGIC) + _HEADER.size)
    table = keyring.barrier(term).open(f.read(length), "snapshot", header)
    fields = msgpack.unpackb(table, raw=False)
    state = StoreState(seq=seq, mounts=MountTable())
    for row in fields["mounts"]:
        state.mounts.add(Mount(*row))
    state.removed = {row[0]: RemovedMount(*row) for row in fields["removed"]}
    state.leases = {row[0]: Lease(*row) for row in fields["leases"]}
    state.intents = {row[0]: Intent(*row) for row in fields["intents"]}
    state.tokens = {row[0]: Token(*row) for row in fields.get("tokens", [])}
    state.tokens = {t.id: replace(t, policies=tuple(t.policies)) for t in state.tokens.values()}
    state.accessors = {t.accessor: t.id for t in state.tokens.values()}
    state.policies = fields.get("policies", {})
    state.policy_seq = fields.get("policy_seq", 0)
    state.token_roles = fields.get("token_roles", {})
    state.password_policies = fields.get("password_policies", {})
    state.audit_devices = {row[0]: AuditDevice(*row) for row in fields.get("audit_devices", [])}
    base = len(prefix) + length
    for mount_id, (start, size, count) in fields["sections"].items():
        if mount_id not in keyring.mounts:
            raise ShreddedError(f"the data key of mount {mount_id} was destroyed")
        load = partial(_section, f, keyring, mount_id, seq, base + start, size, count)
        state.data[mount_id] = MountData(load, count) if lazy else load()
    return Snapshot(state, Head(seq, record_hash, timestamp), hint)


def _section(
    f: BinaryIO, keyring: Keyring, mount_id: str, seq: int, offset: int, size: int, count: int
) -> dict[str, bytes]:
    """A mount's values, read and opened a chunk at a time."""
    sealer, values = keyring.mount_sealer(mount_id), {}
    end, index = offset + size, 0
    while offset < end:
        prefix = os.pread(f.fileno(), _CHUNK_LENGTH.size, offset)
        (length,) = _CHUNK_LENGTH.unpack(prefix) if len(prefix) == _CHUNK_LENGTH.size else (-1,)
        offset += _CHUNK_LENGTH.size
        sealed = os.pread(f.fileno(), max(length, 0), offset) if length >= 0 else b""
        if len(sealed) != length or offset + length > end:
            raise ValueError("snapshot section cut short")
        plain = sealer.open(sealed, "snapshot", mount_id, str(seq), str(index))
        del sealed
        values.update(msgpack.unpackb(plain, raw=False))
        offset, index = offset + length, index + 1
    if len(values) != count:
        raise ValueError("snapshot section holds another number of values than its table")
    return values


def latest_snapshot(directory: Path, keyring: Keyring, at_most: int | None) -> Snapshot | None:
    """The newest snapshot at or below ``at_most`` that opens; damaged ones are skipped."""
    for seq in reversed(snapshot_seqs(directory)):
        if at_most is not None and seq > at_most:
            continue
        try:
            return read_snapshot(directory, keyring, seq, lazy=True)
        except Exception:  # damaged, shredded or foreign: never trusted, rebuilt from the log
            continue
    return None
