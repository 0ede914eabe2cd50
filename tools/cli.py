"""The ``vault`` command: Vault's CLI, over an embedded vaultlog store or, with
``VAULT_ADDR`` set, over HTTP to a server (``vault server``)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from eventstore.errors import VaultlogError
from tools import commands
from tools.client import CommandFailed, call, parse_data
from tools.output import columns, escape, rfc3339, secret_json, secret_table, text

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="vaultlog: Vault's secret backends over an encrypted, tamper-evident event log.",
)

commands.register(app)

# Vault's flags are single-dash (-path=x); they are rewritten to --path=x before parsing.
_SINGLE_DASH = re.compile(r"^-([a-z][a-z-]+)(=.*)?$", re.DOTALL)


def vault_style_flags(args: list[str]) -> list[str]:
    """Accept Vault's ``-flag=value`` and ``-flag`` as well as ``--flag value``."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        # Every -word is a long flag here: unknown ones then fail as "--word", not as "-w".
        out.append(f"-{arg}" if _SINGLE_DASH.match(arg) else arg)
    return out


@app.command()
def init() -> None:
    """Create the store explicitly and print where its data and unseal key live."""
    if os.environ.get("VAULT_ADDR"):  # a server's store was created when it first started
        raise CommandFailed("Error initializing: Vault is already initialized", 2)
    from eventstore.keyring import KEYRING_FILE
    from tools.config import locate_store

    location = locate_store()
    if (location.directory / KEYRING_FILE).exists():
        raise CommandFailed(f"Error: a store already exists in {location.directory}", 1)
    head = call("read", "sys/vaultlog/head", error_prefix="Error")
    print(f"Initialized a new vaultlog store in {location.directory}")
    print(f"Unseal key: {location.key_source}")
    print(f"Log head: {(head.data or {})['head']}")


@app.command()
def mount(
    backend_type: Annotated[str, typer.Argument(metavar="TYPE")],
    path: Annotated[
        str | None, typer.Option(help="Mount point (default: the type's name).")
    ] = None,
    description: Annotated[str, typer.Option(help="Human-friendly description.")] = "",
    default_lease_ttl: Annotated[str, typer.Option(help="Default lease TTL, e.g. 1h.")] = "",
    max_lease_ttl: Annotated[str, typer.Option(help="Maximum lease TTL, e.g. 24h.")] = "",
) -> None:
    """Mount a secret backend at a path."""
    path = backend_type if path is None else path
    config = {"default_lease_ttl": default_lease_ttl, "max_lease_ttl": max_lease_ttl}
    data = {"type": backend_type, "description": description, "config": config}
    call("write", f"sys/mounts/{path}", data, error_prefix="Mount error", exit_code=2)
    print(f"Successfully mounted '{backend_type}' at '{path}'!")


@app.command()
def mounts(
    at: Annotated[str, typer.Option(help="As the store stood at SEQ or TIME.")] = "",
) -> None:
    """List the mounted secret backends."""
    table = call("read", "sys/mounts", at=at, error_prefix="Error reading mounts", exit_code=2)
    rows = [("Path", "Type", "Description")]
    for mount_path, info in sorted((table.data or {}).items()):
        rows.append((mount_path, info["type"], info["description"]))
    print(columns(rows))


@app.command()
def unmount(path: str) -> None:
    """Unmount a backend: its secrets are revoked and its data is deleted."""
    call("delete", f"sys/mounts/{path}", error_prefix="Unmount error", exit_code=2)
    print(f"Successfully unmounted '{path}'!")


@app.command()
def remount(source: Annotated[str, typer.Argument(metavar="FROM")], to: str) -> None:
    """Move a mounted backend to a new path, keeping its data."""
    data = {"from": source, "to": to}
    call("write", "sys/remount", data, error_prefix="Remount error", exit_code=2)
    print(f"Successfully remounted from '{source}' to '{to}'!")


@app.command()
def write(
    path: str,
    data: Annotated[list[str] | None, typer.Argument(metavar="[K=V|@FILE|-]...")] = None,
) -> None:
    """Write data (key=value pairs, @file.json, or JSON on stdin with -) to a path."""
    values = parse_data(data or [])
    call("write", path, values, error_prefix=f"Error writing data to {path}")
    print(f"Success! Data written to: {path}")


@app.command()
def read(
    path: str,
    field: Annotated[str, typer.Option(help="Print only this field's value.")] = "",
    format: Annotated[str, typer.Option(help="table or json.")] = "table",
    at: Annotated[str, typer.Option(help="As the store stood at SEQ or TIME.")] = "",
) -> None:
    """Read the secret at a path (now, or with -at as it was then)."""
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


@app.command()
def delete(path: str) -> None:
    """Delete the secret at a path."""
    call("delete", path, error_prefix=f"Error deleting '{path}'")
    print(f"Success! Deleted '{path}'")


@app.command(name="list")
def list_(
    path: str,
    at: Annotated[str, typer.Option(help="As the store stood at SEQ or TIME.")] = "",
) -> None:
    """List the keys under a path."""
    response = call("list", path, at=at, error_prefix=f"Error reading {path}")
    keys = (response.data or {}).get("keys") or []
    if not keys:
        print("No entries found", file=sys.stderr)  # Vault 0.5 exits 0 here
        return
    print("\n".join(["Keys", *map(escape, keys)]))


@app.command()
def renew(
    lease_id: str,
    increment: Annotated[str, typer.Argument(help="Requested extension, e.g. 1h.")] = "",
    format: Annotated[str, typer.Option(help="table or json.")] = "table",
) -> None:
    """Renew a lease, extending its expiry (never past its maximum TTL)."""
    data = {"lease_id": lease_id, "increment": increment}
    response = call("write", "sys/renew", data, error_prefix="Renew error")
    print(secret_json(response) if format == "json" else secret_table(response))


@app.command()
def revoke(
    lease_id: Annotated[str, typer.Argument(metavar="LEASE_ID|PREFIX")],
    prefix: Annotated[bool, typer.Option(help="Revoke every lease under the prefix.")] = False,
    force: Annotated[
        bool, typer.Option(help="With -prefix: drop leases whose revocation keeps failing.")
    ] = False,
) -> None:
    """Revoke a lease, or with -prefix every lease under a path."""
    if force and not prefix:
        raise CommandFailed("Revoke error: -force can only be used with -prefix", 1)
    route = "revoke-force" if force else "revoke-prefix" if prefix else "revoke"
    call("write", f"sys/{route}/{lease_id}", error_prefix="Revoke error")
    print(f"Key revoked with ID '{lease_id}'.")


@app.command()
def leases(
    prefix: Annotated[str, typer.Option(help="Only leases whose id starts with this.")] = "",
    at: Annotated[str, typer.Option(help="As the store stood at SEQ or TIME.")] = "",
) -> None:
    """List live leases: id, path, issued, expires, renewable, revocation status."""
    response = call("read", "sys/leases", {"prefix": prefix}, at=at, error_prefix="Error")
    found = (response.data or {}).get("leases") or []
    if not found:
        print("No leases found", file=sys.stderr)
        return
    rows = [("Lease ID", "Path", "Issued", "Expires", "Renewable", "Status")]
    for lease in found:
        status = "expired, revocation pending" if lease["expired"] else "ok"
        if lease["failures"]:
            status = f"revocation failing ({lease['failures']} attempts): {lease['last_error']}"
        rows.append(
            (
                lease["lease_id"],
                lease["path"],
                rfc3339(lease["issued"]),
                rfc3339(lease["expires"]),
                text(lease["renewable"]),
                status,
            )
        )
    print(columns(rows))


audit_app = typer.Typer(invoke_without_command=True, help="The audit trail, replayed from the log.")
app.add_typer(audit_app, name="audit")


@audit_app.callback()
def audit(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="From this RFC 3339 time or age (2h).")] = "",
    until: Annotated[str, typer.Option(help="Up to this RFC 3339 time or age.")] = "",
    path: Annotated[str, typer.Option(help="Only paths under this prefix.")] = "",
    actor: Annotated[str, typer.Option(help="Only this actor (user@host).")] = "",
    type: Annotated[str, typer.Option(help="Only this event type or family.")] = "",
    format: Annotated[str, typer.Option(help="table or json (JSON lines).")] = "table",
) -> None:
    """Who did what, where and when: seq, time, actor, operation, path, mount, lease."""
    if ctx.invoked_subcommand is not None:
        return
    if format not in ("table", "json"):
        raise CommandFailed(f"Invalid output format: {format}", 1)
    data = {"since": since, "until": until, "path": path, "actor": actor, "type": type}
    response = call("read", "sys/vaultlog/audit", data, error_prefix="Error")
    entries = (response.data or {})["entries"]
    if format == "json":
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
        return
    rows = [("Seq", "Time", "Actor", "Operation", "Path", "Mount", "Lease ID", "Detail")]
    for e in entries:
        detail = " ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()))
        row = (str(e["seq"]), rfc3339(e["time"]), e["actor"], e["operation"], e["path"])
        rows.append((*row, e["mount"], e["lease_id"], detail))
    print(columns(rows))


@audit_app.command("verify")
def audit_verify(
    against: Annotated[str, typer.Option(help="A head SEQ:HASH written down earlier.")] = "",
) -> None:
    """Check every record, the hash chain and the snapshots; print the head SEQ:HASH."""
    data = {"against": against}
    response = call("read", "sys/vaultlog/verify", data, error_prefix="Error", exit_code=2)
    report = response.data or {}
    if not report["ok"]:
        raise CommandFailed(
            f"Verification failed at seq {report['bad_seq']}: {report['problem']}", 2
        )
    print(f"Verified {report['records']} records; head {report['head']}")


@app.command("audit-hash")
def audit_hash(
    value: str,
    path: Annotated[str, typer.Option(help="A mount, or a path in it (HMACs are per mount).")] = (
        "secret/"
    ),
) -> None:
    """The audit HMAC of a value in a mount, to compare with the trail ("was it X?")."""
    response = call("write", f"sys/audit-hash/{path}", {"input": value}, error_prefix="Error")
    print((response.data or {})["hash"])


@app.command()
def history(path: str) -> None:
    """Every version of a secret: seq, time, actor, operation, value HMACs."""
    response = call("read", f"sys/vaultlog/history/{path}", error_prefix="Error")
    versions = (response.data or {})["versions"]
    if not versions:
        raise CommandFailed(f"No history found for {path}", 1)
    rows = [("Seq", "Time", "Actor", "Operation", "Value")]
    for e in versions:
        value = " ".join(f"{k}={v}" for k, v in sorted(e["value"].items())) or "-"
        rows.append((str(e["seq"]), rfc3339(e["time"]), e["actor"], e["operation"], value))
    print(columns(rows))


@app.command()
def restore(
    path: str,
    at: Annotated[str, typer.Option(help="The SEQ or TIME whose version to restore.")],
) -> None:
    """Write a secret's earlier version back as a new event (deleting is never the end)."""
    response = call(
        "write", f"sys/vaultlog/restore/{path}", {"at": at}, error_prefix=f"Error restoring {path}"
    )
    result = response.data or {}
    if not result["restored"]:
        raise CommandFailed(f"No value found at {path} at seq {result['seq']}", 1)
    print(f"Success! Restored '{path}' as it was at seq {result['seq']}")


@app.command()
def rotate() -> None:
    """Add a new barrier key term; new records use it, old ones stay readable."""
    status = call("write", "sys/rotate", error_prefix="Error").data or {}
    print(f"Key Term: {status['term']}\nInstallation Time: {status['install_time']}")


@app.command("key-status")
def key_status() -> None:
    """The barrier key term in use and when it was installed."""
    status = call("read", "sys/key-status", error_prefix="Error").data or {}
    print(f"Key Term: {status['term']}\nInstallation Time: {status['install_time']}")


@app.command()
def server(
    dev: Annotated[bool, typer.Option(help="Dev mode: in memory, unsealed, a root token.")] = (
        False
    ),
    dev_root_token_id: Annotated[str, typer.Option(help="Dev mode's root token.")] = "",
    dev_listen_address: Annotated[str, typer.Option(help="Dev mode's HOST:PORT.")] = (
        "127.0.0.1:8200"
    ),
    config: Annotated[str, typer.Option(help="A Vault configuration file (HCL or JSON).")] = "",
) -> None:
    """Serve Vault's HTTP API over a store, until SIGTERM or SIGINT."""
    from tools.server import serve
    from tools.server_config import Listener, ServerConfig, load_config, parse_address

    if dev == bool(config):
        raise CommandFailed("Error: give exactly one of -dev and -config=FILE", 1)
    if dev:
        host, port = parse_address(dev_listen_address, "-dev-listen-address")
        settings = ServerConfig("inmem", None, Listener(host, port))
    else:
        settings = load_config(Path(config))
    serve(settings, dev=dev, root_token=dev_root_token_id if dev else "")


@app.command()
def version() -> None:
    """Print the version: the Vault API spoken, then vaultlog's own."""
    print(version_line())


def version_line() -> str:
    from importlib.metadata import version as installed

    from backends.version import VAULT_VERSION

    return f"Vault v{VAULT_VERSION} (vaultlog {installed('vaultlog')})"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vault`` executable: every failure is one line on stderr."""
    args = vault_style_flags(sys.argv[1:] if argv is None else argv) or ["--help"]
    if args[0] in ("--version", "-v"):
        args = ["version", *args[1:]]
    command, rest, prog = _command_for(args)
    try:
        code = command.main(rest, prog_name=prog, standalone_mode=False)
    except CommandFailed as exc:
        print(str(exc) if exc.escaped else escape(str(exc)), file=sys.stderr)
        code = exc.exit_code
    except VaultlogError as exc:
        print(escape(f"Error: {exc}"), file=sys.stderr)
        code = 2
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        code = 130
    except typer.TyperException as exc:  # usage errors from typer's bundled click
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if "unexpected extra argument" in message:  # never echo them: one may be a secret
            message = "too many arguments"
        print(f"Error: {message} (see 'vault {_sub(args)}--help')", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


def _commands() -> dict[str, typer.models.CommandInfo]:
    return {
        info.name or (info.callback.__name__ if info.callback else ""): info
        for info in app.registered_commands
    }


def _command_for(args: list[str]) -> tuple[typer.core.TyperCommand, list[str], str]:
    """The click command to run, its arguments and its program name.

    A plain command is built on its own: building the whole app turns every command's
    signature into parameters (with typer's pydantic adapters), a cost each `vault`
    invocation would otherwise pay for commands it does not run.
    """
    info = _commands().get(args[0]) if args else None
    if info is None:  # help, a group such as `audit`, or an unknown command
        return typer.main.get_command(app), args, "vault"  # type: ignore[return-value]
    single = typer.Typer(
        add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
    )
    single.registered_commands.append(info)
    return typer.main.get_command(single), args[1:], f"vault {args[0]}"  # type: ignore[return-value]


def _sub(args: list[str]) -> str:
    """``"read "`` when the arguments name a known command, for pointing at its help."""
    return f"{args[0]} " if args and args[0] in _commands() else ""
