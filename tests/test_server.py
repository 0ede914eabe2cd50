"""`vault server` and the CLI over HTTP: the same commands give the same output as embedded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import VaultCLI, cli_env, vault_executable
from tests.servers import config_server, root_token, running, vaultlog_dev_server
from tools.server_config import ConfigError, parse_config

# The seed page and the seed-era commands around it, in order; state carries over.
WALKTHROUGH: list[tuple[str, ...]] = [
    ("write", "secret/hello", "value=world"),
    ("read", "secret/hello"),
    ("mount", "generic"),
    ("mounts",),
    ("read", "generic/hello"),
    ("write", "generic/hello", "value=other", "ttl=1h"),
    ("read", "-field=value", "generic/hello"),
    ("read", "-format=json", "generic/hello"),
    ("list", "generic"),
    ("list", "nothing/here"),
    ("write", "nomount/x", "a=b"),
    ("mount", "generic"),
    ("mount", "-path=sys", "generic"),
    ("mount", "nosuchtype"),
    ("unmount", "generic/"),
    ("mounts",),
    ("remount", "secret/", "kv/"),
    ("read", "kv/hello"),
    ("read", "secret/hello"),
    ("delete", "kv/hello"),
    ("read", "kv/hello"),
    ("history", "kv/hello"),
    ("read", "-at=FIRST", "-field=value", "secret/hello"),
    ("restore", "-at=FIRST", "kv/hello"),
    ("read", "-field=value", "kv/hello"),
    ("audit-hash", "-path=kv/", "world"),
    ("key-status",),
    ("rotate",),
    ("audit", "-type=secret"),
    ("audit", "verify"),
    ("renew", "nosuch/lease"),
    ("revoke", "-prefix", "nosuch/"),
    ("read", "-format=yaml", "kv/hello"),
    ("write", "kv/bad", "novalue"),
]

# What differs by nature between two stores: times, hashes of the chain, who acted.
_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "TIME"),
    (re.compile(r"\b\d+:[0-9a-f]{64}\b"), "SEQ:HEAD"),
    # a server's store begins with init's events: seqs differ
    (re.compile(r"^\d+ +(?=TIME )", re.MULTILINE), "SEQ "),
    (re.compile(r"at seq \d+"), "at seq SEQ"),
    (re.compile(r"Verified \d+ records"), "Verified N records"),
    (re.compile(r"hmac-sha256:[0-9a-f]{64}"), "HMAC"),
    (re.compile(r"\S+@\S+|\broot:\w+"), "ACTOR"),  # user@host embedded, the token's over HTTP
    # a server mounts Vault's per-token cubbyhole/ at init; an embedded store has none
    (re.compile(r"^cubbyhole/ +cubbyhole .*\n", re.MULTILINE), ""),
    (re.compile(r" +"), " "),  # columns widen with the actor's name
]


def _normal(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def test_the_walkthrough_over_http_prints_what_embedded_prints(tmp_path: Path) -> None:
    embedded = VaultCLI(tmp_path / "embedded", cli_env(tmp_path / "embedded"))
    (tmp_path / "embedded").mkdir()
    with running(vaultlog_dev_server(tmp_path / "server")) as server:
        remote = VaultCLI(tmp_path / "client", cli_env(tmp_path / "client"))
        (tmp_path / "client").mkdir()
        remote.env.update(VAULT_ADDR=server.addr, VAULT_TOKEN="root")
        compared = 0
        for command in WALKTHROUGH:
            # -at=FIRST: the seq of the first write; a server's store begins with init's
            # root token and cubbyhole mount, two events more than an embedded one's
            here = embedded.run(*(c.replace("FIRST", "3") for c in command))
            there = remote.run(*(c.replace("FIRST", "5") for c in command))
            assert (there.returncode, _normal(there.stdout), _normal(there.stderr)) == (
                here.returncode,
                _normal(here.stdout),
                _normal(here.stderr),
            ), command
            compared += 1
        assert compared == len(WALKTHROUGH)
    assert not (tmp_path / "client" / "data").exists()  # the client kept no store of its own


def test_a_wrong_token_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with running(vaultlog_dev_server(tmp_path / "server")) as server:
        client = VaultCLI(tmp_path, cli_env(tmp_path))
        client.env.update(VAULT_ADDR=server.addr, VAULT_TOKEN="wrong")
        refused = client.run("write", "secret/x", "a=b")
        assert (refused.returncode, refused.stderr) == (
            1,
            "Error writing data to secret/x: permission denied\n",
        )
        client.env["VAULT_TOKEN"] = "root"
        assert client.run("read", "secret/x").returncode == 1  # not found: never written
        trail = [json.loads(line) for line in client("audit", "-format=json").splitlines()]
        assert [e["operation"] for e in trail if e["path"] == "secret/x"] == [
            "request.denied",
            "secret.read",
        ]


def test_the_cli_says_in_one_line_when_no_server_answers(tmp_path: Path) -> None:
    client = VaultCLI(tmp_path, cli_env(tmp_path))
    client.env.update(VAULT_ADDR="http://127.0.0.1:9", VAULT_TOKEN="root")
    failed = client.run("read", "secret/x")
    assert failed.returncode == 2
    assert failed.stderr.startswith("Error: cannot reach the server at http://127.0.0.1:9: ")
    assert failed.stderr.count("\n") == 1
    client.env["VAULT_ADDR"] = "ftp://nowhere"
    bad = client.run("read", "secret/x")
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1)
    assert "VAULT_ADDR must be an http:// or https:// address" in bad.stderr


def test_version_is_a_vault_style_line() -> None:
    for flag in ("version", "-version", "--version"):
        out = subprocess.run([vault_executable(), flag], capture_output=True, text=True)
        assert out.returncode == 0
        assert re.fullmatch(r"Vault v1\.\d+\.\d+ \(vaultlog \d+\.\d+\.\d+\)\n", out.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["server"], "Error: give exactly one of -dev and -config=FILE"),
        (["server", "-dev", "-config=x.hcl"], "Error: give exactly one of -dev and -config=FILE"),
        (["server", "-config=missing.hcl"], "cannot read the configuration missing.hcl"),
        (["server", "-dev", "-dev-listen-address=nowhere"], "address must be HOST:PORT"),
    ],
)
def test_server_arguments_are_checked_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = subprocess.run(
        [vault_executable(), *args], capture_output=True, text=True, cwd=tmp_path, timeout=30
    )
    assert out.returncode != 0
    assert message in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_config_files_in_vaults_shape() -> None:
    hcl = parse_config(
        """
        backend "file" { path = "/var/lib/vaultlog" }
        listener "tcp" {
          address = "127.0.0.1:8300"
          tls_disable = 1
        }
        default_lease_ttl = "1h"
        max_lease_ttl = "24h"
        disable_mlock = true
        ui = true
        """,
        "v.hcl",
    )
    assert (hcl.storage, hcl.path, hcl.default_lease_ttl, hcl.max_lease_ttl) == (
        "file",
        Path("/var/lib/vaultlog"),
        3600,
        86400,
    )
    assert (hcl.listener.host, hcl.listener.port, hcl.listener.tls) == ("127.0.0.1", 8300, False)
    as_json = parse_config(
        '{"storage": {"inmem": {}}, "listener": [{"tcp": {"address": "127.0.0.1:1",'
        ' "tls_cert_file": "c.pem", "tls_key_file": "k.pem"}}]}',
        "v.json",
    )
    assert (as_json.storage, as_json.path, as_json.listener.url) == (
        "inmem",
        None,
        "https://127.0.0.1:1",
    )
    postgres = parse_config(
        """
        storage "postgresql" {
          connection_url = "postgresql://vault:pw@db:5432/vault"
          ha_enabled = "true"
          cache_path = "/var/cache/vaultlog"
        }
        api_addr = "http://10.0.0.5:8200"
        listener "tcp" { tls_disable = 1 }
        """,
        "v.hcl",
    )
    assert (postgres.storage, postgres.ha_enabled, postgres.path, postgres.advertised) == (
        "postgresql",
        True,
        Path("/var/cache/vaultlog"),
        "http://10.0.0.5:8200",
    )
    assert postgres.connection_url == "postgresql://vault:pw@db:5432/vault"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listener "tcp" { tls_disable = 1 }', "exactly one 'storage' block is required"),
        ('storage "raft" {}\nlistener "tcp" { tls_disable = 1 }', 'storage "raft" is not'),
        ('storage "file" {}\nlistener "tcp" { tls_disable = 1 }', 'storage "file" needs a path'),
        ('storage "inmem" {}\nlistener "tcp" {}', "needs tls_cert_file and tls_key_file"),
        ('storage "inmem" {}\nlistener "unix" {}', 'listener "unix" is not supported'),
        ('storage "inmem" {}\nlistener "tcp" { tls_disable = 1 }\nbogus = 1', "unknown key"),
        ('storage "inmem" {}\nlistener "tcp" { tls_disable = 1\nport = 1 }', "unknown listener"),
        ('storage "inmem" {', "invalid HCL"),
        ("{not json", "invalid JSON"),
        (
            'storage "inmem" {}\nlistener "tcp" { tls_disable = 1 }\nmax_lease_ttl = "forever"',
            "invalid duration",
        ),
        ('storage "postgresql" {}\nlistener "tcp" { tls_disable = 1 }', "needs a connection_url"),
        (
            'storage "postgresql" { connection_url = "postgresql://x"\ntable = "t" }\n'
            'listener "tcp" { tls_disable = 1 }',
            "unknown storage \"postgresql\" key 'table'",
        ),
        (
            'storage "inmem" {}\napi_addr = "127.0.0.1:8200"\nlistener "tcp" { tls_disable = 1 }',
            "api_addr must be a URL",
        ),
    ],
)
def test_bad_config_files_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "v.hcl")
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_todays_commands_tell_a_refusal_as_vaults_cli_does(tmp_path: Path) -> None:
    with running(vaultlog_dev_server(tmp_path / "server")) as server:
        client = VaultCLI(tmp_path, cli_env(tmp_path))
        client.env.update(VAULT_ADDR=server.addr, VAULT_TOKEN="root")
        refused = client.run("secrets", "enable", "-path=sys", "generic")
        assert (refused.returncode, refused.stdout) == (2, "")
        assert refused.stderr == (
            "Error enabling: Error making API request.\n\n"
            f"URL: PUT {server.addr}/v1/sys/mounts/sys\n"
            "Code: 400. Errors:\n\n"
            '* cannot mount "sys/"\n'
        )
        # Embedded, the same refusal is one line: there is no API request to tell of.
        embedded = VaultCLI(tmp_path / "e", cli_env(tmp_path / "e"))
        (tmp_path / "e").mkdir()
        alone = embedded.run("secrets", "enable", "-path=sys", "generic")
        assert (alone.returncode, alone.stderr) == (2, 'Error enabling: cannot mount "sys/"\n')


def test_the_configs_lease_ttls_serve_mounts_that_set_none(tmp_path: Path) -> None:
    server = config_server(tmp_path / "server")
    config = tmp_path / "server" / "server.hcl"
    config.write_text(config.read_text() + 'default_lease_ttl = "1h"\nmax_lease_ttl = "2h"\n')
    with running(server):
        client = VaultCLI(tmp_path, cli_env(tmp_path))
        client.env.update(VAULT_ADDR=server.addr, VAULT_TOKEN=root_token(server))
        client("write", "secret/x", "a=b")
        assert json.loads(client("read", "-format=json", "secret/x"))["lease_duration"] == 3600
        client("mount", "-path=own", "-default-lease-ttl=30m", "generic")
        client("write", "own/x", "a=b")
        assert json.loads(client("read", "-format=json", "own/x"))["lease_duration"] == 1800


def test_a_command_over_http_imports_neither_the_log_nor_the_projections() -> None:
    """What makes ``vault`` with VAULT_ADDR start faster than embedded: the packages load
    their names lazily, and only the embedded transport imports the store."""
    probe = (
        "import sys, tools.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('projections', 'cryptography',"
        " 'boto3', 'msgpack')) or m in ('eventstore.log', 'eventstore.crypto')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "[]\n"), out.stderr
