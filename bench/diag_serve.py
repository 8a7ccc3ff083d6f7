"""`confero serve` with instrumentation, for `bench/run.py --diagnose` (never for the headline run).

Runs the unchanged server (same CLI, same settings) and, every 5 s, writes to stderr:

* event-loop stalls: how late a 5 ms timer fired (max, count over 5/20/100 ms);
* garbage-collector pauses by generation (count, total and max ms), from `gc.callbacks`;
* the process's CPU time in that interval;
* with CONFERO_DIAG_SLOW=<seconds> in the environment: asyncio debug mode, so that every loop
  callback slower than that is logged with its name (debug mode itself costs CPU).

A stall that coincides with a GC pause points at the collector; one without points at a long
callback in the loop (an await-free stretch of Python), or at CPU starvation by other processes.

    python bench/diag_serve.py serve --host 127.0.0.1 --port 5080 ... (the `confero serve` flags)
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from confero import server as confero_server
from confero.cli import main

_gc_start = [0.0]
_gc = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}  # gen -> [count, total s, max s]


def _gc_callback(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        d = time.perf_counter() - _gc_start[0]
        entry = _gc[info.get("generation", 2)]
        entry[0] += 1
        entry[1] += d
        entry[2] = max(entry[2], d)


async def _monitor() -> None:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    last_report = time.monotonic()
    cpu0 = sum(os.times()[:2])
    while True:
        due = loop.time() + 0.005
        await asyncio.sleep(0.005)
        lags.append(max(0.0, loop.time() - due))
        now = time.monotonic()
        if now - last_report >= 5.0:
            cpu1 = sum(os.times()[:2])
            worst = max(lags) if lags else 0.0
            gcs = " ".join(f"gen{g}: {c} / {t * 1000:.1f} ms (max {m * 1000:.1f})" for g, (c, t, m) in _gc.items())
            print(
                f"diag: t={time.time():.1f} cpu {(cpu1 - cpu0) / (now - last_report) * 100:.1f} % | loop lag max {worst * 1000:.1f} ms, "
                f">5ms {sum(1 for x in lags if x > 0.005)}, >20ms {sum(1 for x in lags if x > 0.02)}, >100ms {sum(1 for x in lags if x > 0.1)} "
                f"of {len(lags)} | gc {gcs}",
                file=sys.stderr,
                flush=True,
            )
            for entry in _gc.values():
                entry[:] = [0, 0.0, 0.0]
            lags.clear()
            last_report = now
            cpu0 = cpu1


_original_serve = confero_server.serve


async def _serve(settings, ready=None):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    if os.environ.get("CONFERO_DIAG_SLOW"):
        # asyncio debug mode: every callback slower than this is logged ("Executing ... took ...").
        loop.set_debug(True)
        loop.slow_callback_duration = float(os.environ["CONFERO_DIAG_SLOW"])
    task = loop.create_task(_monitor())
    try:
        await _original_serve(settings, ready)
    finally:
        task.cancel()


if __name__ == "__main__":
    gc.callbacks.append(_gc_callback)
    confero_server.serve = _serve  # run() looks `serve` up at call time
    sys.exit(main())
