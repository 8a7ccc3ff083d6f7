"""The browser harness itself: Chromium runs, reaches the server on loopback, sees only `lo`."""

from __future__ import annotations

import os

from confero.server import Server
from tests.browser.conftest import artifact


async def test_chromium_loads_a_page_and_gets_a_fake_camera(server: Server, context: object) -> None:
    page = await context.new_page()  # type: ignore[attr-defined]
    await page.goto(f"http://127.0.0.1:{server.port}/WebRTCAppEE/")
    tracks = await page.evaluate(
        "navigator.mediaDevices.getUserMedia({video: true, audio: true}).then(s => s.getTracks().map(t => t.kind))"
    )
    assert sorted(tracks) == ["audio", "video"]
    await page.screenshot(path=str(artifact("smoke.png")))


def test_runs_in_a_private_network() -> None:
    if os.environ.get("CONFERO_IN_NETNS") != "1":
        import pytest

        pytest.skip("not root: no private network namespace")
    import socket

    interfaces = sorted(name for _, name in socket.if_nameindex())
    assert interfaces == ["lo"], interfaces
