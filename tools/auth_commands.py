"""``vault login``, ``vault auth enable|list|disable|tune|help`` and Vault 0.5's ``vault
auth TOKEN``, as OpenBao 2.7.2's CLI prints them; and ``register``, which adds every
command of issue 10 (these, ``token``, ``policy``, ``operator init|unseal|seal`` and the
0.5 names) to the ``vault`` app.

Where bao names itself ("bao login", BAO_TOKEN, "returned from OpenBao") this ``vault``
says vault, VAULT_TOKEN and Vault, as HashiCorp's does. A token or password is printed
only where bao prints one (the login's table), and never echoed from an argument.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from backends import Response
from tools import client
from tools.client import CommandFailed
from tools.commands import columns, go_json, go_text
from tools.go_cli import (
    GO_FALSE,
    GO_TRUE,
    Args,
    Field,
    Format,
    GoCommand,
    NotATerminal,
    arguments,
    call,
    check_format,
    flag_map,
    go_duration,
    go_duration_text,
    go_int,
    go_maps,
    go_quote,
    go_wrap,
    output_field,
    output_secret,
    read_hidden,
)
from tools.output import escape
from tools.policy_commands import policies, policy_app, policy_delete, policy_write
from tools.remote import HttpTransport
from tools.seal_commands import operator_seal, operator_unseal
from tools.token_commands import token_app, token_create, token_lookup, token_renew, token_revoke

TOKEN_FILE = ".vault-token"  # in the home directory, as Vault's own token helper keeps it
NO_SERVER = (
    "Error authenticating: the embedded store has no logins (it acts for you as root); "
    "set VAULT_ADDR to log in to a server"
)


LEGACY_LOGIN = "login"  # the hidden subcommand `vault auth TOKEN` runs


class AuthGroup(typer.core.TyperGroup):
    """``vault auth``: a subcommand (enable, list, disable, tune, help), or else Vault
    0.5's ``vault auth TOKEN`` / ``vault auth -method=userpass username=U``, a login."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [LEGACY_LOGIN, *args]
        return super().parse_args(ctx, args)


auth_app = typer.Typer(
    cls=AuthGroup, no_args_is_help=True, help="Enable, list, tune, disable auth methods."
)

# ---- login -------------------------------------------------------------------------------

_TOKEN_PROMPT_FAILED = (
    "An error occurred attempting to ask for a token. The raw error message is shown "
    "below, but usually this is because you attempted to pipe a value into the command "
    "or you are executing outside of a terminal (tty). If you want to pipe the value, "
    'pass "-" as the argument to read from stdin. The raw error was: '
)
USERPASS_HELP = """\
Usage: vault login -method=userpass [CONFIG K=V...]

  The userpass auth method allows users to authenticate using Vault's
  internal user database.

  Authenticate as "sally":

      $ vault login -method=userpass username=sally
      Password (will be hidden):

  Authenticate as "bob":

      $ vault login -method=userpass username=bob password=password

Configuration:

  password=<string>
      Password to use for authentication. If not provided, the CLI will prompt
      for this on stdin.

  username=<string>
      Username to use for authentication."""
TOKEN_HELP = """\
Usage: vault login TOKEN [CONFIG K=V...]

  The token auth method allows logging in directly with a token. This
  can be a token from the "token-create" command or API. There are no
  configuration options for this auth method.

  Authenticate using a token:

      $ vault login 96ddf4bc-d217-f3ba-f9bd-017055595017

  Authenticate but do not lookup information about the token:

      $ vault login token=96ddf4bc-d217-f3ba-f9bd-017055595017 lookup=false

  This token usually comes from a different source such as the API or via the
  built-in "vault token create" command.

Configuration:

  token=<string>
      The token to use for authentication. This is usually provided directly
      via the "vault login" command.

  lookup=<bool>
      Perform a lookup of the token's metadata and policies."""
METHOD_HELP = {"token": TOKEN_HELP, "userpass": USERPASS_HELP}


def _login_config(args: list[str]) -> dict[str, str]:
    """``K=V`` arguments (``K=@file``, ``K=-`` for stdin). A bad one is named by its
    position, never echoed: it may be a password."""
    config: dict[str, str] = {}
    for position, arg in enumerate(args, start=1):
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise CommandFailed(
                f"Error parsing configuration: invalid key/value pair (argument {position}): "
                "format must be key=value",
                1,
            )
        if value == "-":
            value = sys.stdin.read()
        elif value.startswith("@"):
            value = client.parse_data([f"{key}={value}"])[key]
        config[key] = value
    return config


@contextlib.contextmanager
def _sending_token(token: str) -> Iterator[None]:
    """The requests in this block carry ``token`` (none when empty), not the configured
    one: a login is made with the credentials it is given."""
    sender = client.transport()
    if not isinstance(sender, HttpTransport):
        raise CommandFailed(NO_SERVER, 2)
    saved, sender.token = sender.token, token
    try:
        yield
    finally:
        sender.token = saved


def _token_login(config: dict[str, str]) -> Response:
    token = config.get("token")
    if token is None:
        try:
            token = read_hidden("Token (will be hidden): ", sys.stderr)
        except (NotATerminal, OSError) as exc:
            raise CommandFailed(
                f"Error authenticating: {_TOKEN_PROMPT_FAILED}{escape(str(exc))}", 2, escaped=True
            ) from None
    token = token.strip()
    if not token:
        raise CommandFailed(
            "Error authenticating: a token must be passed to auth, please view the help for "
            "more information",
            2,
        )
    lookup = config.get("lookup", "true").strip()
    if lookup not in GO_TRUE + GO_FALSE:
        raise CommandFailed(
            f'Error authenticating: Failed to parse "lookup" as boolean: strconv.ParseBool: '
            f'parsing "{lookup}": invalid syntax',
            2,
        )
    if lookup in GO_FALSE:  # taken on trust: nothing is known of it but itself
        return Response(auth={"client_token": token}, request_id="")
    with _sending_token(token):
        found = call(
            "read",
            "auth/token/lookup-self",
            error_prefix="Error authenticating: error looking up token",
        )
    data = found.data or {}
    policies = data.get("policies") or None
    auth = {
        "client_token": data.get("id", ""),
        "accessor": data.get("accessor", ""),
        "policies": policies,
        "token_policies": policies,
        "metadata": data.get("meta"),
        "lease_duration": int(data.get("ttl") or 0),
        "renewable": bool(data.get("renewable")),
    }
    return Response(auth=auth, request_id="")


def _userpass_login(config: dict[str, str], mount: str) -> Response:
    username = config.get("username", "")
    if not username:
        raise CommandFailed("Error authenticating: 'username' must be specified", 2)
    password = config.get("password", "")
    if not password:
        try:
            password = read_hidden("Password (will be hidden): ", sys.stderr)
        except (NotATerminal, OSError) as exc:
            raise CommandFailed(f"Error authenticating: {exc}", 2) from None
    mount = (config.get("mount") or mount).strip("/")
    with _sending_token(""):
        return call(
            "write",
            f"auth/{mount}/login/{username}",
            {"password": password},
            error_prefix="Error authenticating",
        )


def store_token(token: str) -> None:
    """``~/.vault-token``, mode 0600 from the moment it exists, replaced whole."""
    path = Path.home() / TOKEN_FILE
    temporary = path.with_name(TOKEN_FILE + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def login(
    args: Annotated[
        list[str] | None, typer.Argument(metavar="[TOKEN] [K=V...]", show_default=False)
    ] = None,
    method: Annotated[str, typer.Option(help="token or userpass.")] = "token",
    path: Annotated[str, typer.Option(help="The auth method's mount (default: METHOD).")] = "",
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not keep the token.")] = False,
    no_print: Annotated[bool, typer.Option("--no-print", help="Print nothing.")] = False,
    token_only: Annotated[
        bool, typer.Option("--token-only", help="Print the token alone; do not keep it.")
    ] = False,
    field: Field = "",
    format: Format = "table",
) -> None:
    """Authenticate: with a token, or a method's credentials; keep the token in
    ~/.vault-token for later commands."""
    check_format(format)
    if not os.environ.get("VAULT_ADDR"):
        raise CommandFailed(NO_SERVER, 2)
    if no_store and no_print:
        raise CommandFailed("-no-store and -no-print cannot be used together", 1)
    if token_only:
        no_store, field = True, "token"
    chosen = method.strip("/") or "token"
    if chosen not in METHOD_HELP:
        raise CommandFailed(
            go_wrap(
                f'Unknown auth method: {escape(chosen)}. Use "vault auth list" to see the '
                "complete list of auth methods. Additionally, some auth methods are only "
                "available via the HTTP API."
            ),
            1,
            escaped=True,
        )
    given = list(args or [])
    if chosen == "token" and given and "=" not in given[0]:
        given[0] = f"token={given[0]}"
    config = _login_config(given)
    secret = _token_login(config) if chosen == "token" else _userpass_login(config, path or chosen)
    if secret.auth is None:
        raise CommandFailed(
            go_wrap(
                "Vault returned a secret, but the secret has no authentication information "
                "attached. This should never happen and is likely a bug."
            ),
            2,
            escaped=True,
        )
    if not no_store:
        try:
            store_token(str(secret.auth.get("client_token") or ""))
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            print(f"Error storing token: {reason}", file=sys.stderr)
            kept = "Authentication was successful, but the token was not persisted. The "
            kept += "resulting token is shown below for your records."
            print(go_wrap(kept) + "\n", file=sys.stderr)
            output_secret(secret, format)
            raise typer.Exit(2) from None
        if os.environ.get("VAULT_TOKEN"):
            warning = (
                "WARNING! The VAULT_TOKEN environment variable is set! The value of this "
                "variable will take precedence; if this is unwanted please unset VAULT_TOKEN "
                "or update its value accordingly."
            )
            print(go_wrap(warning) + "\n", file=sys.stderr)
    elif not token_only:
        warning = (
            "The token was not stored in token helper. Set the VAULT_TOKEN environment "
            "variable or pass the token below with each request to Vault."
        )
        print(go_wrap(warning) + "\n", file=sys.stderr)
    if no_print:
        return
    if field:
        output_field(secret, field, format)
        return
    if format == "table":
        success = (
            "Success! You are now authenticated. The token information displayed below is "
            'already stored in the token helper. You do NOT need to run "vault login" again. '
            "Future Vault requests will automatically use this token."
        )
        print(go_wrap(success) + "\n")
    output_secret(secret, format)


# ---- auth methods ------------------------------------------------------------------------


def _mount_path(path: str) -> str:
    return path.strip().strip("/") + "/"


@auth_app.command("enable", cls=GoCommand)
def auth_enable(
    args: Annotated[list[str] | None, typer.Argument(metavar="TYPE", show_default=False)] = None,
    path: Annotated[str, typer.Option(help="Mount point (default: TYPE).")] = "",
    description: Annotated[str, typer.Option(help="Human-friendly description.")] = "",
    default_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 1h.")] = None,
    max_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 24h.")] = None,
    local: Annotated[bool, typer.Option(help="Not replicated.")] = False,
    seal_wrap: Annotated[bool, typer.Option(help="Seal-wrapped storage.")] = False,
    token_type: Annotated[str | None, typer.Option(help="Tokens it issues.")] = None,
    options: Annotated[list[str] | None, typer.Option(help="K=V (repeatable).")] = None,
    version: Annotated[str, typer.Option(help="Plugin version.")] = "0",
) -> None:
    """Enable an auth method at a path."""
    (raw_type,) = arguments(args, 1)
    method = raw_type.strip()
    mount = _mount_path(path or method)
    config: dict[str, Any] = {
        "default_lease_ttl": go_duration_text(go_duration("default-lease-ttl", default_lease_ttl)),
        "max_lease_ttl": go_duration_text(go_duration("max-lease-ttl", max_lease_ttl)),
        "force_no_cache": False,
    }
    if token_type is not None:
        config["token_type"] = token_type
    chosen = flag_map("options", options)
    if go_int("version", version) > 0:
        chosen["version"] = str(go_int("version", version))
    data: dict[str, Any] = {
        "type": method,
        "description": description,
        "config": config,
        "local": local,
        "seal_wrap": seal_wrap,
        "external_entropy_access": False,
        "options": chosen or None,
    }
    call(
        "write",
        f"sys/auth/{mount.rstrip('/')}",
        data,
        error_prefix=f"Error enabling {method} auth",
        method="POST",
    )
    print(f"Success! Enabled {method} auth method at: {mount}")


def _auth_mount_json(info: dict[str, Any]) -> dict[str, Any]:
    """One auth mount as Go's ``api.AuthMount`` marshals it."""
    config = info.get("config") or {}
    shown: dict[str, Any] = {
        "default_lease_ttl": int(config.get("default_lease_ttl") or 0),
        "max_lease_ttl": int(config.get("max_lease_ttl") or 0),
        "force_no_cache": bool(config.get("force_no_cache")),
    }
    for key in (
        "plugin_name",
        "audit_non_hmac_request_keys",
        "audit_non_hmac_response_keys",
        "listing_visibility",
        "passthrough_request_headers",
        "allowed_response_headers",
        "token_type",
    ):
        if config.get(key):
            shown[key] = config[key]
    return {
        "uuid": info.get("uuid", ""),
        "type": info.get("type", ""),
        "description": info.get("description", ""),
        "accessor": info.get("accessor", ""),
        "config": shown,
        "options": go_maps(info.get("options")),
        "local": bool(info.get("local")),
        "seal_wrap": bool(info.get("seal_wrap")),
        "external_entropy_access": bool(info.get("external_entropy_access")),
        "plugin_version": info.get("plugin_version", ""),
        "running_plugin_version": info.get("running_plugin_version", ""),
        "running_sha256": info.get("running_sha256", ""),
        "deprecation_status": info.get("deprecation_status", ""),
    }


def _ttl_cell(seconds: Any) -> str:
    return str(seconds) if seconds else "system"


@auth_app.command("list", cls=GoCommand)
def auth_list(
    args: Args = None,
    detailed: Annotated[bool, typer.Option(help="Every field of each method.")] = False,
    format: Format = "table",
) -> None:
    """List the enabled auth methods."""
    check_format(format)
    arguments(args, 0)
    response = call("read", "sys/auth", error_prefix="Error listing enabled authentications")
    mounts = {
        path: info for path, info in sorted((response.data or {}).items()) if isinstance(info, dict)
    }
    if format == "json":
        print(go_json({path: _auth_mount_json(info) for path, info in mounts.items()}))
        return
    if not detailed:
        rows = [("Path", "Type", "Accessor", "Description", "Version")]
        for path, info in mounts.items():
            row = (
                path,
                info.get("type", ""),
                info.get("accessor", ""),
                info.get("description", ""),
            )
            rows.append((*row, info.get("plugin_version", "")))
        print(columns(rows))
        return
    heading = (
        "Path",
        "Plugin",
        "Accessor",
        "Default TTL",
        "Max TTL",
        "Token Type",
        "Replication",
        "Seal Wrap",
        "External Entropy Access",
        "Options",
        "Description",
        "UUID",
        "Version",
        "Running Version",
        "Running SHA256",
        "Deprecation Status",
    )
    detail: list[tuple[str, ...]] = [heading]
    for path, info in mounts.items():
        config = info.get("config") or {}
        detail.append(
            (
                path,
                info.get("type", ""),
                info.get("accessor", ""),
                _ttl_cell(config.get("default_lease_ttl")),
                _ttl_cell(config.get("max_lease_ttl")),
                str(config.get("token_type", "")),
                "local" if info.get("local") else "replicated",
                go_text(bool(info.get("seal_wrap"))),
                go_text(bool(info.get("external_entropy_access"))),
                go_text(info.get("options") or {}),
                info.get("description", ""),
                info.get("uuid", ""),
                info.get("plugin_version", ""),
                info.get("running_plugin_version", ""),
                info.get("running_sha256", ""),
                info.get("deprecation_status", ""),
            )
        )
    print(columns(detail))


@auth_app.command("disable", cls=GoCommand)
def auth_disable(
    args: Annotated[list[str] | None, typer.Argument(metavar="PATH", show_default=False)] = None,
) -> None:
    """Disable the auth method at a path (the tokens it issued are revoked)."""
    (raw_path,) = arguments(args, 1)
    mount = _mount_path(raw_path)
    call(
        "delete",
        f"sys/auth/{mount.rstrip('/')}",
        error_prefix=f"Error disabling auth method at {mount}",
    )
    print(f"Success! Disabled the auth method (if it existed) at: {mount}")


@auth_app.command("tune", cls=GoCommand)
def auth_tune(
    args: Annotated[list[str] | None, typer.Argument(metavar="PATH", show_default=False)] = None,
    default_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 1h.")] = None,
    max_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 24h.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    token_type: Annotated[str | None, typer.Option(help="Tokens it issues.")] = None,
) -> None:
    """Change an auth method's lease TTLs or description."""
    (raw_path,) = arguments(args, 1)
    mount = _mount_path(raw_path)
    data: dict[str, Any] = {}
    for key, flag, raw in (
        ("default_lease_ttl", "default-lease-ttl", default_lease_ttl),
        ("max_lease_ttl", "max-lease-ttl", max_lease_ttl),
    ):
        if raw is not None:
            data[key] = go_duration_text(go_duration(flag, raw))
    if description is not None:
        data["description"] = description
    if token_type is not None:
        data["token_type"] = token_type
    call(
        "write",
        f"sys/mounts/auth/{mount.rstrip('/')}/tune",
        data,
        error_prefix=f"Error tuning auth method {mount}",
        method="POST",
    )
    print(f"Success! Tuned the auth method at: {mount}")


@auth_app.command("help", cls=GoCommand)
def auth_help(
    args: Annotated[
        list[str] | None, typer.Argument(metavar="TYPE|PATH", show_default=False)
    ] = None,
) -> None:
    """How to log in with an auth method, by its type or its path."""
    (raw,) = arguments(args, 1)
    method = raw.strip()
    if method not in METHOD_HELP:
        listed = call("read", "sys/auth", error_prefix="Error listing auth methods").data or {}
        mount = _mount_path(method)
        info = listed.get(mount)
        if not isinstance(info, dict):
            raise CommandFailed(f"No auth method available on the server at {go_quote(mount)}", 1)
        method = str(info.get("type", ""))
        if method not in METHOD_HELP:
            raise CommandFailed(
                go_wrap(
                    "No method-specific CLI handler available for auth method "
                    + escape(go_quote(raw))
                ),
                2,
                escaped=True,
            )
    print(METHOD_HELP[method])


auth_app.command(LEGACY_LOGIN, cls=GoCommand, hidden=True)(login)


# ---- the vault app -----------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add these commands to the ``vault`` app (``operator init|unseal|seal`` joined the
    ``operator`` group when this module was imported)."""
    app.add_typer(token_app, name="token")
    app.add_typer(policy_app, name="policy")
    app.add_typer(auth_app, name="auth")
    app.command("login", cls=GoCommand)(login)
    # Vault 0.5's names, printing what today's commands print.
    for name, command, today in (
        ("unseal", operator_unseal, "operator unseal"),
        ("seal", operator_seal, "operator seal"),
        ("token-create", token_create, "token create"),
        ("token-lookup", token_lookup, "token lookup"),
        ("token-renew", token_renew, "token renew"),
        ("token-revoke", token_revoke, "token revoke"),
        ("policy-write", policy_write, "policy write"),
        ("policy-delete", policy_delete, "policy delete"),
        ("policies", policies, "policy list, or policy read NAME"),
        ("auth-enable", auth_enable, "auth enable"),
        ("auth-disable", auth_disable, "auth disable"),
    ):
        app.command(name, cls=GoCommand, help=f"Vault 0.5's name for: vault {today}.")(command)
