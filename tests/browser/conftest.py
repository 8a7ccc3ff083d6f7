"""Browser fixtures: Debian's Chromium driven by Playwright, in the test run's private network.

Chromium gets fake camera and microphone, no permission prompts, and
`--allow-loopback-in-peer-connection` so WebRTC may use 127.0.0.1. The server runs in-process
on 127.0.0.1 with ICE on 127.0.0.1 only (the `server` fixture).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CONFERO_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if not chromium_installed():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
async def context(browser: object) -> AsyncIterator[object]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    try:
        yield ctx
    finally:
        await ctx.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


async def decoded_frames(page: object, selector: str = "video") -> list[int]:
    """Decoded frame counts of the page's <video> elements matching `selector` (playing only)."""
    return await page.evaluate(  # type: ignore[attr-defined]
        """(selector) => Array.from(document.querySelectorAll(selector))
            .filter(v => v.srcObject || v.src)
            .map(v => v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0)""",
        selector,
    )
