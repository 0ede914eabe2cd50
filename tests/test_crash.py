"""Writers killed with SIGKILL at random moments lose nothing they acknowledged.

A child process writes in a tight loop through the public API (``backends.Core``) and prints
each write's number, flushed, only after ``Core.handle`` returned: a printed number is an
acknowledged write. The test kills the child at a random moment, then checks the store the
way a user would rely on it: it opens for writing, every acknowledged write reads back with
its value, and a full read of the log from seq 1 succeeds with contiguous seqs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backends import Core, Request
from eventstore import decode_unseal_key, encode_unseal_key
from tests.conftest import VaultCLI, open_core, vault_executable

STORES, TRIALS_PER_STORE = 4, 5  # 20 kills; a store's log stays small to replay

WRITE_LOOP = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import eventstore.log
    from backends import Core, Registry, Request
    from eventstore import decode_unseal_key
    from projections import Store

    # Small segments, so that kills also land while a new segment is being created.
    eventstore.log.SEGMENT_BYTES = 64 << 10
    trial, pad = sys.argv[1], "p" * int(sys.argv[2])
    key = decode_unseal_key(os.environ["TEST_UNSEAL_KEY"])
    store = Store.open(Path(os.environ["TEST_STORE"]), key, write=True, lock_timeout=10)
    core = Core(store, Registry())
    core.maintain()
    print("ready", flush=True)
    i = 0
    while True:
        core.handle(Request("write", f"secret/t{trial}/k{i}", {"v": f"{trial}-{i}", "pad": pad}))
        print(i, flush=True)
        i += 1
    """
)


def open_for_writing(directory: Path, key: bytes) -> None:
    """The store opens for writing: the dead writer's lock is gone and its torn tail is cut."""
    open_core(directory, key, write=True, lock_timeout=10).store.close()


def full_read(reader: Core) -> int:
    """Read every record from seq 1; the seqs must be contiguous. The last seq."""
    seqs = [record.seq for record in reader.store.log.records()]
    assert seqs == list(range(1, len(seqs) + 1))
    return len(seqs)


def written_keys(reader: Core, prefix: str) -> list[str]:
    return (reader.handle(Request("list", prefix)).data or {}).get("keys") or []


def value_at(reader: Core, path: str) -> str | None:
    data = reader.handle(Request("read", path)).data
    return None if data is None else data["v"]


def run_and_kill(directory: Path, key: bytes, trial: int, rng: random.Random) -> list[int]:
    """Start the write loop, SIGKILL it at a random moment, return the acknowledged writes."""
    env = {
        **os.environ,
        "TEST_STORE": str(directory),
        "TEST_UNSEAL_KEY": encode_unseal_key(key),
    }
    pad = rng.choice([0, 0, 1000, 20000])  # records of a few hundred bytes to a few pages
    child = subprocess.Popen(
        [sys.executable, "-c", WRITE_LOOP, str(trial), str(pad)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        if trial == TRIALS_PER_STORE - 1:
            # Now and then count from the start, so the kill may land while the store opens
            # (lock, keyring, tail recovery, replay) rather than in the write loop.
            time.sleep(rng.uniform(0.1, 0.5))
        else:
            assert child.stdout.readline() == b"ready\n", child.stderr.read()
            time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        # Read through the buffered pipe objects: readline() above may have buffered acks
        # beyond "ready", which communicate() would skip (it reads the raw descriptors).
        child.wait(timeout=30)
        out, err = child.stdout.read(), child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, err.decode()
    lines = out.decode().split("\n")[:-1]  # only whole lines; a cut-off one is not an ack
    return [int(line) for line in lines if line != "ready"]


@pytest.mark.parametrize("store", range(STORES))
def test_sigkill_during_writes_loses_no_acknowledged_write(tmp_path: Path, store: int) -> None:
    """Kill after kill on one store: each recovery starts from the last one's leftovers."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    directory, key = tmp_path / "store", os.urandom(32)
    open_for_writing(directory, key)
    acknowledged: dict[int, int] = {}  # trial -> number of acknowledged writes
    last_seq = 2  # the default mounts
    for trial in range(TRIALS_PER_STORE):
        where = f"seed {seed}, trial {trial}"
        acks = run_and_kill(directory, key, trial, rng)
        assert acks == list(range(len(acks))), where
        acknowledged[trial] = len(acks)

        open_for_writing(directory, key)
        reader = open_core(directory, key, write=False)
        try:
            seq = full_read(reader)
            assert seq >= last_seq + len(acks), where
            last_seq = seq
            # Every acknowledged write is there, and at most one more: the one that was
            # durable when the kill came, before its number was printed.
            keys = written_keys(reader, f"secret/t{trial}/")
            assert len(keys) - len(acks) in (0, 1), where
            assert sorted(keys) == sorted(f"k{i}" for i in range(len(keys))), where
            for i in range(len(keys)):
                assert value_at(reader, f"secret/t{trial}/k{i}") == f"{trial}-{i}", where
        finally:
            reader.store.close()

    # After all the crashes, every earlier trial's writes are still there.
    reader = open_core(directory, key, write=False)
    try:
        assert full_read(reader) == last_seq
        for trial, count in acknowledged.items():
            keys = written_keys(reader, f"secret/t{trial}/")
            assert count <= len(keys) <= count + 1
            for i in range(count):
                assert value_at(reader, f"secret/t{trial}/k{i}") == f"{trial}-{i}"
    finally:
        reader.store.close()
    assert sum(acknowledged.values()) > 0, "no trial got as far as a write"
    assert len(list(directory.glob("*.seg"))) > 1, "the writes never filled a segment"


def test_sigkill_during_vault_write_processes(vault: VaultCLI) -> None:
    """A shell loop of ``vault write`` notes each key after its exit 0; kill the whole group."""
    vault("write", "secret/cli/seed", "v=seed")
    acked = vault.home / "acked"
    loop = textwrap.dedent(
        """
        i=0
        while :; do
            "$VAULT" write "secret/cli/k$i" "v=$i" >/dev/null || exit 1
            echo "$i" >> "$ACKED"
            i=$((i + 1))
        done
        """
    )
    env = {**vault.env, "VAULT": vault_executable(), "ACKED": str(acked)}
    driver = subprocess.Popen(
        ["sh", "-c", loop], env=env, cwd=vault.home, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        time.sleep(random.uniform(1.0, 2.5))  # a few writes done, one in flight
        os.killpg(driver.pid, signal.SIGKILL)
        _, err = driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == -signal.SIGKILL, err.decode()
    acks = [int(line) for line in acked.read_text().split()] if acked.exists() else []
    assert acks == list(range(len(acks)))

    after = vault.run("write", "secret/cli/after", "v=after", timeout=30)
    assert (after.returncode, after.stderr) == (0, "")
    key = decode_unseal_key((vault.home / "config" / "vaultlog" / "unseal.key").read_text())
    reader = open_core(vault.data_dir, key, write=False)
    try:
        full_read(reader)
        keys = written_keys(reader, "secret/cli/")
        assert {"seed", "after", *(f"k{i}" for i in acks)} <= set(keys)
        assert len(keys) - len(acks) in (2, 3)  # at most the one in flight besides
        for i in acks:
            assert value_at(reader, f"secret/cli/k{i}") == str(i)
    finally:
        reader.store.close()


CRASH_AT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import eventstore.log
    from backends import Core, Registry, Request
    from eventstore import Keyring, decode_unseal_key
    from projections import Store

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    point, directory = sys.argv[1], Path(sys.argv[2])
    key = decode_unseal_key(os.environ["TEST_UNSEAL_KEY"])
    # The log writes its bytes through write_all (the keyring through its own): dying there
    # is dying just before a record reaches the segment.
    if point == "first-use":  # the keyring is saved, the default mounts are not yet logged
        eventstore.log.write_all = die
    store = Store.open(directory, key, write=True)
    core = Core(store, Registry())
    core.maintain()
    if point == "mount":  # the new mount's key is saved, its mount.created is not logged
        eventstore.log.write_all = die
        core.handle(Request("write", "sys/mounts/team", {"type": "generic"}))
    if point == "unmount":  # mount.removed is durable, the mount's key not yet destroyed
        core.handle(Request("write", "sys/mounts/team", {"type": "generic"}))
        core.handle(Request("write", "team/x", {"v": "1"}))
        Keyring.save = die
        core.handle(Request("delete", "sys/mounts/team"))
    """
)


@pytest.mark.parametrize("point", ["first-use", "mount", "unmount"])
def test_sigkill_at_a_chosen_point(tmp_path: Path, point: str) -> None:
    """A crash between two steps of one change leaves a usable store, not a half state."""
    directory, key = tmp_path / "store", os.urandom(32)
    if point != "first-use":
        open_for_writing(directory, key)
    env = {**os.environ, "TEST_UNSEAL_KEY": encode_unseal_key(key)}
    child = subprocess.run(
        [sys.executable, "-c", CRASH_AT, point, str(directory)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()

    writer = open_core(directory, key, write=True, lock_timeout=10)
    try:
        assert sorted(writer.store.state.mounts.by_path) == ["secret/", "sys/"]
        # No data key outlives its mount: the interrupted change's key is shredded.
        assert set(writer.store.keyring.mounts) == set(writer.store.state.mounts.by_id)
        writer.handle(Request("write", "secret/after", {"v": "after"}))
    finally:
        writer.store.close()
    reader = open_core(directory, key, write=False)
    try:
        full_read(reader)
        assert value_at(reader, "secret/after") == "after"
    finally:
        reader.store.close()
