"""How the CLI prints: Vault 0.5's aligned columns and its JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from backends.request import Response

__all__ = ["columns", "escape", "rfc3339", "secret_json", "secret_table", "text"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape(value: str) -> str:
    """``value`` with control characters written as escapes: a newline or ESC from a
    stored path or value can never forge a row of a table or recolour a terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], value)


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows aligned in columns two spaces apart, trailing space trimmed (like columnize);
    control characters escaped."""
    rows = [[escape(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def text(value: Any) -> str:
    """A value as Vault prints it in a table: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def secret_table(response: Response) -> str:
    data = response.data or {}
    rows: list[tuple[str, str]] = [("Key", "Value")]
    lease = [
        ("lease_id", response.lease_id, bool(response.lease_id)),
        ("lease_duration", str(response.lease_duration), bool(response.lease_duration)),
        ("lease_renewable", text(response.renewable), bool(response.lease_id)),
    ]
    # A key of the secret's own named like a lease field is the user's: shown once, as theirs.
    rows += [(key, value) for key, value, shown in lease if shown and key not in data]
    rows += [(key, text(data[key])) for key in sorted(data)]
    return columns(rows)


def secret_json(response: Response) -> str:
    return json.dumps(
        {
            "lease_id": response.lease_id,
            "lease_duration": response.lease_duration,
            "renewable": response.renewable,
            "data": response.data,
            "warnings": list(response.warnings) or None,
        },
        indent="\t",
    )


def rfc3339(nanos: int) -> str:
    """A unix-nanosecond time as the trail shows it (imported when first asked for: the
    projections are not needed by a command that only talks to a server)."""
    from projections.audit import rfc3339 as as_text

    return as_text(nanos)
