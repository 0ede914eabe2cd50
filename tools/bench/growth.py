"""How cost grows with history: ``python -m tools.bench.growth [--full] [--sizes N,N]``.

Builds stores of 10⁴, 10⁵ and 10⁶ events (10⁷ too with ``--full``: several minutes), each
a history of secret writes over a tenth as many paths, and measures, on each: open time
(with the snapshot a writer leaves, and with none: a whole replay), the p95 of a
point-in-time read at a random seq, ``audit verify`` time, and bytes on disk; beside the
``eventsourcing`` peer where it has the same figure (reading its whole history back, its
bytes on disk). It plots each figure against history size, with matplotlib (a bench
dependency), into ``bench-plots/*.png``, and rewrites the growth block of BENCHMARKS.md
with the table and the plots.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backends import Request
from eventstore import new_key
from projections.snapshot import SNAPSHOT_DIR
from projections.versions import INDEX_FILE
from tools.bench.harness import (
    Sizes,
    cpu_model,
    duration,
    megabytes,
    p95,
    rewrite_results,
    source_root,
    vaultlog_revision,
)
from tools.bench.peers import Peer, peer_version
from tools.bench.stores import aside, build_log, open_reader, open_writer, segment_bytes

MARKERS = ("<!-- bench:growth:start -->", "<!-- bench:growth:end -->")
SIZES = (10_000, 100_000, 1_000_000)
FULL = (*SIZES, 10_000_000)
PEER_AT_MOST = 1_000_000  # the peer's history is built one save of 1,000 at a time
READS = 200  # point-in-time reads per store


@dataclass
class Point:
    events: int
    open_snapshot: float = 0.0
    open_replay: float = 0.0
    read_p95: float = 0.0
    verify: float = 0.0
    disk: int = 0
    peer_read_back: float | None = None
    peer_disk: int | None = None
    build_rate: float = 0.0


@dataclass
class Growth:
    points: list[Point] = field(default_factory=list)


def measure(work: Path, events: int) -> Point:
    """One store of ``events`` writes: every figure of it, then the store is removed."""
    key, directory = new_key(), work / f"store-{events}"
    keyspace = max(events // 10, 1)
    sizes = Sizes(events=events, keyspace=keyspace, batch=1_000)
    started = time.perf_counter()
    _, base, _ = build_log(directory, key, sizes, lambda: None)
    point = Point(events, build_rate=events / (time.perf_counter() - started))
    core = open_writer(directory, key)  # as a writer leaves it: a snapshot at its head
    core.store.snapshot()
    core.store.close()

    start = time.perf_counter()
    reader = open_reader(directory, key)
    point.open_snapshot = time.perf_counter() - start
    rng = random.Random(events)
    head = reader.store.head.seq
    timings = []
    for _ in range(READS):
        seq, path = rng.randint(base + 1, head), f"secret/k{rng.randrange(keyspace)}"
        start = time.perf_counter()
        reader.handle(Request("read", path, at=str(seq)))
        timings.append(time.perf_counter() - start)
    point.read_p95 = p95(timings)
    start = time.perf_counter()
    assert reader.store.verify().ok
    point.verify = time.perf_counter() - start
    reader.store.close()
    point.disk = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    assert segment_bytes(directory) <= point.disk

    with aside(directory, SNAPSHOT_DIR, INDEX_FILE):
        start = time.perf_counter()
        open_reader(directory, key).store.close()
        point.open_replay = time.perf_counter() - start
    shutil.rmtree(directory)

    return point


def measure_peer(peer: Peer, point: Point) -> None:
    """The peer's history grown to ``point.events`` (one save of 1,000 at a time), read
    back whole. One peer serves every size: its event classes register once a process."""
    if point.events > PEER_AT_MOST:
        return
    while peer.count < point.events:
        peer.batch_rate(min(1_000, point.events - peer.count))
    point.peer_read_back = peer.count / peer.read_back_rate(1_000)
    point.peer_disk = peer.disk_bytes()


def table(points: Sequence[Point]) -> str:
    rows = [
        "| events | open (snapshot) | open (replay) | peer read-back | point-in-time read p95 "
        "| verify | on disk | peer on disk | build |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        peer_read = duration(p.peer_read_back) if p.peer_read_back is not None else "—"
        peer_disk = megabytes(p.peer_disk) if p.peer_disk is not None else "—"
        rows.append(
            f"| {p.events:,} | {duration(p.open_snapshot)} | {duration(p.open_replay)} "
            f"| {peer_read} | {duration(p.read_p95)} | {duration(p.verify)} "
            f"| {megabytes(p.disk)} | {peer_disk} | {p.build_rate:,.0f}/s |"
        )
    return "\n".join(rows)


def plot(points: Sequence[Point], folder: Path) -> list[str]:
    """One PNG per figure against history size (log-log); their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    sizes = [p.events for p in points]
    peer = [p for p in points if p.peer_read_back is not None]
    figures = {
        "growth-open.png": (
            "Open time",
            "seconds",
            [
                ("vaultlog, snapshot at head", [p.open_snapshot for p in points], sizes),
                ("vaultlog, whole replay", [p.open_replay for p in points], sizes),
                (
                    "eventsourcing, whole read-back",
                    [p.peer_read_back or 0.0 for p in peer],
                    [p.events for p in peer],
                ),
            ],
        ),
        "growth-read-p95.png": (
            "Point-in-time read, p95",
            "seconds",
            [("vaultlog, read -at=SEQ", [p.read_p95 for p in points], sizes)],
        ),
        "growth-verify.png": (
            "audit verify",
            "seconds",
            [("vaultlog, every record and the chain", [p.verify for p in points], sizes)],
        ),
        "growth-disk.png": (
            "Bytes on disk",
            "bytes",
            [
                ("vaultlog (log, snapshots, index)", [float(p.disk) for p in points], sizes),
                (
                    "eventsourcing (SQLite)",
                    [float(p.peer_disk or 0) for p in peer],
                    [p.events for p in peer],
                ),
            ],
        ),
    }
    names = []
    for name, (title, unit, series) in figures.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for label, values, xs in series:
            if values:
                ax.plot(xs, values, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events in the history")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        names.append(name)
    return names


def section(points: Sequence[Point], images: Sequence[str], mode: str, elapsed: float) -> str:
    lines = [
        "## How cost grows",
        "",
        f"`python -m tools.bench.growth{mode}`, {elapsed:.0f} s, on {cpu_model()}, "
        f"vaultlog {vaultlog_revision()}, peer {peer_version()}:",
        "",
        table(points),
        "",
        *(f"![{name}](bench-plots/{name})" for name in images),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.growth")
    parser.add_argument("--full", action="store_true", help="up to 10^7 events")
    parser.add_argument("--sizes", help="comma-separated history sizes instead")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--output", type=Path, default=source_root() / "BENCHMARKS.md")
    parser.add_argument("--plots", type=Path, default=source_root() / "bench-plots")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores are made")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else FULL if args.full else SIZES
    work = Path(tempfile.mkdtemp(prefix="vaultlog-growth-", dir=args.dir))
    started = time.perf_counter()
    points = []
    peer = None if args.no_peer else Peer(work / "peer")
    try:
        for events in sorted(sizes):
            point = measure(work, events)
            if peer is not None:
                measure_peer(peer, point)
            print(
                f"{events:>12,} events: open {duration(point.open_snapshot)}, replay "
                f"{duration(point.open_replay)}, read p95 {duration(point.read_p95)}, "
                f"verify {duration(point.verify)}, {megabytes(point.disk)}",
                flush=True,
            )
            points.append(point)
    finally:
        if peer is not None:
            peer.close()
        shutil.rmtree(work, ignore_errors=True)
    images = plot(points, args.plots)
    mode = " --full" if args.full else f" --sizes {args.sizes}" if args.sizes else ""
    text = section(points, images, mode, time.perf_counter() - started)
    rewrite_results(args.output, text, MARKERS)
    print(text)


if __name__ == "__main__":
    main()
