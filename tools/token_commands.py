"""``vault token create|lookup|renew|revoke|capabilities`` as OpenBao 2.7.2's CLI prints
them: the token's table (its only printing, at create), lookups, refusals."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tools.client import CommandFailed
from tools.commands import go_json
from tools.go_cli import (
    Args,
    Field,
    Format,
    GoCommand,
    arguments,
    call,
    check_format,
    flag_list,
    flag_map,
    go_duration,
    go_duration_text,
    go_int,
    output_field,
    output_secret,
)

token_app = typer.Typer(no_args_is_help=True, help="Create, look up, renew, revoke tokens.")


@token_app.command("create", cls=GoCommand)
def token_create(
    args: Args = None,
    id: Annotated[str, typer.Option(help="The token itself (root only).")] = "",
    display_name: Annotated[str, typer.Option(help="A name for the token.")] = "",
    ttl: Annotated[str | None, typer.Option(help="Initial TTL, e.g. 1h.")] = None,
    explicit_max_ttl: Annotated[str | None, typer.Option(help="A TTL it never passes.")] = None,
    period: Annotated[str | None, typer.Option(help="Renewable forever by this period.")] = None,
    use_limit: Annotated[str, typer.Option(help="Number of uses (0: unlimited).")] = "0",
    orphan: Annotated[bool, typer.Option(help="No parent: outlives its creator.")] = False,
    no_default_policy: Annotated[bool, typer.Option(help="Without `default`.")] = False,
    renewable: Annotated[bool, typer.Option(help="Whether it can be renewed.")] = True,
    policy: Annotated[list[str] | None, typer.Option(help="A policy (repeatable).")] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="K=V (repeatable).")] = None,
    type: Annotated[str, typer.Option(help="service (the only kind issued).")] = "service",
    entity_alias: Annotated[str, typer.Option(help="Unused: no identity store.")] = "",
    field: Field = "",
    format: Format = "table",
) -> None:
    """Create a token, a child of yours unless -orphan."""
    arguments(args, 0)
    check_format(format)
    data: dict[str, Any] = {}
    policies = flag_list(policy)
    if policies:
        data["policies"] = policies
    meta = flag_map("metadata", metadata)
    if meta:
        data["meta"] = meta
    if id:
        data["id"] = id
    data.update(
        ttl=go_duration_text(go_duration("ttl", ttl)),
        explicit_max_ttl=go_duration_text(go_duration("explicit-max-ttl", explicit_max_ttl)),
        period=go_duration_text(go_duration("period", period)),
    )
    if orphan:
        data["no_parent"] = True
    if no_default_policy:
        data["no_default_policy"] = True
    data.update(
        display_name=display_name,
        num_uses=go_int("use-limit", use_limit),
        renewable=renewable and type != "batch",
        type=type,
        entity_alias=entity_alias,
    )
    response = call(
        "write", "auth/token/create", data, error_prefix="Error creating token", method="POST"
    )
    if field:
        output_field(response, field, format)
    else:
        output_secret(response, format)


@token_app.command("lookup", cls=GoCommand)
def token_lookup(
    args: Annotated[list[str] | None, typer.Argument(metavar="[TOKEN]", show_default=False)] = None,
    accessor: Annotated[bool, typer.Option(help="The argument is an accessor.")] = False,
    field: Field = "",
    format: Format = "table",
) -> None:
    """Show a token (yours when none is given): policies, TTL, metadata."""
    check_format(format)
    given = list(args or [])
    if accessor and len(given) != 1:
        many = "Not enough" if not given else "Too many"
        raise CommandFailed(f"{many} arguments with -accessor (expected 1, got {len(given)})", 1)
    given = arguments(given, 0, 1)
    prefix = "Error looking up token"
    if not given:
        response = call("read", "auth/token/lookup-self", error_prefix=prefix)
    elif accessor:
        data = {"accessor": given[0].strip()}
        response = call(
            "write", "auth/token/lookup-accessor", data, error_prefix=prefix, method="POST"
        )
    else:
        data = {"token": given[0].strip()}
        response = call("write", "auth/token/lookup", data, error_prefix=prefix, method="POST")
    if field:
        output_field(response, field, format)
    else:
        output_secret(response, format)


@token_app.command("renew", cls=GoCommand)
def token_renew(
    args: Annotated[list[str] | None, typer.Argument(metavar="[TOKEN]", show_default=False)] = None,
    accessor: Annotated[bool, typer.Option(help="The argument is an accessor.")] = False,
    increment: Annotated[str | None, typer.Option(help="Requested extension, e.g. 1h.")] = None,
    format: Format = "table",
) -> None:
    """Renew a token (yours when none is given), extending its TTL."""
    check_format(format)
    given = arguments(args, 0, 1)
    seconds = go_duration("increment", increment)
    prefix = "Error renewing token"
    if not given:
        response = call(
            "write", "auth/token/renew-self", {"increment": seconds}, error_prefix=prefix
        )
    elif accessor:
        data = {"accessor": given[0].strip(), "increment": seconds}
        response = call("write", "auth/token/renew-accessor", data, error_prefix=prefix)
    else:
        data = {"increment": seconds, "token": given[0].strip()}
        response = call("write", "auth/token/renew", data, error_prefix=prefix)
    output_secret(response, format)


@token_app.command("revoke", cls=GoCommand)
def token_revoke(
    args: Annotated[list[str] | None, typer.Argument(metavar="[TOKEN]", show_default=False)] = None,
    accessor: Annotated[bool, typer.Option(help="The argument is an accessor.")] = False,
    own: Annotated[bool, typer.Option("--self", help="Revoke your own token.")] = False,
    mode: Annotated[str, typer.Option(help="orphan: leave its children; path: a prefix.")] = "",
) -> None:
    """Revoke a token, its children and its leases (or with -mode=orphan the token alone)."""
    given = list(args or [])
    if own and given:
        raise CommandFailed(f"Too many arguments with -self (expected 0, got {len(given)})", 1)
    if not own and len(given) != 1:
        many = "Too many" if given else "Not enough"
        raise CommandFailed(f"{many} arguments (expected 1 or -self, got {len(given)})", 1)
    if mode not in ("", "orphan", "path"):
        raise CommandFailed(f"Invalid mode: {mode}", 1)
    if own and accessor:
        raise CommandFailed("Cannot use -self with -accessor!", 1)
    if own and mode:
        raise CommandFailed("Cannot use -self with -mode!", 1)
    if accessor and mode:
        raise CommandFailed(f"Cannot use -accessor with -mode={mode}!", 1)
    target = given[0].strip() if given else ""
    prefix = "Error revoking token"
    if own:
        call("write", "auth/token/revoke-self", error_prefix=prefix)
    elif accessor:
        call("write", "auth/token/revoke-accessor", {"accessor": target}, error_prefix=prefix)
    elif mode == "orphan":
        call("write", "auth/token/revoke-orphan", {"token": target}, error_prefix=prefix)
    elif mode == "path":
        call("write", f"sys/leases/revoke-prefix/{target}", error_prefix=prefix)
    else:
        call("write", "auth/token/revoke", {"token": target}, error_prefix=prefix)
    print("Success! Revoked token (if it existed)")


@token_app.command("capabilities", cls=GoCommand)
def token_capabilities(
    args: Annotated[
        list[str] | None, typer.Argument(metavar="[TOKEN] PATH", show_default=False)
    ] = None,
    format: Format = "table",
) -> None:
    """What a token (yours when none is given) may do at a path."""
    check_format(format)
    given = arguments(args, 1, 2)
    path = given[-1]
    prefix = "Error listing capabilities"
    if len(given) == 2:
        data = {"path": path, "token": given[0].strip()}
        response = call("write", "sys/capabilities", data, error_prefix=prefix, method="POST")
    else:
        data = {"path": path}
        response = call("write", "sys/capabilities-self", data, error_prefix=prefix, method="POST")
    answer = response.data or {}
    found = answer.get("capabilities", answer.get(path))
    if not isinstance(found, list):
        raise CommandFailed("No capabilities found", 1)
    if format == "json":
        print(go_json(found))
    else:
        print(", ".join(sorted(str(c) for c in found)))
