"""Verify a whole store, record by record, with its snapshots and version index.

Checked: framing and checksums, contiguous seqs, the hash chain, authenticated decryption
under each record's key term, non-decreasing time, snapshots and the version index
matching the log, and with ``against`` that the log still extends a head written down
earlier. (A version index that does not load, its checksums failing, is used by no one,
like a missing one, and a writer rebuilds it; one that loads must match the log, and a
damaged block found in its sorted run is reported.) Values of shredded
mounts are unreadable by design and are not counted as damage: only the barrier layer of
each record is opened here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventstore import CorruptionError, Head, HsmUnavailableError, Keyring, LogReader, ShreddedError
from projections.events import MountCreated, decode
from projections.progress import counted
from projections.snapshot import read_snapshot, snapshot_seqs
from projections.sortedrun import RunDamaged, entry_seq
from projections.state import StoreState, apply
from projections.versions import IndexWriter, VersionIndex


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    head: Head | None
    bad_seq: int = 0
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def parse_head(text: str) -> tuple[int, bytes]:
    seq, sep, digest = text.partition(":")
    try:
        if not sep or not seq.isdigit():
            raise ValueError
        hash_bytes = bytes.fromhex(digest)
        if len(hash_bytes) != 32:
            raise ValueError
    except ValueError:
        raise ValueError(f"invalid head {text!r}: expected SEQ:HASH (64 hex digits)") from None
    return int(seq), hash_bytes


def verify_store(
    log: LogReader, keyring: Keyring, directory: Path | None, *, against: str | None = None
) -> VerifyReport:
    """Walk the whole store; the first problem found is reported with its seq and kind.

    ``directory`` holds the snapshots and the version index (None: a store without them).
    Raises ``ValueError`` for a malformed ``against``.
    """
    recorded = parse_head(against) if against else None
    snapshots = set(snapshot_seqs(directory)) if directory is not None else set()
    state, head, count, recorded_hash = StoreState(), None, 0, None
    created: dict[str, int] = {}  # mount id -> the seq it was created at
    indexed = IndexWriter(directory or Path("/nonexistent"), keyring.audit_key)
    try:
        for frame in counted(log.frames(1), "verifying", lambda: log.head.seq):
            h = frame.header
            if head is not None and h.timestamp < head.timestamp:
                return VerifyReport(count, head, h.seq, "timestamps go backwards")
            event = decode(log.open_frame(frame))
            apply(state, event)
            if isinstance(event, MountCreated):
                created[event.mount_id] = event.seq
            indexed.add(event, frame.hint)
            head, count = Head(h.seq, frame.hash, h.timestamp), count + 1
            if recorded and h.seq == recorded[0]:
                recorded_hash = frame.hash
            if directory is not None and h.seq in snapshots:
                problem = _check_snapshot(directory, keyring, state, head)
                if problem:
                    return VerifyReport(count, head, h.seq, problem)
    except CorruptionError as exc:
        return VerifyReport(count, head, exc.seq, f"{exc.kind}: {exc}")
    if log.torn_tail is not None:
        seq, where = log.torn_tail
        return VerifyReport(count, head, seq, f"torn tail: record cut short in {where}")
    end = head.seq if head else 0
    if recorded:
        seq, expected = recorded
        if recorded_hash is None:
            return VerifyReport(
                count,
                head,
                end + 1,
                f"missing records: the log ends at seq {end}, before the recorded head {seq}",
            )
        if recorded_hash != expected:
            return VerifyReport(
                count, head, seq, f"rewritten history: record {seq} differs from the recorded head"
            )
    keyless = _mount_without_key(state, keyring, created)
    if keyless:
        return VerifyReport(count, head, *keyless)
    if directory is None:
        return VerifyReport(count, head)
    index_problem = _check_index(directory, keyring, indexed, end)
    if index_problem:
        return VerifyReport(count, head, *index_problem)
    beyond = sorted(s for s in snapshots if s > end)
    if beyond:
        return VerifyReport(
            count,
            head,
            end + 1,
            f"missing records: the log ends at seq {end} but a snapshot stands at seq {beyond[0]}",
        )
    return VerifyReport(count, head)


def _mount_without_key(
    state: StoreState, keyring: Keyring, created: dict[str, int]
) -> tuple[int, str] | None:
    """A live mount whose data key is not in the keyring (a keyring restored from a
    backup older than the mount): its values can never be read."""
    for mount in state.mounts.sorted():
        if mount.type != "system" and mount.id not in keyring.mounts:
            return (
                created.get(mount.id, 0),
                f"the live mount '{mount.path}' has no data key in the keyring "
                "(was the keyring restored from an older backup?)",
            )
    return None


def _check_snapshot(directory: Path, keyring: Keyring, state: StoreState, head: Head) -> str:
    try:
        snapshot = read_snapshot(directory, keyring, head.seq)
    except ShreddedError:
        return ""  # a section of an unmounted mount: unreadable by design
    except HsmUnavailableError as exc:
        return f"snapshot at seq {head.seq} could not be checked ({exc})"
    except Exception:
        return f"damaged snapshot at seq {head.seq}"
    if snapshot.head != head or snapshot.state != state:
        return f"snapshot at seq {head.seq} does not match the log"
    return ""


def _check_index(
    directory: Path, keyring: Keyring, indexed: IndexWriter, end: int
) -> tuple[int, str] | None:
    """The first seq where the saved version index and the log disagree, and how."""
    saved = VersionIndex.load(directory, keyring.audit_key)
    if saved is None:
        return None
    if saved.covered > end:
        return (
            end + 1,
            f"missing records: the log ends at seq {end} "
            f"but the version index covers seq {saved.covered}",
        )
    try:
        mine = sorted(saved.entries())
    except RunDamaged as exc:
        return 0, f"damaged version index ({exc}); a writer asked about the past rebuilds it"
    theirs = sorted(e for e in indexed.index.entries() if entry_seq(e) <= saved.covered)
    if mine == theirs:
        return None
    differ = set(mine) ^ set(theirs)  # empty if only some entry is there twice
    bad = differ or {a for a, b in zip(mine, theirs, strict=False) if a != b} or {mine[-1]}
    return min(map(entry_seq, bad)), "the version index does not match the log"
