"""Durations as Vault takes them: seconds, or Go-style strings such as ``1h30m``."""

from __future__ import annotations

import re

from backends.errors import InvalidRequestError

SYSTEM_DEFAULT_TTL = 30 * 24 * 3600  # 30 days, Vault's default and maximum lease
MAX_DURATION = (2**63 - 1) // 1_000_000_000  # seconds: Go's time.Duration, as in Vault
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(value: object) -> int:
    """Whole seconds of ``value`` (an int, ``"90"``, ``"1h"``, ``"1h30m"``), at most
    ``MAX_DURATION``."""
    seconds = _seconds(value)
    if seconds > MAX_DURATION:
        raise InvalidRequestError(f"invalid duration: {_short(value)} is too long")
    return seconds


def _short(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def _seconds(value: object) -> int:
    if isinstance(value, bool):
        raise InvalidRequestError(f"invalid duration: {value!r}")
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_DURATION:  # also NaN and infinities
            raise InvalidRequestError(f"invalid duration: {_short(value)}")
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
        raise InvalidRequestError(f"invalid duration: {_short(text)}")
    if not total <= MAX_DURATION:  # also an infinity from an endless number
        raise InvalidRequestError(f"invalid duration: {_short(text)} is too long")
    return int(total)


def lease_settings(data: dict[str, object]) -> dict[str, str]:
    """Vault 0.5's ``config/lease`` of a backend: ``lease`` and ``lease_max``, checked."""
    if not data.get("lease") or not data.get("lease_max"):
        raise InvalidRequestError("both lease and lease_max are required")
    if parse_duration(data["lease"]) > parse_duration(data["lease_max"]):
        raise InvalidRequestError("lease cannot be longer than lease_max")
    return {"lease": str(data["lease"]), "lease_max": str(data["lease_max"])}


def bounded_ttls(
    default_ttl: int, max_ttl: int, requested: int = 0, requested_max: int = 0
) -> tuple[int, int]:
    """``(ttl, max_ttl)`` of a new lease: the backend's wish bounded by the mount's limits."""
    limit = max_ttl or SYSTEM_DEFAULT_TTL
    if requested_max:
        limit = min(limit, requested_max)
    ttl = requested or default_ttl or SYSTEM_DEFAULT_TTL
    return min(ttl, limit), limit


def human_duration(seconds: int) -> str:
    """Seconds as Vault prints a duration: ``1h``, ``59m59s``, ``768h``, ``1h1m``."""
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h" if hours else ""
    if minutes or (hours and secs):
        text += f"{minutes}m"
    if secs or not text:
        text += f"{secs}s"
    # Go's form is 1h0m0s; Vault trims its "0s" after minutes and its "0m" after hours.
    return text.replace("h0m", "h") if text.endswith("s") else text
