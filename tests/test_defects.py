"""Open defects, each as a user of the installed ``vault`` meets it.

Every test here drives the public CLI in a subprocess (``VaultCLI``) and, where a defect
needs damage, changes files in the data directory from the test process. Each section
names one defect; each test's docstring says what a user would see once it is fixed.

A "one-line error" is ``tests.test_failures.assert_one_line_failure``: a non-zero exit,
exactly one non-empty line on stderr, nothing on stdout, no traceback.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import VaultCLI, cli_env, vault_executable
from tests.test_failures import (
    OTHER_KEY,
    SEGMENT,
    assert_one_line_failure,
    record_offsets,
    run_with_file_size_limit,
)
from tests.test_failures import snapshot as files_of
from tests.test_tamper import verified, verify_fails

ROOT = Path(__file__).resolve().parent.parent
BIG = "1" + "0" * 400  # a number of seconds no duration can hold
HEX_ID = re.compile(r"\b[0-9a-f]{16}\b")  # an internal mount or request id


# ---- helpers -------------------------------------------------------------------------------


def copy_store(source: VaultCLI, home: Path) -> VaultCLI:
    """A private copy of ``source``'s home (data and unseal key), with its VAULTLOG_ settings."""
    shutil.copytree(source.home, home)
    cli = VaultCLI(home, cli_env(home))
    for name, value in source.env.items():
        if name.startswith("VAULTLOG_") and name != "VAULTLOG_DIR":
            cli.env[name] = value
    return cli


def audit_lines(cli: VaultCLI) -> int:
    """How many events the audit trail shows: a refused request must add none."""
    return len(cli("audit", "-format=json").splitlines())


def segment_file(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


def segment_bytes(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob("*.seg"))}


def evidence(data_dir: Path) -> dict[str, bytes]:
    """The files that still know how far the log reached: version index and snapshots."""
    return {
        str(p.relative_to(data_dir)): p.read_bytes()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and (p.name.startswith("versions.") or p.parent.name == "snapshots")
    }


def split_segment(data_dir: Path, *firsts: int) -> None:
    """Rewrite the single segment as several, the next one starting at each seq in ``firsts``
    (as a store whose segments rolled over would hold them). Records are ``length | crc32c |
    payload`` after the 8-byte magic; the first segment starts at seq 1."""
    path = data_dir / SEGMENT
    data = path.read_bytes()
    magic, offsets = data[:8], record_offsets(data)
    bounds = [1, *firsts, len(offsets) + 1]
    for first, after in itertools.pairwise(bounds):
        start = offsets[first - 1][0]
        end = offsets[after - 2][0] + 8 + offsets[after - 2][1]
        (data_dir / segment_file(first)).write_bytes(magic + data[start:end])


def last_seq(data_dir: Path) -> int:
    """The seq of the last whole record in the last segment."""
    name = sorted(p.name for p in data_dir.glob("*.seg"))[-1]
    return int(name[:20]) + len(record_offsets((data_dir / name).read_bytes())) - 1


def cut_last_record(data_dir: Path, *, torn: bool) -> int:
    """Cut the single segment at the start of its last record (a clean cut, nothing looks
    torn) or in the middle of it (a torn write); the seq the log then ends at."""
    path = data_dir / SEGMENT
    offsets = record_offsets(path.read_bytes())
    offset, length = offsets[-1]
    os.truncate(path, offset + 8 + length // 2 if torn else offset)
    return len(offsets) - 1


# Running ``vault`` as a user whom file modes apply to. The tests run as root, and root
# ignores modes; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (dropped from the bounding
# set before exec) root is held to the owner bits like anyone. Where that is not allowed,
# the run falls back to uid/gid 65534 and the home is handed to that user.

NOBODY = 65534
_PR_CAPBSET_DROP = 24
_DAC_CAPABILITIES = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
_LIBC = ctypes.CDLL(None, use_errno=True)


def _drop_dac_capabilities() -> None:
    for capability in _DAC_CAPABILITIES:
        if _LIBC.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@functools.cache
def _unprivileged() -> Callable[[], None] | None:
    """How to start a process that file modes apply to (None: this one already is)."""
    if os.geteuid() != 0:
        return None
    probe = Path(f"/tmp/.vaultlog-mode-probe-{os.getpid()}")
    probe.write_text("")
    probe.chmod(0)
    try:
        result = subprocess.run(
            [sys.executable, "-c", f"open({str(probe)!r})"],
            capture_output=True,
            preexec_fn=_drop_dac_capabilities,
            timeout=60,
        )
        return _become_nobody if result.returncode == 0 else _drop_dac_capabilities
    except (OSError, subprocess.SubprocessError):
        return _become_nobody
    finally:
        probe.unlink()


def run_unprivileged(cli: VaultCLI, *args: str) -> subprocess.CompletedProcess[str]:
    """``vault`` as a user who cannot read or write what its mode forbids."""
    drop = _unprivileged()
    if drop is _become_nobody:
        for path in [cli.home, *cli.home.rglob("*")]:
            os.lchown(path, NOBODY, NOBODY)
    return subprocess.run(
        [vault_executable(), *args],
        capture_output=True,
        text=True,
        env=cli.env,
        cwd=cli.home,
        timeout=60,
        preexec_fn=drop,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> VaultCLI:
    """A young store holding secret/a and secret/b, built once and copied by ``store``."""
    home = tmp_path_factory.mktemp("base")
    cli = VaultCLI(home, cli_env(home))
    cli("write", "secret/a", "v=1")
    cli("write", "secret/b", "v=1")
    return cli


@pytest.fixture
def store(base: VaultCLI, tmp_path: Path) -> VaultCLI:
    return copy_store(base, tmp_path / "home")


# ---- 1. a writer hides a truncated log --------------------------------------------------


@dataclass(frozen=True)
class Written:
    cli: VaultCLI
    early: dict[str, bytes]  # the segment files as they were after three writes


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Five writes (seqs 3..7 after the two default mounts), snapshots at seqs 3 and 6, and
    the version index each writer saves on closing, covering the head."""
    home = tmp_path_factory.mktemp("written")
    cli = VaultCLI(home, cli_env(home))
    cli.env["VAULTLOG_SNAPSHOT_EVERY"] = "3"
    for n in range(1, 4):
        cli("write", f"secret/k{n}", f"v={n}")
    early = segment_bytes(cli.data_dir)
    for n in range(4, 6):
        cli("write", f"secret/k{n}", f"v={n}")
    found = evidence(cli.data_dir)
    assert "versions.idx" in found and any(name.startswith("snapshots") for name in found)
    return Written(cli, early)


def clean_cut(written: Written, data_dir: Path) -> int:
    return cut_last_record(data_dir, torn=False)


def delete_last_segment(written: Written, data_dir: Path) -> int:
    split_segment(data_dir, 6)  # seqs 1..5 and 6..7
    (data_dir / segment_file(6)).unlink()
    return 5


def put_back_older_copy(written: Written, data_dir: Path) -> int:
    for name, data in written.early.items():
        (data_dir / name).write_bytes(data)
    return last_seq(data_dir)


@pytest.mark.parametrize(
    "damage",
    [clean_cut, delete_last_segment, put_back_older_copy],
    ids=["last-record-cut-off", "last-segment-deleted", "older-copy-put-back"],
)
def test_a_log_missing_its_last_records_is_refused_not_hidden(
    written: Written, tmp_path: Path, damage: Callable[[Written, Path], int]
) -> None:
    """Records cut off the end of the log, while the version index and snapshots show the
    log went further: ``vault audit verify`` names the first missing seq, and ``read`` and
    ``write`` refuse with one line ("records are missing", the seq the log ends at) instead
    of quietly rebuilding the index and dropping the snapshots that prove it."""
    store = copy_store(written.cli, tmp_path / "home")
    end = damage(written, store.data_dir)
    kept, segments = evidence(store.data_dir), segment_bytes(store.data_dir)

    assert verify_fails(store)[0] == end + 1
    for args in (("read", "secret/k1"), ("write", "secret/x", "v=1")):
        line = assert_one_line_failure(store.run(*args))
        assert "records are missing" in line, line
        assert re.search(rf"\bseq {end}\b", line), line
    assert evidence(store.data_dir) == kept  # neither deleted nor rebuilt
    assert segment_bytes(store.data_dir) == segments  # nothing appended after the gap
    assert verify_fails(store)[0] == end + 1


def test_only_a_torn_final_record_is_recovered(written: Written, tmp_path: Path) -> None:
    """An incomplete record after the last acknowledged one is a torn write (a crash while
    appending): reads and writes go on. A record the version index covers was acknowledged,
    so cutting it, in its middle or at its start, loses data: the next read refuses."""
    store = copy_store(written.cli, tmp_path / "home")
    segment = store.data_dir / SEGMENT
    offset, length = record_offsets(segment.read_bytes())[-1]
    last = segment.read_bytes()[offset : offset + 8 + length]
    with open(segment, "ab") as f:  # half of a record that was never acknowledged
        f.write(last[: len(last) // 2])
    assert store("read", "-field=v", "secret/k1") == "1\n"
    store("write", "secret/x", "v=1")

    for torn in (True, False):
        cut = copy_store(store, tmp_path / f"cut-{torn}")
        end = cut_last_record(cut.data_dir, torn=torn)
        line = assert_one_line_failure(cut.run("read", "secret/k1"))
        assert "records are missing" in line and re.search(rf"\bseq {end}\b", line), line


# ---- 2. confirmable values after an unmount ---------------------------------------------


def history_rows(cli: VaultCLI, path: str) -> list[list[str]]:
    """``vault history`` rows (without the header), split into cells."""
    return [line.split() for line in cli("history", path).splitlines()[1:]]


def test_values_of_an_unmounted_mount_can_no_longer_be_confirmed(store: VaultCLI) -> None:
    """``vault audit-hash -path=P VALUE`` gives the HMAC the trail shows for VALUE at P, keyed
    per mount. After an unmount the history still lists who wrote what when, but guessing
    the value is over: audit-hash for the gone mount fails, and another mount's key gives
    another HMAC. The trail stays verifiable."""
    store("mount", "-path=pins", "generic")
    store("write", "pins/door", "pin=4711")
    rows = history_rows(store, "pins/door")
    assert len(rows) == 1 and re.fullmatch(r"pin=hmac-sha256:[0-9a-f]{64}", rows[0][4]), rows
    shown = rows[0][4].removeprefix("pin=")
    assert store("audit-hash", "-path=pins/", "4711") == f"{shown}\n"

    store("unmount", "pins/")
    after = [row[:4] for row in history_rows(store, "pins/door")]
    assert rows[0][:4] in after  # seq, time, actor, operation
    assert_one_line_failure(store.run("audit-hash", "-path=pins/", "4711"))
    other = store("audit-hash", "4711").strip()
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", other) and other != shown
    verified(store)


# ---- 3. tracebacks instead of one line --------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: str  # what the one line must say ("" when any one line will do)
    setup: Callable[[VaultCLI], None] | None = None


def setting(name: str, value: str) -> Callable[[VaultCLI], None]:
    def apply(cli: VaultCLI) -> None:
        cli.env[name] = value

    return apply


def data_dir_at(relative: str) -> Callable[[VaultCLI], None]:
    """VAULTLOG_DIR at ``relative`` under the home, where ``afile`` is a regular file."""

    def apply(cli: VaultCLI) -> None:
        (cli.home / "afile").write_text("not a store\n")
        cli.env["VAULTLOG_DIR"] = str(cli.home / relative)

    return apply


ONE_LINE_CASES = [
    Case(
        "lock-timeout-not-a-number",
        ("read", "secret/a"),
        "VAULTLOG_LOCK_TIMEOUT",
        setting("VAULTLOG_LOCK_TIMEOUT", "abc"),
    ),
    Case(
        "snapshot-every-not-a-number",
        ("write", "secret/a", "v=1"),
        "VAULTLOG_SNAPSHOT_EVERY",
        setting("VAULTLOG_SNAPSHOT_EVERY", "abc"),
    ),
    Case("data-dir-is-a-file", ("read", "secret/a"), "not a directory", data_dir_at("afile")),
    Case(
        "data-dir-under-a-file",
        ("write", "secret/a", "v=2"),
        "not a directory",
        data_dir_at("afile/data"),
    ),
    Case("at-age-overflows", ("read", "secret/a", f"-at={BIG}s"), ""),
    Case("ttl-overflows", ("write", "secret/a", "v=2", f"ttl={BIG}s"), "invalid duration"),
    Case(
        "lease-ttl-overflows",
        ("mount", f"-default-lease-ttl={BIG}s", "generic"),
        "invalid duration",
    ),
]


@pytest.mark.parametrize("case", ONE_LINE_CASES, ids=[case.id for case in ONE_LINE_CASES])
def test_bad_input_is_one_line_not_a_traceback(store: VaultCLI, case: Case) -> None:
    """A malformed setting, an unusable data directory or a duration too large for any
    clock: one line saying so, and the store is unchanged."""
    if case.setup:
        case.setup(store)
    before = files_of(store.home)
    line = assert_one_line_failure(store.run(*case.args))
    assert case.expect in line, line
    assert files_of(store.home) == before


def test_help_works_whatever_the_snapshot_setting(store: VaultCLI) -> None:
    """``vault --help`` needs no store and no settings: it prints usage and exits 0 even
    with VAULTLOG_SNAPSHOT_EVERY malformed."""
    store.env["VAULTLOG_SNAPSHOT_EVERY"] = "abc"
    result = store.run("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "Traceback" not in result.stderr


UNREADABLE = {
    "data-dir": "data",
    "keyring": "data/keyring",
    "segment": f"data/{SEGMENT}",
    "lock": "data/lock",
}


@pytest.mark.parametrize("target", list(UNREADABLE))
def test_a_file_vault_may_not_open_is_one_line(store: VaultCLI, target: str) -> None:
    """A store file or directory the user may not open (mode 000): ``read`` and ``write``
    each say "Permission denied" in one line."""
    path = store.home / UNREADABLE[target]
    mode = path.stat().st_mode & 0o777
    path.chmod(0)
    try:
        for args in (("read", "secret/a"), ("write", "secret/a", "v=2")):
            line = assert_one_line_failure(run_unprivileged(store, *args))
            assert "Permission denied" in line, line
    finally:
        path.chmod(mode)


@pytest.mark.parametrize(
    ("args", "room"),
    [
        (("mount", "-path=m", "generic"), "no-room-for-the-keyring"),
        (("rotate",), "no-room-for-the-keyring"),
        (("rotate",), "no-room-in-the-log"),
    ],
    ids=["mount-keyring", "rotate-keyring", "rotate-log"],
)
def test_a_full_disk_during_mount_or_rotate(
    store: VaultCLI, args: tuple[str, ...], room: str
) -> None:
    """The disk fills while ``mount`` or ``rotate`` saves the keyring or appends its event:
    one line, and once there is room again no mount ``m/`` appeared and the key term in use
    is the old one."""
    segment = store.data_dir / SEGMENT
    keyring = store.data_dir / "keyring"
    # 64 bytes: enough for the writer lock's pid, too few for a new keyring file; the
    # segment's size: a new keyring fits, but nothing more can be appended to the log.
    limit = 64 if room == "no-room-for-the-keyring" else segment.stat().st_size
    assert keyring.stat().st_size > 64 and keyring.stat().st_size < segment.stat().st_size
    assert_one_line_failure(run_with_file_size_limit(store, limit, *args))

    paths = [line.split()[0] for line in store("mounts").splitlines()[1:]]
    assert paths == ["secret/", "sys/"]
    assert store("key-status").startswith("Key Term: 1\n")


# ---- 4. unmount on a full disk ------------------------------------------------------------


def test_an_unmount_whose_key_cannot_be_destroyed_yet(store: VaultCLI) -> None:
    """``mount.removed`` reaches the log but the keyring cannot be rewritten (no new file
    can be made in the data directory): the unmount has happened, so it succeeds, with one
    line on stderr saying "key destruction pending"; the next writer destroys the key."""
    store("mount", "-path=gone", "generic")
    store("write", "gone/x", "v=1")
    store.data_dir.chmod(0o500)  # existing files stay writable; no new file can be made
    try:
        result = run_unprivileged(store, "unmount", "gone/")
    finally:
        store.data_dir.chmod(0o700)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Successfully unmounted 'gone/'!\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "key destruction pending" in lines[0], result.stderr
    assert "gone/" not in store("mounts")

    keyring = (store.data_dir / "keyring").read_bytes()
    store("write", "secret/z", "v=1")
    assert (store.data_dir / "keyring").read_bytes() != keyring
    verified(store)
    assert store.run("read", "gone/x").returncode != 0


# ---- 5. control characters in paths ------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("write", "{path}", "v=1"), ("read", "{path}"), ("list", "{path}"), ("history", "{path}")],
    ids=["write", "read", "list", "history"],
)
def test_a_path_with_a_control_character_is_refused(
    store: VaultCLI, command: tuple[str, ...]
) -> None:
    """A path holding a newline, an escape or another control character is refused in one
    line ("control character") and nothing is appended to the log."""
    events = audit_lines(store)
    for char in ("\n", "\x1b", "\x01"):
        args = [arg.format(path=f"secret/a{char}b") for arg in command]
        line = assert_one_line_failure(store.run(*args))
        assert "control character" in line, (char, line)
    assert audit_lines(store) == events


# ---- 6. a keyring restored from before a mount existed ------------------------------------


def test_a_keyring_older_than_a_mount(store: VaultCLI) -> None:
    """The keyring put back from before ``team/`` was mounted has no data key for it:
    ``audit verify`` says so naming "team/", reading team/a fails naming the mount (not its
    internal id), and the rest of the store works, snapshots included."""
    keyring = store.data_dir / "keyring"
    old = keyring.read_bytes()
    store("mount", "-path=team", "generic")
    store("write", "team/a", "v=1")
    keyring.write_bytes(old)

    _, problem = verify_fails(store)
    assert "team/" in problem and "no data key" in problem, problem
    line = assert_one_line_failure(store.run("read", "team/a"))
    assert "team/" in line and not HEX_ID.search(line), line

    store.env["VAULTLOG_SNAPSHOT_EVERY"] = "1"  # a snapshot falls due at every write
    for n in range(2, 5):
        store("write", "secret/b", f"v={n}")
        assert store("read", "-field=v", "secret/b") == f"{n}\n"


# ---- 7. remount onto or under itself --------------------------------------------------------


def test_a_mount_cannot_be_remounted_onto_or_under_itself(store: VaultCLI) -> None:
    """``remount g/ g/`` says "onto itself", ``remount g/ g/sub/`` says "under itself", both
    in one line, and the audit trail gains no event."""
    store("mount", "-path=g", "generic")
    events = audit_lines(store)
    for target, expect in (("g/", "onto itself"), ("g/sub/", "under itself")):
        line = assert_one_line_failure(store.run("remount", "g/", target))
        assert expect in line, line
    assert audit_lines(store) == events


# ---- 8. paths -----------------------------------------------------------------------------


def test_double_slashes_in_a_secret_path_collapse(store: VaultCLI) -> None:
    """``write secret//dbl`` writes secret/dbl: reading secret/dbl shows the value."""
    store("write", "secret//dbl", "v=1")
    assert store("read", "-field=v", "secret/dbl") == "1\n"


def test_double_slashes_in_a_mount_path_collapse(store: VaultCLI) -> None:
    """``mount -path=a//b`` mounts a/b/, and ``vault mounts`` lists it so."""
    store("mount", "-path=a//b", "generic")
    paths = [line.split()[0] for line in store("mounts").splitlines()[1:]]
    assert "a/b/" in paths and not any("//" in path for path in paths), paths


BAD_PATHS = [
    Case("dot-dot", ("write", "secret/../x", "v=1"), "invalid path"),
    Case("dot", ("write", "secret/./x", "v=1"), "invalid path"),
    Case("leading-space", ("write", " secret/a", "v=1"), "invalid path"),
    Case("trailing-space", ("write", "secret/a ", "v=1"), "invalid path"),
    Case("mount-dot-dot", ("mount", "-path=../evil", "generic"), "invalid path"),
    Case("mount-empty", ("mount", "-path=", "generic"), "missing mount path"),
    Case("unmount-empty", ("unmount", ""), "missing mount path"),
]


@pytest.mark.parametrize("case", BAD_PATHS, ids=[case.id for case in BAD_PATHS])
def test_a_bad_path_is_refused_in_one_line(store: VaultCLI, case: Case) -> None:
    """``..`` or ``.`` segments and surrounding spaces: "invalid path"; an empty mount
    path: "missing mount path" (not a mount named after the type, nor "unsupported
    operation"). Nothing changes."""
    before = files_of(store.home)
    line = assert_one_line_failure(store.run(*case.args))
    assert case.expect in line, line
    assert files_of(store.home) == before


# ---- 9. -at past the head, in the future, before the store ---------------------------------


AT_CASES = [
    Case(
        "past-the-head", ("read", "secret/a", "-at={past}"), "seq {past} is past the head ({head})"
    ),
    Case("in-the-future", ("read", "secret/a", "-at=2099-01-01T00:00:00Z"), "in the future"),
    Case("read-at-0", ("read", "secret/a", "-at=0"), "the store did not exist yet at seq 0"),
    Case("mounts-at-0", ("mounts", "-at=0"), "the store did not exist yet at seq 0"),
    Case("mounts-a-week-ago", ("mounts", "-at=7d"), "the store did not exist yet at"),
]


@pytest.mark.parametrize("case", AT_CASES, ids=[case.id for case in AT_CASES])
def test_at_outside_the_log_is_refused(store: VaultCLI, case: Case) -> None:
    """``-at`` beyond the head names the head; a time to come says "in the future"; seq 0, or
    a week ago for a store made seconds ago, says "the store did not exist yet at"."""
    head = int(verified(store).split(":")[0]) if "{" in case.expect else 0
    values = {"past": head + 5, "head": head}
    args = [arg.format(**values) for arg in case.args]
    line = assert_one_line_failure(store.run(*args))
    assert case.expect.format(**values) in line, line


# ---- 10. a damaged keyring vs a wrong key ---------------------------------------------------


def test_a_damaged_keyring_is_not_a_wrong_key(store: VaultCLI) -> None:
    """A keyring with one byte flipped is reported as a damaged keyring; an intact keyring
    opened with another valid key is a "wrong unseal key"."""
    keyring = store.data_dir / "keyring"
    intact = keyring.read_bytes()
    damaged = bytearray(intact)
    damaged[len(damaged) // 2] ^= 0x01
    keyring.write_bytes(bytes(damaged))
    line = assert_one_line_failure(store.run("read", "secret/a"))
    assert "keyring" in line and "damaged" in line, line

    keyring.write_bytes(intact)
    store.env["VAULTLOG_UNSEAL_KEY"] = OTHER_KEY
    line = assert_one_line_failure(store.run("read", "secret/a"))
    assert "wrong unseal key" in line and "damaged" not in line, line


# ---- 11. smaller ones -------------------------------------------------------------------


def test_a_failed_verify_says_each_thing_once(written: Written, tmp_path: Path) -> None:
    """A segment missing from the middle of the log: the verdict names the missing seq and
    does not say "missing records: missing records"."""
    store = copy_store(written.cli, tmp_path / "home")
    split_segment(store.data_dir, 4, 6)  # seqs 1..3, 4..5, 6..7
    (store.data_dir / segment_file(4)).unlink()
    seq, problem = verify_fails(store)
    assert seq == 4
    assert "missing records: missing records" not in problem, problem


def test_a_lease_duration_field_is_shown_once(store: VaultCLI) -> None:
    """A secret with its own ``lease_duration`` field: the table has one lease_duration row,
    the user's value."""
    store("write", "secret/l", "lease_duration=7", "other=1")
    rows = [line.split() for line in store("read", "secret/l").splitlines()]
    assert [row for row in rows if row[0] == "lease_duration"] == [["lease_duration", "7"]]


def test_the_readme_installs_and_tests_in_different_environments() -> None:
    """The README's install command and its test command make different virtual
    environments (the test one's editable install must not replace the other), and
    ``.ci/run`` runs the test one."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    install, test = blocks[0].strip(), blocks[1].strip()
    venvs = [re.search(r"python3 -m venv (\S+)", command) for command in (install, test)]
    assert venvs[0] and venvs[1], blocks[:2]
    assert venvs[0][1] != venvs[1][1], (install, test)
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
