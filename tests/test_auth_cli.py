"""`vault` token, login, policy, auth and seal commands, held to what `bao` (OpenBao 2.7.2)
prints.

Each sequence of commands runs three ways, each on servers of its own: `bao` against real
OpenBao (the reference), `vault` against real OpenBao (the CLI alone: every step must print
exactly what bao printed), and `vault` against vaultlog's server (the whole stack: the same,
but for the servers' KNOWN_DIFFERENCES). Outputs are compared once volatile values (tokens,
accessors, keys, ids, times, TTL countdowns, ports) are masked, and once bao's own name is
this CLI's (`bao login` -> `vault login`, OpenBao -> Vault, BAO_TOKEN -> VAULT_TOKEN): a
paragraph so renamed is compared with its words re-flowed, as the names' lengths differ.
Vault 0.5's names (`vault unseal`, `vault token-create`, ...) are compared with today's
command bao runs. `pytest -s` prints how many steps were compared.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import stat
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import vault_executable
from tests.iam_endpoint import free_port
from tests.servers import (
    DevServer,
    ServerCLI,
    bao_dev_server,
    bao_executable,
    config_server,
    running,
    server_env,
    vaultlog_dev_server,
)

READER = 'path "team/*" {\n  capabilities = ["read", "list"]\n}\n'
WRITER = 'path "team/*" { capabilities = ["create", "update"] }\n'
BAD = 'path "x" { capabilities = ["bogus"] }\n'


@dataclass(frozen=True)
class Step:
    command: str  # vault's arguments, with {NAME}s saved by earlier steps
    exit_code: int = 0  # what bao answers against OpenBao
    bao: str = ""  # bao's arguments, where vault's are Vault 0.5's name for them
    save: tuple[tuple[str, str], ...] = ()  # NAME and a regex whose group 1 is in stdout
    stdin: str | None = None
    token: str | None = None  # the client's token for this step (default: root's)


def step(
    command: str,
    exit_code: int = 0,
    *,
    bao: str = "",
    save: dict[str, str] | None = None,
    stdin: str | None = None,
    token: str | None = None,
) -> Step:
    return Step(command, exit_code, bao, tuple((save or {}).items()), stdin, token)


TOKEN = r"(s\.[A-Za-z0-9]{24})"
ACCESSOR = r'"accessor": "([A-Za-z0-9]{24})"'

# Against dev servers (root token "root"); state carries over from step to step.
DEV = (
    # policies
    step("policy write reader reader.hcl"),
    step("policy write writer -", stdin=WRITER),
    step("policy write Upper reader.hcl"),
    step("policy write reader missing.hcl", 2),
    step("policy write root reader.hcl", 2),
    step("policy write x", 1),
    step("policy read reader"),
    step("policy read -format=json reader"),
    step("policy read upper"),
    step("policy read nosuch", 2),
    step("policy read root", 2),
    step("policy read", 1),
    step("policy list"),
    step("policy list -format=json"),
    step("policy list extra", 1),
    step("policy delete upper"),
    step("policy delete nosuch"),
    step("policy delete root", 2),
    step("policy delete default", 2),
    step("policy delete", 1),
    step("policy-write other reader.hcl", bao="policy write other reader.hcl"),
    step("policies", bao="policy list"),
    step("policies other", bao="policy read other"),
    step("policy-delete other", bao="policy delete other"),
    # tokens
    step("token create -policy=reader -ttl=1h"),
    step("token create -policy=reader -ttl=1h -format=json"),
    step("token create -policy=reader -orphan -ttl=10m"),
    step(
        "token create -policy=reader -policy=writer -period=30m -renewable=false "
        "-no-default-policy -display-name=app -use-limit=3 -metadata=team=blue"
    ),
    step("token create -policy=reader,writer -ttl=90 -explicit-max-ttl=2h"),
    step("token create -policy=reader -ttl=1h -field=token_policies"),
    step("token create -policy=reader -ttl=1h -field=token_duration -format=json"),
    step("token create -policy=reader -field=nope", 1),
    step("token create -policy=reader -ttl=1h -field=token", save={"T1": TOKEN}),
    step("token create -policy=reader -ttl=1h -field=token", save={"T2": TOKEN}),
    step("token create -policy=reader -ttl=1h -field=token", save={"T3": TOKEN}),
    step("token lookup -format=json {T1}", save={"A1": ACCESSOR}),
    step("token lookup -format=json {T3}", save={"A3": ACCESSOR}),
    step("token lookup {T1}"),
    step("token lookup -accessor {A1}"),
    step("token lookup -field=policies {T1}"),
    step("token lookup -field=nope {T1}", 1),
    step("token lookup"),
    step("token lookup -format=json", token="{T2}"),
    step("token lookup s.nosuchtokennosuchtoken00", 2),
    step("token renew {T1}"),
    step("token renew -increment=30m {T1}"),
    step("token renew -format=json {T1}"),
    step("token renew -accessor {A1}"),
    step("token renew", 2),
    step("token capabilities {T1} team/x"),
    step("token capabilities team/x"),
    step("token capabilities -format=json {T1} team/x"),
    step("token capabilities -format=json team/x", token="{T1}"),
    step("token revoke -accessor {A3}"),
    step("token lookup {T3}", 2),
    step("token revoke -mode=orphan {T2}"),
    step("token revoke {T1}"),
    step("token revoke {T1}"),
    step("token lookup {T1}", 2),
    step(
        "token-create -policy=reader -ttl=1h -field=token",
        bao="token create -policy=reader -ttl=1h -field=token",
        save={"T4": TOKEN},
    ),
    step("token-lookup -field=policies {T4}", bao="token lookup -field=policies {T4}"),
    step("token-renew {T4}", bao="token renew {T4}"),
    step("token-revoke {T4}", bao="token revoke {T4}"),
    step("token create -policy=reader -ttl=1h -field=token", save={"T5": TOKEN}),
    step("token revoke -self", token="{T5}"),
    step("token lookup {T5}", 2),
    # usage errors, told as Go's flag package and bao tell them
    step("token create extra", 1),
    step("token create -ttl=bogus", 1),
    step("token create -ttl=1s2", 1),
    step("token create -ttl=1x", 1),
    step("token create -use-limit=abc", 1),
    step("token create -orphan=maybe", 1),
    step("token create -policy", 1),
    step("token create -bogus", 1),
    step("token lookup a b", 1),
    step("token lookup -accessor", 1),
    step("token renew -increment=bogus x", 1),
    step("token revoke", 1),
    step("token revoke a b", 1),
    step("token revoke -self x", 1),
    step("token revoke -mode=bogus x", 1),
    step("token revoke -mode=orphan -accessor x", 1),
    step("token capabilities", 1),
    step("token capabilities a b c", 1),
    # login (the token helper is ~/.vault-token of the CLI's home)
    step("login -no-store root"),
    step("login root"),
    step("login -no-store -format=json root"),
    step("login -no-store -field=token_policies root"),
    step("login -no-store -field=token_meta_x root", 1),
    step("login -token-only root"),
    step("login -no-print root"),
    step("login -no-store -no-print root", 1),
    step("login -no-store root lookup=false"),
    step("login -no-store root lookup=maybe", 2),
    step("login -no-store s.nosuchtokennosuchtoken00", 2),
    step("login -no-store", 2),
    step("login -method=nosuch username=alice", 1),
    step("auth -no-store root", bao="login -no-store root"),
    # auth methods
    step("auth enable userpass"),
    step("auth enable -path=up2 -description='second one' userpass"),
    step("auth enable userpass", 2),
    step("auth enable nosuchtype", 2),
    step("auth enable", 1),
    step("auth enable a b", 1),
    step("auth list"),
    step("auth list -detailed"),
    step("auth list -format=json"),
    step("write auth/userpass/users/alice password=wonder policies=reader token_ttl=1h"),
    step("login -no-store -method=userpass username=alice password=wonder"),
    step("login -no-store -method=userpass -field=token_policies username=alice password=wonder"),
    step("login -no-store -method=userpass username=alice password=wrong", 2),
    step("login -no-store -method=userpass -path=up2 username=alice password=wonder", 2),
    step("login -no-store -method=userpass", 2),
    step("login -no-store -method=userpass username=alice", 2),
    step(
        "auth -no-store -method=userpass username=alice password=wonder",
        bao="login -no-store -method=userpass username=alice password=wonder",
    ),
    step("auth tune -default-lease-ttl=1h up2/"),
    step("auth tune -max-lease-ttl=2h -description=retuned up2"),
    step("auth tune -default-lease-ttl=1h nosuch/", 2),
    step("auth list -detailed"),
    step("auth help userpass"),
    step("auth help token"),
    step("auth help up2"),
    step("auth help nosuch", 1),
    step("auth help", 1),
    step("auth disable up2/"),
    step("auth disable nosuch"),
    step("auth disable", 1),
    step("auth-enable -path=up3 userpass", bao="auth enable -path=up3 userpass"),
    step("auth-disable up3", bao="auth disable up3"),
    step("auth list"),
)

KEY = r"([A-Za-z0-9+/]{43,44}={0,2})"
# Against servers with a config file, sealed: init, unseal (progress, reset), seal.
SEALED = (
    step("status", 2),
    step("operator init -status", 2),
    step("operator init -key-shares=abc", 1),
    step("operator init extra", 1),
    step(
        "operator init -key-shares=3 -key-threshold=2",
        save={
            "K1": rf"^Unseal Key 1: {KEY}$",
            "K2": rf"^Unseal Key 2: {KEY}$",
            "K3": rf"^Unseal Key 3: {KEY}$",
            "ROOT": rf"^Initial Root Token: {TOKEN}$",
        },
    ),
    step("operator init", 2),
    step("operator init -status"),
    step("status", 2),
    step("operator unseal {K1}"),
    step("operator unseal -reset"),
    step("operator unseal -format=json {K1}"),
    step("operator unseal notakey", 2),
    step("operator unseal {K1}"),
    step("operator unseal", 1),
    step("operator unseal a b", 1),
    step("unseal {K3}", bao="operator unseal {K3}"),
    step("status"),
    step("status -format=json"),
    step("operator seal extra", 1),
    step("operator seal", 2, token=""),
    step("operator seal", token="{ROOT}"),
    step("status", 2),
    step("unseal -format=json {K2}", bao="operator unseal -format=json {K2}"),
    step("operator unseal {K3}"),
    step("seal", bao="operator seal", token="{ROOT}"),
    step("operator seal", token="{ROOT}"),
    step("operator unseal {K2}"),
    step("operator unseal {K1}"),
    step("token lookup -field=policies", token="{ROOT}"),
)


# Vault 0.5's `vault init`, as JSON, on a fresh server; and the 0.5 seal commands.
INIT_JSON = (
    step(
        "init -key-shares=1 -key-threshold=1 -format=json",
        bao="operator init -key-shares=1 -key-threshold=1 -format=json",
        save={"K1": r'"unseal_keys_b64": \[\s+"([^"]+)"', "ROOT": rf'"root_token": "{TOKEN}"'},
    ),
    step(
        "init -key-shares=1 -key-threshold=1", 2, bao="operator init -key-shares=1 -key-threshold=1"
    ),
    step("unseal {K1}", bao="operator unseal {K1}"),
    step("seal", bao="operator seal", token="{ROOT}"),
    step("unseal -format=json {K1}", bao="operator unseal -format=json {K1}"),
    step("token lookup -field=policies", token="{ROOT}"),
)


# Where vaultlog's server answers otherwise than OpenBao's, by design or not yet: on the
# steps whose vault command starts with `command`, `pattern` is replaced by `replacement`
# on both sides before comparing.
@dataclass(frozen=True)
class Known:
    command: str
    pattern: str
    replacement: str
    why: str


KNOWN_DIFFERENCES = (
    Known(
        "token lookup",
        r"(?m)^(display_name\s+)token$",
        r"\1root",
        "vaultlog's dev root token is named root",
    ),
    Known(
        "token lookup",
        r"(?m)^(path\s+)auth/token/create$",
        r"\1auth/token/root",
        "and was made at auth/token/root",
    ),
    Known("status", r"(?m)^(Version\s+)\S+$", r"\1<version>", "each server has its own version"),
    Known("status", r"(?m)^Commit Date .*\n", "", "vaultlog has no commit date"),
    Known("status", r'("version": )"[^"]*"', r'\1"<version>"', "each server has its own version"),
    Known("status", r'("commit_date": )"[^"]*"', r'\1"<date>"', "vaultlog has no commit date"),
    Known(
        "token create -policy=reader,writer",
        r"(?s)^WARNING! The following warnings.*does not exist\n\n",
        "",
        "vaultlog does not warn of a token's policy that does not exist",
    ),
    *(
        Known(
            renewal,
            pattern,
            r"\1<ttl>",
            "a renewal without -increment: OpenBao grants the TTL granted last (30m), "
            "vaultlog the token's first (1h)",
        )
        for renewal in ("token renew -format=json {T1}", "token renew -accessor {A1}")
        for pattern in (r'("lease_duration": )(1800|3600)', r"(?m)^(token_duration\s+)(30m|1h)$")
    ),
    Known(
        "auth list -format=json",
        r'("options": )(null|\{\})',
        r"\1<none>",
        "vaultlog's sys/auth answers options {} where OpenBao answers null",
    ),
)
SEAL_STATUS_COMMANDS = ("operator unseal", "unseal")


# ---- masks -------------------------------------------------------------------------------

VOLATILE = (
    (re.compile(r"(?m)^(Unseal Key \d+: )\S+$"), r"\1<key>"),
    (re.compile(r'"[A-Za-z0-9+/]{43,44}={0,2}"'), '"<key>"'),
    (re.compile(r'"[0-9a-f]{64}(?:[0-9a-f]{2})?"'), '"<key>"'),  # one share has no index
    (re.compile(r"\bs\.[A-Za-z0-9]{24}\b"), "<token>"),
    (re.compile(r"\b[A-Za-z0-9]{24}\b"), "<accessor>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b([a-z][a-z0-9_]*?)_[0-9a-f]{8}\b"), r"\1_<accessor>"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"), "<time>"),
    (re.compile(r"(?m)^((?:creation_time|ttl)\s+)\S+$"), r"\1<n>"),
    (re.compile(r'("(?:creation_time|ttl)": )\d+'), r"\1<n>"),
    (re.compile(r"(?m)^(Cluster Name\s+)\S+$"), r"\1<cluster>"),
    (re.compile(r'("cluster_name": )"[^"]*"'), r'\1"<cluster>"'),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
)
# bao names itself where this CLI names itself vault.
RENAMES = (
    (re.compile(r"\bbao (?=[a-z])"), "vault "),
    (re.compile(r"\bOpenBao\b"), "Vault"),
    (re.compile(r"\bBAO_TOKEN\b"), "VAULT_TOKEN"),
)


def masked(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def renamed(text: str) -> tuple[str, set[int]]:
    """bao's text with this CLI's names, and which paragraphs that changed."""
    blocks, changed = text.split("\n\n"), set()
    for i, block in enumerate(blocks):
        for pattern, replacement in RENAMES:
            blocks[i] = pattern.sub(replacement, blocks[i])
        if blocks[i] != block:
            changed.add(i)
    return "\n\n".join(blocks), changed


def reflowed(text: str, which: set[int]) -> str:
    """``text`` with the paragraphs ``which`` as one line of words each."""
    blocks = text.split("\n\n")
    return "\n\n".join(" ".join(b.split()) if i in which else b for i, b in enumerate(blocks))


# ---- tables, for masking a column -------------------------------------------------------


def realigned(text: str, column: str, value: str) -> str:
    """``text`` with every table's ``column`` holding ``value``, re-aligned as bao aligns."""
    lines = text.split("\n")
    rows = [re.split(r" {2,}", line) for line in lines if line]
    if not rows or column not in rows[0]:
        return text
    index = rows[0].index(column)
    for row in rows[2:]:
        row[index] = value
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rows[1] = ["-" * len(cell) for cell in rows[0]]
    out = [
        "    ".join([c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)] + r[-1:])
        for r in rows
    ]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def show(self) -> str:
        return (
            f"[exit {self.exit_code}]\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def known_differences(item: Step, text: str) -> str:
    commands = [item.command]
    if item.command.startswith(SEAL_STATUS_COMMANDS):
        commands.append("status")
    for k in KNOWN_DIFFERENCES:
        if any(command.startswith(k.command) for command in commands):
            text = re.sub(k.pattern, k.replacement, text)
    if item.command.startswith("auth list"):
        text = realigned(text, "Running Version", "<builtin>")
        text = re.sub(r'("running_plugin_version": )"[^"]*"', r'\1"<builtin>"', text)
    return text


def comparable(
    item: Step, theirs: Outcome, ours: Outcome, *, known: bool
) -> tuple[Outcome, Outcome]:
    """bao's outcome and ours, masked, named alike, with known differences applied."""
    sides: list[list[str]] = [[], []]
    for stream in ("stdout", "stderr"):
        expected, which = renamed(masked(getattr(theirs, stream)))
        actual = masked(getattr(ours, stream))
        expected, actual = reflowed(expected, which), reflowed(actual, which)
        if known:
            expected, actual = known_differences(item, expected), known_differences(item, actual)
        sides[0].append(expected)
        sides[1].append(actual)
    return (
        Outcome(theirs.exit_code, sides[0][0], sides[0][1]),
        Outcome(ours.exit_code, sides[1][0], sides[1][1]),
    )


# ---- running a sequence ----------------------------------------------------------------


def run_sequence(cli: ServerCLI, steps: tuple[Step, ...], *, bao: bool) -> list[Outcome]:
    (cli.home).mkdir(parents=True, exist_ok=True)
    for name, text in (("reader.hcl", READER), ("bad.hcl", BAD)):
        (cli.home / name).write_text(text)
    found: dict[str, str] = {}
    outcomes = []
    for item in steps:
        argv = [
            arg.format_map(found)
            for arg in shlex.split(item.bao if bao and item.bao else item.command)
        ]
        settings = {}
        if item.token is not None:
            token = item.token.format_map(found)
            settings = {"VAULT_TOKEN": token, "BAO_TOKEN": token}
        stdin = "" if item.stdin is None else item.stdin  # never a terminal: nothing to type
        result = cli.run(*argv, stdin=stdin, timeout=30, **settings)
        outcome = Outcome(result.returncode, result.stdout, result.stderr)
        for name, pattern in item.save:
            match = re.search(pattern, result.stdout, re.M)
            assert match, f"{item.command}: nothing to save as {name}:\n{masked(outcome.show())}"
            found[name] = match.group(1)
        outcomes.append(outcome)
    return outcomes


def differences(
    steps: tuple[Step, ...], theirs: list[Outcome], ours: list[Outcome], *, known: bool
) -> list[str]:
    found = []
    for item, reference, mine in zip(steps, theirs, ours, strict=True):
        expected, actual = comparable(item, reference, mine, known=known)
        if expected != actual:
            found.append(
                f"## vault {item.command}\nexpected (bao on OpenBao):\n{expected.show()}\n"
                f"actual (vault):\n{actual.show()}\n"
            )
    return found


def check_reference(steps: tuple[Step, ...], outcomes: list[Outcome]) -> None:
    for item, outcome in zip(steps, outcomes, strict=True):
        assert outcome.exit_code == item.exit_code, (
            item.bao or item.command,
            masked(outcome.show()),
        )


def vault_client(server: DevServer, home: Path) -> ServerCLI:
    return ServerCLI(vault_executable(), server, home)


def bao_client(server: DevServer, home: Path) -> ServerCLI:
    return ServerCLI(bao_executable(), server, home)


def bao_config_server(home: Path) -> DevServer:
    """Real OpenBao with a config file (storage in memory): it starts uninitialised."""
    home.mkdir(parents=True, exist_ok=True)
    port, cluster = free_port(), free_port()
    (home / "server.hcl").write_text(
        'storage "inmem" {}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
        f'  cluster_address = "127.0.0.1:{cluster}"\n  tls_disable = 1\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\ncluster_addr = "http://127.0.0.1:{cluster}"\n'
        "disable_mlock = true\n"
    )
    argv = [bao_executable(), "server", f"-config={home / 'server.hcl'}"]
    return DevServer("bao", argv, server_env(home), home, port, sealed_ok=True)


def report(name: str, steps: tuple[Step, ...], found: list[str]) -> str:
    summary = f"{name}: {len(steps)} commands compared, {len(steps) - len(found)} identical"
    print(f"\n{summary}")
    return summary + "\n\n" + "\n".join(found)


# ---- the sequences, three ways ----------------------------------------------------------

Maker = Callable[[Path], DevServer]


def vaultlog_sealed_server(home: Path) -> DevServer:
    return config_server(home, unseal=False, inmem=True)


# name -> (steps, OpenBao's server, vaultlog's server)
SEQUENCES: dict[str, tuple[tuple[Step, ...], Maker, Maker]] = {
    "dev": (DEV, bao_dev_server, vaultlog_dev_server),
    "sealed": (SEALED, bao_config_server, vaultlog_sealed_server),
    "init-json": (INIT_JSON, bao_config_server, vaultlog_sealed_server),
}


@dataclass
class Runs:
    """One sequence's outcomes three ways: bao against OpenBao (the reference), vault
    against OpenBao, vault against vaultlog (and that client's home)."""

    reference: list[Outcome]
    on_openbao: list[Outcome]
    on_vaultlog: list[Outcome]
    vaultlog_home: Path


@pytest.fixture(scope="module")
def runs() -> dict[str, Runs]:
    """The sequences' runs, made when first asked for and kept for the module."""
    return {}


def three_ways(name: str, cache: dict[str, Runs], home: Path) -> Runs:
    """Run the three at once (each on its own server): they are independent, and most of
    each is waiting on a client process to start."""
    if name not in cache:
        steps, bao_server, vaultlog_server = SEQUENCES[name]

        def run(make: Maker, client: Callable[..., ServerCLI], where: str) -> list[Outcome]:
            with running(make(home / where / "server")) as server:
                cli = client(server, home / where / "cli")
                return run_sequence(cli, steps, bao=client is bao_client)

        with ThreadPoolExecutor(3) as pool:
            reference = pool.submit(run, bao_server, bao_client, "bao")
            on_openbao = pool.submit(run, bao_server, vault_client, "vault-on-bao")
            on_vaultlog = pool.submit(run, vaultlog_server, vault_client, "vault-on-vaultlog")
            found = Runs(
                reference.result(),
                on_openbao.result(),
                on_vaultlog.result(),
                home / "vault-on-vaultlog" / "cli",
            )
        check_reference(steps, found.reference)
        cache[name] = found
    return cache[name]


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_vault_prints_what_bao_prints_against_openbao(
    name: str, runs: dict[str, Runs], tmp_path: Path
) -> None:
    """The CLI alone: against the same server software, every step prints alike."""
    steps = SEQUENCES[name][0]
    found = three_ways(name, runs, tmp_path)
    differ = differences(steps, found.reference, found.on_openbao, known=False)
    summary = report(f"vault against OpenBao ({name})", steps, differ)
    assert not differ, summary


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_vault_against_vaultlog_prints_what_bao_prints_against_openbao(
    name: str, runs: dict[str, Runs], tmp_path: Path
) -> None:
    """The whole stack: the same but for KNOWN_DIFFERENCES of the servers."""
    steps = SEQUENCES[name][0]
    found = three_ways(name, runs, tmp_path)
    differ = differences(steps, found.reference, found.on_vaultlog, known=True)
    summary = report(f"vault against vaultlog ({name})", steps, differ)
    assert not differ, summary
    if name == "dev":  # `vault login root` kept the token as Vault's token helper does
        token_file = found.vaultlog_home / ".vault-token"
        assert token_file.read_text() == "root"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


# ---- secrets typed at a terminal, and never echoed ---------------------------------------


def typing(cli: ServerCLI, argv: list[str], prompt: str, secret: str) -> tuple[Outcome, bytes]:
    """Run ``vault argv`` on a terminal: type ``secret`` once ``prompt`` shows; what it
    printed, and what the terminal echoed."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [vault_executable(), *argv],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.env,
        cwd=cli.home,
    )
    os.close(slave)
    try:
        assert process.stdout is not None and process.stderr is not None
        streams = {"stdout": process.stdout, "stderr": process.stderr}
        seen = {"stdout": b"", "stderr": b""}
        deadline = time.monotonic() + 30
        while not any(prompt.encode() in text for text in seen.values()):
            assert time.monotonic() < deadline, f"no prompt {prompt!r}: {seen}"
            ready, _, _ = select.select(list(streams.values()), [], [], 1)
            for name, stream in streams.items():
                if stream in ready:
                    chunk = os.read(stream.fileno(), 4096)
                    assert chunk, f"{argv} ended before its prompt: {seen}"
                    seen[name] += chunk
        os.write(master, (secret + "\n").encode())
        out, err = process.communicate(timeout=30)
        echoed = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            echoed += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    stdout, stderr = (seen["stdout"] + out).decode(), (seen["stderr"] + err).decode()
    return Outcome(process.returncode, stdout, stderr), echoed


def test_secrets_typed_at_the_terminal_are_not_echoed(tmp_path: Path) -> None:
    with running(vaultlog_sealed_server(tmp_path / "server")) as server:
        answer = server.call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        assert isinstance(answer, dict)
        key, root = answer["keys_base64"][0], answer["root_token"]
        cli = ServerCLI(vault_executable(), server, tmp_path / "cli", token=root)
        cli.home.mkdir(parents=True)

        unsealed, echoed = typing(cli, ["operator", "unseal"], "Unseal Key (will be hidden): ", key)
        assert unsealed.exit_code == 0, unsealed.stderr
        assert unsealed.stdout.startswith("Unseal Key (will be hidden): \nKey ")
        assert re.search(r"(?m)^Sealed\s+false$", unsealed.stdout)
        assert key.encode() not in echoed and key not in unsealed.stdout + unsealed.stderr

        logged_in, echoed = typing(cli, ["login", "-no-store"], "Token (will be hidden): ", root)
        assert logged_in.exit_code == 0, logged_in.stderr
        assert logged_in.stderr.startswith("Token (will be hidden): \nThe token was not stored")
        assert root.encode() not in echoed
        assert re.search(r'(?m)^token_policies\s+\["root"\]$', logged_in.stdout)

        cli("auth", "enable", "userpass")
        cli("write", "auth/userpass/users/alice", "password=hunter22", "policies=default")
        argv = ["login", "-no-store", "-method=userpass", "username=alice"]
        password, echoed = typing(cli, argv, "Password (will be hidden): ", "hunter22")
        assert password.exit_code == 0, password.stderr
        assert b"hunter22" not in echoed and "hunter22" not in password.stdout + password.stderr
        assert re.search(r"(?m)^token_meta_username\s+alice$", password.stdout)

        # A password given where a K=V belongs is refused without being echoed.
        wrong = cli.run("login", "-no-store", "-method=userpass", "username=alice", "hunter22")
        assert (wrong.returncode, wrong.stdout) == (1, "")
        assert "hunter22" not in wrong.stderr
        assert wrong.stderr == (
            "Error parsing configuration: invalid key/value pair (argument 2): format must be "
            "key=value\n"
        )

        # Embedded (no VAULT_ADDR), `vault init` still creates the local store.
        embedded = cli.run("init", VAULT_ADDR="")
        assert embedded.returncode == 0, embedded.stderr
        assert embedded.stdout.startswith("Initialized a new vaultlog store in ")
