"""coturn (`turnserver`) for the TURN tests: started on 127.0.0.1 with a temporary config in
coturn's REST-credential mode (use-auth-secret), stopped by its own PID.

Loopback peers are refused by coturn unless `allow-loopback-peers`; its SQLite user database
and its pid and log files are kept under the test's tmp directory. With `tls=True` it also
listens for TURN over TLS (`turns:`) on `tls_port`, with a self-signed certificate for
127.0.0.1 made for the test (`cert_path`: what a client must trust).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from confero.tls import write_self_signed
from tests.support.waiting import eventually

TURNSERVER = shutil.which("turnserver")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@dataclass
class Coturn:
    directory: Path
    secret: str = "confero-turn-test-secret"
    realm: str = "confero.test"
    port: int = field(default_factory=free_port)
    relay_ports: tuple[int, int] = (49200, 49400)
    process: subprocess.Popen[bytes] | None = None
    #: TURN over TLS too (tls-listening-port), with a certificate made in `directory`.
    tls: bool = False
    tls_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        while self.tls_port == self.port:
            self.tls_port = free_port()

    @property
    def cert_path(self) -> Path:
        return self.directory / "turn-cert.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "turn-key.pem"

    @property
    def log_path(self) -> Path:
        return self.directory / "turn.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, transport: str = "udp") -> str:
        """turn: over "udp" or "tcp"; "tls" is turns: (TLS over TCP) on the TLS port."""
        if transport == "tls":
            assert self.tls, "coturn was started without its TLS listener"
            return f"turns:127.0.0.1:{self.tls_port}?transport=tcp"
        return f"turn:127.0.0.1:{self.port}?transport={transport}"

    def config(self) -> str:
        low, high = self.relay_ports
        tls = (
            [f"tls-listening-port={self.tls_port}", f"cert={self.cert_path}", f"pkey={self.key_path}"]
            if self.tls
            else ["no-tls"]
        )
        return "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={self.port}",
                f"min-port={low}",
                f"max-port={high}",
                "use-auth-secret",
                f"static-auth-secret={self.secret}",
                f"realm={self.realm}",
                *tls,
                "no-dtls",
                "no-cli",
                "allow-loopback-peers",
                f"userdb={self.directory / 'turndb'}",
                f"log-file={self.log_path}",
                "simple-log",
                f"pidfile={self.directory / 'turn.pid'}",
                "verbose",
                "",
            ]
        )

    def spawn(self) -> None:
        """Write the config and start turnserver (returns at once; see `start`)."""
        assert TURNSERVER, "coturn is not installed (apt-get install coturn)"
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.tls:
            write_self_signed(["127.0.0.1"], self.cert_path, self.key_path, days=1)
        conf = self.directory / "turnserver.conf"
        conf.write_text(self.config())
        self.process = subprocess.Popen(
            [TURNSERVER, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        """Start turnserver and wait until its UDP and TCP (and TLS) listeners are open."""
        self.spawn()
        # With TLS on, coturn names its TCP listeners "TLS/TCP" (it tells TLS from plain TCP
        # on every TCP port).
        await eventually(
            lambda: (
                f"UDP listener opened on: 127.0.0.1:{self.port}" in self.log()
                and f"TCP listener opened on : 127.0.0.1:{self.port}" in self.log()
                and (not self.tls or f"TLS/TCP listener opened on : 127.0.0.1:{self.tls_port}" in self.log())
            ),
            timeout=10,
            what="coturn to listen",
        )

    def stop(self) -> None:
        """Stop the turnserver this object started (its PID), idempotently."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
