"""Persistent record types and the `Store` protocol every storage backend implements.

Records are plain dataclasses with snake_case attributes; the REST layer maps them
to Ant Media Server's camelCase JSON. Every store method takes the application
name first: applications are independent namespaces, so the same stream id may
exist in two applications.

This module depends on the standard library only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "LIVE_STATUSES",
    "SORT_FIELDS",
    "RoomRecord",
    "Store",
    "StreamRecord",
    "StreamStatus",
    "TokenRecord",
    "TokenType",
    "now_ms",
]

StreamStatus = Literal["created", "broadcasting", "finished", "preparing"]
TokenType = Literal["play", "publish"]

#: Stream fields a list may be sorted by (REST `sort_by`), as record attributes.
SORT_FIELDS: dict[str, str] = {"name": "name", "date": "date", "status": "status"}

#: Statuses that mean "a publisher is (or was about to be) live".
LIVE_STATUSES: tuple[str, ...] = ("broadcasting", "preparing")


def now_ms() -> int:
    """Current wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass
class StreamRecord:
    """A stream (AMS "Broadcast"). Times: `date`/`start_time`/`update_time`/`duration` in ms,
    `planned_*` in unix seconds."""

    stream_id: str
    name: str = ""
    description: str = ""
    status: str = "created"
    type: str = "liveStream"
    publish_type: str = "WebRTC"
    date: int = field(default_factory=now_ms)
    planned_start_date: int = 0
    planned_end_date: int = 0
    start_time: int = 0
    update_time: int = 0
    duration: int = 0
    meta_data: str = ""
    role: str = ""
    main_track_stream_id: str = ""
    sub_track_stream_ids: list[str] = field(default_factory=list)
    webrtc_viewer_count: int = 0
    public_stream: bool = True
    origin_address: str = ""
    remote_ip: str = ""
    user_agent: str = "N/A"
    subtracks_limit: int = -1
    webrtc_viewer_limit: int = -1
    zombi: bool = False
    absolute_start_time_ms: int = 0
    listener_hook_url: str = ""


@dataclass
class RoomRecord:
    """A conference room (AMS "ConferenceRoom", and a main-track Broadcast). Dates are unix
    seconds; `end_date` 0 means the window has no end. A `zombi` room was created by a join or
    a publish with `mainTrack`, and is removed when it empties."""

    room_id: str
    start_date: int = 0
    end_date: int = 0
    mode: str = "legacy"
    room_stream_list: list[str] = field(default_factory=list)
    origin_address: str = ""
    zombi: bool = False


@dataclass
class TokenRecord:
    """A one-time (or room-scoped) access token. `expire_date` is unix seconds."""

    token_id: str
    stream_id: str
    expire_date: int
    type: str
    room_id: str = ""


@runtime_checkable
class Store(Protocol):
    """Async storage interface. Returned records are copies: mutate, then save.

    Order: every method takes effect in the order of the calls, not of the awaits. A method
    snapshots its arguments and applies (or queues) its operation when it is called, and
    returns a coroutine for the result. So a record handed to `save_*` may be mutated as soon
    as the call returns, and a read sees every write called before it, even when the
    coroutines are gathered or awaited later.

    Writes without a result (`save_*`) are write-behind: a backend with a disk may return
    before the row is written. A write that then fails is logged and counted in `dump()`;
    nobody else hears of it. Writes with a result (`delete_*`, `consume_token`,
    `mark_all_finished`) and reads wait for it. `flush()` waits until everything called
    before it is on disk.

    List ordering: streams by (date, stream_id); rooms by (start_date, room_id);
    tokens by (expire_date, token_id). `offset < 0` counts as 0, `size <= 0`
    returns an empty list.
    """

    # -- streams ---------------------------------------------------------
    async def get_stream(self, app: str, stream_id: str) -> StreamRecord | None: ...

    async def save_stream(self, app: str, rec: StreamRecord) -> None:
        """Insert or replace (write-behind)."""
        ...

    async def delete_stream(self, app: str, stream_id: str) -> bool: ...

    async def list_streams(
        self, app: str, offset: int, size: int, *, search: str = "", sort_by: str = "", order: str = "asc"
    ) -> list[StreamRecord]:
        """A page of streams; `search` keeps those whose id or name contains it (any case);
        `sort_by` is one of `SORT_FIELDS` (else the default order), `order` "asc" or "desc"."""
        ...

    async def count_streams(self, app: str, search: str = "") -> int:
        """How many streams `list_streams` would page through with this `search`."""
        ...

    async def mark_all_finished(self, app: str | None = None) -> int:
        """Set every broadcasting/preparing stream to finished (all apps if `app` is None).

        Returns the number of streams changed."""
        ...

    # -- rooms -----------------------------------------------------------
    async def get_room(self, app: str, room_id: str) -> RoomRecord | None: ...

    async def save_room(self, app: str, rec: RoomRecord) -> None: ...

    async def delete_room(self, app: str, room_id: str) -> bool: ...

    async def list_rooms(self, app: str, offset: int, size: int) -> list[RoomRecord]: ...

    # -- tokens ----------------------------------------------------------
    async def save_token(self, app: str, rec: TokenRecord) -> None: ...

    async def get_token(self, app: str, token_id: str) -> TokenRecord | None: ...

    async def delete_token(self, app: str, token_id: str) -> bool: ...

    async def delete_tokens_for_stream(self, app: str, stream_id: str) -> int: ...

    async def list_tokens(self, app: str, stream_id: str, offset: int, size: int) -> list[TokenRecord]: ...

    async def consume_token(self, app: str, token_id: str) -> bool:
        """Atomically delete the token if present; True only for the one caller that removed it."""
        ...

    # -- lifecycle / debug ----------------------------------------------
    async def flush(self) -> None:
        """Wait until every write called before it is on disk. Does not raise for a write-behind
        write that failed (see `dump()`). Idempotent; a no-op once the store is closed."""
        ...

    async def close(self) -> None:
        """Flush, then release resources. Idempotent; calls other than `flush`/`close` fail afterwards."""
        ...

    async def dump(self) -> dict[str, int]:
        """Row counts per table across all apps, and the write-behind writes that failed since
        the store was opened: {"streams": n, "rooms": n, "tokens": n, "failed_writes": n}."""
        ...
