"""The benchmark harness runs end to end at tiny sizes, so it cannot rot between real runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.bench import RESULTS_END, RESULTS_START, SERVER_END, SERVER_START

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "events": 300,
    "keyspace": 200,
    "batch": 100,
    "rounds": 2,
    "appends": 10,
    "writers": 4,
    "writes-per-writer": 3,
    "peer-events": 300,
    "codec-events": 300,
    "slow-rounds": 1,
    "pit-samples": 2,
    "cli-runs": 1,
    "cpu-requests": 20,
}
SERVER_TINY = {
    "server-rounds": 1,
    "server-requests": 5,
    "server-seconds": 1,
    "appends": 10,
    "cli-runs": 1,
}


def test_bench_runs_at_tiny_sizes_and_rewrites_only_its_output(tmp_path: Path) -> None:
    repo_results = REPO / "BENCHMARKS.md"
    before = repo_results.read_bytes() if repo_results.exists() else None
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(
        f"# Benchmarks\n\nKept.\n\n{RESULTS_START}\nold\n{RESULTS_END}\n\nAlso kept.\n"
    )
    sizes = [arg for name, value in TINY.items() for arg in (f"--{name}", str(value))]
    where = ["--output", str(output), "--dir", str(tmp_path)]

    run = subprocess.run(
        [sys.executable, "-m", "tools.bench", *where, *sizes],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr
    assert "| # | measurement | vaultlog |" in run.stdout
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nKept.\n\n")
    assert text.endswith(f"{RESULTS_END}\n\nAlso kept.\n")
    assert "\nold\n" not in text
    for figure in ("0", "1", "2", "3", "v", "4", "5", "6", "7", "8"):
        assert f"| {figure} |" in text
    assert "- CPU: " in text and "cores" in text and "- Python " in text and "- Date: " in text
    assert "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == [output]  # its stores are cleaned up
    if before is not None:
        assert repo_results.read_bytes() == before


def test_server_bench_runs_at_tiny_sizes_beside_the_other_results(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    kept = f"# Benchmarks\n\n{RESULTS_START}\nkept\n{RESULTS_END}\n"
    output.write_text(kept)
    sizes = [arg for name, value in SERVER_TINY.items() for arg in (f"--{name}", str(value))]
    where = ["--output", str(output), "--dir", str(tmp_path)]

    run = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--server", *where, *sizes],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert run.returncode == 0, run.stderr
    text = output.read_text()
    assert text.startswith(kept)  # the other figures' block is left alone
    assert SERVER_START in text and text.endswith(f"{SERVER_END}\n")
    for row in ("| 9 | writes over HTTP", "| 9 | reads over HTTP", "| 10 | `vault read"):
        assert row in text
    assert "OpenBao: " in text and "raw fsync: " in text and "n/a" not in text
    assert "Traceback" not in run.stderr and "Root Token" not in run.stdout + run.stderr
    assert list(tmp_path.iterdir()) == [output]  # its servers' directories are cleaned up


def test_the_growth_bench_measures_and_plots_at_tiny_sizes(tmp_path: Path) -> None:
    """``tools.bench.growth`` end to end at two tiny sizes, the peer beside it: the table
    in the output file, one PNG per figure."""
    output = tmp_path / "BENCHMARKS.md"
    where = ["--output", str(output), "--plots", str(tmp_path / "plots"), "--dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "tools.bench.growth", "--sizes", "300,1000", *where],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = output.read_text()
    assert "| 300 |" in text and "| 1,000 |" in text and "eventsourcing" in text
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == [
        "growth-disk.png",
        "growth-open.png",
        "growth-read-p95.png",
        "growth-verify.png",
    ]
    assert all((tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG") for name in pngs)
