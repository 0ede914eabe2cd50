"""The real `bao` CLI (OpenBao 2.7.2) run against real OpenBao and against `vault server -dev`.

The same commands go to both servers; exit code, stdout and stderr must be identical once
the values OpenBao's captures list as volatile are normalised (ids, accessors, times, TTL
countdowns, ports). Where the servers legitimately differ, KNOWN_DIFFERENCES says so row by
row. OpenBao has no aws engine, so the lease commands run on vaultlog alone, against moto's
IAM, and are held to the output `bao lease ...` printed for rabbitmq leases in the captures.

`pytest -s` prints the count of commands compared; with BAO_CLI_REPORT_DIR set, both
transcripts (as printed) and the differences (normalised) are also written there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.iam_endpoint import IamProxy, MotoServer
from tests.servers import (
    DevServer,
    ServerCLI,
    bao_client,
    bao_dev_server,
    health_status,
    running,
    vaultlog_dev_server,
)

bao_server = servers.bao_server  # module-scoped fixtures: one server of each kind
vaultlog_server = servers.vaultlog_server


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    exit_code: int  # what real OpenBao answers; checked against bao before any comparison

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def step(command: str, exit_code: int = 0) -> Step:
    return Step(tuple(shlex.split(command)), exit_code)


# Run in this order on both servers; state carries over from one step to the next.
SEQUENCE = (
    step("status"),
    step("secrets list"),
    step("secrets enable -path=team generic"),
    step("secrets enable -path=kvx -version=1 kv"),
    step("secrets enable -path=tuned -description=two -default-lease-ttl=1h -max-lease-ttl=24h kv"),
    step("secrets enable -path=team generic", 2),
    step("secrets list"),
    step("secrets tune -default-lease-ttl=2h kvx/"),
    step("secrets tune -max-lease-ttl=48h -description=retuned tuned/"),
    step("secrets tune -default-lease-ttl=2h nosuch/", 2),
    step("secrets list"),
    step("secrets move tuned/ moved/"),
    step("secrets move nosuch/ moved2/", 2),
    step("secrets list"),
    step("secrets disable moved/"),
    step("secrets disable nosuch/"),
    step("write team/db password=s3cret user=admin"),
    step("read team/db"),
    step("read -format=json team/db"),
    step("write team/short ttl=1h value=x"),
    step("read team/short"),
    step("read -format=json team/short"),
    step("read -field=password team/db"),
    step("read -field=nofield team/db", 1),
    step("write team/apps/one a=1"),
    step("list team/"),
    step("list -format=json team/"),
    step("list team/apps"),
    step("list nothing/", 2),
    step("read team/missing", 2),
    step("read nomount/x", 2),
    step("write nomount/x a=b", 2),
    step("delete nomount/x", 2),
    step("read -format=json team/missing", 2),
    step("list -format=json nothing/", 2),
    step("delete team/db"),
    step("delete team/db"),
    step("read team/db", 2),
    step("kv put kvx/app value=bar"),
    step("kv get kvx/app"),
    step("kv get -format=json kvx/app"),
    step("kv get -field=value kvx/app"),
    step("kv list kvx/"),
    step("kv list -format=json kvx"),
    step("kv put -mount=kvx app2 value=baz"),
    step("kv get -mount=kvx app2"),
    step("kv list -mount=kvx"),
    step("kv put -mount=kvx nested/deep value=1"),
    step("kv list kvx/"),
    step("kv list -mount=kvx nested"),
    step("kv delete kvx/nested/deep"),
    step("kv get kvx/missing", 2),
    step("kv get -format=json kvx/missing", 2),
    step("kv get -mount=kvx missing", 2),
    step("kv get nomount/x", 2),
    step("kv put team/viakv value=1"),
    step("kv get team/viakv"),
    step("read kvx/app"),
    step("kv delete kvx/app"),
    step("kv delete -mount=kvx app2"),
    step("kv list kvx/", 2),
    step("lease lookup kvx/nope/abc", 2),
    step("lease renew kvx/nope/abc", 2),
    step("lease revoke kvx/nope/abc"),
    step("lease revoke -prefix nosuch/"),
    step("list sys/leases/lookup/nosuch/", 2),
    step("operator key-status"),
    step("operator rotate"),
    step("operator key-status"),
    step("secrets disable team/"),
    step("secrets disable kvx/"),
    step("secrets list"),
)


@dataclass(frozen=True)
class Known:
    """One row of a table where vaultlog legitimately differs from OpenBao's dev server."""

    command: str  # the step it applies to
    row: str  # the table row's first cell
    action: str  # "drop": the row exists only on OpenBao; "mask": its values differ
    why: str


KNOWN_DIFFERENCES = (
    Known("secrets list", "identity/", "drop", "vaultlog has no identity store yet"),
    Known("secrets list", "secret/", "mask", "bao -dev mounts kv v2 there, vaultlog generic"),
    Known("status", "Version", "mask", "each server prints its own version"),
    Known("status", "Commit Date", "drop", "vaultlog has no commit date, by design"),
)

# Each server's system default lease TTL, what a mount without its own default_lease_ttl
# gives: vaultlog keeps Vault 0.5's 30 days by design, OpenBao has 32. lease_duration is
# volatile in the captures; only these default values are masked, so tuned TTLs still compare.
SYSTEM_DEFAULT_TTL = {"bao": ("768h", 2764800), "vaultlog": ("720h", 2592000)}


def mask_default_ttl(text: str, side: str) -> str:
    table, seconds = SYSTEM_DEFAULT_TTL[side]
    text = re.sub(
        rf"^((?:refresh_interval|lease_duration)\s+){table}$", r"\g<1><default>", text, flags=re.M
    )
    return re.sub(rf'("lease_duration": ){seconds}\b', r"\g<1><default>", text)


# The values OpenBao's captures list under volatile_keys, as they appear in CLI output.
VOLATILE = (
    # request_id, migration_id, cluster_id, uuid
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"^(Cluster Name\s+)\S+$", re.M), r"\g<1><cluster_name>"),  # cluster_name
    (re.compile(r"\b([a-z][a-z0-9]*)_[0-9a-f]{8}\b"), r"\1_<accessor>"),  # accessor
    # expire_time, issue_time, time, install_time (`operator key-status` prints it as
    # "02 Dec 26 05:59 UTC")
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"), "<time>"),
    (re.compile(r"\b\d\d [A-Z][a-z]{2} \d\d \d\d:\d\d UTC\b"), "<time>"),
    (re.compile(r"^(Encryption Count\s+)\d+$", re.M), r"\g<1><count>"),  # encryptions
    (re.compile(r"^(ttl\s+)\S+$", re.M), r"\g<1><ttl>"),  # ttl countdowns like 59m59s
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
)


# Lines the CLI prints or not depending on timing, dropped on both sides: `secrets move` polls
# sys/remount/status and prints this while OpenBao's migration is still running (then sleeps
# 10s); vaultlog moves a mount synchronously, so its first poll already says "success".
TIMING_LINES = re.compile(r"^Waiting for terminal status in migration of .*\n", re.M)


def normalise(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


# ---- tables as bao prints them (github.com/ryanuber/columnize, glue of four spaces) ------


def parse_table(text: str) -> list[list[str]]:
    return [re.split(r" {2,}", line) for line in text.splitlines() if line]


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]
        lines.append("    ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def well_formed(text: str) -> bool:
    """The text is one table aligned exactly as bao's own tables are."""
    return render_table(parse_table(text)) == text


def apply_known(command: str, text: str, side: str) -> str:
    """The table with KNOWN_DIFFERENCES for this command applied, realigned."""
    known = {k.row: k for k in KNOWN_DIFFERENCES if k.command == command}
    if not known or not text:
        return text
    rows = []
    for row in parse_table(text):
        difference = known.get(row[0])
        if difference is None:
            rows.append(row)
        elif difference.action == "mask":
            rows.append([row[0], f"<known difference: {difference.why}>"])
        elif side != "bao":
            rows.append(row)  # a row OpenBao alone should have: keep it, so it shows
    return render_table(rows)


# ---- running the sequence --------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def show(self) -> str:
        stdout = (
            self.stdout if self.stdout.endswith("\n") or not self.stdout else self.stdout + "\n"
        )
        return f"[exit {self.exit_code}]\n--- stdout ---\n{stdout}--- stderr ---\n{self.stderr}"


def run_sequence(cli: ServerCLI) -> list[Outcome]:
    outcomes = []
    for item in SEQUENCE:
        result = cli.run(*item.argv, timeout=30)
        outcomes.append(Outcome(result.returncode, result.stdout, result.stderr))
    return outcomes


def has_known_differences(item: Step) -> bool:
    return any(
        k.command == shlex.join(item.argv[: len(k.command.split())]) for k in KNOWN_DIFFERENCES
    )


def comparable(item: Step, outcome: Outcome, side: str) -> Outcome:
    """The outcome with volatile values normalised and known differences applied."""
    stdout = mask_default_ttl(normalise(TIMING_LINES.sub("", outcome.stdout)), side)
    if has_known_differences(item) and outcome.exit_code == 0:
        stdout = apply_known(shlex.join(item.argv[:2]), stdout, side)
    return Outcome(outcome.exit_code, stdout, normalise(outcome.stderr))


def report(name: str, text: str) -> None:
    directory = os.environ.get("BAO_CLI_REPORT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / name).write_text(text)


def transcript(outcomes: list[Outcome], side: str) -> str:
    """Every command's output exactly as printed, for people comparing by eye."""
    parts = [f"# `bao` (OpenBao 2.7.2 CLI) commands against {side}, in order, as printed\n"]
    for item, outcome in zip(SEQUENCE, outcomes, strict=True):
        parts.append(f"\n$ bao {item.command}\n{outcome.show()}")
    return "".join(parts)


@pytest.fixture(scope="module")
def bao_outcomes(bao_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    outcomes = run_sequence(bao_client(bao_server, tmp_path_factory.mktemp("bao-cli")))
    report("bao_outputs.txt", transcript(outcomes, "OpenBao 2.7.2 (bao server -dev)"))
    return outcomes


def test_sequence_on_openbao_answers_as_expected(bao_outcomes: list[Outcome]) -> None:
    """The harness itself, against the reference: exit codes, and tables it can realign."""
    for item, outcome in zip(SEQUENCE, bao_outcomes, strict=True):
        assert outcome.exit_code == item.exit_code, (item.command, outcome.show())
        if has_known_differences(item):
            assert well_formed(outcome.stdout), outcome.stdout
    listed = parse_table(bao_outcomes[1].stdout)
    assert [row[0] for row in listed] == [
        "Path",
        "----",
        "cubbyhole/",
        "identity/",
        "secret/",
        "sys/",
    ]
    storage = dict(row[:2] for row in parse_table(bao_outcomes[0].stdout))
    assert storage["Storage Type"] == "inmem"


def test_vaultlog_server_answers_bao_like_openbao(
    bao_outcomes: list[Outcome],
    vaultlog_server: DevServer,
    tmp_path: Path,
) -> None:
    ours = run_sequence(bao_client(vaultlog_server, tmp_path / "cli"))
    report("vaultlog_outputs.txt", transcript(ours, "vaultlog (vault server -dev)"))
    differences = []
    for item, theirs, mine in zip(SEQUENCE, bao_outcomes, ours, strict=True):
        expected = comparable(item, theirs, "bao")
        actual = comparable(item, mine, "vaultlog")
        misaligned = (
            mine.exit_code == 0 and has_known_differences(item) and not well_formed(mine.stdout)
        )
        if expected != actual or misaligned:
            note = " (table not aligned as bao aligns it)" if misaligned else ""
            differences.append(
                f"## bao {item.command}{note}\nexpected (OpenBao):\n{expected.show()}\n"
                f"actual (vaultlog):\n{actual.show()}\n"
            )
    identical = len(SEQUENCE) - len(differences)
    summary = (
        f"bao CLI comparison: {len(SEQUENCE)} commands compared, {identical} identical, "
        f"{len(differences)} different; known differences: "
        + "; ".join(f"{k.command} {k.row} ({k.action}: {k.why})" for k in KNOWN_DIFFERENCES)
        + "; system default lease TTL masked ("
        + ", ".join(f"{side} {ttl}" for side, (ttl, _) in SYSTEM_DEFAULT_TTL.items())
        + ")"
    )
    print(f"\n{summary}")
    report("bao_cli_differences.md", f"{summary}\n\n" + "\n".join(differences))
    assert not differences, f"{summary}\n\n" + "\n".join(differences)


@pytest.mark.parametrize("make", [bao_dev_server, vaultlog_dev_server], ids=["bao", "vaultlog"])
def test_stopped_server_leaves_nothing_behind(
    make: Callable[[Path], DevServer], tmp_path: Path
) -> None:
    with running(make(tmp_path)) as server:
        assert server.process is not None
        pid = server.process.pid
        assert health_status(server.addr) == 200
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # and nothing it started is left in its session
    assert health_status(server.addr) is None


# ---- lease commands on aws credentials (vaultlog only: OpenBao has no aws engine) --------

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}

# What `bao lease ...` printed for a rabbitmq lease with a 1h TTL (cli-dev.json).
CAPTURED_ID = "rabbitmq/creds/app/zDzg64HaRF0sPmBWu8ytOHF7"
CAPTURED_LOOKUP = """\
Key             Value
---             -----
expire_time     2026-12-01T23:06:19.030961178Z
id              rabbitmq/creds/app/zDzg64HaRF0sPmBWu8ytOHF7
issue_time      2026-12-01T22:06:19.030960522Z
last_renewal    <nil>
path            rabbitmq/creds/app
renewable       true
ttl             59m59s
"""
CAPTURED_RENEW = """\
Key                Value
---                -----
lease_id           rabbitmq/creds/app/zDzg64HaRF0sPmBWu8ytOHF7
lease_duration     1h
lease_renewable    true
"""
CAPTURED_RENEW_30M = CAPTURED_RENEW.replace("1h\n", "30m\n")
CAPTURED_REVOKE = "All revocation operations queued successfully!\n"
CAPTURED_READ_KEYS = ["request_id", "lease_id", "lease_duration", "renewable", "data", "warnings"]


def users(moto: MotoServer) -> set[str]:
    return {u["UserName"] for u in moto.iam().list_users()["Users"]}


def as_captured(lease_id: str) -> Callable[[str], str]:
    """Our lease's output rewritten with the captured lease's id and path, for comparing."""
    path = lease_id.rsplit("/", 1)[0]

    def rewrite(text: str) -> str:
        return normalise(text.replace(lease_id, CAPTURED_ID).replace(path, "rabbitmq/creds/app"))

    return rewrite


def ttl_seconds(text: str) -> int:
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert match and text, f"not a Go duration: {text!r}"
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@pytest.fixture
def aws_bao(tmp_path: Path, moto_server: MotoServer, iam_proxy: IamProxy) -> Iterator[ServerCLI]:
    """bao against a fresh vaultlog server whose aws mount points at moto, as in test_aws."""
    with running(vaultlog_dev_server(tmp_path / "server")) as server:
        bao = bao_client(server, tmp_path / "cli")
        assert bao("secrets", "enable", "aws") == (
            "Success! Enabled the aws secrets engine at: aws/\n"
        )
        bao(
            "write",
            "aws/config/root",
            "access_key=AKIAROOT",
            "secret_key=root-secret-key",
            "region=us-east-1",
            f"endpoint={iam_proxy.url}",
        )
        bao("write", "aws/config/lease", "lease=1h", "lease_max=24h")
        (bao.home / "policy.json").write_text(json.dumps(POLICY))
        for role in ("deploy", "other"):
            assert bao("write", f"aws/roles/{role}", "policy=@policy.json") == (
                f"Success! Data written to: aws/roles/{role}\n"
            )
        yield bao


def issue(bao: ServerCLI, role: str = "deploy") -> dict[str, Any]:
    secret: dict[str, Any] = json.loads(bao("read", "-format=json", f"aws/creds/{role}"))
    return secret


def test_lease_commands_on_aws_credentials(aws_bao: ServerCLI, moto_server: MotoServer) -> None:
    bao = aws_bao
    before = users(moto_server)
    secret = issue(bao)
    lease_id = secret["lease_id"]
    assert list(secret) == CAPTURED_READ_KEYS
    assert lease_id.startswith("aws/creds/deploy/")
    assert (secret["lease_duration"], secret["renewable"], secret["warnings"]) == (3600, True, None)
    assert re.fullmatch(r"[0-9a-f-]{36}", secret["request_id"])
    created = users(moto_server) - before
    assert len(created) == 1
    rewrite = as_captured(lease_id)

    lookup = bao.run("lease", "lookup", lease_id)
    assert (lookup.returncode, lookup.stderr) == (0, "")
    assert rewrite(lookup.stdout) == normalise(CAPTURED_LOOKUP)
    rows = dict(row[:2] for row in parse_table(lookup.stdout))
    assert 3540 <= ttl_seconds(rows["ttl"]) <= 3600

    renewed = bao.run("lease", "renew", lease_id)
    assert (renewed.returncode, renewed.stderr) == (0, "")
    assert rewrite(renewed.stdout) == CAPTURED_RENEW
    shorter = bao.run("lease", "renew", "-increment=30m", lease_id)
    assert (shorter.returncode, shorter.stderr) == (0, "")
    assert rewrite(shorter.stdout) == CAPTURED_RENEW_30M
    rows = dict(row[:2] for row in parse_table(bao("lease", "lookup", lease_id)))
    assert 1740 <= ttl_seconds(rows["ttl"]) <= 1800

    revoked = bao.run("lease", "revoke", lease_id)
    assert (revoked.returncode, revoked.stdout, revoked.stderr) == (0, CAPTURED_REVOKE, "")
    assert users(moto_server) == before  # the IAM user is gone
    gone = bao.run("lease", "lookup", lease_id)
    assert gone.returncode == 2
    assert rewrite(gone.stderr) == (
        f"error looking up lease id {CAPTURED_ID}: Error making API request.\n\n"
        "URL: PUT http://127.0.0.1:<port>/v1/sys/leases/lookup\n"
        "Code: 400. Errors:\n\n* invalid lease\n"
    )

    doomed = {issue(bao)["lease_id"] for _ in range(2)}
    kept = issue(bao, "other")["lease_id"]
    assert len(users(moto_server) - before) == 3
    prefix = bao.run("lease", "revoke", "-prefix", "aws/creds/deploy/")  # trailing / as captured
    assert (prefix.returncode, prefix.stdout, prefix.stderr) == (0, CAPTURED_REVOKE, "")
    assert len(users(moto_server) - before) == 1
    for lease in doomed:
        assert bao.run("lease", "lookup", lease).returncode == 2
    listed = bao.run("list", "sys/leases/lookup/aws/creds/deploy")
    assert (listed.returncode, listed.stdout) == (2, "")
    assert listed.stderr == "No value found at sys/leases/lookup/aws/creds/deploy\n"
    # A list is of a folder, with or without the trailing / (OpenBao appends it to lists).
    assert bao("list", "sys/leases/lookup/aws/creds") == "Keys\n----\nother/\n"
    for folder in ("sys/leases/lookup/aws/creds/other", "sys/leases/lookup/aws/creds/other/"):
        assert bao("list", folder) == f"Keys\n----\n{kept.rsplit('/', 1)[1]}\n"
    everything = bao.run("lease", "revoke", "-prefix", "aws/")
    assert (everything.returncode, everything.stdout) == (0, CAPTURED_REVOKE)
    assert users(moto_server) == before
