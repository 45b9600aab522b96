"""The `tianwang simulate KIND` contract, shared by every simulator: the first stdout line is one
JSON object describing the simulator (at least `kind` and `url`), counters go to stderr every
`--stats-interval` seconds, SIGTERM/SIGINT stop it, and the last stdout line is `{"final": counters}`.

Connection events the user should know about (the gateway closed a terminal's connection, refused a
registration, a gateway connected to or left a simulated server) go to stderr as they happen, one
line each, as `simulate KIND: ...`; past 10 lines in a second the rest of that second is counted
and summed up in one line, so a fleet of thousands dropped at once does not flood the terminal.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TextIO


class Simulator(Protocol):
    """What `serve` runs: started and stopped once, asked for its counters."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class EventPrinter:
    """`sim.notify(text)`: one stderr line per connection event, at most `per_s` lines a second;
    the ones past that are counted and reported in one line when the second is over."""

    def __init__(
        self, kind: str, per_s: int = 10, out: TextIO | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        import time

        self.kind = kind
        self.per_s = per_s
        self.out = out
        self.clock = clock or time.monotonic
        self._window = 0.0
        self._printed = 0
        self._held = 0

    def _write(self, line: str) -> None:
        out = self.out or sys.stderr
        out.write(f"simulate {self.kind}: {line}\n")
        out.flush()

    def flush(self) -> None:
        if self._held:
            self._write(f"... and {self._held} more connection event(s) in that second")
            self._held = 0

    def tick(self) -> None:
        """Report held-back events once their second is over."""
        if self._held and self.clock() - self._window >= 1.0:
            self.flush()

    def __call__(self, text: str) -> None:
        now = self.clock()
        if now - self._window >= 1.0:
            self.flush()
            self._window, self._printed = now, 0
        if self._printed < self.per_s:
            self._printed += 1
            self._write(text)
        else:
            self._held += 1


async def serve(
    sim: Simulator, describe: Callable[[], dict[str, Any]], stats_interval: float, describe_first: bool = False
) -> dict[str, Any]:
    """Start `sim` (an object with async start()/stop() and stats()), print `describe()` as the first
    line (before starting when `describe_first`: a client fleet names its target before it connects),
    run until SIGTERM/SIGINT, stop it and return its final counters."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # simulators that report connection events have a `notify` attribute (None until set here)
    printer = EventPrinter("simulator") if hasattr(sim, "notify") else None
    if printer is not None:
        sim.notify = printer  # type: ignore[attr-defined]  # checked by hasattr above

    def announce() -> None:
        info = describe()
        if printer is not None:
            printer.kind = str(info.get("kind", printer.kind))
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    if describe_first:
        announce()
    await sim.start()
    try:
        if not describe_first:
            announce()
        loop_t = loop.time
        next_stats = loop_t() + stats_interval if stats_interval > 0 else None
        while not stop.is_set():
            # wake once a second when events may be held back, to report them
            waits = [next_stats - loop_t()] if next_stats is not None else []
            if printer is not None:
                waits.append(1.0)
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, min(waits)) if waits else None)
            except TimeoutError:
                pass
            if printer is not None:
                printer.tick()
            if next_stats is not None and loop_t() >= next_stats:
                next_stats += stats_interval
                sys.stderr.write(json.dumps(sim.stats()) + "\n")
                sys.stderr.flush()
    finally:
        await sim.stop()
        if printer is not None:
            printer.flush()
    return sim.stats()


def run(name: str, main_coro: Coroutine[Any, Any, dict[str, Any]]) -> int:
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
