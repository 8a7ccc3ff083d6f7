"""Webhooks without a network: the mapping of events to Ant Media's actions, and the queue.

The sender and the sleep are injected: no socket is opened and no test waits on a clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from urllib.parse import parse_qsl

import pytest

from confero.domain import observer
from confero.domain.application import Application
from confero.settings import AppSettings, Settings, SettingsError
from confero.store import MemoryStore, StreamRecord
from confero.webhooks import NOT_APPLICABLE, SENT, SIGNATURE_HEADER, Mapper, Webhooks, encode, retry_delay, signature
from tests.fast.fakemedia import FakeMedia, FakeSink
from tests.support import eventually

APP = "WebRTCAppEE"
URL = "http://hooks.invalid/app"


class Recorder:
    """An injected sender: answers from a script of statuses (200 once it runs out)."""

    def __init__(self, statuses: list[int | Exception] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.calls.append((url, body, dict(headers)))
        if self.gate is not None:
            await self.gate.wait()
        if self.statuses:
            status = self.statuses.pop(0)
            if isinstance(status, Exception):
                raise status
            return status
        return 200

    def bodies(self) -> list[dict[str, object]]:
        return [json.loads(body) for _, body, _ in self.calls]

    def actions(self) -> list[str]:
        return [str(b["action"]) for b in self.bodies()]


class Sleeps:
    """An injected sleep that returns at once and remembers each delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def hooks(
    settings: AppSettings,
    sender: Recorder,
    records: dict[str, StreamRecord] | None = None,
    *,
    sleeps: Sleeps | None = None,
    queue_size: int = 1000,
    drain_deadline: float = 2.0,
) -> Webhooks:
    found = records or {}
    return Webhooks(
        APP,
        lambda: settings,
        found.get,
        sender=sender,
        sleep=sleeps or Sleeps(),
        clock=lambda: 1234,
        queue_size=queue_size,
        drain_deadline=drain_deadline,
    )


# -- the mapping ---------------------------------------------------------------------------------


def test_the_actions_are_ant_medias_fourteen() -> None:
    assert len(SENT) + len(NOT_APPLICABLE) == 14
    assert not set(SENT) & set(NOT_APPLICABLE)


def test_a_room_stream_maps_to_started_subtrack_and_first_then_the_reverse() -> None:
    record = StreamRecord("s1", name="Alice", meta_data='{"seat": 3}')
    mapper = Mapper(APP, {"s1": record}.get)
    started = mapper.notices(observer.StreamStarted(APP, "s1", "room1"), 10)
    assert [n.action for n in started] == [
        "liveStreamStarted",
        "subtrackAddedInTheMainTrack",
        "firstActiveTrackAddedInMainTrack",
    ]
    assert started[0].fields == {
        "id": "s1",
        "action": "liveStreamStarted",
        "streamName": "Alice",
        "mainTrackId": "room1",
        "roomId": "room1",
        "metadata": {"seat": 3},  # metadata that is a JSON object is sent as one
        "app": APP,
        "timestamp": "10",
    }
    assert started[2].fields == {
        "id": "s1",
        "action": "firstActiveTrackAddedInMainTrack",
        "mainTrackId": "room1",
        "roomId": "room1",
        "app": APP,
        "timestamp": "10",
    }
    # a second stream in the room is not the first
    second = mapper.notices(observer.StreamStarted(APP, "s2", "room1"), 11)
    assert [n.action for n in second] == ["liveStreamStarted", "subtrackAddedInTheMainTrack"]
    assert [n.action for n in mapper.notices(observer.StreamEnded(APP, "s2", "room1"), 12)] == [
        "liveStreamEnded",
        "subtrackLeftTheMainTrack",
    ]
    # the last one leaving: the record is the one seen at the start (the stream is gone by now)
    mapper.record_of = {}.get
    ended = mapper.notices(observer.StreamEnded(APP, "s1", "room1"), 13)
    assert [n.action for n in ended] == [
        "liveStreamEnded",
        "subtrackLeftTheMainTrack",
        "noActiveSubtracksLeftInMainTrack",
    ]
    assert ended[0].fields["streamName"] == "Alice" and ended[0].record is record
    assert ended[2].fields == {
        "id": "room1",
        "action": "noActiveSubtracksLeftInMainTrack",
        "app": APP,
        "timestamp": "13",
    }
    assert mapper.dump() == {"rooms": {}, "streams": []}


def test_plays_timeouts_and_the_rest() -> None:
    mapper = Mapper(APP, {"s1": StreamRecord("s1", name="S", meta_data="plain text")}.get)
    (play,) = mapper.notices(observer.PlayStarted(APP, "s1", "c1"), 5)
    assert play.fields == {"id": "s1", "action": "playStarted", "metadata": "plain text", "app": APP, "timestamp": "5"}
    (stop,) = mapper.notices(observer.PlayEnded(APP, "room1", "c1", room_play=True), 6)
    assert stop.fields == {"id": "room1", "action": "playStopped", "app": APP, "timestamp": "6"}
    (timeout,) = mapper.notices(observer.PublishTimedOut(APP, "s1", "room1"), 7)
    assert timeout.fields == {
        "id": "s1",
        "action": "publishTimeoutError",
        "streamName": "S",
        "mainTrackId": "room1",
        "roomId": "room1",
        "metadata": {"subscriberId": None},
        "app": APP,
        "timestamp": "7",
    }
    for event in (
        observer.PublishRefused(APP, "s1", "InUse"),
        observer.PlayRefused(APP, "s1", "NotFound"),
        observer.RoomCreated(APP, "r"),
        observer.RoomEnded(APP, "r"),
        observer.MemberJoined(APP, "r", "s", "c"),
        observer.MemberLeft(APP, "r", "s", "c"),
    ):
        assert mapper.notices(event, 8) == []


def test_the_broadcast_url_wins_over_the_applications() -> None:
    own = StreamRecord("s1", listener_hook_url="http://own.invalid/")
    mapper = Mapper(APP, {"s1": own}.get)
    (notice,) = mapper.notices(observer.PlayStarted(APP, "s1", "c"), 1)
    assert notice.hook_url(URL) == "http://own.invalid/"
    (other,) = mapper.notices(observer.PlayStarted(APP, "s2", "c"), 1)
    assert other.hook_url(URL) == URL
    assert other.hook_url("") == ""


def test_encodings_signature_and_backoff() -> None:
    fields = {"id": "s1", "action": "playStarted", "metadata": {"a": 1}}
    assert json.loads(encode(fields, "application/json")) == fields
    form = dict(parse_qsl(encode(fields, "application/x-www-form-urlencoded").decode()))
    assert form == {"id": "s1", "action": "playStarted", "metadata": '{"a":1}'}
    body = b'{"id":"s1"}'
    expected = hmac.new(b"k" * 32, body, hashlib.sha256).hexdigest()
    assert signature("k" * 32, body) == f"sha256={expected}"
    assert [retry_delay(1000, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(1000, 20) == 30.0
    assert retry_delay(0, 3) == 0.0


def test_webhook_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="webhookContentType"):
        AppSettings(webhookContentType="text/plain").validate()
    with pytest.raises(SettingsError, match="listenerHookURL"):
        AppSettings(listenerHookURL="ftp://x").validate()
    with pytest.raises(SettingsError, match="negative"):
        AppSettings(webhookRetryCount=-1).validate()
    AppSettings(listenerHookURL=URL, webhookContentType="application/x-www-form-urlencoded").validate()


# -- the queue -------------------------------------------------------------------------------------


async def test_no_url_sends_nothing() -> None:
    sender = Recorder()
    w = hooks(AppSettings(), sender)
    w.on_event(observer.StreamStarted(APP, "s1"))
    assert w.dump()["accepted"] == 0
    await w.close()
    assert sender.calls == []


async def test_hooks_go_in_order_signed_and_in_the_chosen_encoding() -> None:
    sender = Recorder()
    settings = AppSettings(listenerHookURL=URL, listenerHookSecret="s" * 32)
    w = hooks(settings, sender)
    w.on_event(observer.StreamStarted(APP, "s1", "room1"))
    w.on_event(observer.PlayStarted(APP, "s1", "c"))
    settings.webhookContentType = "application/x-www-form-urlencoded"
    w.on_event(observer.StreamEnded(APP, "s1", "room1"))
    await eventually(lambda: w.sent == 7, timeout=2.0, what="seven hooks")
    assert [url for url, _, _ in sender.calls] == [URL] * 7
    actions = [
        json.loads(b)["action"] if h["Content-Type"] == "application/json" else dict(parse_qsl(b.decode()))["action"]
        for _, b, h in sender.calls
    ]
    assert actions == [
        "liveStreamStarted",
        "subtrackAddedInTheMainTrack",
        "firstActiveTrackAddedInMainTrack",
        "playStarted",
        "liveStreamEnded",
        "subtrackLeftTheMainTrack",
        "noActiveSubtracksLeftInMainTrack",
    ]
    for _, body, headers in sender.calls:
        assert headers[SIGNATURE_HEADER] == signature("s" * 32, body)
    assert w.dump() | {"targets": None} == {
        "accepted": 7,
        "queued": 0,
        "sent": 7,
        "failed": 0,
        "dropped": 0,
        "retried": 0,
        "targets": None,
        "rooms": {},
    }
    await w.close()
    await w.close()  # idempotent


async def test_a_failing_receiver_is_retried_with_backoff_then_given_up() -> None:
    sender = Recorder([500, OSError("refused"), 503, 500, 500, 500])
    settings = AppSettings(listenerHookURL=URL, webhookRetryCount=2, webhookRetryDelay=500)
    sleeps = Sleeps()
    w = hooks(settings, sender, sleeps=sleeps)
    w.on_event(observer.PlayStarted(APP, "a", "c"))  # 500, refused, 503: given up after 2 retries
    w.on_event(observer.PlayStarted(APP, "b", "c"))  # 500, 500, 500: given up too
    w.on_event(observer.PlayStarted(APP, "c", "c"))  # 200
    await eventually(lambda: w.sent + w.failed == 3, timeout=2.0, what="three outcomes")
    assert [json.loads(b)["id"] for _, b, _ in sender.calls] == ["a", "a", "a", "b", "b", "b", "c"]
    assert (w.sent, w.failed, w.retried) == (1, 2, 4)
    assert sleeps.delays == [0.5, 1.0, 0.5, 1.0]
    await w.close()


async def test_a_stuck_receiver_never_blocks_the_observer_and_drops_are_counted() -> None:
    sender = Recorder()
    sender.gate = asyncio.Event()  # never set: the first POST hangs
    w = hooks(AppSettings(listenerHookURL=URL), sender, queue_size=3, drain_deadline=0.01)
    for n in range(10):
        w.on_event(observer.PlayStarted(APP, f"s{n}", "c"))  # returns at once every time
    assert (w.accepted, w.dropped, w.pending()) == (3, 7, 3)
    await eventually(lambda: len(sender.calls) == 1, timeout=2.0, what="the first POST")
    await w.close()  # drains until its deadline, then cancels; what was left is dropped
    assert (w.sent, w.dropped, w.pending()) == (0, 10, 0)
    w.on_event(observer.PlayStarted(APP, "late", "c"))
    assert w.dropped == 11


async def test_one_slow_url_does_not_hold_up_another() -> None:
    slow_gate = asyncio.Event()
    calls: list[str] = []

    async def sender(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        calls.append(url)
        if url == "http://slow.invalid/":
            await slow_gate.wait()
        return 200

    records = {"slow": StreamRecord("slow", listener_hook_url="http://slow.invalid/")}
    w = Webhooks(APP, lambda: AppSettings(listenerHookURL=URL), records.get, sender=sender, drain_deadline=0.01)
    w.on_event(observer.PlayStarted(APP, "slow", "c"))
    for n in range(5):
        w.on_event(observer.PlayStarted(APP, f"fast{n}", "c"))
    await eventually(lambda: w.sent == 5, timeout=2.0, what="the fast URL's hooks")
    assert w.dump()["targets"] == {"http://slow.invalid/": 1}
    await w.close()


# -- with the domain -----------------------------------------------------------------------------


@pytest.fixture
async def app() -> AsyncIterator[tuple[Application, FakeMedia, Settings]]:
    settings = Settings(publish_timeout=5.0)
    settings.validate()
    media = FakeMedia()
    application = Application(APP, settings, MemoryStore(), media)
    yield application, media, settings
    for client in list(application.clients.values()):
        await client.close()
    await application.close()


async def test_the_domain_emits_what_the_hooks_need(app: tuple[Application, FakeMedia, Settings]) -> None:
    application, media, settings = app
    settings.app(APP).listenerHookURL = URL
    sender = Recorder()
    w = Webhooks(
        APP,
        lambda: application.app_settings,
        lambda sid: application.streams.get(sid) and application.streams[sid].record,
        sender=sender,
    )
    w.attach(application.observers)
    pub = application.connect(FakeSink(), "127.0.0.1")
    await pub.publish("s1", room="room1")
    await pub.configure("s1", "offer", "offer")
    media.publisher("s1").connect()
    await eventually(lambda: application.streams["s1"].started, timeout=2.0, what="s1 to start")
    player = application.connect(FakeSink(), "127.0.0.1")
    await player.play("s1")
    await player.configure("s1", "answer", "answer")
    media.subscriber("s1/play").connect()
    await pub.stop("s1")
    # a publish that never connects
    settings.publish_timeout = 0.02
    await pub.publish("slow")
    await pub.configure("slow", "offer", "offer")
    await eventually(lambda: "slow" not in application.streams, timeout=2.0, what="the timeout")
    await eventually(lambda: w.sent == 9, timeout=2.0, what="nine hooks")
    assert sender.actions() == [
        "liveStreamStarted",
        "subtrackAddedInTheMainTrack",
        "firstActiveTrackAddedInMainTrack",
        "playStarted",
        "playStopped",
        "liveStreamEnded",
        "subtrackLeftTheMainTrack",
        "noActiveSubtracksLeftInMainTrack",
        "publishTimeoutError",
    ]
    await w.close()
    assert len(application.observers) == 0


async def test_close_lets_the_queues_drain_first() -> None:
    sender = Recorder()
    w = hooks(AppSettings(listenerHookURL=URL), sender)
    for n in range(5):
        w.on_event(observer.PlayStarted(APP, f"s{n}", "c"))
    await w.close()  # nothing was sent yet: close waits for the worker
    assert (w.sent, w.dropped) == (5, 0)
    assert [b["id"] for b in sender.bodies()] == [f"s{n}" for n in range(5)]
