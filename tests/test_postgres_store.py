"""A store in PostgreSQL: the keyring replaced by compare-and-swap, what crypto-shredding
promises there, a follower kept current, and each node's caches (snapshots and the version
index) derived, checked and rebuilt as on files."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

from backends import Core, InvalidRequestError, Registry, Request
from eventstore import (
    PostgresStorage,
    ShreddedError,
    StoreError,
    StoreLockedError,
    UnavailableError,
    UnsealError,
    new_key,
)
from eventstore.keyring import KEYRING_FILE
from eventstore.postgres import META, PostgresLog
from eventstore.record import Record
from projections import SecretWritten, Store
from projections.snapshot import snapshot_dir, snapshot_seqs
from tools.api import Durability
from tools.bench.postgres import PostgresServer
from tools.cluster import PostgresSeal


@pytest.fixture
def storage(pg_url: str) -> PostgresStorage:
    return PostgresStorage(pg_url)


@pytest.fixture
def key() -> bytes:
    return new_key()


def writer(storage: PostgresStorage, key: bytes, cache: Path | None = None, **kw: int) -> Core:
    store = Store.open_postgres(storage, key, write=True, cache=cache, **kw)
    core = Core(store, Registry())
    core.maintain()
    return core


@pytest.fixture
def core(storage: PostgresStorage, key: bytes, tmp_path: Path) -> Iterator[Core]:
    opened = writer(storage, key, tmp_path / "cache", snapshot_every=20)
    try:
        yield opened
    finally:
        opened.store.close()


def write(core: Core, path: str, **data: str) -> None:
    core.handle(Request("write", path, data))


def read(core: Core, path: str, at: str = "") -> dict[str, str] | None:
    return core.handle(Request("read", path, at=at)).data


def test_one_writer_at_a_time_and_a_wrong_key_opens_nothing(
    core: Core, storage: PostgresStorage, key: bytes
) -> None:
    with pytest.raises(StoreLockedError):
        Store.open_postgres(storage, key, write=True, lock_timeout=0.1)
    with pytest.raises(UnsealError, match="wrong unseal key"):
        Store.open_postgres(storage, new_key(), write=False)


def test_the_keyring_is_replaced_only_over_the_version_last_seen(
    core: Core, storage: PostgresStorage, key: bytes
) -> None:
    # Another node (or a stale writer) saved the keyring since: this writer's save fails,
    # and the mount it was creating is not recorded.
    version, sealed = storage.meta(KEYRING_FILE) or (0, b"")
    storage.swap_meta(KEYRING_FILE, sealed, version)
    with pytest.raises(StoreError, match="changed by another node"):
        core.handle(Request("write", "sys/mounts/lost", {"type": "generic"}))
    assert "lost/" not in core.handle(Request("read", "sys/mounts")).data  # type: ignore[operator]


def test_a_follower_catches_up_with_new_mounts_and_their_keys(
    core: Core, storage: PostgresStorage, key: bytes
) -> None:
    follower = Store.open_postgres(storage, key, write=False)
    assert follower.state.seq == core.store.state.seq
    core.handle(Request("write", "sys/mounts/team", {"type": "generic"}))
    write(core, "team/db", password="hunter2")
    assert follower.catch_up() > 0
    assert follower.state.seq == core.store.state.seq
    mount = follower.state.mounts.at("team/")
    assert mount is not None
    sealed = follower.state.data[mount.id]["db"]
    assert b"hunter2" not in sealed
    assert mount.id in follower.keyring.mounts  # the new mount's key came with it
    follower.close()


def relation_bytes(server: PostgresServer, url: str) -> bytes:
    """What the metadata table's files hold on disk, once PostgreSQL wrote its buffers."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return b"".join(p.read_bytes() for p in server.relation_files(url, META))


def test_an_unmount_leaves_no_copy_of_the_old_keyring_in_the_database_files(
    postgres: PostgresServer, pg_url: str, core: Core, storage: PostgresStorage, key: bytes
) -> None:
    """The promise on PostgreSQL (DESIGN, crypto-shredding): after an unmount, no row of
    the database, live or dead, holds a keyring with the destroyed key. (Its WAL, and any
    backup taken before, still do until they are recycled: see the design notes.)"""
    core.handle(Request("write", "sys/mounts/gone", {"type": "generic"}))
    write(core, "gone/secret", value="shred me")
    with_key = (storage.meta(KEYRING_FILE) or (0, b""))[1]
    assert with_key in relation_bytes(postgres, pg_url)  # the check can see a keyring
    core.handle(Request("delete", "sys/mounts/gone"))
    on_disk = relation_bytes(postgres, pg_url)
    assert with_key not in on_disk
    assert (storage.meta(KEYRING_FILE) or (0, b""))[1] in on_disk
    # And the log's sealed values of the mount are opened by no key of the store.
    reader = Store.open_postgres(storage, key, write=False)
    removed = [e for e in reader.events() if isinstance(e, SecretWritten)]
    assert removed
    with pytest.raises(ShreddedError):
        reader.keyring.mount_sealer(removed[-1].mount_id)
    reader.close()


def test_snapshots_and_the_index_live_in_the_nodes_cache_and_are_rebuilt(
    storage: PostgresStorage, key: bytes, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    core = writer(storage, key, cache, snapshot_every=20)
    for i in range(60):
        write(core, "secret/counter", value=str(i))
    head = core.store.head
    assert snapshot_seqs(cache)
    core.store.close()

    # A damaged snapshot is passed over (and dropped by the next writer); a node whose cache
    # is gone entirely rebuilds it from the log.
    newest = snapshot_seqs(cache)[-1]
    path = snapshot_dir(cache) / f"{newest:020d}.snap"
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    core = writer(storage, key, cache, snapshot_every=20)
    assert core.store.head == head
    assert read(core, "secret/counter") == {"value": "59"}
    assert newest not in snapshot_seqs(cache)
    seq_of_30 = core.store.state.seq - 29  # a write per record, after the mounts
    assert read(core, "secret/counter", at=str(seq_of_30)) is not None
    core.store.close()

    other = tmp_path / "other-node"
    core = writer(storage, key, other, snapshot_every=20)
    assert read(core, "secret/counter") == {"value": "59"}
    write(core, "secret/counter", value="60")
    report = core.store.verify()
    assert report.ok, report.problem
    core.store.close()


def test_two_nodes_initialising_at_once_make_one_store(storage: PostgresStorage) -> None:
    registry = Registry()
    seals = [
        PostgresSeal(
            PostgresStorage(storage.url),
            lambda s: Core(s, registry),
            cache=None,
            ha=True,
            api_addr="",
        )
        for _ in range(2)
    ]
    results: list[object] = []

    def init(seal: PostgresSeal) -> None:
        try:
            results.append(seal.init({"secret_shares": 3, "secret_threshold": 2}))
        except InvalidRequestError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=init, args=(seal,)) for seal in seals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers = [r for r in results if isinstance(r, dict)]
    assert len(answers) == 1 and results.count("Vault is already initialized") == 1
    assert seals[0].shape() == (3, 2)
    keys = answers[0]["keys_base64"]  # type: ignore[index]
    for seal in seals:
        seal.unseal({"key": keys[0]})
        seal.unseal({"key": keys[1]})
    assert sum(seal.core is not None for seal in seals) == 1  # one active, one standing by
    for seal in seals:
        seal.close()


def _node(storage: PostgresStorage) -> PostgresSeal:
    return PostgresSeal(
        PostgresStorage(storage.url),
        lambda s: Core(s, Registry()),
        cache=None,
        ha=True,
        api_addr="",
    )


def _written(storage: PostgresStorage, key: bytes) -> list[str]:
    reader = Store.open_postgres(PostgresStorage(storage.url), key, write=False)
    try:
        return [e.path for e in reader.events() if isinstance(e, SecretWritten)]
    finally:
        reader.close()


def test_a_node_standing_by_commits_what_it_served_before_it_lets_go(
    storage: PostgresStorage,
) -> None:
    """A write served (its answer waiting for the group commit) when the node steps down
    is committed before the store closes, so the answer that follows is true: the node
    that takes over reads it."""
    first, second = _node(storage), _node(storage)
    try:
        answer = first.init({"secret_shares": 1, "secret_threshold": 1})
        share, root = answer["keys_base64"][0], answer["root_token"]
        first.unseal({"key": share})
        assert first.core is not None
        first.core.serve(Request("write", "secret/a", {"v": "1"}, token=root))
        first.step_down()
        assert first.core is None
        second.unseal({"key": share})
        assert second.core is not None  # the lock was let go
        read = second.core.handle(Request("read", "secret/a", token=root))
        assert read.data == {"v": "1"}
    finally:
        first.close()
        second.close()


def test_group_commit_never_answers_for_a_store_that_closed_first(
    storage: PostgresStorage, key: bytes
) -> None:
    """A write whose store was closed before its commit is refused, not acknowledged: the
    group commit syncs the store that wrote the seq, whatever the node serves by then."""
    core = writer(storage, key)
    _, seq = core.serve(Request("write", "secret/a", {"v": "1"}))
    core.store.close()  # as a node whose connection died, before its commit

    async def wait() -> None:
        group = Durability(core.store)
        try:
            await group.wait(seq)
        finally:
            group.stop()

    with pytest.raises(UnavailableError, match="the log was closed"):
        asyncio.run(wait())
    assert _written(storage, key) == []


def test_a_write_served_as_a_commit_fails_is_never_acknowledged(
    storage: PostgresStorage, key: bytes
) -> None:
    """A commit that fails takes the log's head back to the last durable record; a request
    that wrote just before (its record dropped from the batch, or in the one that failed)
    but asked for its seq just after must not find it durable, nor may a read served from
    that state afterwards, while the node has not stood by yet (PostgreSQL restarted under
    load once lost a write so)."""
    core = writer(storage, key)
    log = core.store.log
    assert isinstance(log, PostgresLog) and log._conn is not None
    writer_pid = log._conn.info.backend_pid
    core.serve(Request("write", "secret/a", {"v": "1"}))  # in the batch that fails
    committing, failed = threading.Event(), threading.Event()
    commit, write = log._commit, log.write

    def commit_once_the_next_write_is_in(batch: list[tuple[int, bytes]]) -> None:
        committing.set()  # batch taken, the log's lock let go: as PostgreSQL goes away
        with psycopg.connect(storage.url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s, 10000)", (writer_pid,))
        commit(batch)

    def write_and_let_the_commit_fail(bodies: Sequence[bytes]) -> list[Record]:
        assert committing.wait(10)
        records = write(bodies)
        assert failed.wait(10)  # the failure lands before the request asks for its seq
        return records

    def sync_all() -> None:
        try:
            core.store.flush()
        except UnavailableError:
            failed.set()

    log._commit = commit_once_the_next_write_is_in  # type: ignore[method-assign]
    log.write = write_and_let_the_commit_fail  # type: ignore[method-assign]
    syncing = threading.Thread(target=sync_all)
    syncing.start()
    _, seq = core.serve(Request("write", "secret/b", {"v": "2"}))
    syncing.join()
    log.write = write  # type: ignore[method-assign]
    listed, read_seq = core.serve(Request("list", "secret/"))
    assert listed.data == {"keys": ["a", "b"]}  # served from the state: never to be answered

    async def answered(group: Durability, seq: int) -> bool:
        try:
            await asyncio.wait_for(group.wait(seq), 10)
        except UnavailableError:
            return False
        return True

    async def answers() -> list[bool]:
        group = Durability(core.store)
        try:
            return [await answered(group, seq), await answered(group, read_seq)]
        finally:
            group.stop()

    try:
        assert asyncio.run(answers()) == [False, False]
        assert _written(storage, key) == []  # what failed is not there, as the 503s said
    finally:
        core.store.close()
