"""A sorted run of the version index: its entries sorted by tag, then seq, in checksummed
blocks, so a lookup reads a small directory and a block or two, not the whole index.

``versions.run``: a header (magic, the store's keyed run tag, the seq and position the run
covers up to, the entry count, the directory's crc32c, then the header's own crc32c), a
directory with the first tag and the crc32c of every block, then the blocks of ``BLOCK``
entries. The file is written whole and replaced atomically; every part a lookup reads is
checked first, so a damaged run raises ``RunDamaged`` rather than answer wrong.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from google_crc32c import value as crc32c

from eventstore.files import write_atomically

RUN_FILE = "versions.run"
BLOCK = 128  # entries per block: 5,120 bytes
ENTRY = struct.Struct(">16sQQ")  # tag, seq, the log's hint for the record
_WHERE = struct.Struct(">QQ")
_MAGIC = b"VLVRUN02"  # 01 kept file positions; such runs are passed over and rebuilt
# magic, run tag, covered seq, its hint, entry count, crc32c of the directory
_HEADER = struct.Struct(">8s16sQQQI")
_HEADER_CRC = struct.Struct(">I")
_DIRECTORY = struct.Struct(">16sI")  # a block's first tag and crc32c


class RunDamaged(Exception):
    """A part of the sorted run fails its checksum."""


class SortedRun:
    """An open ``versions.run``: its header and directory, its blocks read when needed."""

    def __init__(
        self,
        path: Path,
        covered: int,
        covered_hint: int,
        count: int,
        first_tags: list[bytes],
        crcs: list[int],
    ) -> None:
        self.path, self.covered, self.count = path, covered, count
        self.covered_hint = covered_hint
        self._first_tags, self._crcs = first_tags, crcs
        self._blocks_at = _HEADER.size + _HEADER_CRC.size + len(crcs) * _DIRECTORY.size

    @classmethod
    def open(cls, directory: Path, run_tag: bytes) -> SortedRun | None:
        """The run in ``directory``, or None if there is none. Raises ``RunDamaged``, also
        for a run whose tag is not ``run_tag`` (another store's)."""
        path = directory / RUN_FILE
        try:
            with open(path, "rb") as f:
                head = f.read(_HEADER.size + _HEADER_CRC.size)
                if len(head) != _HEADER.size + _HEADER_CRC.size:
                    raise RunDamaged("header cut short")
                (header_crc,) = _HEADER_CRC.unpack_from(head, _HEADER.size)
                if crc32c(head[: _HEADER.size]) != header_crc:
                    raise RunDamaged("header checksum")
                magic, tag, covered, hint, count, dir_crc = _HEADER.unpack_from(head)
                if magic != _MAGIC or tag != run_tag:
                    raise RunDamaged("not a sorted run of this store")
                blocks = -(-count // BLOCK)
                listing = f.read(blocks * _DIRECTORY.size)
        except FileNotFoundError:
            return None
        if crc32c(listing) != dir_crc:
            raise RunDamaged("directory checksum")
        first_tags, crcs = [], []
        for tag, crc in _DIRECTORY.iter_unpack(listing):
            first_tags.append(tag)
            crcs.append(crc)
        return cls(path, covered, hint, count, first_tags, crcs)

    def _blocks(self, f: BinaryIO, first: int, last: int) -> Iterator[bytes]:
        """Blocks ``first`` to ``last`` (inclusive), each checked against its crc."""
        size = BLOCK * ENTRY.size
        for block in range(first, last + 1):
            data = os.pread(f.fileno(), size, self._blocks_at + block * size)  # the last: less
            if crc32c(data) != self._crcs[block]:
                raise RunDamaged(f"block {block} checksum")
            yield data

    def find(self, tag: bytes, seq: int) -> list[tuple[int, int]]:
        """``(seq, hint)`` of every entry with ``tag`` up to ``seq``."""
        tags = self._first_tags
        first = max(bisect.bisect_left(tags, tag) - 1, 0)
        last = bisect.bisect_right(tags, tag) - 1
        found: list[tuple[int, int]] = []
        if last < 0:
            return found
        with open(self.path, "rb") as f:
            for data in self._blocks(f, first, last):
                found += tagged(data, tag, seq)
        return found

    def entries(self) -> list[bytes]:
        """Every entry, in order, every block checked."""
        out: list[bytes] = []
        with open(self.path, "rb") as f:
            for data in self._blocks(f, 0, len(self._crcs) - 1):
                out.extend(data[pos : pos + ENTRY.size] for pos in range(0, len(data), ENTRY.size))
        return out


def tagged(
    data: bytes | bytearray, tag: bytes, seq: int, end: int | None = None
) -> list[tuple[int, int]]:
    """``(seq, hint)`` of the entries in ``data`` (up to ``end``) with ``tag``,
    up to ``seq``; one tag's entries are in seq order, wherever they are."""
    end = len(data) if end is None else end
    found = []
    pos = data.find(tag, 0, end)
    while pos != -1:
        if pos % ENTRY.size == 0:
            at, hint = _WHERE.unpack_from(data, pos + 16)
            if at > seq:
                break
            found.append((at, hint))
        pos = data.find(tag, pos + 1, end)
    return found


def entry_seq(entry: bytes | bytearray) -> int:
    """The seq of the record an entry is about."""
    seq: int = _WHERE.unpack_from(entry, 16)[0]
    return seq


def write_run(
    directory: Path,
    run_tag: bytes,
    entries: list[bytes],
    covered: int,
    covered_hint: int,
) -> None:
    """Write ``entries`` (sorted) as the run covering the records up to ``covered``."""
    size = BLOCK * ENTRY.size
    body = b"".join(entries)
    blocks = [body[pos : pos + size] for pos in range(0, len(body), size)]
    listing = b"".join(_DIRECTORY.pack(block[:16], crc32c(block)) for block in blocks)
    header = _HEADER.pack(_MAGIC, run_tag, covered, covered_hint, len(entries), crc32c(listing))
    data = header + _HEADER_CRC.pack(crc32c(header)) + listing + body
    write_atomically(directory / RUN_FILE, data)
