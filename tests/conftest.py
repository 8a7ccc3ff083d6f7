"""Shared fixtures: an in-process Confero server on loopback, and a leak check after each test."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from confero.media import aiortc_hooks, fanout
from confero.server import Server
from confero.settings import Settings
from tests.amsclient import loopback_only

CLONE_NEWNET = 0x40000000


def enter_private_network() -> bool:
    """Move the test run into a fresh network namespace whose only interface is `lo`.

    Everything the tests start (servers, aiortc peers, Chromium) inherits it, so no packet can
    leave the machine. Needs root (CI runs as root); elsewhere the tests still use loopback
    only, and CONFERO_TEST_NETNS=0 turns this off.
    """
    if os.environ.get("CONFERO_TEST_NETNS", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if os.environ.get("CONFERO_IN_NETNS") == "1":
        return True
    if os.geteuid() != 0:
        warnings.warn("not root: tests run in the normal network namespace (loopback only)")
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        warnings.warn(f"unshare(CLONE_NEWNET) failed: errno {ctypes.get_errno()}")
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["CONFERO_IN_NETNS"] = "1"
    return True


def pytest_configure(config: pytest.Config) -> None:
    enter_private_network()


# Test clients gather 127.0.0.1 only (aioice skips loopback by default). This must run before
# the server installs its own policy hook, which falls back to the function installed now.
loopback_only()
aiortc_hooks.install_ice_patches()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
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
    assert dump["router"] == {"publishers": [], "subscribers": []}, dump["router"]
    for name, app in dump["applications"].items():
        assert app["streams"] == [], (name, app)
        assert app["rooms"] == [], (name, app)


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    """A server on loopback; `indirect` parametrization picks the fan-out engine by name."""
    engine = getattr(request, "param", "compiled")
    srv = Server(make_settings(tmp_path, compiled_fanout=engine == "compiled"))
    assert srv.router.config.engine.name == engine, "the compiled fan-out is not built (pip install -e .)"
    await srv.start()
    try:
        yield srv
        # Every test closes its clients; give the server a moment to see the sockets go.
        for _ in range(50):
            dump = srv.dump()
            if not dump["sessions"] and not dump["router"]["publishers"] and not dump["router"]["subscribers"]:
                break
            await asyncio.sleep(0.1)
        assert_no_leaks(srv)
        assert srv.dump()["sessions"] == []
    finally:
        await srv.close()
    await assert_no_pending_tasks()
    gc.collect()
    assert fanout.open_outputs() == 0, "an Output kept its socket descriptor"


async def assert_no_pending_tasks(timeout: float = 5.0) -> None:
    """Every task the server or the clients started has finished once all are closed."""
    current = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert not pending, [repr(t) for t in pending]
