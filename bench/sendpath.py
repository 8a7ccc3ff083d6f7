"""The kernel's cost per forwarded copy on loopback: sendto vs sendmmsg vs UDP GSO.

    python bench/sendpath.py              # bursts 1, 2, 4, 8, 16; three rounds; ~30 s
    python bench/sendpath.py --rounds 1   # quicker

Compiles bench/sendpath.c with the system's C compiler into a temporary folder and runs it for
each mode and burst size (a burst: datagrams to one subscriber socket in one loop iteration),
interleaving the modes so that a noisy moment hits all of them. Prints the median CPU µs per
datagram and the ratio to one sendto() per datagram. This is why the compiled fan-out batches
a subscriber's copies into UDP GSO sends and does not use sendmmsg.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MODES = ("sendto", "sendmmsg", "gso")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", default="1,2,4,8,16")
    parser.add_argument("--size", type=int, default=1200, help="datagram bytes (default 1200)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    bursts = [int(b) for b in args.bursts.split(",")]
    if not 1 <= args.rounds <= 10 or any(not 1 <= b <= 64 for b in bursts):
        parser.error("rounds 1-10, bursts 1-64")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        print("no C compiler (apt-get install gcc libc6-dev)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "sendpath"
        subprocess.run([compiler, "-O2", "-o", str(binary), str(BENCH / "sendpath.c")], check=True)
        results: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for burst in bursts:
                for mode in MODES:
                    out = subprocess.run(
                        [str(binary), mode, str(burst), str(args.size)],
                        capture_output=True, text=True, timeout=120, check=False,
                    )  # fmt: skip
                    if out.returncode != 0:
                        print(f"{mode} {burst}: {out.stderr.strip()}", file=sys.stderr)
                        continue
                    results.setdefault((mode, burst), []).append(float(out.stdout.split()[3]))
    print(f"CPU µs per {args.size}-byte datagram on loopback (sender side, which on loopback also delivers")
    print(f"into the receiver's socket), median of {args.rounds}; ratio to one sendto() per datagram")
    print()
    print("| burst | sendto | sendmmsg | UDP GSO | sendmmsg/sendto | GSO/sendto |")
    print("|---|---|---|---|---|---|")
    for burst in bursts:
        med = {m: statistics.median(results[(m, burst)]) if results.get((m, burst)) else None for m in MODES}
        base = med["sendto"]

        def cell(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        def rel(v: float | None, base: float = base) -> str:
            return "-" if v is None or not base else f"{v / base:.2f}"

        print(
            f"| {burst} | {cell(base)} | {cell(med['sendmmsg'])} | {cell(med['gso'])} | "
            f"{rel(med['sendmmsg'])} | {rel(med['gso'])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
