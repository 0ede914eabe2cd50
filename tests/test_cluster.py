"""Several `vault server` nodes on one PostgreSQL store (tests/cluster.py): one active node,
standbys forwarding to it, failover when it is killed, PostgreSQL itself restarted, and the
Secret Backends page through a standby."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import psycopg
import pytest

from eventstore import PostgresStorage, decode_unseal_key
from projections import SecretWritten, Store
from projections.events import TokenRevoked
from tests.cluster import Cluster, postgres_node
from tests.conftest import VaultCLI, cli_env, vault_executable
from tests.servers import DevServer, bao_executable
from tools.bench.postgres import PostgresServer


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    """Three nodes of a new store, for a test that kills, restarts or remounts."""
    started = Cluster.of(tmp_path, pg_url, 3)
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    """Three nodes that the tests which only write new paths and read share."""
    started = Cluster.of(tmp_path_factory.mktemp("shared"), postgres.new_database(), 3)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def raw_request(
    node: DevServer, method: str, path: str, *, token: str, body: object = None, **headers: str
) -> tuple[int, Message, bytes]:
    data = None if body is None else json.dumps(body).encode()
    sent = urllib.request.Request(f"{node.addr}/v1/{path}", data=data, method=method)
    sent.add_header("X-Vault-Token", token)
    for name, value in headers.items():
        sent.add_header(name.replace("_", "-"), value)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(sent, timeout=30) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_writes_through_any_node_are_read_back_from_every_node(shared: Cluster) -> None:
    active = shared.active()
    for i, node in enumerate(shared.nodes):
        node.call("PUT", f"secret/from-{i}", {"value": f"written at node {i}"}, shared.token)
    for node in shared.nodes:
        for i in range(len(shared.nodes)):
            answer = node.call("GET", f"secret/from-{i}", token=shared.token)
            assert answer["data"] == {"value": f"written at node {i}"}
    # Leader and health, as Vault's: the active node is itself, standbys name it and say 429.
    assert active.call("GET", "sys/leader")["is_self"] is True
    for standby in shared.standbys():
        leader = standby.call("GET", "sys/leader")
        assert (leader["ha_enabled"], leader["is_self"]) == (True, False)
        assert leader["leader_address"] == active.addr
        status, health = standby.request("GET", "sys/health")
        assert (status, health["standby"], health["sealed"]) == (429, True, False)
        assert standby.request("GET", "sys/health?standbyok=true")[0] == 200
        assert standby.call("GET", "sys/seal-status")["sealed"] is False


def test_a_standby_redirects_when_asked_not_to_forward(shared: Cluster) -> None:
    active, standby = shared.active(), shared.standbys()[0]
    status, headers, _ = raw_request(
        standby,
        "GET",
        "secret/x",
        token=shared.token,
        X_Vault_No_Request_Forwarding="true",
    )
    assert status == 307
    assert headers["Location"] == f"{active.addr}/v1/secret/x"


def test_every_answer_carries_the_index_and_a_newer_one_is_refused(shared: Cluster) -> None:
    standby = shared.standbys()[0]
    status, headers, _ = raw_request(
        standby, "PUT", "secret/indexed", token=shared.token, body={"v": "1"}
    )
    assert status == 204
    index = json.loads(base64.b64decode(headers["X-Vault-Index"]))
    assert index["cluster"] == standby.call("GET", "sys/health?standbyok=true")["cluster_id"]
    assert set(index) == {"cluster", "value"} and int(index["value"]) > 0
    status, headers, body = raw_request(
        standby,
        "GET",
        "secret/indexed",
        token=shared.token,
        X_Vault_Index=headers["X-Vault-Index"],
    )
    assert status == 200 and json.loads(body)["data"] == {"v": "1"}
    assert int(json.loads(base64.b64decode(headers["X-Vault-Index"]))["value"]) >= int(
        index["value"]
    )
    ahead = base64.b64encode(
        json.dumps({"cluster": index["cluster"], "value": "999999999"}).encode()
    ).decode()
    status, _, body = raw_request(
        standby, "GET", "secret/indexed", token=shared.token, X_Vault_Index=ahead
    )
    assert status == 412 and json.loads(body) == {"errors": ["required index state not present"]}


class Load:
    """Writers sending unique writes round-robin over the nodes until stopped; what was
    acknowledged (2xx) and how every other request failed."""

    def __init__(self, cluster: Cluster, nodes: list[DevServer], writers: int = 4) -> None:
        self.cluster, self.nodes = cluster, nodes
        self.acked: dict[str, str] = {}
        self.failures: dict[int, int] = {}
        self.answers: set[str] = set()  # what the failures said
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(n,)) for n in range(writers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _work(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            node = self.nodes[(n + i) % len(self.nodes)]
            path, value = f"secret/load/{n}-{i}", f"v{n}-{i}"
            i += 1
            try:
                status, answer = node.request("PUT", path, {"value": value}, self.cluster.token)
            except OSError:  # the node itself is gone (killed, or mid-restart)
                status, answer = 0, None
            with self._lock:
                if 200 <= status < 300:
                    self.acked[path] = value
                else:
                    self.failures[status] = self.failures.get(status, 0) + 1
                    self.answers.add(f"{status} {answer}")
                    time.sleep(0.02)


def check_everything_acknowledged_is_there(cluster: Cluster, acked: dict[str, str]) -> None:
    for node in [n for n in cluster.nodes if n.process]:
        listed = node.call("GET", "secret/load?list=true", token=cluster.token)["data"]["keys"]
        assert {f"secret/load/{k}" for k in listed} >= set(acked)
    reader = cluster.active()
    for path, value in acked.items():
        assert reader.call("GET", path, token=cluster.token)["data"] == {"value": value}


def written_once(url: str, key: str) -> None:
    """Every value write in the shared log happened once; its chain and records verify."""
    store = Store.open_postgres(PostgresStorage(url), decode_unseal_key(key), write=False)
    try:
        writes = [e.path for e in store.events() if isinstance(e, SecretWritten)]
        assert len(writes) == len(set(writes))
        report = store.verify()
        assert report.ok, report.problem
    finally:
        store.close()


def test_killing_the_active_node_under_load_loses_nothing_acknowledged(
    cluster: Cluster, pg_url: str
) -> None:
    first = cluster.active()
    with Load(cluster, cluster.nodes) as load:
        time.sleep(1.5)
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        killed_at = time.monotonic()
        first.process = None
        survivors = [n for n in cluster.nodes if n is not first]
        second = cluster.active(among=survivors)
        took_over = time.monotonic() - killed_at
        time.sleep(1.5)
    assert second is not first and took_over < 5, took_over
    assert len(load.acked) > 20, (load.acked, load.failures)
    assert set(load.failures) <= {0, 503}, load.answers
    check_everything_acknowledged_is_there(cluster, load.acked)
    status, answer = second.request("GET", "sys/vaultlog/verify", token=cluster.token)
    assert status == 200 and answer["data"]["ok"] is True, answer
    written_once(pg_url, cluster.keys[0])
    # The killed node comes back as a standby of the new active node.
    cluster.restart(first)
    assert cluster.active() is second
    assert first.call("GET", "secret/load?list=true", token=cluster.token)["data"]["keys"]


def test_postgresql_restarted_mid_load_fails_requests_cleanly_and_loses_nothing(
    tmp_path: Path,
) -> None:
    database = PostgresServer()
    database.start()
    cluster = Cluster.of(tmp_path, database.new_database(), 2)
    try:
        cluster.start()
        with Load(cluster, cluster.nodes) as load:
            time.sleep(1.0)
            database.stop()
            time.sleep(2.0)
            outage = dict(load.failures)
            database.start()
            cluster.active(timeout=20)
            time.sleep(1.0)
        assert outage.get(503, 0) > 0, outage
        assert set(load.failures) <= {503}, load.answers
        check_everything_acknowledged_is_there(cluster, load.acked)
        for node in cluster.nodes:
            assert "Traceback" not in node.log(tail=None)
    finally:
        cluster.stop()
        database.close()


def test_the_secret_backends_page_through_a_standby(cluster: Cluster, tmp_path: Path) -> None:
    """The seed page's commands, as tests/test_walkthrough.py runs them on the embedded
    store, through a standby (a server's store also has Vault's cubbyhole/)."""
    standby = cluster.standbys()[0]
    (tmp_path / "client").mkdir()
    env = {**cli_env(tmp_path / "client"), "VAULT_ADDR": standby.addr, "VAULT_TOKEN": cluster.token}
    vault = VaultCLI(tmp_path / "client", env)
    assert vault("write", "secret/hello", "value=world") == (
        "Success! Data written to: secret/hello\n"
    )
    assert vault("read", "secret/hello") == (
        "Key             Value\nlease_duration  2592000\nvalue           world\n"
    )
    assert vault("mount", "generic") == "Successfully mounted 'generic' at 'generic'!\n"
    mounts = vault("mounts").splitlines()
    assert mounts[0].split() == ["Path", "Type", "Description"]
    assert [line.split()[:2] for line in mounts[1:]] == [
        ["cubbyhole/", "cubbyhole"],
        ["generic/", "generic"],
        ["secret/", "generic"],
        ["sys/", "system"],
    ]
    vault("write", "generic/hello", "value=other")
    assert vault("read", "-field=value", "generic/hello") == "other\n"
    assert vault("unmount", "generic/") == "Successfully unmounted 'generic/'!\n"
    assert "generic/" not in vault("mounts")
    vault("mount", "generic")
    assert vault.run("read", "generic/hello").returncode == 1
    assert vault("remount", "secret/", "kv/") == "Successfully remounted from 'secret/' to 'kv/'!\n"
    for node in cluster.nodes:  # every node serves what the standby was told
        assert node.call("GET", "kv/hello", token=cluster.token)["data"] == {"value": "world"}


def test_seal_through_a_standby_seals_the_active_node(cluster: Cluster) -> None:
    active, standby = cluster.active(), cluster.standbys()[0]
    assert standby.request("PUT", "sys/seal")[0] == 403  # forwarded, and refused there
    assert standby.request("PUT", "sys/seal", token=cluster.token)[0] == 204
    assert active.call("GET", "sys/seal-status")["sealed"] is True
    assert standby.call("GET", "sys/seal-status")["sealed"] is False
    cluster.active(among=[n for n in cluster.nodes if n is not active])  # another took over


def test_step_down_hands_the_active_role_to_another_node(cluster: Cluster, tmp_path: Path) -> None:
    first = cluster.active()
    client = tmp_path / "client"
    client.mkdir()
    env = {**cli_env(client), "VAULT_ADDR": first.addr, "VAULT_TOKEN": cluster.token}
    assert (
        VaultCLI(client, env)("operator", "step-down") == f"Success! Stepped down: {first.addr}\n"
    )
    deadline = time.monotonic() + 10
    while cluster.active() is first:
        assert time.monotonic() < deadline, "no other node took over"
        time.sleep(0.1)
    second = cluster.active()
    second.call("PUT", "secret/after-step-down", {"v": "1"}, cluster.token)
    assert first.call("GET", "secret/after-step-down", token=cluster.token)["data"] == {"v": "1"}


def test_without_ha_a_second_node_cannot_unseal(tmp_path: Path, pg_url: str) -> None:
    nodes = Cluster([postgres_node(tmp_path / f"n{i}", pg_url, ha=False) for i in range(2)])
    try:
        for node in nodes.nodes:
            node.start()
        answer = nodes.nodes[0].call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        nodes.nodes[0].call("PUT", "sys/unseal", {"key": answer["keys_base64"][0]})
        status, refused = nodes.nodes[1].request(
            "PUT", "sys/unseal", {"key": answer["keys_base64"][0]}
        )
        assert (status, refused) == (
            400,
            {"errors": ["another server serves this store (set ha_enabled to stand by)"]},
        )
        assert nodes.nodes[1].request("GET", "sys/health")[0] == 503
    finally:
        nodes.stop()


def test_no_secret_and_no_token_is_in_the_database_files_in_plaintext(
    shared: Cluster, postgres: PostgresServer
) -> None:
    secret = "plaintext-never-on-disk-" + "7" * 12
    standby = shared.standbys()[0]
    standby.call("PUT", "secret/hidden", {"value": secret}, shared.token)
    created = standby.call("PUT", "auth/token/create", {"policies": ["default"]}, shared.token)
    token = created["auth"]["client_token"]
    with psycopg.connect(shared.url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    places = [postgres.data, *(node.home for node in shared.nodes)]
    for place in places:
        for path in place.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for needle in (secret, token, shared.token, shared.keys[0]):
                    assert needle.encode() not in data, (needle[:8], path)


def test_only_the_active_node_reaps_what_expires(shared: Cluster) -> None:
    standby = shared.standbys()[0]
    created = [
        standby.call(
            "PUT", "auth/token/create", {"ttl": "1s", "policies": ["default"]}, shared.token
        )
        for _ in range(3)
    ]
    assert all(c["auth"]["lease_duration"] == 1 for c in created)
    time.sleep(3.5)  # the active node's timer runs every second; standbys have none
    store = Store.open_postgres(
        PostgresStorage(shared.url), decode_unseal_key(shared.keys[0]), write=False
    )
    try:
        expired = [
            e.token_id
            for e in store.events()
            if isinstance(e, TokenRevoked) and e.reason == "expired"
        ]
    finally:
        store.close()
    assert len(expired) == 3 == len(set(expired))
    for c in created:
        status, _ = standby.request(
            "GET", "auth/token/lookup-self", token=c["auth"]["client_token"]
        )
        assert status == 403


@pytest.mark.parametrize("format", ["table", "json"])
def test_vault_status_prints_what_bao_status_prints_on_each_node(
    shared: Cluster, tmp_path: Path, format: str
) -> None:
    for node in shared.nodes:
        env = {**cli_env(tmp_path), "VAULT_ADDR": node.addr, "BAO_ADDR": node.addr}
        printed = [
            subprocess.run(
                [exe, "status", f"-format={format}"], capture_output=True, text=True, env=env
            )
            for exe in (bao_executable(), vault_executable())
        ]
        assert [p.returncode for p in printed] == [0, 0]
        assert printed[1].stdout == printed[0].stdout
        assert "HA Mode" in printed[1].stdout or '"ha_enabled": true' in printed[1].stdout
