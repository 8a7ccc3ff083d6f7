"""In-memory `Store` backed by dicts, for unit tests and ephemeral servers.

Records are deep-copied on the way in and out, so callers never alias stored state.
Nothing awaits inside a method, so each call is atomic with respect to the event loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .base import LIVE_STATUSES, RoomRecord, StreamRecord, TokenRecord

__all__ = ["MemoryStore"]

_R = TypeVar("_R")


def _page(items: Iterable[_R], key: Callable[[_R], Any], offset: int, size: int) -> list[_R]:
    if size <= 0:
        return []
    offset = max(offset, 0)
    return [copy.deepcopy(r) for r in sorted(items, key=key)[offset : offset + size]]


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

    # -- streams ---------------------------------------------------------
    async def get_stream(self, app: str, stream_id: str) -> StreamRecord | None:
        self._check()
        rec = self._streams.get(app, {}).get(stream_id)
        return copy.deepcopy(rec) if rec is not None else None

    async def save_stream(self, app: str, rec: StreamRecord) -> None:
        self._check()
        self._streams.setdefault(app, {})[rec.stream_id] = copy.deepcopy(rec)

    async def delete_stream(self, app: str, stream_id: str) -> bool:
        self._check()
        return self._streams.get(app, {}).pop(stream_id, None) is not None

    async def list_streams(self, app: str, offset: int, size: int) -> list[StreamRecord]:
        self._check()
        items = self._streams.get(app, {}).values()
        return _page(items, lambda r: (r.date, r.stream_id), offset, size)

    async def count_streams(self, app: str) -> int:
        self._check()
        return len(self._streams.get(app, {}))

    async def mark_all_finished(self, app: str | None = None) -> int:
        self._check()
        apps = [self._streams.get(app, {})] if app is not None else list(self._streams.values())
        changed = 0
        for streams in apps:
            for rec in streams.values():
                if rec.status in LIVE_STATUSES:
                    rec.status = "finished"
                    changed += 1
        return changed

    # -- rooms -----------------------------------------------------------
    async def get_room(self, app: str, room_id: str) -> RoomRecord | None:
        self._check()
        rec = self._rooms.get(app, {}).get(room_id)
        return copy.deepcopy(rec) if rec is not None else None

    async def save_room(self, app: str, rec: RoomRecord) -> None:
        self._check()
        self._rooms.setdefault(app, {})[rec.room_id] = copy.deepcopy(rec)

    async def delete_room(self, app: str, room_id: str) -> bool:
        self._check()
        return self._rooms.get(app, {}).pop(room_id, None) is not None

    async def list_rooms(self, app: str, offset: int, size: int) -> list[RoomRecord]:
        self._check()
        items = self._rooms.get(app, {}).values()
        return _page(items, lambda r: (r.start_date, r.room_id), offset, size)

    # -- tokens ----------------------------------------------------------
    async def save_token(self, app: str, rec: TokenRecord) -> None:
        self._check()
        self._tokens.setdefault(app, {})[rec.token_id] = copy.deepcopy(rec)

    async def get_token(self, app: str, token_id: str) -> TokenRecord | None:
        self._check()
        rec = self._tokens.get(app, {}).get(token_id)
        return copy.deepcopy(rec) if rec is not None else None

    async def delete_token(self, app: str, token_id: str) -> bool:
        self._check()
        return self._tokens.get(app, {}).pop(token_id, None) is not None

    async def delete_tokens_for_stream(self, app: str, stream_id: str) -> int:
        self._check()
        tokens = self._tokens.get(app, {})
        doomed = [tid for tid, rec in tokens.items() if rec.stream_id == stream_id]
        for tid in doomed:
            del tokens[tid]
        return len(doomed)

    async def list_tokens(self, app: str, stream_id: str, offset: int, size: int) -> list[TokenRecord]:
        self._check()
        items = (r for r in self._tokens.get(app, {}).values() if r.stream_id == stream_id)
        return _page(items, lambda r: (r.expire_date, r.token_id), offset, size)

    async def consume_token(self, app: str, token_id: str) -> bool:
        return await self.delete_token(app, token_id)

    # -- lifecycle / debug ----------------------------------------------
    async def flush(self) -> None:
        self._check()

    async def close(self) -> None:
        self._closed = True

    async def dump(self) -> dict[str, int]:
        self._check()
        return {
            "streams": sum(len(d) for d in self._streams.values()),
            "rooms": sum(len(d) for d in self._rooms.values()),
            "tokens": sum(len(d) for d in self._tokens.values()),
        }
