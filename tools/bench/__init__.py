"""Benchmarks against the machine's limits and a peer: ``python -m tools.bench [--quick]``.

Every vaultlog figure is measured in the same run as what it is compared with: the raw
cost of the disk (100-byte appends, each fsynced), the raw cost of the codec (msgpack and
AES-256-GCM on events of the same size), and a peer, the ``eventsourcing`` library on a
SQLite file with its AES cipher, doing the same work. Contenders run in alternating rounds
so a noisy machine slows them alike; the table gives medians and their ratios, with a
PASS/MISS per target, and the results section of BENCHMARKS.md is rewritten with it.

Run it from a regular (non-editable) install: with PYTHONDONTWRITEBYTECODE set, an editable
install compiles vaultlog's modules in every ``vault`` process it times.

``python -m tools.bench --server`` runs the HTTP figures instead: ``vault server`` beside
OpenBao's ``bao server`` on the same disk, driven by client processes, and ``vault read``
over HTTP as a whole process; they rewrite a results block of their own.

``harness``: sizes, the report, statistics, the table, the machine, BENCHMARKS.md and the
command line; ``peers``: raw fsync, the raw codec loop and eventsourcing on SQLite;
``stores``: making and opening vaultlog stores through the public API; ``processes``: the
environment and timing of whole ``vault`` processes; ``cases``: the figures, and ``main``;
``server``: the server figures.
"""

from tools.bench.cases import main, run_figures
from tools.bench.harness import (
    FULL,
    QUICK,
    RESULTS_END,
    RESULTS_START,
    SERVER_END,
    SERVER_START,
    VALUE,
    Report,
    Row,
    Section,
    Sizes,
    Target,
    render_table,
    rewrite_results,
    run,
)
from tools.bench.peers import Peer, open_peer, peer_version, raw_codec_rates, raw_fsync_rate
from tools.bench.server import SERVER, run_server_figures
from tools.bench.stores import aside, build_log, open_reader, open_writer, put_batch

__all__ = [
    "FULL",
    "QUICK",
    "RESULTS_END",
    "RESULTS_START",
    "SERVER",
    "SERVER_END",
    "SERVER_START",
    "VALUE",
    "Peer",
    "Report",
    "Row",
    "Section",
    "Sizes",
    "Target",
    "aside",
    "build_log",
    "main",
    "open_peer",
    "open_reader",
    "open_writer",
    "peer_version",
    "put_batch",
    "raw_codec_rates",
    "raw_fsync_rate",
    "render_table",
    "rewrite_results",
    "run",
    "run_figures",
    "run_server_figures",
]
