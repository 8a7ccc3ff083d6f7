"""The network-namespace harness (tests/support/netns.py): a remote host reached over its veth
pair only, its link and address changed, a firewall rule, and nothing left behind."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import eventually
from tests.support.netns import Host, NetnsError, Network, available

pytestmark = [pytest.mark.integration, pytest.mark.skipif(available() is not None, reason=str(available()))]

#: A UDP echo server for inside a namespace: answers each datagram with b"echo:" + it.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + data + b" from " + peer[0].encode(), peer)
"""


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def output(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def names() -> list[str]:
    return output("ip", "netns", "list").split()


def echo(host: Host, port: int = 7000) -> subprocess.Popen[bytes]:
    proc = host.popen(sys.executable, "-c", ECHO, str(port), stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def ask(address: str, port: int = 7000, source: str = "", timeout: float = 0.3) -> bytes | None:
    """One datagram to the echo server; its answer, or None when none comes in `timeout` s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if source:
            sock.bind((source, 0))
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendto(sock, b"hi", (address, port))
            return await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout)
        except (TimeoutError, OSError):
            return None


async def test_a_host_is_reached_over_its_pair_and_everything_goes_at_close(tmp_path: Path) -> None:
    with Network() as net:
        remote = net.add_host("remote")
        other = net.add_host("other")
        assert (remote.ip, remote.server_ip) == ("198.18.0.2", "198.18.0.1")
        assert (other.ip, other.server_ip) == ("198.18.1.2", "198.18.1.1")
        assert remote.netns in names() and other.netns in names()
        routes = remote.run("ip", "route").stdout
        assert "default" not in routes and "198.18.0.0/24 dev eth0" in routes
        proc = echo(remote)
        assert await ask(remote.ip) == b"echo:hi from 198.18.0.1"
        # A script that execs inside the namespace sees the host's interfaces, not the test's.
        script = remote.wrapper(tmp_path / "ip-inside", "ip")
        inside = output(str(script), "-o", "-4", "addr")
        assert "198.18.0.2/24" in inside and "198.18.0.1" not in inside
        assert proc.pid in remote.pids()
    assert remote.netns not in names() and other.netns not in names()
    assert proc.wait(timeout=5) != 0, "closing killed the process left inside"
    stop(proc)
    assert remote.server_link not in output("ip", "link")


async def test_link_down_and_up(network: Network) -> None:
    remote = network.add_host("remote")
    proc = echo(remote)
    try:
        assert await ask(remote.ip) is not None
        for side in ("server", "host"):
            remote.set_link(up=False, side=side)  # type: ignore[arg-type]
            assert not remote.link_up(side)  # type: ignore[arg-type]
            assert await ask(remote.ip) is None
            remote.set_link(up=True, side=side)  # type: ignore[arg-type]
            assert remote.link_up(side)  # type: ignore[arg-type]
            await eventually(lambda: ask(remote.ip), timeout=10, what=f"the echo after {side} link up")
    finally:
        stop(proc)


async def test_address_change(network: Network) -> None:
    remote = network.add_host("remote")
    proc = echo(remote)
    try:
        remote.replace_address("198.18.0.3/24")
        assert remote.ip == "198.18.0.3"
        assert "198.18.0.2" not in remote.run("ip", "-4", "addr").stdout
        assert await ask("198.18.0.2") is None
        assert await ask("198.18.0.3") == b"echo:hi from 198.18.0.1"
        remote.replace_address("198.18.0.9/24", side="server")
        assert await ask("198.18.0.3") == b"echo:hi from 198.18.0.9"
        with pytest.raises(ValueError, match="is not in"):
            remote.replace_address("10.0.0.2/24")
    finally:
        stop(proc)


async def test_nft_rules_on_either_side(network: Network) -> None:
    remote = network.add_host("remote")
    proc = echo(remote)
    try:
        remote.nft("add rule {table} input udp dport 7000 drop")
        assert await ask(remote.ip) is None
        remote.nft("flush chain {table} input")
        assert await ask(remote.ip) is not None
        remote.nft("add rule {table} output ip daddr 198.18.0.2 udp dport 7000 drop", side="server")
        assert await ask(remote.ip) is None
        assert "confero_test" in output("nft", "list", "tables")
        with pytest.raises(NetnsError, match="nft"):
            remote.nft("add rule {table} input no such thing")
    finally:
        stop(proc)
    network.close()
    assert "confero_test" not in output("nft", "list", "tables")
