"""Verify a whole store, record by record, with its snapshots and version index.

Checked: framing and checksums, contiguous seqs, the hash chain, authenticated decryption
under each record's key term, non-decreasing time, snapshots and the version index
matching the log, and with ``against`` that the log still extends a head written down
earlier. (A version index that does not load, its checksums failing, is used by no one,
like a missing one, and a writer rebuilds it; one that loads must match the log, and a
damaged block found in its sorted run is reported.) Values of shredded
mounts are unreadable by design and are not counted as damage: only the barrier layer of
each record is opened here.

A large file log is walked in ranges at once (``WORKERS``: one per core, two at most), cut
at snapshots: the range (a, b] starts from the state in the snapshot at a and, at b,
compares the snapshot there as the walk does at every snapshot, so each snapshot a range
starts from is checked by the range that ends at it. Joined in order, each range's first
record linked to the last of the range before, the ranges find what one walk from seq 1
finds, and report it alike. This process walks the first range; forked workers walk the
others (key material reaches them only in fork's copy of this process's memory, and goes
back in nothing they send). A worker that dies or hangs has its range walked here instead.
Where a fork is not safe or does not pay (a log in memory or PostgreSQL, another thread
running, a key in an HSM, a small log) there is one walk, in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, partial
from multiprocessing.connection import Connection
from pathlib import Path

from eventstore import (
    CorruptionError,
    FileLog,
    Frame,
    Head,
    HsmUnavailableError,
    Keyring,
    LogReader,
    ShreddedError,
)
from eventstore.interface import TornTail
from eventstore.record import check_link
from projections.events import MountCreated, decode
from projections.progress import counted, listening
from projections.snapshot import Snapshot, read_snapshot, snapshot_seqs
from projections.sortedrun import RunDamaged, entry_seq
from projections.state import StoreState, apply
from projections.versions import IndexWriter, VersionIndex

WORKERS = min(2, os.cpu_count() or 1)  # ranges walked at once, this process's included
PARALLEL_MIN_RECORDS = 20_000  # below this, forking workers costs more than it saves
WORKER_GRACE = 60.0  # seconds to wait for a worker after this process's range (or 4x that)
_TRIES = 3  # snapshots tried per cut point, nearest first, before giving the cut up
_ALIVE_EVERY = 4096  # records between a worker's looks at whether its parent still waits


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
    log: LogReader,
    keyring: Keyring,
    directory: Path | None,
    *,
    against: str | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Walk the whole store; the first problem found is reported with its seq and kind.

    ``directory`` holds the snapshots and the version index (None: a store without them).
    ``workers``: ranges walked at once (default ``WORKERS``; 1: one walk, in this process).
    Raises ``ValueError`` for a malformed ``against``.
    """
    recorded = parse_head(against) if against else None
    snapshots = snapshot_seqs(directory) if directory is not None else []
    checks = _Checks(keyring, directory, frozenset(snapshots), recorded)
    saved_index = cache(partial(_read_index, directory, keyring))
    starts = _worker_starts(log, checks, snapshots, WORKERS if workers is None else workers)
    found = None
    if starts:  # the saved index is read while the workers finish
        found = _walk_in_ranges(log, replace(checks, read=starts), list(starts), saved_index)
    if found is None:
        found = _walk_whole(log, checks)
    return _report(found, checks, saved_index)


@dataclass(frozen=True, slots=True)
class _Checks:
    """What every range checks its records against, beside the log itself."""

    keyring: Keyring
    directory: Path | None
    snapshots: frozenset[int]
    recorded: tuple[int, bytes] | None  # the head ``against`` names
    read: dict[int, Snapshot] = field(default_factory=dict)  # read already: workers' starts


@dataclass(frozen=True, slots=True)
class _Found:
    """What walking a range of the log found, small enough for a worker to send back. No
    key material: the index entries' tags are keyed hashes, as the index file holds them."""

    count: int  # records walked without a problem
    head: Head | None  # the last of them
    problem: tuple[int, str] | None  # the first met: its seq, what is wrong
    ended: bool  # the log holds no record after the range
    torn_tail: TornTail | None
    recorded_hash: bytes | None  # of the record ``against`` names, if in the range
    created: dict[str, int]  # mount id -> the seq it was created at
    entries: list[bytes]  # the version index's entries for the range's records
    keyless: list[tuple[str, str]]  # (id, path) of live mounts without a data key, at its end
    first: Frame | None = None  # a worker's first record (no ciphertext): the join checks it


_SavedIndex = tuple[int, list[bytes] | RunDamaged]  # covered, entries sorted (or the damage)


class _Walker:
    """Walks records in order from a state (empty, or a snapshot's), checking each as the
    whole walk does, and can stop after a record and go on later."""

    def __init__(
        self, log: LogReader, checks: _Checks, state: StoreState, head: Head | None
    ) -> None:
        self.log, self.checks, self.state, self.head = log, checks, state, head
        self.count = 0
        self.problem: tuple[int, str] | None = None
        self.ended = False
        self.recorded_hash: bytes | None = None
        self.created: dict[str, int] = {}
        directory = checks.directory or Path("/nonexistent")
        self.indexed = IndexWriter(directory, checks.keyring.audit_key)
        self.first: Frame | None = None

    def walk(
        self,
        frames: Iterator[Frame],
        until: int | None = None,
        *,
        shown: Callable[[], int] | None = None,
    ) -> None:
        """Walk ``frames`` through record ``until`` (None: to the end), leaving the rest in
        ``frames``; stops at the first problem. ``shown``: report progress, this many
        records expected."""
        wanted: Iterable[Frame] = frames if until is None else _through(frames, until)
        if shown is not None:
            wanted = counted(wanted, "verifying", shown)
        log, checks, state, head, count = self.log, self.checks, self.state, self.head, 0
        created, indexed, recorded = self.created, self.indexed, checks.recorded
        directory, snapshots = checks.directory, checks.snapshots
        try:
            for frame in wanted:
                h = frame.header
                if head is not None and h.timestamp < head.timestamp:
                    self.problem = (h.seq, "timestamps go backwards")
                    return
                event = decode(log.open_frame(frame))
                apply(state, event)
                if isinstance(event, MountCreated):
                    created[event.mount_id] = event.seq
                indexed.add(event, frame.hint)
                head, count = Head(h.seq, frame.hash, h.timestamp), count + 1
                if recorded and h.seq == recorded[0]:
                    self.recorded_hash = frame.hash
                if directory is not None and h.seq in snapshots:
                    problem = _check_snapshot(directory, checks, state, head)
                    if problem:
                        self.problem = (h.seq, problem)
                        return
            self.ended = head is None or head.seq != until  # the log ran out before ``until``
        except CorruptionError as exc:
            self.problem = (exc.seq, f"{exc.kind}: {exc}")
        finally:
            self.head, self.count = head, self.count + count

    def found(self) -> _Found:
        return _Found(
            self.count,
            self.head,
            self.problem,
            self.ended,
            self.log.torn_tail if self.ended else None,
            self.recorded_hash,
            self.created,
            self.indexed.index.entries() if self.checks.directory is not None else [],
            _keyless_mounts(self.state, self.checks.keyring),
            self.first,
        )


def _walk_whole(log: LogReader, checks: _Checks) -> _Found:
    """Every record from seq 1, in this process."""
    walker = _Walker(log, checks, StoreState(), None)
    walker.walk(log.frames(1), shown=lambda: log.head.seq)
    return walker.found()


# ---- in ranges at once ---------------------------------------------------------------------


def _worker_starts(
    log: LogReader, checks: _Checks, snapshots: list[int], workers: int
) -> dict[int, Snapshot]:
    """The snapshots the workers start from, by seq, if walking in ranges is safe here and
    pays; none otherwise."""
    if workers < 2 or checks.directory is None or not _may_fork(log, checks.keyring):
        return {}
    end = _records_about(log, snapshots)
    if end < PARALLEL_MIN_RECORDS:
        return {}
    starts: dict[int, Snapshot] = {}
    for candidates in cut_candidates(snapshots, end, workers):
        for seq in [s for s in candidates if s not in starts][:_TRIES]:
            try:
                starts[seq] = read_snapshot(checks.directory, checks.keyring, seq)
            except Exception:  # damaged or shredded: the next nearest
                continue
            break
    return dict(sorted(starts.items()))


def _may_fork(log: LogReader, keyring: Keyring) -> bool:
    """Whether workers may be forked: a file log (memory and PostgreSQL logs are walked
    here), no other thread (one may hold a lock a worker would wait on for ever), and no key
    in an HSM (a PKCS#11 session does not survive a fork)."""
    return (
        isinstance(log, FileLog)
        and threading.active_count() == 1
        and not keyring.hsm_labels()
        and "fork" in multiprocessing.get_all_start_methods()
    )


def _records_about(log: LogReader, snapshots: list[int]) -> int:
    """About how many records the log holds, before reading it: the head if known (a
    writer's), else past the newest snapshot by half the gap before it (snapshots fall due
    further apart as a store grows, so the gap is about how many records may follow)."""
    if len(snapshots) < 2:
        return log.head.seq
    before, newest = snapshots[-2], snapshots[-1]
    return max(log.head.seq, newest + (newest - before) // 2)


def cut_candidates(snapshots: Sequence[int], end: int, workers: int) -> list[list[int]]:
    """For each cut that splits records 1..``end`` into ``workers`` even ranges, the
    snapshot seqs before ``end``, nearest to that cut first."""
    inner = [seq for seq in snapshots if 0 < seq < end]
    return [sorted(inner, key=partial(_distance, end * n // workers)) for n in range(1, workers)]


def _distance(cut: int, seq: int) -> int:
    return abs(seq - cut)


def _walk_in_ranges(
    log: LogReader, checks: _Checks, cuts: list[int], meanwhile: Callable[[], object]
) -> _Found | None:
    """Records 1..``cuts[0]`` walked here, the range after each cut by a worker, joined in
    order; None if a worker's range was lost and could not be walked here either.
    ``meanwhile``: what this process does once its own range is walked, as workers finish."""
    ends: list[int | None] = [*cuts[1:], None]
    workers: list[_Worker] = []
    try:
        for cut, until in zip(cuts, ends, strict=True):
            workers.append(_Worker(partial(_walk_range, log, checks, checks.read[cut], until)))
    except OSError:  # no fork to be had now: one walk
        return None
    try:
        walker, frames = _Walker(log, checks, StoreState(), None), log.frames(1)
        began = time.monotonic()
        walker.walk(frames, cuts[0], shown=lambda: cuts[0])
        whole, walked_here = walker.found(), True
        grace = max(WORKER_GRACE, 4 * (time.monotonic() - began))
        if not (whole.problem or whole.ended):
            meanwhile()
        for worker, until in zip(workers, ends, strict=True):
            if whole.problem or whole.ended:
                break
            part = worker.result(grace)
            if part is not None:
                whole, walked_here = _joined(whole, part), False
            elif walked_here:  # this process's walk stands where the range starts: on through it
                walker.walk(frames, until)
                whole = walker.found()
            else:
                return None
        return whole
    finally:
        for worker in workers:
            worker.stop()


def _through(frames: Iterator[Frame], until: int) -> Iterator[Frame]:
    """``frames`` through record ``until``; the rest stay in ``frames``."""
    for frame in frames:
        yield frame
        if frame.header.seq == until:
            return


def _joined(before: _Found, after: _Found) -> _Found:
    """What ``before`` found, then a worker's range after it: its first record must name
    the last of ``before`` as the one before it, and not go back in time."""
    first, head = after.first, before.head
    if first is not None and head is not None:
        try:
            check_link(first, head.hash)
        except CorruptionError as exc:
            return replace(before, problem=(exc.seq, f"{exc.kind}: {exc}"))
        if first.header.timestamp < head.timestamp:
            return replace(before, problem=(first.header.seq, "timestamps go backwards"))
    return _Found(
        before.count + after.count,
        after.head if after.count else before.head,
        after.problem,
        after.ended,
        after.torn_tail,
        after.recorded_hash or before.recorded_hash,
        before.created | after.created,
        before.entries + after.entries,
        after.keyless,
    )


def _walk_range(log: LogReader, checks: _Checks, start: Snapshot, until: int | None) -> _Found:
    """A worker's range: the records after ``start``'s, through ``until`` (None: all)."""
    walker = _Walker(log, checks, start.state, start.head)
    walker.walk(_worker_frames(_frames_after(log, start), walker), until)
    return walker.found()


def _frames_after(log: LogReader, start: Snapshot) -> Iterator[Frame]:
    """The frames after the record a snapshot stands at: from that record, found at once by
    the snapshot's hint, when it is there (the scan then checks the link out of it); else
    scanned for from the start of its segment."""
    seq = start.head.seq
    frames = log.frames(seq, start.hint)
    try:
        first = next(frames, None)
    except CorruptionError:  # not where the hint says
        first = None
    if first is not None and (first.header.seq, first.hash) == (seq, start.head.hash):
        return frames
    return log.frames(seq + 1)


def _worker_frames(frames: Iterator[Frame], walker: _Walker) -> Iterator[Frame]:
    """A worker's ``frames``: the first is kept, without its ciphertext, for the join; and
    the worker ends if its parent is gone (a killed verify leaves no worker running)."""
    parent = multiprocessing.parent_process()
    for n, frame in enumerate(frames):
        if n == 0:
            walker.first = frame._replace(payload=b"")
        elif n % _ALIVE_EVERY == 0 and parent is not None and not parent.is_alive():
            os._exit(1)
        yield frame


def _worker_started() -> None:
    """Called first thing in every worker (a hook for tests)."""


def _serve(task: Callable[[], _Found], results: Connection) -> None:
    """A worker's life: walk its range, send back what it found. None if it failed: this
    process then walks the range itself and meets the error as a whole walk would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops its workers
    _worker_started()
    try:
        with listening(None):  # the progress bar is the parent's
            found: _Found | None = task()
    except Exception:
        found = None
    with contextlib.suppress(OSError):  # the parent is gone
        results.send(found)


class _Worker:
    """A forked process walking one range, its result coming back through a pipe."""

    def __init__(self, task: Callable[[], _Found]) -> None:
        context = multiprocessing.get_context("fork")
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_serve, args=(task, sender), daemon=True)
        try:
            self._process.start()
        finally:
            sender.close()  # the worker's end: once it exits, reading here meets end of file

    def result(self, wait: float) -> _Found | None:
        """What the worker found; None if it failed, died, or sent nothing for ``wait``
        seconds."""
        try:
            if not self._results.poll(wait):
                return None
            found: _Found | None = self._results.recv()
        except (EOFError, OSError):
            return None
        self._process.join(wait)
        return found if self._process.exitcode == 0 else None

    def stop(self) -> None:
        """End the worker if it still runs, and reap it."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._results.close()


# ---- after the walk ------------------------------------------------------------------------


def _report(
    found: _Found, checks: _Checks, saved_index: Callable[[], _SavedIndex | None]
) -> VerifyReport:
    """The verdict on a walk of the whole log: its first problem, else what the end of the
    log, the snapshots and the saved version index say."""
    count, head = found.count, found.head
    if found.problem:
        return VerifyReport(count, head, *found.problem)
    if found.torn_tail is not None:
        seq, where = found.torn_tail
        return VerifyReport(count, head, seq, f"torn tail: record cut short in {where}")
    end = head.seq if head else 0
    if checks.recorded:
        seq, expected = checks.recorded
        if found.recorded_hash is None:
            return VerifyReport(
                count,
                head,
                end + 1,
                f"missing records: the log ends at seq {end}, before the recorded head {seq}",
            )
        if found.recorded_hash != expected:
            return VerifyReport(
                count, head, seq, f"rewritten history: record {seq} differs from the recorded head"
            )
    keyless = _mount_without_key(found.keyless, found.created)
    if keyless:
        return VerifyReport(count, head, *keyless)
    if checks.directory is None:
        return VerifyReport(count, head)
    index_problem = _check_index(saved_index(), found.entries, end)
    if index_problem:
        return VerifyReport(count, head, *index_problem)
    beyond = sorted(s for s in checks.snapshots if s > end)
    if beyond:
        return VerifyReport(
            count,
            head,
            end + 1,
            f"missing records: the log ends at seq {end} but a snapshot stands at seq {beyond[0]}",
        )
    return VerifyReport(count, head)


def _keyless_mounts(state: StoreState, keyring: Keyring) -> list[tuple[str, str]]:
    """(id, path) of the live mounts whose data key is not in the keyring."""
    return [
        (mount.id, mount.path)
        for mount in state.mounts.sorted()
        if mount.type != "system" and mount.id not in keyring.mounts
    ]


def _mount_without_key(
    keyless: list[tuple[str, str]], created: dict[str, int]
) -> tuple[int, str] | None:
    """A live mount whose data key is not in the keyring (a keyring restored from a
    backup older than the mount): its values can never be read."""
    for mount_id, path in keyless:
        return (
            created.get(mount_id, 0),
            f"the live mount '{path}' has no data key in the keyring "
            "(was the keyring restored from an older backup?)",
        )
    return None


def _check_snapshot(directory: Path, checks: _Checks, state: StoreState, head: Head) -> str:
    snapshot = checks.read.get(head.seq)  # a worker's start, read before it was forked
    if snapshot is None:
        try:
            snapshot = read_snapshot(directory, checks.keyring, head.seq)
        except ShreddedError:
            return ""  # a section of an unmounted mount: unreadable by design
        except HsmUnavailableError as exc:
            return f"snapshot at seq {head.seq} could not be checked ({exc})"
        except Exception:
            return f"damaged snapshot at seq {head.seq}"
    if snapshot.head != head or snapshot.state != state:
        return f"snapshot at seq {head.seq} does not match the log"
    return ""


def _read_index(directory: Path | None, keyring: Keyring) -> _SavedIndex | None:
    """How far the saved version index covers and its entries, sorted, or the damage found
    in its sorted run; None if there is none that loads."""
    saved = VersionIndex.load(directory, keyring.audit_key) if directory is not None else None
    if saved is None:
        return None
    try:
        return saved.covered, sorted(saved.entries())
    except RunDamaged as exc:
        return saved.covered, exc


def _check_index(
    saved: _SavedIndex | None, entries: list[bytes], end: int
) -> tuple[int, str] | None:
    """The first seq where the saved version index and the log disagree, and how."""
    if saved is None:
        return None
    covered, mine = saved
    if covered > end:
        return (
            end + 1,
            f"missing records: the log ends at seq {end} "
            f"but the version index covers seq {covered}",
        )
    if isinstance(mine, RunDamaged):
        return 0, f"damaged version index ({mine}); a writer asked about the past rebuilds it"
    theirs = sorted(e for e in entries if entry_seq(e) <= covered)
    if mine == theirs:
        return None
    differ = set(mine) ^ set(theirs)  # empty if only some entry is there twice
    bad = differ or {a for a, b in zip(mine, theirs, strict=False) if a != b} or {mine[-1]}
    return min(map(entry_seq, bad)), "the version index does not match the log"
