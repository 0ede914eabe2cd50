"""Failure paths through the installed ``vault``: one line on stderr, no trace, store unchanged."""

from __future__ import annotations

import resource
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backends import Core, Request
from eventstore import decode_unseal_key, encode_unseal_key, new_key
from tests.conftest import VaultCLI, cli_env, open_core, vault_executable

SEGMENT = "00000000000000000001.seg"


def snapshot(home: Path) -> dict[str, bytes]:
    """The bytes of every file of the store and its config.

    The lock file is left out: any writer that takes the lock writes its pid there, and the
    pid is not part of the store's state.
    """
    return {
        str(path.relative_to(home)): path.read_bytes()
        for path in sorted(home.rglob("*"))
        if path.is_file() and path.name != "lock"
    }


def assert_one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command as a user sees it: non-zero exit, one line on stderr, nothing else."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    return lines[0]


def unseal_key_of(cli: VaultCLI) -> bytes:
    return decode_unseal_key((cli.home / "config" / "vaultlog" / "unseal.key").read_text())


def make_directory(home: Path) -> None:
    (home / "adir").mkdir()


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: str  # what the one line must say
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


OTHER_KEY = encode_unseal_key(new_key())

CASES = [
    Case(
        "wrong-unseal-key-write",
        ("write", "secret/x", "v=2"),
        "wrong unseal key",
        env={"VAULTLOG_UNSEAL_KEY": OTHER_KEY},
    ),
    Case(
        "garbage-unseal-key",
        ("write", "secret/x", "v=2"),
        "not valid base64",
        env={"VAULTLOG_UNSEAL_KEY": "not*base64!"},
    ),
    Case(
        "missing-unseal-key-file",
        ("write", "secret/x", "v=2"),
        "no unseal key",
        setup=lambda home: (home / "config" / "vaultlog" / "unseal.key").unlink(),
    ),
    Case("unknown-backend-type", ("mount", "nosuch"), "plugin not found in the catalog: nosuch"),
    Case(
        "mount-under-existing",
        ("mount", "-path=secret/sub", "generic"),
        "path is already in use at secret/",
    ),
    Case(
        "mount-over-existing",
        ("mount", "-path=team", "generic"),
        "path is already in use at team/apps/",
    ),
    Case("mount-sys", ("mount", "-path=sys", "generic"), 'cannot mount "sys/"'),
    Case("unmount-sys", ("unmount", "sys/"), 'cannot unmount "sys/"'),
    Case("remount-sys", ("remount", "sys/", "elsewhere/"), 'cannot remount "sys/"'),
    Case(  # the argument may be a secret typed without its key: it is not echoed
        "bad-pair",
        ("write", "secret/y", "hunter2-is-my-password"),
        "Invalid key/value pair",
    ),
    Case(
        "missing-data-file",
        ("write", "secret/y", "@missing.json"),
        "error reading file 'missing.json'",
    ),
    Case(
        "data-file-is-directory",
        ("write", "secret/y", "k=@adir"),
        "error reading file 'adir'",
        setup=make_directory,
    ),
    Case(
        "stdin-invalid-json",
        ("write", "secret/y", "-"),
        "stdin does not hold valid JSON",
        stdin="{not json",
    ),
    Case("missing-path-argument", ("write",), "Missing argument"),
    Case("unknown-command", ("frobnicate",), "No such command 'frobnicate'"),
    Case("unknown-flag", ("write", "--bogus", "secret/y", "a=b"), "No such option: --bogus"),
    Case(
        "read-without-mount",
        ("read", "nomount/x"),
        'no handler for route "nomount/x". route entry not found.',
    ),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> VaultCLI:
    """A store with a secret and a nested mount, built once and copied for each case."""
    home = tmp_path_factory.mktemp("seeded")
    cli = VaultCLI(home, cli_env(home))
    cli("write", "secret/x", "v=1")
    cli("mount", "-path=team/apps", "generic")
    return cli


@pytest.fixture
def store(seeded: VaultCLI, tmp_path: Path) -> VaultCLI:
    home = tmp_path / "home"
    shutil.copytree(seeded.home, home)
    return VaultCLI(home, cli_env(home))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_failure_is_one_line_and_changes_nothing(store: VaultCLI, case: Case) -> None:
    if case.setup:
        case.setup(store.home)
    store.env.update(case.env)
    before = snapshot(store.home)
    line = assert_one_line_failure(store.run(*case.args, stdin=case.stdin))
    assert case.expect in line
    assert "hunter2" not in line
    assert snapshot(store.home) == before


def run_with_file_size_limit(cli: VaultCLI, limit: int, *args: str) -> subprocess.CompletedProcess:
    """``vault`` with RLIMIT_FSIZE: writing past ``limit`` bytes fails with EFBIG (a full disk)."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return subprocess.run(
        [vault_executable(), *args],
        capture_output=True,
        text=True,
        env=cli.env,
        cwd=cli.home,
        timeout=60,
        preexec_fn=limit_file_size,
    )


@contextmanager
def opened(cli: VaultCLI, *, write: bool) -> Iterator[Core]:
    """The CLI's store opened in this process, to set up or inspect it quickly."""
    core = open_core(cli.data_dir, unseal_key_of(cli), write=write, lock_timeout=10)
    try:
        yield core
    finally:
        core.store.close()


def write_in_process(cli: VaultCLI, *paths: str) -> None:
    with opened(cli, write=True) as core:
        for path in paths:
            core.handle(Request("write", path, {"v": path}))


def inspect(cli: VaultCLI) -> tuple[list[int], dict[str, str | None]]:
    """The seqs of a full read of the log, and the value ``v`` at each secret/ path."""
    with opened(cli, write=False) as core:
        seqs = [record.seq for record in core.store.log.records()]
        listed = core.handle(Request("list", "secret/")).data or {}
        values = {}
        for key in listed.get("keys", []):
            found = core.handle(Request("read", f"secret/{key}")).data
            values[key] = found["v"] if found else None
    assert seqs == list(range(1, len(seqs) + 1))
    return seqs, values


@pytest.mark.parametrize("room", [0, 100], ids=["no-room", "room-for-part-of-a-record"])
def test_full_disk_on_write(vault: VaultCLI, room: int) -> None:
    vault("write", "secret/a", "v=secret/a")
    write_in_process(vault, "secret/b")
    segment = vault.data_dir / SEGMENT
    before = segment.read_bytes()
    seqs, _ = inspect(vault)

    full = run_with_file_size_limit(
        vault, len(before) + room, "write", "secret/full", "v=" + "x" * 500
    )
    assert "File too large" in assert_one_line_failure(full)
    assert segment.read_bytes() == before  # not even part of the record is left behind

    vault("write", "secret/c", "v=secret/c")  # without the limit the store takes writes again
    after, values = inspect(vault)
    assert after == [*seqs, seqs[-1] + 1]
    assert values == {"a": "secret/a", "b": "secret/b", "c": "secret/c"}


def test_full_disk_on_mount_leaves_no_mount_and_no_key(vault: VaultCLI) -> None:
    vault("write", "secret/a", "v=secret/a")
    size = (vault.data_dir / SEGMENT).stat().st_size
    full = run_with_file_size_limit(vault, size, "mount", "-path=team", "generic")
    assert "File too large" in assert_one_line_failure(full)

    vault("write", "secret/b", "v=secret/b")  # a writer opens the store and cleans up
    with opened(vault, write=False) as core:
        assert sorted(core.store.state.mounts.by_path) == ["secret/", "sys/"]
        # the data key saved for the mount that never reached the log is shredded
        assert set(core.store.keyring.mounts) == set(core.store.state.mounts.by_id)
    assert inspect(vault)[1] == {"a": "secret/a", "b": "secret/b"}


def record_offsets(data: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of each record in a segment's bytes."""
    offsets, pos = [], 8  # after the segment magic
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        offsets.append((pos, length))
        pos += 8 + length
    return offsets


@pytest.mark.parametrize("where", ["payload", "length-field"])
def test_corrupted_record_is_reported_and_left_alone(vault: VaultCLI, where: str) -> None:
    vault("write", "secret/x", "v=1")  # seq 3, after the two default mounts
    write_in_process(vault, "secret/y", "secret/z")
    segment = vault.data_dir / SEGMENT
    data = bytearray(segment.read_bytes())
    offset, length = record_offsets(bytes(data))[2]
    if where == "payload":
        data[offset + 8 + length // 2] ^= 0x40
    else:  # the record now claims to run past the end of the file, like a torn write
        data[offset] ^= 0x01
    segment.write_bytes(data)
    before = snapshot(vault.home)

    for args in (("read", "secret/x"), ("write", "secret/w", "v=1")):
        line = assert_one_line_failure(vault.run(*args))
        assert "(seq 3)" in line and SEGMENT in line, line
        assert snapshot(vault.home) == before
