"""`confero serve` as a real process: clean shutdown on SIGTERM/SIGINT, and flag errors
(the drain on SIGTERM: test_drain.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from confero import __version__
from tests.support import eventually
from tests.support.clients import Clients

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def confero(*args: str) -> list[str]:
    return [sys.executable, "-m", "confero", *args]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFERO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


async def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 15.0) -> None:
    async def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"confero exited early with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await eventually(listening, timeout=timeout, what=f"confero to listen on {port}", interval=0.1)


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None if the process is still running after `timeout` seconds."""
    with contextlib.suppress(AssertionError):
        await eventually(lambda: proc.poll() is not None, timeout=timeout, what="confero to exit", interval=0.05)
    return proc.poll()


def start_confero(port: int, data_dir: Path, log_path: Path, cwd: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`confero serve` on 127.0.0.1:`port` (ICE on loopback), output to `log_path`; `extra` flags."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            confero(
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--ice-address",
                "127.0.0.1",
                "--log-level",
                "INFO",
                *extra,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            cwd=cwd,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("sig", "flags"),
    [(signal.SIGTERM, ("--drain-timeout", "0")), (signal.SIGINT, ())],
    ids=["SIGTERM-no-drain", "SIGINT"],
)
async def test_signal_shuts_down_cleanly(tmp_path: Path, sig: signal.Signals, flags: tuple[str, ...]) -> None:
    """SIGINT, and SIGTERM with `drain_timeout` 0, close at once (SIGTERM drains by default)."""
    port = free_port()
    data_dir = tmp_path / "data"
    log_path = tmp_path / "confero.log"
    proc = start_confero(port, data_dir, log_path, tmp_path, *flags)
    try:
        async with Clients(port) as clients:
            await wait_listening(proc, port)
            pub_sock = await clients.socket()
            play_sock = await clients.socket()
            publisher = clients.publisher(pub_sock, "shutdown1", codec="VP8")
            player = clients.player(play_sock, "shutdown1")
            await publisher.start(timeout=15)
            await pub_sock.wait_for("notification", "publish_started", stream_id="shutdown1", timeout=15)
            await player.start(timeout=15)
            await play_sock.wait_for("notification", "play_started", stream_id="shutdown1", timeout=15)
            await player.wait_frames(5, timeout=20)

            proc.send_signal(sig)

            # Each client hears its stream end, then the server closes the socket.
            await pub_sock.wait_for("notification", "publish_finished", stream_id="shutdown1", timeout=10)
            await play_sock.wait_for("notification", "play_finished", stream_id="shutdown1", timeout=10)
            await asyncio.wait_for(pub_sock.closed.wait(), 10)
            await asyncio.wait_for(play_sock.closed.wait(), 10)
            for sock, definition in ((pub_sock, "publish_finished"), (play_sock, "play_finished")):
                assert len(sock.find("notification", definition, stream_id="shutdown1")) == 1

            code = await wait_exit(proc, 10)
            output = log_path.read_text(errors="replace")
            assert code == 0, f"exit code {code}; output:\n{output}"
            assert "Traceback" not in output, output
            assert (data_dir / "confero.db").is_file()
    finally:
        stop_process(proc)


def test_bad_port_range_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        confero("serve", "--udp-port-range", "nonsense", "--data-dir", str(tmp_path / "d")),
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc
    assert "udp_port_range" in proc.stderr
    assert "nonsense" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_bad_flag_value_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        confero("serve", "--port", "http"), capture_output=True, text=True, timeout=30, env=child_env(), cwd=tmp_path
    )
    assert proc.returncode == 2, proc
    assert "port" in proc.stderr and "http" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version(tmp_path: Path) -> None:
    proc = subprocess.run(
        confero("--version"), capture_output=True, text=True, timeout=30, env=child_env(), cwd=tmp_path
    )
    assert proc.returncode == 0, proc
    assert proc.stdout.strip() == f"confero {__version__}"


def test_console_script_version() -> None:
    script = Path(sys.executable).with_name("confero")
    if not script.exists():
        pytest.skip("no confero console script next to the interpreter")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30, env=child_env())
    assert proc.returncode == 0, proc
    assert __version__ in proc.stdout
