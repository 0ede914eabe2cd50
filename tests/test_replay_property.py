"""Replaying the log gives the same state the store maintained while running."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import Core, Request
from eventstore import new_key
from projections import decode, replay
from tests.conftest import open_core
from tests.strategies import operations, run_operation

run = run_operation


def readable(core: Core) -> dict[str, dict[str, Any]]:
    """Every value as a user would read it, by full path."""
    out = {}
    for mount in core.store.state.mounts.sorted():
        if mount.type != "generic":
            continue
        for name in core.store.state.data[mount.id]:
            response = core.handle(Request("read", mount.path + name))
            assert response.data is not None
            out[mount.path + name] = response.data
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=25))
def test_replay_equals_incremental_state(ops: list[tuple[Any, ...]]) -> None:
    key = new_key()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        core = open_core(directory, key, write=True)
        try:
            for op in ops:
                run(core, op)
            live_values = readable(core)  # audited reads append secret.read events too
            live_state = core.store.state.copy()
        finally:
            core.store.close()

        reader = open_core(directory, key, write=False)
        rebuilt = replay(decode(record) for record in reader.store.log.records())
        assert rebuilt == live_state
        assert reader.store.state == live_state
        assert readable(reader) == live_values
        assert reader.store.log.head.seq == live_state.seq
