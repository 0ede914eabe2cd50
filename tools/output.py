"""How the CLI prints: Vault 0.5's aligned columns and its JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from backends import Response
from projections.audit import rfc3339

__all__ = ["columns", "rfc3339", "secret_json", "secret_table", "text"]


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows aligned in columns two spaces apart, trailing space trimmed (like columnize)."""
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
    if response.lease_id:
        rows.append(("lease_id", response.lease_id))
    if response.lease_duration:
        rows.append(("lease_duration", str(response.lease_duration)))
    if response.lease_id:
        rows.append(("lease_renewable", text(response.renewable)))
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
