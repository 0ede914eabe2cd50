"""A request of the past runs in a read-only session: it never acts outside the store.

``vault read aws/creds/ROLE -at=SEQ`` used to create a real IAM user and durably append
``intent.recorded`` before refusing, when the version index could not be believed.
Here, against moto's IAM (the same endpoint the aws tests use), no IAM user is created and
nothing is appended, with the index and without it. Also here, because it needs a lease:
``vault leases`` shows an expired lease that is not revoked yet as expired.
"""

from __future__ import annotations

import time

import pytest

from projections.snapshot import SNAPSHOT_DIR
from projections.sortedrun import RUN_FILE
from projections.versions import INDEX_FILE
from tests.conftest import VaultCLI
from tests.iam_endpoint import MotoServer
from tests.test_aws import aws, issue, users  # noqa: F401 - aws is a fixture


def head_of(vault: VaultCLI) -> str:
    return vault("audit", "verify").split("head ")[1].strip()


@pytest.mark.parametrize("index", ["believed", "missing"])
def test_issuing_credentials_of_the_past_is_refused_before_aws_is_called(
    aws: VaultCLI,  # noqa: F811 - the fixture
    moto_server: MotoServer,
    index: str,
) -> None:
    issue(aws)  # a live lease and an IAM user, so the past has a role to issue from
    seq = int(head_of(aws).split(":")[0])
    aws("write", "secret/later", "v=1")
    if index == "missing":  # the index cannot be used: the whole past state is rebuilt
        for name in (INDEX_FILE, RUN_FILE):
            (aws.data_dir / name).unlink(missing_ok=True)
        for snapshot in (aws.data_dir / SNAPSHOT_DIR).glob("*.snap"):
            snapshot.unlink()
    before_users, before_head = users(moto_server), head_of(aws)
    intents = aws("audit", "-type=intent", "-format=json")

    for path in ("aws/creds/deploy", "aws/deploy"):
        result = aws.run("read", path, f"-at={seq}")
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr

    assert users(moto_server) == before_users
    assert head_of(aws) == before_head  # not even the refused read was appended
    assert aws("audit", "-type=intent", "-format=json") == intents


def test_an_expired_lease_not_yet_revoked_is_shown_as_expired(
    aws: VaultCLI,  # noqa: F811 - the fixture
) -> None:
    aws("write", "aws/config/lease", "lease=1s", "lease_max=2s")
    issue(aws)
    time.sleep(1.5)
    # `vault leases` reads without the lock and revokes nothing: the lease is still live.
    rows = aws("leases").splitlines()[1:]
    assert len(rows) == 1 and rows[0].endswith("expired, revocation pending"), rows
