"""Embedded persistence for streams, conference rooms and tokens (see `base.Store`)."""

from .base import (
    LIVE_STATUSES,
    SORT_FIELDS,
    RoomRecord,
    Store,
    StreamRecord,
    StreamStatus,
    TokenRecord,
    TokenType,
    now_ms,
)
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = [
    "LIVE_STATUSES",
    "SORT_FIELDS",
    "MemoryStore",
    "RoomRecord",
    "SqliteStore",
    "Store",
    "StreamRecord",
    "StreamStatus",
    "TokenRecord",
    "TokenType",
    "now_ms",
]
