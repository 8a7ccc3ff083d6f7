"""An in-process Confero server for tests: its settings, and the checks that nothing leaked."""

from __future__ import annotations

import asyncio
from pathlib import Path

from confero.server import Server
from confero.settings import Settings
from tests.support.waiting import eventually


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Loopback only (HTTP and ICE), port 0, data under `tmp_path`; `overrides` set attributes."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=str(tmp_path / "data"),
        ice_addresses=["127.0.0.1"],
        publish_timeout=10.0,
    )
    for key, value in overrides.items():
        setattr(settings, key, value)
    settings.validate()
    return settings


def assert_no_leaks(server: Server) -> None:
    dump = server.dump()
    assert dump["router"] == {"publishers": [], "subscribers": [], "tracks": []}, dump["router"]
    for name, app in dump["applications"].items():
        assert app["streams"] == [], (name, app)
        assert app["rooms"] == [], (name, app)
        assert app["clients"] == [], (name, app)


def is_idle(server: Server) -> bool:
    """No session, publisher or subscriber is left."""
    dump = server.dump()
    return not dump["sessions"] and not dump["router"]["publishers"] and not dump["router"]["subscribers"]


async def wait_idle(server: Server, timeout: float = 5.0) -> None:
    """Wait for the server to see every client's socket and peer connection go.

    Returns quietly on timeout: the leak checks that follow say what was left.
    """
    try:
        await eventually(lambda: is_idle(server), timeout=timeout, what="the server to let go of every client")
    except AssertionError:
        pass


async def assert_no_pending_tasks(timeout: float = 5.0) -> None:
    """Every task the server or the clients started has finished once all are closed."""
    current = asyncio.current_task()

    def pending() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t is not current and not t.done()]

    try:
        await eventually(lambda: not pending(), timeout=timeout, what="every task to finish")
    except AssertionError:
        pass
    assert not pending(), [repr(t) for t in pending()]
