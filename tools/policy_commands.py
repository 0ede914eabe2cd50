"""``vault policy write|read|list|delete`` (and Vault 0.5's ``policy-write``, ``policies``)
as OpenBao 2.7.2's CLI prints them, over ``sys/policies/acl``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tools.client import CommandFailed
from tools.commands import go_json
from tools.go_cli import Args, Format, GoCommand, arguments, call, check_format, go_quote

policy_app = typer.Typer(no_args_is_help=True, help="Write, read, list, delete ACL policies.")


def _policy_name(raw: str) -> str:
    return raw.strip().lower()


@policy_app.command("write", cls=GoCommand)
def policy_write(
    args: Annotated[
        list[str] | None, typer.Argument(metavar="NAME FILE|-", show_default=False)
    ] = None,
) -> None:
    """Upload a policy (HCL or JSON) from a file, or from stdin with -."""
    raw_name, source = arguments(args, 2)
    name = _policy_name(raw_name)
    if name != raw_name:
        print(
            f"Policy name was converted from {go_quote(raw_name)} to {go_quote(name)}",
            file=sys.stderr,
        )
    source = source.strip()
    if source == "-":
        rules = sys.stdin.read()
    else:
        try:
            with open(source, encoding="utf-8") as f:
                rules = f.read()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            action = "read" if isinstance(exc, IsADirectoryError) else "open"
            what = "Error reading policy" if action == "read" else "Error opening policy file"
            raise CommandFailed(
                f"{what}: {action} {source}: {reason[:1].lower()}{reason[1:]}", 2
            ) from None
        except UnicodeDecodeError:
            raise CommandFailed(f"Error reading policy: {source} is not UTF-8 text", 2) from None
    call(
        "write",
        f"sys/policies/acl/{name}",
        {"policy": rules},
        error_prefix="Error uploading policy",
    )
    print(f"Success! Uploaded policy: {name}")


@policy_app.command("read", cls=GoCommand)
def policy_read(
    args: Annotated[list[str] | None, typer.Argument(metavar="NAME", show_default=False)] = None,
    format: Format = "table",
) -> None:
    """Print a policy's rules."""
    check_format(format)
    (raw_name,) = arguments(args, 1)
    name = _policy_name(raw_name)
    response = call(
        "read", f"sys/policies/acl/{name}", error_prefix=f"Error reading policy named {name}"
    )
    rules = (response.data or {}).get("policy") or ""
    if not rules:
        raise CommandFailed(f"No policy named: {name}", 2)
    print(go_json({"policy": rules}) if format == "json" else rules.strip())


@policy_app.command("list", cls=GoCommand)
def policy_list(args: Args = None, format: Format = "table") -> None:
    """List the policies' names."""
    check_format(format)
    arguments(args, 0)
    response = call("list", "sys/policies/acl", error_prefix="Error listing policies")
    names = [str(name) for name in (response.data or {}).get("keys") or []]
    if format == "json":
        print(go_json(names))
    elif names:
        print("\n".join(names))


@policy_app.command("delete", cls=GoCommand)
def policy_delete(
    args: Annotated[list[str] | None, typer.Argument(metavar="NAME", show_default=False)] = None,
) -> None:
    """Delete a policy (tokens that name it keep the name, and lose its rules)."""
    (raw_name,) = arguments(args, 1)
    name = _policy_name(raw_name)
    call("delete", f"sys/policies/acl/{name}", error_prefix=f"Error deleting {name}")
    print(f"Success! Deleted policy: {name}")


def policies(
    args: Annotated[list[str] | None, typer.Argument(metavar="[NAME]", show_default=False)] = None,
) -> None:
    """Vault 0.5's ``policies``: the names, or with NAME its rules."""
    given = arguments(args, 0, 1)
    if given:
        policy_read(given)
    else:
        policy_list()
