"""Contract tests for `confero.store` backends (MemoryStore and SqliteStore)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from confero.store import (
    MemoryStore,
    RoomRecord,
    SqliteStore,
    Store,
    StreamRecord,
    TokenRecord,
)

APP = "LiveApp"
OTHER = "WebRTCAppEE"

Factory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "memory":
        return MemoryStore
    db = tmp_path / "nested" / "dir" / "confero.db"
    return lambda: SqliteStore(db)


@pytest.fixture
async def store(factory: Factory) -> AsyncIterator[Store]:
    s = factory()
    yield s
    await s.close()


def stream(sid: str, date: int = 1000, **kw: object) -> StreamRecord:
    return StreamRecord(stream_id=sid, date=date, **kw)  # type: ignore[arg-type]


# -- streams -------------------------------------------------------------


async def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_stream_crud(store: Store) -> None:
    assert await store.get_stream(APP, "s1") is None
    rec = stream(
        "s1",
        name="cam",
        status="broadcasting",
        sub_track_stream_ids=["a", "b"],
        public_stream=False,
        zombi=True,
        subtracks_limit=4,
    )
    await store.save_stream(APP, rec)
    got = await store.get_stream(APP, "s1")
    assert got == rec
    assert len(await store.list_streams(APP, 0, 10)) == 1

    rec.name = "renamed"
    await store.save_stream(APP, rec)  # replace, not duplicate
    got = await store.get_stream(APP, "s1")
    assert got is not None and got.name == "renamed"
    assert len(await store.list_streams(APP, 0, 10)) == 1

    assert await store.delete_stream(APP, "s1") is True
    assert await store.delete_stream(APP, "s1") is False
    assert await store.get_stream(APP, "s1") is None
    assert await store.list_streams(APP, 0, 10) == []


async def test_stream_defaults_roundtrip(store: Store) -> None:
    rec = StreamRecord(stream_id="d")
    assert rec.date > 0 and rec.status == "created" and rec.user_agent == "N/A"
    await store.save_stream(APP, rec)
    assert await store.get_stream(APP, "d") == rec


async def test_app_namespacing(store: Store) -> None:
    await store.save_stream(APP, stream("same", name="a"))
    await store.save_stream(OTHER, stream("same", name="b"))
    await store.save_room(APP, RoomRecord(room_id="r"))
    await store.save_token(APP, TokenRecord("t", "same", 10, "play"))

    a, b = await store.get_stream(APP, "same"), await store.get_stream(OTHER, "same")
    assert a is not None and b is not None and (a.name, b.name) == ("a", "b")
    assert await store.get_room(OTHER, "r") is None
    assert await store.get_token(OTHER, "t") is None
    assert await store.consume_token(OTHER, "t") is False
    assert await store.delete_tokens_for_stream(OTHER, "same") == 0

    assert await store.delete_stream(OTHER, "same") is True
    assert await store.get_stream(APP, "same") is not None
    assert await store.list_streams(OTHER, 0, 10) == []
    assert await store.list_streams("nope", 0, 10) == []


async def test_list_streams_order_and_pagination(store: Store) -> None:
    # inserted out of order; ordering is (date, stream_id)
    for sid, date in [("c", 2), ("b", 1), ("a", 2), ("d", 3), ("e", 0)]:
        await store.save_stream(APP, stream(sid, date=date))
    ids = [r.stream_id for r in await store.list_streams(APP, 0, 50)]
    assert ids == ["e", "b", "a", "c", "d"]
    assert [r.stream_id for r in await store.list_streams(APP, 1, 2)] == ["b", "a"]
    assert [r.stream_id for r in await store.list_streams(APP, 4, 10)] == ["d"]
    assert await store.list_streams(APP, 5, 10) == []
    assert await store.list_streams(APP, 100, 10) == []
    assert await store.list_streams(APP, 0, 0) == []
    assert await store.list_streams(APP, 0, -1) == []
    assert [r.stream_id for r in await store.list_streams(APP, -3, 1)] == ["e"]


async def test_returned_records_are_copies(store: Store) -> None:
    rec = stream("s", sub_track_stream_ids=["x"])
    await store.save_stream(APP, rec)
    rec.sub_track_stream_ids.append("mutated-after-save")
    rec.name = "mutated-after-save"

    got = await store.get_stream(APP, "s")
    assert got is not None and got.sub_track_stream_ids == ["x"] and got.name == ""
    got.sub_track_stream_ids.append("y")
    got.status = "broadcasting"
    listed = await store.list_streams(APP, 0, 10)
    listed[0].sub_track_stream_ids.append("z")
    again = await store.get_stream(APP, "s")
    assert again is not None
    assert again.sub_track_stream_ids == ["x"] and again.status == "created"

    room = RoomRecord("r", room_stream_list=["a"])
    await store.save_room(APP, room)
    got_room = await store.get_room(APP, "r")
    assert got_room is not None
    got_room.room_stream_list.append("b")
    (await store.list_rooms(APP, 0, 10))[0].room_stream_list.append("c")
    again_room = await store.get_room(APP, "r")
    assert again_room is not None and again_room.room_stream_list == ["a"]

    await store.save_token(APP, TokenRecord("t", "s", 5, "play"))
    tok = await store.get_token(APP, "t")
    assert tok is not None
    tok.expire_date = 99
    again_tok = await store.get_token(APP, "t")
    assert again_tok is not None and again_tok.expire_date == 5


async def test_mark_all_finished(store: Store) -> None:
    statuses = {"a": "broadcasting", "b": "preparing", "c": "created", "d": "finished"}
    for sid, status in statuses.items():
        await store.save_stream(APP, stream(sid, status=status))
    await store.save_stream(OTHER, stream("x", status="broadcasting"))

    assert await store.mark_all_finished(APP) == 2
    got = {r.stream_id: r.status for r in await store.list_streams(APP, 0, 10)}
    assert got == {"a": "finished", "b": "finished", "c": "created", "d": "finished"}
    other = await store.get_stream(OTHER, "x")
    assert other is not None and other.status == "broadcasting"
    assert await store.mark_all_finished(APP) == 0

    assert await store.mark_all_finished() == 1  # all apps
    other = await store.get_stream(OTHER, "x")
    assert other is not None and other.status == "finished"


# -- rooms ---------------------------------------------------------------


async def test_room_crud_and_list(store: Store) -> None:
    assert await store.get_room(APP, "r1") is None
    r1 = RoomRecord("r1", start_date=200, end_date=3800, room_stream_list=["s1", "s2"])
    r2 = RoomRecord("r2", start_date=100, end_date=3700, mode="multitrack", origin_address="1.2.3.4")
    await store.save_room(APP, r1)
    await store.save_room(APP, r2)
    assert await store.get_room(APP, "r1") == r1
    assert await store.get_room(APP, "r2") == r2

    r1.room_stream_list = ["s3"]
    await store.save_room(APP, r1)
    assert await store.get_room(APP, "r1") == r1

    assert [r.room_id for r in await store.list_rooms(APP, 0, 10)] == ["r2", "r1"]
    assert [r.room_id for r in await store.list_rooms(APP, 1, 10)] == ["r1"]
    assert await store.list_rooms(APP, 2, 10) == []
    assert await store.list_rooms(APP, 0, 0) == []

    assert await store.delete_room(APP, "r1") is True
    assert await store.delete_room(APP, "r1") is False
    assert await store.get_room(APP, "r1") is None
    assert [r.room_id for r in await store.list_rooms(APP, 0, 10)] == ["r2"]


# -- tokens --------------------------------------------------------------


async def test_token_crud_and_list(store: Store) -> None:
    assert await store.get_token(APP, "t1") is None
    t1 = TokenRecord("t1", "s1", 300, "play")
    t2 = TokenRecord("t2", "s1", 100, "publish", room_id="room")
    t3 = TokenRecord("t3", "s2", 200, "play")
    for t in (t1, t2, t3):
        await store.save_token(APP, t)
    assert await store.get_token(APP, "t2") == t2

    assert [t.token_id for t in await store.list_tokens(APP, "s1", 0, 10)] == ["t2", "t1"]
    assert [t.token_id for t in await store.list_tokens(APP, "s1", 1, 1)] == ["t1"]
    assert await store.list_tokens(APP, "s1", 2, 10) == []
    assert await store.list_tokens(APP, "s1", 0, 0) == []
    assert await store.list_tokens(APP, "nobody", 0, 10) == []

    assert await store.delete_token(APP, "t1") is True
    assert await store.delete_token(APP, "t1") is False
    assert await store.get_token(APP, "t1") is None


async def test_consume_token_only_once(store: Store) -> None:
    await store.save_token(APP, TokenRecord("once", "s1", 10**10, "publish"))
    assert await store.consume_token(APP, "once") is True
    assert await store.consume_token(APP, "once") is False
    assert await store.get_token(APP, "once") is None
    assert await store.consume_token(APP, "never-existed") is False


async def test_consume_token_concurrent(store: Store) -> None:
    await store.save_token(APP, TokenRecord("race", "s1", 10**10, "play"))
    results = await asyncio.gather(*(store.consume_token(APP, "race") for _ in range(10)))
    assert results.count(True) == 1


async def test_delete_tokens_for_stream(store: Store) -> None:
    for i in range(3):
        await store.save_token(APP, TokenRecord(f"a{i}", "s1", 10, "play"))
    await store.save_token(APP, TokenRecord("b", "s2", 10, "play"))
    await store.save_token(OTHER, TokenRecord("c", "s1", 10, "play"))
    assert await store.delete_tokens_for_stream(APP, "s1") == 3
    assert await store.delete_tokens_for_stream(APP, "s1") == 0
    assert await store.list_tokens(APP, "s1", 0, 10) == []
    assert await store.get_token(APP, "b") is not None
    assert await store.get_token(OTHER, "c") is not None


# -- lifecycle -----------------------------------------------------------


async def test_dump_counts(store: Store) -> None:
    assert await store.dump() == {"streams": 0, "rooms": 0, "tokens": 0, "failed_writes": 0}
    await store.save_stream(APP, stream("a"))
    await store.save_stream(OTHER, stream("a"))
    await store.save_room(APP, RoomRecord("r"))
    await store.save_token(APP, TokenRecord("t", "a", 1, "play"))
    assert await store.dump() == {"streams": 2, "rooms": 1, "tokens": 1, "failed_writes": 0}


async def test_flush_and_close_idempotent(factory: Factory) -> None:
    s = factory()
    await s.save_stream(APP, stream("a"))
    await s.flush()
    await s.flush()
    await asyncio.gather(s.close(), s.close())
    await s.close()
    await s.flush()  # nothing left to write: a no-op, not an error
    with pytest.raises(RuntimeError, match="closed"):
        await s.get_stream(APP, "a")
    with pytest.raises(RuntimeError, match="closed"):
        await s.save_stream(APP, stream("b"))
    with pytest.raises(RuntimeError, match="closed"):
        await s.dump()


# -- order and snapshots (the same on both backends) ----------------------


async def test_read_after_write_sees_it(store: Store) -> None:
    await store.save_stream(APP, stream("s", name="one"))
    got = await store.get_stream(APP, "s")
    assert got is not None and got.name == "one"
    await store.save_stream(APP, stream("s", name="two"))
    await store.save_stream(APP, stream("s", name="three"))
    got = await store.get_stream(APP, "s")
    assert got is not None and got.name == "three"

    await store.save_stream(APP, stream("gone"))
    assert await store.delete_stream(APP, "gone") is True
    assert await store.get_stream(APP, "gone") is None

    await store.save_room(APP, RoomRecord("r"))
    assert await store.delete_room(APP, "r") is True
    assert await store.get_room(APP, "r") is None

    await store.save_token(APP, TokenRecord("t", "s", 10, "play"))
    assert await store.consume_token(APP, "t") is True
    await store.save_token(APP, TokenRecord("t", "s", 10, "play"))  # saved again after its use
    assert await store.get_token(APP, "t") is not None


async def test_effects_follow_call_order_not_await_order(store: Store) -> None:
    before = store.get_stream(APP, "s")  # called before the save: answers as of then
    await store.save_stream(APP, stream("s"))
    after = store.get_stream(APP, "s")
    deleted = store.delete_stream(APP, "s")
    gone = store.get_stream(APP, "s")
    assert await gone is None
    assert await deleted is True
    assert await after is not None
    assert await before is None

    saved, got, listed = await asyncio.gather(
        store.save_room(APP, RoomRecord("r", room_stream_list=["a"])),
        store.get_room(APP, "r"),
        store.list_rooms(APP, 0, 10),
    )
    assert saved is None and got == RoomRecord("r", room_stream_list=["a"]) and listed == [got]


async def test_save_snapshots_the_record_at_call_time(store: Store) -> None:
    rec = stream("s", name="as-saved", sub_track_stream_ids=["x"])
    pending = store.save_stream(APP, rec)  # not awaited yet
    rec.name = "mutated"
    rec.sub_track_stream_ids.append("y")
    await pending
    got = await store.get_stream(APP, "s")
    assert got is not None and got.name == "as-saved" and got.sub_track_stream_ids == ["x"]

    room = RoomRecord("r", room_stream_list=["a"])
    await store.save_room(APP, room)
    room.room_stream_list.append("b")  # the domain's live record, mutated after each save
    got_room = await store.get_room(APP, "r")
    assert got_room is not None and got_room.room_stream_list == ["a"]


# -- SqliteStore specifics -----------------------------------------------


async def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    s = SqliteStore(path)
    srec = stream("s1", status="broadcasting", sub_track_stream_ids=["x", "y"], zombi=True)
    room = RoomRecord("r1", start_date=1, end_date=2, room_stream_list=["s1"], mode="mcu")
    tok = TokenRecord("t1", "s1", 123, "publish", room_id="r1")
    await s.save_stream(APP, srec)
    await s.save_room(APP, room)
    await s.save_token(APP, tok)
    await s.close()
    assert path.exists()

    s2 = SqliteStore(path)
    try:
        assert await s2.get_stream(APP, "s1") == srec
        assert await s2.get_room(APP, "r1") == room
        assert await s2.get_token(APP, "t1") == tok
        assert await s2.dump() == {"streams": 1, "rooms": 1, "tokens": 1, "failed_writes": 0}
        assert await s2.mark_all_finished() == 1  # startup crash recovery
    finally:
        await s2.close()


async def test_sqlite_schema_version_recorded(tmp_path: Path) -> None:
    from confero.store.sqlite import MIGRATIONS

    path = tmp_path / "v.db"
    await SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    await SqliteStore(path).close()  # reopening an up-to-date db is a no-op


async def test_sqlite_rejects_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        SqliteStore(path)


async def test_sqlite_skips_corrupt_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "corrupt.db"
    s = SqliteStore(path)
    await s.save_stream(APP, stream("good1", date=1))
    await s.save_stream(APP, stream("bad1", date=2))
    await s.save_stream(APP, stream("bad2", date=3))
    await s.save_stream(APP, stream("good2", date=4))
    await s.save_room(APP, RoomRecord("badroom"))
    await s.close()

    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE streams SET sub_track_stream_ids = 'not json' WHERE stream_id = 'bad1'")
        conn.execute("UPDATE streams SET duration = 'abc' WHERE stream_id = 'bad2'")
        conn.execute("UPDATE rooms SET room_stream_list = '[1, 2]'")
    conn.close()

    s = SqliteStore(path)
    try:
        with caplog.at_level(logging.DEBUG, logger="confero.store.sqlite"):
            ids = [r.stream_id for r in await s.list_streams(APP, 0, 10)]
            assert ids == ["good1", "good2"]
            await s.list_streams(APP, 0, 10)
            assert await s.get_stream(APP, "bad1") is None
            assert await s.list_rooms(APP, 0, 10) == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # once for streams, once for rooms
        # a corrupt row can be overwritten by a fresh save
        await s.save_stream(APP, stream("bad1", date=2))
        assert await s.get_stream(APP, "bad1") is not None
    finally:
        await s.close()


async def test_sqlite_usable_from_threads(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "t.db")
    try:
        await asyncio.gather(*(asyncio.to_thread(asyncio.run, s.save_stream(APP, stream(f"s{i}"))) for i in range(8)))
        assert len(await s.list_streams(APP, 0, 100)) == 8
    finally:
        await s.close()
