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

from tools.client import guarded
from tools.secret_commands import read_secret, write_secret

READ_FLAGS = ("field", "format", "at")


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
