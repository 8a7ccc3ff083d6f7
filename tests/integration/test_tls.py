"""https and wss beside plain HTTP (issue 13): a certificate made by `confero cert`'s code, real
aiortc publish/play over wss, REST over https, the page redirect, the certificate reload that keeps
open connections, and X-Forwarded-For / -Proto believed from trusted proxies only."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from confero import cli
from confero.api.guards import forwarded_client, parse_address
from confero.server import Server
from confero.settings import Settings, SettingsError
from confero.tls import write_self_signed
from tests.integration.test_cli_shutdown import child_env, confero, free_port, stop_process, wait_exit
from tests.support import eventually
from tests.support.amsclient import AmsSocket
from tests.support.clients import Clients
from tests.support.server import assert_no_leaks, assert_no_pending_tasks, make_settings, wait_idle

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
VERSION = f"/{APP}/rest/v2/version"


def make_cert(folder: Path, name: str = "a") -> tuple[Path, Path]:
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    write_self_signed(["localhost", "127.0.0.1"], cert, key)
    return cert, key


def trusting(*certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for cert in certs:
        context.load_verify_locations(cafile=str(cert))
    return context


def fingerprint_of_file(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def peer_fingerprint(sock: AmsSocket) -> str:
    ssl_object = sock.transport_info("ssl_object")
    assert ssl_object is not None, "not a TLS connection"
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


@asynccontextmanager
async def running(tmp_path: Path, **overrides: object) -> AsyncIterator[Server]:
    srv = Server(make_settings(tmp_path, **overrides))
    await srv.start()
    try:
        yield srv
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
    finally:
        await srv.close()
    await assert_no_pending_tasks()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path)


@pytest.fixture
async def tls_server(tmp_path: Path, cert: tuple[Path, Path]) -> AsyncIterator[Server]:
    async with running(tmp_path, tls_cert=str(cert[0]), tls_key=str(cert[1]), tls_port=0) as srv:
        yield srv


async def ping(sock: AmsSocket) -> None:
    await sock.send({"command": "ping"})
    await sock.wait_for(lambda m: m.get("command") == "pong", timeout=5)


async def status_of(url: str, context: ssl.SSLContext | None = None, **kw: Any) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=context if context is not None else True, **kw) as resp,
    ):
        return resp.status, resp.headers.get("Location", "")


# -- the certificate ------------------------------------------------------------------------------


def test_cert_command_writes_a_usable_pair_and_says_how_to_trust_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    code = cli.main(["cert", "--host", "confero.lan", "192.168.1.20", "--cert", str(cert), "--key", str(key)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"--tls-cert {cert} --tls-key {key}" in out
    assert "update-ca-certificates" in out and "--ignore-certificate-errors-spki-list=" in out
    assert key.stat().st_mode & 0o077 == 0, "the key is readable by its owner only"
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)  # a matching pair
    from cryptography import x509

    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert names.value.get_values_for_type(x509.DNSName) == ["confero.lan"]
    assert names.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.20")]
    missing = tmp_path / "no"
    assert cli.main(["cert", "--host", "x", "--cert", str(missing / "c.pem"), "--key", str(missing / "k.pem")]) == 2


def test_settings_refuse_half_a_tls_configuration(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    with pytest.raises(SettingsError, match="set both"):
        Settings(tls_cert=str(cert[0])).validate()
    with pytest.raises(SettingsError, match="is not a file"):
        Settings(tls_cert=str(tmp_path / "none.pem"), tls_key=str(cert[1])).validate()
    with pytest.raises(SettingsError, match="tls_redirect"):
        Settings(tls_redirect=True).validate()
    with pytest.raises(SettingsError, match="trusted_proxies"):
        Settings(trusted_proxies=["not-an-address"]).validate()
    loaded = Settings.load(
        ["--tls-cert", str(cert[0]), "--tls-key", str(cert[1]), "--trusted-proxy", "10.0.0.0/8"],
        env={"CONFERO_TLS_PORT": "8443", "CONFERO_TLS_REDIRECT": "true"},
    )
    assert (loaded.tls_port, loaded.tls_redirect, loaded.trusted_proxies) == (8443, True, ["10.0.0.0/8"])


# -- https and wss --------------------------------------------------------------------------------


async def test_wss_publish_and_play_with_real_peers(tls_server: Server, cert: tuple[Path, Path]) -> None:
    context = trusting(cert[0])
    async with Clients(tls_server.tls_port) as clients:
        pub_sock = await clients.socket(ssl=context)
        play_sock = await clients.socket(ssl=context)
        assert pub_sock.url.startswith("wss://")
        assert peer_fingerprint(pub_sock) == fingerprint_of_file(cert[0])
        publisher = clients.publisher(pub_sock, "secure")
        await publisher.start()
        await pub_sock.wait_for(definition="publish_started", stream_id="secure", timeout=10)
        player = clients.player(play_sock, "secure")
        await player.start()
        await player.wait_frames(30, 10, timeout=30)
        assert player.decode_errors == 0
        # The plain port serves the same application: a plain player sees the same stream.
        plain_sock = clients.closing(await AmsSocket.connect(tls_server.port))
        plain_player = clients.player(plain_sock, "secure")
        await plain_player.start()
        await plain_player.wait_frames(10, timeout=30)


async def test_rest_and_pages_over_https_and_plain(tls_server: Server, cert: tuple[Path, Path]) -> None:
    context = trusting(cert[0])
    tls_base, plain_base = f"https://127.0.0.1:{tls_server.tls_port}", f"http://127.0.0.1:{tls_server.port}"
    assert tls_server.tls_port != tls_server.port
    assert (await status_of(tls_base + VERSION, context))[0] == 200
    assert (await status_of(tls_base + f"/{APP}/", context))[0] == 200
    assert (await status_of(plain_base + VERSION))[0] == 200
    assert (await status_of(plain_base + f"/{APP}/"))[0] == 200  # no redirect unless asked
    # A client that does not trust the certificate cannot connect.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await status_of(tls_base + VERSION)


async def test_redirect_sends_plain_pages_to_the_tls_port(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    context = trusting(cert[0])
    settings = {"tls_cert": str(cert[0]), "tls_key": str(cert[1]), "tls_port": 0, "tls_redirect": True}
    async with running(tmp_path, **settings) as srv:
        plain = f"http://127.0.0.1:{srv.port}"
        status, location = await status_of(plain + f"/{APP}/index.html?id=s1", allow_redirects=False)
        assert status == 302
        assert location == f"https://127.0.0.1:{srv.tls_port}/{APP}/index.html?id=s1"
        assert (await status_of(location, context))[0] == 200
        # REST and WebSocket on the plain port are not redirected (a client cannot follow it there).
        assert (await status_of(plain + VERSION, allow_redirects=False))[0] == 200
        sock = await AmsSocket.connect(srv.port)
        try:
            await ping(sock)
        finally:
            await sock.close()


async def test_reload_keeps_open_wss_sessions_and_new_handshakes_get_the_new_cert(
    tmp_path: Path, tls_server: Server, cert: tuple[Path, Path]
) -> None:
    old_print = fingerprint_of_file(cert[0])
    new = make_cert(tmp_path, "b")
    new_print = fingerprint_of_file(new[0])
    assert new_print != old_print
    both = trusting(cert[0], new[0])
    async with Clients(tls_server.tls_port) as clients:
        pub_sock = await clients.socket(ssl=both)
        publisher = clients.publisher(pub_sock, "kept", with_audio=False)
        await publisher.start()
        await pub_sock.wait_for(definition="publish_started", stream_id="kept", timeout=10)
        assert peer_fingerprint(pub_sock) == old_print

        # Replace the files in place (as a renewal does) and reload, as SIGHUP does.
        cert[0].write_bytes(new[0].read_bytes())
        cert[1].write_bytes(new[1].read_bytes())
        assert tls_server.reload_tls() is True
        assert tls_server.dump()["tls"]["loads"] == 2

        late_sock = await clients.socket(ssl=both)
        assert peer_fingerprint(late_sock) == new_print
        assert peer_fingerprint(pub_sock) == old_print  # the open connection kept its session
        await ping(pub_sock)  # ... and still signals
        player = clients.player(late_sock, "kept")
        await player.start()
        await player.wait_frames(20, timeout=30)  # the publisher's stream did not drop

        # A reload that fails (the key does not match) keeps the certificate in use.
        cert[1].write_bytes(make_cert(tmp_path, "c")[1].read_bytes())
        assert tls_server.reload_tls() is False
        third = await clients.socket(ssl=both)
        assert peer_fingerprint(third) == new_print
        assert tls_server.dump()["tls"]["failed_reloads"] == 1


async def test_reload_without_tls_is_a_no_op(tmp_path: Path) -> None:
    async with running(tmp_path) as srv:
        assert srv.reload_tls() is False
        assert srv.dump()["tls"] is None


# -- reverse proxies ------------------------------------------------------------------------------


def test_forwarded_client_walks_trusted_hops_from_the_right() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8")]

    def client(peer: str, hops: list[str]) -> str:
        address = parse_address(peer)
        assert address is not None
        return str(forwarded_client(address, hops, trusted))

    assert client("10.0.0.1", ["203.0.113.7"]) == "203.0.113.7"
    assert client("10.0.0.1", ["198.51.100.9", "203.0.113.7", "10.0.0.2"]) == "203.0.113.7"
    assert client("10.0.0.1", ["10.0.0.3", "10.0.0.2"]) == "10.0.0.3"
    assert client("192.0.2.1", ["203.0.113.7"]) == "192.0.2.1"  # an untrusted peer's header is ignored
    assert client("10.0.0.1", ["garbage", "10.0.0.2"]) == "10.0.0.2"
    assert client("10.0.0.1", ["[2001:db8::1]:443"]) == "2001:db8::1"
    assert client("::ffff:10.0.0.1", ["203.0.113.7:5000"]) == "203.0.113.7"


async def rest_status(port: int, headers: dict[str, str]) -> int:
    return (await status_of(f"http://127.0.0.1:{port}{VERSION}", headers=headers))[0]


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "status"),
    [
        (["127.0.0.1"], None, 403),  # the proxy itself is not an allowed client
        (["127.0.0.1"], "203.0.113.7", 200),
        (["127.0.0.0/8"], "198.51.100.9, 203.0.113.7, 127.0.0.5", 200),  # spoofed left part ignored
        (["127.0.0.1"], "203.0.113.7, 198.51.100.9", 403),  # the client is the rightmost untrusted hop
        (["192.0.2.1"], "203.0.113.7", 403),  # spoofed by an untrusted peer: not believed
        ([], "203.0.113.7", 403),
    ],
)
async def test_rest_filter_believes_forwarded_for_from_trusted_proxies_only(
    tmp_path: Path, trusted: list[str], forwarded_for: str | None, status: int
) -> None:
    async with running(tmp_path, trusted_proxies=trusted) as srv:
        srv.settings.app(APP).remoteAllowedCIDR = "203.0.113.0/24"
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
        assert await rest_status(srv.port, headers) == status


async def test_forwarded_proto_and_address_from_a_trusted_proxy(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    settings = {"tls_cert": str(cert[0]), "tls_key": str(cert[1]), "tls_port": 0, "tls_redirect": True}
    page = f"/{APP}/"

    async def page_status(srv: Server, headers: dict[str, str]) -> int:
        return (await status_of(f"http://127.0.0.1:{srv.port}{page}", headers=headers, allow_redirects=False))[0]

    https = {"X-Forwarded-Proto": "https"}
    async with running(tmp_path, trusted_proxies=["127.0.0.1"], **settings) as srv:
        assert await page_status(srv, https) == 200  # the proxy terminated TLS: no redirect
        assert await page_status(srv, {"X-Forwarded-Proto": "http"}) == 302
        # The signaling session sees the client's address, not the proxy's.
        headers = {"X-Forwarded-For": "203.0.113.7"}
        url = f"ws://127.0.0.1:{srv.port}/{APP}/websocket"
        async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
            remotes: Callable[[], list[str]] = lambda: [s.remote for s in srv.sessions]  # noqa: E731
            await eventually(lambda: remotes() == ["203.0.113.7"], timeout=5, what="the session")
            await ws.close()
    async with running(tmp_path, trusted_proxies=["192.0.2.1"], **settings) as srv:
        assert await page_status(srv, https) == 302  # an untrusted peer's X-Forwarded-Proto is ignored


# -- SIGHUP in a real `confero serve` -------------------------------------------------------------


async def served_fingerprint(port: int, context: ssl.SSLContext) -> str | None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    except OSError:
        return None
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return hashlib.sha256(der).hexdigest()


def spawn(args: list[str], folder: Path) -> subprocess.Popen[bytes]:
    """`confero ARGS...` in `folder`, its output to folder/confero.log."""
    with open(folder / "confero.log", "wb") as log:
        return subprocess.Popen(
            confero(*args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(), cwd=folder
        )


async def test_sighup_reloads_the_certificate_of_a_running_server(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    new = make_cert(tmp_path, "b")
    both = trusting(cert[0], new[0])
    port, tls_port = free_port(), free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--tls-port", str(tls_port)]
    args += ["--tls-cert", str(cert[0]), "--tls-key", str(cert[1]), "--data-dir", str(tmp_path / "data")]
    args += ["--ice-address", "127.0.0.1"]
    proc = spawn(args, tmp_path)
    try:
        first: list[str | None] = [None]

        async def serving() -> bool:
            assert proc.poll() is None, f"confero exited with {proc.returncode}"
            first[0] = await served_fingerprint(tls_port, both)
            return first[0] is not None

        await eventually(serving, timeout=15, what="confero to serve TLS", interval=0.1)
        assert first[0] == fingerprint_of_file(cert[0])
        cert[0].write_bytes(new[0].read_bytes())
        cert[1].write_bytes(new[1].read_bytes())
        proc.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return await served_fingerprint(tls_port, both) == fingerprint_of_file(new[0])

        await eventually(reloaded, timeout=10, what="the new certificate", interval=0.1)
        assert proc.poll() is None, "SIGHUP must not stop the server"
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc, 15) == 0
    finally:
        stop_process(proc)
    assert "certificate reloaded" in (tmp_path / "confero.log").read_text()
