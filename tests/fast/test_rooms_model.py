"""Rooms as main-track Broadcasts in the domain alone (fake media), and the pieces around them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from confero import errors
from confero.domain import events
from confero.settings import AppSettings, SettingsError
from confero.store import MemoryStore, RoomRecord, SqliteStore, StreamRecord
from tests.fast.test_domain import APP, World, until
from tests.fast.test_domain import world as world


async def test_a_zombi_room_goes_with_its_last_member(world: World) -> None:
    client, sink = world.client()
    await client.join_room("z")
    record = world.store._rooms[APP]["z"]
    assert record.zombi and record.end_date == 0
    await client.leave_room("z")
    await until(lambda: "z" not in world.store._rooms.get(APP, {}), "the zombi record to go")
    # a room made over REST stays
    await world.app.rooms.create(RoomRecord(room_id="kept"))
    await client.join_room("kept")
    await client.leave_room("kept")
    assert "kept" in world.store._rooms[APP]
    assert sink.of(events.LeftRoom) == []


async def test_accept_only_rooms_in_data_store_refuses_unknown_rooms(world: World) -> None:
    world.app.update_settings({"acceptOnlyRoomsInDataStore": True})
    client, _ = world.client()
    with pytest.raises(errors.UnknownRoom):
        await client.join_room("nobody-made-it")
    await world.app.streams.create(StreamRecord(stream_id="made"))
    joined = await client.join_room("made")
    assert joined.room_id == "made"
    await client.leave_room("made")


async def test_member_stream_subtrack_notifications_and_broadcast_view(world: World) -> None:
    a, a_sink = world.client()
    await a.join_room("r", "a")
    await world.live_publisher(a, "a", room="r")
    await a.play("r")
    b, _ = world.client()
    await b.join_room("r", "b")
    await world.live_publisher(b, "b", room="r")
    await until(lambda: events.SubtrackAdded("r", "b") in a_sink.of(events.SubtrackAdded), "subtrackAdded")
    record, _ = await a.broadcast_object("r")
    assert sorted(record.sub_track_stream_ids) == ["a", "b"] and record.status == "broadcasting"
    assert await a.subtracks_count("r") == 2
    assert [r.stream_id for r in await a.subtracks("r", 0, 1)] == ["a"]
    await b.stop("b")
    await until(lambda: a_sink.of(events.SubtrackRemoved), "subtrackRemoved")
    with pytest.raises(errors.NotFound):
        await a.broadcast_object("nothing")


async def test_limits_and_planned_dates(world: World) -> None:
    now = int(time.time())
    await world.app.streams.create(StreamRecord(stream_id="soon", planned_start_date=now + 60))
    await world.app.streams.create(StreamRecord(stream_id="tiny", subtracks_limit=0))
    await world.app.streams.create(StreamRecord(stream_id="solo", webrtc_viewer_limit=0))
    client, _ = world.client()
    with pytest.raises(errors.StreamNotActive):
        await client.publish("soon")
    with pytest.raises(errors.SubtrackLimitReached):
        await client.publish("m", room="tiny")
    await world.live_publisher(client, "solo")
    viewer, _ = world.client()
    with pytest.raises(errors.ViewerLimitReached):
        await viewer.play("solo")


def test_settings_keep_keys_confero_does_not_use() -> None:
    settings = AppSettings()
    settings.update({"webRTCClientStartTimeoutMs": 6, "dataChannelEnabled": False})
    assert settings.to_dict()["webRTCClientStartTimeoutMs"] == 6 and settings.dataChannelEnabled is False
    with pytest.raises(SettingsError):
        settings.update({"dataChannelEnabled": "maybe", "other": 1})
    assert "other" not in settings.to_dict()
    with pytest.raises(SettingsError):
        settings.update({"bad key!": 1})
    with pytest.raises(SettingsError):  # the file still refuses what it does not know
        AppSettings.from_mapping("x", {"webRTCClientStartTimeoutMs": 6})


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_store_search_sort_and_count(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "s.db")
    try:
        for i, (stream_id, name) in enumerate((("a1", "Zed"), ("b2", "al_pha"), ("c3", "100%"))):
            await store.save_stream(APP, StreamRecord(stream_id=stream_id, name=name, date=i))
        assert await store.count_streams(APP) == 3
        assert await store.count_streams(APP, "AL_") == 1
        assert await store.count_streams(APP, "%") == 1  # wildcards are plain characters
        assert await store.count_streams(APP, "_") == 1
        by_name = await store.list_streams(APP, 0, 10, sort_by="name")
        assert [r.stream_id for r in by_name] == ["c3", "a1", "b2"]
        desc = await store.list_streams(APP, 0, 2, sort_by="date", order="desc")
        assert [r.stream_id for r in desc] == ["c3", "b2"]
        found = await store.list_streams(APP, 0, 10, search="b")
        assert [r.stream_id for r in found] == ["b2"]
    finally:
        await store.close()
