"""PostgreSQL roles for the database backend: create, renew, revoke, and set a password,
through a small bounded pool of connections (Vault's postgresql-database-plugin).

psycopg is imported here only, and this module only when a database mount is used.
Statements are the administrator's templates: ``{{name}}`` (or ``{{username}}``),
``{{password}}`` and ``{{expiration}}`` are replaced by values this store generated, and
every value is checked before it is placed in SQL (``safe_value``), so nothing a caller
names can close a quoted literal or identifier. The store's own statements quote with
psycopg's ``sql.Identifier`` and ``sql.Literal``.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from backends.errors import InvalidRequestError, UpstreamError

CONNECT_TIMEOUT = 5  # seconds to reach the database
WAIT_TIMEOUT = 10.0  # seconds to wait for a connection when all are in use
# A statement that runs longer, or waits on a lock longer, is cancelled: a revocation
# blocked behind a long transaction fails (and is retried) instead of hanging a request.
SESSION_OPTIONS = "-c statement_timeout=30000 -c lock_timeout=10000"

_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
_UNSAFE = re.compile(r"""['"\\$\x00-\x1f\x7f]""")
VARIABLES = frozenset({"name", "username", "password", "expiration"})


class DatabaseError(UpstreamError):
    """The database refused or could not be reached (HTTP 502); the message is one line
    and never holds a password. ``unsure``: the failure came at COMMIT, so what was asked
    may have been done."""

    def __init__(self, message: str, *, unsure: bool = False) -> None:
        super().__init__(message)
        self.unsure = unsure


def safe_value(what: str, value: str) -> str:
    """``value`` if it cannot end a quoted SQL literal or identifier, else refuse it."""
    if not value or _UNSAFE.search(value):
        raise InvalidRequestError(f"{what} holds characters that are not safe in SQL")
    return value


def check_template(field: str, statements: Sequence[str]) -> None:
    """Refuse a template naming a variable this store does not fill in."""
    for statement in statements:
        for variable in _TEMPLATE.findall(statement):
            if variable not in VARIABLES:
                raise InvalidRequestError(
                    f"unknown template variable {{{{{variable}}}}} in {field}"
                )


def render(statement: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise InvalidRequestError(f"template variable {{{{{name}}}}} has no value here")
        return values[name]

    return _TEMPLATE.sub(value, statement)


def split_statements(statements: Sequence[str]) -> list[str]:
    """One query per ``;``, as Vault splits them; a statement holding ``$$`` (a function
    body, a DO block) is run whole."""
    queries = []
    for statement in statements:
        if "$$" in statement:
            queries.append(statement.strip())
        else:
            queries.extend(part.strip() for part in statement.split(";"))
    return [query for query in queries if query]


def connection_string(url: str, username: str, password: str) -> str:
    """``url`` with ``{{username}}`` and ``{{password}}`` filled in, percent-encoded."""
    return url.replace("{{username}}", quote(username, safe="")).replace(
        "{{password}}", quote(password, safe="")
    )


def expiration(unix_seconds: float) -> str:
    """A role's VALID UNTIL, in the form Vault's plugin writes (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S+0000", time.gmtime(unix_seconds))


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


def create_role(
    pool: Pool, statements: Sequence[str], name: str, password: str, valid_until: str
) -> None:
    """Run the creation statements in one transaction: all of them, or nothing."""
    values = {
        "name": safe_value("the username", name),
        "username": name,
        "password": safe_value("the generated password", password),
        "expiration": valid_until,
    }
    queries = [render(q, values) for q in split_statements(statements)]
    committing = False
    with pool.connection() as conn:
        try:
            with conn.transaction():
                for query in queries:
                    conn.execute(query.encode())
                committing = True
        except psycopg.Error as exc:
            raise DatabaseError(pool.describe(exc, password), unsure=committing) from None


def renew_role(pool: Pool, statements: Sequence[str], name: str, valid_until: str) -> None:
    with pool.connection() as conn, conn.transaction():
        if statements:
            values = {"name": safe_value("the username", name), "username": name}
            values["expiration"] = valid_until
            for query in split_statements(statements):
                conn.execute(render(query, values).encode())
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
            values = {"name": safe_value("the username", name), "username": name}
            with conn.transaction():
                for query in split_statements(statements):
                    conn.execute(render(query, values).encode())
            return
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
            return
        ident = sql.Identifier(name)
        schemas = conn.execute(
            "SELECT DISTINCT table_schema FROM information_schema.role_table_grants"
            " WHERE grantee = %s UNION SELECT DISTINCT table_schema"
            " FROM information_schema.role_column_grants WHERE grantee = %s",
            (name, name),
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
    with pool.connection() as conn:
        try:
            with conn.transaction():
                if statements:
                    values = {
                        "name": safe_value("the username", name),
                        "username": name,
                        "password": safe_value("the generated password", password),
                    }
                    for query in split_statements(statements):
                        conn.execute(render(query, values).encode())
                else:
                    conn.execute(
                        sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                            sql.Identifier(name), sql.Literal(password)
                        )
                    )
        except psycopg.Error as exc:
            raise DatabaseError(pool.describe(exc, password)) from None


_REFUSED_LOGIN = ("28P01", "28000")  # invalid password, invalid authorization


def can_log_in(conninfo: str) -> bool:
    """Whether these credentials open a connection: False if the database refuses them,
    an error if it cannot be asked."""
    try:
        psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg.Error as exc:
        if exc.sqlstate in _REFUSED_LOGIN or "password authentication failed" in str(exc):
            return False
        raise DatabaseError(" ".join(str(exc).split())[:300]) from None
    return True
