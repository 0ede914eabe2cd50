"""Today's Vault commands through the installed ``vault``, embedded, printed as OpenBao 2.7.2
prints them (cli-dev.json); and the ``sys/`` endpoints they stand on, in Vault's shapes."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from backends import (
    Core,
    InvalidRequestError,
    PermissionDeniedError,
    Request,
    RequestError,
    Response,
)
from backends.ttl import human_duration
from backends.version import VAULT_VERSION
from projections.audit import rfc3339_nano
from projections.events import MountTuned
from tests.conftest import VaultCLI, cli_env
from tests.iam_endpoint import IamProxy

MOUNT_KEYS = [
    "accessor",
    "config",
    "deprecation_status",
    "description",
    "external_entropy_access",
    "local",
    "options",
    "plugin_version",
    "running_plugin_version",
    "running_sha256",
    "seal_wrap",
    "type",
    "uuid",
]


def call(core: Core, operation: Any, path: str, data: dict[str, Any] | None = None) -> Response:
    return core.handle(Request(operation, path, data or {}))


def mounts(vault: VaultCLI) -> dict[str, Any]:
    return json.loads(vault("read", "-format=json", "sys/mounts"))["data"]


def failure(result: Any, code: int) -> str:
    """The one line a failed command printed, after checking its exit code."""
    assert (result.returncode, result.stdout) == (code, ""), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- the endpoints -------------------------------------------------------------------------


def test_mounts_in_vaults_shape(core: Core) -> None:
    call(core, "write", "sys/mounts/kv1", {"type": "kv", "config": {"default_lease_ttl": "1h"}})
    table = call(core, "read", "sys/mounts").data or {}
    assert list(table) == ["kv1/", "secret/", "sys/"]
    kv1 = table["kv1/"]
    assert list(kv1) == MOUNT_KEYS
    mount_id = core.store.state.mounts.at("kv1/").id  # type: ignore[union-attr]
    assert kv1["accessor"] == f"kv_{mount_id[:8]}"
    assert kv1["config"] == {"default_lease_ttl": 3600, "force_no_cache": False, "max_lease_ttl": 0}
    assert kv1["options"] == {"version": "1"}
    assert kv1["running_plugin_version"] == f"v{VAULT_VERSION}+builtin.vault"
    assert uuid.UUID(kv1["uuid"]).version == 5  # derived from the mount id: stable
    assert call(core, "read", "sys/mounts/kv1").data == kv1
    assert table["secret/"]["options"] == {} and "deprecation_status" not in table["secret/"]
    assert table["sys/"]["seal_wrap"] is True
    assert table["sys/"]["config"]["passthrough_request_headers"] == ["Accept"]
    with pytest.raises(InvalidRequestError, match=r"^No secret engine mount at nosuch/$"):
        call(core, "read", "sys/mounts/nosuch")


def test_mount_errors_are_worded_as_vaults(core: Core) -> None:
    call(core, "write", "sys/mounts/kv1", {"type": "kv"})
    cases = [
        ("kv1", {"type": "kv"}, "path is already in use at kv1/"),
        ("kv1/nested", {"type": "kv"}, "path is already in use at kv1/"),
        ("bogus", {"type": "nosuchengine"}, "plugin not found in the catalog: nosuchengine"),
        ("notype", {"description": "x"}, "backend type must be specified as a string"),
        ("sys", {"type": "kv"}, 'cannot mount "sys/"'),
        ("auth/foo", {"type": "kv"}, 'cannot mount "auth/foo/"'),
        ("kv2", {"type": "kv", "options": {"version": "2"}}, "KV version 2 is not supported"),
    ]
    for path, data, message in cases:
        with pytest.raises(RequestError) as raised:
            call(core, "write", f"sys/mounts/{path}", data)
        assert str(raised.value).startswith(message) and raised.value.status == 400
    head = core.store.head.seq
    call(core, "delete", "sys/mounts/nothere")  # as Vault: 204, nothing done
    assert core.store.head.seq == head
    with pytest.raises(InvalidRequestError, match=r'^cannot unmount "sys/"$'):
        call(core, "delete", "sys/mounts/sys")


def test_tune_is_an_event_and_reads_back_effective_ttls(core: Core) -> None:
    call(core, "write", "sys/mounts/kv1", {"type": "kv"})
    tune = "sys/mounts/kv1/tune"
    call(core, "write", tune, {"default_lease_ttl": "2h", "max_lease_ttl": "48h"})
    call(core, "write", tune, {"description": "tuned", "max_lease_ttl": ""})
    assert call(core, "read", tune).data == {
        "default_lease_ttl": 7200,
        "description": "tuned",
        "force_no_cache": False,
        "max_lease_ttl": 172800,
        "options": {"version": "1"},
    }
    tuned = [e for e in core.store.events() if isinstance(e, MountTuned)]
    assert [(e.description, e.default_lease_ttl, e.max_lease_ttl) for e in tuned] == [
        ("", 7200, 172800),
        ("tuned", 7200, 172800),
    ]
    call(core, "write", "kv1/a", {"v": "1"})
    assert call(core, "read", "kv1/a").lease_duration == 7200
    call(core, "write", tune, {"default_lease_ttl": 3600})
    assert call(core, "read", "kv1/a").lease_duration == 3600
    call(core, "write", tune, {"default_lease_ttl": "system", "max_lease_ttl": "system"})
    assert (call(core, "read", tune).data or {})["default_lease_ttl"] == 30 * 24 * 3600
    errors = [
        (tune, {"default_lease_ttl": "100h", "max_lease_ttl": "10h"}, "backend max lease TTL "
         "of 36000 would be less than backend default lease TTL of 360000"),
        ("sys/mounts/nosuch/tune", {"default_lease_ttl": "1h"},
         'tune of path "nosuch/" failed: no mount entry found'),
        (tune, {"default_lease_ttl": "soon"}, "invalid duration: 'soon'"),
    ]  # fmt: skip
    for path, data, message in errors:
        with pytest.raises(InvalidRequestError) as raised:
            call(core, "write", path, data)
        assert str(raised.value) == message
    with pytest.raises(InvalidRequestError, match='cannot fetch sysview for path "nosuch/"'):
        call(core, "read", "sys/mounts/nosuch/tune")


def test_remount_answers_a_migration_id_and_its_status(core: Core) -> None:
    call(core, "write", "sys/mounts/tomove", {"type": "kv"})
    moved = call(core, "write", "sys/remount", {"from": "tomove", "to": "moved/"})
    migration = (moved.data or {})["migration_id"]
    assert call(core, "read", f"sys/remount/status/{migration}").data == {
        "migration_id": migration,
        "migration_info": {
            "source_mount": "tomove/",
            "target_mount": "moved/",
            "status": "success",
        },
    }
    assert call(core, "read", "sys/remount/status/0000").data is None
    cases = [
        ({"from": "moved", "to": "secret"}, 'path already in use at "secret/"'),
        ({"from": "nosuch", "to": "other"}, 'no matching mount at "nosuch/"'),
        ({"from": "sys", "to": "sys2"}, 'cannot remount "sys/"'),
        ({"from": "moved", "to": "auth/x"}, "cannot remount to destination auth/x/"),
        ({"from": "moved"}, "both 'from' and 'to' path must be specified as a string"),
    ]
    for data, message in cases:
        with pytest.raises(RequestError) as raised:
            call(core, "write", "sys/remount", data)
        assert str(raised.value) == message


def test_ui_mounts_status_and_keys(core: Core) -> None:
    found = call(core, "read", "sys/internal/ui/mounts/secret/foo").data or {}
    assert found["path"] == "secret/" and found["type"] == "generic"
    with pytest.raises(PermissionDeniedError, match='grant access to path "nomount/foo/"'):
        call(core, "read", "sys/internal/ui/mounts/nomount/foo")
    seal = call(core, "read", "sys/seal-status").data or {}
    assert (seal["type"], seal["t"], seal["n"], seal["sealed"]) == ("shamir", 1, 1, False)
    assert (seal["version"], seal["storage_type"], seal["cluster_name"]) == (
        VAULT_VERSION,
        "file",
        "vaultlog",
    )
    health = call(core, "read", "sys/health").data or {}
    assert health["cluster_id"] == seal["cluster_id"] and health["initialized"] is True
    assert call(core, "read", "sys/leader").data == {"ha_enabled": False}
    assert call(core, "read", "sys/init").data == {"initialized": True}
    with pytest.raises(InvalidRequestError, match="Vault is already initialized"):
        call(core, "write", "sys/init", {"secret_shares": 1})
    rotated = call(core, "write", "sys/rotate/keyring").data or {}
    assert rotated["term"] == 2 and rotated["encryptions"] == 1  # the key.rotated record


def test_lease_endpoints_without_leases(core: Core) -> None:
    assert call(core, "list", "sys/leases/lookup/").data is None
    for data, message in (
        ({}, "lease_id must be specified"),
        ({"lease_id": "a/b"}, "invalid lease"),
    ):
        with pytest.raises(InvalidRequestError, match=f"^{message}$"):
            call(core, "write", "sys/leases/lookup", data)
    with pytest.raises(InvalidRequestError, match=r"^lease not found$"):
        call(core, "write", "sys/leases/renew/a/b")
    assert call(core, "write", "sys/leases/revoke", {"lease_id": "a/b"}).data is None


def test_durations_and_times_print_as_vaults() -> None:
    printed = [human_duration(s) for s in (0, 59, 60, 3599, 3600, 3660, 7201, 90061, 2764800)]
    assert printed == ["0s", "59s", "1m", "59m59s", "1h", "1h1m", "2h1s", "25h1m1s", "768h"]
    assert rfc3339_nano(1_796_162_655_958_911_331) == "2026-12-01T22:04:15.958911331Z"
    assert rfc3339_nano(1_796_162_655_000_000_000) == "2026-12-01T22:04:15Z"


# ---- the commands ------------------------------------------------------------------------


def test_status(vault: VaultCLI) -> None:
    result = vault.run("status")
    assert result.returncode == 0
    cluster_id = re.search(r"^Cluster ID      (\S+)$", result.stdout, re.M)
    assert cluster_id is not None
    assert result.stdout == (
        "Key             Value\n"
        "---             -----\n"
        "Seal Type       shamir\n"
        "Initialized     true\n"
        "Sealed          false\n"
        "Total Shares    1\n"
        "Threshold       1\n"
        f"Version         {VAULT_VERSION}\n"
        "Storage Type    file\n"
        "Cluster Name    vaultlog\n"
        f"Cluster ID      {cluster_id.group(1)}\n"
        "HA Enabled      false\n"
    )
    assert json.loads(vault("status", "-format=json"))["cluster_id"] == cluster_id.group(1)


def test_secrets_enable_list_tune_move_disable(vault: VaultCLI) -> None:
    assert vault("secrets", "enable", "-path=kvcli", "-version=1", "kv") == (
        "Success! Enabled the kv secrets engine at: kvcli/\n"
    )
    assert vault("secrets", "enable", "-path=gencli", "generic") == (
        "Success! Enabled the generic secrets engine at: gencli/\n"
    )
    out = vault(
        "secrets",
        "enable",
        "-path=kvcli2",
        "-description=two",
        "-default-lease-ttl=1h",
        "-max-lease-ttl=24h",
        "kv",
    )
    assert out == "Success! Enabled the kv secrets engine at: kvcli2/\n"
    assert vault("secrets", "tune", "-default-lease-ttl=2h", "kvcli/") == (
        "Success! Tuned the secrets engine at: kvcli/\n"
    )
    table = mounts(vault)
    assert table["kvcli/"]["config"]["default_lease_ttl"] == 7200
    assert table["kvcli2/"]["config"]["max_lease_ttl"] == 86400
    acc = {path: info["accessor"] for path, info in table.items()}
    assert vault("secrets", "list") == (
        "Path       Type       Accessor            Description\n"
        "----       ----       --------            -----------\n"
        f"gencli/    generic    {acc['gencli/']}    n/a\n"
        f"kvcli/     kv         {acc['kvcli/']:<16}    n/a\n"
        f"kvcli2/    kv         {acc['kvcli2/']:<16}    two\n"
        f"secret/    generic    {acc['secret/']}    generic secret storage\n"
        f"sys/       system     {acc['sys/']:<16}    "
        "system endpoints used for control, policy and debugging\n"
    )
    detailed = vault("secrets", "list", "-detailed").splitlines()
    assert detailed[0].startswith("Path       Plugin     Accessor            Default TTL    Max")
    kv_row = [cell.strip() for cell in re.split(r"\s{4,}", detailed[3])]
    assert kv_row[:10] == ["kvcli/", "kv", acc["kvcli/"], "7200", "system", "false",
                           "replicated", "false", "false", "map[version:1]"]  # fmt: skip
    assert kv_row[-1] == "supported" and kv_row[-4] == "n/a"
    assert json.loads(vault("secrets", "list", "-format=json")) == table

    move = vault("secrets", "move", "kvcli2/", "kvcli3/").splitlines()
    migration = move[0].rsplit(" ", 1)[1]
    assert move == [
        f"Started moving secrets engine kvcli2/ to kvcli3/, with migration ID {migration}",
        "Success! Finished moving secrets engine kvcli2/ to kvcli3/, with migration ID "
        f"{migration}",
    ]
    status = json.loads(vault("read", "-format=json", f"sys/remount/status/{migration}"))
    assert status["data"]["migration_info"]["target_mount"] == "kvcli3/"
    assert vault("secrets", "disable", "kvcli3/") == (
        "Success! Disabled the secrets engine (if it existed) at: kvcli3/\n"
    )
    assert vault("secrets", "disable", "nosuch") == (
        "Success! Disabled the secrets engine (if it existed) at: nosuch/\n"
    )
    assert "kvcli3/" not in mounts(vault)
    assert vault("unmount", "nothere/") == "Successfully unmounted 'nothere/'!\n"


def test_kv_commands(vault: VaultCLI) -> None:
    vault("secrets", "enable", "-path=kvcli", "-version=1", "kv")
    vault("secrets", "tune", "-default-lease-ttl=2h", "kvcli")
    assert vault("kv", "put", "kvcli/foo", "value=bar") == "Success! Data written to: kvcli/foo\n"
    assert vault("kv", "get", "kvcli/foo") == (
        "==== Data ====\nKey      Value\n---      -----\nvalue    bar\n"
    )
    as_json = json.loads(vault("kv", "get", "-format=json", "kvcli/foo"))
    assert re.fullmatch(r"[0-9a-f]{16}", as_json.pop("request_id"))  # the one its events carry
    assert as_json == {
        "lease_id": "",
        "lease_duration": 7200,
        "renewable": False,
        "data": {"value": "bar"},
        "warnings": None,
    }
    assert vault("kv", "get", "-field=value", "kvcli/foo") == "bar"
    assert vault("kv", "list", "kvcli/") == "Keys\n----\nfoo\n"
    assert vault("kv", "list", "-format=json", "kvcli") == '[\n  "foo"\n]\n'
    assert vault("kv", "put", "-mount=kvcli", "foo2", "value=baz", "ttl=90") == (
        "Success! Data written to: kvcli/foo2\n"
    )
    assert vault("kv", "get", "-mount=kvcli", "foo2") == (
        "==== Data ====\nKey      Value\n---      -----\nttl      90\nvalue    baz\n"
    )
    missing = vault.run("kv", "get", "kvcli/missing")
    assert failure(missing, 2) == "No value found at kvcli/missing"
    assert vault("kv", "delete", "kvcli/foo") == (
        "Success! Data deleted (if it existed) at: kvcli/foo\n"
    )
    assert vault("kv", "list", "kvcli") == "Keys\n----\nfoo2\n"
    assert vault("read", "kvcli/foo2").startswith("Key             Value\nlease_duration  90\n")


FAILURES = [
    (("secrets", "enable", "nosuch"), 2, "Error enabling: plugin not found in the catalog: nosuch"),
    (("secrets", "enable", "-path=secret", "kv"), 2,
     "Error enabling: path is already in use at secret/"),
    (("secrets", "enable", "-version=2", "kv"), 2,
     "Error enabling: KV version 2 is not supported: vaultlog serves KV version 1 only"),
    (("secrets", "enable", "-default-lease-ttl=abc", "kv"), 1,
     "invalid value \"abc\" for flag -default-lease-ttl: invalid duration: 'abc'"),
    (("secrets", "tune", "-max-lease-ttl=1h", "nosuch/"), 2,
     'Error tuning secrets engine nosuch/: tune of path "nosuch/" failed: no mount entry found'),
    (("secrets", "tune", "-default-lease-ttl=100h", "-max-lease-ttl=10h", "secret"), 2,
     "Error tuning secrets engine secret/: backend max lease TTL of 36000 would be less than "
     "backend default lease TTL of 360000"),
    (("secrets", "move", "nosuch/", "x/"), 2,
     'Error moving secrets engine nosuch/ to x/: no matching mount at "nosuch/"'),
    (("secrets", "disable", "sys/"), 2,
     'Error disabling secrets engine at sys/: cannot unmount "sys/"'),
    (("secrets", "list", "-format=yaml"), 1, "Invalid output format: yaml"),
    (("secrets", "list", "extra"), 1, "Error: too many arguments (see 'vault --help')"),
    (("kv", "get", "nomount/x"), 2,
     'Error reading nomount/x: no handler for route "nomount/x". route entry not found.'),
    (("kv", "get", "-field=nope", "secret/x"), 1, 'Field "nope" not present in secret'),
    (("kv", "put", "secret/y"), 1, "Must supply data"),
    (("kv", "put", "secret/y", "hunter2"), 1,
     "Error loading data: Invalid key/value pair (argument 1): format must be key=value"),
    (("kv", "list", "secret/nothing/"), 2, "No value found at secret/nothing/"),
    (("kv", "frob",), 1, "Error: No such command 'frob'. (see 'vault --help')"),
    (("lease", "lookup", "aws/creds/x/1"), 2,
     "error looking up lease id aws/creds/x/1: invalid lease"),
    (("lease", "renew", "aws/creds/x/1"), 2, "Error renewing aws/creds/x/1: lease not found"),
    (("lease", "renew", "-increment=soon", "x"), 1,
     "invalid value \"soon\" for flag -increment: invalid duration: 'soon'"),
    (("lease", "revoke", "-force", "aws/"), 1,
     "Specifying -force requires also specifying -prefix"),
    (("lease", "revoke", "-force", "-sync", "-prefix", "aws/"), 1,
     "-sync and -force are incompatible"),
    (("operator", "rotate", "-format=yaml"), 1, "Invalid output format: yaml"),
]  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> VaultCLI:
    home = tmp_path_factory.mktemp("commands")
    cli = VaultCLI(home, cli_env(home))
    cli("kv", "put", "secret/x", "v=1")
    return cli


@pytest.mark.parametrize("args,code,message", FAILURES, ids=[" ".join(f[0]) for f in FAILURES])
def test_failures_are_one_line(
    seeded: VaultCLI, args: tuple[str, ...], code: int, message: str
) -> None:
    head = seeded("read", "-field=seq", "sys/vaultlog/head")
    assert failure(seeded.run(*args), code) == message
    if args[:2] != ("kv", "get"):  # a read of a secret is audited, found or not
        assert seeded("read", "-field=seq", "sys/vaultlog/head") == head


def test_operator_key_status_and_rotate(vault: VaultCLI) -> None:
    status = vault("operator", "key-status")
    assert re.fullmatch(
        r"Key Term            1\n"
        r"Install Time        \d\d [A-Z][a-z]{2} \d\d \d\d:\d\d UTC\n"
        r"Encryption Count    \d+\n",
        status,
    )
    rotated = vault("operator", "rotate")
    assert re.fullmatch(
        r"Success! Rotated key\n\n"
        r"Key Term            2\n"
        r"Install Time        \d\d [A-Z][a-z]{2} \d\d \d\d:\d\d UTC\n"
        r"Encryption Count    1\n",
        rotated,
    )
    as_json = json.loads(vault("operator", "key-status", "-format=json"))
    assert list(as_json) == ["term", "install_time", "encryptions"] and as_json["term"] == 2
    assert vault("key-status").startswith("Key Term: 2\n")  # the seed's command is unchanged


@pytest.fixture
def aws(vault: VaultCLI, iam_proxy: IamProxy) -> VaultCLI:
    vault("secrets", "enable", "-max-lease-ttl=24h", "aws")
    vault(
        "write",
        "aws/config/root",
        "access_key=AKIAROOT",
        "secret_key=root-secret-key",
        "region=us-east-1",
        f"endpoint={iam_proxy.url}",
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
    }
    vault("write", "aws/roles/deploy", f"policy={json.dumps(policy)}")
    return vault


def test_lease_lookup_renew_revoke(aws: VaultCLI, iam_proxy: IamProxy) -> None:
    lease_id = json.loads(aws("read", "-format=json", "aws/creds/deploy"))["lease_id"]
    issued = lease_id.rsplit("/", 1)[1]
    lookup = aws("lease", "lookup", lease_id)
    pattern = (
        r"Key             Value\n"
        r"---             -----\n"
        r"expire_time     \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\n"
        f"id              {re.escape(lease_id)}\n"
        r"issue_time      \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\n"
        r"last_renewal    <nil>\n"
        r"path            aws/creds/deploy\n"
        r"renewable       true\n"
        r"ttl             (23h59m\d+s|24h)\n"
    )
    assert re.fullmatch(pattern, lookup), lookup
    assert aws("list", "sys/leases/lookup/aws/creds/deploy/") == f"Keys\n{issued}\n"
    assert aws("list", "sys/leases/lookup/") == "Keys\naws/\n"
    renewed = aws("lease", "renew", "-increment=30m", lease_id)
    assert renewed == (
        "Key                Value\n"
        "---                -----\n"
        f"lease_id           {lease_id}\n"
        "lease_duration     30m\n"
        "lease_renewable    true\n"
    )
    capped = aws.run("lease", "renew", "-increment=1000h", lease_id)
    assert capped.returncode == 0
    assert capped.stderr == (
        'Warning: TTL of "1000h" exceeded the effective max_ttl of "24h"; '
        "TTL value is capped accordingly\n"
    )
    assert aws("lease", "revoke", "-sync", lease_id) == f"Success! Revoked lease: {lease_id}\n"
    assert aws("lease", "revoke", lease_id) == "All revocation operations queued successfully!\n"

    second = json.loads(aws("read", "-format=json", "aws/creds/deploy"))["lease_id"]
    iam_proxy.stop()  # revocations fail from here on
    prefix = "aws/creds/"
    failed = aws.run("lease", "revoke", "-sync", "-prefix", prefix)
    line = failure(failed, 2)
    assert line.startswith(f"Error revoking leases with prefix {prefix}: failed to revoke lease")
    queued = aws("lease", "revoke", "-prefix", prefix)
    assert queued == "All revocation operations queued successfully!\n"  # recorded, retried
    assert second in aws("leases")
    forced = aws.run("lease", "revoke", "-force", "-prefix", prefix)
    assert forced.returncode == 0
    assert forced.stdout == f"Success! Force revoked any leases with prefix: {prefix}\n"
    assert forced.stderr == (
        "Warning! Force-removing leases can cause Vault to become out of sync with\n"
        "secret engines!\n"
    )
    assert aws.run("leases").stderr == "No leases found\n"
