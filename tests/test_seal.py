"""The seal of a real `vault server -config`: init with shares, unseal with any threshold of
them in any order, too few or a wrong share refused, sealed again at restart and by
`sys/seal`, and 503 "Vault is sealed" everywhere but the seal's own paths. hvac 2.4's init,
unseal and seal calls, on a file store and in memory."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.servers import DevServer, config_server, running

SEALED = {"errors": ["Vault is sealed"]}
# Paths a sealed server refuses; every other path goes the same way as these.
DATA_PATHS = [
    ("GET", "sys/mounts"),
    ("GET", "secret/x"),
    ("PUT", "secret/x"),
    ("GET", "auth/token/lookup-self"),
    ("POST", "auth/token/create"),
    ("GET", "sys/policy"),
    ("GET", "sys/vaultlog/audit"),
    ("GET", "no/mount/here"),
]


def request(
    server: DevServer, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    return server.request(method, path, body, token)


def unseal(server: DevServer, key: str) -> dict[str, Any]:
    status, body = request(server, "PUT", "sys/unseal", {"key": key})
    assert status == 200, body
    assert isinstance(body, dict)
    return body


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A file-store server initialised with 5 shares and a threshold of 3, left sealed."""
    server = config_server(tmp_path_factory.mktemp("seal"), unseal=False)
    with running(server):
        assert request(server, "GET", "sys/init") == (200, {"initialized": False})
        status, body = request(
            server, "PUT", "sys/init", {"secret_shares": 5, "secret_threshold": 3}
        )
        assert status == 200, body
        server.keys, server.token = body["keys_base64"], body["root_token"]
        assert [bytes.fromhex(k) for k in body["keys"]] == [
            base64.b64decode(k) for k in body["keys_base64"]
        ]
        yield server


def seal(server: DevServer) -> None:
    assert request(server, "PUT", "sys/seal", token=server.token) == (204, None)


def test_init_answers_five_33_byte_shares_and_a_root_token(sealed: DevServer) -> None:
    assert len(sealed.keys) == 5 and len(set(sealed.keys)) == 5
    assert all(len(base64.b64decode(k)) == 33 for k in sealed.keys)
    assert sealed.token.startswith("s.")
    assert request(sealed, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}) == (
        400,
        {"errors": ["Vault is already initialized"]},
    )
    status, body = request(sealed, "GET", "sys/seal-status")
    assert status == 200
    assert (body["sealed"], body["t"], body["n"], body["progress"]) == (True, 3, 5, 0)


@pytest.mark.parametrize("order", [(0, 1, 2), (4, 2, 0), (3, 1, 4), (2, 4, 3)])
def test_any_three_shares_in_any_order_unseal(sealed: DevServer, order: tuple[int, ...]) -> None:
    for done, index in enumerate(order[:-1], start=1):
        body = unseal(sealed, sealed.keys[index])
        assert (body["sealed"], body["progress"]) == (True, done)
        assert body["nonce"]
    body = unseal(sealed, sealed.keys[order[-1]])
    assert (body["sealed"], body["progress"]) == (False, 0)
    assert request(sealed, "GET", "sys/mounts", token=sealed.token)[0] == 200
    seal(sealed)


def test_two_shares_leave_it_sealed_and_reset_forgets_them(sealed: DevServer) -> None:
    unseal(sealed, sealed.keys[0])
    body = unseal(sealed, sealed.keys[1])
    assert (body["sealed"], body["progress"]) == (True, 2)
    assert unseal(sealed, sealed.keys[1])["progress"] == 2  # a share given twice counts once
    assert request(sealed, "GET", "sys/mounts", token=sealed.token) == (503, SEALED)
    status, body = request(sealed, "PUT", "sys/unseal", {"reset": True})
    assert (status, body["progress"], body["sealed"]) == (200, 0, True)


def test_a_wrong_share_is_refused_never_used(sealed: DevServer) -> None:
    raw = bytearray(base64.b64decode(sealed.keys[2]))
    raw[0] ^= 0x01  # the same x, one byte of y changed: a share of some other key
    wrong = raw.hex()
    unseal(sealed, sealed.keys[0])
    unseal(sealed, sealed.keys[1])
    status, body = request(sealed, "PUT", "sys/unseal", {"key": wrong})
    assert status == 400
    assert body == {"errors": ["wrong unseal key: it does not open this store's keyring"]}
    status, body = request(sealed, "GET", "sys/seal-status")
    assert (body["sealed"], body["progress"]) == (True, 0)
    for key in ("not a key!", "abcd", ""):
        status, body = request(sealed, "PUT", "sys/unseal", {"key": key})
        assert status == 400 and len(body["errors"]) == 1, body


def test_sealed_answers_503_everywhere_but_the_seal(sealed: DevServer) -> None:
    for method, path in DATA_PATHS:
        body = {"value": "x"} if method in ("PUT", "POST") else None
        assert request(sealed, method, path, body, token=sealed.token) == (503, SEALED), path
    assert request(sealed, "GET", "sys/health")[0] == 503
    status, body = request(sealed, "GET", "sys/health?sealedcode=200")
    assert (status, body["initialized"], body["sealed"]) == (200, True, True)
    assert request(sealed, "GET", "sys/seal-status")[0] == 200
    assert request(sealed, "GET", "sys/leader") == (200, {"ha_enabled": False})


def test_sealing_needs_a_token_that_may(sealed: DevServer) -> None:
    for index in (0, 1, 2):
        unseal(sealed, sealed.keys[index])
    assert request(sealed, "PUT", "sys/seal") == (403, {"errors": ["permission denied"]})
    status, body = request(
        sealed, "POST", "auth/token/create", {"policies": ["default"]}, token=sealed.token
    )
    weak = body["auth"]["client_token"]
    assert request(sealed, "PUT", "sys/seal", token=weak)[0] == 403
    assert request(sealed, "GET", "sys/seal-status")[1]["sealed"] is False
    assert request(sealed, "PUT", "secret/kept", {"v": "1"}, token=sealed.token)[0] == 204
    seal(sealed)
    assert request(sealed, "GET", "sys/seal-status")[1]["sealed"] is True
    seal(sealed)  # sealing a sealed server does nothing, as Vault
    for index in (4, 3, 1):
        unseal(sealed, sealed.keys[index])
    status, body = request(sealed, "GET", "secret/kept", token=sealed.token)
    assert (status, body["data"]) == (200, {"v": "1"})  # the store survived the seal
    seal(sealed)


def test_a_restarted_server_is_sealed(sealed: DevServer) -> None:
    for index in (0, 1, 2):
        unseal(sealed, sealed.keys[index])
    sealed.stop()
    sealed.start()
    _, body = request(sealed, "GET", "sys/seal-status")
    assert (body["initialized"], body["sealed"], body["t"], body["n"]) == (True, True, 3, 5)
    assert request(sealed, "GET", "sys/mounts", token=sealed.token) == (503, SEALED)


def test_init_refuses_bad_shapes_with_vaults_words(tmp_path: Path) -> None:
    server = config_server(tmp_path, unseal=False)
    with running(server):
        for shares, threshold, problem in (
            (1, 2, "threshold cannot be larger than shares"),
            (0, 0, "shares must be at least one"),
            (3, 1, "threshold must be greater than one for multiple shares"),
        ):
            body = {"secret_shares": shares, "secret_threshold": threshold}
            assert request(server, "PUT", "sys/init", body) == (
                400,
                {"errors": [f"invalid seal configuration: {problem}"]},
            )
        assert request(server, "GET", "sys/init") == (200, {"initialized": False})
        assert request(server, "PUT", "sys/unseal", {"key": "00" * 33})[0] == 400
    assert not (tmp_path / "data" / "keyring").exists()


def test_hvac_init_unseal_seal_in_memory(tmp_path: Path) -> None:
    """hvac's calls, on a server with storage "inmem" (as hvac's own test harness runs)."""
    server = config_server(tmp_path, unseal=False, inmem=True)
    with running(server):
        client = hvac.Client(url=server.addr)
        assert client.sys.is_initialized() is False
        result = client.sys.initialize(secret_shares=5, secret_threshold=3)
        client.token = result["root_token"]
        keys = result["keys"]
        assert client.sys.is_sealed() is True
        for subset in itertools.islice(itertools.permutations(keys, 3), 0, 60, 20):
            status = client.sys.submit_unseal_keys(list(subset))
            assert status["sealed"] is False
            client.secrets.kv.v1.create_or_update_secret("app", {"n": subset[0][:4]})
            client.sys.seal()
            assert client.sys.is_sealed() is True
        client.sys.submit_unseal_keys(keys[2:])
        assert client.secrets.kv.v1.read_secret("app")["data"] == {"n": subset[0][:4]}
        assert client.sys.read_health_status(method="GET")["sealed"] is False
