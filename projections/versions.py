"""Every version of every stored value, by seq, so a point-in-time read is a binary search.

Snapshots make "the whole state as of seq S" cost the events since the nearest one; a read
of one path at S needs far less: the mount table then (a handful of mount events) and the
last write or delete of that path at or before S.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from projections.events import (
    Event,
    MountCreated,
    MountMoved,
    MountRemoved,
    SecretDeleted,
    SecretWritten,
)
from projections.state import StoreState, apply


class VersionIndex:
    """Folds events into per-path version lists and the list of mount events."""

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.seq = 0
        self._mount_events: list[Event] = []
        self._versions: dict[tuple[str, str], tuple[list[int], list[bytes | None]]] = {}
        for event in events:
            self.add(event)

    def add(self, event: Event) -> None:
        match event:
            case SecretWritten() | SecretDeleted():
                seqs, values = self._versions.setdefault((event.mount_id, event.path), ([], []))
                seqs.append(event.seq)
                values.append(event.value if isinstance(event, SecretWritten) else None)
            case MountCreated() | MountRemoved() | MountMoved():
                self._mount_events.append(event)
        self.seq = event.seq

    def mounts_at(self, seq: int) -> StoreState:
        """The mount table as it stood at ``seq``, with no values in it."""
        state = StoreState()
        for event in self._mount_events:
            if event.seq > seq:
                break
            apply(state, event)
        state.seq = seq
        return state

    def value_at(self, mount_id: str, path: str, seq: int) -> bytes | None:
        """The sealed value at ``path`` of a mount as it stood at ``seq`` (None if none)."""
        found = self._versions.get((mount_id, path))
        if found is None:
            return None
        seqs, values = found
        index = bisect.bisect_right(seqs, seq)
        return values[index - 1] if index else None
