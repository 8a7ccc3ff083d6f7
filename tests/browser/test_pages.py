"""The sample pages in Chromium: conference (multitrack and legacy), publish/play, 1-1 call.

Each test drives the pages as a person would (fields, buttons) and reads the page's state from
its test hook `window.conferoPage.state()`. Video is checked by decoded frames that keep advancing.

The pages are written for Ant Media's SDK API, so they must work with Ant Media's own SDK too:
one test runs a conference on it (npm's @antmedia/webrtc_adaptor, see package.json), and
CONFERO_TEST_SDK_DIR=/path/to/its/src/main/js runs every test here on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from confero.server import Server
from tests.browser.conftest import artifact, decoded_frames
from tests.support import eventually

APP = "WebRTCAppEE"
DOCS = Path(__file__).resolve().parents[2] / "docs"
WEB_JS = Path(__file__).resolve().parents[2] / "src" / "confero" / "web" / "js"
ANT_MEDIA_SDK = Path(__file__).resolve().parents[2] / "node_modules/@antmedia/webrtc_adaptor/src/main/js"
REMOTE_TILES = ".tile:not(.local) video"
TIMEOUT_MS = 30_000


def js(value: object) -> str:
    """A Python value as a JavaScript literal."""
    return json.dumps(value)


def resolved(folder: str | Path) -> Path:
    return Path(folder).resolve()


async def use_sdk_override(context: Any, folder: str | Path | None = None) -> None:
    """Serve the SDK's modules from `folder` or CONFERO_TEST_SDK_DIR (our page scripts stay ours)."""
    folder = folder or os.environ.get("CONFERO_TEST_SDK_DIR")
    if not folder:
        return
    root = resolved(folder)

    def served(relative: str) -> Path | None:
        """The file of `root` to serve for /js/`relative`, or None to let the server answer."""
        path = (root / relative).resolve()
        ours = (WEB_JS / relative).exists() and relative != "webrtc_adaptor.js"
        return path if root in path.parents and path.is_file() and not ours else None

    async def handle(route: Any) -> None:
        path = served(route.request.url.split("/js/", 1)[1].split("?", 1)[0])
        if path is not None:
            await route.fulfill(path=str(path), content_type="text/javascript")
        else:
            await route.continue_()

    await context.route("**/js/**", handle)


class Tab:
    """One browser tab on a sample page, with its uncaught exceptions collected."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.exceptions: list[str] = []
        page.on("pageerror", lambda error: self.exceptions.append(str(error)))

    async def state(self) -> dict[str, Any]:
        return await self.page.evaluate("window.conferoPage.state()")

    async def wait(self, predicate: str, timeout: float = TIMEOUT_MS) -> None:
        """Waits until `predicate` (JS, with `s` = the page state) holds; fails with the state."""
        try:
            await self.page.wait_for_function(
                "(() => { const s = window.conferoPage && window.conferoPage.state();"
                f" return !!s && ({predicate}); }})()",
                timeout=timeout,
            )
        except Exception as error:
            raise AssertionError(f"{self.page.url}: {predicate!r} never held; state: {await self.state()}") from error

    async def assert_clean(self) -> None:
        state = await self.state()
        assert state["errors"] == [], (self.page.url, state["errors"])
        assert self.exceptions == [], (self.page.url, self.exceptions)


async def open_tab(context: Any, server: Server, path: str) -> Tab:
    page = await context.new_page()
    tab = Tab(page)
    await page.goto(f"http://127.0.0.1:{server.port}/{APP}/{path}")
    await page.wait_for_function("window.conferoPage !== undefined", timeout=TIMEOUT_MS)
    return tab


async def frames_advance(tab: Tab, selector: str, count: int, timeout: float = 20) -> None:
    """Every one of the `count` videos matching `selector` decodes new frames: from a first
    reading that finds `count` of them to a later one, each video's frame count grew."""
    before: list[int] | None = None
    after: list[int] = []

    async def advanced() -> bool:
        nonlocal before, after
        after = await decoded_frames(tab.page, selector)
        if len(after) != count:
            before = None  # not the expected videos (yet): start over
            return False
        if before is None:
            before = after
            return False
        return all(b > a for a, b in zip(before, after, strict=True))

    try:
        await eventually(advanced, timeout=timeout, what=f"frames of {selector}", interval=0.2)
    except AssertionError:
        raise AssertionError(f"{tab.page.url}: frames of {selector} did not advance: {before} -> {after}") from None


async def join_conference(tab: Tab, name: str) -> None:
    await tab.wait("s.initialized")
    await tab.page.fill("#participantName", name)
    await tab.page.click("#joinButton")
    await tab.wait("s.joined && s.publishing")


async def close_all(*tabs: Tab) -> None:
    for tab in tabs:
        if not tab.page.is_closed():
            await tab.page.close()


@pytest.fixture
async def context_with_sdk(context: Any) -> Any:
    await use_sdk_override(context)
    return context


async def test_index_links_to_every_sample(server: Server, context_with_sdk: Any) -> None:
    page = await context_with_sdk.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://127.0.0.1:{server.port}/{APP}/")
    links = await page.eval_on_selector_all(".cards a", "links => links.map(a => a.getAttribute('href'))")
    assert links == ["conference.html", "publish.html", "play.html", "peer.html"]
    assert await page.text_content("#wsUrl") == f"ws://127.0.0.1:{server.port}/{APP}/websocket"
    for href in links:
        response = await page.request.get(f"http://127.0.0.1:{server.port}/{APP}/{href}")
        assert response.ok, href
    css = await page.request.get(f"http://127.0.0.1:{server.port}/{APP}/css/confero.css")
    assert css.ok
    assert errors == []
    await page.close()


async def test_three_participant_conference(server: Server, context_with_sdk: Any) -> None:
    names = ["Alice", "Bob", "Carol"]
    tabs = [await open_tab(context_with_sdk, server, "conference.html?roomId=room1") for _ in names]
    try:
        alice, bob, carol = tabs
        for tab, name in zip(tabs, names, strict=True):
            await join_conference(tab, name)
        ids = {name: (await tab.state())["streamId"] for tab, name in zip(tabs, names, strict=True)}
        for tab, name in zip(tabs, names, strict=True):
            others = sorted(ids[n] for n in names if n != name)
            await tab.wait(f"s.remoteIds.length === 2 && {js(others)}.every(id => s.remoteIds.includes(id))")
        for tab in tabs:
            await frames_advance(tab, REMOTE_TILES, 2)
        # Each tile carries the participant's name (from roomInformation's streamList, which
        # a page may ask for again after a later member joined: until then the tile shows its id).
        for tab, name in zip(tabs, names, strict=True):
            expected = sorted(n for n in names if n != name)
            labels: list[str] = []

            async def named(tab: Tab = tab, expected: list[str] = expected) -> bool:
                nonlocal labels
                labels = sorted(
                    await tab.page.eval_on_selector_all(".tile:not(.local) .name", "e => e.map(x => x.textContent)")
                )
                return labels == expected

            with contextlib.suppress(AssertionError):  # the page polls roomInformation every 5 s
                await eventually(named, timeout=15, what=f"tiles named {expected}", interval=0.1)
            assert labels == expected
            assert await tab.page.get_attribute("#localVideo", "muted") is not None
        await alice.page.screenshot(path=str(artifact("conference-3.png")))

        # Chat: Alice's message reaches Bob and Carol with her name, and Alice sees it once.
        await alice.wait("s.dataChannelOpen")
        await alice.page.fill("#chatText", "hello from Alice")
        await alice.page.click("#chatSend")
        for tab in (bob, carol):
            await tab.wait("s.chat.some(m => m.name === 'Alice' && m.text === 'hello from Alice' && !m.own)")
            await tab.page.wait_for_selector("#chatLog li:has-text('hello from Alice')")
        await bob.wait("s.dataChannelOpen")
        await bob.page.fill("#chatText", "hi Alice, Bob here")
        await bob.page.press("#chatText", "Enter")
        for tab in (alice, carol):
            await tab.wait("s.chat.some(m => m.name === 'Bob' && m.text === 'hi Alice, Bob here' && !m.own)")
        # Bob answered after Alice's message had reached him, and the server relays a room's
        # messages to Alice's room play in order: an echo of her own would have come before it.
        alice_chat = [m for m in (await alice.state())["chat"] if m["text"] == "hello from Alice"]
        own = {"from": ids["Alice"], "name": "Alice", "text": "hello from Alice", "own": True, "event": False}
        assert alice_chat == [own]
        # The picture for the README: three participants and a short chat. Kept as a test
        # artifact; CONFERO_UPDATE_DOCS=1 also refreshes docs/conference.png.
        await alice.page.screenshot(path=str(artifact("conference-chat.png")))
        if os.environ.get("CONFERO_UPDATE_DOCS") == "1":
            await alice.page.screenshot(path=str(DOCS / "conference.png"))
        # Plain-text messages (other apps) are shown too.
        await bob.page.evaluate(f"window.conferoPage.adaptor().sendData({js(ids['Bob'])}, 'plain hello')")
        await carol.wait("s.chat.some(m => m.text === 'plain hello')")

        # Camera and microphone toggles: no errors, the others see the badges, video keeps flowing.
        await bob.page.click("#cameraButton")
        await bob.wait("!s.cameraOn")
        await bob.page.click("#micButton")
        await bob.wait("!s.micOn")
        await alice.page.wait_for_selector(f".tile[data-stream-id='{ids['Bob']}'] .badges:has-text('camera off')")
        await frames_advance(alice, f".tile[data-stream-id='{ids['Bob']}'] video", 1)
        await bob.page.screenshot(path=str(artifact("conference-camera-off.png")))
        await bob.page.click("#cameraButton")
        await bob.wait("s.cameraOn")
        await bob.page.click("#micButton")
        await bob.wait("s.micOn")
        await frames_advance(alice, f".tile[data-stream-id='{ids['Bob']}'] video", 1)

        # Carol leaves: her tile goes away on the others, and her page shows no remote tiles.
        await carol.page.click("#leaveButton")
        await carol.wait("!s.joined && s.remoteIds.length === 0")
        for tab in (alice, bob):
            await tab.wait(f"!s.remoteIds.includes({js(ids['Carol'])}) && s.remoteIds.length === 1")
        await frames_advance(alice, REMOTE_TILES, 1)
        await alice.page.screenshot(path=str(artifact("conference-after-leave.png")))
        for tab in tabs:
            await tab.assert_clean()
    finally:
        await close_all(*tabs)


async def test_legacy_conference(server: Server, context_with_sdk: Any) -> None:
    tabs = [await open_tab(context_with_sdk, server, "conference.html?mode=legacy&roomId=legacy1") for _ in range(2)]
    try:
        first, second = tabs
        await join_conference(first, "First")
        await join_conference(second, "Second")
        first_id = (await first.state())["streamId"]
        second_id = (await second.state())["streamId"]
        await first.wait(f"s.remoteIds.length === 1 && s.remoteIds[0] === {js(second_id)}")
        await second.wait(f"s.remoteIds.length === 1 && s.remoteIds[0] === {js(first_id)}")
        for tab in tabs:
            await frames_advance(tab, REMOTE_TILES, 1)
        await first.wait("s.dataChannelOpen")
        await first.page.fill("#chatText", "legacy hi")
        await first.page.click("#chatSend")
        await second.wait("s.chat.some(m => m.name === 'First' && m.text === 'legacy hi')")
        await first.page.screenshot(path=str(artifact("conference-legacy.png")))
        await second.page.click("#leaveButton")
        await first.wait("s.remoteIds.length === 0")
        for tab in tabs:
            await tab.assert_clean()
    finally:
        await close_all(*tabs)


async def test_conference_with_a_chosen_stream_id(server: Server, context_with_sdk: Any) -> None:
    tab = await open_tab(context_with_sdk, server, "conference.html?roomId=chosen&streamId=me1")
    try:
        assert await tab.page.input_value("#roomId") == "chosen"
        await join_conference(tab, "Me")
        state = await tab.state()
        assert (state["streamId"], state["room"], state["remoteIds"]) == ("me1", "chosen", [])
        await tab.page.click("#leaveButton")
        await tab.wait("!s.joined")
        await tab.assert_clean()
    finally:
        await close_all(tab)


async def test_publish_and_play_with_two_viewers(server: Server, context_with_sdk: Any) -> None:
    publisher = await open_tab(context_with_sdk, server, "publish.html?id=pagestream")
    viewers: list[Tab] = []
    try:
        await publisher.wait("s.initialized")
        assert await publisher.page.input_value("#streamId") == "pagestream"
        await publisher.page.click("#startButton")
        await publisher.wait("s.publishing")
        await frames_advance(publisher, "#localVideo", 1)
        for _ in range(2):
            viewers.append(await open_tab(context_with_sdk, server, "play.html?autoplay=1&id=pagestream"))
        for viewer in viewers:
            await viewer.wait("s.playing")
            await frames_advance(viewer, "#remoteVideo", 1)
        await publisher.page.screenshot(path=str(artifact("publish.png")))
        await viewers[0].page.screenshot(path=str(artifact("play.png")))
        for tab in (publisher, *viewers):
            await tab.assert_clean()
        # The publisher stops: the viewers say so and wait for the stream to come back.
        await publisher.page.click("#stopButton")
        await publisher.wait("!s.publishing")
        for viewer in viewers:
            await viewer.wait("!s.playing && s.wanted")
        await viewers[1].page.click("#stopButton")
        await viewers[1].wait("!s.wanted")
    finally:
        await close_all(publisher, *viewers)


async def test_play_shows_a_missing_stream(server: Server, context_with_sdk: Any) -> None:
    viewer = await open_tab(context_with_sdk, server, "play.html?autoplay=1&id=nobodyhere")
    try:
        await viewer.wait("s.errors.length === 1 && s.errors[0].name === 'no_stream_exist'")
        assert await viewer.page.is_visible("#errors li")
        assert "not being published" in (await viewer.page.text_content("#errors li") or "")
        await viewer.page.screenshot(path=str(artifact("play-missing.png")))
        await viewer.page.click("#stopButton")
        await viewer.wait("!s.wanted")
    finally:
        await close_all(viewer)


async def test_one_to_one_call(server: Server, context_with_sdk: Any) -> None:
    tabs = [await open_tab(context_with_sdk, server, "peer.html?id=call7") for _ in range(2)]
    try:
        for tab in tabs:
            await tab.wait("s.initialized")
            await tab.page.click("#joinButton")
            await tab.wait("s.joined")
        for tab in tabs:
            await tab.wait("s.connected")
            await frames_advance(tab, "#remoteVideo", 1)
        await tabs[0].page.screenshot(path=str(artifact("peer.png")))
        for tab in tabs:
            await tab.assert_clean()
        await tabs[1].page.click("#leaveButton")
        await tabs[1].wait("!s.joined")
        await tabs[0].wait("!s.connected && s.joined")
        await tabs[0].page.click("#leaveButton")
        await tabs[0].wait("!s.joined")
    finally:
        await close_all(*tabs)


async def test_publish_page_with_a_token(server: Server, context_with_sdk: Any) -> None:
    server.settings.app(APP).publishTokenControlEnabled = True
    refused = await open_tab(context_with_sdk, server, "publish.html?id=guarded")
    tabs = [refused]
    try:
        await refused.wait("s.initialized")
        await refused.page.click("#startButton")
        await refused.wait("s.errors.some(e => e.name === 'unauthorized_access') && !s.publishing && !s.starting")
        assert "token" in (await refused.page.text_content("#errors li") or "")
        await refused.page.close()

        expire = int(time.time()) + 600
        response = await context_with_sdk.request.get(
            f"http://127.0.0.1:{server.port}/{APP}/rest/v2/broadcasts/guarded/token?expireDate={expire}&type=publish"
        )
        assert response.ok, await response.text()
        token = (await response.json())["tokenId"]
        allowed = await open_tab(context_with_sdk, server, f"publish.html?id=guarded&token={token}")
        tabs.append(allowed)
        await allowed.wait("s.initialized")
        await allowed.page.click("#startButton")
        await allowed.wait("s.publishing")
        await allowed.assert_clean()
    finally:
        await close_all(*tabs)


async def test_conference_page_on_ant_medias_own_sdk(server: Server, context: Any) -> None:
    if not (ANT_MEDIA_SDK / "webrtc_adaptor.js").exists():
        pytest.skip("Ant Media's SDK is not installed: run npm ci")
    await use_sdk_override(context, ANT_MEDIA_SDK)
    tabs = [await open_tab(context, server, "conference.html?roomId=amsroom") for _ in range(2)]
    try:
        first, second = tabs
        await join_conference(first, "Ada")
        await join_conference(second, "Grace")
        for tab in tabs:
            await tab.wait("s.remoteIds.length === 1")
            await frames_advance(tab, REMOTE_TILES, 1)
        await first.wait("s.dataChannelOpen")
        await first.page.fill("#chatText", "on Ant Media's SDK")
        await first.page.click("#chatSend")
        await second.wait("s.chat.some(m => m.name === 'Ada' && m.text === \"on Ant Media's SDK\")")
        await first.page.click("#cameraButton")
        await first.wait("!s.cameraOn")
        await second.page.click("#leaveButton")
        await first.wait("s.remoteIds.length === 0")
        for tab in tabs:
            await tab.assert_clean()
    finally:
        await close_all(*tabs)


async def test_conference_recovers_after_the_connection_drops(server: Server, context_with_sdk: Any) -> None:
    """The server drops one participant's WebSocket: the SDK reconnects, republishes and
    replays the room, and the page keeps its room; the others see the participant again."""
    tabs = [await open_tab(context_with_sdk, server, "conference.html?roomId=drop") for _ in range(2)]
    try:
        for tab, name in zip(tabs, ("Ann", "Ben"), strict=True):
            await join_conference(tab, name)
        for tab in tabs:
            await frames_advance(tab, REMOTE_TILES, 1)
        ben_id = (await tabs[1].state())["streamId"]
        session = next(s for s in server.sessions if ben_id in s.client.legs)
        await session.ws.close()  # as if the network dropped
        await tabs[1].wait("s.events.includes('closed')", timeout=10_000)
        await tabs[1].wait(
            "s.joined && ['publish_started', 'play_started'].every("
            "e => s.events.lastIndexOf(e) > s.events.lastIndexOf('closed'))",
            timeout=20_000,
        )
        for tab in tabs:
            await frames_advance(tab, REMOTE_TILES, 1)
        assert (await tabs[1].state())["room"] == "drop"
    finally:
        await close_all(*tabs)
