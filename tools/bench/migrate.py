"""``python -m tools.bench.migrate [--events N]``: ``vault operator migrate`` file ->
PostgreSQL and back, against PostgreSQL's own bulk copy of the same rows in the same run.

The store is built fast: a real ``secret.written`` through the Core gives a record body,
which ``FileLog`` then seals N times, in large batches (one fsync each). A throwaway
PostgreSQL (``tools.bench.postgres``) holds the copy. The baselines copy the same rows
with no parsing and no checking: ``COPY ... FROM STDIN`` of the rows already in memory
(what ``tools.migrate`` sends, the same binary COPY), and ``COPY ... TO STDOUT`` into a
file (what the way back reads).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from backends import Registry, Request, local_user
from eventstore import FileLog, Keyring, PostgresStorage, new_key
from eventstore.lock import WriterLock
from tools.bench.harness import VALUE, Row, duration, machine, megabytes, rate, render_table
from tools.bench.postgres import PostgresServer
from tools.bench.stores import first_secret_written, open_writer, put_batch, segment_bytes
from tools.migrate import MigrateConfig, StorageConfig, migrate

BUILD_BATCH = 20_000  # records sealed and written per fsync while building the store
COPY_IN = "COPY vaultlog_records (seq, raw) FROM STDIN (FORMAT BINARY)"
COPY_OUT = "COPY vaultlog_records (seq, raw) TO STDOUT (FORMAT BINARY)"


def build_store(directory: Path, key: bytes, events: int) -> int:
    """A file store of ``events`` records (the default mounts, then secret writes); its
    head seq."""
    core = open_writer(directory, key)
    store = core.store
    try:
        mount = store.state.mounts.at("secret/")
        assert mount is not None
        request = local_user(store, Request("write", "secret/x"))
        put_batch(store, mount, [("k0", VALUE)], request, Registry())
        store.flush()
        head = store.state.seq
    finally:
        store.close()
    body = first_secret_written(directory, key)
    lock = WriterLock(directory)
    lock.acquire(5)
    log = FileLog.open_writer(directory, Keyring.load(directory, key), lock)
    try:
        while head < events:
            n = min(BUILD_BATCH, events - head)
            log.write([body] * n)
            head += n
            log.sync(head)
    finally:
        log.close()
    return head


def copy_in_baseline(url: str, rows: Sequence[tuple[int, bytes]]) -> float:
    """Seconds to COPY ``rows`` into an empty table in one transaction, as the migration
    does, with nothing read, parsed or checked."""
    storage = PostgresStorage(url)
    conn = storage.connect()  # makes the schema
    try:
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_IN) as copy:
            copy.set_types(["int8", "bytea"])
            for row in rows:
                copy.write_row(row)
        return time.perf_counter() - start
    finally:
        conn.close()


def copy_out_baseline(url: str, file: Path) -> float:
    """Seconds to COPY the table out into ``file`` (fsynced), with nothing parsed."""
    conn = psycopg.connect(url)
    try:
        start = time.perf_counter()
        with open(file, "wb") as out, conn.cursor() as cur, cur.copy(COPY_OUT) as copy:
            for chunk in copy:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return time.perf_counter() - start
    finally:
        conn.close()


def figures(work: Path, events: int) -> list[Row]:
    """The migration both ways and the two baselines, in one run."""
    key = new_key()
    source, back = work / "source", work / "back"
    start = time.perf_counter()
    head = build_store(source, key, events)
    built = time.perf_counter() - start
    size = segment_bytes(source)
    print(f"built a store of {head:,} records ({megabytes(size)}) in {duration(built)}")
    server = PostgresServer()
    server.start()
    try:
        url, raw_url = server.new_database(), server.new_database()
        files = StorageConfig("file", path=source)
        database = StorageConfig("postgresql", connection_url=url)
        to_pg = migrate(MigrateConfig(files, database))
        from_pg = migrate(MigrateConfig(database, StorageConfig("file", path=back)))
        assert to_pg.head == from_pg.head and to_pg.head.seq == head
        rows: list[tuple[int, bytes]] = [
            (seq, bytes(raw))
            for seq, raw in PostgresStorage(url).run(
                "SELECT seq, raw FROM vaultlog_records ORDER BY seq"
            )
        ]
        copy_in = copy_in_baseline(raw_url, rows)
        del rows
        copy_out = copy_out_baseline(url, work / "copy-out.bin")
    finally:
        server.close()
    return [
        _row("file -> postgresql", head, to_pg.copy_seconds, to_pg.verify_seconds, copy_in, "in"),
        _row(
            "postgresql -> file",
            head,
            from_pg.copy_seconds,
            from_pg.verify_seconds,
            copy_out,
            "out",
        ),
    ]


def _row(what: str, events: int, copying: float, verifying: float, raw: float, way: str) -> Row:
    total = copying + verifying
    return Row(
        "migrate",
        f"{what}: {events:,} events (copy {duration(copying)} + read back {duration(verifying)})",
        f"{rate(events / total)} ({duration(total)})",
        f"raw COPY {way}, no parsing: {rate(events / raw)} ({duration(raw)})",
        total / raw,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.migrate", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="records in the store")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (a temp dir)")
    args: Any = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vaultlog-bench-migrate-", dir=args.dir))
    try:
        load = os.getloadavg()[0]
        rows = figures(work, max(args.events, 10))
        print()
        print(render_table(rows))
        print("\nratio: the migration's time over the raw COPY's (1.00x: as fast as PostgreSQL)")
        print("\n".join(machine(work, "PostgreSQL COPY (binary), same server, same run")))
        print(f"- Load average (1 min): {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
