"""The Secret Backends page, command by command, through the installed ``vault``."""

from __future__ import annotations

import json

from tests.conftest import VaultCLI

MOUNTS_AFTER_MOUNT = """\
Path      Type     Description
generic/  generic
secret/   generic  generic secret storage
sys/      system   system endpoints used for control, policy and debugging
"""


def test_secret_backends_page(vault: VaultCLI) -> None:
    assert vault("write", "secret/hello", "value=world") == (
        "Success! Data written to: secret/hello\n"
    )
    assert vault("read", "secret/hello") == (
        "Key             Value\nlease_duration  2592000\nvalue           world\n"
    )
    assert vault("mount", "generic") == "Successfully mounted 'generic' at 'generic'!\n"
    assert vault("mounts") == MOUNTS_AFTER_MOUNT

    # The bonus: the same backend type mounted twice shares no data.
    missing = vault.run("read", "generic/hello")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "No value found at generic/hello\n"
    vault("write", "generic/hello", "value=other")
    assert vault("read", "-field=value", "generic/hello") == "other\n"
    assert vault("read", "-field=value", "secret/hello") == "world\n"

    assert vault("unmount", "generic/") == "Successfully unmounted 'generic/'!\n"
    assert "generic/" not in vault("mounts")
    # Its data went with it: a new mount at the same path starts empty.
    vault("mount", "generic")
    assert vault.run("read", "generic/hello").returncode == 1


def test_remount_keeps_data(vault: VaultCLI) -> None:
    vault("write", "secret/hello", "value=world")
    assert vault("remount", "secret/", "kv/") == "Successfully remounted from 'secret/' to 'kv/'!\n"
    assert vault("read", "kv/hello", "-field=value") == "world\n"
    assert vault.run("read", "secret/hello").returncode != 0
    assert vault("mounts").splitlines()[1] == "kv/   generic  generic secret storage"


def test_mount_flags_single_and_double_dash(vault: VaultCLI) -> None:
    out = vault("mount", "-path=team", "-description=team secrets", "generic")
    assert out == "Successfully mounted 'generic' at 'team'!\n"
    vault("mount", "--path", "ops", "--description", "ops secrets", "generic")
    lines = vault("mounts").splitlines()
    assert "ops/     generic  ops secrets" in lines
    assert "team/    generic  team secrets" in lines


def test_read_formats_and_fields(vault: VaultCLI) -> None:
    vault("write", "secret/db", "user=admin", "password=s3cret", "ttl=1h")
    assert vault("read", "secret/db") == (
        "Key             Value\n"
        "lease_duration  3600\n"
        "password        s3cret\n"
        "ttl             1h\n"
        "user            admin\n"
    )
    as_json = json.loads(vault("read", "-format=json", "secret/db"))
    assert as_json == {
        "lease_id": "",
        "lease_duration": 3600,
        "renewable": False,
        "data": {"user": "admin", "password": "s3cret", "ttl": "1h"},
        "warnings": None,
    }
    assert vault("read", "--field", "user", "secret/db") == "admin\n"
    missing = vault.run("read", "-field=nope", "secret/db")
    assert (missing.returncode, missing.stderr) == (1, "Field nope not present in secret\n")
    bad = vault.run("read", "-format=yaml", "secret/db")
    assert (bad.returncode, bad.stderr) == (1, "Invalid output format: yaml\n")


def test_write_from_files_and_stdin(vault: VaultCLI) -> None:
    (vault.home / "data.json").write_text(json.dumps({"a": "1", "nested": {"b": 2}}))
    (vault.home / "cert.pem").write_text("-----BEGIN-----\n")
    vault("write", "secret/f", "@data.json")
    vault("write", "secret/g", "cert=@cert.pem", "literal=\\@home")
    vault("write", "secret/h", "-", stdin='{"from": "stdin"}')
    assert json.loads(vault("read", "-format=json", "secret/f"))["data"] == {
        "a": "1",
        "nested": {"b": 2},
    }
    assert vault("read", "-field=cert", "secret/g") == "-----BEGIN-----\n\n"
    assert vault("read", "-field=literal", "secret/g") == "@home\n"
    assert vault("read", "-field=from", "secret/h") == "stdin\n"


def test_delete_and_list(vault: VaultCLI) -> None:
    for name in ("b", "a", "dir/c"):
        vault("write", f"secret/{name}", "v=1")
    assert vault("list", "secret/") == "Keys\na\nb\ndir/\n"
    assert vault("list", "secret") == "Keys\na\nb\ndir/\n"
    assert vault("list", "secret/dir") == "Keys\nc\n"
    assert vault("delete", "secret/a") == "Success! Deleted 'secret/a'\n"
    assert vault("list", "secret/") == "Keys\nb\ndir/\n"
    empty = vault.run("list", "secret/nothing/")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "No entries found\n")


def test_init_says_where_things_are(vault: VaultCLI) -> None:
    out = vault("init")
    assert f"in {vault.data_dir}" in out
    assert str(vault.home / "config" / "vaultlog" / "unseal.key") in out
    key_file = vault.home / "config" / "vaultlog" / "unseal.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert vault.data_dir.stat().st_mode & 0o777 == 0o700
    again = vault.run("init")
    assert again.returncode == 1 and "already exists" in again.stderr
