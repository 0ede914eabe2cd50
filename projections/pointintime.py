"""The state as of any seq or time: the nearest usable snapshot, then replay up to it."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from eventstore import CorruptionError, FileLog, Frame, Head, Keyring
from projections.events import decode
from projections.snapshot import latest_snapshot
from projections.state import MountData, StoreState, apply


@dataclass(frozen=True, slots=True)
class Rebuilt:
    state: StoreState
    head: Head | None  # the last record folded in; None for an empty log
    snapshot_seq: int  # the snapshot replay started from, 0 if none
    head_at: tuple[str, int] | None = None  # (segment, offset) where the head record starts


def rebuild(log: FileLog, directory: Path, keyring: Keyring, until: int | None = None) -> Rebuilt:
    """The state after record ``until`` (or the whole log), from the nearest snapshot.

    A snapshot counts only if the log still holds the record it names, with the same hash.
    """
    snapshot = latest_snapshot(directory, keyring, until)
    if snapshot is not None:
        frames = log.frames(snapshot.head.seq, at=snapshot.at)
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
            return _fold(
                log, frames, snapshot.state, snapshot.head, until, snapshot.head.seq, snapshot.at
            )
    return _fold(log, log.frames(1), StoreState(), None, until, 0, None)


def _fold(
    log: FileLog,
    frames: Iterator[Frame],
    state: StoreState,
    head: Head | None,
    until: int | None,
    snapshot_seq: int,
    head_at: tuple[str, int] | None,
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
        head_at = (last.segment, last.offset)
    return Rebuilt(state, head, snapshot_seq, head_at)


def _values_from_log(log: FileLog, mount_id: str, until: int) -> dict[str, bytes]:
    """A mount's values after record ``until``, replayed from the log alone."""
    state = _fold(log, log.frames(1), StoreState(), None, until, 0, None).state
    return dict(state.data[mount_id])


def seq_at_time(log: FileLog, nanos: int) -> int:
    """The last seq whose record was appended at or before ``nanos`` (0 if none).

    Headers are plaintext, so this reads no ciphertext; timestamps never go backwards.
    """
    seqs, times = [], []
    for frame in log.frames(1):
        seqs.append(frame.header.seq)
        times.append(frame.header.timestamp)
    index = bisect.bisect_right(times, nanos)
    return seqs[index - 1] if index else 0
