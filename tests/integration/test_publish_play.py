"""1-N publish/play through the forwarding SFU, with real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsSocket
from tests.support.clients import Clients

# Both fan-out engines (compiled and pure Python) forward, retransmit and report the same.
pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["compiled", "python"], indirect=True)]


async def notification(sock: AmsSocket, definition: str, stream_id: str, timeout: float = 10) -> dict:
    return await sock.wait_for(definition=definition, stream_id=stream_id, timeout=timeout)


def server_uptrack(server: Server, kind: str) -> dict:
    (publisher,) = server.router.dump()["publishers"]
    return next(t for t in publisher["tracks"] if t["kind"] == kind)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_one_publisher_three_players(server: Server, clients: Clients, codec: str) -> None:
    pub_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "stream1", codec=codec)
    await publisher.start()
    await notification(pub_sock, "publish_started", "stream1")

    sockets = [await clients.socket() for _ in range(3)]
    players = [clients.player(s, "stream1") for s in sockets]
    await asyncio.gather(*(p.start() for p in players))
    for sock in sockets:
        await notification(sock, "play_started", "stream1")
    await asyncio.gather(*(p.wait_frames(60, 20, timeout=30) for p in players))
    for player in players:
        assert player.video_frames >= 60
        assert player.audio_frames >= 20
        assert player.decode_errors == 0
        assert player.first_video_size == (320, 240)
        assert set(player.id_mapping.values()) == {"ARDAMSvstream1", "ARDAMSastream1"}
        assert codec.lower() in player.offer_sdp.lower()
    video = server_uptrack(server, "video")
    assert video["codec"].lower() == f"video/{codec.lower()}"
    assert video["downtracks"] == 3

    # The publisher stops: every player hears play_finished, the publisher publish_finished.
    await publisher.stop()
    await notification(pub_sock, "publish_finished", "stream1")
    for sock in sockets:
        await notification(sock, "play_finished", "stream1")


async def test_player_with_packet_loss_recovers_through_nack(server: Server, clients: Clients) -> None:
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "lossy", codec="VP8")
    player = clients.player(play_sock, "lossy", drop_rate=0.05, seed=7)
    await publisher.start()
    await notification(pub_sock, "publish_started", "lossy")
    await player.start()
    await player.wait_frames(90, timeout=30)
    assert player.dropped > 0
    assert player.decode_errors == 0
    (subscriber,) = server.router.dump()["subscribers"]
    video = next(t for t in subscriber["tracks"] if t["kind"] == "video")
    assert video["retransmitted"] > 0


async def test_late_player_starts_on_a_keyframe(server: Server, clients: Clients) -> None:
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "late", codec="VP8", with_audio=False)
    player = clients.player(play_sock, "late")
    await publisher.start()
    await notification(pub_sock, "publish_started", "late")
    # Well into the stream: 90 frames (3 s) after the first keyframe, and aiortc's encoder sends
    # no periodic keyframe that soon, so the player joins between keyframes.
    assert publisher.media is not None and publisher.media.video is not None
    video_source = publisher.media.video
    await eventually(lambda: video_source.frames_sent >= 90, timeout=30, what="the publisher's 90th frame")
    keyframes_before = server_uptrack(server, "video")["keyframes"]
    await player.start()
    await player.wait_frames(30, timeout=20)
    assert player.decode_errors == 0
    # The join asked the publisher for a keyframe, and the player started on it.
    assert server_uptrack(server, "video")["keyframes"] > keyframes_before
    assert player.first_video_at is not None and player.first_video_at - player.started_at < 2.0


async def test_publisher_disconnect_ends_players_and_frees_everything(server: Server, clients: Clients) -> None:
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "vanish", codec="VP8")
    player = clients.player(play_sock, "vanish")
    await publisher.start()
    await notification(pub_sock, "publish_started", "vanish")
    await player.start()
    await player.wait_frames(10, timeout=20)
    await pub_sock.close()  # no stop: the socket just goes away
    await notification(play_sock, "play_finished", "vanish")
    await eventually(lambda: not server.router.dump()["publishers"], timeout=5, what="the publisher to go")
    assert server.router.dump()["publishers"] == []
    assert server.applications["WebRTCAppEE"].streams == {}
    # The stream was never registered over REST, so its record goes with it.
    assert await server.store.get_stream("WebRTCAppEE", "vanish") is None


async def test_stop_frees_the_stream_id_at_once(server: Server, clients: Clients) -> None:
    sock = await clients.socket()
    first = clients.publisher(sock, "again", codec="VP8")
    await first.start()
    await first.stop()
    await notification(sock, "publish_finished", "again")
    second = clients.publisher(sock, "again", codec="VP8")
    await second.start()  # no streamIdInUse
    await notification(sock, "publish_started", "again")
    await second.stop()


async def test_serve_tunes_the_garbage_collector_and_a_server_does_not(server: Server, tmp_path: Path) -> None:
    """Full collections stalled the loop while peers joined: the process collects less often.

    The tuning is the process's (`serve()`), not a Server's: the fixture's server left it alone.
    """
    import gc
    import os
    import signal

    from confero.server import GC_THRESHOLDS, serve
    from tests.support.server import make_settings

    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    ready = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve(make_settings(tmp_path / "serve"), ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        if ready.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # serve() handles it: a clean shutdown
        else:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
        gc.set_threshold(*before)
