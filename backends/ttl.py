"""Durations as Vault takes them: seconds, or Go-style strings such as ``1h30m``."""

from __future__ import annotations

import re

from backends.errors import InvalidRequestError

SYSTEM_DEFAULT_TTL = 30 * 24 * 3600  # 30 days, Vault's default and maximum lease
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(value: object) -> int:
    """Whole seconds of ``value`` (an int, ``"90"``, ``"1h"``, ``"1h30m"``)."""
    if isinstance(value, bool):
        raise InvalidRequestError(f"invalid duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise InvalidRequestError(f"invalid duration: {value!r}")
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise InvalidRequestError(f"invalid duration: {text!r}")
    return int(total)
