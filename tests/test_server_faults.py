"""`vault server` under faults: SIGKILL under load, garbage HTTP, a second server, SIGTERM,
and the expiration timer, against a real server process on a 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import vault_executable
from tests.iam_endpoint import MotoServer
from tests.servers import (
    DevServer,
    config_server,
    root_token,
    running,
    server_env,
    vaultlog_dev_server,
)

SMALL_REQUEST_SIZE = 4096  # the garbage server's max_request_size
SOCKET_TIMEOUT = 3  # the listener's http_read_timeout here: a silent client is dropped after it
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}


# ---- helpers ---------------------------------------------------------------------------


def call(
    port: int,
    method: str,
    path: str,
    token: str = "",
    body: Any = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One request on a fresh connection: the status and the decoded JSON (None if empty)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        return send(conn, method, path, token, body)
    finally:
        conn.close()


def send(
    conn: http.client.HTTPConnection, method: str, path: str, token: str = "", body: Any = None
) -> tuple[int, Any]:
    headers = {"X-Vault-Token": token} if token else {}
    payload = None if body is None else json.dumps(body).encode()
    if payload is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=payload, headers=headers)
    reply = conn.getresponse()
    raw = reply.read()
    return reply.status, json.loads(raw) if raw.strip() else None


def head_seq(port: int, token: str) -> int:
    status, body = call(port, "GET", "/v1/sys/vaultlog/head", token)
    assert status == 200, body
    return int(body["data"]["seq"])


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, half-close, and read everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        with contextlib.suppress(ConnectionResetError):  # what came before the reset counts
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), raw[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(int(lines[0].split()[1]), headers, body)


def assert_json_error(answer: Answer, status: int) -> list[str]:
    """A 4xx in Vault's shape: {"errors": [one or more non-empty lines]}."""
    assert answer.status == status, answer
    assert answer.headers.get("content-type") == "application/json", answer
    errors = answer.json()["errors"]
    assert isinstance(errors, list) and errors, answer
    assert all(isinstance(e, str) and e and "\n" not in e for e in errors), errors
    assert "Traceback" not in answer.body.decode(errors="replace")
    return list(errors)


def stop_with(server: DevServer, sig: int, timeout: float = 15) -> int:
    """Send ``sig`` and wait for the exit code (the process is killed if it hangs)."""
    assert server.process is not None
    process = server.process
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.stop()
        raise AssertionError(f"the server did not exit {timeout}s after signal {sig}") from None
    finally:
        server.stop()  # reaps, and kills anything left in its session


# ---- (a) load and SIGKILL ----------------------------------------------------------------

WRITERS = 8
KILLS = 3
LOAD_SECONDS = 1.5  # of load before each kill, and once more after the last restart


@dataclass
class TokenBox:
    """The current root token: each restart of the server makes a new one."""

    value: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> str:
        with self.lock:
            return self.value

    def set(self, value: str) -> None:
        with self.lock:
            self.value = value


@dataclass
class Writer:
    """A client on one keep-alive connection writing distinct keys and reading them back."""

    number: int
    port: int
    token: TokenBox
    stop: threading.Event
    acked: dict[str, str] = field(default_factory=dict)
    unanswered: int = 0
    surprises: list[str] = field(default_factory=list)

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        i = 0
        while not self.stop.is_set():
            key = f"load/w{self.number}-{i}"
            value = f"{self.number}-{i}-{secrets.token_hex(4)}"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                status, body = send(
                    conn, "PUT", f"/v1/secret/{key}", self.token.get(), {"value": value}
                )
                if status == 503:  # restarted, not yet unsealed: the test is unsealing it
                    time.sleep(0.02)
                    continue
                i += 1
                if status != 204:
                    self.surprises.append(f"PUT {key}: {status} {body}")
                    continue
                self.acked[key] = value
                if i % 3 == 0:  # read it back over the same connection
                    status, body = send(conn, "GET", f"/v1/secret/{key}", self.token.get())
                    if status != 503 and (status != 200 or body["data"] != {"value": value}):
                        self.surprises.append(f"GET {key}: {status} {body}")
            except (OSError, http.client.HTTPException):
                # the server died under us: this write may or may not have been kept
                if conn is not None:
                    conn.close()
                conn = None
                self.unanswered += 1
                i += 1
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def read_all(port: int, token: str, expected: dict[str, str]) -> list[str]:
    """Read every key in parallel; the keys whose value is not the acknowledged one."""
    keys = sorted(expected)
    wrong: list[str] = []
    lock = threading.Lock()

    def reader(share: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for key in share:
                status, body = send(conn, "GET", f"/v1/secret/{key}", token)
                if status != 200 or body["data"] != {"value": expected[key]}:
                    with lock:
                        wrong.append(f"{key}: {status} {body}")
        finally:
            conn.close()

    threads = [threading.Thread(target=reader, args=(keys[n::WRITERS],)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return wrong


def test_sigkill_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = config_server(tmp_path / "server")
    started = time.monotonic()
    with running(server):
        token = TokenBox(root_token(server))
        stop = threading.Event()
        writers = [Writer(n, server.port, token, stop) for n in range(WRITERS)]
        threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
        for thread in threads:
            thread.start()
        try:
            for _ in range(KILLS):
                time.sleep(LOAD_SECONDS)
                assert server.process is not None
                os.kill(server.process.pid, signal.SIGKILL)
                server.process.wait(10)
                server.start()  # same directory; waits for sys/health 200
                token.set(root_token(server))
            time.sleep(LOAD_SECONDS)
        finally:
            stop.set()
            for thread in threads:
                thread.join(20)
        assert not any(thread.is_alive() for thread in threads)
        acked = {k: v for w in writers for k, v in w.acked.items()}
        surprises = [s for w in writers for s in w.surprises]
        assert surprises == []
        assert len(acked) > 50, "the load wrote almost nothing"
        assert sum(w.unanswered for w in writers) >= 1, "no request was in flight at a kill"

        assert read_all(server.port, token.get(), acked) == []
        status, body = call(server.port, "GET", "/v1/sys/vaultlog/audit", token.get(), timeout=60)
        assert status == 200
        seqs = [entry["seq"] for entry in body["data"]["entries"]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert head_seq(server.port, token.get()) == seqs[-1]
        written = {e["path"] for e in body["data"]["entries"] if e["operation"] == "secret.written"}
        assert {f"secret/{k}" for k in acked} <= written
        assert stop_with(server, signal.SIGTERM) == 0

    verify = subprocess.run(
        [vault_executable(), "audit", "verify"],
        # the server's one share is its root key, which the embedded CLI takes as its key
        env={
            **server_env(server.home),
            "VAULTLOG_LOCK_TIMEOUT": "5",
            "VAULTLOG_UNSEAL_KEY": server.keys[0],
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
    assert re.fullmatch(rf"Verified \d+ records; head {seqs[-1]}:[0-9a-f]{{64}}\n", verify.stdout)
    assert time.monotonic() - started < 60


# ---- (b) garbage HTTP ----------------------------------------------------------------------


@dataclass
class Garbage:
    port: int
    token: str


@pytest.fixture(scope="module")
def garbage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Garbage]:
    server = config_server(
        tmp_path_factory.mktemp("garbage"),
        max_request_size=SMALL_REQUEST_SIZE,
        http_read_timeout=f"{SOCKET_TIMEOUT}s",
    )
    with running(server):
        token = root_token(server)
        status, _ = call(server.port, "PUT", "/v1/secret/kept", token, {"value": "kept"})
        assert status == 204
        yield Garbage(server.port, token)


@pytest.fixture
def unchanged(garbage_server: Garbage) -> Iterator[Garbage]:
    """The store's head is the same after the test as before it, and it still serves."""
    before = head_seq(garbage_server.port, garbage_server.token)
    yield garbage_server
    assert head_seq(garbage_server.port, garbage_server.token) == before
    assert call(garbage_server.port, "GET", "/v1/sys/health")[0] == 200


def request_bytes(
    method: str, target: str, token: str, body: bytes = b"", extra: dict[str, str] | None = None
) -> bytes:
    headers = {"Host": "127.0.0.1", "X-Vault-Token": token, "Connection": "close", **(extra or {})}
    if body and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(body)))
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.mark.parametrize(
    ("garbage", "statuses"),
    [
        (b"\x00\x01\x02\xff\xfe garbage \x7f\r\n\r\n", {400}),
        (b"GET /v1/sys/health\r\n\r\n", {200, 400}),  # no version: HTTP/0.9, health only
        (b"GET\r\n\r\n", {400}),
        (b"PUT /v1/secret/x HTTP/9.9\r\nHost: x\r\n\r\n", {400, 505}),
        (b"PUT /v1/secret/x HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n", {400}),
        (b"PUT /v1/secret/x HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n", {400}),
        (b"CONNECT /v1/secret/x HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405}),  # not a proxy
        (b"BREW /v1/secret/x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),  # no such method
    ],
    ids=[
        "binary",
        "no-version",
        "no-target",
        "bad-version",
        "bad-length",
        "bad-header",
        "connect",
        "unknown-method",
    ],
)
def test_unparseable_http_is_refused(
    unchanged: Garbage, garbage: bytes, statuses: set[int]
) -> None:
    """The HTTP parser's own answer (text/plain) for what is not HTTP/1.x at all."""
    answer = parse_answer(raw_exchange(unchanged.port, garbage))
    assert answer.status in statuses, answer
    assert b"Traceback" not in answer.body


def test_content_length_above_max_request_size_is_413(unchanged: Garbage) -> None:
    length = {"Content-Length": str(SMALL_REQUEST_SIZE + 1)}
    head = request_bytes("PUT", "/v1/secret/big", unchanged.token, extra=length)
    answer = parse_answer(raw_exchange(unchanged.port, head))  # refused before the body
    assert assert_json_error(answer, 413) == ["http: request body too large"]
    assert answer.headers.get("connection") == "close"


def test_chunked_body_above_max_request_size_is_413(unchanged: Garbage) -> None:
    size = SMALL_REQUEST_SIZE + 1
    value = json.dumps({"value": "x" * size}).encode()[:size]
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(value[i : i + 1000]), value[i : i + 1000])
        for i in range(0, len(value), 1000)
    )
    chunking = {"Transfer-Encoding": "chunked"}
    raw = request_bytes("PUT", "/v1/secret/big", unchanged.token, extra=chunking)
    raw += chunked + b"0\r\n\r\n"
    answer = parse_answer(raw_exchange(unchanged.port, raw))
    assert assert_json_error(answer, 413) == ["http: request body too large"]


def test_a_body_just_under_the_limit_is_written(garbage_server: Garbage) -> None:
    value = "y" * (SMALL_REQUEST_SIZE - 100)
    status, _ = call(
        garbage_server.port, "PUT", "/v1/secret/near", garbage_server.token, {"value": value}
    )
    assert status == 204
    status, body = call(garbage_server.port, "GET", "/v1/secret/near", garbage_server.token)
    assert (status, body["data"]) == (200, {"value": value})


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "failed to decode JSON input"),
        (b'{"value": "x"', "failed to decode JSON input"),
        (b'["value", "x"]', "failed to decode JSON input"),
        (b'"just a string"', "failed to decode JSON input"),
        (b"\xff\xfe\x00", "failed to decode JSON input"),
    ],
    ids=["not-json", "truncated", "array", "string", "not-utf8"],
)
def test_a_bad_body_is_400(unchanged: Garbage, body: bytes, why: str) -> None:
    raw = request_bytes(
        "PUT", "/v1/secret/x", unchanged.token, body, {"Content-Type": "application/json"}
    )
    errors = assert_json_error(parse_answer(raw_exchange(unchanged.port, raw)), 400)
    assert errors[0].startswith(why), errors


@pytest.mark.parametrize("method", ["PATCH", "TRACE", "OPTIONS"])
def test_an_unsupported_method_is_405(unchanged: Garbage, method: str) -> None:
    raw = request_bytes(method, "/v1/secret/kept", unchanged.token, b'{"value": "patched"}')
    errors = assert_json_error(parse_answer(raw_exchange(unchanged.port, raw)), 405)
    assert method[:16] in errors[0]


def test_head_is_only_for_health(unchanged: Garbage) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", unchanged.port, timeout=10)
    try:
        conn.request("HEAD", "/v1/secret/kept", headers={"X-Vault-Token": unchanged.token})
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (405, b"")
        conn.request("HEAD", "/v1/sys/health")
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (200, b"")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "target",
    [b"/v1/secret/%ff%fe", b"/v1/secret/\xff\xfe", b"/v1/secret/%c3%28"],
    ids=["percent", "raw", "invalid-sequence"],
)
def test_a_path_that_is_not_utf8_is_400(unchanged: Garbage, target: bytes) -> None:
    raw = request_bytes("PUT", "PATH", unchanged.token, b'{"value": "x"}').replace(
        b"PATH", target, 1
    )
    answer = parse_answer(raw_exchange(unchanged.port, raw))
    if answer.headers.get("content-type") == "application/json":
        assert assert_json_error(answer, 400) == ["the path is not valid UTF-8"]
    else:  # cheroot's own 400 for a request line it cannot take
        assert answer.status == 400, answer


@pytest.mark.parametrize("token", ["", "wrong-token", "root"])
def test_a_missing_or_wrong_token_is_403(garbage_server: Garbage, token: str) -> None:
    """Refused, and nothing changed but the record of each refusal."""
    port = garbage_server.port
    before = head_seq(port, garbage_server.token)
    for method, body in (
        ("GET", None),
        ("PUT", {"value": "stolen"}),
        ("DELETE", None),
        ("LIST", None),
    ):
        status, answer = call(port, method, "/v1/secret/kept", token, body)
        assert (status, answer) == (403, {"errors": ["permission denied"]})
    status, answer = call(port, "GET", "/v1/sys/vaultlog/audit", token)
    assert status == 403
    status, trail = call(port, "GET", "/v1/sys/vaultlog/audit", garbage_server.token)
    assert status == 200
    entries = [e for e in trail["data"]["entries"] if e["seq"] > before]
    assert [e["operation"] for e in entries] == ["request.denied"] * 5
    assert {e["actor"] for e in entries} == {"anonymous"}


def test_garbage_leaves_secrets_as_they_were(garbage_server: Garbage) -> None:
    status, body = call(garbage_server.port, "GET", "/v1/secret/kept", garbage_server.token)
    assert (status, body["data"]) == (200, {"value": "kept"})
    status, body = call(garbage_server.port, "GET", "/v1/secret/big", garbage_server.token)
    assert status == 404


def test_a_stalled_client_is_dropped_and_others_are_served(garbage_server: Garbage) -> None:
    """Half a request line, and a request whose body never comes: the server keeps
    serving, and drops both after its listener's http_read_timeout.
    The store gains only the audit records of the reads served meanwhile."""
    unchanged = garbage_server
    before = head_seq(unchanged.port, unchanged.token)
    stalled = []
    partial = [
        b"PUT /v1/secret/slow HT",
        request_bytes("PUT", "/v1/secret/slow", unchanged.token, extra={"Content-Length": "100"})
        + b'{"value": "sl',
    ]
    for data in partial:
        sock = socket.create_connection(("127.0.0.1", unchanged.port), timeout=SOCKET_TIMEOUT + 8)
        sock.sendall(data)
        stalled.append(sock)
    started = time.monotonic()
    try:
        for _ in range(20):  # others are served at once while the two stall
            begun = time.monotonic()
            assert call(unchanged.port, "GET", "/v1/sys/health", timeout=5)[0] == 200
            status, body = call(
                unchanged.port, "GET", "/v1/secret/kept", unchanged.token, timeout=5
            )
            assert (status, body["data"]) == (200, {"value": "kept"})
            assert time.monotonic() - begun < 2
        for sock in stalled:
            try:
                rest = b""
                while chunk := sock.recv(65536):
                    rest += chunk
            except ConnectionResetError:
                rest = b""
            assert time.monotonic() - started < SOCKET_TIMEOUT + 6, "not dropped after its timeout"
            if rest:  # cheroot may say why before closing
                assert parse_answer(rest).status in (400, 408), rest
    finally:
        for sock in stalled:
            sock.close()
    status, _ = call(unchanged.port, "GET", "/v1/secret/slow", unchanged.token)
    assert status == 404
    status, body = call(unchanged.port, "GET", "/v1/sys/vaultlog/audit", unchanged.token)
    added = [e for e in body["data"]["entries"] if e["seq"] > before]
    assert {(e["operation"], e["path"]) for e in added} <= {
        ("secret.read", "secret/kept"),
        ("secret.read", "secret/slow"),
    }


# ---- (c) one server per store, and SIGTERM -----------------------------------------------


def test_a_second_server_on_the_same_store_is_refused(tmp_path: Path) -> None:
    server = config_server(tmp_path / "server")
    with running(server):
        second = subprocess.run(
            server.argv, env=server.env, capture_output=True, text=True, timeout=30
        )
        assert second.returncode != 0
        said = (second.stderr + second.stdout).strip()
        assert len(said.splitlines()) == 1, said
        assert "locked by another process" in said
        assert "Traceback" not in said
        assert call(server.port, "GET", "/v1/sys/health")[0] == 200  # the first one serves on


def test_sigterm_stops_cleanly_and_releases_the_store(tmp_path: Path) -> None:
    server = config_server(tmp_path / "server")
    with running(server):
        token = root_token(server)
        assert call(server.port, "PUT", "/v1/secret/x", token, {"value": "kept"})[0] == 204
        assert stop_with(server, signal.SIGTERM) == 0
    assert "==> Vault shutdown triggered" in server.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    read = subprocess.run(
        [vault_executable(), "read", "-field=value", "secret/x"],
        env={
            **server_env(server.home),
            "VAULTLOG_LOCK_TIMEOUT": "0",
            "VAULTLOG_UNSEAL_KEY": server.keys[0],  # the one share is the root key
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (read.returncode, read.stdout, read.stderr) == (0, "kept\n", "")


def test_sigterm_while_clients_are_connected(tmp_path: Path) -> None:
    """An idle keep-alive connection does not hold the server up past its timeout."""
    server = config_server(tmp_path / "server", http_read_timeout=f"{SOCKET_TIMEOUT}s")
    with running(server):
        token = root_token(server)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            assert send(conn, "PUT", "/v1/secret/x", token, {"value": "1"})[0] == 204
            begun = time.monotonic()
            assert stop_with(server, signal.SIGTERM, timeout=SOCKET_TIMEOUT + 5) == 0
            assert time.monotonic() - begun < SOCKET_TIMEOUT + 5
        finally:
            conn.close()


# ---- (d) the expiration timer ---------------------------------------------------------------


def test_the_timer_revokes_an_expired_lease_without_any_request(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    with running(vaultlog_dev_server(tmp_path / "server")) as server:
        port, token = server.port, "root"
        root = {
            "access_key": "AKIAROOT",
            "secret_key": "root-secret-key",
            "region": "us-east-1",
            "endpoint": moto_server.url,
        }
        for path, body in (
            ("sys/mounts/aws", {"type": "aws"}),
            ("aws/config/root", root),
            ("aws/roles/deploy", {"policy": json.dumps(POLICY)}),
            ("aws/config/lease", {"lease": "2s", "lease_max": "10s"}),
        ):
            status, answer = call(port, "PUT", f"/v1/{path}", token, body)
            assert status == 204, (path, answer)
        status, secret = call(port, "GET", "/v1/aws/creds/deploy", token)
        assert status == 200, secret
        assert secret["lease_duration"] == 2
        access_key = secret["data"]["access_key"]
        iam = moto_server.iam()

        def keys() -> set[str]:
            found = set()
            for user in iam.list_users()["Users"]:
                for key in iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]:
                    found.add(key["AccessKeyId"])
            return found

        assert access_key in keys()
        time.sleep(4.5)  # no request to the server: only its timer can act
        assert access_key not in keys()
        status, body = call(port, "GET", "/v1/sys/leases", token)
        assert status == 200 and body["data"]["leases"] == []
        status, body = call(port, "GET", "/v1/sys/vaultlog/audit", token)
        revoked = [e for e in body["data"]["entries"] if e["operation"] == "lease.revoked"]
        assert [e["lease_id"] for e in revoked] == [secret["lease_id"]]
        assert revoked[0]["actor"] != "root"  # the server did it, not a client
        assert "expired" in json.dumps(revoked[0]["detail"])


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    garbage_server: Garbage,
) -> None:
    """curl sends ``Expect: 100-continue`` for larger bodies and waits for the interim
    answer (a second, if it never comes) before it sends the body."""
    body = json.dumps({"value": "z" * 2000}).encode()
    head = (
        b"PUT /v1/secret/continued HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"X-Vault-Token: " + garbage_server.token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", garbage_server.port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(0.5)  # curl waits a second before sending the body regardless
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.settimeout(10)
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 204 ")
    status, answer = call(garbage_server.port, "GET", "/v1/secret/continued", garbage_server.token)
    assert (status, answer["data"]) == (200, {"value": "z" * 2000})
