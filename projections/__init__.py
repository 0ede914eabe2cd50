"""Domain events and the pure folds that rebuild every view of a store from the log."""

from projections.events import (
    EVENT_TYPES,
    Event,
    MountCreated,
    MountMoved,
    MountRemoved,
    SecretDeleted,
    SecretWritten,
    UnknownEventError,
    decode,
    encode,
)
from projections.state import Mount, MountTable, RemovedMount, StoreState, apply, replay

__all__ = [
    "EVENT_TYPES",
    "Event",
    "Mount",
    "MountCreated",
    "MountMoved",
    "MountRemoved",
    "MountTable",
    "RemovedMount",
    "SecretDeleted",
    "SecretWritten",
    "StoreState",
    "UnknownEventError",
    "apply",
    "decode",
    "encode",
    "replay",
]
