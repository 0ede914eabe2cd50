"""``clean_path``'s quick look never passes what its full check would refuse or change."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backends.errors import InvalidRequestError
from backends.paths import _SUSPECT, _plainly_clean, clean_path

# The characters that matter to the checks, and some that do not.
PARTS = st.sampled_from(
    ["/", "//", ".", "..", " ", "\t", "\n", "\x00", "\x7f", "\x1f", "\xa0", "\u2028", "a", "é"]
)


@settings(max_examples=3000)
@given(st.lists(PARTS, max_size=8).map("".join))
@example("secret/a.b")
@example("secret/.hidden")
@example("./x")
@example("a/ ")
def test_the_quick_look_passes_only_what_the_full_check_passes(path: str) -> None:
    if _plainly_clean(path):
        assert not _SUSPECT.search(path)


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [
        ("secret/a", "secret/a"),
        ("/secret/a", "secret/a"),
        ("secret//a", "secret/a"),
        ("secret/a.b", "secret/a.b"),
        ("secret/a b", "secret/a b"),
    ],
)
def test_clean_paths(path: str, cleaned: str) -> None:
    assert clean_path(path) == cleaned


@pytest.mark.parametrize(
    "path", ["secret/\x00a", "secret/a\n", " secret/a", "secret/../a", "secret/./a", "./a"]
)
def test_refused_paths(path: str) -> None:
    with pytest.raises(InvalidRequestError):
        clean_path(path)
