"""TURN through coturn: clients that may only use relay candidates (iceTransportPolicy "relay")
publish and play through a real `turnserver` started by the test, with the credentials that
getIceServerConfig hands out; forged or expired credentials get no allocation."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection

from confero.auth.turn import rest_credential, rest_username
from confero.media import fanout
from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsSocket, build_publisher_pc
from tests.support.clients import Clients
from tests.support.coturn import TURNSERVER, Coturn
from tests.support.server import assert_no_leaks, assert_no_pending_tasks, make_settings, wait_idle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(TURNSERVER is None, reason="coturn is not installed (apt-get install coturn)"),
]


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    turn = Coturn(tmp_path / "coturn")
    await turn.start()
    try:
        yield turn
    finally:
        turn.stop()


@pytest.fixture
async def server(tmp_path: Path, coturn: Coturn) -> AsyncIterator[Server]:
    """A loopback server whose getIceServerConfig points at `coturn` (UDP first, then TCP)."""
    settings = make_settings(
        tmp_path,
        turn_urls=[coturn.url("udp"), coturn.url("tcp")],
        turn_secret=coturn.secret,
        turn_ttl=600,
    )
    srv = Server(settings)
    await srv.start()
    try:
        yield srv
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
    finally:
        await srv.close()
    await assert_no_pending_tasks()
    gc.collect()
    assert fanout.open_outputs() == 0


async def ice_config(sock: AmsSocket) -> dict[str, Any]:
    await sock.send({"command": "getIceServerConfig"})
    return await sock.wait_for("iceServerConfig")


def relay_only(url: str, username: str, credential: str) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[RTCIceServer(url, username, credential)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


def selected_local_type(pc: RTCPeerConnection) -> str:
    """The type of the local candidate of the nominated pair (aioice's, as aiortc has no stats for it)."""
    transport = pc.getTransceivers()[0].sender.transport.transport
    pair = transport._connection._nominated[1]
    return str(pair.local_candidate.type)


def allocations(coturn: Coturn, username: str) -> int:
    return len(re.findall(rf"user <{re.escape(username)}>: incoming packet ALLOCATE processed, success", coturn.log()))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_relay_only_publish_and_play_through_coturn(
    server: Server, clients: Clients, coturn: Coturn, transport: str
) -> None:
    pub_sock, play_sock = await clients.socket(), await clients.socket()
    configs = [await ice_config(pub_sock), await ice_config(play_sock)]
    for reply in configs:
        assert reply["stunServerUri"] == coturn.url("udp")
        assert reply["turnServerUris"] == [coturn.url("udp"), coturn.url("tcp")]
    # Fresh per request: each socket got its own username (and so its own credential).
    assert configs[0]["turnServerUsername"] != configs[1]["turnServerUsername"]
    pub_conf, play_conf = (
        relay_only(coturn.url(transport), c["turnServerUsername"], c["turnServerCredential"]) for c in configs
    )

    publisher = clients.publisher(
        pub_sock, "turn1", media_factory=lambda: build_publisher_pc("VP8", configuration=pub_conf)
    )
    await publisher.start(timeout=20)
    await pub_sock.wait_for(definition="publish_started", stream_id="turn1")
    player = clients.player(play_sock, "turn1", configuration=play_conf)
    await player.start(timeout=20)
    await player.wait_frames(30, 10, timeout=30)
    assert player.decode_errors == 0
    assert player.first_video_size == (320, 240)

    # Both clients talk to the server only through their relayed addresses, and only relay
    # candidates left them.
    assert publisher.pc is not None and player.pc is not None
    assert selected_local_type(publisher.pc) == "relay"
    assert selected_local_type(player.pc) == "relay"
    for sdp in (publisher.offer_sdp, player.answer_sdp):
        assert sdp is not None
        candidates = re.findall(r"^a=candidate:.* typ (\w+)", sdp, re.M)
        assert candidates and set(candidates) == {"relay"}, candidates

    # coturn's own log shows both allocations, under the usernames getIceServerConfig gave.
    await eventually(
        lambda: all(allocations(coturn, c["turnServerUsername"]) for c in configs),
        timeout=5,
        what="coturn to log both allocations",
    )
    # ...over the transport asked for (coturn logs each client TCP connection it accepts).
    tcp_clients = coturn.log().count("tcp or tls connected to: 127.0.0.1")
    assert tcp_clients == (2 if transport == "tcp" else 0), tcp_clients
    await publisher.stop()
    await play_sock.wait_for(definition="play_finished", stream_id="turn1")


@pytest.mark.parametrize("forgery", ["forged", "expired"])
async def test_forged_or_expired_credentials_get_no_allocation(
    server: Server, clients: Clients, coturn: Coturn, forgery: str
) -> None:
    sock = await clients.socket()
    reply = await ice_config(sock)
    if forgery == "forged":
        username = reply["turnServerUsername"]
        credential = rest_credential("not-the-secret", username)
    else:
        username = rest_username(1_000_000_000, "expired-client")  # 2001
        credential = rest_credential(coturn.secret, username)
    conf = relay_only(coturn.url("udp"), username, credential)
    publisher = clients.publisher(sock, "turn2", media_factory=lambda: build_publisher_pc("VP8", configuration=conf))
    with pytest.raises(Exception):  # noqa: B017 (aioice's refusal, or no connection at all)
        await publisher.start(timeout=8)
    refused = re.compile(rf"user <{re.escape(username)}>: incoming packet \w+ processed, error 401")
    await eventually(
        lambda: refused.search(coturn.log()),
        timeout=5,
        what="coturn to refuse the credentials (401)",
    )
    assert allocations(coturn, username) == 0
    assert publisher.pc is None or publisher.pc.connectionState != "connected"
    await publisher.close()


async def test_server_peers_gather_relay_candidates_with_server_ice_servers(tmp_path: Path, coturn: Coturn) -> None:
    """`server_ice_servers`: the server's own peers allocate on coturn (credentials from
    turn_secret) and offer relay candidates beside their host ones."""
    settings = make_settings(tmp_path, server_ice_servers=[coturn.url("udp")], turn_secret=coturn.secret)
    srv = Server(settings)
    await srv.start()
    try:
        async with Clients(srv.port) as opened:
            pub_sock, play_sock = await opened.socket(), await opened.socket()
            publisher = opened.publisher(pub_sock, "turn3")
            await publisher.start(timeout=20)
            player = opened.player(play_sock, "turn3")
            await player.start(timeout=20)
            await player.wait_frames(10, 5, timeout=30)
            assert player.offer_sdp is not None
            assert re.search(r"^a=candidate:.* typ relay", player.offer_sdp, re.M), player.offer_sdp
            assert re.search(r"user <\d+:confero-server>: incoming packet ALLOCATE processed, success", coturn.log())
            await publisher.stop()
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
    finally:
        await srv.close()


# -- UDP blocked for the clients (nftables, inside the tests' private network namespace) ---------

#: Ports UDP may still use with nftables on: coturn's relay range and the server's media range.
#: Below the kernel's ephemeral range, where every client socket is.
OPEN_UDP = (20000, 20999)
NFT_TABLE = "confero_turn_test"


def nft(script: str) -> None:
    import subprocess

    subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True)


@pytest.fixture
def udp_blocked() -> Iterator[None]:
    """Every UDP datagram with neither port in OPEN_UDP is dropped, so a client can reach coturn
    over TCP only. Only inside the tests' own network namespace (never the machine's)."""
    import os
    import shutil

    if os.environ.get("CONFERO_IN_NETNS") != "1" or shutil.which("nft") is None:
        pytest.skip("needs the tests' private network namespace (root) and nftables")
    low, high = OPEN_UDP
    nft(
        f"table inet {NFT_TABLE} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    udp sport != {low}-{high} udp dport != {low}-{high} counter drop\n"
        "  }\n"
        "}\n"
    )
    try:
        yield
    finally:
        nft(f"delete table inet {NFT_TABLE}\n")


def udp_delivered() -> bool:
    """Whether a datagram between two ephemeral loopback ports arrives."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.5)
        try:
            tx.sendto(b"x", rx.getsockname())
            return rx.recv(8) == b"x"
        except (PermissionError, TimeoutError):  # nftables' drop on output is an EPERM
            return False


async def test_relay_over_tcp_with_udp_blocked_for_the_clients(tmp_path: Path, udp_blocked: None) -> None:
    assert not udp_delivered()
    coturn = Coturn(tmp_path / "coturn", relay_ports=(OPEN_UDP[0], OPEN_UDP[0] + 199))
    await coturn.start()
    settings = make_settings(
        tmp_path,
        turn_urls=[coturn.url("udp"), coturn.url("tcp")],
        turn_secret=coturn.secret,
        udp_port_range=f"{OPEN_UDP[0] + 500}-{OPEN_UDP[1]}",
    )
    srv = Server(settings)
    await srv.start()
    try:
        async with Clients(srv.port) as opened:
            pub_sock, play_sock = await opened.socket(), await opened.socket()
            configs = [await ice_config(pub_sock), await ice_config(play_sock)]
            # Over UDP, the client cannot even reach coturn: no allocation, no connection.
            udp_conf = relay_only(
                coturn.url("udp"), configs[0]["turnServerUsername"], configs[0]["turnServerCredential"]
            )
            failing = opened.publisher(
                pub_sock, "turn4", media_factory=lambda: build_publisher_pc("VP8", configuration=udp_conf)
            )
            with pytest.raises(Exception):  # noqa: B017 (no relay candidate: no connection)
                await failing.start(timeout=6)
            await failing.close()
            assert allocations(coturn, configs[0]["turnServerUsername"]) == 0

            pub_conf, play_conf = (
                relay_only(coturn.url("tcp"), c["turnServerUsername"], c["turnServerCredential"]) for c in configs
            )
            publisher = opened.publisher(
                pub_sock, "turn5", media_factory=lambda: build_publisher_pc("VP8", configuration=pub_conf)
            )
            await publisher.start(timeout=20)
            player = opened.player(play_sock, "turn5", configuration=play_conf)
            await player.start(timeout=20)
            await player.wait_frames(30, 10, timeout=30)
            assert player.decode_errors == 0
            assert publisher.pc is not None and player.pc is not None
            assert selected_local_type(publisher.pc) == selected_local_type(player.pc) == "relay"
            assert all(allocations(coturn, c["turnServerUsername"]) for c in configs)
            await publisher.stop()
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
    finally:
        await srv.close()
        coturn.stop()


# -- turns: TURN over TLS (coturn's tls-listening-port, a certificate made for the test) -------


def tls_sessions(coturn: Coturn, username: str) -> int:
    """coturn's sessions of `username` on its TLS port that negotiated TLS (it logs the cipher
    and the TLS version of each TLS session when the allocation is made)."""
    new = re.compile(rf"session \d+: new, realm=<[^>]*>, username=<{re.escape(username)}>, .*method=TLSv1\.[23]")
    return len(new.findall(coturn.log()))


def trust_turn_certificate(monkeypatch: pytest.MonkeyPatch, coturn: Coturn | None) -> None:
    """What this process trusts for TLS: only coturn's test certificate (OpenSSL's default
    verify paths, which aioice's TLS connection loads, read SSL_CERT_FILE), or, with None, the
    machine's own store, where the test certificate is not."""
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if coturn is None:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(coturn.cert_path))


async def test_relay_over_tls_with_udp_blocked_for_the_clients(
    tmp_path: Path, udp_blocked: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """turns: from getIceServerConfig: relay-only clients that can only use TCP reach coturn over
    TLS (its certificate trusted, verification on), publish and play; coturn saw TLS sessions."""
    assert not udp_delivered()
    coturn = Coturn(tmp_path / "coturn", relay_ports=(OPEN_UDP[0], OPEN_UDP[0] + 199), tls=True)
    await coturn.start()
    trust_turn_certificate(monkeypatch, coturn)
    urls = [coturn.url("udp"), coturn.url("tcp"), coturn.url("tls")]
    settings = make_settings(
        tmp_path, turn_urls=urls, turn_secret=coturn.secret, udp_port_range=f"{OPEN_UDP[0] + 500}-{OPEN_UDP[1]}"
    )
    srv = Server(settings)
    await srv.start()
    try:
        async with Clients(srv.port) as opened:
            pub_sock, play_sock = await opened.socket(), await opened.socket()
            configs = [await ice_config(pub_sock), await ice_config(play_sock)]
            for reply in configs:
                assert reply["turnServerUris"] == urls
                assert reply["stunServerUri"] == coturn.url("udp")  # the official SDK's one turn: URL
            pub_conf, play_conf = (
                relay_only(coturn.url("tls"), c["turnServerUsername"], c["turnServerCredential"]) for c in configs
            )
            publisher = opened.publisher(
                pub_sock, "turn6", media_factory=lambda: build_publisher_pc("VP8", configuration=pub_conf)
            )
            await publisher.start(timeout=20)
            player = opened.player(play_sock, "turn6", configuration=play_conf)
            await player.start(timeout=20)
            await player.wait_frames(30, 10, timeout=30)
            assert player.decode_errors == 0
            assert player.first_video_size == (320, 240)
            assert publisher.pc is not None and player.pc is not None
            assert selected_local_type(publisher.pc) == selected_local_type(player.pc) == "relay"
            for sdp in (publisher.offer_sdp, player.answer_sdp):
                assert sdp is not None
                assert set(re.findall(r"^a=candidate:.* typ (\w+)", sdp, re.M)) == {"relay"}
            for c in configs:
                assert allocations(coturn, c["turnServerUsername"]) >= 1
                assert tls_sessions(coturn, c["turnServerUsername"]) >= 1, coturn.log()[-3000:]
            await publisher.stop()
            await play_sock.wait_for(definition="play_finished", stream_id="turn6")
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
    finally:
        await srv.close()
        coturn.stop()


@pytest.mark.parametrize("refusal", ["forged", "untrusted"])
async def test_turns_refuses_forged_credentials_and_is_refused_an_untrusted_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    """Over TLS, forged credentials get coturn's 401 and no allocation; and a client that does not
    trust coturn's certificate (verification stays on) never sends it a TURN request."""
    coturn = Coturn(tmp_path / "coturn", tls=True)
    await coturn.start()
    trust_turn_certificate(monkeypatch, coturn if refusal == "forged" else None)
    srv = Server(make_settings(tmp_path, turn_urls=[coturn.url("tls")], turn_secret=coturn.secret))
    await srv.start()
    try:
        async with Clients(srv.port) as opened:
            sock = await opened.socket()
            reply = await ice_config(sock)
            assert reply["turnServerUris"] == [coturn.url("tls")]
            username = reply["turnServerUsername"]
            credential = reply["turnServerCredential"]
            if refusal == "forged":
                credential = rest_credential("not-the-secret", username)
            conf = relay_only(coturn.url("tls"), username, credential)
            publisher = opened.publisher(
                sock, "turn7", media_factory=lambda: build_publisher_pc("VP8", configuration=conf)
            )
            with pytest.raises(Exception):  # noqa: B017 (no relay candidate: no connection)
                await publisher.start(timeout=8)
            assert publisher.pc is None or publisher.pc.connectionState != "connected"
            await publisher.close()
            # coturn accepted a connection on its TLS port and ended it...
            await eventually(
                lambda: f"local 127.0.0.1:{coturn.tls_port}, remote" in coturn.log(),
                timeout=5,
                what="coturn to close the client's TLS connection",
            )
            if refusal == "forged":
                # ...after refusing the request inside a TLS session,
                refused = re.compile(rf"user <{re.escape(username)}>: incoming packet \w+ processed, error 401")
                assert refused.search(coturn.log()), coturn.log()[-3000:]
            else:
                # ...before any TURN request: the client refused the handshake.
                assert f"user <{username}>" not in coturn.log(), coturn.log()[-3000:]
            assert allocations(coturn, username) == 0
            assert tls_sessions(coturn, username) == 0
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
    finally:
        await srv.close()
        coturn.stop()


@pytest.mark.parametrize("trust", ["trusted", "untrusted"])
async def test_server_peers_relay_over_tls_with_server_ice_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, trust: str
) -> None:
    """`server_ice_servers` with a turns: URL (and fixed media ports, as on a public server): the
    server's peers allocate on coturn over TLS when they trust its certificate; when they do not,
    they keep their host candidates and the log says why there is no relay one."""
    coturn = Coturn(tmp_path / "coturn", tls=True)
    await coturn.start()
    trust_turn_certificate(monkeypatch, coturn if trust == "trusted" else None)
    low, high = 21000, 21099  # below the kernel's ephemeral ports: nothing else binds there
    settings = make_settings(
        tmp_path,
        server_ice_servers=[coturn.url("tls")],
        turn_secret=coturn.secret,
        udp_port_range=f"{low}-{high}",
    )
    srv = Server(settings)
    await srv.start()
    try:
        async with Clients(srv.port) as opened:
            pub_sock, play_sock = await opened.socket(), await opened.socket()
            publisher = opened.publisher(pub_sock, "turn8")
            await publisher.start(timeout=20)
            player = opened.player(play_sock, "turn8")
            await player.start(timeout=20)
            await player.wait_frames(10, 5, timeout=30)
            assert player.offer_sdp is not None
            hosts = re.findall(r"^a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host", player.offer_sdp, re.M)
            assert hosts and all(low <= int(port) <= high for port in hosts), player.offer_sdp
            relayed = re.search(r"^a=candidate:.* typ relay", player.offer_sdp, re.M)
            server_tls = re.compile(r"username=<\d+:confero-server>, .*method=TLSv1\.[23]")
            if trust == "trusted":
                assert relayed, player.offer_sdp
                assert re.search(
                    r"user <\d+:confero-server>: incoming packet ALLOCATE processed, success", coturn.log()
                )
                assert server_tls.search(coturn.log()), coturn.log()[-3000:]
            else:
                assert not relayed, player.offer_sdp
                assert "confero-server" not in coturn.log()
                warnings = [r.getMessage() for r in caplog.records if "no relay candidate" in r.getMessage()]
                assert warnings and f"turns:127.0.0.1:{coturn.tls_port}" in warnings[0], warnings
                assert "certificate verify failed" in warnings[0], warnings
            await publisher.stop()
        await wait_idle(srv, timeout=5.0)
        assert_no_leaks(srv)
    finally:
        await srv.close()
        coturn.stop()
