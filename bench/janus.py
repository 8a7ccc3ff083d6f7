"""Janus (Debian's `janus` package) on loopback, for side-by-side runs with Confero.

A private configuration folder is generated for each run (nothing under /etc/janus is read or
changed); only the VideoRoom plugin and the plain-HTTP transport are loaded:

* HTTP API on 127.0.0.1:<port> only (no HTTPS, no admin API, no WebSockets);
* ICE gathers on 127.0.0.1 only: `ice_enforce_list = "lo"`, plus bench/janus_loopback.c
  (LD_PRELOAD, built here with `cc`) because Janus skips interfaces flagged IFF_LOOPBACK when
  it lists local addresses -- without it libnice falls back to the machine's other interfaces.
  No STUN/TURN, mDNS candidates ignored, media ports from a fixed range;
* everything else is Janus's default (a thread per handle, `session_timeout` 60 s, NACK queue).

    server = JanusServer(workdir, port=free_port(), rtp_ports=(20000, 20999))
    server.start()          # waits until GET /janus/info answers
    ...
    server.stop()           # SIGTERM to this PID, SIGKILL after a timeout

Install: `apt-get install -y janus gcc libc6-dev` (Debian 12: Janus 1.1.2; the C compiler builds
the loopback shim).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

JANUS_BIN = "janus"
LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu/janus",
    "/usr/lib/aarch64-linux-gnu/janus",
    "/usr/lib/janus",
    "/usr/local/lib/janus",
)


def janus_binary() -> str | None:
    return shutil.which(JANUS_BIN)


def janus_libdir() -> Path | None:
    for d in LIB_DIRS:
        if (Path(d) / "plugins" / "libjanus_videoroom.so").exists():
            return Path(d)
    return None


def build_loopback_shim(workdir: Path) -> Path:
    """Compile bench/janus_loopback.c into workdir; raises RuntimeError without a C compiler."""
    source = Path(__file__).resolve().parent / "janus_loopback.c"
    out = Path(workdir) / "janus_loopback.so"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (apt-get install -y gcc libc6-dev) to build the Janus loopback shim")
    result = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(source), "-ldl"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building the Janus loopback shim failed: {result.stderr.strip()[:500]}")
    return out


def janus_version() -> str | None:
    binary = janus_binary()
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Janus version"):
            # "Janus version: 1102 (1.1.2)"
            return line.split("(", 1)[-1].rstrip(")").strip() if "(" in line else line.split(":", 1)[1].strip()
    return out.strip().splitlines()[0] if out.strip() else None


class JanusServer:
    """One Janus process with a generated loopback-only configuration."""

    def __init__(self, workdir: Path, *, port: int, rtp_ports: tuple[int, int], debug_level: int = 3) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.rtp_ports = rtp_ports
        self.debug_level = debug_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "janus.log"
        self._log: Any = None
        self.command: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def configure(self) -> Path:
        libdir = janus_libdir()
        if libdir is None:
            raise RuntimeError("Janus's VideoRoom plugin was not found (apt-get install -y janus)")
        conf = self.workdir / "conf"
        for sub in ("conf", "plugins", "transports", "events", "loggers"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        links = {
            self.workdir / "plugins" / "libjanus_videoroom.so": libdir / "plugins" / "libjanus_videoroom.so",
            self.workdir / "transports" / "libjanus_http.so": libdir / "transports" / "libjanus_http.so",
        }
        for link, target in links.items():
            if not link.exists():
                link.symlink_to(target)
        w = self.workdir
        (conf / "janus.jcfg").write_text(
            f"""general: {{
	configs_folder = "{conf}"
	plugins_folder = "{w / "plugins"}"
	transports_folder = "{w / "transports"}"
	events_folder = "{w / "events"}"
	loggers_folder = "{w / "loggers"}"
	debug_level = {self.debug_level}
	server_name = "janus-bench-loopback"
	session_timeout = 60
}}
certificates: {{
}}
media: {{
	rtp_port_range = "{self.rtp_ports[0]}-{self.rtp_ports[1]}"
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "lo"
	ignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
}}
"""
        )
        (conf / "janus.transport.http.jcfg").write_text(
            f"""general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {self.port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
cors: {{
}}
"""
        )
        # No static rooms: the load generator creates one room per benchmark room.
        (conf / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
        return conf

    def start(self, timeout: float = 20.0) -> None:
        binary = janus_binary()
        if binary is None:
            raise RuntimeError("janus is not installed (apt-get install -y janus)")
        conf = self.configure()
        shim = build_loopback_shim(self.workdir)
        env = dict(os.environ)
        env["LD_PRELOAD"] = str(shim)
        self.command = [binary, "-F", str(conf), "-C", str(conf / "janus.jcfg"), "-i", "127.0.0.1", "-o", "-D"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (lives as long as the process; closed in stop())
        self.proc = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"janus exited with {self.proc.returncode}; see {self.log_path}")
            try:
                info = self.info()
                if "janus.plugin.videoroom" in info.get("plugins", {}):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"janus did not answer on {self.url}/info within {timeout}s")

    def info(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/info", timeout=2) as response:
            return json.loads(response.read())

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to exactly this PID (a process we started), then SIGKILL."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
