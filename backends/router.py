"""The router: the longest mount prefix of a path wins."""

from __future__ import annotations

from projections import Mount, MountTable


def route(table: MountTable, path: str) -> tuple[Mount, str] | None:
    """The mount serving ``path`` and the path relative to it, or None."""
    candidate = path if path.endswith("/") else path + "/"
    end = len(candidate)
    while end > 0:
        mount = table.at(candidate[:end])
        if mount is not None:
            return mount, path[len(mount.path) :]
        end = candidate.rfind("/", 0, end - 1) + 1
    return None


def normalize_mount_path(path: str) -> str:
    """A mount point as stored: no leading slash, one trailing slash."""
    path = path.strip().strip("/")
    return f"{path}/" if path else ""
