"""Tamper evidence: ``vault audit verify`` names the first bad seq and what is wrong.

Each store is built in-process (fast), then damaged on disk the way a tamperer or a failing
disk would; only the verdict comes from the installed ``vault``. A failure is exit code 2
and one line on stderr: ``Verification failed at seq S: <kind>: ...``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from google_crc32c import value as crc32c

from backends import Request
from eventstore import CorruptionError, FileLog, Frame, Keyring, encode_unseal_key, new_key
from eventstore.log import SEGMENT_MAGIC, segment_name
from eventstore.record import GENESIS_HASH, HEADER, PREFIX, encode, record_hash
from projections.snapshot import snapshot_seqs
from projections.versions import INDEX_FILE
from tests.conftest import VaultCLI, open_core

RECORDS = 8  # two default mounts, then six writes
MIDDLE = 5


def seed(
    vault: VaultCLI, writes: int = RECORDS - 2, *, snapshot_every: int | None = None
) -> Keyring:
    """A store of ``writes`` writes after the default mounts, with the CLI's unseal key."""
    key = new_key()
    key_file = vault.home / "config" / "vaultlog" / "unseal.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(encode_unseal_key(key) + "\n")
    key_file.chmod(0o600)
    core = open_core(vault.data_dir, key, write=True, snapshot_every=snapshot_every)
    try:
        for n in range(writes):
            core.handle(Request("write", f"secret/k{n % 3}", {"v": f"value {n}"}))
    finally:
        core.store.close()
    return Keyring.load(vault.data_dir, key)


def frames(vault: VaultCLI) -> list[Frame]:
    return list(FileLog(vault.data_dir, Keyring.load(vault.data_dir, vault.unseal_key())).frames())


def segment(vault: VaultCLI) -> Path:
    return vault.data_dir / segment_name(1)


def head_of(frame: Frame) -> str:
    return f"{frame.header.seq}:{frame.hash.hex()}"


def verified(vault: VaultCLI, *flags: str) -> str:
    """The head a passing ``vault audit verify`` prints."""
    out = vault("audit", "verify", *flags)
    match = re.fullmatch(r"Verified (\d+) records; head (\d+:[0-9a-f]{64})\n", out)
    assert match, out
    return match[2]


def verify_fails(vault: VaultCLI, *flags: str) -> tuple[int, str]:
    """(seq, problem) of a failing ``vault audit verify``, which must change no file."""
    before = {p: p.read_bytes() for p in vault.data_dir.rglob("*") if p.is_file()}
    result = vault.run("audit", "verify", *flags)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    match = re.fullmatch(r"Verification failed at seq (\d+): (.+)\n", result.stderr)
    assert match, result.stderr
    assert {p: p.read_bytes() for p in vault.data_dir.rglob("*") if p.is_file()} == before
    return int(match[1]), match[2]


def test_an_untouched_store_verifies_and_extends_every_earlier_head(vault: VaultCLI) -> None:
    seed(vault)
    found = frames(vault)
    assert verified(vault) == head_of(found[-1])
    assert verified(vault, f"-against={head_of(found[-1])}") == head_of(found[-1])
    assert verified(vault, f"-against={head_of(found[2])}") == head_of(found[-1])


def rewrite_payload(path: Path, frame: Frame, where: str, *, fix_crc: bool) -> None:
    """Change one field of ``frame``'s payload in place, optionally fixing its crc."""
    data = bytearray(path.read_bytes())
    start = frame.offset + PREFIX.size
    if where == "timestamp":  # re-dated 1 ns later: still in order, but not what was sealed
        version, seq, timestamp, term, prev = HEADER.unpack_from(data, start)
        HEADER.pack_into(data, start, version, seq, timestamp + 1, term, prev)
    else:
        data[start + {"prev_hash": HEADER.size - 5, "ciphertext": HEADER.size + 9}[where]] ^= 0x40
    if fix_crc:
        payload = bytes(data[start : frame.end])
        PREFIX.pack_into(data, frame.offset, len(payload), crc32c(payload))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("where", "fix_crc", "kind"),
    [
        ("ciphertext", False, "corruption"),  # what a failing disk leaves
        ("timestamp", False, "corruption"),
        ("ciphertext", True, "authentication failure"),  # a tamperer who knows crc32c
        ("timestamp", True, "authentication failure"),  # re-dating a record
        ("prev_hash", True, "rewritten history"),
    ],
)
def test_a_flipped_byte_in_a_middle_record(
    vault: VaultCLI, where: str, fix_crc: bool, kind: str
) -> None:
    seed(vault)
    frame = frames(vault)[MIDDLE - 1]
    rewrite_payload(segment(vault), frame, where, fix_crc=fix_crc)
    seq, problem = verify_fails(vault)
    assert seq == MIDDLE
    assert problem.startswith(f"{kind}: ")
    assert f"(seq {MIDDLE})" in problem  # the log's own words: segment, offset and seq


def splice(vault: VaultCLI, order: list[int]) -> None:
    """Rewrite the segment with its records (0-based indexes) in ``order``."""
    found = frames(vault)
    data = segment(vault).read_bytes()
    records = [data[found[i].offset : found[i].end] for i in order]
    segment(vault).write_bytes(SEGMENT_MAGIC + b"".join(records))


def test_two_swapped_records(vault: VaultCLI) -> None:
    seed(vault)
    order = list(range(RECORDS))
    order[3], order[4] = order[4], order[3]  # seqs 4 and 5
    splice(vault, order)
    seq, problem = verify_fails(vault)
    assert seq == 4
    assert problem.startswith("missing or reordered records: expected seq 4 but found seq 5")


def test_a_removed_record(vault: VaultCLI) -> None:
    seed(vault)
    splice(vault, [i for i in range(RECORDS) if i != MIDDLE - 1])
    seq, problem = verify_fails(vault)
    assert seq == MIDDLE
    assert problem.startswith(f"missing or reordered records: expected seq {MIDDLE} but found")


def test_a_tail_truncated_below_a_recorded_head(vault: VaultCLI) -> None:
    seed(vault)
    recorded = verified(vault)  # what the operator wrote down
    found = frames(vault)
    with open(segment(vault), "r+b") as f:
        f.truncate(found[MIDDLE - 1].end)  # a clean cut after seq 5: nothing looks torn

    # The version index still covers the records cut off ...
    seq, problem = verify_fails(vault)
    assert seq == MIDDLE + 1
    assert (
        problem
        == f"missing records: the log ends at seq {MIDDLE} but the version index covers seq 8"
    )
    (vault.data_dir / INDEX_FILE).unlink()  # ... so a careful forger deletes it too.
    # Without the recorded head, a clean cut is then a shorter log and nothing more ...
    assert verified(vault) == head_of(found[MIDDLE - 1])
    assert verified(vault, f"-against={head_of(found[2])}") == head_of(found[MIDDLE - 1])
    # ... with it, the records after seq 5 are missing.
    seq, problem = verify_fails(vault, f"-against={recorded}")
    assert seq == MIDDLE + 1
    assert problem == f"missing records: the log ends at seq {MIDDLE}, before the recorded head 8"


def test_a_truncated_tail_with_snapshots_left_behind(vault: VaultCLI) -> None:
    seed(vault, writes=10, snapshot_every=3)
    assert snapshot_seqs(vault.data_dir)[-2:] == [9, 12]
    recorded = verified(vault)
    with open(segment(vault), "r+b") as f:
        f.truncate(frames(vault)[6].end)  # keep seqs 1..7: the snapshots at 9 and 12 remain
    seq, problem = verify_fails(vault, f"-against={recorded}")
    assert (seq, problem.split(":")[0]) == (8, "missing records")


def test_a_recorded_head_whose_hash_differs_is_rewritten_history(vault: VaultCLI) -> None:
    seed(vault)
    found = frames(vault)
    forged = f"{MIDDLE}:{found[MIDDLE].hash.hex()}"  # seq 5 with the hash of seq 6
    seq, problem = verify_fails(vault, f"-against={forged}")
    assert seq == MIDDLE
    assert problem == f"rewritten history: record {MIDDLE} differs from the recorded head"


def test_a_history_rewritten_through_the_store_breaks_the_recorded_head(vault: VaultCLI) -> None:
    keyring = seed(vault)
    recorded = verified(vault)
    with open(segment(vault), "r+b") as f:  # cut back to seq 5, then write other records
        f.truncate(frames(vault)[MIDDLE - 1].end)
    # A writer no longer appends after a log cut below what its version index covers (the
    # defect "a writer hides a truncated log") ...
    with pytest.raises(CorruptionError, match="records are missing: the log ends at seq 5"):
        open_core(vault.data_dir, vault.unseal_key(), write=True)
    (vault.data_dir / INDEX_FILE).unlink()  # ... so the forger deletes the index first.
    core = open_core(vault.data_dir, vault.unseal_key(), write=True)
    try:
        for n in range(3):
            core.handle(Request("write", "secret/forged", {"v": str(n)}))
    finally:
        core.store.close()
    assert Keyring.load(vault.data_dir, vault.unseal_key()).terms == keyring.terms
    assert verified(vault).startswith("8:")  # a whole, well-chained log of the same length
    seq, problem = verify_fails(vault, f"-against={recorded}")
    assert (seq, problem.split(":")[0]) == (8, "rewritten history")


def test_a_log_reencrypted_under_another_stores_key(vault: VaultCLI) -> None:
    keyring = seed(vault)
    recorded = verified(vault)
    other = Keyring.create()
    prev, chunks = GENESIS_HASH, [SEGMENT_MAGIC]
    for record in FileLog(vault.data_dir, keyring).records():
        raw = encode(
            record.body,
            seq=record.seq,
            timestamp=record.timestamp,
            term=record.term,
            prev_hash=prev,
            sealer=other.barrier(record.term),
        )
        chunks.append(raw)
        prev = record_hash(raw)
    os.unlink(segment(vault))
    segment(vault).write_bytes(b"".join(chunks))

    # The forgery is well formed: framing, crc, seqs and chain hold, and the other key
    # opens every record. Only this store's key does not.
    forged = FileLog(vault.data_dir, other)
    assert [r.seq for r in forged.records()] == list(range(1, RECORDS + 1))
    seq, problem = verify_fails(vault)
    assert seq == 1
    assert problem.startswith("authentication failure: ")
    seq, problem = verify_fails(vault, f"-against={recorded}")
    assert (seq, problem.split(":")[0]) == (1, "authentication failure")


def test_a_torn_tail(vault: VaultCLI) -> None:
    seed(vault)
    found = frames(vault)
    data = segment(vault).read_bytes()
    half = data[found[1].offset : found[1].end][:40]  # the start of an append, cut short
    segment(vault).write_bytes(data + half)
    seq, problem = verify_fails(vault)
    assert seq == RECORDS + 1
    assert problem.startswith("torn tail: ")


def test_a_malformed_recorded_head_is_one_line(vault: VaultCLI) -> None:
    seed(vault)
    result = vault.run("audit", "verify", "-against=8:nothex")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "expected SEQ:HASH" in result.stderr
