"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from backends import Core, Request, RequestError
from tests.conftest import open_core

MOUNT_POINTS = ("secret/", "kv/", "team/", "team/a/", "other/")
SECRET_NAMES = ("a", "b", "dir/c", "dir/d")

values = st.dictionaries(
    st.sampled_from(["value", "user", "ttl", "n"]),
    st.one_of(st.text(max_size=8), st.integers(-5, 5)),
    min_size=1,
    max_size=3,
)

operations = st.one_of(
    st.tuples(st.just("mount"), st.sampled_from(MOUNT_POINTS)),
    st.tuples(st.just("unmount"), st.sampled_from(MOUNT_POINTS)),
    st.tuples(st.just("remount"), st.sampled_from(MOUNT_POINTS), st.sampled_from(MOUNT_POINTS)),
    st.tuples(
        st.just("write"), st.sampled_from(MOUNT_POINTS), st.sampled_from(SECRET_NAMES), values
    ),
    st.tuples(st.just("delete"), st.sampled_from(MOUNT_POINTS), st.sampled_from(SECRET_NAMES)),
)

# The record codec: anything the header's fields can hold, and any body.
record_bodies = st.binary(max_size=600)
record_headers = st.fixed_dictionaries(
    {
        "seq": st.integers(1, 2**64 - 1),
        "timestamp": st.integers(0, 2**64 - 1),
        "term": st.integers(0, 2**32 - 1),
        "prev_hash": st.binary(min_size=32, max_size=32),
    }
)


def run_operation(core: Core, op: tuple[Any, ...]) -> None:
    """Serve one generated operation; an impossible one must change nothing."""
    kind = op[0]
    if kind == "mount":
        request = Request("write", f"sys/mounts/{op[1]}", {"type": "generic"})
    elif kind == "unmount":
        request = Request("delete", f"sys/mounts/{op[1]}")
    elif kind == "remount":
        request = Request("write", "sys/remount", {"from": op[1], "to": op[2]})
    elif kind == "write":
        request = Request("write", op[1] + op[2], op[3])
    elif kind == "read":
        request = Request("read", op[1] + op[2])
    else:
        request = Request("delete", op[1] + op[2])
    with contextlib.suppress(RequestError):
        core.handle(request)


def build_store(directory: Path, key: bytes, ops: list[tuple[Any, ...]]) -> None:
    """A store in ``directory`` after serving ``ops``, closed."""
    core = open_core(directory, key, write=True)
    try:
        for op in ops:
            run_operation(core, op)
    finally:
        core.store.close()
