"""The harness: sizes, results, statistics, the table, the machine, BENCHMARKS.md, the CLI.

It knows nothing of what is measured: ``run`` parses the command line, makes a work
directory, hands it to the figures (``tools.bench.cases.figures``) with a ``Report`` to
fill, then prints the table and rewrites the results section of the output file.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import backends

RESULTS_START = "<!-- bench:results:start -->"
RESULTS_END = "<!-- bench:results:end -->"
SERVER_START = "<!-- bench:server:start -->"  # the block ``--server`` rewrites
SERVER_END = "<!-- bench:server:end -->"
VALUE = {"value": "x" * 100}  # the secret every figure writes: 100 bytes
# "+": batched appends; "v": verify
FIGURE_ORDER = ("0", "1", "2", "+", "3", "v", "4", "5", "6", "7", "8", "9", "10")


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
    cpu_requests: int = 20_000  # writes, then reads, per round of the CPU figure
    server_rounds: int = 3  # alternating rounds of the HTTP figures (``--server``)
    server_requests: int = 20_000  # per client per measurement: the count bound
    server_seconds: int = 3  # per measurement: the time bound


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
    cpu_requests=5_000,
    server_seconds=2,
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


# ---- statistics and units --------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: ``fraction`` 0.95 is the 95th."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def p95(values: Sequence[float]) -> float:
    return percentile(values, 0.95)


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


# ---- the machine -----------------------------------------------------------------------


def source_root() -> Path:
    """Where the measured vaultlog packages are imported from."""
    return Path(backends.__file__).resolve().parent.parent


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
    source = source_root()
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
                "tools/transport.py",  # how the CLI opens a store (was in the Core)
                "tools/api.py",  # the HTTP front door the server figures measure
                "tools/server.py",
                "tools/server_config.py",
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


def machine(directory: Path, peer: str) -> list[str]:
    """What a reader needs to compare a result with theirs (``peer``: its name, version)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        f"- Date: {now}",
        f"- vaultlog: {vaultlog_revision()}; peer: {peer}",
        f"- Stores in {directory} ({filesystem(directory)})",
    ]


# ---- BENCHMARKS.md ---------------------------------------------------------------------


def results_section(
    report: Report, about: list[str], mode: str, elapsed: float, title: str = "Results"
) -> str:
    parts = [
        f"## {title}",
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


def rewrite_results(
    path: Path, section: str, markers: tuple[str, str] = (RESULTS_START, RESULTS_END)
) -> None:
    """Replace what lies between the ``markers`` of ``path`` (adding them if missing)."""
    opening, closing = markers
    block = f"{opening}\n{section}\n{closing}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(opening), text.find(closing)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(closing) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# ---- the command line ------------------------------------------------------------------

# What runs the figures: (work directory, sizes, the report to fill, --profile).
Figures = Callable[[Path, Sizes, Report, bool], None]


@dataclass(frozen=True)
class Section:
    """Figures the command line runs on request (``--server``) instead of the default ones,
    with the peer they are measured against and the block of the output file they own."""

    figures: Figures
    peer: Callable[[], str]  # its name and version, for the machine lines; may start it
    markers: tuple[str, str] = (SERVER_START, SERVER_END)
    title: str = "Server results"


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
    parser.add_argument(
        "--server",
        action="store_true",
        help="only the HTTP figures: `vault server` against OpenBao's `bao server`",
    )
    for size in fields(Sizes):  # hidden: the smoke test runs everything at tiny sizes
        parser.add_argument(f"--{size.name.replace('_', '-')}", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {
        f.name: getattr(args, f.name) for f in fields(Sizes) if getattr(args, f.name) is not None
    }
    return args, replace(sizes, **overrides)


def run(
    argv: Sequence[str] | None, figures: Figures, peer: str, server: Section | None = None
) -> int:
    """The CLI: run ``figures``, print the table and rewrite the output's results section.

    ``peer`` names the peer (and its version) for the machine lines. With ``--server``,
    ``server``'s figures run instead and rewrite its block of the output.
    """
    args, sizes = parse_args(argv)
    markers, title = (RESULTS_START, RESULTS_END), "Results"
    if args.server:
        if server is None:
            raise SystemExit("--server: no server figures in this harness")
        figures, peer, markers, title = server.figures, server.peer(), server.markers, server.title
    began = time.perf_counter()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vaultlog-bench-", dir=args.dir))
    report = Report()
    try:
        about = machine(work, peer)
        figures(work, sizes, report, args.profile)
        report.rows.sort(key=lambda row: FIGURE_ORDER.index(row.figure))  # stable
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - began
    mode = (" --quick" if args.quick else "") + (" --server" if args.server else "")
    if sizes not in (FULL, QUICK):
        mode += " (reduced sizes)"
    section = results_section(report, about, mode, elapsed, title)
    print(section)
    for title, table in report.profiles:
        print(f"\n### Profile, {title}\n\n{table}")
    rewrite_results(args.output, section, markers)
    print(f"\nResults written to {args.output}")
    return 0
