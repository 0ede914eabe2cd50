"""Request paths and mount points, normalised as Vault does or refused with a reason."""

from __future__ import annotations

import re

from backends.errors import InvalidRequestError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLASHES = re.compile(r"/{2,}")
# Anything clean_path would refuse or change, but a leading slash: most paths have none.
_SUSPECT = re.compile(r"[\x00-\x1f\x7f]|//|(?:^|/)\.\.?(?:/|$)|^\s|\s$")


def _plainly_clean(path: str) -> bool:
    """A quick look that passes only paths ``_SUSPECT`` passes too, most of them, at a
    fraction of its cost: printable, no ``//``, no segment starting with a dot, nothing
    blank at either end."""
    return (
        path.isprintable()
        and "//" not in path
        and "/." not in path
        and not path.startswith(".")
        and not path[:1].isspace()
        and not path[-1:].isspace()
    )


def clean_path(path: str) -> str:
    """``path`` as stored: no leading slash, repeated slashes collapsed (``secret//a`` is
    ``secret/a``). Control characters, surrounding whitespace and ``.``/``..`` segments
    are refused: each would let two spellings name one secret, or forge output rows."""
    if _plainly_clean(path) or not _SUSPECT.search(path):
        return path.lstrip("/")
    if _CONTROL.search(path):
        raise InvalidRequestError("invalid path: control characters are not allowed")
    if path != path.strip():
        raise InvalidRequestError("invalid path: leading or trailing whitespace")
    path = _SLASHES.sub("/", path).lstrip("/")
    if any(part in (".", "..") for part in path.split("/")):
        raise InvalidRequestError("invalid path: '.' and '..' segments are not allowed")
    return path


def mount_point(path: str) -> str:
    """A mount point as stored: cleaned, no leading slash, one trailing slash."""
    path = clean_path(path).strip("/")
    if not path:
        raise InvalidRequestError("missing mount path")
    return f"{path}/"
