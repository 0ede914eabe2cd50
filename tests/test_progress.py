"""Long walks of the log show a bar on a terminal, and nothing when stderr is not one (or
with -format=json); what the commands print is the same either way."""

from __future__ import annotations

import os
import select
import subprocess

from backends import Request
from projections.progress import EVERY, counted, listening
from tests.conftest import VaultCLI, open_core, vault_executable


def test_a_walk_reports_only_while_someone_listens() -> None:
    items = list(range(EVERY * 2 + 5))
    assert counted(items, "walking", lambda: len(items)) is items  # untouched, no cost
    told: list[tuple[str, int, int]] = []
    with listening(lambda *said: told.append(said)):
        assert list(counted(items, "walking", lambda: len(items))) == items
    assert told == [
        ("walking", EVERY, len(items)),
        ("walking", EVERY * 2, len(items)),
        ("walking", len(items), len(items)),
    ]
    assert counted(items, "walking", lambda: 0) is items  # the listener is gone


def on_a_terminal(vault: VaultCLI, *args: str) -> tuple[int, str, bytes]:
    """Run ``vault args`` with stderr on a pseudo-terminal: exit code, stdout, what the
    terminal received."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [vault_executable(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**vault.env, "COLUMNS": "100"},
        cwd=vault.home,
    )
    os.close(slave)
    seen = b""
    try:
        out, _ = process.communicate(timeout=60)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    return process.returncode, out.decode(), seen


def test_verify_and_the_trail_show_a_bar_at_a_terminal_only(vault: VaultCLI) -> None:
    vault("init")
    core = open_core(vault.data_dir, vault.unseal_key(), write=True, snapshot_every=10**9)
    try:
        for i in range(EVERY + 100):
            core.handle(Request("write", f"secret/k{i % 50}", {"value": str(i)}))
    finally:
        core.store.close()
    code, out, terminal = on_a_terminal(vault, "audit", "verify")
    assert code == 0 and out.startswith("Verified ")
    assert b"verifying" in terminal
    piped = vault.run("audit", "verify")
    assert piped.stdout == out and piped.stderr == ""  # not a terminal: no bar

    code, out, terminal = on_a_terminal(vault, "audit", "-path=secret/k7")
    assert code == 0 and b"reading the trail" in terminal
    assert out == vault("audit", "-path=secret/k7")
    code, out, terminal = on_a_terminal(vault, "audit", "-path=secret/k7", "-format=json")
    assert code == 0 and b"reading the trail" not in terminal
