"""ACL policies in Vault's language: HCL (or JSON) ``path`` rules, and the capabilities
they grant on a request path.

A rule's path is exact (``secret/app``), a prefix (``secret/app/*``: ``*`` only at the end)
or has ``+`` segments, each standing for one whole segment (``secret/+/config``). The
rules of every policy a token holds are merged: the same path's capabilities are joined,
and ``deny`` takes away everything else. A request path is then governed by the one rule
with the highest priority among those that match it (Vault's order: a later first
wildcard wins; no trailing ``*`` beats one; fewer ``+`` segments win; longer wins; then
lexically greater). Not yet wired into the Core: tokens bring it (issue 10).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from backends.errors import InvalidRequestError
from backends.hcl import parse_document

CAPABILITIES = frozenset({"create", "read", "update", "delete", "list", "sudo", "deny"})
# Vault's legacy ``policy = "..."`` values, as the capabilities they stand for.
LEGACY = {
    "deny": frozenset({"deny"}),
    "read": frozenset({"read", "list"}),
    "write": frozenset({"create", "read", "update", "delete", "list"}),
    "sudo": frozenset({"create", "read", "update", "delete", "list", "sudo"}),
}
_PATH_BLOCK = re.compile(r'^\s*path\s+"((?:[^"\\]|\\.)*)"', re.MULTILINE)


@dataclass(frozen=True)
class Policy:
    """A named policy: path patterns and the capabilities each grants."""

    name: str
    rules: dict[str, frozenset[str]]


def parse_policy(name: str, text: str) -> Policy:
    """The policy ``text`` (HCL, or JSON), checked: every path has known capabilities.
    Each problem is one ``InvalidRequestError`` naming the policy and the path."""
    raw = _load(name, text)
    paths = raw.get("path", {})
    if not isinstance(paths, dict):
        raise InvalidRequestError(f"policy {name!r}: 'path' must be a block per path")
    unknown = set(raw) - {"path", "name"}
    if unknown:
        raise InvalidRequestError(f"policy {name!r}: unknown key {sorted(unknown)[0]!r}")
    rules: dict[str, frozenset[str]] = {}
    for pattern, body in paths.items():
        _check_pattern(name, pattern)
        rules[pattern] = _capabilities(name, pattern, body)
    return Policy(name, rules)


def _load(name: str, text: str) -> dict:
    seen: set[str] = set()
    for match in _PATH_BLOCK.finditer(text):  # pyhcl keeps only the last of twins
        if match.group(1) in seen:
            raise InvalidRequestError(
                f"policy {name!r}: path {match.group(1)!r} is given twice: "
                "give all its capabilities in one block"
            )
        seen.add(match.group(1))
    try:
        return parse_document(text)
    except ValueError as exc:
        raise InvalidRequestError(f"policy {name!r}: {exc}") from None


def _check_pattern(name: str, pattern: str) -> None:
    body = pattern.removesuffix("*")
    if "*" in body:
        raise InvalidRequestError(f"policy {name!r}: path {pattern!r}: '*' may only end a path")
    for segment in body.split("/"):
        if "+" in segment and segment != "+":
            raise InvalidRequestError(
                f"policy {name!r}: path {pattern!r}: '+' must be a whole segment"
            )


def _capabilities(name: str, pattern: str, body: object) -> frozenset[str]:
    if not isinstance(body, dict):
        raise InvalidRequestError(f"policy {name!r}: path {pattern!r} must be a block")
    if "policy" in body:  # Vault's legacy form
        legacy = LEGACY.get(str(body["policy"]))
        if legacy is None:
            raise InvalidRequestError(
                f"policy {name!r}: path {pattern!r}: unknown policy {body['policy']!r}"
            )
        return legacy
    granted = body.get("capabilities")
    if not isinstance(granted, list) or not all(isinstance(c, str) for c in granted):
        raise InvalidRequestError(f"policy {name!r}: path {pattern!r} needs a list of capabilities")
    unknown = set(granted) - CAPABILITIES
    if unknown:
        raise InvalidRequestError(
            f"policy {name!r}: path {pattern!r}: unknown capability {sorted(unknown)[0]!r}"
        )
    return frozenset(granted)


@dataclass(frozen=True)
class _Rule:
    pattern: str
    capabilities: frozenset[str]
    glob: bool
    segments: tuple[str, ...] | None  # None: no '+', matched as a string

    @classmethod
    def of(cls, pattern: str, capabilities: frozenset[str]) -> _Rule:
        glob = pattern.endswith("*")
        body = pattern.removesuffix("*")
        parts = tuple(body.split("/"))
        return cls(pattern, capabilities, glob, parts if "+" in parts else None)

    def matches(self, path: str) -> bool:
        body = self.pattern.removesuffix("*") if self.glob else self.pattern
        if self.segments is None:
            return path.startswith(body) if self.glob else path == body
        wanted, given = self.segments, path.split("/")
        if len(given) < len(wanted) or (not self.glob and len(given) != len(wanted)):
            return False
        last = len(wanted) - 1
        for i, segment in enumerate(wanted):
            if segment == "+":
                continue
            if i == last and self.glob:
                if not given[i].startswith(segment):
                    return False
            elif given[i] != segment:
                return False
        return True

    def priority(self) -> tuple[int, int, int, int, str]:
        """Larger is more specific, in the order of Vault's rules."""
        wildcards = [i for i, c in enumerate(self.pattern) if c in "+*"]
        first_wildcard = wildcards[0] if wildcards else len(self.pattern) + 1
        plus_segments = self.pattern.split("/").count("+")
        return (
            first_wildcard,
            0 if self.glob else 1,
            -plus_segments,
            len(self.pattern),
            self.pattern,
        )


class ACL:
    """The merged rules of a token's policies; ``root`` grants everything.

    Rules are indexed by their literal prefix (the pattern up to its first ``+`` or
    ``*``), so a path is matched against only the rules whose prefix it starts with: a
    lookup per prefix of the path, however many rules there are. Answers are remembered
    per path (a bounded memo), as the same paths are asked again and again.
    """

    MEMO = 4096  # paths remembered per ACL

    def __init__(self, policies: Iterable[Policy], *, root: bool = False) -> None:
        self.root = root
        merged: dict[str, frozenset[str]] = {}
        for policy in policies:
            for pattern, capabilities in policy.rules.items():
                joined = merged.get(pattern, frozenset()) | capabilities
                merged[pattern] = frozenset({"deny"}) if "deny" in joined else joined
        self._by_prefix: dict[str, list[_Rule]] = {}
        for pattern, capabilities in merged.items():
            literal = re.split(r"[+*]", pattern, maxsplit=1)[0]
            self._by_prefix.setdefault(literal, []).append(_Rule.of(pattern, capabilities))
        self._memo: dict[str, frozenset[str]] = {}

    def capabilities(self, path: str) -> frozenset[str]:
        """What the token may do at ``path``: the highest-priority matching rule's
        capabilities; none when no rule matches, or when that rule denies."""
        if self.root:
            return CAPABILITIES - {"deny"}
        known = self._memo.get(path)
        if known is not None:
            return known
        by_prefix = self._by_prefix
        matching = [
            rule
            for end in range(len(path) + 1)
            for rule in by_prefix.get(path[:end], ())
            if rule.matches(path)
        ]
        granted: frozenset[str] = frozenset()
        if matching:
            best = max(matching, key=_Rule.priority)
            granted = frozenset() if "deny" in best.capabilities else best.capabilities
        if len(self._memo) >= self.MEMO:
            self._memo.clear()
        self._memo[path] = granted
        return granted

    def allows(self, capability: str, path: str) -> bool:
        return capability in self.capabilities(path)
