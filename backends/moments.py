"""Moments in a store's life: ``at`` of a request (a seq, a time, an age) and audit bounds."""

from __future__ import annotations

import time
from datetime import datetime

from backends.errors import InvalidRequestError
from backends.ttl import parse_duration
from projections.audit import rfc3339
from projections.store import Store

NANOS = 1_000_000_000


def parse_time(value: str) -> int:
    """Unix nanoseconds of an RFC 3339 time, or of now minus an age like ``2h``/``7d``."""
    try:
        return time.time_ns() - parse_duration(value) * NANOS
    except InvalidRequestError as exc:
        if "too long" in str(exc):
            raise
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"invalid time {value!r}: use RFC 3339 or an age (2h)") from None
    if moment.tzinfo is None:
        raise InvalidRequestError(f"time {value!r} needs a zone (Z or +hh:mm)")
    return int(moment.timestamp() * NANOS)


def resolve_at(store: Store, at: str) -> int:
    """The seq ``at`` names: a seq, or the last seq at a time (RFC 3339 or an age); a
    moment outside the store's life is refused with what is known of it."""
    head = store.head.seq
    if at.isascii() and at.isdigit():
        seq = int(at)
        if seq > head:
            raise InvalidRequestError(f"seq {seq} is past the head ({head})")
        if seq == 0:
            raise InvalidRequestError("the store did not exist yet at seq 0")
        return seq
    nanos = parse_time(at)
    if nanos > time.time_ns():
        raise InvalidRequestError(f"{rfc3339(nanos)} is in the future")
    seq = store.seq_at_time(nanos)
    if seq == 0:
        raise InvalidRequestError(f"the store did not exist yet at {rfc3339(max(nanos, 0))}")
    return seq
