"""Each package's ``__all__`` is exactly its public surface (a guard borrowed from httpx)."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize("package", ["eventstore", "projections", "backends", "tools"])
def test_all_is_the_public_surface(package: str) -> None:
    module = importlib.import_module(package)
    for name in getattr(module, "__all__", []):
        getattr(module, name)  # a lazy package (eventstore.lazy) loads a name on first use
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(module.__all__) == public
    for name in module.__all__:
        assert hasattr(module, name)
