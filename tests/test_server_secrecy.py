"""A server keeps no token, key share, password or secret_id in plaintext: not in any file
under its home (the store, its snapshots and index, the server's log, an audit device's
file), and not even inside the decrypted log, which holds only keyed hashes of tokens.

The server runs from a `-config` file on a file store; it is initialised with 5 shares,
unsealed, used through every kind of credential, sealed and stopped; then every byte it
left is searched, as an attacker holding a copy of the directory (and, for the decrypted
log, the root key) would."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventstore import FileLog, Keyring
from eventstore.shamir import Unsealing, decode_share
from tests.servers import DevServer, config_server, running
from tests.test_seal import request


def marker(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def forms(secret: str) -> list[bytes]:
    """The ways a secret could be written down: as is, and its bytes in hex and base64
    when it is itself hex or base64 (a key share)."""
    found = [secret.encode(), secret.encode("utf-16-le")]
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            raw = decode(secret)
        except ValueError:
            continue
        found += [raw, raw.hex().encode(), base64.b64encode(raw)]
    return found


def holding(home: Path, secret: str) -> list[str]:
    wanted = forms(secret)
    return [
        str(path.relative_to(home))
        for path in sorted(home.rglob("*"))
        if path.is_file() and any(form in path.read_bytes() for form in wanted)
    ]


def ok(server: DevServer, method: str, path: str, body: Any = None, token: str = "") -> Any:
    status, answer = request(server, method, path, body, token)
    assert status in (200, 204), (method, path, status, answer)
    return answer


def test_no_credential_is_kept_in_plaintext(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = config_server(home, unseal=False)
    secrets: dict[str, str] = {}
    with running(server):
        init = ok(server, "PUT", "sys/init", {"secret_shares": 5, "secret_threshold": 3})
        root = init["root_token"]
        for i, (hex_key, b64_key) in enumerate(zip(init["keys"], init["keys_base64"], strict=True)):
            secrets[f"share {i} (hex)"] = hex_key
            secrets[f"share {i} (base64)"] = b64_key
        secrets["root token"] = root
        for key in init["keys"][:3]:
            ok(server, "PUT", "sys/unseal", {"key": key})

        ok(
            server,
            "PUT",
            "sys/audit/file",
            {"type": "file", "options": {"file_path": str(home / "audit.log")}},
            root,
        )
        custom = marker("s.token")
        secrets["custom token"] = custom
        ok(server, "POST", "auth/token/create", {"id": custom, "policies": ["default"]}, root)
        child = ok(server, "POST", "auth/token/create", {"policies": ["default"]}, root)
        secrets["child token"] = child["auth"]["client_token"]
        ok(server, "GET", "auth/token/lookup-self", token=secrets["child token"])
        ok(server, "PUT", "cubbyhole/note", {"v": "x"}, secrets["child token"])

        password = marker("password")
        secrets["password"] = password
        ok(server, "POST", "sys/auth/userpass", {"type": "userpass"}, root)
        ok(
            server,
            "POST",
            "auth/userpass/users/alice",
            {"password": password, "policies": "default"},
            root,
        )
        login = ok(server, "POST", "auth/userpass/login/alice", {"password": password})
        secrets["userpass token"] = login["auth"]["client_token"]
        status, _ = request(
            server, "POST", "auth/userpass/login/alice", {"password": password + "x"}
        )
        assert status == 400

        ok(server, "POST", "sys/auth/approle", {"type": "approle"}, root)
        ok(server, "POST", "auth/approle/role/app", {"token_policies": "default"}, root)
        role_id = ok(server, "GET", "auth/approle/role/app/role-id", token=root)["data"]["role_id"]
        secret_id = ok(server, "POST", "auth/approle/role/app/secret-id", {}, root)["data"][
            "secret_id"
        ]
        secrets["secret_id"] = secret_id
        login = ok(
            server, "POST", "auth/approle/login", {"role_id": role_id, "secret_id": secret_id}
        )
        secrets["approle token"] = login["auth"]["client_token"]

        wrapped = marker("wrapped")
        secrets["kv value"] = wrapped
        ok(server, "PUT", "secret/plain-kv", {"value": wrapped}, root)
        ok(server, "PUT", "sys/seal", token=root)

    leaks = {name: holding(home, secret) for name, secret in secrets.items()}
    assert {name: files for name, files in leaks.items() if files} == {}
    assert (home / "audit.log").stat().st_size > 0  # the device did write

    # The decrypted log: with the root key (from any 3 shares), still only keyed hashes.
    unsealing = Unsealing(3)
    key = None
    for share in init["keys"][1:4]:
        key = unsealing.add(decode_share(share))
    assert key is not None
    data = home / "data"
    keyring = Keyring.load(data, key)
    log = FileLog(data, keyring)
    try:
        bodies = b"".join(record.body for record in log.records(1))
    finally:
        log.close()
    credentials = {k: v for k, v in secrets.items() if k != "kv value"}
    assert {
        name for name, secret in credentials.items() if any(f in bodies for f in forms(secret))
    } == set()


@pytest.mark.parametrize("field", ["key", "reset"])
def test_a_refused_unseal_does_not_echo_the_key(tmp_path: Path, field: str) -> None:
    server = config_server(tmp_path, unseal=False)
    with running(server):
        ok(server, "PUT", "sys/init", {"secret_shares": 3, "secret_threshold": 2})
        given = marker("notakey") if field == "key" else json.dumps(marker("x"))
        _status, answer = request(server, "PUT", "sys/unseal", {field: given})
        assert given not in json.dumps(answer)
        assert given not in server.log(tail=None)
