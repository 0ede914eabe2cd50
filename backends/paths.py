"""Request paths and mount points, normalised as Vault does or refused with a reason."""

from __future__ import annotations

import re

from backends.errors import InvalidRequestError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLASHES = re.compile(r"/{2,}")
# Anything clean_path would refuse or change, but a leading slash: most paths have none.
_SUSPECT = re.compile(r"[\x00-\x1f\x7f]|//|(?:^|/)\.\.?(?:/|$)|^\s|\s$")


def clean_path(path: str) -> str:
    """``path`` as stored: no leading slash, repeated slashes collapsed (``secret//a`` is
    ``secret/a``). Control characters, surrounding whitespace and ``.``/``..`` segments
    are refused: each would let two spellings name one secret, or forge output rows."""
    if not _SUSPECT.search(path):
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
