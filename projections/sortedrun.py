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
from eventstore.log import segment_first_seq, segment_name

RUN_FILE = "versions.run"
BLOCK = 128  # entries per block: 5,120 bytes
ENTRY = struct.Struct(">16sQQQ")  # tag, seq, first seq of the segment, offset
_WHERE = struct.Struct(">QQQ")
_MAGIC = b"VLVRUN01"
# magic, run tag, covered seq, its segment, offset, entry count, crc32c of the directory
_HEADER = struct.Struct(">8s16sQQQQI")
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
        covered_at: tuple[str, int],
        count: int,
        first_tags: list[bytes],
        crcs: list[int],
    ) -> None:
        self.path, self.covered, self.covered_at, self.count = path, covered, covered_at, count
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
                magic, tag, covered, first, offset, count, dir_crc = _HEADER.unpack_from(head)
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
        return cls(path, covered, (segment_name(first), offset), count, first_tags, crcs)

    def _blocks(self, f: BinaryIO, first: int, last: int) -> Iterator[bytes]:
        """Blocks ``first`` to ``last`` (inclusive), each checked against its crc."""
        size = BLOCK * ENTRY.size
        for block in range(first, last + 1):
            data = os.pread(f.fileno(), size, self._blocks_at + block * size)  # the last: less
            if crc32c(data) != self._crcs[block]:
                raise RunDamaged(f"block {block} checksum")
            yield data

    def find(self, tag: bytes, seq: int) -> list[tuple[int, tuple[str, int]]]:
        """``(seq, (segment, offset))`` of every entry with ``tag`` up to ``seq``."""
        tags = self._first_tags
        first = max(bisect.bisect_left(tags, tag) - 1, 0)
        last = bisect.bisect_right(tags, tag) - 1
        found: list[tuple[int, tuple[str, int]]] = []
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
) -> list[tuple[int, tuple[str, int]]]:
    """``(seq, (segment, offset))`` of the entries in ``data`` (up to ``end``) with ``tag``,
    up to ``seq``; one tag's entries are in seq order, wherever they are."""
    end = len(data) if end is None else end
    found = []
    pos = data.find(tag, 0, end)
    while pos != -1:
        if pos % ENTRY.size == 0:
            at, first, offset = _WHERE.unpack_from(data, pos + 16)
            if at > seq:
                break
            found.append((at, (segment_name(first), offset)))
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
    covered_at: tuple[str, int],
) -> None:
    """Write ``entries`` (sorted) as the run covering the records up to ``covered``."""
    size = BLOCK * ENTRY.size
    body = b"".join(entries)
    blocks = [body[pos : pos + size] for pos in range(0, len(body), size)]
    listing = b"".join(_DIRECTORY.pack(block[:16], crc32c(block)) for block in blocks)
    segment, offset = covered_at
    first = segment_first_seq(segment)
    header = _HEADER.pack(_MAGIC, run_tag, covered, first, offset, len(entries), crc32c(listing))
    data = header + _HEADER_CRC.pack(crc32c(header)) + listing + body
    write_atomically(directory / RUN_FILE, data)
