"""The `tianwang simulate KIND` contract, shared by every simulator: the first stdout line is one
JSON object describing the simulator (at least `kind` and `url`), counters go to stderr every
`--stats-interval` seconds, SIGTERM/SIGINT stop it, and the last stdout line is `{"final": counters}`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Callable


async def serve(sim, describe: Callable[[], dict], stats_interval: float, describe_first: bool = False) -> dict:
    """Start `sim` (an object with async start()/stop() and stats()), print `describe()` as the first
    line (before starting when `describe_first`: a client fleet names its target before it connects),
    run until SIGTERM/SIGINT, stop it and return its final counters."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def announce():
        sys.stdout.write(json.dumps(describe()) + "\n")
        sys.stdout.flush()

    if describe_first:
        announce()
    await sim.start()
    try:
        if not describe_first:
            announce()
        wait = stats_interval if stats_interval > 0 else None
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                sys.stderr.write(json.dumps(sim.stats()) + "\n")
                sys.stderr.flush()
    finally:
        await sim.stop()
    return sim.stats()


def run(name: str, main_coro) -> int:
    """Run a simulator's coroutine on uvloop; print the final counters; return the exit code."""
    import uvloop

    try:
        stats = uvloop.run(main_coro)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"tianwang simulate {name}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps({"final": stats}) + "\n")
    sys.stdout.flush()
    return 0
