"""SQLite-backed `Store`: durable streams, rooms and tokens in one local database file.

Uses the stdlib `sqlite3` module with one WAL-mode connection in autocommit mode
(every statement is its own transaction, so single-statement operations such as
`consume_token` are atomic). Calls are short and run synchronously inside the
async methods; a lock also makes the object safe to use from worker threads.

The schema evolves through `MIGRATIONS`: entry *i* upgrades `PRAGMA user_version`
from *i* to *i + 1*. Append new entries; never edit shipped ones. Lists are stored
as JSON text. Rows that cannot be decoded are skipped and logged (once per table).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar, get_type_hints

from .base import LIVE_STATUSES, RoomRecord, StreamRecord, TokenRecord

__all__ = ["MIGRATIONS", "SqliteStore"]

log = logging.getLogger(__name__)

#: Ordered schema migrations; MIGRATIONS[i] takes user_version i -> i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: initial schema
        """CREATE TABLE streams (
            app TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'created',
            type TEXT NOT NULL DEFAULT 'liveStream',
            publish_type TEXT NOT NULL DEFAULT 'WebRTC',
            date INTEGER NOT NULL DEFAULT 0,
            planned_start_date INTEGER NOT NULL DEFAULT 0,
            planned_end_date INTEGER NOT NULL DEFAULT 0,
            start_time INTEGER NOT NULL DEFAULT 0,
            update_time INTEGER NOT NULL DEFAULT 0,
            duration INTEGER NOT NULL DEFAULT 0,
            meta_data TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL DEFAULT '',
            main_track_stream_id TEXT NOT NULL DEFAULT '',
            sub_track_stream_ids TEXT NOT NULL DEFAULT '[]',
            webrtc_viewer_count INTEGER NOT NULL DEFAULT 0,
            public_stream INTEGER NOT NULL DEFAULT 1,
            origin_address TEXT NOT NULL DEFAULT '',
            remote_ip TEXT NOT NULL DEFAULT '',
            user_agent TEXT NOT NULL DEFAULT 'N/A',
            subtracks_limit INTEGER NOT NULL DEFAULT -1,
            webrtc_viewer_limit INTEGER NOT NULL DEFAULT -1,
            zombi INTEGER NOT NULL DEFAULT 0,
            absolute_start_time_ms INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (app, stream_id)
        )""",
        "CREATE INDEX streams_by_date ON streams (app, date, stream_id)",
        """CREATE TABLE rooms (
            app TEXT NOT NULL,
            room_id TEXT NOT NULL,
            start_date INTEGER NOT NULL DEFAULT 0,
            end_date INTEGER NOT NULL DEFAULT 0,
            mode TEXT NOT NULL DEFAULT 'legacy',
            room_stream_list TEXT NOT NULL DEFAULT '[]',
            origin_address TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (app, room_id)
        )""",
        """CREATE TABLE tokens (
            app TEXT NOT NULL,
            token_id TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            expire_date INTEGER NOT NULL,
            type TEXT NOT NULL,
            room_id TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (app, token_id)
        )""",
        "CREATE INDEX tokens_by_stream ON tokens (app, stream_id, expire_date, token_id)",
    ),
)

_R = TypeVar("_R")


class _Codec(Generic[_R]):
    """Maps one record dataclass to/from a table row (columns named like the attributes)."""

    def __init__(self, table: str, cls: type[_R], key: str, order: str) -> None:
        self.table = table
        self.cls = cls
        self.key = key
        self.order = order
        self.kinds: dict[str, Any] = dict(get_type_hints(cls))
        self.columns = list(self.kinds)
        cols = ", ".join(self.columns)
        marks = ", ".join("?" for _ in self.columns)
        self.select = f"SELECT {cols} FROM {table}"
        self.insert = f"INSERT OR REPLACE INTO {table} (app, {cols}) VALUES (?, {marks})"

    def encode(self, app: str, rec: _R) -> list[object]:
        row: list[object] = [app]
        for name in self.columns:
            value = getattr(rec, name)
            row.append(json.dumps(list(value)) if isinstance(value, list) else value)
        return row

    def decode(self, row: Sequence[object]) -> _R:
        """Build a record from a row; raises ValueError if any column has the wrong shape."""
        kwargs: dict[str, object] = {}
        for name, value in zip(self.columns, row, strict=True):
            kind = self.kinds[name]
            if kind is bool:
                if type(value) is not int:
                    raise ValueError(f"{name}: expected 0/1, got {value!r}")
                kwargs[name] = bool(value)
            elif kind is int or kind is str:
                if type(value) is not kind:
                    raise ValueError(f"{name}: expected {kind.__name__}, got {value!r}")
                kwargs[name] = value
            else:  # list[str], stored as JSON text
                items = json.loads(value) if isinstance(value, str) else None
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise ValueError(f"{name}: expected JSON list of strings, got {value!r}")
                kwargs[name] = items
        return self.cls(**kwargs)


_STREAMS = _Codec("streams", StreamRecord, "stream_id", "date, stream_id")
_ROOMS = _Codec("rooms", RoomRecord, "room_id", "start_date, room_id")
_TOKENS = _Codec("tokens", TokenRecord, "token_id", "expire_date, token_id")


class SqliteStore:
    """sqlite3 implementation of `confero.store.base.Store`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._warned: set[str] = set()
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise RuntimeError(f"database schema version {version} is newer than supported {len(MIGRATIONS)}")
        for target in range(version + 1, len(MIGRATIONS) + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("store schema migrated to version %d", target)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("store is closed")
            yield self._conn

    def _decode_rows(self, codec: _Codec[_R], rows: list[Any]) -> list[_R]:
        out: list[_R] = []
        for row in rows:
            try:
                out.append(codec.decode(row))
            except (ValueError, TypeError) as exc:
                key = row[codec.columns.index(codec.key)] if row else None
                level = logging.DEBUG if codec.table in self._warned else logging.WARNING
                self._warned.add(codec.table)
                log.log(level, "skipping corrupt %s row %r: %s", codec.table, key, exc)
        return out

    # -- generic helpers -------------------------------------------------
    def _get(self, codec: _Codec[_R], app: str, key: str) -> _R | None:
        with self._db() as db:
            rows = db.execute(f"{codec.select} WHERE app = ? AND {codec.key} = ?", (app, key)).fetchall()
        found = self._decode_rows(codec, rows)
        return found[0] if found else None

    def _save(self, codec: _Codec[_R], app: str, rec: _R) -> None:
        with self._db() as db:
            db.execute(codec.insert, codec.encode(app, rec))

    def _delete(self, codec: _Codec[_R], app: str, key: str) -> bool:
        with self._db() as db:
            sql = f"DELETE FROM {codec.table} WHERE app = ? AND {codec.key} = ?"
            cur = db.execute(sql, (app, key))
        return cur.rowcount > 0

    def _list(self, codec: _Codec[_R], app: str, offset: int, size: int, where: str = "", *args: object) -> list[_R]:
        if size <= 0:
            return []
        sql = f"{codec.select} WHERE app = ? {where} ORDER BY {codec.order} LIMIT ? OFFSET ?"
        with self._db() as db:
            rows = db.execute(sql, (app, *args, size, max(offset, 0))).fetchall()
        return self._decode_rows(codec, rows)

    # -- streams ---------------------------------------------------------
    async def get_stream(self, app: str, stream_id: str) -> StreamRecord | None:
        return self._get(_STREAMS, app, stream_id)

    async def save_stream(self, app: str, rec: StreamRecord) -> None:
        self._save(_STREAMS, app, rec)

    async def delete_stream(self, app: str, stream_id: str) -> bool:
        return self._delete(_STREAMS, app, stream_id)

    async def list_streams(self, app: str, offset: int, size: int) -> list[StreamRecord]:
        return self._list(_STREAMS, app, offset, size)

    async def count_streams(self, app: str) -> int:
        with self._db() as db:
            row = db.execute("SELECT COUNT(*) FROM streams WHERE app = ?", (app,)).fetchone()
        return int(row[0])

    async def mark_all_finished(self, app: str | None = None) -> int:
        marks = ", ".join("?" for _ in LIVE_STATUSES)
        sql = f"UPDATE streams SET status = 'finished' WHERE status IN ({marks})"
        params: tuple[object, ...] = LIVE_STATUSES
        if app is not None:
            sql += " AND app = ?"
            params = (*params, app)
        with self._db() as db:
            cur = db.execute(sql, params)
        return cur.rowcount

    # -- rooms -----------------------------------------------------------
    async def get_room(self, app: str, room_id: str) -> RoomRecord | None:
        return self._get(_ROOMS, app, room_id)

    async def save_room(self, app: str, rec: RoomRecord) -> None:
        self._save(_ROOMS, app, rec)

    async def delete_room(self, app: str, room_id: str) -> bool:
        return self._delete(_ROOMS, app, room_id)

    async def list_rooms(self, app: str, offset: int, size: int) -> list[RoomRecord]:
        return self._list(_ROOMS, app, offset, size)

    # -- tokens ----------------------------------------------------------
    async def save_token(self, app: str, rec: TokenRecord) -> None:
        self._save(_TOKENS, app, rec)

    async def get_token(self, app: str, token_id: str) -> TokenRecord | None:
        return self._get(_TOKENS, app, token_id)

    async def delete_token(self, app: str, token_id: str) -> bool:
        return self._delete(_TOKENS, app, token_id)

    async def delete_tokens_for_stream(self, app: str, stream_id: str) -> int:
        with self._db() as db:
            cur = db.execute("DELETE FROM tokens WHERE app = ? AND stream_id = ?", (app, stream_id))
        return cur.rowcount

    async def list_tokens(self, app: str, stream_id: str, offset: int, size: int) -> list[TokenRecord]:
        return self._list(_TOKENS, app, offset, size, "AND stream_id = ?", stream_id)

    async def consume_token(self, app: str, token_id: str) -> bool:
        # A single DELETE is atomic: exactly one caller sees rowcount == 1.
        return self._delete(_TOKENS, app, token_id)

    # -- lifecycle / debug ----------------------------------------------
    async def flush(self) -> None:
        with self._db() as db:
            if db.in_transaction:
                db.commit()
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if conn.in_transaction:
                    conn.commit()
            finally:
                conn.close()

    async def dump(self) -> dict[str, int]:
        with self._db() as db:
            return {
                codec.table: int(db.execute(f"SELECT COUNT(*) FROM {codec.table}").fetchone()[0])
                for codec in (_STREAMS, _ROOMS, _TOKENS)
            }
