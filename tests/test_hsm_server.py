"""``seal "pkcs11"`` on a real server against a real SoftHSM2 token, driven by the real
``bao`` CLI and hvac: init hands out recovery keys, the server unseals itself at start,
stays sealed (and says why) while the token is missing, and unseals once it is back; the
pkcs11 mount answers 503 while the token is away and every other mount works on."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import hvac
import pytest

from eventstore.shamir import split_key
from tests.servers import DevServer, bao_client, config_server, health_status, running
from tools.bench.softhsm import SoftHsm


def hsm_server(home: Path, token: SoftHsm) -> DevServer:
    """A server on files whose seal is the token; its PIN comes from the environment."""
    return config_server(
        home,
        unseal=False,
        extra=token.seal_block(pin="env://SEAL_PIN"),
        env={**token.env, "SEAL_PIN": token.pin},
    )


def wait_for_health(server: DevServer, status: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while health_status(server.addr) != status:
        assert time.monotonic() < deadline, f"sys/health never {status}:\n{server.log()}"
        time.sleep(0.1)


def recovery_keys(output: str) -> list[str]:
    return re.findall(r"^Recovery Key \d: (\S+)$", output, re.MULTILINE)


def test_init_gives_recovery_keys_and_the_server_unseals_itself(tmp_path: Path) -> None:
    token = SoftHsm(tmp_path / "hsm")
    server = hsm_server(tmp_path / "server", token)
    with running(server):
        bao = bao_client(server, tmp_path / "client")
        out = bao("operator", "init", "-recovery-shares=3", "-recovery-threshold=2")
        keys = recovery_keys(out)
        assert len(keys) == 3 and "Unseal Key" not in out
        assert "Success! Vault is initialized" in out
        assert "Recovery key initialized with 3 key shares and a key threshold of 2." in out
        bao.token = re.findall(r"^Initial Root Token: (\S+)$", out, re.MULTILINE)[0]
        status = bao("status")
        for row in ("Seal Type\\s+pkcs11", "Recovery Seal Type\\s+shamir", "Sealed\\s+false"):
            assert re.search(row, status), status
        assert re.search(r"Total Recovery Shares\s+3", status)
        bao("secrets", "enable", "-path=vault-hsm", "pkcs11")
        bao("write", "vault-hsm/db", "password=hunter2")
        assert "vaultlog-seal" in token.labels()
    with running(server):  # restarted: unsealed by the HSM, no key given
        wait_for_health(server, 200)
        assert bao("read", "-field=password", "vault-hsm/db") == "hunter2"

        # Sealed by an operator: it stays sealed; the recovery shares unseal it.
        bao("operator", "seal")
        assert health_status(server.addr) == 503
        fake = [s.hex() for s in split_key(bytes(32), 3, 2)]  # shares of another key
        bao("operator", "unseal", fake[0])
        refused = bao.run("operator", "unseal", fake[1])
        assert refused.returncode == 2
        assert "the recovery key shares do not make this store's key" in refused.stderr
        assert re.search(r"Unseal Progress\s+1/2", bao("operator", "unseal", keys[0]))
        assert re.search(r"Sealed\s+false", bao("operator", "unseal", keys[2]))
        assert bao("read", "-field=password", "vault-hsm/db") == "hunter2"
    assert token.pin not in server.log(tail=None)
    for file in (tmp_path / "server").rglob("*"):
        if file.is_file():
            assert token.pin.encode() not in file.read_bytes(), file


def test_the_token_away_fails_its_mount_then_keeps_the_server_sealed_until_back(
    tmp_path: Path,
) -> None:
    token = SoftHsm(tmp_path / "hsm")
    server = hsm_server(tmp_path / "server", token)
    with running(server):
        answer = server.call("PUT", "sys/init", {"recovery_shares": 1, "recovery_threshold": 1})
        assert answer["keys"] == [] and len(answer["recovery_keys_base64"]) == 1
        client = hvac.Client(url=server.addr, token=answer["root_token"])
        wait_for_health(server, 200)
        client.sys.enable_secrets_engine("pkcs11", path="vault-hsm")
        client.write("vault-hsm/db", password="hunter2")

        token.remove()
        status, body = server.request("GET", "vault-hsm/db", token=answer["root_token"])
        assert status == 503 and body["errors"] == [
            'the HSM is unavailable: it has no token "vaultlog"'
        ]
        status, body = server.request(
            "PUT", "vault-hsm/db", {"password": "lost"}, token=answer["root_token"]
        )
        assert status == 503
        client.write("secret/plain", value="still served")
        assert client.read("secret/plain")["data"] == {"value": "still served"}
        bao = bao_client(server, tmp_path / "client")
        bao.token = answer["root_token"]
        failed = bao.run("read", "vault-hsm/db")
        assert failed.returncode == 2 and "Code: 503" in failed.stderr

    with running(server):  # started without the token: sealed, and the log says why
        assert health_status(server.addr) == 503
        wait_for_log(server, "auto-unseal failed, the server stays sealed: the HSM is unavailable")
        assert re.search(r"Sealed\s+true", bao.run("status").stdout)
        token.restore()  # tried again while sealed: unsealed without a hand on it
        wait_for_health(server, 200)
        assert client.read("vault-hsm/db")["data"] == {"password": "hunter2"}
        assert client.read("secret/plain")["data"] == {"value": "still served"}
    assert token.pin not in server.log(tail=None)


def wait_for_log(server: DevServer, text: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while text not in server.log(tail=None):
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{server.log()}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("block", "said"),
    [
        ('seal "pkcs11" { lib = "LIB" token_label = "vaultlog" key_label = "k" }', "needs pin"),
        ('seal "pkcs11" { lib = "LIB" pin = "s3cr3t" key_label = "k" }', "slot or token_label"),
        ('seal "pkcs11" { lib = "LIB" token_label = "t" pin = "s3cr3t" }', "needs key_label"),
        ('seal "pkcs11" { lib = "LIB" slot = "x" pin = "s3cr3t" key_label = "k" }', "decimal"),
        (
            'seal "pkcs11" { lib = "LIB" slot = "1" pin = "s3cr3t" key_label = "k" '
            'mechanism = "0x9" }',
            "mechanism 0x9 is not supported",
        ),
        (
            'seal "pkcs11" { lib = "LIB" slot = "1" pin = "file:///nonexistent" key_label = "k" }',
            "cannot read the PIN file /nonexistent",
        ),
        ('seal "awskms" { }', 'seal "awskms" is not supported'),
    ],
)
def test_a_bad_seal_stanza_is_one_line(tmp_path: Path, block: str, said: str) -> None:
    token_lib = "/usr/lib/softhsm/libsofthsm2.so"
    server = config_server(tmp_path, unseal=False, extra=block.replace("LIB", token_lib))
    done = subprocess.run(server.argv, capture_output=True, text=True, env=server.env, timeout=60)
    assert done.returncode != 0
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "s3cr3t" not in done.stderr


def test_a_wrong_pin_keeps_the_server_sealed_and_is_never_shown(tmp_path: Path) -> None:
    token = SoftHsm(tmp_path / "hsm")
    server = hsm_server(tmp_path / "server", token)
    with running(server):
        server.call("PUT", "sys/init", {"recovery_shares": 1, "recovery_threshold": 1})
    server.env["SEAL_PIN"] = "wrong-pin-1234"
    with running(server):
        wait_for_log(server, "the HSM refused the PIN (it was not shown; not tried again")
        assert health_status(server.addr) == 503
    assert "wrong-pin-1234" not in server.log(tail=None)
    assert token.pin not in server.log(tail=None)
    config = server.home / "server.hcl"  # no seal stanza: Shamir's, which cannot open it
    config.write_text(config.read_text().split('seal "pkcs11"')[0])
    with running(server):
        wait_for_log(server, 'this store was initialised with seal "pkcs11"; the server is ')
        status, body = server.request("PUT", "sys/unseal", {"key": "A" * 43 + "="})
        assert status == 400 and "seal migration is not supported" in body["errors"][0]
