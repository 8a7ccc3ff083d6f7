"""Confero's own JavaScript SDK (src/confero/web/js/webrtc_adaptor.js) in Chromium against Confero.

The harness page (pages/sdk-harness.html) is written into a document of the server's own origin,
so the SDK file and the WebSocket are the real server's. Each tab loads the SDK either as
an ES module (`import()`) or as a classic `<script src>` (the server's transformed copy), then
runs the flows through `window.H` (the harness) and `H.adaptor` (the WebRTCAdaptor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confero.server import Server
from tests.browser.conftest import artifact
from tests.support import eventually

HARNESS = (Path(__file__).resolve().parent / "pages" / "sdk-harness.html").read_text()
#: Longer than every timer of the SDK that could start a reconnection (connect watchdog 5 s,
#: ICE grace 3 s, attempt gap 3 s, retry 0.5 s, WebSocket back-off up to 8 s): run on a page's
#: fake clock (`page.clock`), it fires whatever such timer is armed, at once and in order.
PAST_EVERY_SDK_TIMER_MS = 10_000
ROOM_FLOW = "async ([room, id]) => { H.flow = {kind: 'multitrack', room}; await H.create(); H.adaptor.joinRoom(room, id || undefined); }"
LEGACY_FLOW = (
    "async ([room, id]) => { H.flow = {kind: 'legacy', room}; await H.create(); H.adaptor.joinRoom(room, id); }"
)


async def open_tab(context: Any, server: Server, mode: str = "module") -> Any:
    """A tab on the harness page with the SDK loaded as `mode` ("module" or "classic") in `window.SDK`."""
    base = f"http://127.0.0.1:{server.port}/WebRTCAppEE/"
    page = await context.new_page()
    # A document that really comes from the server (a 404 here: the server serves only
    # src/confero/web/), so that Chromium's local-network checks see a loopback page; then
    # the harness is written into it (a Playwright-fulfilled page would count as public).
    await page.goto(base + "sdk-harness.html")
    await page.set_content(HARNESS)
    if mode == "module":
        await page.evaluate("async () => { window.SDK = await import('/WebRTCAppEE/js/webrtc_adaptor.js'); }")
    else:
        await page.add_script_tag(url=base + "js/webrtc_adaptor.js")
        await page.evaluate("() => { window.SDK = {WebRTCAdaptor, getUrlParameter}; }")
    return page


async def wait_event(page: Any, info: str, match: Any = None, timeout: float = 30, since: int = 0) -> Any:
    return await page.evaluate(
        "([i, m, t, s]) => H.wait(i, m === null ? {} : m, t, s)", [info, match, int(timeout * 1000), since]
    )


async def errors(page: Any) -> list:
    return await page.evaluate("H.errors")


async def member_frames(page: Any) -> dict[str, int]:
    """Decoded frames of each remote video of the page, by member (publisher) id."""
    return await page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll('video.remote'))
            .filter(v => v.srcObject)
            .map(v => [v.dataset.member, v.getVideoPlaybackQuality().totalVideoFrames]))"""
    )


async def wait_members_advancing(pages: list, expected: list[set[str]], timeout: float = 45) -> None:
    """Each page shows exactly the expected members' videos, and their decoded frames advance:
    from a first reading (once every expected video has frames) to a later one, each grew."""
    first: list[dict[str, int]] | None = None
    last: list[dict[str, int]] = []

    async def advancing() -> bool:
        nonlocal first, last
        last = [await member_frames(p) for p in pages]
        if not all(set(f) == want and all(f[m] > 0 for m in want) for f, want in zip(last, expected, strict=True)):
            first = None  # not every expected video is there (yet): start over
            return False
        if first is None:
            first = last
            return False
        return all(b[m] > a[m] for a, b, want in zip(first, last, expected, strict=True) for m in want)

    try:
        await eventually(advancing, timeout=timeout, what="remote videos advancing", interval=0.2)
    except AssertionError:
        details = [await p.evaluate("({names: H.names(), errors: H.errors})") for p in pages]
        raise AssertionError(f"remote videos not advancing: {first} -> {last}, wanted {expected}; {details}") from None


async def close_pages(pages: list) -> None:
    for page in pages:
        await page.close()


async def wait_true(page: Any, expression: str, timeout: float = 20) -> Any:
    """Wait until the JavaScript `expression` is truthy on `page`; returns its value."""
    try:
        return await eventually(lambda: page.evaluate(expression), timeout=timeout, what=expression, interval=0.1)
    except AssertionError:
        raise AssertionError(f"{expression} stayed false; events {await page.evaluate('H.names()')}") from None


async def reconnection_attempts(page: Any, since: int = 0) -> list[str]:
    names = await page.evaluate(f"H.names().slice({since})")
    return [n for n in names if n.startswith("reconnection_attempt")]


# -- loading ----------------------------------------------------------------------------------


async def test_sdk_loads_as_module_and_as_classic_script(server: Server, context: Any) -> None:
    module = await open_tab(context, server, "module")
    classic = await open_tab(context, server, "classic")
    await classic.clock.install()
    try:
        assert await module.evaluate("typeof SDK.WebRTCAdaptor") == "function"
        assert await module.evaluate("typeof window.WebRTCAdaptor") == "undefined"  # a module defines no globals
        assert await module.evaluate("SDK.WebRTCAdaptor.VERSION") == "1.0.0"
        assert await module.evaluate("SDK.getUrlParameter('id', '?a=1&id=x%20y')") == "x y"
        assert await module.evaluate("SDK.getUrlParameter('flag', '?flag')") is True
        assert await module.evaluate("SDK.getUrlParameter('none', '?a=1') === undefined")
        assert await classic.evaluate("typeof WebRTCAdaptor") == "function"
        assert await classic.evaluate("getUrlParameter('a', '?a=2')") == "2"

        # The classic copy works: play mode needs no camera; initialized, then closeWebSocket.
        await classic.evaluate("H.create({isPlayMode: true})")
        await classic.evaluate("H.adaptor.closeWebSocket()")
        await wait_event(classic, "closed")
        # Every timer the SDK may still have runs now; a reconnection would open a WebSocket in it.
        await classic.clock.run_for(PAST_EVERY_SDK_TIMER_MS)
        assert await classic.evaluate("H.sockets.length") == 1
        assert await classic.evaluate("H.count('initialized')") == 1  # no reconnection
        assert await classic.evaluate("H.adaptor.isConnected()") is False
        assert await errors(classic) == []
    finally:
        await close_pages([module, classic])


# -- 1-N publish and play ---------------------------------------------------------------------------


async def test_publish_and_play_in_two_tabs(server: Server, context: Any) -> None:
    publisher = await open_tab(context, server, "module")
    await publisher.clock.install()  # the context's: every tab of this test runs on it
    players: list = []
    try:
        await publisher.evaluate("H.create()")
        await publisher.evaluate("H.adaptor.publish('sdkpub')")
        started = await wait_event(publisher, "publish_started", {"streamId": "sdkpub"})
        assert started["streamId"] == "sdkpub"

        players = [await open_tab(context, server, "module"), await open_tab(context, server, "classic")]
        for page in players:
            await page.evaluate("H.create({isPlayMode: true})")
        await players[0].evaluate("H.adaptor.play('sdkpub')")
        await players[1].evaluate("H.adaptor.play({streamId: 'sdkpub'})")  # the object form
        for page in players:
            await wait_event(page, "play_started", {"streamId": "sdkpub"})
            track = await wait_event(page, "newTrackAvailable", {"streamId": "sdkpub", "trackId": "ARDAMSvsdkpub"})
            assert track["streamId"] == "sdkpub"
        await wait_members_advancing(players, [{"sdkpub"}, {"sdkpub"}])

        for page in players:
            stats = await page.evaluate("H.adaptor.getStats('sdkpub')")
            assert stats["framesDecoded"] > 0 and stats["framesReceived"] > 0, stats
            assert stats["bytesReceived"] > 0 and "packetsLost" in stats, stats
            assert any(t["trackId"] == "ARDAMSvsdkpub" for t in stats["inboundRtpList"]), stats
            assert "updated_stats" in await page.evaluate("H.names()")
        sent = await publisher.evaluate("H.adaptor.getStats('sdkpub')")
        assert sent["bytesSent"] > 0 and sent["framesEncoded"] > 0, sent

        # Local media controls: camera off/on and mic mute act on the local tracks; switching
        # the camera replaces the sent track on the fly and the players keep decoding.
        video = "H.adaptor.localStream.getVideoTracks()[0]"
        assert await publisher.evaluate("H.adaptor.turnOffLocalCamera('sdkpub')") is True
        assert await publisher.evaluate(f"{video}.enabled") is False
        assert await publisher.evaluate("H.adaptor.turnOnLocalCamera('sdkpub')") is True
        assert await publisher.evaluate(f"{video}.enabled") is True
        await publisher.evaluate("H.adaptor.muteLocalMic()")
        assert await publisher.evaluate("H.adaptor.localStream.getAudioTracks()[0].enabled") is False
        await publisher.evaluate("H.adaptor.unmuteLocalMic()")
        sender = "H.adaptor.remotePeerConnection['sdkpub'].getSenders().find(s => s.track && s.track.kind === 'video').track.id"
        before = await publisher.evaluate(sender)
        assert await publisher.evaluate("H.adaptor.switchVideoCameraCapture('sdkpub')") is True
        after = await publisher.evaluate(sender)
        assert after != before and after == await publisher.evaluate(f"{video}.id")
        await wait_members_advancing(players, [{"sdkpub"}, {"sdkpub"}])
        await players[0].screenshot(path=str(artifact("sdk-play.png")))

        # The publisher's data channel reaches both players; a player's reaches the publisher.
        for page in players:
            await wait_event(page, "data_channel_opened", "sdkpub")
        assert await publisher.evaluate("H.adaptor.sendData('sdkpub', 'to the players')") is True
        for page in players:
            await wait_event(page, "data_received", {"streamId": "sdkpub", "data": "to the players"})
        await players[0].evaluate("H.adaptor.sendData('sdkpub', 'to the publisher')")
        await wait_event(publisher, "data_received", {"streamId": "sdkpub", "data": "to the publisher"})

        # stop() is intentional: play_finished / publish_finished, and no reconnection attempt.
        await players[0].evaluate("H.adaptor.stop('sdkpub')")
        await wait_event(players[0], "play_finished", {"streamId": "sdkpub"})
        await publisher.evaluate("H.adaptor.stop('sdkpub')")
        await wait_event(publisher, "publish_finished", {"streamId": "sdkpub"})
        await wait_event(players[1], "play_finished", {"streamId": "sdkpub"})
        # Any watchdog or retry still armed fires now (a reconnection attempt is reported in it).
        await publisher.clock.run_for(PAST_EVERY_SDK_TIMER_MS)
        for page in [publisher, *players]:
            names = await page.evaluate("H.names()")
            assert not [n for n in names if n.startswith("reconnection_attempt")], names
            assert await errors(page) == []
        assert await players[1].evaluate("H.adaptor.iceConnectionState('sdkpub')") is None
    finally:
        await close_pages([publisher, *players])


async def test_ping_pong_keeps_going_and_stops_with_the_socket(server: Server, context: Any) -> None:
    page = await open_tab(context, server)
    await page.clock.install()
    try:
        await page.evaluate("H.create({isPlayMode: true})")
        await page.clock.run_for(7_000)  # two pings, 3 s apart
        await wait_true(page, "H.count('pong') >= 2")
        assert await page.evaluate("H.count('pong')") >= 2, await page.evaluate("H.names()")
        await page.evaluate("H.adaptor.closeWebSocket()")
        await wait_event(page, "closed")
        pongs = await page.evaluate("H.count('pong')")  # final: no message is handled after `closed`
        await page.clock.run_for(3_500)  # a ping timer left running would fire in here
        assert await page.evaluate("H.count('pong')") == pongs  # the ping timer is gone
        assert await errors(page) == []
    finally:
        await page.close()


# -- conference -----------------------------------------------------------------------------------


async def test_conference_room_multitrack_flow(server: Server, context: Any) -> None:
    """The conference calls in 3 tabs; then one leaves and the others lose its tracks."""
    room = "sdkroom"
    pages = [await open_tab(context, server, mode) for mode in ("module", "classic", "module")]
    try:
        for page, stream_id in zip(pages, ["", "bob", "carol"], strict=True):
            await page.evaluate(ROOM_FLOW, [room, stream_id])
        ids = [await p.evaluate("H.wait('joinedTheRoom').then(o => o.streamId)") for p in pages]
        assert ids[0] and ids[1:] == ["bob", "carol"]  # the first id was generated by the server
        await wait_members_advancing(pages, [set(ids) - {own} for own in ids])
        for page in pages:
            tracks = await page.evaluate("H.tracks.map(t => [t.streamId, t.trackId, t.kind])")
            assert {t[0] for t in tracks} == {room}, tracks
            assert all(t[1] == f"ARDAMS{t[2][0]}{t[1][7:]}" for t in tracks), tracks
            assert await errors(page) == []
        await pages[0].screenshot(path=str(artifact("sdk-conference.png")))

        # Queries about the room and its members.
        await pages[0].evaluate(f"H.adaptor.getTrackList('{room}')")
        tracks = await wait_event(pages[0], "trackList", {"streamId": room})
        assert sorted(tracks["trackList"]) == sorted(ids[1:]), tracks
        await pages[0].evaluate("id => H.adaptor.getStreamInfo(id)", ids[1])
        info = await wait_event(pages[0], "streamInformation", {"streamId": ids[1]})
        assert info["streamInfo"] and info["streamInfo"][0]["videoCodec"], info
        await pages[0].evaluate(
            f"id => {{ H.adaptor.enableTrack('{room}', id, false); H.adaptor.enableTrack('{room}', id, true); }}",
            ids[1],
        )

        # carol leaves: the others are told, get a re-offer, and carol's tracks go silent.
        leaver = ids[2]
        await pages[2].evaluate("H.adaptor.leaveFromRoom(H.flow.room, H.myId)")
        await wait_event(pages[2], "leavedFromRoom", {"room": room})
        for page in pages[:2]:
            await wait_event(page, "streamLeaved", {"streamId": leaver})
            await wait_true(
                page,
                f"H.tracks.filter(t => t.member === '{leaver}').every(t => t.track.muted || t.track.readyState === 'ended')",
            )
            # The re-offer's mapping still names carol's m-lines, now inactive (once the re-offer
            # is answered: until then they read as before, or `recvonly` half-way).
            directions = f"""(() => {{ const pc = H.adaptor.remotePeerConnection['{room}'];
                const mapping = H.adaptor.idMapping['{room}'];
                return pc.getTransceivers().filter(t => mapping[t.mid] && mapping[t.mid].endsWith('{leaver}'))
                    .map(t => t.currentDirection); }})()"""
            await wait_true(page, f"(d => d.length > 0 && d.every(x => x === 'inactive'))({directions})")
            mids = await page.evaluate(directions)
            assert mids and all(d == "inactive" for d in mids), mids
        assert await pages[2].evaluate(f"H.adaptor.iceConnectionState('{room}')") is None
        assert await pages[2].evaluate("Object.keys(H.adaptor.remotePeerConnection)") == []

        # The two that stay still see each other: each one's decoded frames of the other go up.
        first = [await member_frames(p) for p in pages[:2]]
        second: list[dict[str, int]] = []

        async def advanced() -> bool:
            nonlocal second
            second = [await member_frames(p) for p in pages[:2]]
            return all(
                b.get(other, 0) > a.get(other, 0) for a, b, other in zip(first, second, [ids[1], ids[0]], strict=True)
            )

        await eventually(advanced, timeout=20, what="the two that stay to keep decoding each other", interval=0.2)
        for a, b, other in zip(first, second, [ids[1], ids[0]], strict=True):
            assert b[other] > a[other] > 0, (first, second)
        for page in pages:
            assert await errors(page) == []
            names = await page.evaluate("H.names()")
            assert not [n for n in names if n.startswith("reconnection_attempt")], names
    finally:
        await close_pages(pages)


async def test_tutorial_legacy_flow(server: Server, context: Any) -> None:
    """The tutorial as written: joinRoom, publish(id, token), play(member, token, room), streamJoined/streamLeaved."""
    room = "tutorialroom"
    ids = ["alice", "bob", "carol"]
    pages = [await open_tab(context, server, "classic") for _ in ids]
    try:
        for page, stream_id in zip(pages, ids, strict=True):
            await page.evaluate(LEGACY_FLOW, [room, stream_id])
        await wait_members_advancing(pages, [set(ids) - {own} for own in ids])
        for page in pages:
            assert await errors(page) == []
        # carol closes her tab: the others hear streamLeaved and keep each other.
        await pages[2].close()
        for page in pages[:2]:
            await wait_event(page, "streamLeaved", {"streamId": "carol"})
        await wait_members_advancing(pages[:2], [{"bob"}, {"alice"}])
    finally:
        await close_pages([p for p in pages if not p.is_closed()])


async def test_room_chat_over_data_channels(server: Server, context: Any) -> None:
    room = "chatroom"
    pages = [await open_tab(context, server, "module") for _ in range(2)]
    try:
        for page, stream_id in zip(pages, ["anna", "ben"], strict=True):
            await page.evaluate(ROOM_FLOW, [room, stream_id])
        for page, own in zip(pages, ["anna", "ben"], strict=True):
            await wait_event(page, "data_channel_opened", own)  # the publish connection's channel
            await wait_event(page, "data_channel_opened", room)  # the room play's channel
        await wait_members_advancing(pages, [{"ben"}, {"anna"}])

        # Text on anna's publish channel reaches ben's room play (not anna herself).
        await pages[0].evaluate("H.adaptor.sendData('anna', 'hello from anna')")
        await wait_event(pages[1], "data_received", {"streamId": room, "data": "hello from anna"})
        # ben answers on his room play's channel.
        await pages[1].evaluate(f"H.adaptor.sendData('{room}', 'hi anna')")
        await wait_event(pages[0], "data_received", {"streamId": room, "data": "hi anna"})

        # Binary: 40000 bytes cut into 16000-byte chunks and put together again.
        sent_hash = await pages[0].evaluate(
            """async () => { const bytes = new Uint8Array(40000).map((_, i) => (i * 7) % 251);
                 await H.adaptor.sendData('anna', bytes.buffer); return H.fnv(bytes); }"""
        )
        await wait_true(pages[1], "H.data.some(d => d.byteLength === 40000)")
        binary = await pages[1].evaluate("H.data.filter(d => d.byteLength !== undefined)")
        assert binary == [{"streamId": room, "byteLength": 40000, "hash": sent_hash}], binary
        # A Blob goes the same way.
        await pages[1].evaluate("H.adaptor.sendData('ben', new Blob(['blob-bytes']))")
        await wait_true(pages[0], "H.data.some(d => d.byteLength === 10)")

        texts = await pages[0].evaluate("H.data.map(d => d.text)")
        assert "hello from anna" not in texts, texts  # no echo to the sender
        for page in pages:
            assert await errors(page) == []
    finally:
        await close_pages(pages)


# -- 1-1 call ---------------------------------------------------------------------------------------


async def test_one_to_one_call(server: Server, context: Any) -> None:
    call = "sdkcall"
    pages = [await open_tab(context, server, "module"), await open_tab(context, server, "classic")]
    try:
        for page in pages:
            await page.evaluate("H.create()")
        await pages[0].evaluate(f"H.adaptor.join('{call}')")
        await wait_event(pages[0], "joined", {"streamId": call})
        await pages[1].evaluate(f"H.adaptor.join('{call}')")
        await wait_event(pages[1], "joined", {"streamId": call})
        for page in pages:
            await wait_event(page, "newStreamAvailable", {"streamId": call})
        await wait_members_advancing(pages, [{call}, {call}])
        await pages[1].screenshot(path=str(artifact("sdk-call.png")))

        for page in pages:
            await wait_event(page, "data_channel_opened", call)
        await pages[0].evaluate(f"H.adaptor.sendData('{call}', 'from the first')")
        await wait_event(pages[1], "data_received", {"streamId": call, "data": "from the first"})
        await pages[1].evaluate(f"H.adaptor.sendData('{call}', 'from the second')")
        await wait_event(pages[0], "data_received", {"streamId": call, "data": "from the second"})
        await pages[0].evaluate(f"H.adaptor.peerMessage('{call}', 'greeting', 'hello')")
        message = await wait_event(pages[1], "peerMessageCommand", {"definition": "greeting"})
        assert message["data"] == "hello"

        # The first leaves: it hears `leaved`; the other's connection is closed by the server's stop.
        await pages[0].evaluate(f"H.adaptor.leave('{call}')")
        await wait_event(pages[0], "leaved", {"streamId": call})
        await wait_true(pages[1], f"H.adaptor.iceConnectionState('{call}') === null")
        await pages[1].evaluate(f"H.adaptor.leave('{call}')")
        await wait_event(pages[1], "leaved", {"streamId": call})
        for page in pages:
            assert await errors(page) == []
    finally:
        await close_pages(pages)


# -- errors and reconnection ------------------------------------------------------------------------


async def test_errors_reach_callback_error(server: Server, context: Any) -> None:
    page = await open_tab(context, server)
    await page.clock.install()
    try:
        await page.evaluate("H.create({isPlayMode: true})")
        await page.evaluate("H.adaptor.play('nosuchstream')")
        await wait_true(page, "H.errors.some(e => e.error === 'no_stream_exist')")
        error = await page.evaluate("H.errors.find(e => e.error === 'no_stream_exist').message")
        assert error["command"] == "error" and error["streamId"] == "nosuchstream", error
        assert await page.evaluate("H.adaptor.iceConnectionState('nosuchstream')") is None

        await page.evaluate("H.adaptor.play('bad id!')")
        await wait_true(page, "H.errors.some(e => e.error === 'invalidStreamName')")
        await page.evaluate("H.adaptor.sendData('nosuchstream', 'x')")
        sent = await page.evaluate("H.errors.find(e => e.error === 'data_channel_error').message")
        assert "nosuchstream" in sent["message"], sent

        # A refused play is over: no reconnection attempt once the 5 s watchdog has passed.
        await page.clock.run_for(PAST_EVERY_SDK_TIMER_MS)
        names = await page.evaluate("H.names()")
        assert not [n for n in names if n.startswith("reconnection_attempt")], names
    finally:
        await page.close()


async def test_reconnects_after_websocket_drop_and_failed_ice(server: Server, context: Any) -> None:
    page = await open_tab(context, server)
    await page.clock.install()
    try:
        # The WebSocket drops (not closeWebSocket): reconnect, initialized again, publish again.
        await page.evaluate("H.create()")
        await page.evaluate("H.adaptor.publish('sdkre')")
        await wait_event(page, "publish_started", {"streamId": "sdkre"})
        mark = await page.evaluate("H.events.length")
        await page.evaluate("H.adaptor._ws.close()")
        await wait_event(page, "closed", since=mark)
        await wait_event(page, "initialized", since=mark)
        await wait_event(page, "reconnection_attempt_for_publisher", "sdkre", since=mark)
        # A page that publishes again on `initialized` (as Ant Media pages do) adopts the restart.
        await page.evaluate("H.adaptor.publish('sdkre')")
        await wait_event(page, "publish_started", {"streamId": "sdkre"}, since=mark)
        assert await page.evaluate(f"H.names().slice({mark}).filter(n => n === 'publish_started').length") == 1
        await page.evaluate("H.adaptor.stop('sdkre')")
        await wait_event(page, "publish_finished", {"streamId": "sdkre"}, since=mark)

        # ICE cannot start (relay-only policy and no TURN server): stop + publish again.
        mark = await page.evaluate("H.events.length")
        await page.evaluate("H.adaptor.peerconnection_config.iceTransportPolicy = 'relay'; H.adaptor.publish('sdkice')")
        # ICE never gets to `checking`: the 5 s connect watchdog restarts the publish.
        await wait_true(page, "H.adaptor.remotePeerConnection['sdkice'] !== undefined")
        await page.clock.run_for(5_000)
        await wait_event(page, "reconnection_attempt_for_publisher", "sdkice", timeout=9, since=mark)
        await page.evaluate("H.adaptor.stop('sdkice')")  # intentional: nothing more
        mark = await page.evaluate("H.events.length")
        await page.clock.run_for(PAST_EVERY_SDK_TIMER_MS)  # whatever is still armed fires now
        later = await page.evaluate(f"H.names().slice({mark})")
        assert not [n for n in later if n.startswith("reconnection_attempt")], later
        assert await page.evaluate("Object.keys(H.adaptor.remotePeerConnection)") == []
        assert await errors(page) == []
    finally:
        await page.close()


async def test_commands_wait_for_the_socket_and_an_unreachable_server_is_retried(server: Server, context: Any) -> None:
    page = await open_tab(context, server)
    await page.clock.install()
    attempts: list[str] = []
    page.on("websocket", lambda ws: attempts.append(ws.url))
    try:
        # A command given before `initialized` is sent once the socket opens.
        await page.evaluate(
            "() => { const ready = H.create({isPlayMode: true}); H.adaptor.getRoomInfo('emptyroom'); return ready; }"
        )
        info = await wait_event(page, "roomInformation", {"room": "emptyroom"})
        assert info["streams"] == [], info
        assert attempts and attempts[0].endswith("/WebRTCAppEE/websocket?target=edge"), attempts
        await page.evaluate("H.adaptor.closeWebSocket()")
        await wait_event(page, "closed")

        # Nobody listens: reported once, retried with back-off, and closeWebSocket ends the retries.
        attempts.clear()
        base = await page.evaluate("H.sockets.length")
        await page.evaluate(
            "H.errors.length = 0; void H.create({isPlayMode: true, websocket_url: 'ws://127.0.0.1:9/WebRTCAppEE/websocket'}).catch(() => {})"
        )
        # at 0, 0.5 and 1.5 s: each time one attempt has failed, run the clock through the back-off
        for retry in range(base + 1, base + 3):
            await wait_true(
                page, f"H.sockets.length >= {retry} && H.sockets[{retry - 1}].readyState === WebSocket.CLOSED"
            )
            await page.clock.run_for(1_000)
        await eventually(lambda: len(attempts) >= 3, timeout=10, what="three connection attempts")
        assert len(attempts) >= 3, attempts  # at 0, 0.5 and 1.5 s
        assert [e["error"] for e in await errors(page)] == ["WebSocketNotConnected"]
        await page.evaluate("H.adaptor.closeWebSocket()")
        sockets = await page.evaluate("H.sockets.length")
        # A retry left armed would fire in here, opening a WebSocket there and then ...
        await page.clock.run_for(PAST_EVERY_SDK_TIMER_MS)
        assert await page.evaluate("H.sockets.length") == sockets
        # ... and Playwright reports WebSockets in the order they are opened: once a marker
        # socket opened now is reported, every attempt before it has been.
        await eventually(lambda: len(attempts) >= sockets - base, timeout=10, what="every attempt reported")
        count = len(attempts)
        marker = f"ws://127.0.0.1:{server.port}/WebRTCAppEE/websocket?marker"
        await page.evaluate("url => { new WebSocket(url).onopen = (e) => e.target.close(); }", marker)
        await eventually(lambda: marker in attempts, timeout=10, what="the marker WebSocket")
        assert attempts[count:] == [marker], attempts
    finally:
        await page.close()
