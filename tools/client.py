"""How a command reaches the store: one transport per process, one request per call, a
refusal as one line; and Vault's ``key=value`` data builder. Shared by every command."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from backends.errors import RequestError
from backends.request import Operation, Request, Response
from eventstore.errors import VaultlogError
from tools.output import escape
from tools.remote import ApiError, HttpTransport, api_error

if TYPE_CHECKING:
    from tools.transport import Transport


class CommandFailed(Exception):
    """A command could not do what was asked; ``str()`` is what to print: one line, or
    with ``escaped`` lines whose parts from elsewhere were escaped already."""

    def __init__(self, message: str, exit_code: int = 2, *, escaped: bool = False) -> None:
        super().__init__(message)
        self.exit_code, self.escaped = exit_code, escaped


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


_transport: Transport | None = None


def transport() -> Transport:
    """How this process reaches the store: over HTTP to ``VAULT_ADDR`` when it is set,
    else embedded, in-process. One per process, so a command's requests share a
    connection."""
    global _transport
    if _transport is None:
        address = os.environ.get("VAULT_ADDR")
        if address:
            _transport = HttpTransport(
                address,
                _token(),
                cacert=os.environ.get("VAULT_CACERT", ""),
                skip_verify=os.environ.get("VAULT_SKIP_VERIFY", "").lower() in ("1", "true"),
            )
        else:  # the store, the log and the projections are imported only here
            from tools.config import locate_store
            from tools.transport import EmbeddedTransport

            _transport = EmbeddedTransport(locate_store())
    return _transport


def _token() -> str:
    """``VAULT_TOKEN``, else the token ``vault login`` left in ``~/.vault-token``."""
    token = os.environ.get("VAULT_TOKEN")
    if token is not None:
        return token.strip()
    try:
        return (Path.home() / ".vault-token").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def call(
    operation: Operation,
    path: str,
    data: dict[str, Any] | None = None,
    *,
    at: str = "",
    error_prefix: str,
    exit_code: int = 1,
    vault_errors: bool = False,
    method: str = "",
    print_warnings: bool = True,
) -> Response:
    """Send one request, turning a request error into one line; warnings go to stderr
    (unless the caller prints them itself). With ``vault_errors``, a server's refusal is
    told as Vault's CLI tells it ("Error making API request", the URL, the code, each
    error), as today's commands do. ``method``: the HTTP method Vault's client uses for
    this call where it is not the operation's usual one (POST for a token create)."""
    request = Request(operation, path, data or {}, at=at)
    sender = transport()
    try:
        if method and isinstance(sender, HttpTransport):
            response = sender.handle(request, method=method)
        else:
            response = sender.handle(request)
    except (RequestError, VaultlogError) as exc:
        refusal = api_error(exc)
        if vault_errors and refusal is not None:
            raise CommandFailed(_api_message(error_prefix, refusal), 2, escaped=True) from None
        if not isinstance(exc, RequestError):
            raise
        raise CommandFailed(f"{error_prefix}: {_one_line(str(exc))}", exit_code) from None
    for warning in response.warnings if print_warnings else ():
        print(f"Warning: {warning}", file=sys.stderr)
    if response.request_id:
        return response
    return msgspec.structs.replace(response, request_id=request.request_id)


_MULTIERROR = re.compile(r"\d+ errors? occurred:\n((?:\t\* [^\x00-\x1f\x7f]*\n)+)\n")


def _one_line(message: str) -> str:
    """Go's multierror text (``1 error occurred:\\n\\t* x\\n\\n``, which Vault sends for a
    policy's refusal) as its errors, joined: ``x``."""
    found = _MULTIERROR.fullmatch(message)
    if found is None:
        return message
    return "; ".join(line.removeprefix("\t* ") for line in found.group(1).splitlines())


def _error_text(error: str) -> str:
    """An error as Vault's CLI prints it: Go's multierror format kept as it is (its
    lines are the format's, with nothing in them that could forge a line), else escaped."""
    return error if _MULTIERROR.fullmatch(error) else escape(error)


def _api_message(prefix: str, refusal: ApiError) -> str:
    errors = "\n".join(f"* {_error_text(error)}" for error in refusal.errors)
    return (
        f"{escape(prefix)}: Error making API request.\n\n"
        f"URL: {refusal.method} {escape(refusal.url)}\n"
        f"Code: {refusal.status}. Errors:\n\n{errors}"
    )


def parse_data(args: list[str]) -> dict[str, Any]:
    """Vault's key=value builder: ``k=v``, ``k=@file``, ``k=-``, ``@file.json``, ``-``."""
    data: dict[str, Any] = {}
    for position, arg in enumerate(args, start=1):
        if arg == "-":
            data.update(_json_object(sys.stdin.read(), "stdin"))
        elif arg.startswith("@"):
            data.update(_json_object(_read_file(arg[1:]), arg[1:]))
        else:
            key, sep, value = arg.partition("=")
            if not sep or not key:
                raise CommandFailed(
                    f"Error loading data: Invalid key/value pair (argument {position}): "
                    "format must be key=value",
                    1,
                )
            if value.startswith("@"):
                value = _read_file(value[1:])
            elif value.startswith("\\@"):
                value = value[1:]
            elif value == "-":
                value = sys.stdin.read()
            data[key] = value
    return data


def _read_file(name: str) -> str:
    try:
        with open(name, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise CommandFailed(
            f"Error loading data: error reading file '{name}': {reason}", 1
        ) from None


def _json_object(raw: str, source: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise CommandFailed(f"Error loading data: {source} does not hold valid JSON", 1) from None
    if not isinstance(value, dict):
        raise CommandFailed(f"Error loading data: {source} must hold a JSON object", 1)
    return value
