"""Several ``vault`` processes on one store: one writer at a time, readers never wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backends import Request
from eventstore import decode_unseal_key
from eventstore.lock import WriterLock
from tests.conftest import VaultCLI, open_core, vault_executable
from tools import config

WRITERS = 6
KEYS_PER_WRITER = 5  # 30 `vault write` processes: enough to interleave on 2 cores


def unseal_key_of(cli: VaultCLI) -> bytes:
    return decode_unseal_key((cli.home / "config" / "vaultlog" / "unseal.key").read_text())


def test_concurrent_writers_on_a_fresh_store(vault: VaultCLI) -> None:
    """Six shell loops of ``vault write`` start at once on a store that does not exist yet."""
    loop = (
        'for i in $(seq 0 {last}); do "$VAULT" write "secret/w{w}/k$i" "v={w}-$i" || exit 1; done'
    )
    env = {**vault.env, "VAULT": vault_executable()}
    writers = [
        subprocess.Popen(
            ["sh", "-c", loop.format(w=w, last=KEYS_PER_WRITER - 1)],
            env=env,
            cwd=vault.home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
        assert "Traceback" not in errors

    writes = WRITERS * KEYS_PER_WRITER
    reader = open_core(vault.data_dir, unseal_key_of(vault), write=False)
    try:
        seqs = [record.seq for record in reader.store.log.records()]
        assert seqs == list(range(1, 2 + writes + 1))  # the two default mounts, then the writes
        assert sorted(reader.store.state.mounts.by_path) == ["secret/", "sys/"]  # created once
        for w in range(WRITERS):
            for i in range(KEYS_PER_WRITER):
                found = reader.handle(Request("read", f"secret/w{w}/k{i}")).data
                assert found == {"v": f"{w}-{i}"}, (w, i)
    finally:
        reader.store.close()
    assert vault("read", "-field=v", f"secret/w{WRITERS - 1}/k{KEYS_PER_WRITER - 1}") == (
        f"{WRITERS - 1}-{KEYS_PER_WRITER - 1}\n"
    )


def test_a_store_made_by_another_process_between_two_looks_is_opened_with_its_key(
    vault: VaultCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving six writers on a fresh store once hit: this process finds no key
    file, another makes the key and then the store, and this one, finding the store, must
    take that key rather than refuse for want of one."""
    for name in ("VAULTLOG_DIR", "XDG_CONFIG_HOME", "HOME"):
        monkeypatch.setenv(name, vault.env[name])
    monkeypatch.delenv("VAULTLOG_UNSEAL_KEY", raising=False)
    read, looks = config._read_key, []

    def the_other_first_use_lands_after_the_first_look(path: Path) -> bytes | None:
        found = read(path)
        if not looks:
            assert found is None
            vault("write", "secret/a", "v=1")  # another process's first use, meanwhile
        looks.append(path)
        return found

    monkeypatch.setattr(config, "_read_key", the_other_first_use_lands_after_the_first_look)
    location = config.locate_store()
    assert location.unseal_key == unseal_key_of(vault) and not location.created_key
    assert len(looks) == 2


@contextmanager
def writer_lock_held(cli: VaultCLI) -> Iterator[None]:
    """This test process holds the store's writer lock, as a writer mid-append would."""
    lock = WriterLock(cli.data_dir)
    lock.acquire(timeout=5)
    try:
        yield
    finally:
        lock.release()


def test_vault_read_waits_for_the_writer_then_answers(vault: VaultCLI) -> None:
    """An audited read is recorded before the secret is shown, so it takes its turn
    behind a writer (inspection commands below do not)."""
    vault("write", "secret/x", "v=1")
    vault.env["VAULTLOG_LOCK_TIMEOUT"] = "30"
    lock = WriterLock(vault.data_dir)
    lock.acquire(timeout=5)
    reader = subprocess.Popen(
        [vault_executable(), "read", "-field=v", "secret/x"],
        env=vault.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            reader.wait(1.0)  # still waiting: nothing is shown before the read is recorded
    finally:
        lock.release()
    out, err = reader.communicate(timeout=30)
    assert (reader.returncode, out, err) == (0, "1\n", "")
    assert vault.events()[-1].TYPE == "secret.read"


def test_inspection_is_not_blocked_by_a_writer(vault: VaultCLI) -> None:
    vault("write", "secret/x", "v=1")
    vault.env["VAULTLOG_LOCK_TIMEOUT"] = "5"
    with writer_lock_held(vault):
        listed = vault.run("list", "secret/", timeout=30)
        mounts = vault.run("mounts", timeout=30)
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "Keys\nx\n", "")
    assert (mounts.returncode, mounts.stderr) == (0, "")
    assert "secret/" in mounts.stdout


def test_writer_waiting_on_the_lock_gives_up_with_one_line(vault: VaultCLI) -> None:
    vault("write", "secret/x", "v=1")
    vault.env["VAULTLOG_LOCK_TIMEOUT"] = "0.5"
    with writer_lock_held(vault):
        blocked = vault.run("write", "secret/x", "v=2", timeout=30)
    assert blocked.returncode != 0
    assert "Traceback" not in blocked.stderr
    lines = blocked.stderr.splitlines()
    assert len(lines) == 1, blocked.stderr
    assert f"locked by another process (pid {os.getpid()})" in lines[0]
    vault("write", "secret/x", "v=3")  # once the lock is free, writes go through
    assert vault("read", "-field=v", "secret/x") == "3\n"


HOLD_THE_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from backends import Core, Registry
    from eventstore import decode_unseal_key
    from projections import Store

    store = Store.open(Path(sys.argv[1]), decode_unseal_key(sys.argv[2]), write=True)
    core = Core(store, Registry())
    core.maintain()
    print("holding", flush=True)
    time.sleep(120)
    """
)


def test_writer_killed_with_sigkill_leaves_no_stale_lock(vault: VaultCLI) -> None:
    vault("write", "secret/x", "v=1")
    key = (vault.home / "config" / "vaultlog" / "unseal.key").read_text().strip()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(vault.data_dir), key],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"
        vault.env["VAULTLOG_LOCK_TIMEOUT"] = "0.5"
        held = vault.run("write", "secret/x", "v=2", timeout=30)
        assert f"(pid {holder.pid})" in held.stderr and held.returncode != 0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    # The lock file still names the dead holder, but the kernel dropped its flock.
    assert (vault.data_dir / "lock").read_text() == str(holder.pid)
    after = vault.run("write", "secret/x", "v=3", timeout=30)
    assert (after.returncode, after.stderr) == (0, "")
    assert vault("read", "-field=v", "secret/x") == "3\n"
