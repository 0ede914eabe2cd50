"""Backends unit-tested on a store in memory (``MemoryLog``): no files, no subprocess.

The Core, sessions and backends are exercised exactly as the CLI uses them, over the
same records a file log would hold.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest

from backends import (
    ConflictError,
    Core,
    InvalidRequestError,
    MountView,
    PathRules,
    Registry,
    Request,
    RequestError,
    Response,
    ShreddedDataError,
)
from backends.errors import PastRequestError
from backends.registry import BUILTIN
from eventstore import MemoryStorage
from projections import SecretWritten, Store, replay


class Boom:
    """A backend that stages a write, then fails: its event must never be appended."""

    paths: ClassVar[PathRules] = PathRules()

    def handle(self, view: MountView, request: Request) -> Response:
        view.put("half-done", {"v": "never"})
        raise InvalidRequestError("boom")


def as_tester(store: Store, request: Request) -> Request:
    return msgspec.structs.replace(request, actor="tester@test")


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def core(storage: MemoryStorage) -> Core:
    store = Store.in_memory(storage)
    return Core(store, Registry({**BUILTIN, "boom": Boom}), authenticate=as_tester)


def call(core: Core, operation: Any, path: str, data: dict[str, Any] | None = None, **kw: Any):
    return core.handle(Request(operation, path, data or {}, **kw))


def test_generic_write_read_list_delete(core: Core) -> None:
    call(core, "write", "secret/a", {"v": "1", "ttl": "1h"})
    call(core, "write", "secret/dir/b", {"v": "2"})
    read = call(core, "read", "secret/a")
    assert read.data == {"v": "1", "ttl": "1h"} and read.lease_duration == 3600
    assert call(core, "list", "secret/").data == {"keys": ["a", "dir/"]}
    call(core, "delete", "secret/a")
    assert call(core, "read", "secret/a").data is None
    events = list(core.store.events())
    assert [e.actor for e in events[2:]] == ["tester@test"] * (len(events) - 2)
    assert replay(events).data == core.store.state.data


def test_mount_remount_unmount(core: Core) -> None:
    call(core, "write", "sys/mounts/team", {"type": "generic"})
    call(core, "write", "team/x", {"v": "1"})
    with pytest.raises(ConflictError):
        call(core, "write", "sys/mounts/team/sub", {"type": "generic"})
    with pytest.raises(InvalidRequestError, match="onto itself"):
        call(core, "write", "sys/remount", {"from": "team/", "to": "team"})
    with pytest.raises(InvalidRequestError, match="under itself"):
        call(core, "write", "sys/remount", {"from": "team/", "to": "team/a"})
    call(core, "write", "sys/remount", {"from": "team/", "to": "crew/"})
    assert call(core, "read", "crew/x").data == {"v": "1"}
    call(core, "delete", "sys/mounts/crew")
    assert "crew/" not in call(core, "read", "sys/mounts").data


def test_a_failed_request_leaves_no_event_for_the_next_commit(core: Core) -> None:
    call(core, "write", "sys/mounts/b", {"type": "boom"})
    head = core.store.head.seq
    with pytest.raises(InvalidRequestError, match="boom"):
        call(core, "write", "b/x", {"v": "1"})
    assert core.store.head.seq == head
    call(core, "write", "secret/next", {"v": "2"})
    written = [e for e in core.store.events() if isinstance(e, SecretWritten)]
    assert [e.path for e in written] == ["next"]


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30])
def test_a_number_beyond_64_bits_is_refused_and_nothing_is_written(core: Core, number: int) -> None:
    head = core.store.head.seq
    with pytest.raises(InvalidRequestError, match="does not fit in 64 bits"):
        call(core, "write", "secret/big", {"v": number})
    assert core.store.head.seq == head
    assert call(core, "read", "secret/big").data is None
    call(core, "write", "secret/big", {"v": 2**64 - 1})  # the largest that fits
    assert call(core, "read", "secret/big").data == {"v": 2**64 - 1}


def test_paths_are_cleaned_or_refused(core: Core) -> None:
    call(core, "write", "secret//a", {"v": "1"})
    assert call(core, "read", "/secret/a").data == {"v": "1"}
    for bad in ("secret/a\nb", "secret/\x1b[31m", "secret/../x", "secret/./x", " secret/a"):
        with pytest.raises(InvalidRequestError, match="invalid path"):
            call(core, "write", bad, {"v": "1"})
    for bad_mount in ("../evil", "", "/"):
        with pytest.raises(InvalidRequestError):
            call(core, "write", f"sys/mounts/{bad_mount}", {"type": "generic"})


def test_the_past_is_read_only(core: Core) -> None:
    call(core, "write", "secret/a", {"v": "1"})
    seq = core.store.head.seq
    call(core, "write", "secret/a", {"v": "2"})
    assert call(core, "read", "secret/a", at=str(seq)).data == {"v": "1"}
    head = core.store.head.seq
    with pytest.raises(InvalidRequestError, match="only reads and lists"):
        call(core, "write", "secret/a", {"v": "3"}, at=str(seq))
    with pytest.raises(InvalidRequestError, match=f"seq {head + 9} is past the head"):
        call(core, "read", "secret/a", at=str(head + 9))
    with pytest.raises(InvalidRequestError, match="did not exist yet at seq 0"):
        call(core, "read", "sys/mounts", at="0")
    with pytest.raises(InvalidRequestError, match="in the future"):
        call(core, "read", "secret/a", at="2999-01-01T00:00:00Z")


def test_a_backend_asked_of_the_past_cannot_stage(core: Core) -> None:
    call(core, "write", "sys/mounts/b", {"type": "boom"})
    seq = core.store.head.seq
    call(core, "write", "secret/later", {"v": "1"})
    with pytest.raises(PastRequestError):
        call(core, "read", "b/x", at=str(seq))


def test_value_hmacs_are_per_mount_and_die_with_it(core: Core) -> None:
    call(core, "write", "sys/mounts/pins", {"type": "generic"})
    call(core, "write", "pins/door", {"pin": "4711"})
    call(core, "write", "secret/door", {"pin": "4711"})
    pins = call(core, "write", "sys/audit-hash/pins/", {"input": "4711"}).data
    mine = call(core, "write", "sys/audit-hash/secret/", {"input": "4711"}).data
    assert pins != mine
    written = [e for e in core.store.events() if isinstance(e, SecretWritten)]
    assert [f"hmac-sha256:{e.hmacs['pin'].hex()}" for e in written] == [
        pins["hash"],
        mine["hash"],
    ]
    call(core, "delete", "sys/mounts/pins")
    with pytest.raises(RequestError):
        call(core, "write", "sys/audit-hash/pins/", {"input": "4711"})
    history = call(core, "read", "sys/vaultlog/history/pins/door").data["versions"]
    assert [v["operation"] for v in history] == ["secret.written"]
    assert call(core, "read", "sys/vaultlog/verify").data["ok"]


def test_a_shredded_mount_read_of_the_past_says_so(core: Core) -> None:
    call(core, "write", "sys/mounts/tmp", {"type": "generic"})
    call(core, "write", "tmp/x", {"v": "1"})
    seq = core.store.head.seq
    call(core, "delete", "sys/mounts/tmp")
    with pytest.raises(ShreddedDataError, match="the data of mount 'tmp/' was deleted"):
        call(core, "read", "tmp/x", at=str(seq))


def test_a_second_store_on_the_same_memory_reads_the_same_history(
    core: Core, storage: MemoryStorage
) -> None:
    call(core, "write", "secret/a", {"v": "1"})
    keyring = core.store.keyring
    core.store.close()
    again = Core(Store.in_memory(storage, keyring), Registry())
    assert call(again, "read", "secret/a").data == {"v": "1"}
    assert again.store.verify().ok
