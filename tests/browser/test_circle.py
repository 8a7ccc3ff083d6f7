"""Circle, Ant Media's conference app, unchanged, served by Confero at /{App}/ (`webRoot`).

Circle's production build is not part of this repository (it is built from Circle's own
repository, with the SDK 2.16.2 from npm in place of the snapshot its lock file names); this
test reads its directory from CONFERO_CIRCLE_BUILD and is skipped without it.

Three Chromium pages join one room through Circle's waiting room. Each check of the meeting
(tiles with names and decoded video, talking indicator, chat, mic state, screen share, leave)
is waited for in turn and recorded; the test fails at the end with every check that did not
pass, so one run says everything Circle still misses. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from confero.server import Server
from tests.browser.conftest import artifact

BUILD = os.environ.get("CONFERO_CIRCLE_BUILD", "")
WEB_ROOT = str(Path(BUILD).resolve()) if BUILD else ""
APP = "WebRTCAppEE"
ROOM = "room1"
NAMES = ["Alice", "Bob", "Carol"]

pytestmark = pytest.mark.skipif(
    not BUILD or not (Path(BUILD) / "index.html").is_file(),
    reason="CONFERO_CIRCLE_BUILD does not name a build of Circle (a directory with index.html); "
    "Circle is not part of this repository, so CI cannot run this test",
)

#: The tiles a page shows: each card's name, stream id, decoded frames, and state.
TILES_JS = """() => Array.from(document.querySelectorAll('.single-video-card')).map(card => {
    const video = card.querySelector('video');
    const name = card.querySelector('.name-indicator .name');
    const talking = document.getElementById(card.id.replace(/^card-/, '') + '-is-talking');
    return {
        id: card.id.replace(/^card-/, ''),
        name: name ? name.textContent.trim() : '',
        frames: video && video.srcObject && video.getVideoPlaybackQuality
            ? video.getVideoPlaybackQuality().totalVideoFrames : 0,
        micMuted: !!card.querySelector('[id^="mic-muted-"]'),
        talking: !!(talking && getComputedStyle(talking).display !== 'none'),
    };
})"""


class Checks:
    """Each named check waits for its condition; failures are kept, with what was last seen."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed: list[str] = []

    async def wait(self, name: str, probe: Callable[[], Awaitable[tuple[bool, object]]], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        seen: object = None
        while True:
            ok, seen = await probe()
            if ok:
                self.passed.append(name)
                return True
            if time.monotonic() > deadline:
                self.failed.append(f"{name}: after {timeout:.0f} s, saw {seen!r}")
                return False
            await asyncio.sleep(0.25)


async def tiles(page: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate(TILES_JS)
    return result


def named(found: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [t for t in found if t["name"] == name]


async def advancing(page: Any, name: str) -> bool:
    """The tile named `name` has a video whose decoded frames grow."""
    before = sum(t["frames"] for t in named(await tiles(page), name))
    await asyncio.sleep(0.5)
    after = sum(t["frames"] for t in named(await tiles(page), name))
    return before > 0 and after > before


async def join(context: Any, server: Server, name: str, console: list[str]) -> Any:
    page = await context.new_page()
    page.on("console", lambda m: console.append(f"{name} {m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"{name} PAGEERROR: {e}"))
    await page.goto(f"http://127.0.0.1:{server.port}/{APP}/{ROOM}?streamName={name}&skipSpeedTest=true")
    await page.get_by_role("button", name="I'm ready to join").click(timeout=30_000)
    return page


async def test_three_person_meeting(server: Server, context: Any) -> None:
    server.settings.app(APP).webRoot = WEB_ROOT
    checks = Checks()
    console: list[str] = []
    pages: list[Any] = []
    try:
        for name in NAMES:
            pages.append(await join(context, server, name, console))
        alice, bob, carol = pages

        async def in_meeting() -> tuple[bool, object]:
            shown = [await p.locator("#leave-room-button").count() for p in pages]
            return all(shown), shown

        await checks.wait("every page enters the meeting", in_meeting)

        async def tiles_with_names() -> tuple[bool, object]:
            seen = {}
            ok = True
            for page, name in zip(pages, NAMES, strict=True):
                found = await tiles(page)
                seen[name] = [(t["name"], t["frames"]) for t in found]
                for other in NAMES:
                    if other != name and not await advancing(page, other):
                        ok = False
            return ok, seen

        await checks.wait("each page shows the other two tiles, named, with decoded video", tiles_with_names, 45)
        for page, name in zip(pages, NAMES, strict=True):
            await page.screenshot(path=str(artifact(f"circle-tiles-{name}.png")))

        async def talking() -> tuple[bool, object]:
            found = await tiles(bob)
            return any(t["talking"] for t in found if t["name"] in ("Alice", "Carol")), found

        await checks.wait("Bob sees a talking indicator on a remote tile (fake audio)", talking, 20)

        text = "hello from Alice"
        for page in (bob, carol, alice):
            await page.locator("#messages-button").click()
        await alice.locator("#message-input").fill(text)
        await alice.locator("#message-send-button").click()

        async def chat() -> tuple[bool, object]:
            got = [await p.locator("#message", has_text=text).count() for p in (bob, carol)]
            return all(got), got

        await checks.wait("Alice's chat message reaches Bob and Carol", chat, 15)
        await bob.screenshot(path=str(artifact("circle-chat-Bob.png")))
        for page in (bob, carol, alice):
            await page.locator("#messages-button").click()  # close the drawer again

        await alice.locator("#mic-button").click()

        async def mic_muted() -> tuple[bool, object]:
            seen = [named(await tiles(p), "Alice") for p in (bob, carol)]
            return all(s and s[0]["micMuted"] for s in seen), seen

        await checks.wait("Alice mutes her mic: Bob and Carol see it on her tile", mic_muted, 15)

        await alice.locator("#share-screen-button").click()
        share = "Alice - Screen Share"

        async def screen_share() -> tuple[bool, object]:
            return await advancing(bob, share), [(t["name"], t["frames"]) for t in await tiles(bob)]

        await checks.wait("Alice shares her screen: Bob sees it with decoded video", screen_share, 30)
        await bob.screenshot(path=str(artifact("circle-screen-share-Bob.png")))

        async def carol_shown() -> tuple[bool, object]:
            seen = [[t["name"] for t in await tiles(p)] for p in (alice, bob)]
            return all("Carol" in names for names in seen), seen

        # Leaving proves something only if Carol's tile was there.
        await checks.wait("before she leaves, Alice and Bob show Carol's tile", carol_shown, 1)
        await carol.locator("#leave-room-button").click()

        async def left() -> tuple[bool, object]:
            seen = [[t["name"] for t in await tiles(p)] for p in (alice, bob)]
            return all("Carol" not in names for names in seen), seen

        await checks.wait("Carol leaves: her tile goes from Alice's and Bob's pages", left, 20)
        await alice.screenshot(path=str(artifact("circle-after-leave-Alice.png")))
    finally:
        artifact("circle-console.log").write_text("\n".join(console) + "\n")
        for page in pages:
            await page.close()
    assert not checks.failed, "Circle's meeting on Confero:\n" + "\n".join(
        [*(f"ok: {p}" for p in checks.passed), *(f"FAILED: {f}" for f in checks.failed)]
    )
