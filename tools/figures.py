"""The figures the issues ask for beyond the benchmark table.

``python -m tools.figures`` (from a regular install; with moto installed for the aws part)
prints: `vault read` against `python -c "import typer"`; `vault audit` and `vault audit
verify` over 100,000 events; point-in-time reads with and without snapshots; aws issue and
revoke against moto's IAM on 127.0.0.1, and `vault mounts` with and without boto3 imported.
Medians; the machine is noisy, so compare ratios.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

from backends import Request
from eventstore import encode_unseal_key, new_key
from projections.snapshot import SNAPSHOT_DIR
from projections.sortedrun import RUN_FILE
from projections.versions import INDEX_FILE
from tools.bench import aside, open_reader, open_writer, put_batch

VAULT = Path(sys.executable).parent / "vault"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}


def seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def process(args: list[str | Path], env: dict[str, str]) -> str:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout


def process_median(args: list[str | Path], env: dict[str, str], rounds: int) -> float:
    return median(seconds(lambda: process(args, env)) for _ in range(rounds))


def cli_startup(home: Path, env: dict[str, str]) -> None:
    process([VAULT, "write", "secret/hello", "value=world"], env)
    read = process_median([VAULT, "read", "secret/hello"], env, 21)
    typer = process_median([sys.executable, "-c", "import typer"], env, 21)
    print(
        f"vault read secret/hello: {read * 1000:.0f} ms; python -c 'import typer': "
        f"{typer * 1000:.0f} ms ({read / typer:.2f}x)"
    )


def history(home: Path, key: bytes, env: dict[str, str], events: int = 100_000) -> None:
    """audit, verify and -at over a store of updates to 5,000 paths."""
    store = home / "history"
    core = open_writer(store, key)
    try:
        secret = core.store.state.mounts.at("secret/")
        assert secret is not None
        request = Request("write", "secret/x", actor="figures@host")
        for first in range(0, events - 2, 1000):  # one commit per 1,000 writes
            writes = (
                (f"k{i % 5000}", {"value": f"v{i}"})
                for i in range(first, min(first + 1000, events - 2))
            )
            put_batch(core.store, secret, writes, request)
        core.store.flush()
        head = core.store.head.seq
    finally:
        core.store.close()
    env = dict(env, VAULTLOG_DIR=str(store))
    audit = seconds(lambda: process([VAULT, "audit", "-format=json"], env))
    verify = seconds(lambda: process([VAULT, "audit", "verify"], env))
    print(f"{head:,} events: vault audit -format=json {audit:.1f} s; audit verify {verify:.1f} s")
    history = process_median([VAULT, "history", "secret/k1"], env, 5)
    print(f"vault history secret/k1 ({(events - 2) // 5000} versions): {history * 1000:.0f} ms")

    rng = random.Random(1)

    def first_question() -> float:
        reader = open_reader(store, key)
        try:
            path = f"secret/k{rng.randrange(5000)}"
            request = Request("read", path, at=str(rng.randint(3, head)))
            return seconds(lambda: reader.handle(request))
        finally:
            reader.store.close()

    def without(*names: str) -> float:
        """The median first question with ``names`` (derived files) moved aside."""
        with aside(store, *names):
            return median(first_question() for _ in range(5))

    indexed = median(first_question() for _ in range(15))
    no_index = without(INDEX_FILE, RUN_FILE)
    neither = without(INDEX_FILE, RUN_FILE, SNAPSHOT_DIR)
    print(
        f"-at read, a Core's first question: {indexed * 1000:.1f} ms with the version index, "
        f"{no_index * 1000:.0f} ms without it ({len(os.listdir(store / SNAPSHOT_DIR))} "
        f"snapshots), {neither * 1000:.0f} ms with neither"
    )
    reader = open_reader(store, key)
    try:
        reader.handle(Request("read", "secret/k1", at="10"))  # loads the index
        later = median(
            seconds(
                lambda: reader.handle(Request("read", "secret/k2", at=str(rng.randint(3, head))))
            )
            for _ in range(200)
        )
    finally:
        reader.store.close()
    print(f"-at read, a Core's later questions: {later * 1000:.1f} ms")


def aws(home: Path, key: bytes, env: dict[str, str]) -> None:
    """Issue and revoke against moto's IAM in server mode on a loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        store = home / "aws"
        core = open_writer(store, key)
        core.handle(Request("write", "sys/mounts/aws", {"type": "aws"}))
        root = {"access_key": "a", "secret_key": "b", "endpoint": f"http://127.0.0.1:{port}"}
        core.handle(Request("write", "aws/config/root", root))
        core.handle(Request("write", "aws/roles/r", {"policy": json.dumps(POLICY)}))
        issued, revoked = [], []
        for _ in range(15):
            start = time.perf_counter()
            lease = core.handle(Request("read", "aws/creds/r")).lease_id
            issued.append(time.perf_counter() - start)
            start = time.perf_counter()
            core.handle(Request("write", f"sys/revoke/{lease}"))
            revoked.append(time.perf_counter() - start)
        core.store.close()
        print(
            f"aws in-process: issue {median(issued) * 1000:.0f} ms, "
            f"revoke {median(revoked) * 1000:.0f} ms"
        )
        env = dict(env, VAULTLOG_DIR=str(store))
        cli_issued, cli_revoked = [], []
        for _ in range(7):
            start = time.perf_counter()
            out = process([VAULT, "read", "-format=json", "aws/creds/r"], env)
            cli_issued.append(time.perf_counter() - start)
            lease = json.loads(out)["lease_id"]
            start = time.perf_counter()
            process([VAULT, "revoke", lease], env)
            cli_revoked.append(time.perf_counter() - start)
        print(
            f"aws whole CLI process: issue {median(cli_issued) * 1000:.0f} ms, "
            f"revoke {median(cli_revoked) * 1000:.0f} ms"
        )
        mounts = process_median([VAULT, "mounts"], env, 15)
        probe = (
            "import boto3, sys; sys.argv = ['vault', 'mounts']; from tools.cli import main; main()"
        )
        with_boto3 = process_median([sys.executable, "-c", probe], env, 15)
        print(
            f"vault mounts {mounts * 1000:.0f} ms; with boto3 imported first "
            f"{with_boto3 * 1000:.0f} ms ({with_boto3 / mounts:.2f}x)"
        )
    finally:
        moto.terminate()
        moto.wait(10)


def main() -> None:
    home, key = Path(tempfile.mkdtemp(prefix="vaultlog-figures-")), new_key()
    env = dict(
        os.environ,
        HOME=str(home),
        VAULTLOG_DIR=str(home / "data"),
        VAULTLOG_UNSEAL_KEY=encode_unseal_key(key),
    )
    cli_startup(home, env)
    history(home, key, env)
    aws(home, key, env)


if __name__ == "__main__":
    main()
