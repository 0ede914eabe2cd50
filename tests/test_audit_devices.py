"""Audit devices and "who could read", replayed from the log.

A file device on a real `vault server` writes one Vault-shaped JSON line per event (values
as HMACs, never a value or a token), goes on after a restart without a gap or a repeat,
back-fills from ``since``, and fails closed: when no device can write, the request is
answered 500 and the next are refused before they are served, until the device can write
again and catches up from the log. The embedded CLI writes the devices too, and has
Vault's ``audit enable|list|disable``. ``vault audit -who-could-read=P -at=S`` answers
what was true at S, whatever changed since.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backends import Core, Registry, Request
from backends.auth import TokenAuth
from tests.conftest import VaultCLI, cli_env
from tests.servers import DevServer, config_server, running
from tools.seal import Seal


def new_secret() -> str:
    return f"s3cret-{uuid.uuid4().hex}"


def api(
    server: DevServer, method: str, path: str, body: object = None, token: str = ""
) -> tuple[int, Any]:
    """One request to the server: its status and decoded body, errors included."""
    return server.request(method, path, body, token)


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def seqs(path: Path) -> list[int]:
    return [entry["seq"] for entry in entries(path)]


def head(server: DevServer, token: str) -> int:
    status, body = api(server, "GET", "sys/vaultlog/head", token=token)
    assert status == 200, body
    return int(body["data"]["seq"])


def enable(server: DevServer, token: str, name: str, file: Path, **options: str) -> None:
    body = {"type": "file", "options": {"file_path": str(file), **options}}
    status, answer = api(server, "PUT", f"sys/audit/{name}", body, token)
    assert status == 204, answer


def test_a_file_device_writes_each_event_once_through_restarts_and_failures(
    tmp_path: Path,
) -> None:
    server = config_server(tmp_path / "server")
    logs = tmp_path / "logs"
    logs.mkdir()
    first, full = logs / "first.log", logs / "full.log"
    secret = new_secret()
    with running(server):
        root = server.token
        body = {"type": "file", "description": "all", "options": {"file_path": str(first)}}
        assert api(server, "PUT", "sys/audit/file", body, root)[0] == 204
        status, listing = api(server, "GET", "sys/audit", token=root)
        assert status == 200
        device = listing["data"]["file/"]
        since = int(device["options"]["since"])
        assert device == {
            "description": "all",
            "local": False,
            "options": {"file_path": str(first), "since": str(since)},
            "path": "file/",
            "type": "file",
        }
        assert listing["file/"] == device  # beside the envelope too, as Vault's
        assert api(server, "PUT", "sys/audit/file", body, root) == (
            400,
            {"errors": ["path already in use"]},
        )
        _status, created = api(server, "POST", "auth/token/create", {"policies": ["default"]}, root)
        limited, accessor = created["auth"]["client_token"], created["auth"]["accessor"]
        assert api(server, "PUT", "secret/db", {"password": secret}, root)[0] == 204
        assert api(server, "GET", "secret/db", token=root)[0] == 200
        assert api(server, "GET", "secret/db", token=limited)[0] == 403
        hashed = api(server, "PUT", "sys/audit-hash/secret", {"input": secret}, root)[1]["hash"]
        last = head(server, root)

    # One line per event, from the device's enabling on, in Vault's shape.
    lines = entries(first)
    assert [e["seq"] for e in lines] == list(range(since, last + 1))
    assert all(e["type"] == "response" and {"time", "auth", "request"} <= set(e) for e in lines)
    by_event = {(e["event"], e["request"]["path"]): e for e in lines}
    written = by_event["secret.written", "secret/db"]
    assert written["request"]["data"] == {"password": hashed}
    assert written["request"]["operation"] == "update"
    assert written["request"]["mount_type"] == "generic"
    assert written["auth"]["display_name"] == "root"
    assert written["auth"]["policies"] == ["root"]
    assert by_event["secret.read", "secret/db"]["request"]["operation"] == "read"
    denied = by_event["request.denied", "secret/db"]
    assert denied["error"] == "permission denied"
    assert denied["auth"]["accessor"] == accessor
    assert denied["auth"]["display_name"] == "token"
    assert denied["auth"]["policies"] == ["default"]
    assert by_event["token.created", "auth/token/create"]["response"]["auth"]["accessor"] == (
        accessor
    )
    text = first.read_text()
    for plaintext in (secret, root, limited, root.removeprefix("s."), limited.removeprefix("s.")):
        assert plaintext not in text

    # A restart goes on after the last line: no event written twice, none skipped.
    with running(server):
        assert api(server, "PUT", "secret/after", {"v": new_secret()}, root)[0] == 204
        last = head(server, root)
        assert seqs(first) == list(range(since, last + 1))

        # A second device back-fills from seq 1, with the same lines where they overlap.
        enable(server, root, "full", full, since="1")
        assert api(server, "GET", "secret/after", token=root)[0] == 200
        last = head(server, root)
        assert seqs(full) == list(range(1, last + 1))
        assert seqs(first) == list(range(since, last + 1))
        assert entries(full)[since - 1 :] == entries(first)

        # No device can write: the request is served but answered 500, and the next ones
        # are refused before they are served.
        for path in (first, full):
            path.rename(path.with_suffix(".aside"))
            path.mkdir()
        status, answer = api(server, "PUT", "secret/unanswered", {"v": "1"}, root)
        assert status == 500
        (message,) = answer["errors"]
        assert "\n" not in message and "audit device" in message and "refused" in message
        assert api(server, "PUT", "secret/refused", {"v": "1"}, root)[0] == 500
        assert api(server, "GET", "sys/mounts", token=root)[0] == 500

        # Once a device can write, it first writes everything it missed, from the log.
        for path in (first, full):
            path.rmdir()
            path.with_suffix(".aside").rename(path)
        assert api(server, "GET", "secret/unanswered", token=root)[0] == 200
        assert api(server, "GET", "secret/refused", token=root)[0] == 404
        last = head(server, root)
        assert seqs(first) == list(range(since, last + 1))
        assert seqs(full) == list(range(1, last + 1))
        assert entries(full)[since - 1 :] == entries(first)
        unanswered = [e for e in entries(first) if e["request"]["path"] == "secret/unanswered"]
        assert [e["event"] for e in unanswered] == ["secret.written", "secret.read"]

        # One device of two failing: requests are served, and it catches up later.
        full.rename(full.with_suffix(".aside"))
        full.mkdir()
        assert api(server, "PUT", "secret/one-down", {"v": "1"}, root)[0] == 204
        full.rmdir()
        full.with_suffix(".aside").rename(full)
        assert api(server, "GET", "secret/one-down", token=root)[0] == 200
        last = head(server, root)
        assert seqs(full) == list(range(1, last + 1))

    # The embedded CLI, on the same store, writes the devices as it appends.
    env = {**cli_env(server.home), "VAULTLOG_UNSEAL_KEY": server.keys[0]}
    vault = VaultCLI(server.home, env)
    vault("write", "secret/embedded", f"v={new_secret()}")
    listed = vault("audit", "list", "-detailed")
    assert "file/" in listed and "full/" in listed and f"file_path={first}" in listed
    assert vault("audit", "disable", "full") == (
        "Success! Disabled audit device (if it was enabled) at: full/\n"
    )
    vault("read", "secret/embedded")
    trail = [json.loads(line) for line in vault("audit", "-format=json").splitlines()]
    last = trail[-1]["seq"]
    assert seqs(first) == list(range(since, last + 1))
    assert seqs(full) == list(range(1, last - 1))  # up to its disabling, not past it
    assert entries(first)[-1]["auth"]["policies"] == ["root"]  # the local user


def test_the_embedded_cli_enables_lists_and_disables_devices(vault: VaultCLI) -> None:
    log = vault.home / "audit.log"
    assert vault("audit", "list") == "No audit devices are enabled.\n"
    assert vault("audit", "enable", "file", f"file_path={log}") == (
        "Success! Enabled the file audit device at: file/\n"
    )
    vault("write", "secret/a", f"v={new_secret()}")
    assert vault("audit", "enable", "-path=everything", "-since=1", "file", "file_path=all.log")
    listed = vault("audit", "list").splitlines()
    assert listed[0].split() == ["Path", "Type", "Description"]
    assert [row.split()[:2] for row in listed[2:]] == [["everything/", "file"], ["file/", "file"]]
    detailed = json.loads(vault("audit", "list", "-format=json"))
    assert detailed["everything/"]["options"] == {
        "file_path": str(vault.home / "all.log"),
        "since": "1",
    }
    again = vault.run("audit", "enable", "file", f"file_path={log}")
    assert again.returncode == 2
    assert again.stderr == "Error enabling audit device: path already in use\n"
    unknown = vault.run("audit", "enable", "syslog")
    assert (unknown.returncode, unknown.stderr) == (
        2,
        'Error enabling audit device: unknown backend type: "syslog"\n',
    )
    raw = vault.run("audit", "enable", "-path=raw", "file", f"file_path={log}", "log_raw=true")
    assert raw.returncode == 2 and "unsupported option" in raw.stderr
    assert vault("audit", "disable", "file/") == (
        "Success! Disabled audit device (if it was enabled) at: file/\n"
    )
    last = int(json.loads(vault("audit", "-format=json").splitlines()[-1])["seq"])
    assert seqs(vault.home / "all.log") == list(range(1, last + 1))
    assert seqs(log)[-1] == last - 1  # it wrote up to its disabling
    vault("audit", "disable", "everything")
    assert vault("audit", "list") == "No audit devices are enabled.\n"
    assert "-actor" in vault("audit", "--help")  # the trail's flags are still the group's


@dataclass
class Tokens:
    """A server store, sealed again, whose tokens and policies changed after ``seq``."""

    data: Path
    key: str
    seq: int
    then: dict[str, Any]  # who-could-read secret/db, asked at ``seq`` itself
    reader: str  # the accessor of the token that read secret/db


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tokens]:
    registry = Registry()
    data = tmp_path_factory.mktemp("who") / "data"
    seal = Seal(data, lambda store: Core(store, registry, TokenAuth(registry)))
    keys = seal.init({"secret_shares": 1, "secret_threshold": 1})
    seal.unseal({"key": keys["keys_base64"][0]})
    core, root = seal.core, keys["root_token"]
    assert core is not None

    def serve(operation: Any, where: str, token: str = root, /, **data: Any) -> Any:
        return core.handle(Request(operation, where, data, token=token))

    serve("write", "sys/policies/acl/reader", policy='path "secret/*" {capabilities = ["read"]}')
    serve("write", "sys/policies/acl/writer", policy='path "secret/*" {capabilities = ["create"]}')
    made = {
        name: serve(
            "write", "auth/token/create", policies=policies, display_name=name, ttl=ttl
        ).auth
        for name, policies, ttl in (
            ("reader", ["reader"], "1h"),
            ("other", ["reader"], "1h"),
            ("writer", ["writer"], "1h"),
            ("short", ["reader"], "2s"),
        )
    }
    serve("write", "secret/db", v=new_secret())
    serve("read", "secret/db", made["reader"]["client_token"])
    seq = core.store.head.seq
    then = serve("read", "sys/vaultlog/who-could-read", path="secret/db").data
    # Everything changes after: a policy, a revocation, an expiry.
    serve("write", "sys/policies/acl/reader", policy='path "other/*" {capabilities = ["read"]}')
    serve("write", "sys/policies/acl/writer", policy='path "secret/*" {capabilities = ["read"]}')
    serve("write", "auth/token/revoke", token=made["other"]["client_token"])
    time.sleep(2.1)
    serve("write", "secret/later", v="1")
    seal.close()
    yield Tokens(data, keys["keys_base64"][0], seq, then, made["reader"]["accessor"])


def tokens_cli(tokens: Tokens, home: Path) -> VaultCLI:
    env = {**cli_env(home), "VAULTLOG_DIR": str(tokens.data), "VAULTLOG_UNSEAL_KEY": tokens.key}
    return VaultCLI(home, env)


def test_who_could_read_at_a_past_seq_is_the_answer_then(tokens: Tokens, tmp_path: Path) -> None:
    rows = {row["display_name"]: row for row in tokens.then["tokens"]}
    assert set(rows) == {"root", "token-reader", "token-other", "token-short"}  # not the writer
    assert rows["token-reader"]["did_read"] and not rows["token-other"]["did_read"]
    assert rows["token-reader"]["accessor"] == tokens.reader
    assert rows["root"]["capabilities"] == ["root"]
    assert rows["token-short"]["policies"] == ["default", "reader"]
    vault = tokens_cli(tokens, tmp_path)
    past = json.loads(
        vault("audit", "-who-could-read=secret/db", f"-at={tokens.seq}", "-format=json")
    )
    assert past == tokens.then
    # Now: the reader's policy moved away, the other is revoked, the short one expired,
    # and the writer's policy reads.
    now = json.loads(vault("audit", "-who-could-read=secret/db", "-format=json"))
    assert [row["display_name"] for row in now["tokens"]] == ["root", "token-writer"]
    table = vault("audit", "-who-could-read=secret/db", f"-at={tokens.seq}").splitlines()
    assert table[0].startswith(f"Tokens that could read secret/db at seq {tokens.seq} (")
    assert table[1].split() == ["Accessor", "Display", "Name", "Policies", "Read", "It"]
    assert f"{tokens.reader}  token-reader  default,reader  yes" in "\n".join(table)


def test_the_trail_names_an_actor_by_display_name_or_accessor(
    tokens: Tokens, tmp_path: Path
) -> None:
    vault = tokens_cli(tokens, tmp_path)

    def actors(flag: str) -> set[str]:
        lines = vault("audit", "-format=json", f"-actor={flag}").splitlines()
        return {json.loads(line)["actor"] for line in lines}

    reader = f"token-reader:{tokens.reader}"
    assert actors("token-reader") == {reader}
    assert actors(tokens.reader) == {reader}
    assert actors(reader) == {reader}
    assert actors("token") == set()  # a display name whole, never a prefix of one
