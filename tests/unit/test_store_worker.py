"""SqliteStore's worker thread: write-behind, FIFO order, failure isolation, shutdown.

These tests hold the worker on a `threading.Event` they control, so "the call returned before
the disk was touched" is shown by the order of events, never by timing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from confero.store import RoomRecord, SqliteStore, StreamRecord, TokenRecord

APP = "LiveApp"
DEADLINE = 10.0  # seconds; only reached if the code under test is broken


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(path)
    yield s
    await s.close()


class Hold:
    """A job that occupies the worker until released; everything queued after it waits."""

    def __init__(self, store: SqliteStore) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.thread: threading.Thread | None = None
        store._submit(self._job)
        assert self.started.wait(DEADLINE), "the worker never picked up the holding job"

    def _job(self, conn: sqlite3.Connection) -> None:
        self.thread = threading.current_thread()
        self.started.set()
        assert self.gate.wait(DEADLINE), "the test never released the worker"

    def release(self) -> None:
        self.gate.set()


@contextmanager
def held(store: SqliteStore) -> Iterator[Hold]:
    hold = Hold(store)
    try:
        yield hold
    finally:
        hold.release()


def on_disk(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """What another connection sees in the database file."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_save_returns_before_the_worker_runs_it(store: SqliteStore, path: Path) -> None:
    with held(store) as hold:
        # Each save returns while the worker is held: it cannot have waited for the disk.
        await asyncio.wait_for(store.save_stream(APP, StreamRecord("s1", name="cam")), DEADLINE)
        await asyncio.wait_for(store.save_room(APP, RoomRecord("r1")), DEADLINE)
        await asyncio.wait_for(store.save_token(APP, TokenRecord("t1", "s1", 10, "play")), DEADLINE)
        assert on_disk(path, "SELECT stream_id FROM streams") == []
        assert on_disk(path, "SELECT room_id FROM rooms") == []

        read = asyncio.ensure_future(store.get_stream(APP, "s1"))  # queued behind the saves
        await asyncio.sleep(0)
        assert not read.done()
        hold.release()
        got = await asyncio.wait_for(read, DEADLINE)
        assert got is not None and got.name == "cam"

    await store.flush()
    assert on_disk(path, "SELECT stream_id, name FROM streams") == [("s1", "cam")]
    assert on_disk(path, "SELECT room_id FROM rooms") == [("r1",)]
    assert on_disk(path, "SELECT token_id FROM tokens") == [("t1",)]


async def test_save_snapshots_before_the_worker_runs(store: SqliteStore) -> None:
    rec = StreamRecord("s", name="as-saved", sub_track_stream_ids=["a"], webrtc_viewer_count=1)
    room = RoomRecord("r", room_stream_list=["a"])
    with held(store):
        await store.save_stream(APP, rec)
        await store.save_room(APP, room)
        rec.name = "mutated"
        rec.sub_track_stream_ids.append("b")
        rec.webrtc_viewer_count = 99
        room.room_stream_list.clear()
    got = await store.get_stream(APP, "s")
    assert got is not None
    assert (got.name, got.sub_track_stream_ids, got.webrtc_viewer_count) == ("as-saved", ["a"], 1)
    got_room = await store.get_room(APP, "r")
    assert got_room is not None and got_room.room_stream_list == ["a"]


async def test_save_then_delete_then_get_in_queue_order(store: SqliteStore) -> None:
    with held(store) as hold:
        await store.save_stream(APP, StreamRecord("s"))
        deleted = asyncio.ensure_future(store.delete_stream(APP, "s"))
        gone = asyncio.ensure_future(store.get_stream(APP, "s"))
        await store.save_token(APP, TokenRecord("t", "s", 10, "play"))
        first = asyncio.ensure_future(store.consume_token(APP, "t"))
        second = asyncio.ensure_future(store.consume_token(APP, "t"))
        hold.release()
        assert await asyncio.wait_for(deleted, DEADLINE) is True
        assert await asyncio.wait_for(gone, DEADLINE) is None
        assert [await first, await second] == [True, False]


async def test_failed_writes_are_counted_logged_once_and_isolated(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="confero.store.sqlite"):
        await store.save_stream(APP, StreamRecord("ok1"))
        await store.save_stream(APP, StreamRecord("unbindable", name=object()))  # type: ignore[arg-type]
        await store.save_stream(APP, StreamRecord("ok2"))
        await store.save_stream(APP, StreamRecord("overflow", date=2**70))  # too big for SQLite's INTEGER
        await store.save_room(APP, RoomRecord("unencodable", room_stream_list=[object()]))  # type: ignore[list-item]
        await store.save_room(APP, RoomRecord("ok3"))
        await store.flush()  # does not raise for the failures above
    assert [r.stream_id for r in await store.list_streams(APP, 0, 10)] == ["ok1", "ok2"]
    assert [r.room_id for r in await store.list_rooms(APP, 0, 10)] == ["ok3"]
    assert await store.dump() == {"streams": 2, "rooms": 1, "tokens": 0, "failed_writes": 3}
    for key in ("unbindable", "overflow", "unencodable"):
        assert len([r for r in caplog.records if repr(key) in r.getMessage()]) == 1, key
    assert all(r.levelno == logging.WARNING for r in caplog.records)


async def test_a_write_the_database_refuses_is_counted_and_the_next_lands(store: SqliteStore) -> None:
    store._submit(lambda conn: conn.execute("PRAGMA query_only = ON"))  # "attempt to write a readonly database"
    await store.save_stream(APP, StreamRecord("refused"))
    await store.save_token(APP, TokenRecord("refused", "s", 10, "play"))
    store._submit(lambda conn: conn.execute("PRAGMA query_only = OFF"))
    await store.save_stream(APP, StreamRecord("landed"))
    await store.flush()
    assert [r.stream_id for r in await store.list_streams(APP, 0, 10)] == ["landed"]
    assert (await store.dump())["failed_writes"] == 2


async def test_close_persists_queued_writes_and_stops_the_thread(path: Path) -> None:
    s = SqliteStore(path)
    with held(s) as hold:
        for i in range(50):
            await s.save_stream(APP, StreamRecord(f"s{i:02}", date=i))
        await s.save_room(APP, RoomRecord("r", room_stream_list=["s00"]))
        await s.save_token(APP, TokenRecord("t", "s00", 10, "publish"))
        closing = asyncio.ensure_future(s.close())
        await asyncio.sleep(0)
        assert not closing.done()
    await asyncio.wait_for(closing, DEADLINE)
    assert hold.thread is not None and not hold.thread.is_alive()

    reopened = SqliteStore(path)
    try:
        assert [r.stream_id for r in await reopened.list_streams(APP, 0, 100)] == [f"s{i:02}" for i in range(50)]
        assert await reopened.get_room(APP, "r") == RoomRecord("r", room_stream_list=["s00"])
        assert await reopened.get_token(APP, "t") == TokenRecord("t", "s00", 10, "publish")
    finally:
        await reopened.close()


async def test_flush_waits_for_queued_writes(store: SqliteStore, path: Path) -> None:
    with held(store) as hold:
        await store.save_stream(APP, StreamRecord("s"))
        flushing = asyncio.ensure_future(store.flush())
        await asyncio.sleep(0)
        assert not flushing.done()
        hold.release()
        await asyncio.wait_for(flushing, DEADLINE)
    assert on_disk(path, "SELECT stream_id FROM streams") == [("s",)]


async def test_a_cancelled_caller_does_not_cancel_its_operation(store: SqliteStore) -> None:
    await store.save_stream(APP, StreamRecord("s"))
    with held(store) as hold:
        deleting = asyncio.ensure_future(store.delete_stream(APP, "s"))
        await asyncio.sleep(0)
        deleting.cancel()
        hold.release()
        with pytest.raises(asyncio.CancelledError):
            await deleting
    assert await store.get_stream(APP, "s") is None


async def test_event_loop_thread_never_executes_sqlite(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    statements: list[tuple[int, str]] = []
    real_connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: statements.append((threading.get_ident(), sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    loop_thread = threading.get_ident()

    s = SqliteStore(path)  # opens and migrates on the worker
    await s.save_stream(APP, StreamRecord("s", status="broadcasting"))
    await s.get_stream(APP, "s")
    await s.list_streams(APP, 0, 10)
    await s.mark_all_finished(APP)
    await s.save_room(APP, RoomRecord("r"))
    await s.get_room(APP, "r")
    await s.list_rooms(APP, 0, 10)
    await s.delete_room(APP, "r")
    await s.save_token(APP, TokenRecord("t", "s", 10, "play"))
    await s.get_token(APP, "t")
    await s.list_tokens(APP, "s", 0, 10)
    await s.consume_token(APP, "t")
    await s.delete_token(APP, "t")
    await s.delete_tokens_for_stream(APP, "s")
    await s.delete_stream(APP, "s")
    await s.dump()
    await s.flush()
    assert s._conn is not None
    with pytest.raises(sqlite3.ProgrammingError, match="thread"):  # sqlite3's own same-thread check
        s._conn.execute("SELECT 1")
    await s.close()

    kinds = {sql.split()[0].upper() for _, sql in statements}
    assert {"PRAGMA", "CREATE", "INSERT", "SELECT", "UPDATE", "DELETE"} <= kinds
    threads = {ident for ident, _ in statements}
    assert len(threads) == 1 and loop_thread not in threads
