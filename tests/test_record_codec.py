"""The record codec, property-tested: what ``encode`` writes, the segment scan and the
barrier key give back, and no single flipped bit goes unnoticed; the keyed HMAC beside it."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import CorruptionError, FileLog, Keyring, Record, Sealer
from eventstore.crypto import KeyedHmac
from eventstore.log import SEGMENT_MAGIC, Frame, SegmentScan
from eventstore.record import HEADER, PREFIX, VERSION, Header, encode, record_hash
from projections.events import pack
from tests.strategies import record_bodies, record_headers

KEY = bytes(range(32))
START = len(SEGMENT_MAGIC)  # where the first record of a segment begins


def opener(term: int) -> FileLog:
    """A log that only decrypts: the barrier key under ``term``, no files behind it."""
    keyring = Keyring(store_id="codec", terms={term: KEY}, term_installed={term: 0})
    return FileLog(Path("/nonexistent"), keyring)


def scan(raw: bytes, header: dict[str, Any]) -> tuple[list[Frame], SegmentScan]:
    segment = SegmentScan(
        "codec.seg",
        SEGMENT_MAGIC + raw,
        first_seq=header["seq"],
        prev_hash=header["prev_hash"],
        last=True,
    )
    return list(segment), segment


@settings(deadline=None)
@given(record_bodies, record_headers)
def test_encode_then_parse_then_decrypt_gives_the_body(body: bytes, header: dict[str, Any]) -> None:
    raw = encode(body, sealer=Sealer(KEY), **header)
    frames, segment = scan(raw, header)
    assert segment.torn_at is None
    [frame] = frames
    assert (frame.offset, frame.end) == (START, START + len(raw))
    assert frame.header == Header(VERSION, **header)
    assert frame.hash == record_hash(raw)
    record = opener(header["term"]).open_frame(frame)
    # The record keeps the opaque hint of the frame it came from (it was at=(segment, offset)).
    assert record == Record(header["seq"], header["timestamp"], header["term"], body, frame.hint)


@settings(deadline=None)
@given(st.lists(record_bodies, min_size=1, max_size=5), record_headers)
def test_records_in_a_row_chain_and_read_back(bodies: list[bytes], header: dict[str, Any]) -> None:
    header["seq"] = min(header["seq"], 2**64 - len(bodies))
    raws, prev = [], header["prev_hash"]
    for i, body in enumerate(bodies):
        raw = encode(
            body, sealer=Sealer(KEY), **{**header, "seq": header["seq"] + i, "prev_hash": prev}
        )
        raws.append(raw)
        prev = record_hash(raw)
    frames, segment = scan(b"".join(raws), header)
    assert segment.torn_at is None
    log = opener(header["term"])
    assert [log.open_frame(f).body for f in frames] == bodies
    assert [f.header.seq for f in frames] == [header["seq"] + i for i in range(len(bodies))]
    assert frames[-1].hash == prev


@settings(deadline=None, max_examples=300)
@given(record_bodies, record_headers, st.data())
def test_any_flipped_bit_is_detected(
    body: bytes, header: dict[str, Any], data: st.DataObject
) -> None:
    raw = encode(body, sealer=Sealer(KEY), **header)
    framing = (PREFIX.size + HEADER.size) * 8  # half the flips land in the length, crc, header
    bit = data.draw(
        st.one_of(st.integers(0, framing - 1), st.integers(0, len(raw) * 8 - 1)), label="bit"
    )
    damaged = bytearray(raw)
    damaged[bit // 8] ^= 0x80 >> (bit % 8)

    try:
        frames, segment = scan(bytes(damaged), header)
        log = opener(header["term"])
        for frame in frames:
            log.open_frame(frame)
    except CorruptionError as error:
        assert (error.seq, error.offset, error.segment) == (header["seq"], START, "codec.seg")
        return
    # Not reported: only fair if the flip made the length run past the end, which is what a
    # torn write looks like when the damaged record is the last thing in the file.
    length = int.from_bytes(damaged[:4], "big")
    assert bit < 32 and PREFIX.size + length > len(raw)
    assert frames == [] and segment.torn_at == START


@given(key=st.binary(max_size=200), message=st.binary(max_size=500))
def test_the_keyed_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    """``KeyedHmac`` (key blocks hashed once) gives what the standard library's HMAC gives,
    for keys shorter and longer than SHA-256's block."""
    assert KeyedHmac(key).digest(message) == hmac.digest(key, message, "sha256")


_PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=500)
@given(_PLAIN)
def test_pack_writes_the_bytes_msgpack_writes(value: object) -> None:
    """Events and values are packed with msgspec; records written before were packed by
    msgpack-python, and the two must agree byte for byte on everything either holds."""
    assert pack(value) == msgpack.packb(value, use_bin_type=True)
    assert msgpack.unpackb(pack(value), raw=False) == value
