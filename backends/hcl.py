"""Vault's documents, HCL (HCL 1, Vault's dialect, parsed with pyhcl) or JSON: server
configurations and ACL policies."""

from __future__ import annotations

import json
from typing import Any


def parse_document(text: str) -> dict[str, Any]:
    """The object ``text`` holds, JSON if it starts with ``{``, else HCL. Raises
    ``ValueError`` with one line saying what is wrong."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
    else:
        import hcl  # type: ignore[import-untyped]

        try:
            value = hcl.loads(text)
        except Exception as exc:  # pyhcl raises ValueError and ply's own errors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"invalid HCL: {first}") from None
    if not isinstance(value, dict):
        raise ValueError("the document must be an object")
    return value
