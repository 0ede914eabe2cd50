"""Snapshots are a cache of the log: losing or damaging one changes no answer.

A store with snapshots at seqs 3, 6, 9 and 12 is built once through the installed ``vault``
(``VAULTLOG_SNAPSHOT_EVERY=3``); each case damages a private copy and must get exactly the
answers the pristine copy gave to the same commands. ``vault audit verify`` names a damaged
snapshot until a writer has dropped it. Also: snapshots holding an unmounted mount's data
are passed over, and key rotation keeps old records and snapshots readable.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import projections.pointintime
import projections.snapshot
from backends import Request
from eventstore import FileLog, Keyring, new_key
from projections import decode, replay
from projections.snapshot import latest_snapshot, read_snapshot, snapshot_dir, snapshot_seqs
from projections.state import MountData
from tests.conftest import VaultCLI, cli_env, open_core

SNAPSHOTS = [3, 6, 9, 12]
NEWEST, MIDDLE = 12, 9
BUILD = (
    ("write", "secret/a", "v=1"),  # 3
    ("write", "secret/b", "v=1"),
    ("mount", "-path=team", "generic"),
    ("write", "team/x", "v=1"),  # 6
    ("write", "secret/a", "v=2"),
    ("delete", "secret/b"),
    ("write", "team/x", "v=2"),  # 9
    ("write", "secret/a", "v=3"),
    ("write", "secret/b", "v=2"),
    ("write", "team/y", "v=1"),  # 12
    ("delete", "team/y"),
    ("write", "secret/a", "v=4"),
)
# Read-only commands first: a read opens the store for writing, which drops bad snapshots.
QUESTIONS = (
    ("audit", "-format=json"),
    ("list", "secret/"),
    ("mounts", "-at=4"),
    ("list", "secret/", "-at=9"),
    ("read", "-format=json", "secret/a"),
    ("read", "-at=8", "secret/b"),
    ("read", "-at=10", "-format=json", "secret/a"),
)

Answers = list[tuple[int, str, str]]


def snapshot_file(vault: VaultCLI, seq: int) -> Path:
    return snapshot_dir(vault.data_dir) / f"{seq:020d}.snap"


def ask(vault: VaultCLI) -> Answers:
    answers = []
    for question in QUESTIONS:
        result = vault.run(*question)
        answers.append((result.returncode, result.stdout, result.stderr))
    return answers


def copy_of(home: Path, into: Path) -> VaultCLI:
    shutil.copytree(home, into)
    vault = VaultCLI(into, cli_env(into))
    vault.env["VAULTLOG_SNAPSHOT_EVERY"] = "3"
    return vault


def verify(vault: VaultCLI) -> subprocess.CompletedProcess[str]:
    return vault.run("audit", "verify")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("snapshots") / "home"
    home.mkdir()
    vault = VaultCLI(home, cli_env(home))
    vault.env["VAULTLOG_SNAPSHOT_EVERY"] = "3"
    for command in BUILD:
        vault(*command)
    assert snapshot_seqs(vault.data_dir) == SNAPSHOTS
    return home


@pytest.fixture(scope="module")
def pristine(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Answers:
    """What the undamaged store answers to the questions."""
    vault = copy_of(template, tmp_path_factory.mktemp("pristine") / "home")
    answers = ask(vault)
    assert answers[1] == (0, "Keys\na\nb\n", "")
    assert "team/" not in answers[2][1]  # mounted at seq 5
    assert answers[3] == (0, "Keys\na\n", "")  # b was deleted at seq 8
    assert answers[4][0] == 0 and json.loads(answers[4][1])["data"] == {"v": "4"}
    assert answers[5] == (1, "", "No value found at secret/b\n")
    assert json.loads(answers[6][1])["data"] == {"v": "3"}
    return answers


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete_all(vault: VaultCLI) -> None:
    for seq in SNAPSHOTS:
        snapshot_file(vault, seq).unlink()


DAMAGE: dict[str, Callable[[VaultCLI], None]] = {
    "flipped-newest": lambda v: flip(snapshot_file(v, NEWEST)),
    "truncated-newest": lambda v: truncate(snapshot_file(v, NEWEST)),
    # a valid snapshot of this very store, under another seq's name
    "renamed-newest": lambda v: snapshot_file(v, NEWEST).write_bytes(
        snapshot_file(v, MIDDLE).read_bytes()
    ),
    "flipped-middle": lambda v: flip(snapshot_file(v, MIDDLE)),
}


def damaged_verdict(vault: VaultCLI, seq: int) -> None:
    result = verify(vault)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"Verification failed at seq {seq}: damaged snapshot at seq {seq}\n"


def test_deleting_every_snapshot_changes_no_answer(
    template: Path, pristine: Answers, tmp_path: Path
) -> None:
    vault = copy_of(template, tmp_path / "home")
    delete_all(vault)
    assert verify(vault).returncode == 0  # no snapshot is no damage
    assert ask(vault) == pristine


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_snapshot_changes_no_answer(
    template: Path, pristine: Answers, tmp_path: Path, damage: str
) -> None:
    vault = copy_of(template, tmp_path / "home")
    DAMAGE[damage](vault)
    damaged_seq = NEWEST if damage.endswith("newest") else MIDDLE
    damaged_verdict(vault, damaged_seq)  # no writer has opened the store yet
    assert ask(vault) == pristine
    if damage.endswith("newest"):  # the reads opened writers, which dropped and rebuilt it
        assert verify(vault).returncode == 0, verify(vault).stderr
        assert snapshot_seqs(vault.data_dir)[:3] == SNAPSHOTS[:3]


def test_a_damaged_older_snapshot_is_dropped_by_a_writer(template: Path, tmp_path: Path) -> None:
    """The writer checks older snapshots when it takes its next one, and drops the bad."""
    vault = copy_of(template, tmp_path / "home")
    flip(snapshot_file(vault, MIDDLE))
    damaged_verdict(vault, MIDDLE)
    for n in range(12):  # enough events for the next snapshot (live entries grow too)
        vault("write", f"secret/z{n}", "v=1")
    assert MIDDLE not in snapshot_seqs(vault.data_dir)
    result = verify(vault)
    assert result.returncode == 0, result.stderr


def test_a_reader_passes_over_a_damaged_snapshot_in_process(template: Path, tmp_path: Path) -> None:
    """The same as above without the CLI, to say which snapshot the answer came from."""
    vault = copy_of(template, tmp_path / "home")
    keyring = Keyring.load(vault.data_dir, vault.unseal_key())
    flip(snapshot_file(vault, MIDDLE))
    with pytest.raises(Exception):  # noqa: B017 - any failure to open will do
        read_snapshot(vault.data_dir, keyring, MIDDLE)
    used = latest_snapshot(vault.data_dir, keyring, NEWEST - 1)
    assert used is not None and used.head.seq == 6
    events = [decode(r) for r in FileLog(vault.data_dir, keyring).records()]
    assert used.state == replay(events[:6])


def test_a_snapshot_from_before_an_unmount_is_not_used_for_the_past(vault: VaultCLI) -> None:
    vault.env["VAULTLOG_SNAPSHOT_EVERY"] = "3"
    vault("write", "secret/a", "v=1")  # 3: snapshot
    vault("mount", "-path=tmp", "generic")
    vault("write", "tmp/x", "v=1")
    vault("write", "secret/a", "v=2")  # 6: snapshot, holding tmp/'s data
    vault("write", "tmp/y", "v=1")
    observed = {q: vault(*q) for q in (("mounts",), ("list", "tmp/"), ("list", "secret/"))}
    seen_a = vault("read", "-field=v", "secret/a")  # 8
    vault("unmount", "tmp/")  # 9: snapshot, without tmp/
    assert snapshot_seqs(vault.data_dir) == [3, 6, 9]

    keyring = Keyring.load(vault.data_dir, vault.unseal_key())
    events = [decode(r) for r in FileLog(vault.data_dir, keyring).records()]
    assert [e.TYPE for e in events[6:9]] == ["secret.written", "secret.read", "mount.removed"]
    # The snapshot at 6 holds a section sealed with tmp/'s destroyed key: it is passed over
    # for the one at 3, and the state at 8 is still the replay of the first 8 events.
    used = latest_snapshot(vault.data_dir, keyring, 8)
    assert used is not None and used.head.seq == 3

    # Read-only commands first: they leave the snapshot files as they are.
    for question, answer in observed.items():
        if question[0] == "list" and question[1] == "tmp/":
            result = vault.run(*question, "-at=8")
            assert result.returncode != 0 and "was deleted at" in result.stderr
            assert result.stderr.count("\n") == 1
        else:
            assert vault(*question, "-at=8") == answer
    assert "tmp/" in observed[("mounts",)]
    assert verify(vault).returncode == 0  # a shredded section is not damage

    assert vault("read", "-field=v", "-at=8", "secret/a") == seen_a
    shredded = vault.run("read", "-at=8", "tmp/x")
    assert shredded.returncode == 1 and shredded.stdout == ""
    assert re.fullmatch(
        r"Error reading tmp/x: the data of mount 'tmp/' was deleted at \S+Z\n", shredded.stderr
    )
    assert snapshot_seqs(vault.data_dir)[:3] == [3, 6, 9]  # still there, still passed over


def test_rotate_then_write(vault: VaultCLI) -> None:
    vault.env["VAULTLOG_SNAPSHOT_EVERY"] = "3"
    vault("write", "secret/a", "v=1")  # 3: snapshot, under term 1
    vault("write", "secret/b", "v=1")
    out = vault("rotate")  # 5
    assert re.fullmatch(r"Key Term: 2\nInstallation Time: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", out)
    assert vault("key-status") == out
    vault("write", "secret/a", "v=2")  # 6: snapshot, under term 2
    vault("write", "secret/c", "v=1")

    keyring = Keyring.load(vault.data_dir, vault.unseal_key())
    terms = [f.header.term for f in FileLog(vault.data_dir, keyring).frames()]
    assert terms == [1, 1, 1, 1, 2, 2, 2]
    assert sorted(keyring.terms) == [1, 2]
    assert snapshot_seqs(vault.data_dir) == [3, 6]

    assert vault("read", "-field=v", "secret/a") == "2\n"
    assert vault("read", "-field=v", "secret/b") == "1\n"  # sealed under term 1
    assert vault("read", "-field=v", "-at=4", "secret/a") == "1\n"
    assert vault("list", "secret/") == "Keys\na\nb\nc\n"
    rotated = [json.loads(line) for line in vault("audit", "-format=json").splitlines()][4]
    assert (rotated["operation"], rotated["detail"]) == ("key.rotated", {"term": 2})
    assert re.fullmatch(r"Verified 10 records; head 10:[0-9a-f]{64}\n", vault("audit", "verify"))


def lazy_store(tmp_path: Path) -> tuple[Path, bytes, dict[str, dict[str, str]]]:
    """A store whose newest snapshot holds two mounts' sections, with writes after it."""
    key, store = new_key(), tmp_path / "store"
    core = open_core(store, key, write=True, snapshot_every=4)
    expected = {}
    core.handle(Request("write", "sys/mounts/team", {"type": "generic"}))
    for i in range(10):
        path = f"secret/k{i % 6}" if i % 3 else f"team/t{i}"
        core.handle(Request("write", path, {"v": str(i)}))
        expected[path] = {"v": str(i)}
    core.store.close()
    assert snapshot_seqs(store)[-1] < core.store.state.seq  # writes after the newest snapshot
    return store, key, expected


def test_a_snapshot_section_is_read_when_its_mount_is_first_needed(tmp_path: Path) -> None:
    store, key, expected = lazy_store(tmp_path)
    reader = open_core(store, key, write=False, snapshot_every=4)
    secret = reader.store.state.mounts.at("secret/")
    team = reader.store.state.mounts.at("team/")
    assert secret is not None and team is not None
    sections = reader.store.state.data[secret.id], reader.store.state.data[team.id]
    assert all(isinstance(s, MountData) and not s.loaded for s in sections)
    reader.handle(Request("read", "sys/mounts"))
    assert reader.handle(Request("read", "team/t3")).data == expected["team/t3"]
    assert sections[1].loaded and not sections[0].loaded  # secret/ is still unread
    for path, value in expected.items():  # the writes after the snapshot come on top
        assert reader.handle(Request("read", path)).data == value
    assert sections[0].loaded


def test_a_snapshot_section_found_damaged_late_is_rebuilt_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, key, expected = lazy_store(tmp_path)
    path = snapshot_dir(store) / f"{snapshot_seqs(store)[-1]:020d}.snap"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last section: the table still opens
    path.write_bytes(bytes(data))
    rebuilt: list[str] = []
    from_log = projections.pointintime._values_from_log

    def counted(log: FileLog, mount_id: str, until: int) -> dict[str, bytes]:
        rebuilt.append(mount_id)
        return from_log(log, mount_id, until)

    monkeypatch.setattr(projections.pointintime, "_values_from_log", counted)
    reader = open_core(store, key, write=False, snapshot_every=4)
    for path_, value in expected.items():
        assert reader.handle(Request("read", path_)).data == value
    assert len(rebuilt) == 1  # the damaged section's mount, from the log; the other as read


def test_a_section_is_sealed_in_chunks_that_keep_their_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projections.snapshot, "CHUNK", 3)  # 10 values: chunks of 3, 3, 3, 1
    chunks: dict[tuple[str, int], list[bytes]] = {}  # by mount id and seq
    sealed_chunks = projections.snapshot._sealed_chunks

    def kept(
        keyring: Keyring, mount_id: str, seq: int, values: dict[str, bytes]
    ) -> Iterator[bytes]:
        for chunk in sealed_chunks(keyring, mount_id, seq, values):
            chunks.setdefault((mount_id, seq), []).append(chunk)
            yield chunk

    monkeypatch.setattr(projections.snapshot, "_sealed_chunks", kept)
    key, store = new_key(), tmp_path / "store"
    core = open_core(store, key, write=True)
    for i in range(10):
        core.handle(Request("write", f"secret/k{i}", {"v": "same length"}))
    core.store.snapshot()
    keyring, seq = core.store.keyring, core.store.state.seq
    live = dict(core.store.state.data[core.store.state.mounts.by_path["secret/"]])
    core.store.close()

    snapshot = read_snapshot(store, keyring, seq)
    mount_id = snapshot.state.mounts.by_path["secret/"]
    assert dict(snapshot.state.data[mount_id]) == live
    secret_chunks = chunks[mount_id, seq]
    assert len(secret_chunks) == 4 and len(set(map(len, secret_chunks[:3]))) == 1

    path = snapshot_dir(store) / f"{seq:020d}.snap"
    data = path.read_bytes()
    first, second = (data.index(c) for c in secret_chunks[:2])
    size = len(secret_chunks[0])
    swapped = (  # two whole chunks trade places: each still opens alone, not in the other's
        data[:first]
        + data[second : second + size]
        + data[first + size : second]
        + data[first : first + size]
        + data[second + size :]
    )
    path.write_bytes(swapped)
    with pytest.raises(Exception, match="authentication failed"):
        read_snapshot(store, keyring, seq)
    reader = open_core(store, key, write=False)  # passed over: the log answers instead
    for i in range(10):
        assert reader.handle(Request("read", f"secret/k{i}")).data == {"v": "same length"}
