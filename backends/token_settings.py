"""What an auth method's user or role says of the tokens a login gets (Vault's tokenutil):
``token_policies``, ``token_ttl``, ``token_max_ttl``, ``token_explicit_max_ttl``,
``token_period``, ``token_num_uses``, ``token_no_default_policy``, and the older names
Vault still takes (``policies``, ``ttl``, ``max_ttl``, ``period``), shown back on read
while they are the ones last given. CIDR bindings are refused: this server does not see
the client's address, so it could not keep them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from backends.contract import MountView
from backends.errors import InvalidRequestError
from backends.token import (
    TOKEN_DEFAULT_TTL,
    display_name,
    flag,
    issue,
    policy_list,
    with_default,
)
from backends.ttl import parse_duration

# Vault's names for each setting, today's first, then the older one.
_NAMES = {
    "policies": ("token_policies", "policies"),
    "ttl": ("token_ttl", "ttl"),
    "max_ttl": ("token_max_ttl", "max_ttl"),
    "explicit_max_ttl": ("token_explicit_max_ttl", ""),
    "period": ("token_period", "period"),
    "num_uses": ("token_num_uses", ""),
    "no_default_policy": ("token_no_default_policy", ""),
}
CIDR_FIELDS = ("token_bound_cidrs", "bound_cidrs", "secret_id_bound_cidrs", "cidr_list")


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """The settings of the tokens one user or role logs in to; ``legacy``: the settings
    last given by their older names."""

    policies: tuple[str, ...] = ()
    ttl: int = 0
    max_ttl: int = 0
    explicit_max_ttl: int = 0
    period: int = 0
    num_uses: int = 0
    no_default_policy: bool = False
    legacy: tuple[str, ...] = ()

    def updated(self, data: dict[str, Any]) -> TokenSettings:
        """These settings with what ``data`` gives (today's name wins over the older)."""
        refuse_cidrs(data)
        if data.get("token_type") not in (None, "", "default", "service", "default-service"):
            raise InvalidRequestError("only service tokens are issued by this server")
        changes: dict[str, Any] = {}
        legacy = set(self.legacy)
        for setting, (name, old) in _NAMES.items():
            given = name if name in data else old if old and old in data else ""
            if not given:
                continue
            changes[setting] = _parsed(setting, given, data[given])
            if given == old:
                legacy.add(setting)
            else:
                legacy.discard(setting)
        settings = replace(self, **changes, legacy=tuple(sorted(legacy)))
        if settings.max_ttl and settings.ttl > settings.max_ttl:
            raise InvalidRequestError("'token_ttl' cannot be greater than 'token_max_ttl'")
        return settings

    def stored(self) -> dict[str, Any]:
        """A plain map, to be sealed with the user or role."""
        return asdict(self)

    @classmethod
    def of(cls, stored: dict[str, Any]) -> TokenSettings:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in known
        }
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        """What a read of the user or role shows of them, in Vault's names."""
        data: dict[str, Any] = {
            "token_bound_cidrs": [],
            "token_explicit_max_ttl": self.explicit_max_ttl,
            "token_max_ttl": self.max_ttl,
            "token_no_default_policy": self.no_default_policy,
            "token_num_uses": self.num_uses,
            "token_period": self.period,
            "token_policies": list(self.policies),
            "token_strictly_bind_ip": False,
            "token_ttl": self.ttl,
            "token_type": "default",
        }
        for setting in self.legacy:
            data[_NAMES[setting][1]] = data[_NAMES[setting][0]]
        return data

    def issue(
        self, view: MountView, *, name: str, path: str, meta: dict[str, str]
    ) -> dict[str, Any]:
        """Stage a login's token (an orphan, as Vault's logins are) and answer its ``auth``
        block. Its display name is the method's mount path and ``name``, as Vault's; its
        TTL is bounded by the mount's."""
        mount = view.mount
        max_ttl = self.max_ttl or mount.max_lease_ttl or TOKEN_DEFAULT_TTL
        ttl = min(self.ttl or mount.default_lease_ttl or TOKEN_DEFAULT_TTL, max_ttl)
        prefix = mount.path.removeprefix("auth/").strip("/").replace("/", "-")
        return issue(
            view.session,
            policies=with_default(list(self.policies), no_default=self.no_default_policy),
            path=path,
            display=display_name(prefix, name),
            ttl=ttl,
            explicit_max_ttl=self.explicit_max_ttl
            or (max_ttl if max_ttl < TOKEN_DEFAULT_TTL else 0),
            period=self.period,
            num_uses=self.num_uses,
            meta=meta,
        )


def refuse_cidrs(data: dict[str, Any]) -> None:
    for name in CIDR_FIELDS:
        if data.get(name) not in (None, "", []):
            raise InvalidRequestError(f"{name} is not supported by this server")


def _parsed(setting: str, name: str, value: object) -> Any:
    if setting == "policies":  # lower-cased, as policy names are
        return tuple(dict.fromkeys(p.lower() for p in policy_list(value)))
    if setting == "no_default_policy":
        return flag(name, value)
    if setting == "num_uses":
        try:
            number = int(str(value))
        except ValueError:
            raise InvalidRequestError(f"{name} must be a whole number") from None
        if number < 0:
            raise InvalidRequestError(f"{name} cannot be negative")
        return number
    return parse_duration(value if value not in (None, "") else 0)
