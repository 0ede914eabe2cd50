"""Today's Vault commands: ``secrets``, ``kv``, ``lease``, ``operator`` and ``status``.

Each is one or two requests through ``tools.cli.call``, printed as OpenBao 2.7.2's CLI
prints them: tables with Vault's four-space columns and ``Key``/``---`` headers, values
as Go's ``%v`` shows them, TTLs as ``1h`` or ``59m59s``, ``-format=json`` as Go indents.
"""

from __future__ import annotations

import functools
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from backends import InvalidRequestError, Response
from backends.ttl import human_duration, parse_duration
from tools import client
from tools.client import CommandFailed, parse_data
from tools.output import escape

secrets_app = typer.Typer(no_args_is_help=True, help="Enable, list, tune, move, disable engines.")
kv_app = typer.Typer(no_args_is_help=True, help="Key/value secrets (KV version 1).")
lease_app = typer.Typer(no_args_is_help=True, help="Look up, renew and revoke leases.")
operator_app = typer.Typer(
    no_args_is_help=True,
    help="The seal and the barrier key: init, unseal, seal, rotate, key-status.",
)


def register(app: typer.Typer) -> None:
    """Add these commands to the ``vault`` app."""
    app.add_typer(secrets_app, name="secrets")
    app.add_typer(kv_app, name="kv")
    app.add_typer(lease_app, name="lease")
    app.add_typer(operator_app, name="operator")
    app.command()(status)


Format = Annotated[str, typer.Option(help="table or json.")]
call = functools.partial(client.call, vault_errors=True)  # as today's Vault CLI says them
_NO_TTL = ("system", "cubbyhole", "identity")  # engines whose TTLs Vault shows as n/a


# ---- how Vault prints --------------------------------------------------------------------


def go_text(value: Any) -> str:
    """A value as Go's ``%v`` prints a decoded JSON value: ``<nil>``, ``[a b]``, ``map[k:v]``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(go_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_text(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def go_json(value: Any) -> str:
    """JSON as Go's ``MarshalIndent(v, "", "  ")``: keys sorted in maps, ``<>&`` escaped."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def columns(rows: Sequence[Sequence[str]], *, header: bool = True) -> str:
    """Vault's columns: cells trimmed (empty ones ``n/a``), four spaces apart, the last
    unpadded; with ``header`` the first row is underlined with dashes."""
    cells = [[escape(cell.strip()) or "n/a" for cell in row] for row in rows]
    if header:
        cells.insert(1, ["-" * len(cell) for cell in cells[0]])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("    ".join([*padded, row[-1]]))
    return "\n".join(lines)


def _looks_like_ttl(key: str) -> bool:
    return key in ("ttl", "period") or key.endswith(("_ttl", "_period"))


def data_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """A secret's keys in order, TTL-like integer fields as durations (as Vault does)."""
    rows = []
    for key in sorted(data):
        value = data[key]
        if _looks_like_ttl(key) and isinstance(value, int) and not isinstance(value, bool):
            rows.append((key, human_duration(value)))
        else:
            rows.append((key, go_text(value)))
    return rows


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    for char, escaped in (("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r")):
        quoted = quoted.replace(char, escaped)
    return f'"{quoted}"'


def go_quote_list(items: list[str] | None) -> str:
    return "[" + " ".join(go_quote(str(item)) for item in items or []) + "]"


def secret_table(response: Response) -> str:
    """Vault's table of a secret: its lease, its ``auth`` (the token), then its data."""
    rows: list[tuple[str, str]] = [("Key", "Value")]
    if response.lease_duration > 0:
        duration = human_duration(response.lease_duration)
        if response.lease_id:
            rows += [("lease_id", response.lease_id), ("lease_duration", duration)]
            rows.append(("lease_renewable", go_text(response.renewable)))
        else:
            rows.append(("refresh_interval", duration))
    auth = response.auth
    if auth is not None:
        seconds = int(auth.get("lease_duration") or 0)
        rows += [
            ("token", str(auth.get("client_token") or "")),
            ("token_accessor", str(auth.get("accessor") or "")),
            ("token_duration", human_duration(seconds) if seconds else "∞"),
            ("token_renewable", go_text(bool(auth.get("renewable")))),
            ("token_policies", go_quote_list(auth.get("token_policies"))),
            ("identity_policies", go_quote_list(auth.get("identity_policies"))),
            ("policies", go_quote_list(auth.get("policies"))),
        ]
        meta = auth.get("metadata") or {}
        rows += [(f"token_meta_{key}", go_text(meta[key])) for key in sorted(meta)]
    rows += data_rows(response.data or {})
    return columns(rows) if len(rows) > 1 else ""


def secret_json(response: Response) -> str:
    """A response as Vault's ``-format=json`` prints a secret."""
    return go_json(
        {
            "request_id": response.request_id,
            "lease_id": response.lease_id,
            "lease_duration": response.lease_duration,
            "renewable": response.renewable,
            "data": response.data,
            "warnings": list(response.warnings) or None,
        }
    )


def _check_format(format: str) -> None:
    if format not in ("table", "json"):
        raise CommandFailed(f"Invalid output format: {format}", 1)


def _mount_path(path: str) -> str:
    """A mount point as Vault's CLI shows it: no leading slash, one trailing slash."""
    return path.strip("/") + "/"


def _duration_flag(name: str, raw: str | None) -> str | None:
    """A duration flag checked here, as Go's flag package checks it, and sent in seconds."""
    if raw is None or raw == "":
        return None
    try:
        return f"{parse_duration(raw)}s"
    except InvalidRequestError as exc:
        raise CommandFailed(f'invalid value "{raw}" for flag -{name}: {exc}', 1) from None


def _emit(text: str) -> None:
    if text:
        print(text)


# ---- secrets -----------------------------------------------------------------------------


@secrets_app.command("enable")
def secrets_enable(
    engine_type: Annotated[str, typer.Argument(metavar="TYPE")],
    path: Annotated[str | None, typer.Option(help="Mount point (default: the type).")] = None,
    description: Annotated[str, typer.Option(help="Human-friendly description.")] = "",
    default_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 1h.")] = None,
    max_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 24h.")] = None,
    version: Annotated[int | None, typer.Option(help="KV version (1 only).")] = None,
    options: Annotated[list[str] | None, typer.Option(help="K=V engine options.")] = None,
) -> None:
    """Enable a secrets engine at a path."""
    mount = _mount_path(engine_type if path is None else path)
    config = {
        "default_lease_ttl": _duration_flag("default-lease-ttl", default_lease_ttl) or "0s",
        "max_lease_ttl": _duration_flag("max-lease-ttl", max_lease_ttl) or "0s",
        "force_no_cache": False,
    }
    chosen: dict[str, str] = {}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise CommandFailed(f'invalid value "{option}" for flag -options: want K=V', 1)
        chosen[key] = value
    if version is not None:
        chosen["version"] = str(version)
    data: dict[str, Any] = {"type": engine_type, "description": description, "config": config}
    if chosen:
        data["options"] = chosen
    call(
        "write", f"sys/mounts/{mount.rstrip('/')}", data, error_prefix="Error enabling", exit_code=2
    )
    print(f"Success! Enabled the {engine_type} secrets engine at: {mount}")


@secrets_app.command("list")
def secrets_list(
    detailed: Annotated[bool, typer.Option(help="Show every field of each engine.")] = False,
    format: Format = "table",
) -> None:
    """List the enabled secrets engines."""
    _check_format(format)
    response = call("read", "sys/mounts", error_prefix="Error listing secrets engines", exit_code=2)
    mounts = response.data or {}
    if format == "json":
        print(go_json(dict(sorted(mounts.items()))))
        return
    rows: list[tuple[str, ...]]
    if not detailed:
        rows = [("Path", "Type", "Accessor", "Description")]
        for path, info in sorted(mounts.items()):
            rows.append((path, info["type"], info["accessor"], info["description"]))
        print(columns(rows))
        return
    rows = [
        (
            "Path",
            "Plugin",
            "Accessor",
            "Default TTL",
            "Max TTL",
            "Force No Cache",
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
    ]
    for path, info in sorted(mounts.items()):
        config = info.get("config") or {}
        rows.append(
            (
                path,
                info["type"],
                info["accessor"],
                _ttl_cell(info["type"], config.get("default_lease_ttl", 0)),
                _ttl_cell(info["type"], config.get("max_lease_ttl", 0)),
                go_text(bool(config.get("force_no_cache"))),
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
    print(columns(rows))


def _ttl_cell(engine_type: str, seconds: int) -> str:
    if engine_type in _NO_TTL:
        return "n/a"
    return str(seconds) if seconds else "system"


@secrets_app.command("disable")
def secrets_disable(path: str) -> None:
    """Disable the secrets engine at a path (its secrets are revoked, its data deleted)."""
    mount = _mount_path(path)
    call(
        "delete",
        f"sys/mounts/{mount.rstrip('/')}",
        error_prefix=f"Error disabling secrets engine at {mount}",
        exit_code=2,
    )
    print(f"Success! Disabled the secrets engine (if it existed) at: {mount}")


@secrets_app.command("move")
def secrets_move(
    source: Annotated[str, typer.Argument(metavar="SOURCE")],
    destination: Annotated[str, typer.Argument(metavar="DESTINATION")],
) -> None:
    """Move a secrets engine to a new path, keeping its data."""
    src, dst = _mount_path(source), _mount_path(destination)
    response = call(
        "write",
        "sys/remount",
        {"from": src, "to": dst},
        error_prefix=f"Error moving secrets engine {src} to {dst}",
        exit_code=2,
    )
    # Vault's move runs in the background and is polled; this one is done on answering.
    migration = (response.data or {}).get("migration_id", "")
    print(f"Started moving secrets engine {src} to {dst}, with migration ID {migration}")
    print(f"Success! Finished moving secrets engine {src} to {dst}, with migration ID {migration}")


@secrets_app.command("tune")
def secrets_tune(
    path: str,
    default_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 1h, or system.")] = None,
    max_lease_ttl: Annotated[str | None, typer.Option(help="e.g. 24h, or system.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
) -> None:
    """Change an engine's lease TTLs or description."""
    mount = _mount_path(path)
    data: dict[str, Any] = {}
    for key, flag, raw in (
        ("default_lease_ttl", "default-lease-ttl", default_lease_ttl),
        ("max_lease_ttl", "max-lease-ttl", max_lease_ttl),
    ):
        value = raw if raw == "system" else _duration_flag(flag, raw)
        if value is not None:
            data[key] = value
    if description is not None:
        data["description"] = description
    call(
        "write",
        f"sys/mounts/{mount.rstrip('/')}/tune",
        data,
        error_prefix=f"Error tuning secrets engine {mount}",
        exit_code=2,
    )
    print(f"Success! Tuned the secrets engine at: {mount}")


# ---- kv (version 1) ----------------------------------------------------------------------

Mount = Annotated[str, typer.Option(help="The mount; PATH is then the key within it.")]


def _kv_path(path: str, mount: str) -> str:
    return f"{mount.strip('/')}/{path.lstrip('/')}" if mount else path


def _header(title: str, data: dict[str, Any]) -> str:
    """Vault's ``==== Data ====``: as wide as a two-column table of ``data`` would be."""
    width = max((len(key) for key in data), default=0) + 4 + 5
    signs = width - (len(title) + 2)
    signs = 4 if signs <= 0 else signs + signs % 2
    return f"{'=' * (signs // 2)} {title} {'=' * (signs // 2)}"


@kv_app.command("get")
def kv_get(
    path: str,
    mount: Mount = "",
    field: Annotated[str, typer.Option(help="Print only this field's value.")] = "",
    format: Format = "table",
) -> None:
    """Read a secret."""
    _check_format(format)
    full = _kv_path(path, mount)
    response = call("read", full, error_prefix=f"Error reading {full}", exit_code=2)
    if response.data is None:
        raise CommandFailed(f"No value found at {full}", 2)
    if field:
        if field not in response.data:
            raise CommandFailed(f'Field "{field}" not present in secret', 1)
        sys.stdout.write(go_text(response.data[field]))  # raw: no newline, as Vault
        return
    if format == "json":
        print(secret_json(response))
        return
    print(_header("Data", response.data))
    _emit(columns([("Key", "Value"), *data_rows(response.data)]) if response.data else "")


@kv_app.command("put")
def kv_put(
    path: str,
    data: Annotated[list[str] | None, typer.Argument(metavar="[K=V|@FILE|-]...")] = None,
    mount: Mount = "",
) -> None:
    """Write a secret (it replaces what was there)."""
    if not data:
        raise CommandFailed("Must supply data", 1)
    full = _kv_path(path, mount)
    values = parse_data(data)
    call("write", full, values, error_prefix=f"Error writing data to {full}", exit_code=2)
    print(f"Success! Data written to: {full}")


@kv_app.command("list")
def kv_list(path: str, mount: Mount = "", format: Format = "table") -> None:
    """List the keys under a path."""
    _check_format(format)
    full = _kv_path(path, mount)
    response = call("list", full, error_prefix=f"Error listing {full}", exit_code=2)
    keys = (response.data or {}).get("keys") or []
    if not keys:
        raise CommandFailed(f"No value found at {full}", 2)
    if format == "json":
        print(go_json(keys))
        return
    print("\n".join(["Keys", "----", *map(escape, keys)]))


@kv_app.command("delete")
def kv_delete(path: str, mount: Mount = "") -> None:
    """Delete a secret."""
    full = _kv_path(path, mount)
    call("delete", full, error_prefix=f"Error deleting {full}", exit_code=2)
    print(f"Success! Data deleted (if it existed) at: {full}")


# ---- leases ------------------------------------------------------------------------------


@lease_app.command("lookup")
def lease_lookup(lease_id: str, format: Format = "table") -> None:
    """Show a lease: its path, issue and expiry times, TTL left."""
    _check_format(format)
    response = call(
        "write",
        "sys/leases/lookup",
        {"lease_id": lease_id},
        error_prefix=f"error looking up lease id {lease_id}",
        exit_code=2,
    )
    _emit(secret_json(response) if format == "json" else secret_table(response))


@lease_app.command("renew")
def lease_renew(
    lease_id: str,
    increment: Annotated[str, typer.Option(help="Requested extension, e.g. 30m.")] = "",
    format: Format = "table",
) -> None:
    """Renew a lease, extending its expiry (never past its maximum TTL)."""
    _check_format(format)
    seconds = _duration_flag("increment", increment)
    data = {"increment": int(seconds[:-1]) if seconds else 0, "lease_id": lease_id}
    response = call(
        "write", "sys/leases/renew", data, error_prefix=f"Error renewing {lease_id}", exit_code=2
    )
    _emit(secret_json(response) if format == "json" else secret_table(response))


@lease_app.command("revoke")
def lease_revoke(
    lease_id: Annotated[str, typer.Argument(metavar="ID|PREFIX")],
    prefix: Annotated[bool, typer.Option(help="Revoke every lease under the prefix.")] = False,
    force: Annotated[
        bool, typer.Option(help="With -prefix: drop leases whose revocation fails.")
    ] = False,
    sync: Annotated[bool, typer.Option(help="Report a failing revocation.")] = False,
) -> None:
    """Revoke a lease, or with -prefix every lease under a path. Without -sync a failing
    revocation is recorded and retried later rather than reported."""
    if force and not prefix:
        raise CommandFailed("Specifying -force requires also specifying -prefix", 1)
    if force and sync:
        raise CommandFailed("-sync and -force are incompatible", 1)
    target = lease_id.rstrip("/") if prefix else lease_id
    if force:
        warning = (
            "Warning! Force-removing leases can cause Vault to become out of sync with "
            "secret engines!"
        )
        print(textwrap.fill(warning, width=78), file=sys.stderr)
        call(
            "write",
            f"sys/leases/revoke-force/{target}",
            error_prefix=f"Error force revoking leases with prefix {lease_id}",
            exit_code=2,
        )
        print(f"Success! Force revoked any leases with prefix: {lease_id}")
        return
    route = "revoke-prefix" if prefix else "revoke"
    what = f"leases with prefix {lease_id}" if prefix else f"lease {lease_id}"
    call(
        "write",
        f"sys/leases/{route}/{target}",
        {"sync": sync},
        error_prefix=f"Error revoking {what}",
        exit_code=2,
    )
    if not sync:
        print("All revocation operations queued successfully!")
    elif prefix:
        print(f"Success! Revoked any leases with prefix: {lease_id}")
    else:
        print(f"Success! Revoked lease: {lease_id}")


# ---- operator and status -----------------------------------------------------------------


def _key_status_text(status: dict[str, Any]) -> str:
    installed = time.strptime(status["install_time"], "%Y-%m-%dT%H:%M:%SZ")
    rows = [
        ("Key Term", str(status["term"])),
        ("Install Time", time.strftime("%d %b %y %H:%M UTC", installed)),
        ("Encryption Count", str(status.get("encryptions", 0))),
    ]
    return columns(rows, header=False)


def _key_status_json(status: dict[str, Any]) -> str:
    keys = ("term", "install_time", "encryptions")
    return go_json({key: status[key] for key in keys if key in status})


@operator_app.command("key-status")
def operator_key_status(format: Format = "table") -> None:
    """The barrier key term in use, when it was installed, and how many records use it."""
    _check_format(format)
    status = call("read", "sys/key-status", error_prefix="Error reading key status", exit_code=2)
    data = status.data or {}
    print(_key_status_json(data) if format == "json" else _key_status_text(data))


@operator_app.command("rotate")
def operator_rotate(format: Format = "table") -> None:
    """Add a new barrier key term; new records use it, old ones stay readable."""
    _check_format(format)
    rotated = call("write", "sys/rotate/keyring", error_prefix="Error rotating key", exit_code=2)
    data = rotated.data
    if data is None:  # a server that answers 204, as Vault's does
        status = call("read", "sys/key-status", error_prefix="Error reading key status")
        data = status.data or {}
    if format == "json":
        print(_key_status_json(data))
        return
    print(f"Success! Rotated key\n\n{_key_status_text(data)}")


def status(format: Format = "table") -> None:
    """The store's seal status; exit code 0 when unsealed (as it always is), 2 sealed."""
    _check_format(format)
    seal = call("read", "sys/seal-status", error_prefix="Error checking seal status").data or {}
    print(seal_status_text(seal, format))
    if seal.get("sealed"):
        raise typer.Exit(2)


def seal_status_text(seal: dict[str, Any], format: str) -> str:
    """A seal status as Vault prints it (``status``, ``operator unseal``): a table, or the
    JSON of Go's ``SealStatusOutput`` struct, fields in its order; asks ``sys/leader``."""
    leader = call("read", "sys/leader", error_prefix="Error checking leader status").data or {}
    ha_enabled = bool(leader.get("ha_enabled"))
    if format == "json":
        keys = ("type", "initialized", "sealed", "t", "n", "progress", "nonce", "version")
        out = {key: seal.get(key) for key in keys}
        out.update(commit_date=seal.get("commit_date", ""), migration=bool(seal.get("migration")))
        out.update({key: seal[key] for key in ("cluster_name", "cluster_id") if seal.get(key)})
        out["recovery_seal"] = bool(seal.get("recovery_seal"))
        if seal.get("recovery_seal_type"):
            out["recovery_seal_type"] = seal["recovery_seal_type"]
        out.update({key: seal[key] for key in ("storage_type", "warnings") if seal.get(key)})
        out.update(build_date=seal.get("build_date", ""), ha_enabled=ha_enabled)
        for key in ("is_self", "active_time", "leader_address", "leader_cluster_address"):
            if leader.get(key):  # Go's omitempty
                out[key] = leader[key]
        return go_json(out)
    recovery = "Recovery " if seal.get("recovery_seal") else ""
    rows = [("Key", "Value"), ("Seal Type", seal.get("type", ""))]
    if recovery:
        rows.append(("Recovery Seal Type", seal.get("recovery_seal_type", "")))
    rows += [
        ("Initialized", go_text(seal.get("initialized"))),
        ("Sealed", go_text(seal.get("sealed"))),
        (f"Total {recovery}Shares", go_text(seal.get("n"))),
        ("Threshold", go_text(seal.get("t"))),
    ]
    if seal.get("sealed"):
        progress = f"{seal.get('progress', 0)}/{seal.get('t', 0)}"
        rows += [("Unseal Progress", progress), ("Unseal Nonce", seal.get("nonce", ""))]
    rows.append(("Version", seal.get("version", "")))
    if seal.get("commit_date"):
        rows.append(("Commit Date", seal["commit_date"]))
    rows.append(("Storage Type", seal.get("storage_type", "")))
    if seal.get("cluster_name") and seal.get("cluster_id"):
        rows += [("Cluster Name", seal["cluster_name"]), ("Cluster ID", seal["cluster_id"])]
    rows.append(("HA Enabled", go_text(ha_enabled)))
    if ha_enabled:
        rows += ha_rows(leader, sealed=bool(seal.get("sealed")))
    return columns(rows)


def ha_rows(leader: dict[str, Any], *, sealed: bool) -> list[tuple[str, str]]:
    """What Vault's status adds for a node of a cluster: its mode, and the active node."""
    rows = [("HA Cluster", leader.get("leader_cluster_address") or "n/a")]
    if sealed:
        return [*rows, ("HA Mode", "sealed")]
    if leader.get("is_self"):
        rows.append(("HA Mode", "active"))
        if leader.get("active_time"):
            rows.append(("Active Since", leader["active_time"]))
    else:
        rows += [
            ("HA Mode", "standby"),
            ("Active Node Address", leader.get("leader_address") or "<none>"),
        ]
    return rows
