"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

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
