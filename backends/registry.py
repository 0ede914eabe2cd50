"""The one registry of backend types: a mount type's name -> how to make its backend.

Adding a backend is one module in ``backends/`` and one line here. The front door hands a
``Registry`` to the Core; the Core never imports a backend itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from backends.approle import AppRoleBackend
from backends.contract import Backend, BackendFactory
from backends.cubbyhole import CubbyholeBackend
from backends.errors import InvalidRequestError
from backends.generic import GenericBackend
from backends.pkcs11 import HsmBackend
from backends.sys import SysBackend
from backends.token import TokenBackend
from backends.userpass import UserpassBackend


def _aws() -> Backend:
    # boto3 costs ~300 ms to import: paid only by a process that serves an aws mount.
    from backends.aws import AwsBackend

    return AwsBackend()


def _database() -> Backend:
    # psycopg, likewise, only where a database mount is used.
    from backends.database import DatabaseBackend

    return DatabaseBackend()


def _postgresql() -> Backend:
    from backends.postgresql import LegacyPostgresBackend

    return LegacyPostgresBackend()


BUILTIN: Mapping[str, BackendFactory] = {
    "system": SysBackend,
    "token": TokenBackend,  # mounted once, at auth/token/, like system at sys/
    "generic": GenericBackend,
    "kv": GenericBackend,  # KV version 1: the same engine under today's name
    "aws": _aws,
    "database": _database,
    "postgresql": _postgresql,  # Vault 0.5's, on the database backend
    "pkcs11": HsmBackend,  # generic, its data key in the HSM
    "cubbyhole": CubbyholeBackend,  # mounted once, by init, at cubbyhole/
    "userpass": UserpassBackend,  # auth methods: enabled by sys/auth, at auth/<path>/
    "approle": AppRoleBackend,
}


SCHEDULED = frozenset({"database", "postgresql"})  # static roles rotate on the timer


class Registry:
    """Backend instances by mount type, each made on first use."""

    def __init__(
        self,
        factories: Mapping[str, BackendFactory] = BUILTIN,
        scheduled: frozenset[str] = SCHEDULED,
    ) -> None:
        self.factories, self.scheduled = factories, scheduled
        self._made: dict[str, Backend] = {}

    def get(self, backend_type: str) -> Backend:
        backend = self._made.get(backend_type)
        if backend is None:
            factory = self.factories.get(backend_type)
            if factory is None:
                raise InvalidRequestError(f"plugin not found in the catalog: {backend_type}")
            backend = self._made[backend_type] = factory()
        return backend
