"""Projections: the mount table and each mount's stored values, folded from events.

``apply`` folds one event into the state it is given and returns it. It mutates that
state rather than copying it: a copy per event made replay quadratic. Callers that need
an earlier state keep their own copy (``StoreState.copy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace

from projections.events import (
    AuditDeviceDisabled,
    AuditDeviceEnabled,
    Event,
    IntentCompleted,
    IntentRecorded,
    LeaseIssued,
    LeaseRenewed,
    LeaseRevoked,
    LeaseRevokeFailed,
    MountCreated,
    MountMoved,
    MountRemoved,
    MountTuned,
    PolicyDeleted,
    PolicyWritten,
    SecretDeleted,
    SecretRead,
    SecretWritten,
    TokenCreated,
    TokenRenewed,
    TokenRevoked,
    TokenRoleDeleted,
    TokenRoleWritten,
    TokenUsed,
)

NANOS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Mount:
    """A backend mounted at a path. ``id`` never changes, so a remount keeps the data."""

    id: str
    path: str
    type: str
    description: str = ""
    default_lease_ttl: int = 0
    max_lease_ttl: int = 0


@dataclass(frozen=True, slots=True)
class RemovedMount:
    """A mount that was unmounted: its data key is destroyed, its history remains."""

    id: str
    path: str
    type: str
    time: int


@dataclass(frozen=True, slots=True)
class Lease:
    """A live lease: issued, not yet revoked. Times are unix nanoseconds."""

    id: str
    mount_id: str
    path: str
    issued: int
    expires: int
    max_expires: int
    renewable: bool
    internal: bytes
    ttl: int  # seconds: the duration it was issued for, and the default renewal
    failures: int = 0
    last_failure: int = 0
    last_error: str = ""
    pending_reason: str = ""  # set while a revocation keeps failing
    last_renewal: int = 0  # when it was last renewed; 0: never
    token_id: str = ""  # the token that obtained it: revoked with that token


@dataclass(frozen=True, slots=True)
class Token:
    """A live token, known by a keyed hash of it (``id``) and by its ``accessor``. Times
    are unix nanoseconds; ``expires`` 0: never. ``num_uses`` is what is left (0: no
    limit)."""

    id: str
    accessor: str
    policies: tuple[str, ...]
    path: str
    display_name: str
    issued: int
    expires: int
    max_expires: int
    ttl: int
    period: int
    num_uses: int
    renewable: bool
    parent: str
    meta: dict[str, str]
    token_type: str = "service"
    last_renewal: int = 0
    explicit_max_ttl: int = 0


@dataclass(frozen=True, slots=True)
class AuditDevice:
    """An enabled audit device: where, of which type, its options, and the first seq it
    writes."""

    path: str
    type: str
    description: str
    options: dict[str, str]
    since: int
    enabled: int  # the seq of its ``audit.enabled``


@dataclass(frozen=True, slots=True)
class Intent:
    """An action outside the store that was started and has no recorded outcome yet."""

    id: str
    mount_id: str
    action: str
    data: bytes
    time: int


@dataclass
class MountTable:
    """Live mounts by id, with an index by path."""

    by_id: dict[str, Mount] = field(default_factory=dict)
    by_path: dict[str, str] = field(default_factory=dict)

    def add(self, mount: Mount) -> None:
        self.by_id[mount.id] = mount
        self.by_path[mount.path] = mount.id

    def remove(self, mount_id: str) -> Mount:
        mount = self.by_id.pop(mount_id)
        del self.by_path[mount.path]
        return mount

    def at(self, path: str) -> Mount | None:
        """The mount whose mount point is exactly ``path``."""
        mount_id = self.by_path.get(path)
        return None if mount_id is None else self.by_id[mount_id]

    def route(self, path: str) -> tuple[Mount, str] | None:
        """The mount serving ``path`` (the longest mount point it starts with) and the
        path inside that mount, or None."""
        candidate = path if path.endswith("/") else path + "/"
        end = len(candidate)
        while end > 0:
            mount = self.at(candidate[:end])
            if mount is not None:
                return mount, path[len(mount.path) :]
            end = candidate.rfind("/", 0, end - 1) + 1
        return None

    def sorted(self) -> list[Mount]:
        return sorted(self.by_id.values(), key=lambda m: m.path)

    def copy(self) -> MountTable:
        return MountTable(dict(self.by_id), dict(self.by_path))


class MountData(MutableMapping[str, bytes]):
    """One mount's values (path -> sealed value) as a snapshot holds them, read from the
    snapshot on first use: opening a store costs nothing for the mounts no command touches.

    Writes made before that (replay after the snapshot, new commits) are kept in order and
    applied once loaded; anything else loads first. If loading fails (a damaged section
    found late), ``fallback`` rebuilds the values from the log instead.
    """

    __slots__ = ("_count", "_load", "_pending", "_values", "fallback")

    def __init__(self, load: Callable[[], dict[str, bytes]], count: int) -> None:
        self._values: dict[str, bytes] | None = None
        self._load: Callable[[], dict[str, bytes]] | None = load
        self._pending: list[tuple[str, bytes]] = []
        self._count = count
        self.fallback: Callable[[], dict[str, bytes]] | None = None

    def _loaded(self) -> dict[str, bytes]:
        if self._values is None:
            assert self._load is not None
            try:
                values = self._load()
            except Exception:
                if self.fallback is None:
                    raise
                values = self.fallback()
            values.update(self._pending)
            self._values, self._load, self._pending, self.fallback = values, None, [], None
        return self._values

    @property
    def loaded(self) -> bool:
        return self._values is not None

    def size_hint(self) -> int:
        """How many values, without loading: at most this many."""
        if self._values is not None:
            return len(self._values)
        return self._count + len(self._pending)

    def __getitem__(self, path: str) -> bytes:
        return self._loaded()[path]

    def __setitem__(self, path: str, value: bytes) -> None:
        if self._values is None:
            self._pending.append((path, value))
        else:
            self._values[path] = value

    def __delitem__(self, path: str) -> None:
        del self._loaded()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        if self._values is None:
            return f"MountData(<{self._count} values not loaded>, {len(self._pending)} writes)"
        return f"MountData({self._values!r})"


def live_values(values: MutableMapping[str, bytes]) -> int:
    """How many values a mount holds, without loading a snapshot's section."""
    return values.size_hint() if isinstance(values, MountData) else len(values)


@dataclass
class StoreState:
    """Everything a store knows at one seq, as replay rebuilds it."""

    seq: int = 0
    mounts: MountTable = field(default_factory=MountTable)
    # mount id -> path -> sealed value: a dict, or a snapshot's ``MountData``
    data: dict[str, MutableMapping[str, bytes]] = field(default_factory=dict)
    removed: dict[str, RemovedMount] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)  # by keyed hash
    accessors: dict[str, str] = field(default_factory=dict)  # accessor -> token id
    policies: dict[str, str] = field(default_factory=dict)  # name -> rules, as written
    audit_devices: dict[str, AuditDevice] = field(default_factory=dict)  # by path
    # The seq of the last policy change: ACLs are cached by it.
    policy_seq: int = 0
    token_roles: dict[str, dict[str, object]] = field(default_factory=dict)  # by name
    password_policies: dict[str, str] = field(default_factory=dict)  # name -> HCL

    def copy(self) -> StoreState:
        return StoreState(
            self.seq,
            self.mounts.copy(),
            {mount_id: dict(values) for mount_id, values in self.data.items()},
            dict(self.removed),
            dict(self.leases),
            dict(self.intents),
            dict(self.tokens),
            dict(self.accessors),
            dict(self.policies),
            dict(self.audit_devices),
            self.policy_seq,
            dict(self.token_roles),
            dict(self.password_policies),
        )

    def children(self, token_id: str) -> list[Token]:
        """The live tokens whose parent is ``token_id``."""
        return [token for token in self.tokens.values() if token.parent == token_id]

    def leases_under(self, prefix: str) -> list[Lease]:
        """Live leases whose id starts with ``prefix``, in id order."""
        return sorted(
            (lease for lease in self.leases.values() if lease.id.startswith(prefix)),
            key=lambda lease: lease.id,
        )


def apply(state: StoreState, event: Event) -> StoreState:
    """Fold one event into ``state`` (in place) and return it."""
    match event:
        case SecretWritten():
            state.data[event.mount_id][event.path] = event.value
        case SecretRead():
            pass  # a fact of the history; the state moves on only in its seq
        case SecretDeleted():
            state.data[event.mount_id].pop(event.path, None)
        case MountCreated():
            mount = Mount(
                event.mount_id,
                event.path,
                event.backend_type,
                event.description,
                event.default_lease_ttl,
                event.max_lease_ttl,
            )
            state.mounts.add(mount)
            state.data[event.mount_id] = {}
        case MountRemoved():
            mount = state.mounts.remove(event.mount_id)
            del state.data[event.mount_id]
            state.removed[mount.id] = RemovedMount(mount.id, mount.path, mount.type, event.time)
            # Its key is destroyed: nothing of the mount can be revoked or rolled back now.
            for lease in [x for x in state.leases.values() if x.mount_id == mount.id]:
                del state.leases[lease.id]
            for intent in [x for x in state.intents.values() if x.mount_id == mount.id]:
                del state.intents[intent.id]
        case LeaseIssued():
            state.leases[event.lease_id] = Lease(
                event.lease_id,
                event.mount_id,
                event.path,
                event.time,
                event.time + event.ttl * NANOS,
                event.time + event.max_ttl * NANOS,
                event.renewable,
                event.internal,
                event.ttl,
                token_id=event.token_id,
            )
        case LeaseRenewed():
            lease = state.leases[event.lease_id]
            state.leases[lease.id] = replace(lease, expires=event.expires, last_renewal=event.time)
        case LeaseRevoked():
            state.leases.pop(event.lease_id, None)
        case LeaseRevokeFailed():
            lease = state.leases[event.lease_id]
            state.leases[lease.id] = replace(
                lease,
                failures=event.attempt,
                last_failure=event.time,
                last_error=event.error,
                pending_reason=event.reason,
            )
        case IntentRecorded():
            state.intents[event.intent_id] = Intent(
                event.intent_id, event.mount_id, event.action, event.data, event.time
            )
        case IntentCompleted():
            state.intents.pop(event.intent_id, None)
        case MountMoved():
            mount = state.mounts.remove(event.mount_id)
            state.mounts.add(
                Mount(
                    mount.id,
                    event.to_path,
                    mount.type,
                    mount.description,
                    mount.default_lease_ttl,
                    mount.max_lease_ttl,
                )
            )
        case MountTuned():
            mount = state.mounts.by_id[event.mount_id]
            state.mounts.add(
                replace(
                    mount,
                    description=event.description,
                    default_lease_ttl=event.default_lease_ttl,
                    max_lease_ttl=event.max_lease_ttl,
                )
            )
        case TokenCreated() | TokenRenewed() | TokenUsed() | TokenRevoked():
            _apply_token(state, event)
        case TokenRoleWritten():
            state.token_roles[event.name] = dict(event.settings)
        case TokenRoleDeleted():
            state.token_roles.pop(event.name, None)
        case PolicyWritten() if event.kind == "password":
            state.password_policies[event.name] = event.rules
        case PolicyDeleted() if event.kind == "password":
            state.password_policies.pop(event.name, None)
        case PolicyWritten():
            state.policies[event.name] = event.rules
            state.policy_seq = event.seq
        case PolicyDeleted():
            state.policies.pop(event.name, None)
            state.policy_seq = event.seq
        case AuditDeviceEnabled():
            state.audit_devices[event.path] = AuditDevice(
                event.path,
                event.device_type,
                event.description,
                dict(event.options),
                event.since,
                event.seq,
            )
        case AuditDeviceDisabled():
            state.audit_devices.pop(event.path, None)
    state.seq = event.seq
    return state


def _apply_token(state: StoreState, event: Event) -> None:
    match event:
        case TokenCreated():
            max_expires = (
                event.time + event.explicit_max_ttl * NANOS if event.explicit_max_ttl else 0
            )
            state.tokens[event.token_id] = Token(
                event.token_id,
                event.accessor,
                tuple(event.policies),
                event.path,
                event.display_name,
                event.time,
                event.time + event.ttl * NANOS if event.ttl else 0,
                max_expires,
                event.ttl,
                event.period,
                event.num_uses,
                event.renewable,
                event.parent,
                dict(event.meta),
                event.token_type,
                explicit_max_ttl=event.explicit_max_ttl,
            )
            state.accessors[event.accessor] = event.token_id
        case TokenRenewed():
            token = state.tokens[event.token_id]
            state.tokens[token.id] = replace(token, expires=event.expires, last_renewal=event.time)
        case TokenUsed():  # the last use leaves -1: used up, revoked after its request
            token = state.tokens[event.token_id]
            state.tokens[token.id] = replace(token, num_uses=token.num_uses - 1 or -1)
        case TokenRevoked():
            gone = state.tokens.pop(event.token_id, None)
            if gone is not None:
                state.accessors.pop(gone.accessor, None)
                if event.reason == "orphan":  # revoke-orphan: its children live on, orphans
                    for child in state.children(gone.id):
                        state.tokens[child.id] = replace(child, parent="")


def replay(events: Iterable[Event], state: StoreState | None = None) -> StoreState:
    """The state after folding ``events`` into ``state`` (an empty store by default)."""
    state = StoreState() if state is None else state
    for event in events:
        apply(state, event)
    return state
