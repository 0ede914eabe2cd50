"""PostgreSQL roles for the database backend: create, renew, revoke, and set a password,
through a small bounded pool of connections (Vault's postgresql-database-plugin).

psycopg is imported here only, and this module only when the database is talked to. The
administrator's statements are filled in by ``backends.sqltemplate``; the store's own
quote with psycopg's ``sql.Identifier`` and ``sql.Literal``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from backends.sqltemplate import (
    DatabaseError,
    connection_string,
    render,
    safe_value,
    split_statements,
)

CONNECT_TIMEOUT = 5  # seconds to reach the database
WAIT_TIMEOUT = 10.0  # seconds to wait for a connection when all are in use
# A statement that runs longer, or waits on a lock longer, is cancelled: a revocation
# blocked behind a long transaction fails (and is retried) instead of hanging a request.
SESSION_OPTIONS = "-c statement_timeout=30000 -c lock_timeout=10000"


class Pool:
    """At most ``size`` connections to one database, opened on demand and kept while
    healthy for at most ``lifetime`` seconds (0: no limit).

    Written here rather than taken from psycopg_pool: that pool reports a database that
    is down as a timeout after its wait, without the reason, and runs threads of its own.
    """

    def __init__(self, conninfo: str, *, size: int, idle: int, lifetime: int) -> None:
        self._conninfo, self._idle_max, self._lifetime = conninfo, idle, lifetime
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[tuple[float, psycopg.Connection[Any]]] = []
        self._secrets = [s for s in _conninfo_secrets(conninfo) if s]

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=WAIT_TIMEOUT):
            raise DatabaseError(f"no free database connection after {WAIT_TIMEOUT:.0f}s")
        try:
            born, conn = self._take()
            try:
                yield conn
            except psycopg.Error as exc:
                raise DatabaseError(self.describe(exc)) from None
            finally:
                self._give_back(born, conn)
        finally:
            self._slots.release()

    def _take(self) -> tuple[float, psycopg.Connection[Any]]:
        with self._lock:
            while self._idle:
                born, conn = self._idle.pop()
                if not conn.closed and not self._too_old(born):
                    return born, conn
                conn.close()
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options=SESSION_OPTIONS,
                application_name="vaultlog",
            )
        except psycopg.Error as exc:
            raise DatabaseError(self.describe(exc)) from None
        # PostgreSQL 14+ then notices within a second that this process died mid-statement
        # and rolls its transaction back, instead of running on until it next writes to it.
        with contextlib.suppress(psycopg.Error):
            conn.execute("SET client_connection_check_interval = 1000")
        return time.monotonic(), conn

    def _give_back(self, born: float, conn: psycopg.Connection[Any]) -> None:
        healthy = not conn.closed and conn.info.transaction_status.name == "IDLE"
        with self._lock:
            if healthy and not self._too_old(born) and len(self._idle) < self._idle_max:
                self._idle.append((born, conn))
                return
        conn.close()

    def _too_old(self, born: float) -> bool:
        return bool(self._lifetime) and time.monotonic() - born > self._lifetime

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()

    def describe(self, exc: BaseException, *hidden: str) -> str:
        """One line, with the connection's password and any ``hidden`` value cut out."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        for secret in (*self._secrets, *hidden):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text[:300]


def _conninfo_secrets(conninfo: str) -> list[str]:
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:
        return []
    return [str(params.get("password") or "")]


def verify(pool: Pool) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT 1")


def _run(
    conn: psycopg.Connection[Any], statements: Sequence[str], name: str, **values: str
) -> None:
    """The administrator's ``statements``, filled in with the role's ``name`` (also as
    ``{{username}}``) and ``values``, each checked safe first."""
    filled = {"name": safe_value("the username", name), "username": name}
    for variable, value in values.items():
        filled[variable] = safe_value(f"the {variable}", value)
    queries = [render(query, filled) for query in split_statements(statements)]
    for query in queries:
        conn.execute(query.encode())


def create_role(
    pool: Pool, statements: Sequence[str], name: str, password: str, valid_until: str
) -> None:
    """Run the creation statements in one transaction: all of them, or nothing."""
    committing = False
    with pool.connection() as conn:
        try:
            with conn.transaction():
                _run(conn, statements, name, password=password, expiration=valid_until)
                committing = True
        except psycopg.Error as exc:
            raise DatabaseError(pool.describe(exc, password), unsure=committing) from None


def renew_role(pool: Pool, statements: Sequence[str], name: str, valid_until: str) -> None:
    with pool.connection() as conn, conn.transaction():
        if statements:
            _run(conn, statements, name, expiration=valid_until)
        else:
            ident = sql.Identifier(name)
            conn.execute(
                sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(ident, sql.Literal(valid_until))
            )


def drop_role(pool: Pool, statements: Sequence[str], name: str) -> None:
    """Revoke a role: the revocation statements if given; else, as Vault's plugin does,
    revoke its privileges, and then (beyond Vault) end its sessions and drop it. A role
    already gone is revoked."""
    with pool.connection() as conn:
        if statements:
            with conn.transaction():
                _run(conn, statements, name)
            return
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
            return
        ident = sql.Identifier(name)
        # The schemas where the role holds a table's or a column's privileges: Vault asks
        # information_schema, which costs PostgreSQL 14 ms here; the catalog, 1 ms.
        schemas = conn.execute(
            "WITH r AS (SELECT oid FROM pg_roles WHERE rolname = %s)"
            " SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE EXISTS (SELECT 1 FROM aclexplode(c.relacl) a, r WHERE a.grantee = r.oid)"
            " OR EXISTS (SELECT 1 FROM pg_attribute t, aclexplode(t.attacl) a, r"
            " WHERE t.attrelid = c.oid AND a.grantee = r.oid)",
            (name,),
        ).fetchall()
        revokes = [
            sql.SQL("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA {} FROM {}"),
            sql.SQL("REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA {} FROM {}"),
            sql.SQL("REVOKE ALL PRIVILEGES ON ALL FUNCTIONS IN SCHEMA {} FROM {}"),
            sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}"),
        ]
        for schema in sorted({"public", *(row[0] for row in schemas)}):
            for revoke in revokes:
                # As Vault's: each on its own, so one refused leaves the others done.
                with contextlib.suppress(psycopg.errors.Error):
                    conn.execute(revoke.format(sql.Identifier(schema), ident))
        with contextlib.suppress(psycopg.errors.Error):
            conn.execute(
                sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                    sql.Identifier(conn.info.dbname), ident
                )
            )
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
        ended = conn.execute(
            "SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE usename = %s",
            (name,),
        ).fetchone()
        if ended is not None and ended[0]:
            raise DatabaseError(f"could not end the sessions of role {name}")
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


def set_password(pool: Pool, statements: Sequence[str], name: str, password: str) -> None:
    """Change a role's password: ``statements`` (``{{username}}``, ``{{password}}``) or
    ``ALTER ROLE ... WITH PASSWORD``."""
    committing = False
    with pool.connection() as conn:
        try:
            with conn.transaction():
                if statements:
                    _run(conn, statements, name, password=password)
                else:
                    conn.execute(
                        sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                            sql.Identifier(name), sql.Literal(password)
                        )
                    )
                committing = True
        except psycopg.Error as exc:
            raise DatabaseError(pool.describe(exc, password), unsure=committing) from None


_REFUSED_LOGIN = ("28P01", "28000")  # invalid password, invalid authorization


def can_log_in(url: str, user: str, password: str) -> bool:
    """Whether ``user`` with ``password`` opens a connection to ``url``'s database: False
    if the database refuses them, an error if it cannot be asked."""
    conninfo = connection_string(url, user, password)
    try:
        psycopg.connect(
            conninfo, user=user, password=password, connect_timeout=CONNECT_TIMEOUT
        ).close()
    except psycopg.Error as exc:
        if exc.sqlstate in _REFUSED_LOGIN or "password authentication failed" in str(exc):
            return False
        message = " ".join(str(exc).split()).replace(password, "[redacted]")
        raise DatabaseError(message[:300]) from None
    return True
