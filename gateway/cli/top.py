"""The `tianwang top` view, also the live view of `tianwang run --demo`: envelope rates per family and
per device (the busiest ones), device states, subscribers with their lag in seq, drops by reason (the
demo's deliberate noise apart), and the newest envelope of each channel.

`TopView.frame()` turns a Stats message, the device list and the newest envelopes into a `Frame`.
`plain()` writes a frame as lines (stdout not a terminal, `top --once`); `renderable()` builds rich
tables that `LiveScreen` redraws in place on a terminal. `Keys` reads `q` from a terminal in cbreak
mode and puts the terminal back as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.live import Live

BUSIEST = 8  # devices in the "busiest devices" section
NOT_ONLINE = 15  # devices listed in "not online"
LATEST = 12  # channels in "latest"
# a device label (config `labels`, shown in ListDevices info) saying that the device's simulator
# sends bad frames on purpose: its drops are listed apart as the demo's deliberate noise
NOISE_LABEL = "demo_noise"
NOISE_HEADING = "drops (demo noise, deliberate)"


@dataclasses.dataclass
class Frame:
    title: str
    summary: str
    hints: list[str]
    families: list[tuple[str, int, int, float, str]]  # family, devices, envelopes, rate/s, states
    device_count: int
    busiest: list[tuple[str, str, str, int, float]]  # id, family, state, envelopes, rate/s
    not_online: list[tuple[str, str, str]]  # id, state, reason
    subscribers: list[tuple[str, str, str, int, int, float]]  # peer, token, topics, lag, delivered, rate/s
    drops: list[tuple[str, int]]  # "driver/reason", frames (the deliberate noise taken out)
    noise: list[tuple[str, int, str]]  # "driver/reason", frames, which devices (demo noise, deliberate)
    noise_why: list[str]  # "device: what its label says"
    latest: list[tuple[int, str, str]]  # seq, topic, payload as JSON


def _rate(now_value: int, before: int | None, dt: float) -> float:
    if before is None or dt <= 0:
        return 0.0
    return max(0, now_value - before) / dt


class TopView:
    """Keeps the previous sample's counters, so each frame shows rates over the last interval."""

    def __init__(self, busiest: int = BUSIEST):
        self.busiest = busiest
        self._prev_t: float | None = None
        self._families: dict[str, int] = {}
        self._devices: dict[str, int] = {}
        self._subscribers: dict[tuple[str, int], int] = {}
        self._delivered: int | None = None

    def frame(self, stats, devices, now: float, latest: dict | None = None, hints=()) -> Frame:
        """`stats`: a Stats message; `devices`: Device messages; `now`: time.monotonic();
        `latest`: channel_key -> Envelope; `hints`: lines shown under the title (the demo's)."""
        dt = (now - self._prev_t) if self._prev_t is not None else 0.0
        up = max(0, time.time_ns() - stats.started_ns) / 1e9 if stats.started_ns else 0
        health = "" if stats.health in ("", "SERVING") else f"  {stats.health}: {stats.health_reason}"
        title = (
            f"tianwang {stats.gateway} {stats.version}  hot path: {'cext' if stats.using_cext else 'python'}  "
            f"up {up:,.0f}s  seq {stats.first_seq:,}..{stats.last_seq:,}  "
            f"journal {stats.journal_bytes / 1048576:,.1f}/{stats.journal_max_bytes / 1048576:,.0f} MiB{health}"
        )
        delivered = stats.counters.get("envelopes_delivered", 0)
        summary = (
            f"subscribers {stats.subscribers}  delivered {delivered:,} ({_rate(delivered, self._delivered, dt):,.0f}/s)  "
            f"gaps {stats.counters.get('gaps_sent', 0):,}  dropped frames {stats.counters.get('frames_dropped', 0):,}  "
            f"commands {stats.counters.get('commands', 0):,}"
        )
        self._delivered = delivered

        families = []
        for fam in stats.families:
            rate = _rate(fam.envelopes, self._families.get(fam.family), dt)
            states = " ".join(f"{k}={v}" for k, v in sorted(fam.states.items()))
            families.append((fam.family, fam.devices, fam.envelopes, rate, states))
            self._families[fam.family] = fam.envelopes

        rows = []
        seen = {}
        for d in devices:
            n = d.counters.get("envelopes", 0)
            rows.append((d.id, d.family, d.state, n, _rate(n, self._devices.get(d.id), dt)))
            seen[d.id] = n
        self._devices = seen
        rows.sort(key=lambda r: (-r[4], -r[3], r[0]))
        not_online = sorted(((d.id, d.state, d.reason) for d in devices if d.state != "ONLINE"), key=lambda r: r[0])

        subscribers = []
        subs_seen = {}
        for s in sorted(stats.subscriber_stats, key=lambda s: (s.started_ns, s.peer)):
            key = (s.peer, s.started_ns)
            subscribers.append(
                (
                    s.peer,
                    s.principal,
                    ",".join(s.topics),
                    s.lag,
                    s.delivered,
                    _rate(s.delivered, self._subscribers.get(key), dt),
                )
            )
            subs_seen[key] = s.delivered
        self._subscribers = subs_seen

        drops, noise, why = _split_drops(stats, devices)
        latest_rows = []
        latest = latest or {}
        for key in sorted(latest)[:LATEST]:
            env = latest[key]
            latest_rows.append((env.seq, env.topic, payload_text(env.payload)))
        self._prev_t = now
        return Frame(
            title=title,
            summary=summary,
            hints=list(hints),
            families=families,
            device_count=len(devices),
            busiest=rows[: self.busiest],
            not_online=not_online,
            subscribers=subscribers,
            drops=drops,
            noise=noise,
            noise_why=why,
            latest=latest_rows,
        )


def _split_drops(stats, devices):
    """Stats.drops by driver and reason, with the frames of devices labelled `demo_noise` (the
    demo's receiver that sends bad frames on purpose) taken out and listed apart."""
    reasons: dict[str, set[str]] = {}
    for d in stats.drops:
        reasons.setdefault(d.driver, set()).add(d.reason)
    deliberate: dict[tuple[str, str], int] = {}
    who: dict[tuple[str, str], list[str]] = {}
    why = []
    for dev in devices:
        label = dev.info.get(NOISE_LABEL)
        if label is None:
            continue
        why.append(f"{dev.id}: {label}")
        for reason in reasons.get(dev.driver, ()):
            n = dev.counters.get(f"dropped_{reason}", 0)
            if n:
                key = (dev.driver, reason)
                deliberate[key] = deliberate.get(key, 0) + n
                who.setdefault(key, []).append(dev.id)
    drops, noise = [], []
    for d in sorted(stats.drops, key=lambda d: (d.driver, d.reason)):
        key = (d.driver, d.reason)
        mine = min(d.frames, deliberate.get(key, 0))
        if d.frames - mine:
            drops.append((f"{d.driver}/{d.reason}", d.frames - mine))
        if mine:
            noise.append((f"{d.driver}/{d.reason}", mine, ", ".join(sorted(who[key]))))
    return drops, noise, sorted(why)


def payload_text(payload: bytes) -> str:
    from tianwang.v1.client import unpack

    return json.dumps(
        unpack(payload), default=lambda o: o.hex() if isinstance(o, bytes) else str(o), ensure_ascii=False
    )


def channel_key(topic: str) -> str:
    """`gnss/bd-1/fix` -> `gnss/fix`: the latest envelope is kept per family and channel."""
    parts = topic.split("/", 2)
    return f"{parts[0]}/{parts[-1]}" if len(parts) == 3 else topic


# -- plain lines -------------------------------------------------------------------------------
def plain(frame: Frame) -> str:
    """The frame as plain lines (no ANSI): what `top` writes when stdout is not a terminal."""
    lines = [frame.title, *frame.hints, frame.summary, ""]
    lines.append(f"{'FAMILY':<10}{'DEVICES':>8}{'ENVELOPES':>14}{'RATE/S':>10}  STATES")
    for family, devices, envelopes, rate, states in frame.families:
        lines.append(f"{family:<10}{devices:>8}{envelopes:>14,}{rate:>10,.0f}  {states}")
    lines += ["", f"busiest devices ({len(frame.busiest)} of {frame.device_count}):"]
    lines.append(f"  {'DEVICE':<20} {'FAMILY':<8} {'STATE':<11}{'ENVELOPES':>12}{'RATE/S':>9}")
    for dev_id, family, state, envelopes, rate in frame.busiest:
        lines.append(f"  {dev_id:<20} {family:<8} {state:<11}{envelopes:>12,}{rate:>9,.1f}")
    if frame.not_online:
        lines += ["", "not online:"]
        for dev_id, state, reason in frame.not_online[:NOT_ONLINE]:
            lines.append(f"  {dev_id:<20} {state:<11} {reason}")
        if len(frame.not_online) > NOT_ONLINE:
            lines.append(f"  ... and {len(frame.not_online) - NOT_ONLINE} more")
    lines += ["", f"subscribers ({len(frame.subscribers)}):"]
    if frame.subscribers:
        lines.append(f"  {'PEER':<24} {'TOKEN':<14}{'LAG(SEQ)':>10}{'DELIVERED':>12}{'RATE/S':>9}  TOPICS")
        for peer, token, topics, lag, delivered, rate in frame.subscribers:
            lines.append(f"  {peer:<24} {token:<14}{lag:>10,}{delivered:>12,}{rate:>9,.0f}  {topics}")
    else:
        lines.append("  none")
    lines += ["", "drops by reason (frames):"]
    lines += [f"  {reason:<28}{n:>10,}" for reason, n in frame.drops] or ["  none"]
    if frame.noise or frame.noise_why:
        lines += ["", f"{NOISE_HEADING}:"]
        lines += [f"  {reason:<28}{n:>10,}  from {who}" for reason, n, who in frame.noise] or ["  none yet"]
        lines += [f"  ({why})" for why in frame.noise_why]
    lines += ["", "latest:"]
    for seq, topic, payload in frame.latest:
        lines.append(f"  {seq:>9} {topic:<40} {payload[:110]}")
    if not frame.latest:
        lines.append("  nothing yet")
    return "\n".join(lines)


# -- rich --------------------------------------------------------------------------------------
WIDE = 150  # columns from which the device and subscriber sections sit side by side


def renderable(frame: Frame):
    """The frame as rich tables, for LiveScreen on a terminal: one column of sections, or two on a
    terminal at least WIDE columns wide; the newest envelopes below, across the whole width."""
    return _Rendered(frame)


class _Rendered:
    def __init__(self, frame: Frame):
        self.frame = frame

    def __rich_console__(self, console, options):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        frame = self.frame
        yield Text(frame.title, style="bold")
        for h in frame.hints:
            yield Text(h, style="cyan")
        yield Text(frame.summary)
        left, right = _device_sections(frame), _flow_sections(frame)
        if options.max_width >= WIDE:
            grid = Table.grid(padding=(0, 4))
            grid.add_column()
            grid.add_column()
            grid.add_row(Group(*left), Group(*right))
            yield grid
        else:
            yield from left
            yield from right
        yield _latest_section(frame, options.max_width)


def _table(title, *columns, expand=False):
    from rich import box
    from rich.table import Table

    t = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        expand=expand,
        pad_edge=False,
        show_edge=False,
    )
    for name in columns:
        right = name in ("DEVICES", "ENVELOPES", "RATE/S", "LAG(SEQ)", "DELIVERED", "FRAMES", "SEQ")
        t.add_column(name, justify="right" if right else "left", no_wrap=True, overflow="ellipsis")
    return t


def _device_sections(frame: Frame) -> list:
    from rich.text import Text

    fam = _table("families", "FAMILY", "DEVICES", "ENVELOPES", "RATE/S", "STATES")
    for family, devices, envelopes, rate, states in frame.families:
        fam.add_row(family, f"{devices:,}", f"{envelopes:,}", f"{rate:,.0f}", states)
    busy = _table(
        f"busiest devices ({len(frame.busiest)} of {frame.device_count})",
        "DEVICE",
        "FAMILY",
        "STATE",
        "ENVELOPES",
        "RATE/S",
    )
    for dev_id, family, state, envelopes, rate in frame.busiest:
        busy.add_row(
            dev_id,
            family,
            Text(state, style="green" if state == "ONLINE" else "yellow"),
            f"{envelopes:,}",
            f"{rate:,.1f}",
        )
    out = [fam, busy]
    if frame.not_online:
        down = _table(f"not online ({len(frame.not_online)})", "DEVICE", "STATE", "REASON")
        for dev_id, state, reason in frame.not_online[:NOT_ONLINE]:
            down.add_row(dev_id, Text(state, style="yellow"), reason)
        if len(frame.not_online) > NOT_ONLINE:
            down.add_row(f"... and {len(frame.not_online) - NOT_ONLINE} more", "", "")
        out.append(down)
    return out


def _flow_sections(frame: Frame) -> list:
    from rich.text import Text

    out = []
    if frame.subscribers:
        subs = _table(
            f"subscribers ({len(frame.subscribers)})", "PEER", "TOKEN", "LAG(SEQ)", "DELIVERED", "RATE/S", "TOPICS"
        )
        for peer, token, topics, lag, delivered, rate in frame.subscribers:
            subs.add_row(
                peer,
                token,
                Text(f"{lag:,}", style="red" if lag > 10_000 else ""),
                f"{delivered:,}",
                f"{rate:,.0f}",
                topics,
            )
        out.append(subs)
    else:
        out.append(Text("subscribers (0): none", style="bold"))
    if frame.drops:
        drops = _table("drops by reason", "DRIVER/REASON", "FRAMES")
        for reason, n in frame.drops:
            drops.add_row(reason, f"{n:,}")
        out.append(drops)
    else:
        out.append(Text("drops by reason: none", style="bold"))
    if frame.noise or frame.noise_why:
        noise = _table(NOISE_HEADING, "DRIVER/REASON", "FRAMES", "FROM")
        for reason, n, who in frame.noise:
            noise.add_row(reason, f"{n:,}", who)
        out.append(noise)
        out += [Text(f"({why})", style="dim") for why in frame.noise_why]
    return out


def _latest_section(frame: Frame, width: int):
    from rich.text import Text

    if not frame.latest:
        return Text("latest: nothing yet", style="bold")
    latest = _table("latest", "SEQ", "TOPIC", "PAYLOAD", expand=True)
    latest.columns[1].max_width = max(20, width * 2 // 5)
    latest.columns[2].ratio = 1
    for seq, topic, payload in frame.latest:
        latest.add_row(str(seq), topic, payload)
    return latest


class LiveScreen:
    """Where frames go. On a terminal: one rich Live region redrawn in place (log lines written to
    stderr meanwhile appear above it); otherwise plain lines, one frame per `show()`.

    `console`: a rich Console to draw on (tests give one that records into a StringIO)."""

    def __init__(self, stream=None, console=None, tty: bool | None = None):
        self.stream = stream or sys.stdout
        self.console = console
        self.tty = (console.is_terminal if console is not None else _isatty(self.stream)) if tty is None else tty
        self._live: Live | None = None
        self._handlers: list[tuple[logging.StreamHandler, object]] = []

    def __enter__(self) -> LiveScreen:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            console = self.console or Console(file=self.stream)
            redirect = self.console is None and _isatty(sys.stderr)
            self._live = live = Live(
                console=console,
                auto_refresh=False,
                vertical_overflow="ellipsis",
                redirect_stdout=False,
                redirect_stderr=redirect,
            )
            live.start()
            if redirect:
                # the log handlers hold the real stderr: point them at rich's proxy, which prints
                # above the live region instead of through it
                for h in logging.getLogger().handlers:
                    if isinstance(h, logging.StreamHandler) and h.stream is sys.__stderr__:
                        self._handlers.append((h, h.setStream(sys.stderr)))
        return self

    def show(self, frame: Frame) -> None:
        if self._live is not None:
            self._live.update(renderable(frame), refresh=True)
        else:
            self.stream.write(plain(frame) + "\n\n")
            self.stream.flush()

    def __exit__(self, *exc) -> None:
        for h, stream in self._handlers:
            h.setStream(stream)
        self._handlers.clear()
        if self._live is not None:
            self._live.stop()
            self._live = None


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Keys:
    """`q` from the terminal. While entered, stdin (when it is a terminal) is in cbreak mode: keys
    arrive one at a time, unechoed, and Ctrl-C still interrupts; on exit it is put back as it was.
    When stdin is not a terminal nothing is read and `wait()` only sleeps."""

    QUIT = (b"q", b"Q")

    def __init__(self, stdin=None):
        self.stdin = stdin or sys.stdin
        self.fd: int | None = None
        self._saved = None

    def __enter__(self) -> Keys:
        try:
            fd = self.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        if not os.isatty(fd):
            return self
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                return self  # started in the background: changing the terminal would stop us (SIGTTOU)
        except OSError:
            return self
        import termios
        import tty

        with contextlib.suppress(termios.error):
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None and self.fd is not None:
            import termios

            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        self.fd = None

    def read(self) -> bool:
        """Read what is waiting on stdin; True when it holds `q`. End of input stops the reading."""
        if self.fd is None:  # not reading (no terminal, or after __exit__)
            return False
        try:
            data = os.read(self.fd, 64)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self.fd = None  # the terminal went away: nothing more to read
            return False
        return any(q in data for q in self.QUIT)

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds`, or less: True as soon as `q` is pressed."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.fd is None:
                time.sleep(remaining)
                return False
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready and self.read():
                return True
