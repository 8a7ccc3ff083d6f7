"""Network namespaces for tests: "remote hosts" wired to the test's own namespace by veth pairs.

The test run already lives in a private network namespace with only `lo` (tests/conftest.py);
`Network` adds named namespaces (`ip netns add`, unique names per run) and one veth pair to each:
the "server" end stays in the test's namespace, the host end is `eth0` inside the new one. Each
host gets its own /24 in 198.18.0.0/15 (server .1, host .2: 198.18.N.0/24 for the N-th host,
from 0, unless told otherwise), and there is no default route anywhere, so nothing can leave the pair.

    with Network() as net:
        remote = net.add_host("remote")              # server 198.18.0.1, remote 198.18.0.2
        remote.run("ping", "-c1", remote.server_ip)  # a command inside the namespace
        remote.wrapper(tmp_path / "chromium", "/usr/bin/chromium")  # an executable that runs there
        remote.set_link(up=False)                    # pull the cable (server end), then up=True
        remote.replace_address("198.18.0.3/24")      # the host's address changes
        remote.nft("add rule inet {table} input udp dport 5000 drop")  # a firewall rule there

Closing (also at exit, and on failure inside the `with`) kills what still runs in each namespace
(by PID: only the test started processes there), deletes the veth pairs and the namespaces, and
drops the nftables table the harness made in the test's own namespace.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

#: The benchmarking range (RFC 2544): never routed on the Internet; the harness uses nothing else.
TEST_RANGE = ipaddress.ip_network("198.18.0.0/15")
#: The nftables table (family inet) the harness adds its rules to, in each namespace it touches.
NFT_TABLE = "confero_test"

Side = Literal["host", "server"]


class NetnsError(RuntimeError):
    """An `ip` or `nft` command failed (its stderr is in the message)."""


def available() -> str | None:
    """None when namespaces can be made here, else why not (for a skip or failure message)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("/usr/sbin/ip", "/usr/sbin/nft"):
        if not (Path(tool).exists() or Path(tool.replace("/usr/sbin", "/sbin")).exists()):
            return f"{Path(tool).name} is not installed"
    return None


def _run(args: Sequence[str], check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def _in_range(interface: str) -> ipaddress.IPv4Interface:
    value = ipaddress.IPv4Interface(interface)
    if value.network.prefixlen < TEST_RANGE.prefixlen or not value.network.subnet_of(TEST_RANGE):  # type: ignore[arg-type]
        raise ValueError(f"{interface} is not in {TEST_RANGE}")
    return value


class Host:
    """One namespace and the veth pair to it. Made by `Network.add_host`."""

    def __init__(self, network: Network, label: str, netns: str, server_link: str, server: str, host: str) -> None:
        self.network = network
        self.label = label
        #: The namespace's name (for `ip netns exec NAME`).
        self.netns = netns
        #: The veth end in the test's namespace, and the one inside the host's (always eth0).
        self.server_link = server_link
        self.host_link = "eth0"
        self.server_address = _in_range(server)
        self.address = _in_range(host)
        self._table_made = False

    @property
    def ip(self) -> str:
        """The host's address (no prefix), as the server sees it."""
        return str(self.address.ip)

    @property
    def server_ip(self) -> str:
        """The server end's address (no prefix), as the host reaches it."""
        return str(self.server_address.ip)

    # -- commands inside ----------------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        """`args` as a command line that runs inside the namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside and wait for it (stdout/stderr captured as text)."""
        return _run(self.command(*args), check=check, timeout=timeout)

    def popen(self, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a command inside; closing the network kills it if it still runs."""
        return subprocess.Popen(self.command(*args), **kwargs)  # type: ignore[call-overload, no-any-return]

    def wrapper(self, path: Path, program: str) -> Path:
        """Write an executable script at `path` that runs `program` (with its arguments) inside.

        It execs, so the program keeps the caller's file descriptors: a launcher that talks to it
        over a pipe (Playwright's `executable_path`) drives it as if it ran here.
        """
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.netns} {program} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    def pids(self) -> list[int]:
        """The processes running inside the namespace."""
        out = _run(["ip", "netns", "pids", self.netns], check=False).stdout
        return [int(word) for word in out.split()]

    # -- the link -----------------------------------------------------------------------------

    def set_link(self, up: bool, side: Side = "server") -> None:
        """Set one end of the veth pair down or up (either end down cuts the pair)."""
        state = "up" if up else "down"
        if side == "server":
            _run(["ip", "link", "set", "dev", self.server_link, state])
        else:
            self.run("ip", "link", "set", "dev", self.host_link, state)

    def link_up(self, side: Side = "server") -> bool:
        """Whether that end is administratively up."""
        args = ["ip", "-o", "link", "show", "dev"]
        out = _run([*args, self.server_link]).stdout if side == "server" else self.run(*args, self.host_link).stdout
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",")
        return "UP" in flags

    def replace_address(self, new: str, side: Side = "host") -> None:
        """Replace that end's address (with prefix, in 198.18.0.0/15) by `new`."""
        value = _in_range(new)
        old = self.address if side == "host" else self.server_address
        if side == "host":
            self.run("ip", "addr", "add", str(value), "dev", self.host_link)
            self.run("ip", "addr", "del", str(old), "dev", self.host_link)
            self.address = value
        else:
            _run(["ip", "addr", "add", str(value), "dev", self.server_link])
            _run(["ip", "addr", "del", str(old), "dev", self.server_link])
            self.server_address = value

    def add_address(self, extra: str, side: Side = "host") -> None:
        """Add a second address to that end (kept until the network closes)."""
        value = _in_range(extra)
        if side == "host":
            self.run("ip", "addr", "add", str(value), "dev", self.host_link)
        else:
            _run(["ip", "addr", "add", str(value), "dev", self.server_link])

    # -- nftables -----------------------------------------------------------------------------

    def nft(self, rule: str, side: Side = "host") -> None:
        """Run one nft command inside the host (`side="host"`) or in the test's namespace.

        `{table}` in `rule` names the harness's table (`inet confero_test`), made on first use with
        `input`, `output` and `forward` filter chains (policy accept), so
        `add rule {table} input udp dport 5000 drop` is a whole rule.
        """
        if side == "server":
            self.network._ensure_table()
        elif not self._table_made:
            for line in _table_commands():
                self.run("nft", line)
            self._table_made = True
        command = rule.format(table=f"inet {NFT_TABLE}")
        if side == "server":
            _run(["nft", command])
        else:
            self.run("nft", command)

    def __repr__(self) -> str:
        return f"Host({self.label!r}, netns={self.netns!r}, {self.address} <-> {self.server_address})"


def _table_commands() -> list[str]:
    table = f"inet {NFT_TABLE}"
    commands = [f"add table {table}"]
    for chain in ("input", "output", "forward"):
        commands.append(f"add chain {table} {chain} {{ type filter hook {chain} priority 0; policy accept; }}")
    return commands


class Network:
    """The namespaces of one test (a context manager); `add_host` adds one."""

    def __init__(self, prefix: str = "confero") -> None:
        reason = available()
        if reason is not None:
            raise NetnsError(reason)
        self.run_id = secrets.token_hex(3)
        self.prefix = prefix
        self.hosts: list[Host] = []
        self._table_made = False
        self._closed = False
        atexit.register(self.close)

    def add_host(self, label: str, server: str | None = None, host: str | None = None) -> Host:
        """A new namespace `label` with a veth pair to the test's namespace, both ends up.

        `server` and `host` are the two ends' addresses with their prefix (default: the N-th host,
        from 0, gets 198.18.N.1/24 and 198.18.N.2/24). The host's `lo` is up; no route beyond the pair.
        """
        if self._closed:
            raise NetnsError("the network is closed")
        index = len(self.hosts)
        if index > 255 and (server is None or host is None):
            raise ValueError("give the addresses of hosts beyond the 256th")
        server = server or f"198.18.{index}.1/24"
        host = host or f"198.18.{index}.2/24"
        _in_range(server), _in_range(host)
        netns = f"{self.prefix}-{self.run_id}-{label}"
        server_link = f"cf{self.run_id}s{index}"  # at most 15 characters (IFNAMSIZ)
        _run(["ip", "netns", "add", netns])
        entry = Host(self, label, netns, server_link, server, host)
        self.hosts.append(entry)  # from here, close() removes it whatever fails next
        _run(["ip", "link", "add", server_link, "type", "veth", "peer", "name", "eth0", "netns", netns])
        # An address change adds the new address, then deletes the old: keep the new one then
        # (without promote_secondaries, deleting a subnet's primary address deletes the rest).
        Path(f"/proc/sys/net/ipv4/conf/{server_link}/promote_secondaries").write_text("1")
        entry.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/promote_secondaries")
        _run(["ip", "addr", "add", server, "dev", server_link])
        _run(["ip", "link", "set", "dev", server_link, "up"])
        entry.run("ip", "link", "set", "dev", "lo", "up")
        entry.run("ip", "addr", "add", host, "dev", "eth0")
        entry.run("ip", "link", "set", "dev", "eth0", "up")
        return entry

    def _ensure_table(self) -> None:
        if not self._table_made:
            for line in _table_commands():
                _run(["nft", line])
            self._table_made = True

    def close(self) -> None:
        """Kill what runs in the namespaces, delete the pairs, the namespaces and the nft table."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        for entry in reversed(self.hosts):
            _stop_all(entry)
            _run(["ip", "link", "del", "dev", entry.server_link], check=False)
            result = _run(["ip", "netns", "del", entry.netns], check=False)
            if result.returncode != 0:
                errors.append(f"{entry.netns}: {result.stderr.strip()}")
        if self._table_made:
            _run(["nft", "delete", "table", f"inet {NFT_TABLE}"], check=False)
        if errors:
            raise NetnsError("; ".join(errors))

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _stop_all(entry: Host, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, to every process left inside `entry`."""
    pids = entry.pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)  # a teardown wait on processes, not a test condition
        pids = entry.pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
