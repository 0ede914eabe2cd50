"""The front doors: the ``vault`` CLI (``tools.quick`` is its entry point, ``tools.cli`` its
commands) and ``vault server`` (``tools.server``).

Names load on first use: the entry point's plain path must not import Typer.
"""

import typing as _typing

from eventstore import lazy as _lazy

if _typing.TYPE_CHECKING:
    from tools.cli import app
    from tools.quick import main

_WHERE = {"app": "tools.cli", "main": "tools.quick"}
__getattr__, __dir__ = _lazy.exports(__name__, _WHERE, globals())

__all__ = ["app", "main"]
