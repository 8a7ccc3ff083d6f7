"""Ant Media's official SDK (npm @antmedia/webrtc_adaptor 2.16.2, unchanged) against Confero.

The SDK and a small page that runs its flows are served by a static server of the test's own;
the page talks to Confero's WebSocket like any Ant Media application would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from confero.server import Server
from tests.browser.conftest import artifact, decoded_frames
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "node_modules" / "@antmedia" / "webrtc_adaptor" / "dist"
PAGES = Path(__file__).resolve().parent / "pages"


@pytest.fixture
async def sdk_site() -> AsyncIterator[str]:
    if not (SDK / "es" / "index.js").exists():
        pytest.fail("Ant Media's SDK is missing: run `npm ci` in the repository root")
    app = web.Application()
    app.router.add_static("/sdk/", SDK)
    app.router.add_static("/pages/", PAGES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/pages/ams-official.html"
    finally:
        await runner.cleanup()


async def open_tabs(context: object, url: str, server: Server, flow: str, ids: list[str], **params: str) -> list:
    ws = f"ws://127.0.0.1:{server.port}/WebRTCAppEE/websocket"
    pages = []
    for stream_id in ids:
        page = await context.new_page()  # type: ignore[attr-defined]
        query = "&".join(f"{k}={v}" for k, v in {"flow": flow, "ws": ws, "id": stream_id, **params}.items())
        await page.goto(f"{url}?{query}")
        pages.append(page)
    return pages


async def remote_frames(page: object) -> list[int]:
    return await decoded_frames(page, "video.remote, #remoteVideo")


async def wait_remote_videos(pages: list, count: int, timeout: float = 40) -> None:
    """Every page shows `count` remote videos whose decoded frames advance: from a first
    reading (once every page has `count` of them, each with frames) to a later one, all grew."""
    first: list[list[int]] | None = None
    second: list[list[int]] = []

    async def advancing() -> bool:
        nonlocal first, second
        second = [await remote_frames(p) for p in pages]
        if not all(len(b) == count and all(y > 0 for y in b) for b in second):
            first = None  # not every video is there (yet): start over
            return False
        if first is None:
            first = second
            return False
        return all(y > x for a, b in zip(first, second, strict=True) for x, y in zip(a, b, strict=True))

    try:
        await eventually(advancing, timeout=timeout, what=f"{count} advancing remote videos per page", interval=0.2)
    except AssertionError:
        states = [
            await p.evaluate("JSON.stringify({e: amsState.errors, r: Object.keys(amsState.remotes)})") for p in pages
        ]
        raise AssertionError(f"remote videos not advancing: {first} -> {second}; {states}") from None


async def close_pages(pages: list) -> None:
    for page in pages:
        await page.close()


async def test_conference_room_flow_multitrack(server: Server, context: object, sdk_site: str) -> None:
    pages = await open_tabs(context, sdk_site, server, "conference", ["", "", ""], room="sdkroom")
    try:
        await wait_remote_videos(pages, 2)
        for page in pages:
            assert await page.evaluate("amsState.errors") == []
        await pages[0].screenshot(path=str(artifact("ams-sdk-conference.png")))
        # The SDK's leaveFromRoom: the others lose that participant's tracks.
        leaver = await pages[2].evaluate("amsState.streamId")
        await pages[2].evaluate("amsLeave()")
        remaining: list[list[str]] = []

        async def left() -> bool:
            nonlocal remaining
            remaining = [await p.evaluate("Object.keys(amsState.remotes)") for p in pages[:2]]
            return all(leaver not in r for r in remaining)

        await eventually(left, timeout=20, what=lambda: f"{leaver} gone from {remaining}", interval=0.3)
        assert all(leaver not in r for r in remaining), remaining
        await wait_remote_videos(pages[:2], 1)
    finally:
        await close_pages(pages)


async def test_tutorial_legacy_flow(server: Server, context: object, sdk_site: str) -> None:
    pages = await open_tabs(context, sdk_site, server, "legacy", ["alice", "bob", "carol"], room="tutorial")
    try:
        await wait_remote_videos(pages, 2)
        for page in pages:
            assert await page.evaluate("amsState.errors") == []
        await pages[0].screenshot(path=str(artifact("ams-sdk-legacy.png")))
    finally:
        await close_pages(pages)


async def test_publish_and_play(server: Server, context: object, sdk_site: str) -> None:
    publisher = await open_tabs(context, sdk_site, server, "publish", ["sdkstream"])
    try:
        try:
            await eventually(
                lambda: publisher[0].evaluate("amsState.events.includes('publish_started')"),
                timeout=15,
                what="publish_started",
                interval=0.2,
            )
        except AssertionError:
            raise AssertionError(await publisher[0].evaluate("amsState")) from None
        players = await open_tabs(context, sdk_site, server, "play", ["sdkstream", "sdkstream"])
        try:
            await wait_remote_videos(players, 1)
            for page in players:
                assert "play_started" in await page.evaluate("amsState.events")
                assert await page.evaluate("amsState.errors") == []
        finally:
            await close_pages(players)
    finally:
        await close_pages(publisher)
