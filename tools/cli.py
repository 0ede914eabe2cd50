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

from tools import auth_commands, commands, seal_commands
from tools.client import CommandFailed, call, guarded, parse_data
from tools.go_cli import GoCommand
from tools.output import columns, escape, rfc3339, secret_json, secret_table, text
from tools.progress import progress_on_stderr
from tools.secret_commands import read_secret, write_secret

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="vaultlog: Vault's secret backends over an encrypted, tamper-evident event log.",
)

commands.register(app)
auth_commands.register(app)

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


@app.command(cls=GoCommand)
def init(
    key_shares: Annotated[str | None, typer.Option(help="A server's key shares (5).")] = None,
    key_threshold: Annotated[str | None, typer.Option(help="Shares to unseal it (3).")] = None,
    format: Annotated[str, typer.Option(help="table or json (a server's).")] = "table",
) -> None:
    """Create the store explicitly and print where its data and unseal key live; with
    VAULT_ADDR, initialize that server instead, as ``operator init`` does."""
    if os.environ.get("VAULT_ADDR"):
        seal_commands.server_init(key_shares or "5", key_threshold or "3", format, status=False)
        return
    if key_shares is not None or key_threshold is not None:
        raise CommandFailed(
            "Error: -key-shares and -key-threshold initialize a server (set VAULT_ADDR); "
            "the embedded store has one key, in a file",
            1,
        )
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
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Write with no data (rotate-root/NAME).")
    ] = False,
) -> None:
    """Write data (key=value pairs, @file.json, or JSON on stdin with -) to a path."""
    write_secret(path, data or [])


@app.command()
def read(
    path: str,
    field: Annotated[str, typer.Option(help="Print only this field's value.")] = "",
    format: Annotated[str, typer.Option(help="table or json.")] = "table",
    at: Annotated[str, typer.Option(help="As the store stood at SEQ or TIME.")] = "",
) -> None:
    """Read the secret at a path (now, or with -at as it was then)."""
    read_secret(path, field, format, at)


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
    """List live leases: id, the user it stands for, issued, expires, renewable, status."""
    response = call("read", "sys/leases", {"prefix": prefix}, at=at, error_prefix="Error")
    found = (response.data or {}).get("leases") or []
    if not found:
        print("No leases found", file=sys.stderr)
        return
    rows = [("Lease ID", "User", "Issued", "Expires", "Renewable", "Status")]
    for lease in found:
        status = "expired, revocation pending" if lease["expired"] else "ok"
        if lease["failures"]:
            status = f"revocation failing ({lease['failures']} attempts): {lease['last_error']}"
        rows.append(
            (
                lease["lease_id"],
                lease.get("username") or "-",
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
    actor: Annotated[
        str, typer.Option(help="Only this actor: user@host, a token's display name or accessor.")
    ] = "",
    type: Annotated[str, typer.Option(help="Only this event type or family.")] = "",
    format: Annotated[str, typer.Option(help="table or json (JSON lines).")] = "table",
    who_could_read: Annotated[
        str, typer.Option(metavar="PATH", help="Instead: the tokens that could read PATH.")
    ] = "",
    at: Annotated[str, typer.Option(help="With -who-could-read: at this SEQ or TIME.")] = "",
) -> None:
    """Who did what, where and when: seq, time, actor, operation, path, mount, lease."""
    if ctx.invoked_subcommand is not None:
        return
    if format not in ("table", "json"):
        raise CommandFailed(f"Invalid output format: {format}", 1)
    if who_could_read:
        _who_could_read(who_could_read, at, format)
        return
    if at:
        raise CommandFailed("Error: -at goes with -who-could-read (the trail takes -since)", 1)
    data = {"since": since, "until": until, "path": path, "actor": actor, "type": type}
    with progress_on_stderr(format != "json"):  # a long trail: a bar at a terminal
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


def _who_could_read(path: str, at: str, format: str) -> None:
    """The tokens live then whose policies then granted read on ``path``, and whether
    each had read it by then."""
    data = {"path": path}
    answer = call("read", "sys/vaultlog/who-could-read", data, at=at, error_prefix="Error").data
    answer = answer or {}
    if format == "json":
        print(json.dumps(answer, indent=2, sort_keys=True))
        return
    tokens = answer["tokens"]
    print(f"Tokens that could read {escape(path)} at seq {answer['seq']} ({answer['time']}):")
    if not tokens:
        print("none")
        return
    rows = [("Accessor", "Display Name", "Policies", "Read It")]
    for token in tokens:
        policies, read_it = ",".join(token["policies"]), "yes" if token["did_read"] else "no"
        rows.append((token["accessor"], token["display_name"], policies, read_it))
    print(columns(rows))


@audit_app.command("enable")
def audit_enable(
    device_type: Annotated[str, typer.Argument(metavar="TYPE")],
    options: Annotated[list[str] | None, typer.Argument(metavar="[K=V]...")] = None,
    path: Annotated[str, typer.Option(help="Where to enable it (default: the type).")] = "",
    description: Annotated[str, typer.Option(help="Human-friendly description.")] = "",
    since: Annotated[
        str, typer.Option(help="Back-fill from this SEQ, time or age (default: from now).")
    ] = "",
) -> None:
    """Enable an audit device: file file_path=PATH writes one JSON line per event."""
    config = parse_data(options or [])
    if since:
        config["since"] = since
    where = f"{(path or device_type).strip('/')}/"
    data = {"type": device_type, "description": description, "options": config}
    commands.call(
        "write",
        f"sys/audit/{where}",
        data,
        error_prefix="Error enabling audit device",
        exit_code=2,
    )
    print(f"Success! Enabled the {device_type} audit device at: {where}")


@audit_app.command("list")
def audit_list(
    detailed: Annotated[bool, typer.Option(help="With replication and options.")] = False,
    format: Annotated[str, typer.Option(help="table or json.")] = "table",
) -> None:
    """List the enabled audit devices."""
    if format not in ("table", "json"):
        raise CommandFailed(f"Invalid output format: {format}", 1)
    listed = commands.call("read", "sys/audit", error_prefix="Error listing audits", exit_code=2)
    devices = listed.data or {}
    if format == "json":
        print(commands.go_json(devices))
        return
    if not devices:
        print("No audit devices are enabled.")
        return
    rows = [["Path", "Type", "Description"] + (["Replication", "Options"] if detailed else [])]
    for where in sorted(devices):
        device = devices[where]
        row = [where, device["type"], device["description"]]
        if detailed:
            options = sorted((device.get("options") or {}).items())
            replication = "local" if device.get("local") else "replicated"
            row += [replication, " ".join(f"{k}={v}" for k, v in options)]
        rows.append(row)
    print(commands.columns(rows))


@audit_app.command("disable")
def audit_disable(path: str) -> None:
    """Disable an audit device (its file stays as it is)."""
    where = f"{path.strip('/')}/"
    commands.call(
        "delete", f"sys/audit/{where}", error_prefix="Error disabling audit device", exit_code=2
    )
    print(f"Success! Disabled audit device (if it was enabled) at: {where}")


@audit_app.command("verify")
def audit_verify(
    against: Annotated[str, typer.Option(help="A head SEQ:HASH written down earlier.")] = "",
) -> None:
    """Check every record, the hash chain and the snapshots; print the head SEQ:HASH."""
    data = {"against": against}
    with progress_on_stderr():
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

    def run() -> int:
        try:
            code = command.main(rest, prog_name=prog, standalone_mode=False)
        except typer.Abort:
            print("Aborted.", file=sys.stderr)
            return 130
        except typer.TyperException as exc:  # usage errors from typer's bundled click
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            if "unexpected extra argument" in message:  # never echo them: one may be a secret
                message = "too many arguments"
            print(f"Error: {message} (see 'vault {_sub(args)}--help')", file=sys.stderr)
            return 1
        return code if isinstance(code, int) else 0

    sys.exit(guarded(run))


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
    group = _groups().get(args[0]) if args and info is None else None
    if info is None and group is None:  # help, or an unknown command
        return typer.main.get_command(app), args, "vault"  # type: ignore[return-value]
    single = typer.Typer(
        add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
    )
    if group is not None:  # a group such as `secrets`: that group's commands alone
        single.registered_groups.append(group)
        return typer.main.get_command(single), args, "vault"  # type: ignore[return-value]
    assert info is not None
    single.registered_commands.append(info)
    return typer.main.get_command(single), args[1:], f"vault {args[0]}"  # type: ignore[return-value]


def _groups() -> dict[str, typer.models.TyperInfo]:
    return {info.name: info for info in app.registered_groups if info.name}


def _sub(args: list[str]) -> str:
    """``"read "`` when the arguments name a known command, for pointing at its help."""
    return f"{args[0]} " if args and args[0] in _commands() else ""
