"""``vault operator migrate -config=FILE`` through the installed ``vault``: a store with some
history copied file -> PostgreSQL -> file is the same store (records byte for byte, the
same head, history and state, readable with the same key); refusals change nothing."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import psycopg
import pytest

from eventstore import PostgresStorage
from eventstore.lock import WriterLock
from eventstore.postgres import WRITER_LOCK
from projections import Store
from tests.conftest import VaultCLI, vault_executable
from tools.seal import SERVER_LOCK, SealConfig

SUCCESS = "Success! All of the keys have been migrated."


def side(kind: str, where: str | Path) -> str:
    key = "path" if kind == "file" else "connection_url"
    return f'"{kind}" {{ {key} = "{where}" }}'


def write_config(tmp_path: Path, source: str, destination: str, name: str = "migrate.hcl") -> Path:
    file = tmp_path / name
    file.write_text(f"storage_source {source}\nstorage_destination {destination}\n")
    return file


def migrate(vault: VaultCLI, config: Path) -> subprocess.CompletedProcess[str]:
    return vault.run("operator", "migrate", f"-config={config}")


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert (result.returncode, result.stdout) == (code, ""), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """The head SEQ:HASH a successful migration printed."""
    assert result.returncode == 0 and result.stderr == "", result.stderr
    first, second = result.stdout.splitlines()
    assert first == SUCCESS
    count, _, head = second.removeprefix("Copied ").partition(" records; head ")
    assert head.startswith(f"{count}:")
    return head


def with_history(vault: VaultCLI) -> None:
    """Writes, an overwrite, a delete, a mount and an unmount."""
    vault("write", "secret/db", "password=first")
    vault("write", "secret/app", "token=t1", "level=2")
    vault("write", "secret/db", "password=second")
    vault("delete", "secret/app")
    vault("mount", "generic")
    vault("write", "generic/gone", "value=shredded")
    vault("unmount", "generic/")


def elsewhere(vault: VaultCLI, directory: Path) -> VaultCLI:
    """The same user (the same unseal key) on the store in ``directory``."""
    return VaultCLI(vault.home, {**vault.env, "VAULTLOG_DIR": str(directory)})


def test_a_store_goes_to_postgresql_and_back_unchanged(
    vault: VaultCLI, pg_url: str, tmp_path: Path
) -> None:
    with_history(vault)
    (vault.data_dir / "seal.json").write_bytes(SealConfig().to_json())  # as a server keeps it
    source_head = vault("audit", "verify").split("head ")[1].strip()
    to_pg = write_config(tmp_path, side("file", vault.data_dir), side("postgresql", pg_url))
    assert succeeded(migrate(vault, to_pg)) == source_head

    back = tmp_path / "back"
    json_config = tmp_path / "back.json"  # the same file in JSON
    json_config.write_text(
        json.dumps(
            {
                "storage_source": {"postgresql": {"connection_url": pg_url}},
                "storage_destination": {"file": {"path": str(back)}},
                "cluster_addr": "https://127.0.0.1:8201",
            }
        )
    )
    assert succeeded(migrate(vault, json_config)) == source_head

    # The records byte for byte, the keyring and the seal's shape as they were.
    segments = sorted(p.name for p in vault.data_dir.glob("*.seg"))
    assert sorted(p.name for p in back.glob("*.seg")) == segments
    for name in [*segments, "keyring", "seal.json"]:
        assert (back / name).read_bytes() == (vault.data_dir / name).read_bytes()
    assert not (back / ".migrating").exists()
    storage = PostgresStorage(pg_url)
    rows = storage.run("SELECT raw FROM vaultlog_records ORDER BY seq")
    data = (vault.data_dir / segments[0]).read_bytes()
    assert b"".join(bytes(raw) for (raw,) in rows) == data[8:]  # after the segment magic
    assert storage.meta("keyring") == (1, (vault.data_dir / "keyring").read_bytes())
    assert storage.meta("seal.json") == (1, SealConfig().to_json())

    # The same history and state, on PostgreSQL and on the file store it came back to.
    key = vault.unseal_key()
    events = vault.events()
    stores = [
        Store.open(vault.data_dir, key, write=False),
        Store.open_postgres(storage, key, write=False),
        Store.open(back, key, write=False),
    ]
    try:
        for store in stores:
            assert list(store.events()) == events
            assert store.state.mounts == stores[0].state.mounts
            assert store.state.data == stores[0].state.data
            assert store.state.removed == stores[0].state.removed
    finally:
        for store in stores:
            store.close()

    copy = elsewhere(vault, back)
    assert copy("read", "-field=password", "secret/db") == "second\n"
    assert copy("list", "secret/") == "Keys\ndb\n"
    assert "generic/" not in copy("mounts")
    assert copy("audit", "verify", f"-against={source_head}").startswith("Verified")


def test_a_destination_holding_a_store_is_refused_and_left_alone(
    vault: VaultCLI, pg_url: str, tmp_path: Path
) -> None:
    vault("write", "secret/x", "a=b")
    to_pg = write_config(tmp_path, side("file", vault.data_dir), side("postgresql", pg_url))
    succeeded(migrate(vault, to_pg))
    storage = PostgresStorage(pg_url)
    before = storage.run("SELECT seq, raw FROM vaultlog_records ORDER BY seq")
    line = one_line_error(migrate(vault, to_pg), 2)
    assert line.startswith("Error migrating: the destination postgresql://")
    assert line.endswith("is not empty (it holds records); nothing was changed")
    assert storage.run("SELECT seq, raw FROM vaultlog_records ORDER BY seq") == before

    other = elsewhere(vault, tmp_path / "other")
    other("write", "secret/y", "c=d")
    files = {p.name: p.read_bytes() for p in other.data_dir.iterdir() if p.is_file()}
    to_other = write_config(tmp_path, side("file", vault.data_dir), side("file", other.data_dir))
    line = one_line_error(migrate(vault, to_other), 2)
    assert line == (
        f"Error migrating: the destination {other.data_dir} is not empty (it holds keyring); "
        "nothing was changed"
    )
    assert {p.name: p.read_bytes() for p in other.data_dir.iterdir() if p.is_file()} == files


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            'storage_source "file" { path = "/a" }\nstorage_destination "file" { path = "/b" }\n'
            "telemetry { x = 1 }\n",
            "unknown key 'telemetry'",
        ),
        (
            'storage_source "file" { path = "/a", node_id = "n" }\n'
            'storage_destination "file" { path = "/b" }\n',
            "unknown storage_source \"file\" key 'node_id'",
        ),
        (
            'storage_source "file" { }\nstorage_destination "file" { path = "/b" }\n',
            'storage_source "file" needs a path',
        ),
        (
            'storage_source "file" { path = "/a" }\n'
            'storage_destination "postgresql" { connection_url = "mysql://x" }\n',
            'storage_destination "postgresql" needs a connection_url (postgresql://...)',
        ),
        (
            'storage_source "consul" { path = "/a" }\nstorage_destination "file" { path = "/b" }\n',
            'storage_source "consul" is not supported (file, postgresql)',
        ),
        ('storage_source "file" { path = "/a" }\n', "exactly one 'storage_destination' block"),
        ('storage_source "file" { path = = }', "invalid HCL"),
        ('{"storage_source": {"file": {"path": "/a"}}, "extra": 1}', "unknown key 'extra'"),
    ],
)
def test_a_bad_configuration_is_one_line_naming_the_file(
    vault: VaultCLI, tmp_path: Path, text: str, says: str
) -> None:
    config = tmp_path / "migrate.hcl"
    config.write_text(text)
    line = one_line_error(migrate(vault, config), 1)
    assert line.startswith(f"Error loading configuration from {config}: ")
    assert says in line


def test_without_a_configuration_it_says_so(vault: VaultCLI, tmp_path: Path) -> None:
    missing = one_line_error(vault.run("operator", "migrate"), 1)
    assert missing == "Must specify exactly one config path using -config"
    nope = tmp_path / "nope.hcl"
    line = one_line_error(migrate(vault, nope), 1)
    assert line == f"Error loading configuration from {nope}: No such file or directory"


def test_a_damaged_source_fails_and_leaves_the_destination_empty(
    vault: VaultCLI, pg_url: str, tmp_path: Path
) -> None:
    vault("write", "secret/a", "x=1")
    vault("write", "secret/b", "y=2")
    (segment,) = vault.data_dir.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))

    to_pg = write_config(tmp_path, side("file", vault.data_dir), side("postgresql", pg_url))
    line = one_line_error(migrate(vault, to_pg), 2)
    assert line.startswith("Error migrating: the source is damaged: ")
    assert line.endswith("; the destination was left empty")
    assert f"in segment {segment.name} at offset" in line
    assert PostgresStorage(pg_url).is_empty()

    copy = tmp_path / "copy"
    to_file = write_config(tmp_path, side("file", vault.data_dir), side("file", copy))
    assert one_line_error(migrate(vault, to_file), 2) == line
    assert sorted(p.name for p in copy.iterdir()) == ["lock", "server.lock"]


def test_a_torn_last_record_is_not_copied_and_said(vault: VaultCLI, tmp_path: Path) -> None:
    vault("write", "secret/a", "x=1")
    vault("write", "secret/b", "y=2")
    (segment,) = vault.data_dir.glob("*.seg")
    whole = vault.events()
    with open(segment, "r+b") as f:  # a write cut short: never acknowledged
        f.truncate(segment.stat().st_size - 5)
    config = write_config(tmp_path, side("file", vault.data_dir), side("file", tmp_path / "c"))
    done = migrate(vault, config)
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == SUCCESS
    assert f"Copied {len(whole) - 1} records; head {len(whole) - 1}:" in done.stdout
    (warning,) = done.stderr.splitlines()
    assert warning.startswith(
        f"Warning: the source ends with an incomplete record at segment {segment.name} at offset "
    )
    assert warning.endswith("(a write that never finished, never acknowledged): not copied")


def test_a_store_in_use_is_refused(vault: VaultCLI, pg_url: str, tmp_path: Path) -> None:
    vault("write", "secret/x", "a=b")
    to_pg = write_config(tmp_path, side("file", vault.data_dir), side("postgresql", pg_url))
    server = WriterLock(vault.data_dir, SERVER_LOCK)  # as a running server holds it
    server.acquire(0)
    try:
        line = one_line_error(migrate(vault, to_pg), 2)
    finally:
        server.release()
    assert line == (
        f"Error migrating: the source {vault.data_dir} is in use: a server holds its "
        f"server.lock (pid {os.getpid()}); stop it before migrating"
    )
    assert PostgresStorage(pg_url).is_empty()

    succeeded(migrate(vault, to_pg))
    back = write_config(tmp_path, side("postgresql", pg_url), side("file", tmp_path / "back"))
    with psycopg.connect(pg_url, autocommit=True) as active:  # as the active node holds it
        active.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK,))
        line = one_line_error(migrate(vault, back), 2)
    assert line.startswith("Error migrating: the source postgresql://")
    assert line.endswith("is in use: a server holds its writer lock; stop it before migrating")
    assert not (tmp_path / "back").exists()


def test_a_progress_bar_only_on_a_terminal(vault: VaultCLI, tmp_path: Path) -> None:
    vault("write", "secret/x", "a=b")
    config = write_config(tmp_path, side("file", vault.data_dir), side("file", tmp_path / "c"))
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [vault_executable(), "operator", "migrate", f"-config={config}"],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**vault.env, "COLUMNS": "100"},
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert done.returncode == 0
    assert done.stdout.decode().startswith(SUCCESS)
    assert b"copying" in shown and b"verifying" in shown
