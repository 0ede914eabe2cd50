"""Password policies (Vault's ``sys/policies/password/NAME``): how the passwords the store
generates are made, for the database backend's roles and its rotated administrators.

A policy is HCL (or JSON): ``length`` and any number of ``rule "charset"`` blocks, each
with a ``charset`` and ``min-chars``. A password is ``length`` characters drawn by the
operating system's CSPRNG from the union of the charsets, drawn again until every rule
holds. Without a policy, Vault's default: 20 characters of letters, digits and ``-``,
with at least one of each kind.
"""

from __future__ import annotations

import itertools
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from backends.contract import Session
from backends.errors import InvalidRequestError
from backends.hcl import parse_document
from backends.request import Request, Response, who
from projections.events import PolicyDeleted, PolicyWritten
from projections.state import StoreState

ROUTE = "policies/password"
_CHARSET_RULE = re.compile(r'\brule\s+"charset"\s*\{')
GENERATE_WITHIN = 1.0  # seconds to find a password meeting every rule, as Vault allows


@dataclass(frozen=True)
class PasswordPolicy:
    length: int
    rules: tuple[tuple[str, int], ...]  # (charset, min-chars)

    @property
    def charset(self) -> str:
        return "".join(sorted({c for charset, _ in self.rules for c in charset}))

    def generate(self) -> str:
        alphabet = self.charset
        deadline = time.monotonic() + GENERATE_WITHIN
        while time.monotonic() < deadline:
            chars = [secrets.choice(alphabet) for _ in range(self.length)]
            if all(sum(c in charset for c in chars) >= least for charset, least in self.rules):
                return "".join(chars)
        raise InvalidRequestError(
            "unable to generate password: no password meeting every rule was found"
        )


DEFAULT = PasswordPolicy(
    20,
    (
        (string.ascii_lowercase, 1),
        (string.ascii_uppercase, 1),
        (string.digits, 1),
        ("-", 1),
    ),
)


def parse(text: str) -> PasswordPolicy:
    """The policy ``text`` describes; ``InvalidRequestError`` saying what is wrong."""
    # pyhcl merges repeated blocks of one name, where Vault's HCL keeps each: number them.
    numbers = itertools.count()
    numbered = _CHARSET_RULE.sub(lambda _: f'rule "charset" "{next(numbers)}" {{', text)
    try:
        document = parse_document(numbered)
    except ValueError as exc:
        raise InvalidRequestError(f"unable to parse policy: {exc}") from None
    length = document.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or not 4 <= length <= 100:
        raise InvalidRequestError("unable to parse policy: length must be between 4 and 100")
    charsets = _charset_blocks(document)
    rules = []
    for block in charsets:
        charset = block.get("charset") if isinstance(block, dict) else None
        if not isinstance(charset, str) or not charset:
            raise InvalidRequestError("unable to parse policy: a charset rule needs a charset")
        least = block.get("min-chars", 0)
        if not isinstance(least, int) or least < 0:
            raise InvalidRequestError("unable to parse policy: min-chars must be a number ≥ 0")
        rules.append((charset, least))
    if not rules:
        raise InvalidRequestError("unable to parse policy: at least one charset rule is needed")
    if sum(least for _, least in rules) > length:
        raise InvalidRequestError(
            "unable to parse policy: the rules need more characters than length allows"
        )
    return PasswordPolicy(length, tuple(rules))


def _charset_blocks(document: dict[str, Any]) -> list[Any]:
    """The ``rule "charset"`` blocks: numbered, from HCL; a list or one object, from JSON."""
    rules = document.get("rule", {})
    if isinstance(rules, list):
        return [rule.get("charset") for rule in rules if isinstance(rule, dict)]
    blocks = rules.get("charset", {}) if isinstance(rules, dict) else {}
    if not isinstance(blocks, dict):
        return []
    return [blocks] if "charset" in blocks else list(blocks.values())


def named(state: StoreState, name: str) -> PasswordPolicy:
    """Policy ``name`` as written, or Vault's default when ``name`` is empty."""
    if not name:
        return DEFAULT
    text = state.password_policies.get(name)
    if text is None:
        raise InvalidRequestError(f'password policy "{name}" not found')
    return parse(text)


def serve_password_policies(session: Session, request: Request, path: str, op: str) -> Response:
    """``sys/policies/password`` (LIST), ``.../NAME`` and ``.../NAME/generate``."""
    policies = session.state.password_policies
    if path == ROUTE and op == "list":
        return Response(data={"keys": sorted(policies)} if policies else None)
    name = path.removeprefix(f"{ROUTE}/")
    if op == "read" and name.endswith("/generate"):
        name = name.removesuffix("/generate")
        if name not in policies:
            raise InvalidRequestError(f'policy "{name}" does not exist')
        return Response(data={"password": named(session.state, name).generate()})
    if not name or "/" in name:
        raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")
    if op == "read":
        text = policies.get(name)
        return Response(data=None if text is None else {"policy": text})
    if op == "write":
        text = str(request.data.get("policy") or "")
        if not text:
            raise InvalidRequestError("missing policy")
        parse(text).generate()  # a policy no password can meet is refused now
        session.stage(PolicyWritten(**who(request), name=name, rules=text, kind="password"))
        return Response()
    if op == "delete":
        if name in policies:
            session.stage(PolicyDeleted(**who(request), name=name, kind="password"))
        return Response()
    raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")
