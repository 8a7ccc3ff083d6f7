"""The layering rules hold: checked by import-linter, and aiortc internals stay in one module."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "confero"

# Private aiortc/aioice attributes Confero relies on; only aiortc_hooks.py may name them.
PRIVATE = re.compile(
    r"\._(codecs|headerExtensions|nominated|connection|tx_srtp|rx_srtp|handle_rtp_data|handle_rtcp_data"
    r"|RTCRtpSender__\w+|RTCRtpReceiver__\w+|ssrc|rtx_ssrc|protocols|remote_candidates)\b"
)


def test_import_layers() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_aiortc_internals_only_in_the_hooks_module() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "aiortc_hooks.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_camel_case_wire_names_only_in_schema_modules() -> None:
    wire = re.compile(r"""["'](streamId|takeConfiguration|idMapping|ATTR_ROOM_NAME|webRTCViewerCount)["']""")
    allowed = {"messages.py", "schemas.py", "handlers.py", "jwt.py"}  # jwt.py: Ant Media's claim names
    offenders = [
        str(p.relative_to(ROOT)) for p in SRC.rglob("*.py") if p.name not in allowed and wire.search(p.read_text())
    ]
    assert not offenders, offenders
