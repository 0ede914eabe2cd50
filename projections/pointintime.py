"""The state as of any seq or time: the nearest usable snapshot, then replay up to it."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from eventstore import CorruptionError, Frame, Head, Keyring, LogReader
from projections.events import decode
from projections.progress import counted
from projections.snapshot import latest_snapshot
from projections.state import MountData, StoreState, apply


@dataclass(frozen=True, slots=True)
class Rebuilt:
    state: StoreState
    head: Head | None  # the last record folded in; None for an empty log
    snapshot_seq: int  # the snapshot replay started from, 0 if none
    head_hint: int = 0  # the log's hint for the head record


def rebuild(
    log: LogReader, directory: Path | None, keyring: Keyring, until: int | None = None
) -> Rebuilt:
    """The state after record ``until`` (or the whole log), from the nearest snapshot in
    ``directory`` (None: a store without snapshots).

    A snapshot counts only if the log still holds the record it names, with the same hash.
    """
    snapshot = latest_snapshot(directory, keyring, until) if directory is not None else None
    if snapshot is not None:
        frames = log.frames(snapshot.head.seq, snapshot.hint)
        try:
            first = next(frames, None)
        except CorruptionError:  # the position it names is wrong: the snapshot is not used
            first = None
        matches = first is not None and (first.header.seq, first.hash) == (
            snapshot.head.seq,
            snapshot.head.hash,
        )
        if matches:
            for mount_id, values in snapshot.state.data.items():
                if isinstance(values, MountData):  # if its section proves damaged: the log
                    values.fallback = partial(_values_from_log, log, mount_id, snapshot.head.seq)
            start = snapshot.head.seq
            frames = iter(counted(frames, "replaying", lambda: _expected(log, until, start)))
            return _fold(
                log, frames, snapshot.state, snapshot.head, until, snapshot.head.seq, snapshot.hint
            )
    frames = iter(counted(log.frames(1), "replaying", lambda: _expected(log, until, 0)))
    return _fold(log, frames, StoreState(), None, until, 0, 0)


def _expected(log: LogReader, until: int | None, start: int) -> int:
    """Records a replay from ``start`` will fold, as far as is known now (0: unknown)."""
    end = until if until is not None else log.head.seq
    return max(end - start, 0)


def _fold(
    log: LogReader,
    frames: Iterator[Frame],
    state: StoreState,
    head: Head | None,
    until: int | None,
    snapshot_seq: int,
    head_hint: int,
) -> Rebuilt:
    last = None
    open_frame = log.open_frame
    for frame in frames:
        if until is not None and frame.header.seq > until:
            break
        apply(state, decode(open_frame(frame)))
        last = frame
    if last is not None:
        head = Head(last.header.seq, last.hash, last.header.timestamp)
        head_hint = last.hint
    return Rebuilt(state, head, snapshot_seq, head_hint)


def _values_from_log(log: LogReader, mount_id: str, until: int) -> dict[str, bytes]:
    """A mount's values after record ``until``, replayed from the log alone."""
    state = _fold(log, log.frames(1), StoreState(), None, until, 0, 0).state
    return dict(state.data[mount_id])


def seq_at_time(log: LogReader, nanos: int) -> int:
    """The last seq whose record was appended at or before ``nanos`` (0 if none).

    Headers are plaintext, so this reads no ciphertext; timestamps never go backwards.
    """
    seqs, times = [], []
    for frame in log.frames(1):
        seqs.append(frame.header.seq)
        times.append(frame.header.timestamp)
    index = bisect.bisect_right(times, nanos)
    return seqs[index - 1] if index else 0
