"""ACL policies: Vault's HCL rules, merged across policies, matched by Vault's priority."""

from __future__ import annotations

import pytest

from backends.errors import InvalidRequestError
from backends.policy import ACL, CAPABILITIES, parse_policy


def acl(*texts: str) -> ACL:
    return ACL(parse_policy(f"p{i}", text) for i, text in enumerate(texts))


def test_exact_prefix_and_deny() -> None:
    rules = acl(
        """
        path "secret/*" { capabilities = ["read", "list"] }
        path "secret/super-secret" { capabilities = ["deny"] }
        path "secret/app" { capabilities = ["create", "update"] }
        """
    )
    assert rules.capabilities("secret/other") == {"read", "list"}
    assert rules.capabilities("secret/deep/er") == {"read", "list"}
    assert rules.capabilities("secret/super-secret") == set()
    assert rules.capabilities("secret/app") == {"create", "update"}  # exact beats the prefix
    assert rules.capabilities("secretive") == set()
    assert rules.capabilities("other/x") == set()


def test_plus_stands_for_one_whole_segment() -> None:
    rules = acl('path "secret/+/config" { capabilities = ["read"] }')
    assert rules.allows("read", "secret/team/config")
    assert not rules.allows("read", "secret/config")
    assert not rules.allows("read", "secret/a/b/config")
    glob = acl('path "secret/+/conf*" { capabilities = ["read"] }')
    assert glob.allows("read", "secret/a/config")
    assert glob.allows("read", "secret/a/conf/deeper")
    assert not glob.allows("read", "secret/a/other")


@pytest.mark.parametrize(
    ("patterns", "path", "winner"),
    [
        # 1. the later first wildcard wins
        (["secret/*", "secret/a/*"], "secret/a/b", "secret/a/*"),
        (["+/a/b", "secret/+/b"], "secret/a/b", "secret/+/b"),
        # 2. with the first wildcard at the same place, no trailing * beats one
        (["secret/*", "secret/+/x"], "secret/a/x", "secret/+/x"),
        # 3. then fewer + segments win
        (["secret/+/+/c*", "secret/+/b/c*"], "secret/a/b/cd", "secret/+/b/c*"),
        # 4. then the longer wins
        (["secret/+/b*", "secret/+/bc*"], "secret/a/bcd", "secret/+/bc*"),
        # exact, always
        (["secret/foo*", "secret/foo"], "secret/foo", "secret/foo"),
    ],
)
def test_vaults_priority_between_overlapping_paths(
    patterns: list[str], path: str, winner: str
) -> None:
    # each pattern grants a capability of its own, so the answer names the winner
    granted = ["create", "read", "update", "delete", "list"]
    text = "\n".join(
        f'path "{p}" {{ capabilities = ["{granted[i]}"] }}' for i, p in enumerate(patterns)
    )
    assert acl(text).capabilities(path) == {granted[patterns.index(winner)]}


def test_policies_merge_and_deny_wins() -> None:
    reader = 'path "secret/app/*" { capabilities = ["read"] }'
    writer = 'path "secret/app/*" { capabilities = ["update", "create"] }'
    denier = 'path "secret/app/*" { capabilities = ["deny"] }'
    assert acl(reader, writer).capabilities("secret/app/db") == {"read", "update", "create"}
    assert acl(reader, writer, denier).capabilities("secret/app/db") == set()


def test_root_grants_everything_and_nothing_grants_nothing() -> None:
    assert ACL([], root=True).capabilities("any/path") == CAPABILITIES - {"deny"}
    assert ACL([]).capabilities("secret/x") == set()


def test_legacy_policy_values_and_json() -> None:
    legacy = acl('path "secret/*" { policy = "write" }')
    assert legacy.capabilities("secret/a") == {"create", "read", "update", "delete", "list"}
    as_json = acl('{"path": {"sys/mounts": {"capabilities": ["read", "sudo"]}}}')
    assert as_json.capabilities("sys/mounts") == {"read", "sudo"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('path "a/*" { capabilities = ["reed"] }', "unknown capability 'reed'"),
        ('path "a/*/b" { capabilities = ["read"] }', "'*' may only end a path"),
        ('path "a/b+/c" { capabilities = ["read"] }', "'+' must be a whole segment"),
        ('path "a" { capabilities = "read" }', "needs a list of capabilities"),
        ('path "a" { policy = "everything" }', "unknown policy 'everything'"),
        (
            'path "a" { capabilities = ["read"] }\npath "a" { capabilities = ["list"] }',
            "is given twice",
        ),
        ('path "a" { capabilities = ["read"]', "invalid HCL"),
        ("{not json", "invalid JSON"),
        ('bogus = 1\npath "a" { capabilities = ["read"] }', "unknown key 'bogus'"),
    ],
)
def test_bad_policies_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        parse_policy("p", text)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
