"""The front doors: the ``vault`` CLI."""

from tools.cli import app, main

__all__ = ["app", "main"]
