"""Shared fixtures: an in-process Confero server on loopback (with a leak check after each test),
the clients of a test, and an HTTP session; the helpers themselves are in `tests.support`."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from confero.media import aiortc_hooks, fanout
from confero.server import Server
from tests.support.amsclient import loopback_only
from tests.support.clients import Clients
from tests.support.server import assert_no_leaks, assert_no_pending_tasks, make_settings, wait_idle

__all__ = ["assert_no_leaks", "assert_no_pending_tasks", "make_settings"]  # also importable from here

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
        _notes.append("not root: tests run in the normal network namespace (loopback only)")
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        _notes.append(f"unshare(CLONE_NEWNET) failed: errno {ctypes.get_errno()}; tests use loopback only")
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["CONFERO_IN_NETNS"] = "1"
    return True


_notes: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    enter_private_network()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Why the run is not in a private network namespace, if it is not (warnings are errors here)."""
    return list(_notes)


# Test clients gather 127.0.0.1 only (aioice skips loopback by default). This must run before
# the server installs its own policy hook, which falls back to the function installed now.
loopback_only()
aiortc_hooks.install_ice_patches()


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    """A server on loopback; `indirect` parametrization picks the fan-out engine by name."""
    engine = getattr(request, "param", "compiled")
    srv = Server(make_settings(tmp_path, compiled_fanout=engine == "compiled"))
    assert srv.router.config.engine.name == engine, "the compiled fan-out is not built (pip install -e .)"
    await srv.start()
    try:
        yield srv
        # Every test closes its clients; the server sees their sockets go a moment later.
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
        assert srv.dump()["sessions"] == []
    finally:
        await srv.close()
    await assert_no_pending_tasks()
    gc.collect()
    assert fanout.open_outputs() == 0, "an Output kept its socket descriptor"


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[Clients]:
    """Sockets and peers of one test against `server`, closed (last first) before its leak checks."""
    async with Clients(server.port) as opened:
        yield opened


@pytest.fixture
async def http(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session with `server`'s base URL (REST calls come from 127.0.0.1)."""
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as session:
        yield session
