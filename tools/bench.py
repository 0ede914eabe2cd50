"""Benchmarks against the machine's limits and a peer: ``python -m tools.bench [--quick]``.

Every vaultlog figure is measured in the same run as what it is compared with: the raw
cost of the disk (100-byte appends, each fsynced), the raw cost of the codec (msgpack and
AES-256-GCM on events of the same size), and a peer, the ``eventsourcing`` library on a
SQLite file with its AES cipher, doing the same work. Contenders run in alternating rounds
so a noisy machine slows them alike; the table gives medians and their ratios, with a
PASS/MISS per target, and the results section of BENCHMARKS.md is rewritten with it.

Run it from a regular (non-editable) install: with PYTHONDONTWRITEBYTECODE set, an editable
install compiles vaultlog's modules in every ``vault`` process it times.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import math
import os
import platform
import pstats
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import backends.core as core_module
from backends import Core, Request
from eventstore import encode_unseal_key, new_key
from eventstore.record import HEADER
from projections import SecretWritten, decode
from projections.snapshot import SNAPSHOT_DIR, snapshot_dir, snapshot_seqs, write_snapshot
from projections.sortedrun import RUN_FILE
from projections.versions import INDEX_FILE

RESULTS_START = "<!-- bench:results:start -->"
RESULTS_END = "<!-- bench:results:end -->"
VALUE = {"value": "x" * 100}  # the secret every figure writes: 100 bytes
PEER_PAGES = (100, 1_000, 10_000)  # notification log page sizes tried; the fastest counts
PEER_CIPHER_TOPIC = "eventsourcing.cryptography:AESCipher"  # AES-GCM from `cryptography`
FIGURE_ORDER = ("1", "2", "+", "3", "4", "5", "6", "7", "8")  # "+": batched appends


# ---- sizes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does. ``--quick`` and the hidden options shrink it."""

    rounds: int = 5  # alternating rounds of the throughput figures
    appends: int = 500  # single durable appends per contender per round
    writers: int = 32
    writes_per_writer: int = 200  # per round
    events: int = 1_000_000  # the replayed log
    keyspace: int = 100_000  # distinct paths in it: the live secrets it ends with
    batch: int = 1_000  # events per commit when building, and per peer save
    peer_events: int = 100_000  # written by the peer in batches, then read back
    codec_events: int = 100_000  # per round of the raw codec loop
    slow_rounds: int = 3  # rounds of replays and opens
    pit_samples: int = 15  # point-in-time reads, each with and without snapshots
    cli_runs: int = 20


FULL = Sizes()
QUICK = Sizes(
    rounds=3,
    appends=200,
    writes_per_writer=50,
    events=100_000,
    peer_events=20_000,
    codec_events=30_000,
    slow_rounds=3,
    pit_samples=8,
    cli_runs=10,
)


# ---- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A bound on a ratio: ``at_least`` (throughput) or not (time, memory)."""

    bound: float
    at_least: bool = True
    label: str = ""  # how to show it, when not as a ratio

    def __str__(self) -> str:
        return self.label or f"{'≥' if self.at_least else '≤'} {self.bound:g}x"

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value >= self.bound if self.at_least else value <= self.bound


@dataclass(frozen=True)
class Row:
    """One line of the table: a vaultlog figure beside what it is measured against."""

    figure: str
    what: str
    vaultlog: str
    against: str
    ratio: float | None = None
    target: Target | None = None

    @property
    def result(self) -> str:
        if self.target is None:
            return "—"
        return "PASS" if self.target.met(self.ratio) else "MISS"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)

    def add(
        self,
        figure: str,
        what: str,
        vaultlog: str,
        against: str,
        ratio: float | None = None,
        target: Target | None = None,
    ) -> None:
        self.rows.append(Row(figure, what, vaultlog, against, ratio, target))

    def note(self, text: str) -> None:
        self.notes.append(text)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def ratio(value: float, baseline: float) -> float | None:
    return value / baseline if baseline else None


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def render_table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| # | measurement | vaultlog | measured against | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shown = "—" if row.ratio is None else f"{row.ratio:.2f}x"
        target = "" if row.target is None else str(row.target)
        cells = (row.figure, row.what, row.vaultlog, row.against, shown, target, row.result)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- the machine -----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vaultlog_revision() -> str:
    """The commit the measured code comes from, and whether its product code was edited."""
    source = Path(core_module.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(source),
                "status",
                "--porcelain",
                "--",
                "eventstore",
                "projections",
                "backends",
                "tools/cli.py",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"vaultlog {version('vaultlog')} (installed)"
        except PackageNotFoundError:
            return "unknown"
    return f"{head} with uncommitted product changes" if dirty else head


def machine(directory: Path) -> list[str]:
    """What a reader needs to compare a result with theirs."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        f"- Date: {now}",
        f"- vaultlog: {vaultlog_revision()}; peer: {peer_version()}, "
        f"SQLite {sqlite3.sqlite_version}",
        f"- Stores in {directory} ({filesystem(directory)})",
    ]


def filesystem(directory: Path) -> str:
    """The filesystem type under ``directory`` (from /proc/mounts), for the fsync figures."""
    try:
        best, kind = Path(), "unknown filesystem"
        resolved = directory.resolve()
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = Path(parts[1])
                if resolved.is_relative_to(point) and len(point.parts) > len(best.parts):
                    best, kind = point, parts[2]
        return kind
    except OSError:
        return "unknown filesystem"


# ---- baselines -------------------------------------------------------------------------


def raw_fsync_rate(directory: Path, n: int) -> float:
    """100-byte appends to one file, each followed by ``os.fsync``, per second."""
    payload = b"x" * 100
    fd = os.open(directory / "bench-raw-fsync", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, payload)
            os.fsync(fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)


def raw_codec_rates(body: bytes, n: int) -> tuple[float, float]:
    """(encode, decode) per second of msgpack + AES-256-GCM with a fresh nonce each time,
    on an event like ``body``, with associated data as long as a record header."""
    event = msgpack.unpackb(body, raw=False)
    aead = AESGCM(new_key())
    aad = os.urandom(HEADER.size)
    sealed = []
    start = time.perf_counter()
    for _ in range(n):
        nonce = os.urandom(12)
        sealed.append(nonce + aead.encrypt(nonce, msgpack.packb(event, use_bin_type=True), aad))
    encode_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for item in sealed:
        msgpack.unpackb(aead.decrypt(item[:12], item[12:], aad), raw=False)
    return encode_rate, n / (time.perf_counter() - start)


# ---- the peer: eventsourcing on SQLite -------------------------------------------------


def peer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"eventsourcing {version('eventsourcing')}"
    except PackageNotFoundError:
        return "eventsourcing not installed"


class Peer:
    """An ``eventsourcing`` application on a SQLite file (WAL) with AES-GCM on every event.

    One secret written is one new aggregate whose creation event carries path and value.
    """

    def __init__(self, directory: Path) -> None:
        from eventsourcing.application import Application
        from eventsourcing.cryptography import AESCipher
        from eventsourcing.domain import Aggregate, event

        class Secret(Aggregate):
            @event("Written")
            def __init__(self, path: str, value: dict[str, str]) -> None:
                self.path, self.value = path, value

        class SecretStore(Application):
            log_section_size = max(PEER_PAGES)

        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.secret = Secret
        self.app = SecretStore(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(directory / "peer.sqlite"),
                "CIPHER_TOPIC": PEER_CIPHER_TOPIC,
                "CIPHER_KEY": AESCipher.create_key(32),
            }
        )
        self.count = 0

    def pragmas(self) -> tuple[str, int]:
        """(journal_mode, synchronous) of its connections: WAL, and 2 (FULL) = durable."""
        factory: Any = self.app.factory  # the SQLite factory: its datastore is not typed
        with factory.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            return mode, cursor.fetchone()[0]

    def single_rate(self, n: int) -> float:
        """One event per durable save, per second."""
        start = time.perf_counter()
        for i in range(self.count, self.count + n):
            self.app.save(self.secret(f"secret/k{i}", VALUE))
        self.count += n
        return n / (time.perf_counter() - start)

    def batch_rate(self, n: int) -> float:
        """``n`` events in one save (one transaction), per second."""
        start = time.perf_counter()
        self.app.save(
            *[self.secret(f"secret/k{i}", VALUE) for i in range(self.count, self.count + n)]
        )
        self.count += n
        return n / (time.perf_counter() - start)

    def read_back_rate(self, page: int) -> float:
        """Every event, decrypted and decoded, through the notification log, per second."""
        log, mapper = self.app.notification_log, self.app.mapper
        start, read = 1, 0
        began = time.perf_counter()
        while True:
            notifications = log.select(start, page)
            for notification in notifications:
                mapper.to_domain_event(notification)
            read += len(notifications)
            if len(notifications) < page:
                break
            start = notifications[-1].id + 1
        elapsed = time.perf_counter() - began
        assert read == self.count, (read, self.count)
        return read / elapsed

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def close(self) -> None:
        self.app.close()


def open_peer(directory: Path, report: Report) -> Peer | None:
    try:
        peer = Peer(directory)
    except ImportError:
        report.note("The peer was skipped: `pip install 'eventsourcing>=9.5,<9.6'` to compare.")
        return None
    mode, synchronous = peer.pragmas()
    durable = "durable per commit" if synchronous >= 2 else "NOT durable per commit"
    report.note(
        f"Peer: {peer_version()}, PERSISTENCE_MODULE=eventsourcing.sqlite, "
        f"CIPHER_TOPIC={PEER_CIPHER_TOPIC}; SQLite journal_mode={mode}, "
        f"synchronous={synchronous} ({durable})."
    )
    return peer


# ---- vaultlog --------------------------------------------------------------------------


def write_request(i: int) -> Request:
    return Request("write", f"secret/k{i}", VALUE)


def single_append_rate(core: Core, first: int, n: int) -> float:
    """Durable appends per second, one secret written per ``Core.handle``."""
    start = time.perf_counter()
    for i in range(first, first + n):
        core.handle(write_request(i))
    return n / (time.perf_counter() - start)


def concurrent_rate(core: Core, first: int, writers: int, per_writer: int, guard: bool) -> float:
    """Appends per second with ``writers`` threads calling ``core.handle`` at once."""
    lock = threading.Lock()
    errors: list[BaseException] = []
    ready = threading.Barrier(writers + 1)

    def work(w: int) -> None:
        ready.wait()
        try:
            for i in range(per_writer):
                request = write_request(first + w * per_writer + i)
                if guard:
                    with lock:
                        core.handle(request)
                else:
                    core.handle(request)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return writers * per_writer / elapsed


def build_log(
    directory: Path, key: bytes, sizes: Sizes, between: Callable[[], None]
) -> tuple[list[float], int]:
    """A store of ``sizes.events`` secret writes over ``sizes.keyspace`` paths, staged and
    committed ``sizes.batch`` at a time (one fsync each), calling ``between`` after each;
    (batch rates, seq before the first)."""
    core = Core.open(directory, key, write=True)
    try:
        base = core.state.seq
        mount = core.state.mounts.at("secret/")
        assert mount is not None
        rates, written = [], 0
        while written < sizes.events:
            n = min(sizes.batch, sizes.events - written)
            start = time.perf_counter()
            view = core.view(mount, Request("write", "secret/x"))
            for j in range(written, written + n):
                view.put(f"k{j % sizes.keyspace}", VALUE)
            core.commit()  # writes the batch
            core.flush()  # one fsync for it
            rates.append(n / (time.perf_counter() - start))
            written += n
            between()
        return rates, base
    finally:
        core.close()


@contextmanager
def aside(directory: Path, *names: str) -> Iterator[None]:
    """The store without some of its derived files (snapshots, version index) for a while."""
    moved = [name for name in names if (directory / name).exists()]
    for name in moved:
        (directory / name).rename(directory.parent / f"{name}-aside")
    try:
        yield
    finally:
        for name in moved:
            (directory.parent / f"{name}-aside").rename(directory / name)


def timed_open(directory: Path, key: bytes) -> tuple[float, Core]:
    start = time.perf_counter()
    core = Core.open(directory, key, write=False)
    return time.perf_counter() - start, core


def segment_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


def snapshot_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in snapshot_dir(directory).glob("*.snap"))


def first_secret_written(core: Core) -> bytes:
    """The record body of the log's first ``secret.written`` event (``frames``, unlike
    ``records``, leaves a read-only log's head where it is)."""
    for frame in core.log.frames(1):
        record = core.log.open_frame(frame)
        if isinstance(decode(record), SecretWritten):
            return record.body
    raise LookupError("no secret.written event in the log")


# ---- processes -------------------------------------------------------------------------

_TYPER_FLOOR = """\
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command()
def hello(name: str) -> None:
    print(name)


@app.command()
def goodbye() -> None:
    print("goodbye")


app()
"""

_MEMORY_CHILD = """\
import os, resource, sys
from pathlib import Path
from backends import Core
from eventstore import decode_unseal_key
core = Core.open(Path(sys.argv[1]), decode_unseal_key(os.environ["VAULTLOG_UNSEAL_KEY"]),
                 write=False)
live = sum(map(len, core.state.data.values()))
try:  # Linux keeps ru_maxrss across exec, so it would count the forked harness too
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak *= 1 if sys.platform == "darwin" else 1024
print(peak, live)
"""


def source_root() -> Path:
    """Where the measured vaultlog packages are imported from."""
    return Path(core_module.__file__).resolve().parent.parent


def child_env(home: Path, key: bytes, store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULTLOG_")}
    env.update(
        VAULTLOG_DIR=str(store),
        VAULTLOG_UNSEAL_KEY=encode_unseal_key(key),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "share"),
        HOME=str(home),
    )
    return env


def run_seconds(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed


def install_kind(env: dict[str, str], cwd: Path) -> str:
    """How the ``vault`` beside this interpreter finds vaultlog: 'regular' or 'editable'."""
    where = subprocess.run(
        [sys.executable, "-c", "import tools; print(tools.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    ).stdout.strip()
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    return "regular" if where and Path(where).resolve().is_relative_to(purelib) else "editable"


def peak_rss(store: Path, env: dict[str, str], cwd: Path) -> tuple[int, int]:
    """(peak RSS in bytes, live secrets) of a fresh process that opened ``store``."""
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source_root()), env.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(store)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout.split()
    return int(out[0]), int(out[1])


# ---- the figures -----------------------------------------------------------------------


def bench_appends(work: Path, sizes: Sizes, report: Report, peer: Peer | None) -> None:
    """Figure 1, then figure 2 (which is compared with figure 1's single writer)."""
    key = new_key()
    store = work / "appends"
    core = Core.open(store, key, write=True)
    raw, single, peer_single = [], [], []
    try:
        for r in range(sizes.rounds):
            raw.append(raw_fsync_rate(store, sizes.appends))
            single.append(single_append_rate(core, r * sizes.appends, sizes.appends))
            if peer is not None:
                peer_single.append(peer.single_rate(sizes.appends))
    finally:
        core.close()
    vl, fsyncs = median(single), median(raw)
    what = "durable appends, one secret per `Core.handle`"
    report.add("1", what, rate(vl), f"raw fsync: {rate(fsyncs)}", ratio(vl, fsyncs), Target(0.85))
    if peer is not None:
        against = median(peer_single)
        what = "durable appends vs the peer, one event per save"
        report.add("1", what, rate(vl), f"peer: {rate(against)}", ratio(vl, against), Target(1.5))
    bench_writers(work, sizes, report, vl)


def bench_writers(work: Path, sizes: Sizes, report: Report, single: float) -> None:
    """Figure 2: many threads through one Core; a lock of ours only if Core breaks."""
    goal = 100_000
    guard = False
    key, store = new_key(), work / "writers"
    core = Core.open(store, key, write=True)
    first = 0
    try:
        try:  # a trial round: does Core.handle survive the threads, losing nothing?
            base = core.state.seq
            concurrent_rate(core, first, sizes.writers, sizes.writes_per_writer, guard=False)
            first += sizes.writers * sizes.writes_per_writer
            reader = Core.open(store, key, write=False)
            found = len(reader.state.data[core.state.mounts.by_path["secret/"]])
            reader.close()
            if core.state.seq != base + first or found != first:
                raise RuntimeError(f"{found} of {first} writes found")
        except Exception as exc:
            guard = True
            report.note(
                f"Figure 2: Core.handle broke under {sizes.writers} threads ({exc!r}); "
                "measured behind a lock of the harness's instead."
            )
            with suppress(Exception):
                core.close()
            key, store, first = new_key(), work / "writers-guarded", 0
            core = Core.open(store, key, write=True)
        rates = []
        for _ in range(sizes.rounds):
            per_writer = sizes.writes_per_writer
            rates.append(concurrent_rate(core, first, sizes.writers, per_writer, guard))
            first += sizes.writers * per_writer
    finally:
        core.close()
    vl = median(rates)
    how = "behind a harness lock" if guard else "no lock of ours"
    what = f"appends with {sizes.writers} threads in `Core.handle` ({how})"
    target = Target(1, label=f"≥ {rate(goal)}")
    report.add("2", what, rate(vl), f"goal: {rate(goal)}", ratio(vl, goal), target)
    report.note(
        f"Figure 2: {sizes.writers} writers give {vl / single:.2f}x the single-writer rate "
        "of figure 1."
    )


def bench_store(work: Path, sizes: Sizes, report: Report, peer: Peer | None, profile: bool) -> None:
    """Figures 3, 4, 5, 7 and 8, and batched appends, on one store of ``sizes.events``."""
    key, store = new_key(), work / "store" / "data"
    peer_batches: list[float] = []

    def peer_batch() -> None:  # alternates with vaultlog's batches
        if peer is not None and peer.count < sizes.peer_events:
            peer_batches.append(peer.batch_rate(min(sizes.batch, sizes.peer_events - peer.count)))

    batches, base = build_log(store, key, sizes, peer_batch)
    while peer is not None and peer.count < sizes.peer_events:
        peer_batch()
    vl = median(batches)
    what = f"batched appends, {sizes.batch:,} events per fsync"
    if peer is not None:
        against = median(peer_batches)
        report.add(
            "+", what + " (peer: per save)", rate(vl), f"peer: {rate(against)}", ratio(vl, against)
        )
    else:
        report.add("+", what, rate(vl), "n/a")

    product_snapshots = snapshot_seqs(store)
    reader = Core.open(store, key, write=False)
    head = reader.log.head.seq
    live = sum(map(len, reader.state.data.values()))
    last = product_snapshots[-1] if product_snapshots else 0
    report.note(
        f"Store: {head:,} events ({sizes.events:,} writes over {sizes.keyspace:,} paths, "
        f"{live:,} live secrets). Snapshots the product wrote (VAULTLOG_SNAPSHOT_EVERY="
        f"{core_module.SNAPSHOT_EVERY}): at seqs "
        f"{', '.join(f'{s:,}' for s in product_snapshots) or 'none'}, "
        f"{head - last:,} events before the head; "
        f"{snapshot_bytes(store) / head:,.1f} bytes per event on disk."
    )
    bench_point_in_time(store, reader, base, sizes, report)
    body = first_secret_written(reader)
    opened_as_left = bench_replay(store, key, head, body, sizes, report, peer)

    # Figure 4: open with a snapshot at the head, against open of an empty store.
    write_snapshot(store, reader.keyring, reader.state, reader.log.head, reader.log.head_at)
    reader.close()
    empty = work / "empty"
    Core.open(empty, key, write=True).close()
    with_snapshot: list[float] = []
    empty_opens: list[float] = []
    then_read: list[float] = []  # open, then a first read in the mount holding everything
    for _ in range(max(sizes.slow_rounds, 5)):
        for directory, times in ((store, with_snapshot), (empty, empty_opens)):
            seconds, core = timed_open(directory, key)
            if directory == store:
                start = time.perf_counter()
                assert core.handle(Request("read", "secret/k0")).data == VALUE
                then_read.append(seconds + time.perf_counter() - start)
            core.close()
            times.append(seconds)
    opened, floor = median(with_snapshot), median(empty_opens)
    what = f"`Core.open` of {head:,} events, snapshot at the head"
    report.add(
        "4",
        what,
        duration(opened),
        f"open of an empty store: {duration(floor)}",
        ratio(opened, floor),
        Target(3, at_least=False),
    )
    report.add(
        "4",
        f"`Core.open` as above, then a first read in `secret/` (loads its {live:,} values)",
        duration(median(then_read)),
        f"open of an empty store: {duration(floor)}",
        ratio(median(then_read), floor),
    )
    report.add(
        "4",
        "`Core.open` with the snapshots the product wrote (see the note on the store)",
        duration(opened_as_left),
        f"open of an empty store: {duration(floor)}",
        ratio(opened_as_left, floor),
    )

    # Figures 7 and 8.
    env = child_env(work, key, store)
    rss, live_seen = peak_rss(store, env, work)
    rss_empty, _ = peak_rss(empty, env, work)
    what = f"peak RSS of a process holding {live_seen:,} live secrets (from its snapshot)"
    report.add(
        "7",
        what,
        megabytes(rss),
        f"same, empty store: {megabytes(rss_empty)}",
        ratio(rss, rss_empty),
    )
    report.note(
        f"Figure 7: {(rss - rss_empty) / max(live_seen, 1):,.0f} bytes of peak RSS per live "
        "secret of 100 bytes."
    )
    on_disk = segment_bytes(store) / head
    what = "bytes on disk per event (log segments)"
    if peer is not None:
        against = peer.disk_bytes() / peer.count
        report.add(
            "8",
            what,
            f"{on_disk:,.0f} B",
            f"peer (SQLite file and WAL): {against:,.0f} B",
            ratio(on_disk, against),
        )
    else:
        report.add("8", what, f"{on_disk:,.0f} B", "n/a")
    if profile:

        def open_store() -> None:
            Core.open(store, key, write=False).close()

        title = f"`Core.open` of {head:,} events, snapshot at the head"
        report.profiles.append((title, profiled(open_store)))
        with aside(store, SNAPSHOT_DIR):
            title = f"replay: `Core.open` of {head:,} events, no snapshot"
            report.profiles.append((title, profiled(open_store)))


def bench_replay(
    store: Path,
    key: bytes,
    head: int,
    body: bytes,
    sizes: Sizes,
    report: Report,
    peer: Peer | None,
) -> float:
    """Figure 3 beside the raw codec loop and the peer's read-back; returns the median time
    to open the store with the snapshots the product wrote, measured in the same rounds."""
    replays, opens_as_left, encodes, decodes = [], [], [], []
    for _ in range(sizes.slow_rounds):
        encode_rate, decode_rate = raw_codec_rates(body, sizes.codec_events)
        encodes.append(encode_rate)
        decodes.append(decode_rate)
        with aside(store, SNAPSHOT_DIR):
            seconds, core = timed_open(store, key)
            assert core.state.seq == head
            core.close()
        replays.append(head / seconds)
        seconds, core = timed_open(store, key)
        core.close()
        opens_as_left.append(seconds)
    vl, raw = median(replays), median(decodes)
    what = f"replay: `Core.open` of {head:,} events, no snapshot"
    report.add("3", what, rate(vl), f"raw decode loop: {rate(raw)}", ratio(vl, raw), Target(0.6))
    report.note(
        f"Raw codec loop on a {len(body)}-byte `secret.written` body: encode "
        f"{rate(median(encodes))}, decode {rate(raw)}."
    )
    if peer is not None:
        pages: dict[int, list[float]] = {page: [] for page in PEER_PAGES}
        for _ in range(sizes.slow_rounds):
            for page in PEER_PAGES:
                pages[page].append(peer.read_back_rate(page))
        best = max(PEER_PAGES, key=lambda page: median(pages[page]))
        against = median(pages[best])
        what = "replay vs the peer reading everything back, decoded"
        report.add(
            "3",
            what,
            rate(vl),
            f"peer, pages of {best:,}: {rate(against)}",
            ratio(vl, against),
            Target(3),
        )
        report.note(
            f"Peer read-back of {peer.count:,} events by page size: "
            + ", ".join(f"{page:,}: {rate(median(pages[page]))}" for page in PEER_PAGES)
            + "."
        )
    return median(opens_as_left)


def bench_point_in_time(store: Path, reader: Core, base: int, sizes: Sizes, report: Report) -> None:
    """Figure 5: ``handle_at`` at random seqs.

    A Core's first question about the past (the CLI's case: one ``vault read -at=`` per
    process) looks the path up in the version index and reads the records it names; without
    the index it rebuilds the state from the nearest snapshot, or with neither from the
    start. A Core asked again (a server, an inspection session) has the index loaded.
    """
    rng = random.Random(5)
    head = reader.log.head.seq

    def question() -> tuple[int, str]:
        seq = rng.randint(base + 1, head)
        return seq, f"secret/k{rng.randrange(min(seq - base, sizes.keyspace))}"

    def first_question(*moved: str) -> float:
        seq, path = question()
        with aside(store, *moved):
            fresh = Core.open(store, reader.unseal_key, write=False)
            try:
                start = time.perf_counter()
                response = fresh.handle_at(Request("read", path), seq)
                elapsed = time.perf_counter() - start
            finally:
                fresh.close()
        assert response.data == VALUE, (path, seq)
        return elapsed

    few = max(2, sizes.pit_samples // 5)
    cases = {
        "a Core's first question (version index)": [
            first_question() for _ in range(sizes.pit_samples)
        ],
        "a Core's first question, no index (the product's snapshots)": [
            first_question(INDEX_FILE, RUN_FILE) for _ in range(few)
        ],
        "a Core's first question, no index, no snapshots": [
            first_question(INDEX_FILE, RUN_FILE, SNAPSHOT_DIR) for _ in range(few)
        ],
    }
    long_lived = Core.open(store, reader.unseal_key, write=False)
    try:
        long_lived.handle_at(Request("read", "secret/k0"), head)  # loads the index
        later = []
        for _ in range(sizes.pit_samples * 10):
            seq, path = question()
            start = time.perf_counter()
            response = long_lived.handle_at(Request("read", path), seq)
            later.append(time.perf_counter() - start)
            assert response.data == VALUE, (path, seq)
        cases["a Core's later questions (index loaded)"] = later
    finally:
        long_lived.close()
    limit = 0.050
    for label, times in cases.items():
        report.add(
            "5",
            f"point-in-time read, `handle_at` a random seq: {label}",
            f"median {duration(median(times))}, p95 {duration(p95(times))}",
            "p95 against 50 ms",
            ratio(p95(times), limit),
            Target(1, at_least=False, label="p95 ≤ 50 ms"),
        )
    index_bytes = sum(
        (store / name).stat().st_size for name in (INDEX_FILE, RUN_FILE) if (store / name).exists()
    )
    report.note(
        f"Figure 5: the version index takes {index_bytes / head:.1f} bytes per event "
        f"({megabytes(index_bytes)})."
    )


def bench_cli(work: Path, sizes: Sizes, report: Report) -> None:
    """Figure 6: ``vault read`` as a whole process against a two-command Typer app."""
    what = "`vault read secret/x`, whole process"
    vault = Path(sys.executable).parent / "vault"
    if not vault.exists():
        report.add("6", what, "n/a", f"no `vault` beside {sys.executable}")
        return
    key, store = new_key(), work / "cli"
    core = Core.open(store, key, write=True)
    core.handle(Request("write", "secret/x", VALUE))
    core.close()
    floor_app = work / "typer_floor.py"
    floor_app.write_text(_TYPER_FLOOR)
    env = child_env(work, key, store)
    kind = install_kind(env, work)
    commands = ([str(vault), "read", "secret/x"], [sys.executable, str(floor_app), "hello", "x"])
    for argv in commands:  # warm the page cache, and fail early
        run_seconds(argv, env, work)
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(sizes.cli_runs):
        for argv, times in zip(commands, timings, strict=True):
            times.append(run_seconds(argv, env, work))
    vl, floor = median(timings[0]), median(timings[1])
    report.add(
        "6",
        f"{what} ({kind} install)",
        duration(vl),
        f"two-command Typer app: {duration(floor)}",
        ratio(vl, floor),
        Target(1.25, at_least=False),
    )
    if kind != "regular":
        report.note(
            "Figure 6 ran `vault` from an editable install: with PYTHONDONTWRITEBYTECODE its "
            "modules are compiled in every process. Run the harness from a regular install."
        )


# ---- profiles --------------------------------------------------------------------------


def profiled(work: Callable[[], object], top: int = 10) -> str:
    """The ``top`` functions by own time while ``work`` runs, as a markdown table."""
    profile = cProfile.Profile()
    profile.runcall(work)
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime")
    lines = ["| calls | own s | cumulative s | function |", "|---|---|---|---|"]
    entries: Any = stats.stats  # type: ignore[attr-defined]
    for func in stats.fcn_list[:top]:  # type: ignore[attr-defined]
        _, calls, own, cumulative, _ = entries[func]
        filename, line, name = func
        where = f" ({Path(filename).name}:{line})" if line else ""  # none for builtins
        lines.append(f"| {calls:,} | {own:.3f} | {cumulative:.3f} | `{name}`{where} |")
    return "\n".join(lines)


def profile_appends(work: Path, sizes: Sizes, report: Report) -> None:
    core = Core.open(work / "profiled-appends", new_key(), write=True)
    n = sizes.appends * sizes.rounds
    try:
        report.profiles.append(
            (
                f"single appends: {n:,} `Core.handle` writes",
                profiled(lambda: single_append_rate(core, 0, n)),
            )
        )
    finally:
        core.close()


# ---- BENCHMARKS.md ---------------------------------------------------------------------


def results_section(report: Report, about: list[str], mode: str, elapsed: float) -> str:
    parts = [
        "## Results",
        "",
        f"`python -m tools.bench{mode}`, {elapsed:.0f} s:",
        "",
        *about,
        "",
        render_table(report.rows),
        "",
        *(f"- {note}" for note in report.notes),
    ]
    return "\n".join(parts)


def rewrite_results(path: Path, section: str) -> None:
    """Replace what lies between the result markers of ``path`` (adding them if missing)."""
    block = f"{RESULTS_START}\n{section}\n{RESULTS_END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(RESULTS_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# ---- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Benchmark vaultlog against the disk, the codec and eventsourcing.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under two minutes")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("BENCHMARKS.md"),
        help="the file whose results section is rewritten (default: %(default)s)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the stores are made (default: the system temp directory)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print cProfile's top 10 of replay, of open and of single appends",
    )
    for size in fields(Sizes):  # hidden: the smoke test runs everything at tiny sizes
        parser.add_argument(f"--{size.name.replace('_', '-')}", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {
        f.name: getattr(args, f.name) for f in fields(Sizes) if getattr(args, f.name) is not None
    }
    return args, replace(sizes, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every figure, print the table and rewrite the results section of the output."""
    args, sizes = parse_args(argv)
    began = time.perf_counter()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vaultlog-bench-", dir=args.dir))
    report = Report()
    try:
        about = machine(work)
        peer = open_peer(work / "peer", report)
        try:
            bench_appends(work, sizes, report, peer)
            bench_store(work, sizes, report, peer, args.profile)
        finally:
            if peer is not None:
                peer.close()
        bench_cli(work, sizes, report)
        report.rows.sort(key=lambda row: FIGURE_ORDER.index(row.figure))  # stable
        if args.profile:
            profile_appends(work, sizes, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - began
    mode = " --quick" if args.quick else ""
    if sizes not in (FULL, QUICK):
        mode += " (reduced sizes)"
    section = results_section(report, about, mode, elapsed)
    print(section)
    for title, table in report.profiles:
        print(f"\n### Profile, {title}\n\n{table}")
    rewrite_results(args.output, section)
    print(f"\nResults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
