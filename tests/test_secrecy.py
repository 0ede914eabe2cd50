"""Secrets stay secret: no plaintext on disk or in error messages, and unmount shreds.

Everything goes through the installed ``vault``; the files are then inspected as an attacker
holding a copy of the data directory (and, for shredding, the unseal key) would.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from eventstore import (
    FileLog,
    Keyring,
    Sealer,
    SealError,
    ShreddedError,
    decode_unseal_key,
    encode_unseal_key,
    new_key,
)
from eventstore.lock import WriterLock
from projections import Event, MountCreated, MountRemoved, SecretWritten, decode
from tests.conftest import VaultCLI


def new_marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


def encodings(marker: str) -> list[bytes]:
    return [marker.encode(), marker.encode("utf-16-le"), marker.encode("utf-16-be")]


def files_under(directory: Path) -> Iterator[Path]:
    return (path for path in sorted(directory.rglob("*")) if path.is_file())


def files_holding(directory: Path, marker: str) -> list[str]:
    """Names of the files under ``directory`` whose bytes contain ``marker`` in any form."""
    return [
        str(path.relative_to(directory))
        for path in files_under(directory)
        if any(form in path.read_bytes() for form in encodings(marker))
    ]


def unseal_key_of(vault: VaultCLI) -> bytes:
    return decode_unseal_key((vault.home / "config" / "vaultlog" / "unseal.key").read_text())


def events_in(directory: Path, keyring: Keyring) -> list[Event]:
    return [decode(record) for record in FileLog(directory, keyring).records()]


def test_no_plaintext_value_reaches_the_data_directory(vault: VaultCLI) -> None:
    inputs = vault.home / "inputs"
    inputs.mkdir()
    markers = {name: new_marker() for name in ("pair", "at-file", "json-file", "stdin", "dash")}
    (inputs / "value.txt").write_text(markers["at-file"])
    (inputs / "data.json").write_text(json.dumps({"value": markers["json-file"]}))

    vault("write", "secret/pair", f"value={markers['pair']}", "user=admin")
    vault("write", "secret/at-file", f"value=@{inputs / 'value.txt'}")
    vault("write", "secret/json-file", f"@{inputs / 'data.json'}")
    vault("write", "secret/stdin", "-", stdin=json.dumps({"value": markers["stdin"]}))
    vault("write", "secret/dash", "value=-", stdin=markers["dash"])
    vault("mount", "generic")
    vault("write", "generic/again", f"value={markers['pair']}")  # a second mount, same value
    vault("delete", "secret/pair")  # and a deletion appends more records

    for name, marker in markers.items():
        if name != "pair":  # every value was really stored, so its absence on disk means something
            assert vault("read", "-field=value", f"secret/{name}") == f"{marker}\n"
        assert files_holding(vault.data_dir, marker) == [], name
        assert files_holding(vault.home / "config", marker) == [], name
    assert sorted(p.name for p in files_under(vault.data_dir))  # the store is really there


def failing_commands(marker: str) -> list[tuple[tuple[str, ...], str | None]]:
    """Commands that carry ``marker`` as a value and fail; stdin where one is read."""
    return [
        (("write", "nowhere/x", f"value={marker}"), None),
        (("write", "secret/x", marker), None),  # a value with its key forgotten
        (("write", "sys/mounts/x", f"value={marker}"), None),
        (("write", "secret/x", f"value={marker}", "-bogus"), None),
        (("write", "secret/x", f"value={marker}", "--bogus=1"), None),
        (("write", "secret/x", "-"), json.dumps({"value": marker})[:-1]),  # cut-short JSON
        (("write", "secret/x", "-"), json.dumps([marker])),
        (("write", "secret/x", f"value={marker}", "extra"), None),
    ]


def test_failing_commands_do_not_echo_values(vault: VaultCLI) -> None:
    vault("write", "secret/x", "value=before")
    marker = new_marker()
    for args, stdin in failing_commands(marker):
        result = vault.run(*args, stdin=stdin)
        assert result.returncode != 0, args
        for form in encodings(marker):
            assert form.decode("latin-1") not in result.stdout + result.stderr, args
        assert "Traceback" not in result.stderr, args

    # Failures below the CLI: the store locked by another writer, a wrong unseal key.
    lock = WriterLock(vault.data_dir)
    lock.acquire(timeout=5)
    try:
        locked = VaultCLI(vault.home, {**vault.env, "VAULTLOG_LOCK_TIMEOUT": "0.2"})
        result = locked.run("write", "secret/x", f"value={marker}")
    finally:
        lock.release()
    assert result.returncode != 0 and "locked" in result.stderr
    assert marker not in result.stdout + result.stderr
    wrong = VaultCLI(vault.home, {**vault.env, "VAULTLOG_UNSEAL_KEY": encode_unseal_key(new_key())})
    result = wrong.run("write", "secret/x", f"value={marker}")
    assert result.returncode != 0 and "unseal key" in result.stderr
    assert marker not in result.stdout + result.stderr

    assert files_holding(vault.data_dir, marker) == []
    assert vault("read", "-field=value", "secret/x") == "before\n"


def test_a_read_given_a_value_by_mistake_does_not_echo_it(vault: VaultCLI) -> None:
    vault("write", "secret/x", "value=before")
    marker = new_marker()
    result = vault.run("read", "secret/x", f"value={marker}")
    assert result.returncode != 0
    assert marker not in result.stdout + result.stderr


def test_unmount_shreds_values_even_in_an_old_copy_of_the_log(vault: VaultCLI) -> None:
    kept, shredded = new_marker(), {"a": new_marker(), "dir/b": new_marker()}
    vault("write", "secret/kept", f"value={kept}")
    vault("mount", "generic")
    for path, marker in shredded.items():
        vault("write", f"generic/{path}", f"value={marker}")
    vault("write", "generic/a", f"value={shredded['a']}", "again=yes")  # two versions of a

    backup = vault.home / "backup"
    shutil.copytree(vault.data_dir, backup)
    vault("unmount", "generic/")

    unseal_key = unseal_key_of(vault)
    keyring = Keyring.load(vault.data_dir, unseal_key)
    old_keyring = Keyring.load(backup, unseal_key)
    mount_id = next(
        e.mount_id
        for e in events_in(backup, keyring)
        if isinstance(e, MountCreated) and e.path == "generic/"
    )

    # Metadata: every record of the old copy still opens under the surviving barrier keys,
    # and says who wrote which path of the removed mount.
    backup_events = events_in(backup, keyring)
    written = [e for e in backup_events if isinstance(e, SecretWritten) and e.mount_id == mount_id]
    assert sorted(e.path for e in written) == ["a", "a", "dir/b"]
    assert all(e.actor for e in written)
    current_events = events_in(vault.data_dir, keyring)
    assert current_events[: len(backup_events)] == backup_events
    assert any(isinstance(e, MountRemoved) and e.mount_id == mount_id for e in current_events)

    # The data key is gone from the current keyring, under its id and as bytes.
    assert mount_id not in keyring.mounts
    with pytest.raises(ShreddedError):
        keyring.mount_sealer(mount_id)
    old_key = old_keyring.mounts[mount_id]
    surviving = [*keyring.terms.values(), *keyring.mounts.values(), keyring.audit_key, unseal_key]
    assert old_key not in surviving
    assert keyring.mounts  # secret/ still has its key, so "every key" is not an empty list

    # Values: with the old key each one opens (so these bytes really are the secrets); with
    # every key still on disk none does, however the value is bound to its mount and path.
    for event in written:
        contexts = [
            *itertools.permutations(("value", mount_id, event.path)),
            (mount_id, event.path),
            (),
        ]
        opened = []
        for context in contexts:
            with contextlib.suppress(SealError):
                opened.append(msgpack.unpackb(Sealer(old_key).open(event.value, *context)))
        assert [value["value"] for value in opened] == [shredded[event.path]]
        for key, context in itertools.product(surviving, contexts):
            with pytest.raises(SealError):
                Sealer(key).open(event.value, *context)

    # The rest of the store is untouched, and nothing of the shredded values is on disk.
    assert vault("read", "-field=value", "secret/kept") == f"{kept}\n"
    for marker in shredded.values():
        assert files_holding(vault.data_dir, marker) == []
        assert files_holding(backup, marker) == []

    # The keyring was replaced through a temp file: none is left behind.
    leftovers = [p.name for p in vault.data_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert not [p for p in vault.data_dir.iterdir() if p.name.endswith(".tmp")]
