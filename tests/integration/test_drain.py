"""The drain: `Server.drain()` and SIGTERM on a real `confero serve` process.

Every client hears `server_will_stop` once; a new WebSocket is a 503 and a new publish, play,
joinRoom or join the error `server_will_stop`, while the calls that run go on (the player keeps
decoding frames) and REST answers. The server closes when the last session has ended, at the
deadline, or at once on a second signal; the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from confero.server import Server
from tests.integration.test_cli_shutdown import free_port, start_confero, stop_process, wait_exit, wait_listening
from tests.support import eventually
from tests.support.amsclient import AmsSocket, Player, Publisher
from tests.support.clients import Clients

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"


async def live_call(clients: Clients, stream_id: str) -> tuple[AmsSocket, Publisher, AmsSocket, Player]:
    """A publisher of `stream_id` and a player decoding its frames."""
    pub_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, stream_id, codec="VP8")
    await publisher.start(timeout=15)
    await pub_sock.wait_for("notification", "publish_started", stream_id=stream_id, timeout=15)
    play_sock = await clients.socket()
    player = clients.player(play_sock, stream_id)
    await player.start(timeout=15)
    await play_sock.wait_for("notification", "play_started", stream_id=stream_id, timeout=15)
    await player.wait_frames(5, timeout=20)
    return pub_sock, publisher, play_sock, player


async def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET /{APP}/`path`: the status and the JSON body."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/{APP}/{path}") as reply:
        assert reply.content_type == "application/json", await reply.text()
        return reply.status, await reply.json()


async def assert_new_socket_refused(port: int) -> None:
    """A new WebSocket: HTTP 503, with a JSON body that says why."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await AmsSocket.connect(port)
    assert refused.value.status == 503
    status, body = await get(port, "websocket")
    assert status == 503
    assert body["success"] is False and body["definition"] == "server_will_stop", body


async def assert_new_work_refused(sock: AmsSocket) -> None:
    """On a socket opened before the drain: publish, play, joinRoom and join are refused."""
    commands = [
        {"command": "publish", "streamId": "late-pub", "video": True, "audio": True},
        {"command": "play", "streamId": "late-play"},
        {"command": "joinRoom", "room": "late-room", "streamId": "late-member"},
        {"command": "join", "streamId": "late-call", "multiPeer": False, "mode": "both"},
    ]
    for command in commands:
        await sock.send(command)
        error = await sock.wait_for("error", stream_id=str(command["streamId"]), timeout=10)
        assert error["definition"] == "server_will_stop", error


async def rest_answers(port: int, path: str) -> dict[str, Any]:
    """A REST answer (200) while the server drains."""
    status, body = await get(port, "rest/v2/broadcasts/" + path)
    assert status == 200, body
    return body


def will_stop_count(sock: AmsSocket) -> int:
    return len(sock.find("notification", "server_will_stop"))


async def frames_go_on(player: Player, more: int = 15) -> None:
    start = player.video_frames
    await eventually(lambda: player.video_frames >= start + more, timeout=15, what=f"{more} more frames while draining")


# -- in process: Server.drain() ------------------------------------------------------------------


async def test_drain_refuses_new_work_lets_the_call_run_and_closes_when_it_ends(
    server: Server, clients: Clients
) -> None:
    pub_sock, publisher, play_sock, player = await live_call(clients, "draining")
    idle = await clients.socket()
    await idle.round_trip()
    assert server.active_sessions() == 2

    drain = asyncio.get_running_loop().create_task(server.drain(60))
    for sock in (pub_sock, play_sock, idle):
        await sock.wait_for("notification", "server_will_stop", timeout=10)
    await assert_new_socket_refused(server.port)
    await assert_new_work_refused(idle)
    record = await rest_answers(server.port, "draining")
    assert record["status"] == "broadcasting", record
    await frames_go_on(player)
    assert not drain.done() and not server.closed

    await publisher.stop()  # the publisher leaves: the player's stream ends, nothing runs any more
    await play_sock.wait_for("notification", "play_finished", stream_id="draining", timeout=10)
    assert await asyncio.wait_for(drain, 10) == "drained"
    assert server.closed
    for sock in (pub_sock, play_sock, idle):
        await eventually(sock.closed.is_set, timeout=10, what="the server to close the socket")
        assert will_stop_count(sock) == 1, sock.history


async def test_drain_with_nothing_running_closes_at_once(server: Server, clients: Clients) -> None:
    idle = await clients.socket()
    await idle.round_trip()
    assert server.active_sessions() == 0
    assert await asyncio.wait_for(server.drain(60), 10) == "drained"
    await eventually(idle.closed.is_set, timeout=10, what="the server to close the socket")
    assert will_stop_count(idle) == 1
    assert await server.drain() == "drained"  # a second call: how the first one ended


# -- a real process: SIGTERM ----------------------------------------------------------------------


async def test_sigterm_drains_until_the_deadline_then_ends_the_streams_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "confero.log"
    proc = start_confero(port, tmp_path / "data", log_path, tmp_path, "--drain-timeout", "4")
    try:
        async with Clients(port) as clients:
            await wait_listening(proc, port)
            pub_sock, _, play_sock, player = await live_call(clients, "sigterm1")

            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await pub_sock.wait_for("notification", "server_will_stop", timeout=10)
            await play_sock.wait_for("notification", "server_will_stop", timeout=10)
            await assert_new_socket_refused(port)
            await assert_new_work_refused(pub_sock)
            await frames_go_on(player)
            assert proc.poll() is None
            assert not play_sock.find("notification", "play_finished"), play_sock.history

            # At the deadline the streams end, then the process exits 0.
            await pub_sock.wait_for("notification", "publish_finished", stream_id="sigterm1", timeout=15)
            await play_sock.wait_for("notification", "play_finished", stream_id="sigterm1", timeout=15)
            code = await wait_exit(proc, 15)
            elapsed = time.monotonic() - signalled
            output = log_path.read_text(errors="replace")
            assert code == 0, f"exit code {code}; output:\n{output}"
            assert 4.0 <= elapsed < 4.0 + 15, elapsed
            assert "Traceback" not in output, output
            assert "draining: 2 sessions running" in output, output
            assert "drain deadline reached" in output, output
            for sock in (pub_sock, play_sock):
                assert will_stop_count(sock) == 1, sock.history
    finally:
        stop_process(proc)


async def test_sigterm_exits_before_the_deadline_when_the_clients_leave(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "confero.log"
    proc = start_confero(port, tmp_path / "data", log_path, tmp_path, "--drain-timeout", "60")
    try:
        async with Clients(port) as clients:
            await wait_listening(proc, port)
            pub_sock, publisher, play_sock, player = await live_call(clients, "sigterm2")

            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await play_sock.wait_for("notification", "server_will_stop", timeout=10)
            await frames_go_on(player, more=5)
            await player.stop()
            await publisher.stop()
            await pub_sock.close()
            await play_sock.close()

            code = await wait_exit(proc, 20)
            elapsed = time.monotonic() - signalled
            output = log_path.read_text(errors="replace")
            assert code == 0, f"exit code {code}; output:\n{output}"
            assert elapsed < 30, elapsed
            assert "drained: every session ended" in output, output
            assert "Traceback" not in output, output
    finally:
        stop_process(proc)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_during_the_drain_closes_at_once(tmp_path: Path, second: signal.Signals) -> None:
    port = free_port()
    log_path = tmp_path / "confero.log"
    proc = start_confero(port, tmp_path / "data", log_path, tmp_path, "--drain-timeout", "60")
    try:
        async with Clients(port) as clients:
            await wait_listening(proc, port)
            member = await clients.socket()  # a room member: a session without media
            await member.send({"command": "joinRoom", "room": "hall", "streamId": "m1"})
            await member.wait_for(definition="joinedTheRoom", timeout=10)

            proc.send_signal(signal.SIGTERM)
            await member.wait_for("notification", "server_will_stop", timeout=10)
            await rest_answers(port, "count")
            assert proc.poll() is None

            signalled = time.monotonic()
            proc.send_signal(second)
            await asyncio.wait_for(member.closed.wait(), 10)
            code = await wait_exit(proc, 10)
            output = log_path.read_text(errors="replace")
            assert code == 0, f"exit code {code}; output:\n{output}"
            assert time.monotonic() - signalled < 10
            assert "draining: 1 session running" in output, output
            assert "drain cut short" in output, output
            assert "Traceback" not in output, output
    finally:
        stop_process(proc)
