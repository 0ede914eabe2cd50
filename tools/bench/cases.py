"""The figures: vaultlog measured beside its baselines, each a few rows of the report.

1. durable appends; 2. concurrent writers; +. batched appends; 3. replay; 4. open with a
snapshot; 5. point-in-time reads; 6. ``vault read`` start-up; 7. peak RSS; 8. bytes on
disk per event. ``run_figures`` runs them all; ``main`` is ``python -m tools.bench``.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from backends import Core, Registry, Request
from eventstore import new_key
from projections import Store
from projections.events import SecretWritten, encode
from projections.snapshot import SNAPSHOT_DIR, snapshot_seqs
from projections.sortedrun import RUN_FILE
from projections.versions import INDEX_FILE
from tools.bench.harness import (
    VALUE,
    Report,
    Sizes,
    Target,
    duration,
    median,
    megabytes,
    p95,
    profiled,
    rate,
    ratio,
    run,
    source_root,
)
from tools.bench.peers import (
    PEER_PAGES,
    Peer,
    open_peer,
    peer_version,
    raw_codec_rates,
    raw_fsync_rate,
)
from tools.bench.processes import child_env, install_kind, run_seconds
from tools.bench.server import SERVER
from tools.bench.stores import (
    aside,
    build_log,
    first_secret_written,
    open_reader,
    open_writer,
    segment_bytes,
    snapshot_at_head,
    snapshot_bytes,
    timed_open,
)

# ---- appends ---------------------------------------------------------------------------


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


def cpu_per_request(core: Core, first: int, n: int) -> tuple[float, float]:
    """CPU seconds per write and per audited read through ``Core.handle``, ``n`` of each."""
    start = time.process_time()
    for i in range(first, first + n):
        core.handle(write_request(i))
    written = time.process_time()
    for i in range(first, first + n):
        core.handle(Request("read", f"secret/k{i}"))
    return (written - start) / n, (time.process_time() - written) / n


def bench_cpu(sizes: Sizes, report: Report) -> None:
    """Figure 0: the CPU a request costs, in process, on a store in memory: no disk, so no
    fsync (figure 1 has it); the raw codec loop of the same run beside it."""
    core = Core(Store.in_memory(), Registry())
    n = sizes.cpu_requests
    writes, reads, encodes = [], [], []
    cpu_per_request(core, 10 * n * sizes.rounds, n)  # warm: caches, the mount's keys
    body = next(encode(e) for e in core.store.events() if isinstance(e, SecretWritten))
    for r in range(sizes.rounds):
        write, read = cpu_per_request(core, r * n, n)
        writes.append(write)
        reads.append(read)
        encodes.append(1 / raw_codec_rates(body, n)[0])
    raw = f"raw AES-GCM+msgpack encode: {duration(median(encodes))}"
    for what, values, goal in (("write", writes, 25e-6), ("audited read", reads, 20e-6)):
        vl = median(values)
        report.add(
            "0",
            f"CPU per {what}, `Core.handle` on a store in memory (no fsync)",
            duration(vl),
            raw,
            ratio(vl, goal),
            Target(1, at_least=False, label=f"≤ {duration(goal)}"),
        )


def bench_appends(work: Path, sizes: Sizes, report: Report, peer: Peer | None) -> None:
    """Figure 1, then figure 2 (which is compared with figure 1's single writer)."""
    key = new_key()
    store = work / "appends"
    core = open_writer(store, key)
    raw, single, peer_single = [], [], []
    try:
        for r in range(sizes.rounds):
            raw.append(raw_fsync_rate(store, sizes.appends))
            single.append(single_append_rate(core, r * sizes.appends, sizes.appends))
            if peer is not None:
                peer_single.append(peer.single_rate(sizes.appends))
    finally:
        core.store.close()
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
    goal = 30_000
    guard = False
    key, store = new_key(), work / "writers"
    core = open_writer(store, key)
    first = 0
    try:
        try:  # a trial round: does Core.handle survive the threads, losing nothing?
            base = core.store.state.seq
            concurrent_rate(core, first, sizes.writers, sizes.writes_per_writer, guard=False)
            first += sizes.writers * sizes.writes_per_writer
            reader = Store.open(store, key, write=False)
            try:
                found = len(reader.state.data[core.store.state.mounts.by_path["secret/"]])
            finally:
                reader.close()
            if core.store.state.seq != base + first or found != first:
                raise RuntimeError(f"{found} of {first} writes found")
        except Exception as exc:
            guard = True
            report.note(
                f"Figure 2: Core.handle broke under {sizes.writers} threads ({exc!r}); "
                "measured behind a lock of the harness's instead."
            )
            with suppress(Exception):
                core.store.close()
            key, store, first = new_key(), work / "writers-guarded", 0
            core = open_writer(store, key)
        rates = []
        for _ in range(sizes.rounds):
            per_writer = sizes.writes_per_writer
            rates.append(concurrent_rate(core, first, sizes.writers, per_writer, guard))
            first += sizes.writers * per_writer
    finally:
        core.store.close()
    vl = median(rates)
    how = "behind a harness lock" if guard else "no lock of ours"
    what = f"appends with {sizes.writers} threads in `Core.handle` ({how})"
    target = Target(1, label=f"≥ {rate(goal)}")
    report.add("2", what, rate(vl), f"goal: {rate(goal)}", ratio(vl, goal), target)
    report.note(
        f"Figure 2: {sizes.writers} writers give {vl / single:.2f}x the single-writer rate "
        "of figure 1."
    )


# ---- one large store: figures +, 3, 4, 5, 7 and 8 ----------------------------------------


def bench_store(work: Path, sizes: Sizes, report: Report, peer: Peer | None, profile: bool) -> None:
    """Figures 3, 4, 5, 7 and 8, and batched appends, on one store of ``sizes.events``."""
    key, store = new_key(), work / "store" / "data"
    peer_batches: list[float] = []

    def peer_batch() -> None:  # alternates with vaultlog's batches
        if peer is not None and peer.count < sizes.peer_events:
            peer_batches.append(peer.batch_rate(min(sizes.batch, sizes.peer_events - peer.count)))

    batches, base, snapshot_every = build_log(store, key, sizes, peer_batch)
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
    reader = open_reader(store, key)
    head = reader.store.head.seq
    live = sum(map(len, reader.store.state.data.values()))
    last = product_snapshots[-1] if product_snapshots else 0
    report.note(
        f"Store: {head:,} events ({sizes.events:,} writes over {sizes.keyspace:,} paths, "
        f"{live:,} live secrets). Snapshots the product wrote (VAULTLOG_SNAPSHOT_EVERY="
        f"{snapshot_every}): at seqs "
        f"{', '.join(f'{s:,}' for s in product_snapshots) or 'none'}, "
        f"{head - last:,} events before the head; "
        f"{snapshot_bytes(store) / head:,.1f} bytes per event on disk."
    )
    report.note(
        "Figures 3 and 4 time an open as `Store.open(dir, key, write=False)`, "
        "`Core(store, Registry())` and the first `store.state` (a reader replays on first use)."
    )
    bench_point_in_time(store, key, base, head, sizes, report)
    body = first_secret_written(store, key)
    opened_as_left, raw_decode = bench_replay(store, key, head, body, sizes, report, peer)
    bench_verify(store, key, head, raw_decode, sizes, report)

    # Figure 4: open with a snapshot at the head, against open of an empty store.
    try:
        snapshot_at_head(reader.store)
    finally:
        reader.store.close()
    empty = work / "empty"
    open_writer(empty, key).store.close()
    with_snapshot: list[float] = []
    empty_opens: list[float] = []
    then_read: list[float] = []  # open, then a first read in the mount holding everything
    for _ in range(max(sizes.slow_rounds, 5)):
        for directory, times in ((store, with_snapshot), (empty, empty_opens)):
            seconds, core = timed_open(directory, key)
            try:
                if directory == store:
                    start = time.perf_counter()
                    assert core.handle(Request("read", "secret/k0")).data == VALUE
                    then_read.append(seconds + time.perf_counter() - start)
            finally:
                core.store.close()
            times.append(seconds)
    opened, floor = median(with_snapshot), median(empty_opens)
    what = f"`Store.open` of {head:,} events, snapshot at the head"
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
        f"`Store.open` as above, then a first read in `secret/` (loads its {live:,} values)",
        duration(median(then_read)),
        f"open of an empty store: {duration(floor)}",
        ratio(median(then_read), floor),
    )
    report.add(
        "4",
        "`Store.open` with the snapshots the product wrote (see the note on the store)",
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
    per_secret = (rss - rss_empty) / max(live_seen, 1)
    report.add(
        "7",
        "peak RSS per live secret of 100 bytes (the row above, less the empty store's)",
        f"{per_secret:,.0f} B",
        "goal: 300 B",
        ratio(per_secret, 300),
        Target(1, at_least=False, label="≤ 300 B"),
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
            open_reader(store, key).store.close()

        title = f"`Store.open` of {head:,} events, snapshot at the head"
        report.profiles.append((title, profiled(open_store)))
        with aside(store, SNAPSHOT_DIR):
            title = f"replay: `Store.open` of {head:,} events, no snapshot"
            report.profiles.append((title, profiled(open_store)))


def bench_replay(
    store: Path,
    key: bytes,
    head: int,
    body: bytes,
    sizes: Sizes,
    report: Report,
    peer: Peer | None,
) -> tuple[float, float]:
    """Figure 3 beside the raw codec loop and the peer's read-back; returns the median time
    to open the store with the snapshots the product wrote, measured in the same rounds,
    and the raw decode loop's rate."""
    replays, opens_as_left, encodes, decodes = [], [], [], []
    for _ in range(sizes.slow_rounds):
        encode_rate, decode_rate = raw_codec_rates(body, sizes.codec_events)
        encodes.append(encode_rate)
        decodes.append(decode_rate)
        with aside(store, SNAPSHOT_DIR):
            seconds, core = timed_open(store, key)
            try:
                assert core.store.state.seq == head
            finally:
                core.store.close()
        replays.append(head / seconds)
        seconds, core = timed_open(store, key)
        core.store.close()
        opens_as_left.append(seconds)
    vl, raw = median(replays), median(decodes)
    what = f"replay: `Store.open` of {head:,} events, no snapshot"
    report.add("3", what, rate(vl), f"raw decode loop: {rate(raw)}", ratio(vl, raw), Target(0.5))
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
    return median(opens_as_left), raw


def bench_verify(
    store: Path, key: bytes, head: int, raw_decode: float, sizes: Sizes, report: Report
) -> None:
    """Figure v: ``Store.verify`` (``vault audit verify``) of the whole store, its
    snapshots and version index included, beside the raw decode loop on one core."""
    rates = []
    for _ in range(sizes.slow_rounds):
        reader = Store.open(store, key, write=False)
        try:
            start = time.perf_counter()
            verified = reader.verify()
            rates.append(head / (time.perf_counter() - start))
        finally:
            reader.close()
        assert verified.ok, verified.problem
    vl = median(rates)
    report.add(
        "v",
        f"`vault audit verify` of {head:,} events (`Store.verify`), {os.cpu_count()} cores",
        rate(vl),
        f"raw decode loop, one core: {rate(raw_decode)}",
        ratio(vl, raw_decode),
        Target(1.5),
    )


def bench_point_in_time(
    store: Path, key: bytes, base: int, head: int, sizes: Sizes, report: Report
) -> None:
    """Figure 5: reads of the past, ``Request("read", path, at=str(seq))``, at random seqs.

    A Core's first question about the past (the CLI's case: one ``vault read -at=`` per
    process) looks the path up in the version index and reads the records it names; without
    the index it rebuilds the state from the nearest snapshot, or with neither from the
    start. A Core asked again (a server, an inspection session) has the index loaded. The
    fresh Core is opened (its present state built) before its question is timed.
    """
    rng = random.Random(5)

    def question() -> Request:
        seq = rng.randint(base + 1, head)
        path = f"secret/k{rng.randrange(min(seq - base, sizes.keyspace))}"
        return Request("read", path, at=str(seq))

    def asked(core: Core, request: Request) -> float:
        start = time.perf_counter()
        response = core.handle(request)
        elapsed = time.perf_counter() - start
        assert response.data == VALUE, (request.path, request.at)
        return elapsed

    def first_question(*moved: str) -> float:
        request = question()
        with aside(store, *moved):
            fresh = open_reader(store, key)
            try:
                return asked(fresh, request)
            finally:
                fresh.store.close()

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
    long_lived = open_reader(store, key)
    try:
        # Loads the index: a question of the past (one at the head reads the present).
        long_lived.handle(Request("read", "secret/k0", at=str(base + 1)))
        cases["a Core's later questions (index loaded)"] = [
            asked(long_lived, question()) for _ in range(sizes.pit_samples * 10)
        ]
    finally:
        long_lived.store.close()
    limit = 0.050
    for label, times in cases.items():
        report.add(
            "5",
            f"point-in-time read at a random seq (`Request.at`): {label}",
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


# ---- whole processes: figures 6 and 7 --------------------------------------------------

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
from backends import Core, Registry
from eventstore import decode_unseal_key
from projections import Store
from projections.events import SecretWritten, encode
store = Store.open(Path(sys.argv[1]), decode_unseal_key(os.environ["VAULTLOG_UNSEAL_KEY"]),
                   write=False)
core = Core(store, Registry())
live = sum(map(len, store.state.data.values()))
try:  # Linux keeps ru_maxrss across exec, so it would count the forked harness too
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak *= 1 if sys.platform == "darwin" else 1024
print(peak, live)
"""


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


def bench_cli(work: Path, sizes: Sizes, report: Report) -> None:
    """Figure 6: ``vault read`` as a whole process against a two-command Typer app."""
    what = "`vault read secret/x`, whole process"
    vault = Path(sys.executable).parent / "vault"
    if not vault.exists():
        report.add("6", what, "n/a", f"no `vault` beside {sys.executable}")
        return
    key, store = new_key(), work / "cli"
    core = open_writer(store, key)
    try:
        core.handle(Request("write", "secret/x", VALUE))
    finally:
        core.store.close()
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
        Target(1.1, at_least=False),
    )
    if kind != "regular":
        report.note(
            "Figure 6 ran `vault` from an editable install: with PYTHONDONTWRITEBYTECODE its "
            "modules are compiled in every process. Run the harness from a regular install."
        )


# ---- profiles and the whole run --------------------------------------------------------


def profile_appends(work: Path, sizes: Sizes, report: Report) -> None:
    core = open_writer(work / "profiled-appends", new_key())
    n = sizes.appends * sizes.rounds
    try:
        report.profiles.append(
            (
                f"single appends: {n:,} `Core.handle` writes",
                profiled(lambda: single_append_rate(core, 0, n)),
            )
        )
    finally:
        core.store.close()


def run_figures(work: Path, sizes: Sizes, report: Report, profile: bool) -> None:
    """Every figure, in ``work``; with ``profile``, cProfile tables too."""
    peer = open_peer(work / "peer", report)
    bench_cpu(sizes, report)
    try:
        bench_appends(work, sizes, report, peer)
        bench_store(work, sizes, report, peer, profile)
    finally:
        if peer is not None:
            peer.close()
    bench_cli(work, sizes, report)
    if profile:
        profile_appends(work, sizes, report)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.bench``: every figure, the table, and BENCHMARKS.md rewritten;
    with ``--server``, the server figures (``tools.bench.server``) instead."""
    return run(argv, run_figures, f"{peer_version()}, SQLite {sqlite3.sqlite_version}", SERVER)
