"""The ``vault`` executable's entry point: the commands run most, in their plainest
spelling, are served without Typer.

Typer imports pydantic and turns a command's signature into parameters, about 100 ms of
every process; ``vault read PATH`` and ``vault write PATH K=V ...`` need neither. Any other
spelling (another flag, a flag whose value is its own argument, help, ``--``, data from
stdin) goes to the full CLI (``tools.cli``), whose commands run the same functions as here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from eventstore.errors import VaultlogError
from tools.client import CommandFailed, call, parse_data
from tools.output import escape, secret_json, secret_table, text

READ_FLAGS = ("field", "format", "at")


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


def guarded(command: Callable[[], int | None]) -> int:
    """Run ``command`` for its exit code; every failure it can meet is one line on stderr
    and an exit code."""
    try:
        return command() or 0
    except CommandFailed as exc:
        print(str(exc) if exc.escaped else escape(str(exc)), file=sys.stderr)
        return exc.exit_code
    except VaultlogError as exc:
        print(escape(f"Error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


def plain(args: list[str]) -> Callable[[], None] | None:
    """The command ``args`` spell, if they spell ``read`` or ``write`` plainly; else None."""
    if len(args) < 2 or args[0] not in ("read", "write"):
        return None
    if args[0] == "write":
        path, data = args[1], args[2:]
        if path.startswith("-") or any(item.startswith("-") for item in data):
            return None
        return lambda: write_secret(path, data)
    flags: dict[str, str] = {}
    paths = []
    for arg in args[1:]:
        if not arg.startswith("-"):
            paths.append(arg)
            continue
        flag, equals, value = arg.removeprefix("--" if arg.startswith("--") else "-").partition("=")
        if not equals or flag not in READ_FLAGS:
            return None
        flags[flag] = value  # the last one counts, as with Typer
    if len(paths) != 1:
        return None
    return lambda: read_secret(paths[0], **flags)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vault`` executable: every failure is one line on stderr."""
    args = sys.argv[1:] if argv is None else argv
    command = plain(args)
    if command is not None:
        sys.exit(guarded(command))
    from tools.cli import main as full

    full(args)
