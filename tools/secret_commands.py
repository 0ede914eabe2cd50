"""``vault read`` and ``vault write``: what they print, shared by the full CLI (``tools.cli``)
and the entry point's plain path (``tools.quick``), neither of which Typer is needed for."""

from __future__ import annotations

from tools.client import CommandFailed, call, parse_data
from tools.output import secret_json, secret_table, text


def read_secret(path: str, field: str = "", format: str = "table", at: str = "") -> None:
    """``vault read``: the secret at a path, now or as it stood at ``at``."""
    if format not in ("table", "json"):
        raise CommandFailed(f"Invalid output format: {format}", 1)
    response = call("read", path, at=at, error_prefix=f"Error reading {path}")
    if response.data is None:
        raise CommandFailed(f"No value found at {path}", 1)
    if field:
        if field not in response.data:
            raise CommandFailed(f"Field {field} not present in secret", 1)
        print(text(response.data[field]))
    elif format == "json":
        print(secret_json(response))
    else:
        print(secret_table(response))


def write_secret(path: str, data: list[str]) -> None:
    """``vault write``: key=value pairs (or @file.json, or JSON on stdin with -) at a path."""
    values = parse_data(data)
    call("write", path, values, error_prefix=f"Error writing data to {path}")
    print(f"Success! Data written to: {path}")
