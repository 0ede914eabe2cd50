"""The audit devices of a store, as the Core writes them: files of one JSON line per event.

A device is enabled by an event (``audit.enabled``) and writes every event from its
``since`` on, rendered from the log (``projections.audit_device``) once the event is
durable and before the request that caused it is answered, by whichever process appends
(a server, or an embedded command). The file is its own bookmark: its last line names the
last seq written, so a restarted server or the next command goes on from the next one,
and a device enabled with an earlier ``since`` back-fills from there. A line cut short (a
crash, a full disk) is cut off and written again.

The file is opened for every write, so a file moved away or a directory made read-only is
seen at once; a new file is filled from ``since``. As Vault, a request is answered only
if at least one enabled device wrote; if none could, it is answered 500 and the next ones
are refused before they are served until one can again, which first writes, from the log,
everything it missed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from backends.errors import AuditFailedError
from eventstore.files import write_all
from eventstore.record import NO_HINT
from projections.audit_device import EntryRenderer, entry_line
from projections.events import decode
from projections.state import AuditDevice
from projections.store import Store

CHUNK = 1000  # entries rendered and written at once (a back-fill writes many chunks)
_TAIL = 64 * 1024  # bytes read at a time, backwards, to find a file's last line


class _Unreadable(Exception):
    """A device's file does not end as one of its files does."""


@dataclass
class _File:
    """A device's file as this process last left it."""

    device: AuditDevice
    ident: tuple[int, int, int] | None = None  # (st_dev, st_ino, st_size) after our write
    next_seq: int = 0

    @property
    def path(self) -> str:
        return self.device.options.get("file_path", "")

    def first_seq(self) -> int:
        return self.device.since or self.device.enabled


class AuditDevices:
    """The enabled devices of one store. Every method is called under ``store.lock``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # The first request catches up (a device may have missed what others appended),
        # and so does every request after a failure, before it is served.
        self.behind = store.writable
        self._files: dict[tuple[str, int], _File] = {}  # by device path and enabling seq
        self._renderer: EntryRenderer | None = None
        self._hint = NO_HINT  # the log's hint for record ``self._renderer.seq``
        self._batch: tuple[int, list[bytes]] = (0, [])  # the lines last rendered, from seq

    @property
    def enabled(self) -> bool:
        """Whether there is any device to write (asked for every request: cheap)."""
        return bool(self._files or self.store.state.audit_devices)

    def catch_up(self) -> None:
        """Write everything the log holds, before a request is served; a request is
        refused (``AuditFailedError``) while no device can."""
        if self.enabled:
            self.store.flush()
            self.write(self.store.head.seq)
        self.behind = False

    def write(self, through: int) -> None:
        """Write every event up to ``through`` (durable already) to every device enabled
        by then; ``AuditFailedError`` if none could."""
        devices = self.store.state.audit_devices.values()
        self._files = {
            (d.path, d.enabled): self._files.get((d.path, d.enabled)) or _File(d)
            for d in devices
            if d.enabled <= through
        }
        failures = []
        for file in self._files.values():
            try:
                self._bring_up(file, through)
            except (OSError, _Unreadable) as exc:
                file.ident = None  # its end is read again next time
                failures.append(_failure(file, exc))
        if failures and len(failures) == len(self._files):
            self.behind = True
            raise AuditFailedError(
                "; ".join(failures) + "; requests are refused until an audit device can write"
            )
        self.behind = False
        state = self.store.state
        ready = self._renderer is not None and self._renderer.seq == through
        if self._files and state.seq == through and not ready:
            # Ready for the next request's events without replaying the log to get here.
            self._renderer, self._hint = EntryRenderer(state), self.store.head_hint

    def _bring_up(self, file: _File, through: int) -> None:
        fd = os.open(file.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino, st.st_size) != file.ident:  # not as we left it
                file.next_seq = self._resume(fd, st.st_size, file)
            while file.next_seq <= through:
                end = min(through, file.next_seq + CHUNK - 1)
                data = b"".join(self._lines(file.next_seq, end))
                file.ident = None
                write_all(fd, data)
                file.next_seq = end + 1
            st = os.fstat(fd)
            file.ident = (st.st_dev, st.st_ino, st.st_size)
        finally:
            os.close(fd)

    def _resume(self, fd: int, size: int, file: _File) -> int:
        """The seq to write next: after the file's last line, from ``since`` at least."""
        line, whole = _last_line(fd, size)
        if whole < size:  # a line cut short is no entry: written again
            os.ftruncate(fd, whole)
        if not whole:
            return file.first_seq()
        try:
            seq = json.loads(line)["seq"]
        except (ValueError, KeyError, TypeError):
            raise _Unreadable("its last line is not an audit entry") from None
        if not isinstance(seq, int) or seq > self.store.head.seq:
            raise _Unreadable(f"its last line is not an entry of this store (seq {seq!r})")
        return max(seq + 1, file.first_seq())

    def _lines(self, start: int, end: int) -> list[bytes]:
        """The lines of seqs ``start`` to ``end``, rendered once for every device."""
        first, lines = self._batch
        if first == start and len(lines) == end - start + 1:
            return lines
        renderer, hint = self._renderer, self._hint
        if renderer is None or renderer.seq != start - 1:
            # A device back-filling, or resuming elsewhere than the others: a replay.
            renderer, hint = EntryRenderer(self.store.state_at(start - 1)), NO_HINT
        records = self.store.log.records(start - 1, hint) if hint else self.store.log.records(start)
        lines = []
        for record in records:
            if record.seq < start:
                continue
            lines.append(entry_line(renderer.entry(decode(record))))
            hint = record.hint
            if record.seq >= end:
                break
        if len(lines) != end - start + 1:
            raise _Unreadable(f"the log holds no record {start + len(lines)} yet")
        self._renderer, self._hint, self._batch = renderer, hint, (start, lines)
        return lines


def _last_line(fd: int, size: int) -> tuple[bytes, int]:
    """The file's last whole line (without its newline) and where whole lines end."""
    data, pos = b"", size
    while pos > 0:
        step = min(_TAIL, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        end = data.rfind(b"\n")
        if end < 0:
            continue
        begin = data.rfind(b"\n", 0, end)
        if begin >= 0 or pos == 0:
            return data[begin + 1 : end], pos + end + 1
    return b"", 0


def _failure(file: _File, exc: BaseException) -> str:
    """Why a device could not write, on one line (its path, never a value)."""
    reason = str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
    return f'audit device "{file.device.path}" failed: cannot write {file.path} ({reason})'
