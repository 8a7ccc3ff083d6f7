"""In-memory `Store` backed by dicts, for unit tests and ephemeral servers.

Records are deep-copied on the way in and out, so callers never alias stored state. Like
`SqliteStore`, every method does its work when called (a write is applied, a read is
answered) and returns a coroutine for the result, so effects follow the order of the calls.
Nothing waits: there is no disk, so no write fails and `flush()` has nothing to do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from .base import LIVE_STATUSES, SORT_FIELDS, RoomRecord, StreamRecord, TokenRecord

__all__ = ["MemoryStore"]

_R = TypeVar("_R")
_T = TypeVar("_T")


def _page(items: Iterable[_R], key: Callable[[_R], Any], offset: int, size: int) -> list[_R]:
    if size <= 0:
        return []
    offset = max(offset, 0)
    return [copy.deepcopy(r) for r in sorted(items, key=key)[offset : offset + size]]


def _matching(records: Iterable[StreamRecord], search: str) -> list[StreamRecord]:
    needle = search.lower()
    return [r for r in records if needle in r.stream_id.lower() or needle in r.name.lower()]


async def _ready(value: _T) -> _T:
    return value


class MemoryStore:
    """Dict-based implementation of `confero.store.base.Store`."""

    def __init__(self) -> None:
        self._streams: dict[str, dict[str, StreamRecord]] = {}
        self._rooms: dict[str, dict[str, RoomRecord]] = {}
        self._tokens: dict[str, dict[str, TokenRecord]] = {}
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")

    def _get(self, table: dict[str, dict[str, _R]], app: str, key: str) -> Coroutine[Any, Any, _R | None]:
        self._check()
        rec = table.get(app, {}).get(key)
        return _ready(copy.deepcopy(rec) if rec is not None else None)

    def _put(self, table: dict[str, dict[str, _R]], app: str, key: str, rec: _R) -> Coroutine[Any, Any, None]:
        self._check()
        table.setdefault(app, {})[key] = copy.deepcopy(rec)
        return _ready(None)

    def _pop(self, table: dict[str, dict[str, _R]], app: str, key: str) -> Coroutine[Any, Any, bool]:
        self._check()
        return _ready(table.get(app, {}).pop(key, None) is not None)

    # -- streams ---------------------------------------------------------
    def get_stream(self, app: str, stream_id: str) -> Coroutine[Any, Any, StreamRecord | None]:
        return self._get(self._streams, app, stream_id)

    def save_stream(self, app: str, rec: StreamRecord) -> Coroutine[Any, Any, None]:
        return self._put(self._streams, app, rec.stream_id, rec)

    def delete_stream(self, app: str, stream_id: str) -> Coroutine[Any, Any, bool]:
        return self._pop(self._streams, app, stream_id)

    def list_streams(
        self, app: str, offset: int, size: int, *, search: str = "", sort_by: str = "", order: str = "asc"
    ) -> Coroutine[Any, Any, list[StreamRecord]]:
        self._check()
        items = _matching(self._streams.get(app, {}).values(), search)
        column = SORT_FIELDS.get(sort_by)
        if column is None:
            return _ready(_page(items, lambda r: (r.date, r.stream_id), offset, size))
        ordered = sorted(items, key=lambda r: (getattr(r, column), r.stream_id), reverse=order == "desc")
        return _ready(_page(ordered, lambda r: 0, offset, size))

    def count_streams(self, app: str, search: str = "") -> Coroutine[Any, Any, int]:
        self._check()
        return _ready(len(_matching(self._streams.get(app, {}).values(), search)))

    def mark_all_finished(self, app: str | None = None) -> Coroutine[Any, Any, int]:
        self._check()
        apps = [self._streams.get(app, {})] if app is not None else list(self._streams.values())
        changed = 0
        for streams in apps:
            for rec in streams.values():
                if rec.status in LIVE_STATUSES:
                    rec.status = "finished"
                    changed += 1
        return _ready(changed)

    # -- rooms -----------------------------------------------------------
    def get_room(self, app: str, room_id: str) -> Coroutine[Any, Any, RoomRecord | None]:
        return self._get(self._rooms, app, room_id)

    def save_room(self, app: str, rec: RoomRecord) -> Coroutine[Any, Any, None]:
        return self._put(self._rooms, app, rec.room_id, rec)

    def delete_room(self, app: str, room_id: str) -> Coroutine[Any, Any, bool]:
        return self._pop(self._rooms, app, room_id)

    def list_rooms(self, app: str, offset: int, size: int) -> Coroutine[Any, Any, list[RoomRecord]]:
        self._check()
        items = self._rooms.get(app, {}).values()
        return _ready(_page(items, lambda r: (r.start_date, r.room_id), offset, size))

    # -- tokens ----------------------------------------------------------
    def save_token(self, app: str, rec: TokenRecord) -> Coroutine[Any, Any, None]:
        return self._put(self._tokens, app, rec.token_id, rec)

    def get_token(self, app: str, token_id: str) -> Coroutine[Any, Any, TokenRecord | None]:
        return self._get(self._tokens, app, token_id)

    def delete_token(self, app: str, token_id: str) -> Coroutine[Any, Any, bool]:
        return self._pop(self._tokens, app, token_id)

    def delete_tokens_for_stream(self, app: str, stream_id: str) -> Coroutine[Any, Any, int]:
        self._check()
        tokens = self._tokens.get(app, {})
        doomed = [tid for tid, rec in tokens.items() if rec.stream_id == stream_id]
        for tid in doomed:
            del tokens[tid]
        return _ready(len(doomed))

    def list_tokens(self, app: str, stream_id: str, offset: int, size: int) -> Coroutine[Any, Any, list[TokenRecord]]:
        self._check()
        items = (r for r in self._tokens.get(app, {}).values() if r.stream_id == stream_id)
        return _ready(_page(items, lambda r: (r.expire_date, r.token_id), offset, size))

    def consume_token(self, app: str, token_id: str) -> Coroutine[Any, Any, bool]:
        return self._pop(self._tokens, app, token_id)

    # -- lifecycle / debug ----------------------------------------------
    def flush(self) -> Coroutine[Any, Any, None]:
        return _ready(None)

    def close(self) -> Coroutine[Any, Any, None]:
        self._closed = True
        return _ready(None)

    def dump(self) -> Coroutine[Any, Any, dict[str, int]]:
        self._check()
        return _ready(
            {
                "streams": sum(len(d) for d in self._streams.values()),
                "rooms": sum(len(d) for d in self._rooms.values()),
                "tokens": sum(len(d) for d in self._tokens.values()),
                "failed_writes": 0,
            }
        )
