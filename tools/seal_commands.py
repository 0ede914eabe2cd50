"""``vault operator init|unseal|seal`` (and Vault 0.5's ``init``, ``unseal``, ``seal``) as
OpenBao 2.7.2's CLI prints them: the key shares and root token once, the seal status."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from tools.client import CommandFailed
from tools.commands import go_json, operator_app, seal_status_text
from tools.go_cli import (
    Args,
    Format,
    GoCommand,
    NotATerminal,
    arguments,
    call,
    check_format,
    go_int,
    go_wrap,
    read_hidden,
)
from tools.output import escape

_REKEY_ADVICE = (
    "It is possible to generate new unseal keys, provided you have a quorum\n"
    + go_wrap(
        'of existing unseal keys shares. See "vault operator rotate-keys" for more information.'
    )
)
_UNSEAL_PROMPT_FAILED = (
    "An error occurred attempting to ask for an unseal key. The raw error message\n"
    "is shown below, but usually this is because you attempted to pipe a value\n"
    "into the unseal command or you are executing outside of a terminal (tty). You\n"
    "should run the unseal command from a terminal for maximum security. If this\n"
    "is not an option, the unseal key can be provided as the first argument to the\n"
    "unseal command. The raw error was:  "
)


def server_init(
    shares_flag: str,
    threshold_flag: str,
    format: str,
    status: bool,
    recovery: tuple[str, str] = ("5", "3"),
) -> None:
    """``operator init``: the shares (unseal, or recovery for an auto-unsealing seal) and
    the root token, printed once. Empty flags take OpenBao's defaults for the seal."""
    check_format(format)
    if status:
        known = call("read", "sys/init", error_prefix="Error checking init status")
        if (known.data or {}).get("initialized"):
            print("Vault is initialized")
            return
        print("Vault is not initialized")
        raise typer.Exit(2)
    sealing = call("read", "sys/seal-status", error_prefix="Error checking seal status").data
    if (sealing or {}).get("recovery_seal"):
        shares = go_int("key-shares", shares_flag or "0")
        threshold = go_int("key-threshold", threshold_flag or "0")
        recovery_shares = go_int("recovery-shares", recovery[0] or "5")
        recovery_threshold = go_int("recovery-threshold", recovery[1] or "3")
    else:
        shares = go_int("key-shares", shares_flag or "5")
        threshold = go_int("key-threshold", threshold_flag or "3")
        recovery_shares = recovery_threshold = 0
    data: dict[str, Any] = {
        "secret_shares": shares,
        "secret_threshold": threshold,
        "pgp_keys": None,
        "recovery_shares": recovery_shares,
        "recovery_threshold": recovery_threshold,
        "recovery_pgp_keys": None,
        "root_token_pgp_key": "",
    }
    answer = call("write", "sys/init", data, error_prefix="Error initializing").data or {}
    keys, keys_b64 = answer.get("keys") or [], answer.get("keys_base64") or []
    recovery_keys = answer.get("recovery_keys")
    recovery_b64 = answer.get("recovery_keys_base64")
    if format == "json":
        print(
            go_json(
                {
                    "unseal_keys_b64": answer.get("keys_base64"),
                    "unseal_keys_hex": answer.get("keys"),
                    "unseal_shares": shares if keys else 1,
                    "unseal_threshold": threshold if keys else 1,
                    "recovery_keys_b64": recovery_b64,
                    "recovery_keys_hex": recovery_keys,
                    "recovery_keys_shares": recovery_shares,
                    "recovery_keys_threshold": recovery_threshold,
                    "root_token": answer.get("root_token", ""),
                }
            )
        )
        return
    shown = keys_b64 if len(keys_b64) == len(keys) else keys
    lines = [f"Unseal Key {i}: {key}" for i, key in enumerate(shown, start=1)]
    recovery_keys, recovery_b64 = recovery_keys or [], recovery_b64 or []
    shown = recovery_b64 if len(recovery_b64) == len(recovery_keys) else recovery_keys
    lines += [f"Recovery Key {i}: {key}" for i, key in enumerate(shown, start=1)]
    lines += ["", f"Initial Root Token: {answer.get('root_token', '')}"]
    if keys:
        lines += [
            "",
            go_wrap(
                f"Vault initialized with {shares} key shares and a key threshold of "
                f"{threshold}. Please securely distribute the key shares printed above. "
                "When the Vault is re-sealed, restarted, or stopped, you must supply at "
                f"least {threshold} of these keys to unseal it before it can start "
                "servicing requests."
            ),
            "",
            go_wrap(
                f"Vault does not store the generated root key. Without at least {threshold} "
                "keys to reconstruct the root key, Vault will remain permanently sealed!"
            ),
            "",
            _REKEY_ADVICE,
        ]
    else:
        lines += ["", "Success! Vault is initialized"]
    if recovery_keys:
        lines += [
            "",
            go_wrap(
                f"Recovery key initialized with {recovery_shares} key shares and a key "
                f"threshold of {recovery_threshold}. Please securely distribute the key "
                "shares printed above."
            ),
        ]
    print("\n".join(lines))


@operator_app.command("init", cls=GoCommand)
def operator_init(
    args: Args = None,
    key_shares: Annotated[str, typer.Option(help="Number of key shares.")] = "",
    key_threshold: Annotated[str, typer.Option(help="Shares needed to unseal.")] = "",
    recovery_shares: Annotated[
        str, typer.Option(help="Recovery key shares (an auto-unsealing seal).")
    ] = "",
    recovery_threshold: Annotated[str, typer.Option(help="Recovery shares needed.")] = "",
    status: Annotated[bool, typer.Option(help="Exit 0 if initialized, 2 if not.")] = False,
    format: Format = "table",
) -> None:
    """Initialize a server: its unseal key shares (or recovery key shares, when the HSM
    unseals it) and its root token, said once."""
    arguments(args, 0)
    server_init(key_shares, key_threshold, format, status, (recovery_shares, recovery_threshold))


@operator_app.command("unseal", cls=GoCommand)
def operator_unseal(
    args: Annotated[list[str] | None, typer.Argument(metavar="[KEY]", show_default=False)] = None,
    reset: Annotated[bool, typer.Option(help="Discard the shares given so far.")] = False,
    migrate: Annotated[bool, typer.Option(help="Seal migration (not supported).")] = False,
    format: Format = "table",
) -> None:
    """Give one unseal key share (asked for, hidden, when not given); print the status."""
    check_format(format)
    given = list(args or [])
    if len(given) > 1:
        raise CommandFailed(f"Too many arguments (expected 1, got {len(given)})", 1)
    if reset:
        status = call(
            "write", "sys/unseal", {"reset": True}, error_prefix="Error resetting unseal process"
        )
        print(seal_status_text(status.data or {}, format))
        return
    key = given[0].strip() if given else ""
    if not key:
        try:
            key = read_hidden("Unseal Key (will be hidden): ", sys.stdout).strip()
        except (NotATerminal, OSError) as exc:
            raise CommandFailed(_UNSEAL_PROMPT_FAILED + escape(str(exc)), 1, escaped=True) from None
    data = {"key": key, "reset": False, "migrate": migrate}
    status = call("write", "sys/unseal", data, error_prefix="Error unsealing")
    print(seal_status_text(status.data or {}, format))


@operator_app.command("seal", cls=GoCommand)
def operator_seal(args: Args = None) -> None:
    """Seal the server: it forgets its key and answers nothing but its status."""
    arguments(args, 0)
    call("write", "sys/seal", error_prefix="Error sealing")
    print("Success! Vault is sealed.")


@operator_app.command("step-down", cls=GoCommand)
def operator_step_down(args: Args = None) -> None:
    """Have the active node of a cluster hand its role to a standby."""
    arguments(args, 0)
    call("write", "sys/step-down", error_prefix="Error stepping down")
    print(f"Success! Stepped down: {os.environ.get('VAULT_ADDR', '')}")


@operator_app.command("migrate", cls=GoCommand)
def operator_migrate(
    args: Args = None,
    config: Annotated[
        str, typer.Option(help="The migration's file: storage_source, storage_destination.")
    ] = "",
) -> None:
    """Copy a store between storages (file, postgresql) as it is: sealed, no key needed."""
    arguments(args, 0)
    if not config:
        raise CommandFailed("Must specify exactly one config path using -config", 1)
    from pathlib import Path

    from eventstore import VaultlogError
    from tools.migrate import load_migrate_config, migrate
    from tools.progress import progress_on_stderr
    from tools.server_config import ConfigError

    try:
        plan = load_migrate_config(Path(config))
    except ConfigError as exc:  # its message starts with the file's name
        raise CommandFailed(f"Error loading configuration from {exc}", 1) from None
    try:
        with progress_on_stderr() as report:
            done = migrate(plan, report)
    except VaultlogError as exc:
        raise CommandFailed(f"Error migrating: {exc}", 2) from None
    if done.torn_tail is not None:
        print(
            f"Warning: the source ends with an incomplete record at {done.torn_tail.where} "
            "(a write that never finished, never acknowledged): not copied",
            file=sys.stderr,
        )
    print("Success! All of the keys have been migrated.")
    print(f"Copied {done.head.seq} records; head {done.head}")
