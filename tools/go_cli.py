"""How Vault's Go CLI takes flags and prints secrets, for the commands of issue 10.

Flags as Go's flag package takes them: ``-renewable=false``, ``-policy=a,b``, and a bad
one refused as Go refuses it (exit 1). A secret with its ``auth`` block as Vault's
``OutputSecret`` prints it: a table with the token's rows, or the JSON of Go's structs,
or one ``-field`` raw; its warnings on stderr. Prose wrapped at 78 columns as Vault wraps
it. A secret asked for at the terminal, without echo.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import textwrap
from typing import Annotated, Any, TextIO

import typer
from typer._click.exceptions import BadOptionUsage, NoSuchOption

from backends import InvalidRequestError, Response
from backends.ttl import parse_duration
from tools import client
from tools.client import CommandFailed
from tools.commands import (
    go_json,
    go_quote,
    go_text,
    secret_table,
)
from tools.output import escape

# A refusal is Vault's "Error making API request" (exit 2); warnings are printed here.
call = functools.partial(client.call, vault_errors=True, exit_code=2, print_warnings=False)
Format = Annotated[str, typer.Option(help="table or json.")]
Field = Annotated[str, typer.Option(help="Print only this field, raw.")]
Args = Annotated[list[str] | None, typer.Argument(show_default=False)]

# ---- Go's flags --------------------------------------------------------------------------


class GoCommand(typer.core.TyperCommand):
    """A command whose flags behave as Go's flag package's: a boolean takes ``=false``,
    and a flag it does not know or that lacks its value is told as Go tells it."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, _go_booleans(self, args))
        except NoSuchOption as exc:
            flag = exc.option_name.lstrip("-").partition("=")[0]
            raise CommandFailed(f"flag provided but not defined: -{flag}", 1) from None
        except BadOptionUsage as exc:
            flag = exc.option_name.lstrip("-")
            raise CommandFailed(f"flag needs an argument: -{flag}", 1) from None


GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # what Go's strconv.ParseBool takes
GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _go_booleans(command: typer.core.TyperCommand, args: list[str]) -> list[str]:
    """``--flag=true`` / ``--flag=false`` of a boolean flag as click takes them."""
    flags: dict[str, tuple[str, str]] = {}
    for param in command.params:
        if getattr(param, "is_bool_flag", False):
            secondary = getattr(param, "secondary_opts", None) or [""]
            for name in param.opts:
                flags[name] = (param.opts[0], secondary[0])
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        name, sep, value = arg.partition("=")
        if not sep or name not in flags:
            out.append(arg)
        elif value in GO_TRUE:
            out.append(flags[name][0])
        elif value in GO_FALSE:
            out += [flags[name][1]] if flags[name][1] else []  # a flag false by default
        else:
            flag = name.lstrip("-")
            raise CommandFailed(
                f'invalid boolean value "{value}" for -{flag}: strconv.ParseBool: parsing '
                f'"{value}": invalid syntax',
                1,
            )
    return out


def go_int(flag: str, raw: str) -> int:
    try:
        return int(raw, 0)
    except ValueError:
        with contextlib.suppress(ValueError):
            return int(raw, 10)
    raise CommandFailed(
        f'invalid value "{raw}" for flag -{flag}: strconv.ParseInt: parsing "{raw}": '
        "invalid syntax",
        1,
    )


def go_duration(flag: str, raw: str | None) -> int:
    """A duration flag's seconds (``90``, ``1h30m``), refused as Go refuses a bad one."""
    if raw is None or raw.strip() == "":
        return 0
    try:
        return parse_duration(raw.strip())
    except InvalidRequestError:
        raise CommandFailed(
            f'invalid value "{raw}" for flag -{flag}: {_duration_error(raw.strip())}', 1
        ) from None


def _duration_error(text: str) -> str:
    """What Go's ``time.ParseDuration`` says of a duration it cannot read."""
    whole, rest = go_quote(text), text.lstrip("+-")
    while rest:
        number = re.match(r"\d*(\.\d*)?", rest)
        if number is None or number.group() in ("", "."):
            break
        rest = rest[number.end() :]
        unit = re.match(r"[^\d.]*", rest)
        name = unit.group() if unit else ""
        if not name:
            return f"time: missing unit in duration {whole}"
        if name not in ("ns", "us", "µs", "μs", "ms", "s", "m", "h", "d"):
            return f"time: unknown unit {go_quote(name)} in duration {whole}"
        rest = rest[len(name) :]
    return f"time: invalid duration {whole}"


def go_duration_text(seconds: int) -> str:
    """Go's ``Duration.String()``: ``0s``, ``30s``, ``10m0s``, ``1h0m0s``."""
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def flag_list(values: list[str] | None) -> list[str]:
    """A repeatable flag's values, each whole (bao sends ``-policy=a,b`` as one name)."""
    return [value.strip() for value in values or [] if value.strip()]


def flag_map(flag: str, values: list[str] | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, item = value.partition("=")
        if not sep:
            raise CommandFailed(
                f'invalid value "{value}" for flag -{flag}: missing = in KV pair: '
                f"{go_quote(value)}",
                1,
            )
        pairs[key] = item
    return pairs


def arguments(args: list[str] | None, low: int, high: int | None = None) -> list[str]:
    """The positional arguments, refused as bao refuses too few or too many."""
    given = list(args or [])
    high = low if high is None else high
    expected = str(low) if low == high else f"{low}-{high}"
    if len(given) < low:
        raise CommandFailed(f"Not enough arguments (expected {expected}, got {len(given)})", 1)
    if len(given) > high:
        raise CommandFailed(f"Too many arguments (expected {expected}, got {len(given)})", 1)
    return given


def check_format(format: str) -> None:
    if format not in ("table", "json"):
        raise CommandFailed(f"Invalid output format: {format}", 1)


# ---- how Vault prints a secret with auth -----------------------------------------------


def go_wrap(text: str, pad: int = 0) -> str:
    """Vault's ``wrapAtLength``: words wrapped at 78 columns (less ``pad``), never split."""
    lines = textwrap.wrap(text, width=78 - pad, break_long_words=False, break_on_hyphens=False)
    return "\n".join(" " * pad + line for line in lines)


def go_maps(value: Any) -> Any:
    """A decoded JSON value with its maps' keys sorted, as Go marshals a map."""
    if isinstance(value, dict):
        return {key: go_maps(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [go_maps(item) for item in value]
    return value


def _auth_struct(auth: dict[str, Any]) -> dict[str, Any]:
    """An ``auth`` block as Go's ``api.SecretAuth`` marshals it: its fields, its order."""
    return {
        "client_token": auth.get("client_token", ""),
        "accessor": auth.get("accessor", ""),
        "policies": auth.get("policies"),
        "token_policies": auth.get("token_policies"),
        "identity_policies": auth.get("identity_policies"),
        "metadata": go_maps(auth.get("metadata")),
        "orphan": bool(auth.get("orphan")),
        "entity_id": auth.get("entity_id", ""),
        "lease_duration": int(auth.get("lease_duration") or 0),
        "renewable": bool(auth.get("renewable")),
        "mfa_requirement": auth.get("mfa_requirement"),
    }


def secret_json(response: Response) -> str:
    body: dict[str, Any] = {
        "request_id": response.request_id,
        "lease_id": response.lease_id,
        "lease_duration": response.lease_duration,
        "renewable": response.renewable,
        "data": go_maps(response.data),
        "warnings": list(response.warnings) or None,
    }
    if response.auth is not None:
        body["auth"] = _auth_struct(response.auth)
    return go_json(body)


def print_warnings(response: Response) -> None:
    if not response.warnings:
        return
    print(
        go_wrap("WARNING! The following warnings were returned from Vault:") + "\n", file=sys.stderr
    )
    for warning in response.warnings:
        print(go_wrap(f"* {escape(warning)}", pad=2) + "\n", file=sys.stderr)


def output_secret(response: Response, format: str) -> None:
    """A secret as ``OutputSecret`` prints it; in a table its warnings go to stderr."""
    if format == "json":
        print(secret_json(response))
        return
    print_warnings(response)
    table = secret_table(response)
    if table:
        print(table)


def _raw_value(response: Response, field: str) -> Any:
    """Go's ``RawField``: an auth's own names, else a data key (None: not there)."""
    auth = response.auth
    if auth is not None:
        named = {
            "token": "client_token",
            "token_accessor": "accessor",
            "token_duration": "lease_duration",
            "token_renewable": "renewable",
            "token_policies": "token_policies",
            "policies": "policies",
        }
        if field in named:
            return auth.get(named[field])
    elif field == "refresh_interval":
        return response.lease_duration
    return (response.data or {}).get(field)


def output_field(response: Response, field: str, format: str) -> None:
    """One field, raw (no newline), as ``-field`` prints it."""
    value = _raw_value(response, field)
    if value is None:
        raise CommandFailed(f"Field {go_quote(field)} not present in secret", 1)
    if format == "json":
        sys.stdout.write(go_json(value))
        return
    print_warnings(response)
    sys.stdout.write(go_text(value))


# ---- hidden input ------------------------------------------------------------------------


class NotATerminal(Exception):
    """Standard input is not a terminal, so a secret cannot be asked for."""


def read_hidden(prompt: str, stream: TextIO) -> str:
    """A line typed at the terminal without echo, after ``prompt`` on ``stream`` (echo is
    off before the prompt shows, so nothing typed after it is ever echoed)."""
    try:
        fd = sys.stdin.fileno()
        interactive = os.isatty(fd)
    except (AttributeError, ValueError, OSError):
        interactive = False
    if not interactive:
        stream.write(prompt + "\n")
        stream.flush()
        raise NotATerminal("file descriptor 0 is not a terminal")
    import termios

    before = termios.tcgetattr(fd)
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        stream.write(prompt)
        stream.flush()
        line = sys.stdin.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)
        stream.write("\n")
        stream.flush()
    return line.rstrip("\r\n")
