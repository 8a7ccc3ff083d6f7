"""Webhooks to a real HTTP receiver on 127.0.0.1, from real publishes, plays and rooms.

The receiver checks every action Confero sends, the body fields, the order of one stream's
events and the signature; a receiver that fails, is down or never answers changes nothing for
the media: joins still answer and frames still decode.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from confero.server import Server
from confero.settings import AppSettings
from confero.store import StreamRecord
from confero.webhooks import SIGNATURE_HEADER
from tests.support import eventually
from tests.support.amsclient import AmsSocket
from tests.support.clients import Clients

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
SECRET = "a-webhook-secret-of-32-characters!"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, object]:
        return dict(json.loads(self.raw))


@dataclass
class Receiver:
    """An HTTP server of the test's: /ok answers 200, /flaky 500 `failures` times first, /slow never."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    failures: int = 2
    never: asyncio.Event = field(default_factory=asyncio.Event)  # set only at teardown

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        path = request.path
        self.attempts[path] = self.attempts.get(path, 0) + 1
        if path.startswith("/slow"):
            await self.never.wait()
        if path.startswith("/flaky") and self.attempts[path] <= self.failures:
            return web.Response(status=500)
        self.received.append(Received(path, dict(request.headers), raw))
        return web.Response(text="ok")

    def actions(self, path: str | None = None, stream_id: str | None = None) -> list[str]:
        return [
            str(r.body["action"])
            for r in self.received
            if (path is None or r.path == path) and (stream_id is None or r.body["id"] == stream_id)
        ]

    def bodies(self, action: str) -> list[dict[str, object]]:
        return [r.body for r in self.received if r.body["action"] == action]


@pytest.fixture
async def receiver(server: Server) -> AsyncIterator[Receiver]:
    """Started after the server, so closed before it (its hanging handlers are let go first)."""
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.port = int(runner.addresses[0][1])
    try:
        yield rec
    finally:
        rec.never.set()
        await runner.cleanup()


def app_settings(server: Server) -> AppSettings:
    return server.settings.app(APP)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def publish(clients: Clients, stream_id: str, **extra: object) -> AmsSocket:
    sock = await clients.socket()
    publisher = clients.publisher(sock, stream_id, codec="VP8", extra=extra or None)
    await publisher.start()
    await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
    return sock


async def test_publish_and_play_send_each_action_in_order_signed(
    server: Server, clients: Clients, receiver: Receiver
) -> None:
    settings = app_settings(server)
    settings.listenerHookURL = receiver.url("/ok")
    settings.listenerHookSecret = SECRET
    await server.store.save_stream(APP, StreamRecord("s1", name="Stream One", meta_data='{"k": "v"}'))

    pub_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "s1", codec="VP8")
    await publisher.start()
    await pub_sock.wait_for(definition="publish_started", stream_id="s1", timeout=10)
    play_sock = await clients.socket()
    player = clients.player(play_sock, "s1")
    await player.start()
    await player.wait_frames(20, 5, timeout=20)
    await player.stop()
    await eventually(lambda: "playStopped" in receiver.actions(), timeout=10, what="playStopped")
    await publisher.stop()
    await eventually(lambda: "liveStreamEnded" in receiver.actions(), timeout=10, what="liveStreamEnded")

    assert receiver.actions() == ["liveStreamStarted", "playStarted", "playStopped", "liveStreamEnded"]
    (started,) = receiver.bodies("liveStreamStarted")
    assert started.keys() == {"id", "action", "streamName", "metadata", "app", "timestamp"}
    assert (started["id"], started["streamName"], started["metadata"], started["app"]) == (
        "s1",
        "Stream One",
        {"k": "v"},
        APP,
    )
    assert abs(int(str(started["timestamp"])) - time.time() * 1000) < 60_000
    (play,) = receiver.bodies("playStarted")
    assert play.keys() == {"id", "action", "metadata", "app", "timestamp"} and play["id"] == "s1"
    timestamps = [int(str(r.body["timestamp"])) for r in receiver.received]
    assert timestamps == sorted(timestamps)
    for r in receiver.received:
        assert r.headers["Content-Type"] == "application/json"
        expected = hmac.new(SECRET.encode(), r.raw, hashlib.sha256).hexdigest()
        assert r.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert server.dump()["webhooks"][APP] | {"targets": {}} == {
        "accepted": 4,
        "queued": 0,
        "sent": 4,
        "failed": 0,
        "dropped": 0,
        "retried": 0,
        "targets": {},
        "rooms": {},
    }


async def test_a_room_sends_subtrack_first_and_last_actions(
    server: Server, clients: Clients, receiver: Receiver
) -> None:
    app_settings(server).listenerHookURL = receiver.url("/ok")
    socks = []
    for stream_id in ("m1", "m2"):
        sock = await clients.socket()
        await sock.send({"command": "joinRoom", "room": "room1", "streamId": stream_id})
        await sock.wait_for(definition="joinedTheRoom", timeout=10)
        publisher = clients.publisher(sock, stream_id, codec="VP8", extra={"mainTrack": "room1"})
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
        socks.append((sock, publisher))
    await eventually(lambda: len(receiver.received) == 5, timeout=10, what="five hooks")
    for sock, publisher in socks:
        await publisher.stop()
        await sock.send({"command": "leaveFromRoom", "room": "room1", "streamId": publisher.stream_id})
    await eventually(
        lambda: "noActiveSubtracksLeftInMainTrack" in receiver.actions(), timeout=10, what="the room's last hook"
    )
    assert receiver.actions() == [
        "liveStreamStarted",
        "subtrackAddedInTheMainTrack",
        "firstActiveTrackAddedInMainTrack",
        "liveStreamStarted",
        "subtrackAddedInTheMainTrack",
        "liveStreamEnded",
        "subtrackLeftTheMainTrack",
        "liveStreamEnded",
        "subtrackLeftTheMainTrack",
        "noActiveSubtracksLeftInMainTrack",
    ]
    for action in ("liveStreamStarted", "subtrackAddedInTheMainTrack", "liveStreamEnded", "subtrackLeftTheMainTrack"):
        assert [(b["id"], b["mainTrackId"], b["roomId"]) for b in receiver.bodies(action)] == [
            ("m1", "room1", "room1"),
            ("m2", "room1", "room1"),
        ]
    (first,) = receiver.bodies("firstActiveTrackAddedInMainTrack")
    assert (first["id"], first["mainTrackId"]) == ("m1", "room1")
    (last,) = receiver.bodies("noActiveSubtracksLeftInMainTrack")
    assert last["id"] == "room1" and "mainTrackId" not in last


async def test_the_broadcasts_own_url_wins(server: Server, clients: Clients, receiver: Receiver) -> None:
    app_settings(server).listenerHookURL = receiver.url("/app")
    await server.store.save_stream(APP, StreamRecord("own", listener_hook_url=receiver.url("/own")))
    await publish(clients, "own")
    await publish(clients, "other")
    await eventually(lambda: len(receiver.received) == 2, timeout=10, what="two hooks")
    assert receiver.actions("/own") == ["liveStreamStarted"] and receiver.bodies("liveStreamStarted")
    assert [r.body["id"] for r in receiver.received if r.path == "/own"] == ["own"]
    assert [r.body["id"] for r in receiver.received if r.path == "/app"] == ["other"]


async def test_a_failing_receiver_gets_retries(server: Server, clients: Clients, receiver: Receiver) -> None:
    settings = app_settings(server)
    settings.listenerHookURL = receiver.url("/flaky")
    settings.webhookRetryCount = 3
    settings.webhookRetryDelay = 50
    settings.webhookContentType = "application/x-www-form-urlencoded"
    await publish(clients, "s1")
    await eventually(lambda: receiver.received, timeout=10, what="the hook, on the third attempt")
    assert receiver.attempts["/flaky"] == 3
    (got,) = receiver.received
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert b"action=liveStreamStarted" in got.raw and b"id=s1" in got.raw
    dump = server.dump()["webhooks"][APP]
    assert (dump["sent"], dump["retried"], dump["failed"]) == (1, 2, 0)


@pytest.mark.parametrize("kind", ["dead", "slow"])
async def test_a_dead_or_slow_receiver_changes_nothing_for_the_media(
    server: Server, clients: Clients, receiver: Receiver, kind: str
) -> None:
    settings = app_settings(server)
    settings.listenerHookURL = f"http://127.0.0.1:{closed_port()}/" if kind == "dead" else receiver.url("/slow")
    settings.webhookRetryCount = 5
    settings.webhookRetryDelay = 1000
    hooks = server.webhooks[APP]
    hooks.queue_size = 3
    hooks.timeout = 60.0  # a slow receiver holds its POST for the whole test
    hooks.drain_deadline = 0.2

    members = []
    for n in range(3):
        sock = await clients.socket()
        began = time.monotonic()
        await sock.send({"command": "joinRoom", "room": "room1", "streamId": f"m{n}"})
        await sock.wait_for(definition="joinedTheRoom", timeout=10)
        assert time.monotonic() - began < 2.0  # the join is answered at once
        publisher = clients.publisher(sock, f"m{n}", codec="VP8", extra={"mainTrack": "room1"})
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id=f"m{n}", timeout=10)
        members.append(sock)
    players = []
    for n in range(3):
        player = clients.player(members[(n + 1) % 3], f"m{n}")
        await player.start()
        players.append(player)
    await asyncio.gather(*(p.wait_frames(30, 10, timeout=20) for p in players))
    assert all(p.decode_errors == 0 for p in players)

    dump = hooks.dump()
    assert dump["sent"] == 0
    assert dump["dropped"] > 0  # 3 publishes and 3 plays make 10 hooks for a queue of 3
    assert dump["queued"] <= 3
    if kind == "slow":
        await eventually(lambda: receiver.attempts.get("/slow") == 1, timeout=5, what="the one hanging POST")
