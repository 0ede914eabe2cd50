"""The aws backend against moto's IAM in server mode on 127.0.0.1, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backends import Core, MountView, Request, Session
from eventstore import new_key
from projections import LeaseIssued, LeaseRevoked, LeaseRevokeFailed, decode, replay
from tests.conftest import VaultCLI, open_core, vault_executable
from tests.iam_endpoint import IamProxy, MotoServer

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}


@pytest.fixture
def aws(vault: VaultCLI, iam_proxy: IamProxy) -> VaultCLI:
    """An aws mount whose root credentials point at the proxy in front of moto."""
    vault("mount", "aws")
    vault(
        "write",
        "aws/config/root",
        "access_key=AKIAROOT",
        "secret_key=root-secret-key",
        "region=us-east-1",
        f"endpoint={iam_proxy.url}",
    )
    (vault.home / "policy.json").write_text(json.dumps(POLICY))
    vault("write", "aws/roles/deploy", "policy=@policy.json")
    return vault


def issue(vault: VaultCLI, path: str = "aws/creds/deploy") -> dict[str, Any]:
    return json.loads(vault("read", "-format=json", path))


def users(moto: MotoServer) -> set[str]:
    return {u["UserName"] for u in moto.iam().list_users()["Users"]}


def _username_for(vault: VaultCLI, lease_id: str) -> str:
    """The IAM user a lease was issued for, as the backend sealed it."""
    core = open_core(vault.data_dir, vault.unseal_key(), write=False)
    try:
        lease = core.store.state.leases[lease_id]
        session = Session(core.store, Request("read", lease.path), core.backends)
        view = MountView(session, core.store.state.mounts.by_id[lease.mount_id])
        return view.open_value(lease.internal, "lease", lease.id)["username"]
    finally:
        core.store.close()


def revocations(vault: VaultCLI) -> dict[str, str]:
    return {e.lease_id: e.reason for e in vault.events() if isinstance(e, LeaseRevoked)}


def test_issue_creates_user_with_policy_and_key(aws: VaultCLI, moto_server: MotoServer) -> None:
    secret = issue(aws)
    assert secret["lease_id"].startswith("aws/creds/deploy/")
    assert secret["lease_duration"] == 30 * 24 * 3600
    assert secret["renewable"] is True
    username = _username_for(aws, secret["lease_id"])
    assert username.startswith("vault-deploy-")
    iam = moto_server.iam()
    keys = iam.list_access_keys(UserName=username)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [secret["data"]["access_key"]]
    document = iam.get_user_policy(UserName=username, PolicyName="deploy")["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    assert document == POLICY

    table = aws("read", "aws/creds/deploy").splitlines()
    assert table[0].split() == ["Key", "Value"]
    assert [line.split()[0] for line in table[1:]] == [
        "lease_id",
        "lease_duration",
        "lease_renewable",
        "access_key",
        "secret_key",
    ]
    shorthand = issue(aws, "aws/deploy")  # the seed page's `vault read aws/deploy`
    assert shorthand["lease_id"].startswith("aws/deploy/")
    listed = aws("leases").splitlines()
    assert listed[0].split()[:2] == ["Lease", "ID"]
    assert len(listed) == 4


def test_managed_policy_role(aws: VaultCLI, moto_server: MotoServer) -> None:
    arn = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    aws("write", "aws/roles/reader", f"arn={arn}")
    assert json.loads(aws("read", "-format=json", "aws/roles/reader"))["data"] == {"arn": arn}
    assert aws("list", "aws/roles") == "Keys\ndeploy\nreader\n"
    secret = issue(aws, "aws/creds/reader")
    username = _username_for(aws, secret["lease_id"])
    attached = moto_server.iam().list_attached_user_policies(UserName=username)
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [arn]
    aws("delete", "aws/roles/reader")
    assert aws("list", "aws/roles") == "Keys\ndeploy\n"
    gone = aws.run("read", "aws/creds/reader")
    assert gone.returncode != 0 and "role 'reader' not found" in gone.stderr


def test_revoke_deletes_the_user(aws: VaultCLI, moto_server: MotoServer) -> None:
    secret = issue(aws)
    username = _username_for(aws, secret["lease_id"])
    assert username in users(moto_server)
    out = aws("revoke", secret["lease_id"])
    assert out == f"Key revoked with ID '{secret['lease_id']}'.\n"
    assert username not in users(moto_server)
    assert revocations(aws) == {secret["lease_id"]: "explicit"}
    again = aws.run("revoke", secret["lease_id"])
    assert again.returncode != 0 and again.stderr.startswith("Revoke error: lease not found")


def test_renew_extends_up_to_max(aws: VaultCLI) -> None:
    aws("write", "aws/config/lease", "lease=1h", "lease_max=3h")
    secret = issue(aws)
    assert secret["lease_duration"] == 3600
    renewed = json.loads(aws("renew", "-format=json", secret["lease_id"], "2h"))
    assert renewed["lease_id"] == secret["lease_id"]
    assert 7190 <= renewed["lease_duration"] <= 7200
    capped = json.loads(aws("renew", "-format=json", secret["lease_id"], "100h"))
    assert 3 * 3600 - 30 <= capped["lease_duration"] <= 3 * 3600


def test_revoke_prefix(aws: VaultCLI, moto_server: MotoServer) -> None:
    a, b = issue(aws), issue(aws)
    aws("write", "aws/roles/other", "policy=@policy.json")
    c = issue(aws, "aws/creds/other")
    assert aws("revoke", "-prefix", "aws/creds/deploy") == (
        "Key revoked with ID 'aws/creds/deploy'.\n"
    )
    assert set(revocations(aws)) == {a["lease_id"], b["lease_id"]}
    assert set(revocations(aws).values()) == {"prefix"}
    assert aws("leases", "-prefix=aws/").splitlines()[1].startswith(c["lease_id"])
    assert _username_for(aws, c["lease_id"]) in users(moto_server)


def test_expired_lease_is_revoked_on_next_open(aws: VaultCLI, moto_server: MotoServer) -> None:
    aws("write", "aws/config/lease", "lease=2s", "lease_max=10s")
    secret = issue(aws)
    username = _username_for(aws, secret["lease_id"])
    time.sleep(2.5)
    assert username in users(moto_server)  # reads and time alone revoke nothing
    aws("write", "secret/unrelated", "value=1")  # any open for writing expires leases first
    assert username not in users(moto_server)
    assert revocations(aws) == {secret["lease_id"]: "expired"}
    assert aws.run("leases").stderr == "No leases found\n"


def test_unmount_revokes_every_lease(aws: VaultCLI, moto_server: MotoServer) -> None:
    names = {_username_for(aws, issue(aws)["lease_id"]) for _ in range(3)}
    assert names <= users(moto_server)
    assert aws("unmount", "aws/") == "Successfully unmounted 'aws/'!\n"
    assert not names & users(moto_server)
    assert set(revocations(aws).values()) == {"unmount"}
    assert "aws/" not in aws("mounts")


def test_remount_revokes_and_keeps_config(aws: VaultCLI, moto_server: MotoServer) -> None:
    old = issue(aws)
    username = _username_for(aws, old["lease_id"])
    aws("remount", "aws/", "cloud/")
    assert username not in users(moto_server)
    assert revocations(aws) == {old["lease_id"]: "remount"}
    new = issue(aws, "cloud/creds/deploy")  # config and roles moved with the mount
    assert new["lease_id"].startswith("cloud/creds/deploy/")


def test_failed_revocation_keeps_mount_and_is_retried(
    aws: VaultCLI, iam_proxy: IamProxy, moto_server: MotoServer
) -> None:
    secret = issue(aws)
    username = _username_for(aws, secret["lease_id"])
    iam_proxy.stop()  # the endpoint goes down
    failed = aws.run("unmount", "aws/")
    assert failed.returncode == 2
    assert failed.stderr.startswith(f"Unmount error: failed to revoke lease '{secret['lease_id']}'")
    assert len(failed.stderr.strip().splitlines()) == 1
    assert "aws/" in aws("mounts")
    assert "revocation failing (1 attempts)" in aws("leases")
    assert [e.attempt for e in aws.events() if isinstance(e, LeaseRevokeFailed)] == [1]

    iam_proxy.restart()  # back up: the next open for writing retries after the backoff
    time.sleep(1.2)
    aws("write", "secret/x", "value=1")
    assert username not in users(moto_server)
    assert revocations(aws) == {secret["lease_id"]: "unmount"}
    assert "aws/" in aws("mounts")  # the unmount itself failed; the user runs it again
    aws("unmount", "aws/")


def test_force_revoke_drops_unrevocable_leases(aws: VaultCLI, iam_proxy: IamProxy) -> None:
    secret = issue(aws)
    iam_proxy.stop()
    plain = aws.run("revoke", "-prefix", "aws/")
    assert plain.returncode != 0 and "failed to revoke lease" in plain.stderr
    aws("revoke", "-force", "-prefix", "aws/")
    assert revocations(aws) == {secret["lease_id"]: "forced"}
    assert aws.run("leases").stderr == "No leases found\n"


def test_kill_during_issuance_leaves_no_user(
    aws: VaultCLI, iam_proxy: IamProxy, moto_server: MotoServer
) -> None:
    before = users(moto_server)
    iam_proxy.hang_after = "CreateUser"  # the user exists, then the CLI hangs
    child = subprocess.Popen(
        [vault_executable(), "read", "aws/creds/deploy"],
        env=aws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while "CreateUser" not in iam_proxy.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "CreateUser" in iam_proxy.seen
    leftover = users(moto_server) - before
    assert len(leftover) == 1  # created, and no lease recorded for it
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    iam_proxy.restart()
    assert not [e for e in aws.events() if isinstance(e, LeaseIssued)]

    aws("write", "secret/x", "value=1")  # the next open rolls the intent back
    assert users(moto_server) == before
    assert aws.run("leases").stderr == "No leases found\n"


def test_live_leases_replay_across_restarts(tmp_path: Path, moto_server: MotoServer) -> None:
    """The lease set rebuilt from the log equals the one maintained while running."""
    key, directory = new_key(), tmp_path / "store"

    def check(core: Core) -> None:
        rebuilt = replay(decode(record) for record in core.store.log.records())
        assert rebuilt.leases == core.store.state.leases
        assert rebuilt.intents == core.store.state.intents == {}

    core = open_core(directory, key, write=True)
    core.handle(Request("write", "sys/mounts/aws", {"type": "aws"}))
    root = {"access_key": "a", "secret_key": "b", "endpoint": moto_server.url}
    core.handle(Request("write", "aws/config/root", root))
    core.handle(Request("write", "aws/roles/r", {"policy": json.dumps(POLICY)}))
    ids = [core.handle(Request("read", "aws/creds/r")).lease_id for _ in range(4)]
    core.handle(Request("write", f"sys/revoke/{ids[0]}"))
    core.handle(Request("write", "sys/renew", {"lease_id": ids[1], "increment": "1h"}))
    check(core)
    live = dict(core.store.state.leases)
    core.store.close()

    for _ in range(2):  # restarts: open for writing (runs expiry), then read-only
        core = open_core(directory, key, write=True)
        assert core.store.state.leases == live
        check(core)
        core.handle(Request("write", "aws/config/lease", {"lease": "1s", "lease_max": "2s"}))
        ids.append(core.handle(Request("read", "aws/creds/r")).lease_id)
        live = dict(core.store.state.leases)
        core.store.close()
    time.sleep(1.1)
    core = open_core(directory, key, write=True)  # the short leases expire here
    check(core)
    assert set(core.store.state.leases) == set(ids[1:4])
    core.store.close()
    reader = open_core(directory, key, write=False)
    check(reader)
    reader.store.close()


def test_secret_keys_never_on_disk_in_plaintext(aws: VaultCLI) -> None:
    secret = issue(aws)
    needles = [b"root-secret-key", secret["data"]["secret_key"].encode()]
    for path in aws.home.rglob("*"):
        if path.is_file() and path.name != "policy.json":
            raw = path.read_bytes()
            assert not any(needle in raw for needle in needles), path
    for event in aws.events():  # nor in the metadata every audit view reads
        assert not any(needle.decode() in repr(event) for needle in needles)


def test_other_commands_do_not_import_boto3(aws: VaultCLI) -> None:
    """Nor psycopg: a command on a store of files never pays for either."""
    probe = (
        "import sys\n"
        "sys.argv = ['vault', 'mounts']\n"
        "from tools.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('boto3' in sys.modules or 'psycopg' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=aws.env, capture_output=True, text=True, check=True
    )
    assert "aws/" in result.stdout
    assert result.stderr.strip() == "False"
