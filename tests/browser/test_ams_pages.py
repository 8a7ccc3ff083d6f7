"""Ant Media's own sample pages, unchanged, served by Confero as the application's `webRoot`.

The pages come from the npm registry (`tests/browser/amspages.py`): the multitrack player, the
conference page the SDK ships and the data-channel sample. StreamApp's `conference.html` (the
page every Ant Media application ships) and `player.html` are in no registry: with
`CONFERO_STREAMAPP_WEBAPP` pointing at StreamApp's `src/main/webapp` (tag ams-v2.16.2) they are
driven too, and skipped without it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from confero.server import Server
from tests.browser.amspages import STREAMAPP_ENV, build_site, route_cdn, streamapp_dir
from tests.browser.conftest import artifact
from tests.support import eventually
from tests.support.clients import Clients

APP = "WebRTCAppEE"

needs_streamapp = pytest.mark.skipif(
    streamapp_dir() is None, reason=f"StreamApp's pages are in no registry: set {STREAMAPP_ENV} to run them"
)


@pytest.fixture
async def site(server: Server, context: object, tmp_path: Path) -> AsyncIterator[str]:
    """The sample site as `APP`'s webRoot (and its CDN libraries from npm); the application's URL."""
    await route_cdn(context)
    root = build_site(tmp_path / "site")
    server.settings.app(APP).webRoot = str(root)
    yield f"http://127.0.0.1:{server.port}/{APP}"


async def open_page(context: object, url: str) -> object:
    page = await context.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: console.append(msg.text))
    page.errors = errors
    page.console = console
    await page.goto(url)
    return page


async def video_frames(page: object, selector: str) -> dict[str, int]:
    """Decoded frames of the page's <video> elements matching `selector`, by element id."""
    return await page.evaluate(  # type: ignore[attr-defined]
        """(selector) => Object.fromEntries(Array.from(document.querySelectorAll(selector))
            .filter(v => v.srcObject)
            .map(v => [v.id, v.getVideoPlaybackQuality().totalVideoFrames]))""",
        selector,
    )


async def wait_advancing(
    pages: list, selector: str, expected: Callable[[int], set[str]], timeout: float = 45
) -> list[dict[str, int]]:
    """Every page i shows exactly the videos `expected(i)` (by element id), each advancing."""
    first: list[dict[str, int]] | None = None
    last: list[dict[str, int]] = []

    async def advancing() -> bool:
        nonlocal first, last
        last = [await video_frames(p, selector) for p in pages]
        if not all(set(f) == expected(i) and all(n > 0 for n in f.values()) for i, f in enumerate(last)):
            first = None
            return False
        if first is None:
            first = last
            return False
        return all(b[k] > a[k] for a, b in zip(first, last, strict=True) for k in a)

    await eventually(advancing, timeout=timeout, what=lambda: f"advancing videos: {last}", interval=0.3)
    return last


async def close_all(pages: list) -> None:
    for page in pages:
        await page.close()


def no_page_errors(pages: list) -> None:
    for page in pages:
        assert page.errors == [], page.errors


async def test_multitrack_player_labels_tracks_by_stream_id(
    server: Server, context: object, site: str, clients: Clients
) -> None:
    """multitrack-play.html plays a room: one tile per member, named `remoteVideo{streamId}`; a
    member who stops loses its tile (the page strips `ARDAMSx` from the removed track's id)."""
    publishers = []
    for member in ("mt-alice", "mt-bob"):
        sock = await clients.socket()
        publishers.append(clients.publisher(sock, member, extra={"mainTrack": "mtroom"}))
        await publishers[-1].start()
    page = await open_page(context, f"{site}/multitrack-play.html?id=mtroom")
    try:
        await wait_advancing([page], "video", lambda _: {"remoteVideomt-alice", "remoteVideomt-bob"})
        await page.screenshot(path=str(artifact("ams-multitrack-play.png")))
        await publishers[1].close()
        await wait_advancing([page], "video", lambda _: {"remoteVideomt-alice"})
        no_page_errors([page])
    finally:
        await page.close()


async def test_datachannel_only_sample(server: Server, context: object, site: str) -> None:
    """samples/datachannel_only_webrtc_frame.html: the first page finds no channel and creates
    it (a data-only publish), the second joins it (a data-only play), messages go both ways."""
    url = f"{site}/samples/datachannel_only_webrtc_frame.html?id=dcroom"
    creator = await open_page(context, url)
    joiner: object | None = None
    try:
        await creator.wait_for_selector("#connect_channel_button:not([disabled])")
        await creator.click("#connect_channel_button")
        await creator.wait_for_selector("#disconnect_channel_button:not([disabled])", timeout=20000)
        joiner = await open_page(context, url)
        await joiner.wait_for_selector("#connect_channel_button:not([disabled])")
        await joiner.click("#connect_channel_button")
        await joiner.wait_for_selector("#disconnect_channel_button:not([disabled])", timeout=20000)

        async def send(page: object, text: str) -> None:
            async def open_() -> bool:
                await page.fill("#dataTextbox", text)  # type: ignore[attr-defined]
                await page.click("#send")  # type: ignore[attr-defined]
                return True

            await open_()

        async def received(page: object, text: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                value = await page.eval_on_selector("#dataMessagesTextarea", "e => e.value")  # type: ignore[attr-defined]
                return f"Received: {text}" in value

            return check

        await send(joiner, "hello from the joiner")
        await eventually(await received(creator, "hello from the joiner"), timeout=15, what="creator received")
        await send(creator, "hello from the creator")
        await eventually(await received(joiner, "hello from the creator"), timeout=15, what="joiner received")
        no_page_errors([creator, joiner])
    finally:
        if joiner is not None:
            await joiner.close()  # type: ignore[attr-defined]
        await creator.close()


@needs_streamapp
async def test_streamapp_conference_three_tabs(server: Server, context: object, site: str) -> None:
    """StreamApp's conference.html: three tabs each see the other two decoded; a leaver's tile goes."""
    ids = ["conf-a", "conf-b", "conf-c"]
    pages = [await open_page(context, f"{site}/conference.html?roomId=confroom&streamId={i}") for i in ids]
    try:
        for page in pages:
            await page.wait_for_selector("#join_publish_button:not([disabled])", timeout=20000)
            await page.click("#join_publish_button")

        def others(i: int) -> set[str]:
            return {f"remoteVideo{x}" for x in ids if x != ids[i]}

        await wait_advancing(pages, "#players video[id^=remoteVideo]", others)
        await pages[0].screenshot(path=str(artifact("ams-streamapp-conference.png")))
        await pages[2].click("#stop_publish_button")
        await wait_advancing(pages[:2], "#players video[id^=remoteVideo]", lambda i: others(i) - {"remoteVideoconf-c"})
        no_page_errors(pages)
    finally:
        await close_all(pages)


@needs_streamapp
async def test_streamapp_player_shows_resolution(server: Server, context: object, site: str, clients: Clients) -> None:
    """StreamApp's player.html asks getStreamInfo and lists the stream's real height (the test
    publisher sends 320x240) in its quality menu."""
    sock = await clients.socket()
    await clients.publisher(sock, "resstream").start()
    page = await open_page(context, f"{site}/player.html?id=resstream&playOrder=webrtc")
    try:
        await page.wait_for_selector("#start_play_button:not([disabled])", timeout=20000)
        await page.click("#start_play_button")

        async def shown() -> bool:
            menu = await page.evaluate("document.querySelector('.dropdown-menu')?.innerText || ''")
            return "240p" in menu

        await eventually(
            shown,
            timeout=30,
            what=lambda: f"240p in the quality menu; console: {page.console[-15:]}",  # type: ignore[attr-defined]
        )
    finally:
        await page.close()
