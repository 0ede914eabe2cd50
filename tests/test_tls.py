"""`vault server` with TLS: a CA and a certificate made by the test, the CLI and hvac verifying
it (or told not to), and what a client that does not verify or does not speak TLS gets."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import vault_executable
from tests.servers import DevServer, ServerCLI, config_server, root_token, running

SECRET = "over-tls-7f3a"


# ---- certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate, what VAULT_CACERT names
    cert: Path  # the server's certificate
    key: Path  # the server's private key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> Pki:
    """A self-signed CA and a server certificate it signed for 127.0.0.1 (an IP SAN)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("vaultlog test CA"))
        .issuer_name(_name("vaultlog test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.key.chmod(0o600)
    return pki


# ---- the server ------------------------------------------------------------------------------


def cli(server: DevServer, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """The vault CLI with its own private HOME, the server's address and root token."""
    client = ServerCLI(vault_executable(), server, server.home / "client", root_token(server))
    return client.run(*args, **settings)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    home = tmp_path_factory.mktemp("tls")
    pki = make_pki(home / "pki")
    server = config_server(home / "server", tls_cert_file=pki.cert, tls_key_file=pki.key)
    server.cafile = pki.ca
    with running(server):
        written = cli(server, "write", "secret/tls", f"value={SECRET}", VAULT_CACERT=str(pki.ca))
        assert written.returncode == 0, written.stderr
        yield server


# ---- the tests ---------------------------------------------------------------------------------


def test_banner_says_https(tls_server: DevServer) -> None:
    log = tls_server.log(tail=None)
    assert f"export VAULT_ADDR='https://127.0.0.1:{tls_server.port}'" in log
    assert 'tls: "enabled"' in log


def test_cli_with_cacert_round_trips(tls_server: DevServer) -> None:
    ca = str(tls_server.cafile)
    write = cli(tls_server, "write", "secret/round", "value=trip", VAULT_CACERT=ca)
    assert (write.returncode, write.stdout) == (0, "Success! Data written to: secret/round\n")
    read = cli(tls_server, "read", "-field=value", "secret/round", VAULT_CACERT=ca)
    assert (read.returncode, read.stdout, read.stderr) == (0, "trip\n", "")
    read = cli(tls_server, "read", "-field=value", "secret/tls", VAULT_CACERT=ca)
    assert read.stdout == f"{SECRET}\n"


def test_cli_without_cacert_refuses_the_certificate(tls_server: DevServer) -> None:
    read = cli(tls_server, "read", "secret/tls")
    assert read.returncode != 0
    assert read.stdout == ""
    assert len(read.stderr.strip().splitlines()) == 1, read.stderr
    assert "Traceback" not in read.stderr
    assert "certificate" in read.stderr.lower(), read.stderr
    assert SECRET not in read.stderr


def test_cli_with_a_missing_cacert_file_says_so(tls_server: DevServer) -> None:
    missing = str(tls_server.home / "no-such-ca.pem")
    read = cli(tls_server, "read", "secret/tls", VAULT_CACERT=missing)
    assert read.returncode != 0
    assert len(read.stderr.strip().splitlines()) == 1, read.stderr
    assert "no-such-ca.pem" in read.stderr and "Traceback" not in read.stderr


def test_cli_with_skip_verify_works(tls_server: DevServer) -> None:
    read = cli(tls_server, "read", "-field=value", "secret/tls", VAULT_SKIP_VERIFY="1")
    assert (read.returncode, read.stdout) == (0, f"{SECRET}\n"), read.stderr


def test_hvac_verifies_with_the_ca(tls_server: DevServer) -> None:
    client = hvac.Client(
        url=tls_server.addr, token=root_token(tls_server), verify=str(tls_server.cafile)
    )
    try:
        assert client.sys.read_health_status(method="GET")["sealed"] is False
        client.secrets.kv.v1.create_or_update_secret(
            "hvac", {"value": "via-hvac"}, mount_point="secret"
        )
        assert client.secrets.kv.v1.read_secret("hvac", mount_point="secret")["data"] == {
            "value": "via-hvac"
        }
        assert client.secrets.kv.v1.read_secret("tls", mount_point="secret")["data"] == {
            "value": SECRET
        }
    finally:
        client.adapter.close()


def test_hvac_with_system_cas_refuses_the_certificate(tls_server: DevServer) -> None:
    client = hvac.Client(url=tls_server.addr, token=root_token(tls_server), verify=True)
    try:
        with pytest.raises(requests.exceptions.SSLError):
            client.secrets.kv.v1.read_secret("tls", mount_point="secret")
    finally:
        client.adapter.close()


def test_plain_http_on_the_tls_port_gets_no_secret(tls_server: DevServer) -> None:
    request = (
        f"GET /v1/secret/tls HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Vault-Token: {root_token(tls_server)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert SECRET.encode() not in answer
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    # and the server still serves TLS clients
    read = cli(
        tls_server, "read", "-field=value", "secret/tls", VAULT_CACERT=str(tls_server.cafile)
    )
    assert read.stdout == f"{SECRET}\n"


def test_an_http_address_for_a_tls_server_fails_cleanly(tls_server: DevServer) -> None:
    read = cli(tls_server, "read", "secret/tls", VAULT_ADDR=f"http://127.0.0.1:{tls_server.port}")
    assert read.returncode != 0
    assert SECRET not in read.stdout + read.stderr
    assert len(read.stderr.strip().splitlines()) == 1, read.stderr
    assert "Traceback" not in read.stderr


def test_a_missing_certificate_stops_the_server_with_one_line(tmp_path: Path) -> None:
    server = config_server(
        tmp_path, tls_cert_file=tmp_path / "nope.pem", tls_key_file=tmp_path / "nope-key.pem"
    )
    started = subprocess.run(
        server.argv,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode != 0
    said = started.stderr.strip()
    assert len(said.splitlines()) == 1, started.stderr
    assert "TLS" in said and "Traceback" not in said
