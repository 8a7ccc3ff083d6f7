"""A conference from a "remote" host: Chromium in its own network namespace opens the conference
page over https at the server's 198.18.0.1, trusting the self-signed certificate by its SPKI hash
(certificate pinning, not certificate checks turned off), and joins a room with two others.

The host is a named namespace wired to the test's own by a veth pair (tests/support/netns.py);
Playwright still drives the browser, over the pipe it launches it with, because the executable it
starts is a script that execs Chromium inside the namespace.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import gc
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from confero.media import fanout
from confero.server import Server
from confero.tls import write_self_signed
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, artifact, chromium_installed
from tests.browser.test_pages import APP, REMOTE_TILES, TIMEOUT_MS, Tab, close_all, frames_advance, join_conference, js
from tests.support import eventually
from tests.support.netns import Host, Network, available
from tests.support.server import assert_no_leaks, assert_no_pending_tasks, make_settings, wait_idle

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

SERVER_IP = "198.18.0.1"
REMOTE_IP = "198.18.0.2"
TLS_PORT = 5443


def spki_sha256(cert_file: Path) -> str:
    """Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (what Chromium pins)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    public = x509.load_pem_x509_certificate(cert_file.read_bytes()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def tls_port_for(address: str) -> int:
    """Ant Media's 5443 when it is free on `address`, else 0 (any port)."""
    with socket.socket() as probe:
        try:
            probe.bind((address, TLS_PORT))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return 0
    return TLS_PORT


@pytest.fixture
def remote() -> Iterator[Host]:
    with Network() as net:
        yield net.add_host("remote", server=f"{SERVER_IP}/24", host=f"{REMOTE_IP}/24")


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    files = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed([SERVER_IP], *files)
    return files


@pytest.fixture
async def tls_server(tmp_path: Path, remote: Host, cert: tuple[Path, Path]) -> AsyncIterator[Server]:
    """The server on the veth pair's server end only: HTTP, HTTPS/WSS and ICE on 198.18.0.1."""
    settings = make_settings(
        tmp_path,
        host=SERVER_IP,
        ice_addresses=[SERVER_IP],
        tls_cert=str(cert[0]),
        tls_key=str(cert[1]),
        tls_port=tls_port_for(SERVER_IP),
    )
    srv = Server(settings)
    await srv.start()
    try:
        yield srv
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
        assert srv.dump()["sessions"] == []
    finally:
        await srv.close()
    await assert_no_pending_tasks()
    gc.collect()
    assert fanout.open_outputs() == 0, "an Output kept its socket descriptor"


@pytest.fixture
async def remote_browser(tmp_path: Path, remote: Host, cert: tuple[Path, Path]) -> AsyncIterator[Any]:
    """Chromium inside `remote`, trusting the server's certificate by its public key only."""
    if not chromium_installed():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package")
    from playwright.async_api import async_playwright

    wrapper = remote.wrapper(tmp_path / "chromium-remote", CHROMIUM)
    args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_sha256(cert[0])}"]
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=str(wrapper), args=args)
        try:
            yield instance
        finally:
            await instance.close()


async def refuses_an_unpinned_certificate(context: Any, tmp_path: Path) -> str:
    """The error the browser gets from a TLS server on 198.18.0.1 whose certificate (another
    self-signed one for the same address) is not the pinned one: checks are still on."""
    other = tmp_path / "other-cert.pem", tmp_path / "other-key.pem"
    write_self_signed([SERVER_IP], *other)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*other)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        writer.close()

    listener = await asyncio.start_server(answer, SERVER_IP, 0, ssl=tls)
    page = await context.new_page()
    try:
        port = listener.sockets[0].getsockname()[1]
        try:
            await page.goto(f"https://{SERVER_IP}:{port}/")
        except Exception as error:  # playwright's Error
            return str(error)
        return "loaded"
    finally:
        await page.close()
        listener.close()
        await listener.wait_closed()


async def selected_pairs(tab: Tab) -> list[dict[str, Any]]:
    """The addresses of the ICE candidate pair each of the page's peer connections uses."""
    return await tab.page.evaluate(
        """async () => {
            const adaptor = window.conferoPage.adaptor();
            const pairs = [];
            for (const pc of Object.values(adaptor.remotePeerConnection)) {
                const stats = await pc.getStats();
                let transport = null;
                stats.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) transport = r; });
                if (!transport) { pairs.push(null); continue; }
                const pair = stats.get(transport.selectedCandidatePairId);
                const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
                pairs.push({local: local.address, remote: remote.address, remotePort: remote.port,
                            protocol: local.protocol, state: pair.state});
            }
            return pairs;
        }"""
    )


async def test_remote_host_joins_a_conference_over_https_pinned_by_spki(
    tmp_path: Path, remote: Host, tls_server: Server, remote_browser: Any
) -> None:
    base = f"https://{SERVER_IP}:{tls_server.tls_port}/{APP}"
    context = await remote_browser.new_context(viewport={"width": 1280, "height": 800})
    tabs: list[Tab] = []
    try:
        # The browser and its helpers run inside the remote namespace.
        assert remote.pids(), "nothing runs in the remote namespace"

        # Only the pinned key is trusted: another certificate for the same address is refused.
        assert "ERR_CERT_AUTHORITY_INVALID" in await refuses_an_unpinned_certificate(context, tmp_path)

        # Plain http from the remote host works, but is no secure context (getUserMedia needs one).
        plain = await context.new_page()
        await plain.goto(f"http://{SERVER_IP}:{tls_server.port}/{APP}/conference.html")
        assert await plain.evaluate("window.isSecureContext") is False
        await plain.close()

        names = ["Ada", "Brian", "Chiara"]
        for _ in names:
            page = await context.new_page()
            tab = Tab(page)
            tabs.append(tab)
            response = await page.goto(f"{base}/conference.html?roomId=remote1")
            assert response is not None and response.ok
            await page.wait_for_function("window.conferoPage !== undefined", timeout=TIMEOUT_MS)
            assert await page.evaluate("window.isSecureContext") is True
            assert await page.evaluate("location.protocol") == "https:"
            security = await response.security_details()
            assert security is not None and security.get("subjectName") == SERVER_IP, security

        for tab, name in zip(tabs, names, strict=True):
            await join_conference(tab, name)
        # Every signaling session is a wss connection from the remote host's address.
        await eventually(
            lambda: sorted(s.remote for s in tls_server.sessions) == [REMOTE_IP] * 3,
            timeout=10,
            what=lambda: f"three sessions from {REMOTE_IP}: {[s.remote for s in tls_server.sessions]}",
        )
        assert all(s.ws.get_extra_info("sslcontext") is not None for s in tls_server.sessions)

        ids = [(await tab.state())["streamId"] for tab in tabs]
        for tab, own in zip(tabs, ids, strict=True):
            others = sorted(i for i in ids if i != own)
            await tab.wait(f"s.remoteIds.length === 2 && {js(others)}.every(id => s.remoteIds.includes(id))")
        for tab in tabs:
            await frames_advance(tab, REMOTE_TILES, 2, timeout=30)

        # Media goes over the veth pair: each peer connection's pair is 198.18.0.2 <-> 198.18.0.1.
        for tab in tabs:
            pairs = await selected_pairs(tab)
            assert pairs, "no peer connection"
            for pair in pairs:
                assert pair is not None and pair["state"] == "succeeded", pairs
                assert (pair["local"], pair["remote"], pair["protocol"]) == (REMOTE_IP, SERVER_IP, "udp"), pairs
        await tabs[0].page.screenshot(path=str(artifact("remote-conference.png")))
        for tab in tabs:
            await tab.assert_clean()
    finally:
        await close_all(*tabs)
        await context.close()


LINK_DOWN = 5.0
GHOST_LIMIT = 10.0


def link_tries() -> int:
    """How many link-down rounds (CONFERO_LINK_TRIES; 20 for the published figures)."""
    import os

    return int(os.environ.get("CONFERO_LINK_TRIES", "2"))


async def test_remote_participants_link_goes_down_for_5_s_and_comes_back(
    tmp_path: Path, remote: Host, tls_server: Server, remote_browser: Any
) -> None:
    """The remote host's link goes down for 5 s, then up, in a conference with a watcher on the
    server's side: the ghost is gone within 10 s (streamLeaved), and the page's SDK reconnects
    on its own, so the watcher sees the participant again (streamJoined, then its video)."""
    import statistics
    import time

    from tests.support.amsclient import AmsSocket

    base = f"https://{SERVER_IP}:{tls_server.tls_port}/{APP}"
    context = await remote_browser.new_context(viewport={"width": 1280, "height": 800})
    watcher: AmsSocket | None = None
    tabs: list[Tab] = []
    ghosts: list[float] = []
    returns: list[float] = []
    try:
        watcher = await AmsSocket.connect(tls_server.port, host=SERVER_IP)
        await watcher.send({"command": "joinRoom", "room": "linkdown", "streamId": "watcher"})
        await watcher.wait_for(definition="joinedTheRoom", timeout=10)
        page = await context.new_page()
        tab = Tab(page)
        tabs.append(tab)
        await page.goto(f"{base}/conference.html?roomId=linkdown")
        await page.wait_for_function("window.conferoPage !== undefined", timeout=TIMEOUT_MS)
        await join_conference(tab, "Remote")
        stream_id = (await tab.state())["streamId"]
        await watcher.wait_for(definition="streamJoined", stream_id=stream_id, timeout=15)
        for _ in range(link_tries()):
            remote.set_link(False)
            cut = time.monotonic()
            await watcher.wait_for(definition="streamLeaved", stream_id=stream_id, timeout=GHOST_LIMIT + 5)
            ghosts.append(time.monotonic() - cut)
            await asyncio.sleep(max(0.0, LINK_DOWN - (time.monotonic() - cut)))  # the outage lasts 5 s
            remote.set_link(True)
            back = time.monotonic()
            try:
                await watcher.wait_for(definition="streamJoined", stream_id=stream_id, timeout=30)
            except TimeoutError as exc:
                state = await tab.state()
                raise AssertionError(f"the page did not come back: {state['events'][-25:]} {state['status']}") from exc
            returns.append(time.monotonic() - back)
            print(f"round {len(returns)}: ghost gone {ghosts[-1]:.2f} s, back {returns[-1]:.2f} s after link up")
            await tab.wait("s.joined && s.publishing")
        print(
            f"remote link down {LINK_DOWN:g} s: ghost gone p50 {statistics.median(ghosts):.2f} s, worst"
            f" {max(ghosts):.2f} s; back after link up p50 {statistics.median(returns):.2f} s, worst"
            f" {max(returns):.2f} s ({len(ghosts)} tries)"
        )
        assert max(ghosts) <= GHOST_LIMIT, ghosts
        assert max(returns) <= GHOST_LIMIT, returns
    finally:
        await close_all(*tabs)
        await context.close()
        if watcher is not None:
            await watcher.close()
