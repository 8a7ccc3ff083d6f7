"""SQLite-backed `Store`: durable streams, rooms and tokens in one local database file.

All SQLite work runs on one worker thread owned by the store (a single-thread executor), so
the event loop never waits for the disk, and statements run in the order of the calls. The
worker owns the only connection (stdlib `sqlite3`, WAL mode, autocommit: every statement is
its own transaction, so single-statement operations such as `consume_token` are atomic).
`sqlite3`'s same-thread check stays on, so a use from any other thread would raise.

Every method submits its job when called and returns a coroutine for the result:

- `save_*` encode the record into a row at once (the caller may mutate it afterwards) and
  return without waiting for the worker (write-behind). A write that fails on the worker is
  logged once, with its key, and counted in `dump()["failed_writes"]`; the worker carries on.
- reads, `delete_*`, `consume_token`, `mark_all_finished` and `dump` wait for their result.
  The queue is FIFO, so they see every write called before them.
- `flush()` waits for the queue, then checkpoints the WAL into the database file.
  `close()` flushes, closes the connection and stops the thread.

Only the constructor blocks its caller: it opens and migrates the database on the worker and
waits, so that a bad or too-new database fails there, once, before anything is served.

The schema evolves through `MIGRATIONS`: entry *i* upgrades `PRAGMA user_version`
from *i* to *i + 1*. Append new entries; never edit shipped ones. Lists are stored
as JSON text. Rows that cannot be decoded are skipped and logged (once per table).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar, get_type_hints

from .base import LIVE_STATUSES, SORT_FIELDS, RoomRecord, StreamRecord, TokenRecord

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
    (  # 2: a Broadcast's webhook address; rooms created by a join (removed when they empty)
        "ALTER TABLE streams ADD COLUMN listener_hook_url TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE rooms ADD COLUMN zombi INTEGER NOT NULL DEFAULT 0",
    ),
)

_R = TypeVar("_R")
_T = TypeVar("_T")


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
    """sqlite3 implementation of `confero.store.base.Store` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Worker-thread state: only jobs running on the worker touch these three.
        self._conn: sqlite3.Connection | None = None
        self._warned: set[str] = set()
        self._failed_writes = 0
        # Caller-side state.
        self._closed = False
        self._closing: Future[None] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confero-store")
        try:
            self._worker.submit(self._open).result()
        except BaseException:
            self._worker.shutdown(wait=True)
            raise

    # -- worker-thread side ----------------------------------------------
    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

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

    def _run(self, job: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._conn is None:
            raise RuntimeError("store is closed")
        return job(self._conn)

    def _run_write(self, what: str, job: Callable[[sqlite3.Connection], object]) -> None:
        try:
            self._run(job)
        except Exception as exc:
            self._failed_writes += 1
            log.warning("store: %s failed: %s: %s", what, type(exc).__name__, exc)

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # the last connection's close checkpoints the WAL into the database

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

    def _dump(self, conn: sqlite3.Connection) -> dict[str, int]:
        out = {
            codec.table: int(conn.execute(f"SELECT COUNT(*) FROM {codec.table}").fetchone()[0])
            for codec in (_STREAMS, _ROOMS, _TOKENS)
        }
        out["failed_writes"] = self._failed_writes
        return out

    # -- caller side -----------------------------------------------------
    def _submit(self, job: Callable[[sqlite3.Connection], _T]) -> Future[_T]:
        """Queue `job(connection)` on the worker, behind everything submitted before it."""
        if self._closed:
            raise RuntimeError("store is closed")
        return self._worker.submit(self._run, job)

    def _call(self, job: Callable[[sqlite3.Connection], _T]) -> Coroutine[Any, Any, _T]:
        """Queue `job` now; the returned coroutine waits for its result."""
        return _result(self._submit(job))

    def _write(self, what: str, job: Callable[[sqlite3.Connection], object]) -> Coroutine[Any, Any, None]:
        """Queue a write-behind `job` now; the returned coroutine does not wait for it."""
        if self._closed:
            raise RuntimeError("store is closed")
        self._worker.submit(self._run_write, what, job)
        return _done()

    def _save(self, codec: _Codec[_R], app: str, rec: _R) -> Coroutine[Any, Any, None]:
        what = f"save {codec.table} {app}/{getattr(rec, codec.key, None)!r}"
        try:
            row = codec.encode(app, rec)  # the snapshot: the caller may mutate rec from here on
        except Exception as exc:
            error = exc  # counted and logged on the worker, in order, like any failed write

            def job(conn: sqlite3.Connection) -> None:
                raise error

        else:

            def job(conn: sqlite3.Connection) -> None:
                conn.execute(codec.insert, row)

        return self._write(what, job)

    def _get(self, codec: _Codec[_R], app: str, key: str) -> Coroutine[Any, Any, _R | None]:
        sql = f"{codec.select} WHERE app = ? AND {codec.key} = ?"

        def job(conn: sqlite3.Connection) -> _R | None:
            found = self._decode_rows(codec, conn.execute(sql, (app, key)).fetchall())
            return found[0] if found else None

        return self._call(job)

    def _delete(self, table: str, column: str, app: str, key: str) -> Coroutine[Any, Any, int]:
        sql = f"DELETE FROM {table} WHERE app = ? AND {column} = ?"
        return self._call(lambda conn: conn.execute(sql, (app, key)).rowcount)

    def _list(
        self, codec: _Codec[_R], app: str, offset: int, size: int, where: str = "", *args: object, order: str = ""
    ) -> Coroutine[Any, Any, list[_R]]:
        if self._closed:
            raise RuntimeError("store is closed")
        if size <= 0:
            return _ready([])
        sql = f"{codec.select} WHERE app = ? {where} ORDER BY {order or codec.order} LIMIT ? OFFSET ?"
        params = (app, *args, size, max(offset, 0))
        return self._call(lambda conn: self._decode_rows(codec, conn.execute(sql, params).fetchall()))

    # -- streams ---------------------------------------------------------
    def get_stream(self, app: str, stream_id: str) -> Coroutine[Any, Any, StreamRecord | None]:
        return self._get(_STREAMS, app, stream_id)

    def save_stream(self, app: str, rec: StreamRecord) -> Coroutine[Any, Any, None]:
        return self._save(_STREAMS, app, rec)

    def delete_stream(self, app: str, stream_id: str) -> Coroutine[Any, Any, bool]:
        return _existed(self._delete("streams", "stream_id", app, stream_id))

    def list_streams(
        self, app: str, offset: int, size: int, *, search: str = "", sort_by: str = "", order: str = "asc"
    ) -> Coroutine[Any, Any, list[StreamRecord]]:
        column = SORT_FIELDS.get(sort_by)
        direction = "DESC" if order == "desc" else "ASC"
        by = f"{column} {direction}, stream_id {direction}" if column else ""
        if not search:
            return self._list(_STREAMS, app, offset, size, order=by)
        return self._list(_STREAMS, app, offset, size, _SEARCH, *_like(search), order=by)

    def count_streams(self, app: str, search: str = "") -> Coroutine[Any, Any, int]:
        sql = f"SELECT COUNT(*) FROM streams WHERE app = ? {_SEARCH if search else ''}"
        params = (app, *_like(search)) if search else (app,)
        return self._call(lambda conn: int(conn.execute(sql, params).fetchone()[0]))

    def mark_all_finished(self, app: str | None = None) -> Coroutine[Any, Any, int]:
        marks = ", ".join("?" for _ in LIVE_STATUSES)
        sql = f"UPDATE streams SET status = 'finished' WHERE status IN ({marks})"
        params: tuple[object, ...] = LIVE_STATUSES
        if app is not None:
            sql += " AND app = ?"
            params = (*params, app)
        return self._call(lambda conn: conn.execute(sql, params).rowcount)

    # -- rooms -----------------------------------------------------------
    def get_room(self, app: str, room_id: str) -> Coroutine[Any, Any, RoomRecord | None]:
        return self._get(_ROOMS, app, room_id)

    def save_room(self, app: str, rec: RoomRecord) -> Coroutine[Any, Any, None]:
        return self._save(_ROOMS, app, rec)

    def delete_room(self, app: str, room_id: str) -> Coroutine[Any, Any, bool]:
        return _existed(self._delete("rooms", "room_id", app, room_id))

    def list_rooms(self, app: str, offset: int, size: int) -> Coroutine[Any, Any, list[RoomRecord]]:
        return self._list(_ROOMS, app, offset, size)

    # -- tokens ----------------------------------------------------------
    def save_token(self, app: str, rec: TokenRecord) -> Coroutine[Any, Any, None]:
        return self._save(_TOKENS, app, rec)

    def get_token(self, app: str, token_id: str) -> Coroutine[Any, Any, TokenRecord | None]:
        return self._get(_TOKENS, app, token_id)

    def delete_token(self, app: str, token_id: str) -> Coroutine[Any, Any, bool]:
        return _existed(self._delete("tokens", "token_id", app, token_id))

    def delete_tokens_for_stream(self, app: str, stream_id: str) -> Coroutine[Any, Any, int]:
        return self._delete("tokens", "stream_id", app, stream_id)

    def list_tokens(self, app: str, stream_id: str, offset: int, size: int) -> Coroutine[Any, Any, list[TokenRecord]]:
        return self._list(_TOKENS, app, offset, size, "AND stream_id = ?", stream_id)

    def consume_token(self, app: str, token_id: str) -> Coroutine[Any, Any, bool]:
        # A single DELETE is atomic: exactly one caller sees rowcount == 1.
        return _existed(self._delete("tokens", "token_id", app, token_id))

    # -- lifecycle / debug ----------------------------------------------
    def flush(self) -> Coroutine[Any, Any, None]:
        if self._closed:
            return _result(self._closing) if self._closing is not None else _done()
        return self._call(_checkpoint)

    def close(self) -> Coroutine[Any, Any, None]:
        if self._closing is None:
            self._closed = True
            # Behind every queued job: those run first, so close() persists them.
            self._closing = self._worker.submit(self._close_conn)
            self._worker.shutdown(wait=False)  # refuse new jobs; the thread ends after this one
        return self._closed_and_joined(self._closing)

    async def _closed_and_joined(self, closing: Future[None]) -> None:
        await _result(closing)
        self._worker.shutdown(wait=True)  # joins the thread, which has nothing left to run

    def dump(self) -> Coroutine[Any, Any, dict[str, int]]:
        return self._call(self._dump)


_SEARCH = r"AND (lower(stream_id) LIKE ? ESCAPE '\' OR lower(name) LIKE ? ESCAPE '\')"


def _like(search: str) -> tuple[str, str]:
    """`search` as a case-insensitive LIKE pattern for "contains", its wildcards escaped."""
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%", f"%{escaped}%"


def _checkpoint(conn: sqlite3.Connection) -> None:
    # PASSIVE completes here (this is the only connection); it syncs the WAL, then the database.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


async def _result(fut: Future[_T]) -> _T:
    """Wait for a worker job. Cancelling the waiter does not cancel the job: once called, an
    operation runs, in its place in the queue."""
    return await asyncio.shield(asyncio.wrap_future(fut))


async def _existed(rowcount: Coroutine[Any, Any, int]) -> bool:
    return await rowcount > 0


async def _done() -> None:
    return None


async def _ready(value: _T) -> _T:
    return value
