"""The benchmark harness must not rot: CI runs its smoke version (seconds, both servers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke_forwards_media(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--json", str(tmp_path / "smoke.json")]
    if shutil.which("janus") is None:
        command.append("--confero-only")  # Janus comes from Debian's `janus` package (.ci/run installs it)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "smoke.json").exists()


def test_sendpath_benchmark_runs(tmp_path: Path) -> None:
    """bench/sendpath.py (why the fan-out sends UDP GSO runs) compiles and measures all three modes."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise AssertionError("no C compiler: .ci/run installs gcc")
    command = [sys.executable, str(ROOT / "bench" / "sendpath.py"), "--rounds", "1", "--bursts", "1,4"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 4 |")]
    assert len(rows) == 2 and "-" not in rows[1].replace("| 4 |", ""), result.stdout
