"""The pkcs11 backend against a real SoftHSM2 token: values sealed and opened by the HSM,
its key never extractable, destroyed on unmount (crypto-shredding by the hardware), the
token taken away and given back while the store runs, and kills between creating a key
object and recording its mount. What the token holds is read by another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import Core, Request
from eventstore import HsmUnavailableError, Sealer, SealError, ShreddedError, hsm
from projections import SecretWritten
from tests.conftest import open_core
from tools.bench.softhsm import SoftHsm


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsm]:
    token = SoftHsm(tmp_path / "hsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    with hsm.using(token.config()):
        yield token


@pytest.fixture
def hsm_core(tmp_path: Path, unseal_key: bytes, softhsm: SoftHsm) -> Iterator[Core]:
    core = open_core(tmp_path / "data", unseal_key, write=True)
    yield core
    core.store.close()


def call(core: Core, operation: str, path: str, **data: object) -> dict[str, object]:
    response = core.handle(Request(operation, path, dict(data)))  # type: ignore[arg-type]
    return response.data or {}


def mount_hsm(core: Core, path: str = "vault-hsm") -> str:
    call(core, "write", f"sys/mounts/{path}", type="pkcs11")
    mount = core.store.state.mounts.at(f"{path}/")
    assert mount is not None
    return core.store.keyring.hsm_label(mount.id)


def test_values_round_trip_through_the_hsm_with_history(hsm_core: Core, softhsm: SoftHsm) -> None:
    label = mount_hsm(hsm_core)
    call(hsm_core, "write", "vault-hsm/db", password="first")
    first = hsm_core.store.head.seq
    call(hsm_core, "write", "vault-hsm/db", password="second", ttl="1h")
    assert call(hsm_core, "read", "vault-hsm/db") == {"password": "second", "ttl": "1h"}
    assert call(hsm_core, "list", "vault-hsm/") == {"keys": ["db"]}
    past = hsm_core.handle(Request("read", "vault-hsm/db", at=str(first)))
    assert past.data == {"password": "first"}
    call(hsm_core, "write", "sys/vaultlog/restore/vault-hsm/db", at=str(first))
    assert call(hsm_core, "read", "vault-hsm/db") == {"password": "first"}
    written = [e for e in hsm_core.store.events() if isinstance(e, SecretWritten)]
    assert [e.path for e in written] == ["db", "db", "db"]
    assert not any(b"first" in e.value or b"second" in e.value for e in written)
    # The key is the token's: sealed with the mount's label, opened only there.
    assert softhsm.labels(hsm_core.store.keyring.hsm_prefix) == [label]
    assert hsm_core.store.verify().ok


def test_the_mounts_key_is_not_extractable(hsm_core: Core, softhsm: SoftHsm) -> None:
    label = mount_hsm(hsm_core)
    (key,) = [o for o in softhsm.objects(read=label) if o["label"] == label]
    assert key["extractable"] is False and key["never_extractable"] is True
    assert key["sensitive"] is True and key["token"] is True
    assert key["value"] == "AttributeSensitive"  # the token refuses to say it
    # The keyring names the object; it holds no key of the mount's.
    assert [label] == list(hsm_core.store.keyring.hsm_labels().values())


def test_unmount_destroys_the_key_object_and_nothing_opens_the_old_values(
    hsm_core: Core, softhsm: SoftHsm, tmp_path: Path, unseal_key: bytes
) -> None:
    label = mount_hsm(hsm_core)
    call(hsm_core, "write", "vault-hsm/db", password="hunter2")
    mount_hsm(hsm_core, "other-hsm")  # another HSM mount keeps its key
    call(hsm_core, "write", "secret/plain", value="x")
    assert label in softhsm.labels()
    call(hsm_core, "delete", "sys/mounts/vault-hsm")
    assert hsm_core.store.warnings == []
    assert label not in softhsm.labels()
    assert len(softhsm.labels(hsm_core.store.keyring.hsm_prefix)) == 1
    hsm_core.store.close()

    # Reopened: the log still holds the sealed value; no key anywhere opens it.
    core = open_core(tmp_path / "data", unseal_key, write=True)
    try:
        (sealed,) = [
            e for e in core.store.events() if isinstance(e, SecretWritten) and e.path == "db"
        ]
        keyring = core.store.keyring
        software = [*keyring.terms.values(), keyring.audit_key]
        software += [k for k in keyring.mounts.values() if len(k) == 32]
        context = (sealed.mount_id, "value", "db")
        for key in software:
            with pytest.raises(SealError):
                Sealer(key).open(sealed.value, *context)
        token = hsm.current()
        for other in token.labels():
            with pytest.raises(SealError):
                token.sealer(other).open(sealed.value, *context)
        with pytest.raises(ShreddedError):
            token.sealer(label).open(sealed.value, *context)
        with pytest.raises(ShreddedError):
            keyring.mount_sealer(sealed.mount_id)
    finally:
        core.store.close()


def test_the_token_taken_away_fails_its_mount_alone_and_comes_back(
    hsm_core: Core, softhsm: SoftHsm
) -> None:
    mount_hsm(hsm_core)
    call(hsm_core, "write", "vault-hsm/db", password="hunter2")
    softhsm.remove()
    with pytest.raises(HsmUnavailableError, match=r'unavailable.*token "vaultlog"') as failed:
        call(hsm_core, "read", "vault-hsm/db")
    assert softhsm.pin not in str(failed.value)
    with pytest.raises(HsmUnavailableError):
        call(hsm_core, "write", "vault-hsm/db", password="lost")
    call(hsm_core, "write", "secret/plain", value="still served")
    assert call(hsm_core, "read", "secret/plain") == {"value": "still served"}
    softhsm.restore()  # sessions are opened again, without a restart
    assert call(hsm_core, "read", "vault-hsm/db") == {"password": "hunter2"}
    call(hsm_core, "write", "vault-hsm/db", password="after")
    assert call(hsm_core, "read", "vault-hsm/db") == {"password": "after"}


def test_a_pkcs11_mount_needs_an_hsm(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_HSM_LIB", raising=False)
    with pytest.raises(Exception, match='the pkcs11 backend needs an HSM: configure seal "pkcs11"'):
        call(core, "write", "sys/mounts/vault-hsm", type="pkcs11")
    assert core.store.state.mounts.at("vault-hsm/") is None


KILL_AFTER_GENERATE = """
import os, sys, time
from pathlib import Path
from eventstore import hsm, decode_unseal_key
from eventstore.hsm import HsmConfig, Hsm
from backends import Request
from tools.transport import open_core

generate = Hsm.generate
def generated_then_wait(self, label):
    generate(self, label)
    print("generated", label, flush=True)
    time.sleep(60)
Hsm.generate = generated_then_wait
lib, token, pin, data, key = sys.argv[1:]
hsm.configure(HsmConfig(lib=lib, token_label=token, pin=pin))
core = open_core(Path(data), decode_unseal_key(key), write=True)
core.handle(Request("write", "sys/mounts/vault-hsm", {"type": "pkcs11"}))
"""


def test_a_kill_between_the_key_object_and_the_mount_leaves_no_orphan(
    softhsm: SoftHsm, tmp_path: Path, unseal_key: bytes
) -> None:
    from eventstore import encode_unseal_key

    data = tmp_path / "data"
    open_core(data, unseal_key, write=True).store.close()
    hsm.configure(None)  # the child process has the token meanwhile
    for _ in range(3):
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                KILL_AFTER_GENERATE,
                *(softhsm.lib, softhsm.label),
                *(softhsm.pin, str(data), encode_unseal_key(unseal_key)),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **softhsm.env},
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("generated vaultlog-"), line
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert line.split()[1] in softhsm.labels()  # the object is there, its mount is not
    hsm.configure(softhsm.config())
    core = open_core(data, unseal_key, write=True)
    try:
        assert core.store.state.mounts.at("vault-hsm/") is None
        assert softhsm.labels(core.store.keyring.hsm_prefix) == []
        assert core.store.keyring.hsm_labels() == {}
        assert core.store.warnings == []
        mount_hsm(core)  # and the path is free
    finally:
        core.store.close()


def test_an_hsm_key_missing_from_the_token_is_said_plainly(
    hsm_core: Core, softhsm: SoftHsm
) -> None:
    label = mount_hsm(hsm_core)
    call(hsm_core, "write", "vault-hsm/db", password="hunter2")
    hsm_core.store.keyring.forget_sealers()
    assert hsm.current().destroy(label)  # destroyed behind the store's back
    with pytest.raises(Exception, match="data key of mount 'vault-hsm/' is missing from the HSM"):
        call(hsm_core, "read", "vault-hsm/db")


def test_snapshots_of_an_hsm_mount_and_none_while_the_token_is_away(
    softhsm: SoftHsm, tmp_path: Path, unseal_key: bytes
) -> None:
    from projections.snapshot import snapshot_seqs

    data = tmp_path / "data"
    core = open_core(data, unseal_key, write=True, snapshot_every=5)
    try:
        mount_hsm(core)
        for i in range(6):
            call(core, "write", f"vault-hsm/v{i}", value=str(i))
        taken = snapshot_seqs(data)
        assert taken  # its section sealed by the HSM
        softhsm.remove()
        for i in range(12):  # snapshots fall due: skipped, no write fails
            call(core, "write", f"secret/s{i}", value=str(i))
        assert snapshot_seqs(data) == taken
        softhsm.restore()
    finally:
        core.store.close()
    core = open_core(data, unseal_key, write=True)
    try:
        assert call(core, "read", "vault-hsm/v5") == {"value": "5"}  # from the snapshot
        assert call(core, "read", "secret/s11") == {"value": "11"}
    finally:
        core.store.close()
