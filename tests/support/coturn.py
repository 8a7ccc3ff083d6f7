"""coturn (`turnserver`) for the TURN tests: started on 127.0.0.1 with a temporary config in
coturn's REST-credential mode (use-auth-secret), stopped by its own PID.

Loopback peers are refused by coturn unless `allow-loopback-peers`; its SQLite user database
and its pid and log files are kept under the test's tmp directory.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def log_path(self) -> Path:
        return self.directory / "turn.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, transport: str = "udp") -> str:
        return f"turn:127.0.0.1:{self.port}?transport={transport}"

    def config(self) -> str:
        low, high = self.relay_ports
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
                "no-tls",
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
        conf = self.directory / "turnserver.conf"
        conf.write_text(self.config())
        self.process = subprocess.Popen(
            [TURNSERVER, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        """Start turnserver and wait until its UDP and TCP listeners are open."""
        self.spawn()
        await eventually(
            lambda: (
                f"UDP listener opened on: 127.0.0.1:{self.port}" in self.log()
                and f"TCP listener opened on : 127.0.0.1:{self.port}" in self.log()
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
