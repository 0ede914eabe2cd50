"""The administrator's SQL templates, filled in safely: ``{{name}}`` (or ``{{username}}``),
``{{password}}`` and ``{{expiration}}`` are replaced by values this store generated, and
every value is checked before it is placed in SQL (``safe_value``), so nothing a caller
names can close a quoted literal or identifier.

Pure functions, without psycopg: the database backend checks and shows its settings, and
runs its timer, without paying for the driver's import.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from urllib.parse import quote

from backends.errors import InvalidRequestError, UpstreamError

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
