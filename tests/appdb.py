"""An application's database in the PostgreSQL the tests start: an administrator the
database backend logs in as, a table its roles may read and a schema they may not."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from tools.bench.postgres import PostgresServer

CREATION = (
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; "
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";'
)


@dataclass
class AppDatabase:
    server: PostgresServer
    name: str
    admin: str
    password: str

    @classmethod
    def create(cls, server: PostgresServer) -> AppDatabase:
        """A new database, and an administrator that may create roles and end sessions
        (not a superuser), owning the ``items`` table; ``private.hidden`` is not its own."""
        url = server.new_database()
        suffix = uuid.uuid4().hex[:8]
        app = cls(server, url.rsplit("/", 1)[1], f"admin_{suffix}", f"pw-{uuid.uuid4().hex}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE \"{app.admin}\" LOGIN CREATEROLE PASSWORD '{app.password}'")
            conn.execute(f'GRANT pg_signal_backend TO "{app.admin}"')
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
            conn.execute(f'ALTER TABLE items OWNER TO "{app.admin}"')
            conn.execute("CREATE SCHEMA private")
            conn.execute("CREATE TABLE private.hidden (x text)")
        return app

    @property
    def template_url(self) -> str:
        """The connection_url Vault's docs write: the credentials templated."""
        return f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{self.server.port}/{self.name}"

    def url(self, user: str, password: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.server.port}/{self.name}"

    def config_args(self, allowed_roles: str = "*") -> list[str]:
        """``vault write database/config/app`` arguments for this database."""
        return [
            "plugin_name=postgresql-database-plugin",
            f"connection_url={self.template_url}",
            f"username={self.admin}",
            f"password={self.password}",
            f"allowed_roles={allowed_roles}",
        ]

    def connect(self, user: str, password: str) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url(user, password), autocommit=True, connect_timeout=5)

    @contextlib.contextmanager
    def superuser(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with psycopg.connect(self.server.url(self.name), autocommit=True) as conn:
            yield conn

    def roles(self, prefix: str = "v-") -> set[str]:
        """The roles of the whole cluster whose names start with ``prefix``."""
        with self.superuser() as conn:
            rows = conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
            ).fetchall()
        return {str(row[0]) for row in rows}

    def sessions(self, user: str) -> int:
        with self.superuser() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)
            ).fetchone()
        return int(row[0]) if row else 0

    def valid_until(self, user: str) -> object:
        with self.superuser() as conn:
            row = conn.execute(
                "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (user,)
            ).fetchone()
        return row[0] if row else None
