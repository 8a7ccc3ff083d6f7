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
