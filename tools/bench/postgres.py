"""A throwaway PostgreSQL for the tests and the bench: initdb into a temporary directory,
served on a free port of 127.0.0.1 by the machine's own PostgreSQL binaries, stopped at the
end; and ``AppDatabase``, an application's database in it with an administrator
for the database backend.

PostgreSQL refuses to run as root; under root (CI, this sandbox) the server runs as the
unprivileged ``nobody``, in a directory made for it. Without the binaries the tests that
need it fail with a message saying what to install: they never skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

SERVER_USER = "nobody"  # who runs the server when the tests run as root
SUPERUSER = "vaultlog"  # the database superuser initdb creates


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: the tests start their own PostgreSQL "
            "(Debian: apt-get install postgresql)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; ``url(db)`` connects to it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vaultlog-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user: str | None = SERVER_USER if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(
            [
                _binary("initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
        )
        # The superuser needs no password; every other role logs in with its own, as
        # the roles the database backend creates must.
        (self.data / "pg_hba.conf").write_text(  # initdb made it: the owner stays
            f"host all {SUPERUSER} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _run(self, argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, user=self._user, cwd=self.root)

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server keeps it
        self.process = subprocess.Popen(
            [
                _binary("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=64MB",
            ],
            stdout=log,
            stderr=log,
            user=self._user,
            cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start:\n{tail}") from None
                time.sleep(0.1)

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """SIGINT: PostgreSQL's fast shutdown; SIGQUIT: immediate (a crash, in effect)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(mode)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def relation_files(self, url: str, table: str) -> list[Path]:
        """The files holding ``table`` and its TOAST table, as the server keeps them."""
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c WHERE c.oid = %s::regclass"
                " OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = %s::regclass)",
                (table, table),
            ).fetchall()
        return [p for (rel,) in rows if rel for p in self.data.glob(rel + "*")]

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)


# ---- an application's database, for the database backend ------------------------------

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
        (not a superuser), owning the ``items`` table and the ``reports`` schema;
        ``private.hidden`` is not its own."""
        url = server.new_database()
        suffix = uuid.uuid4().hex[:8]
        app = cls(server, url.rsplit("/", 1)[1], f"admin_{suffix}", f"pw-{uuid.uuid4().hex}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE \"{app.admin}\" LOGIN CREATEROLE PASSWORD '{app.password}'")
            conn.execute(f'GRANT pg_signal_backend TO "{app.admin}"')
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
            conn.execute(f'ALTER TABLE items OWNER TO "{app.admin}"')
            conn.execute(f'CREATE SCHEMA reports AUTHORIZATION "{app.admin}"')
            conn.execute("CREATE TABLE reports.daily (day date)")
            conn.execute(f'ALTER TABLE reports.daily OWNER TO "{app.admin}"')
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
