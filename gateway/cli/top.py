"""The `tianwang top` view (also the live view of `tianwang run --demo`): envelope rates per
family, device states, subscribers and drops, from a Stats message and the device list."""

from __future__ import annotations

import time


class TopView:
    def __init__(self):
        self._prev: dict[str, int] = {}
        self._prev_t: float | None = None
        self._prev_delivered = 0

    def render(self, stats, devices, now: float) -> str:
        dt = (now - self._prev_t) if self._prev_t is not None else 0.0
        lines = []
        up = max(0, time.time_ns() - stats.started_ns) / 1e9 if stats.started_ns else 0
        lines.append(
            f"tianwang {stats.gateway} {stats.version}  hot path: {'cext' if stats.using_cext else 'python'}  "
            f"up {up:,.0f}s  seq {stats.first_seq:,}..{stats.last_seq:,}  "
            f"journal {stats.journal_bytes / 1048576:,.1f}/{stats.journal_max_bytes / 1048576:,.0f} MiB"
        )
        delivered = stats.counters.get("envelopes_delivered", 0)
        out_rate = (delivered - self._prev_delivered) / dt if dt > 0 else 0.0
        lines.append(
            f"subscribers {stats.subscribers}  delivered {delivered:,} ({out_rate:,.0f}/s)  "
            f"gaps {stats.counters.get('gaps_sent', 0):,}  dropped frames {stats.counters.get('frames_dropped', 0):,}  "
            f"commands {stats.counters.get('commands', 0):,}"
        )
        lines.append("")
        lines.append(f"{'FAMILY':<10}{'DEVICES':>8}{'ENVELOPES':>14}{'RATE/S':>10}  STATES")
        for fam in stats.families:
            rate = (fam.envelopes - self._prev.get(fam.family, fam.envelopes)) / dt if dt > 0 else 0.0
            states = " ".join(f"{k}={v}" for k, v in sorted(fam.states.items()))
            lines.append(f"{fam.family:<10}{fam.devices:>8}{fam.envelopes:>14,}{rate:>10,.0f}  {states}")
            self._prev[fam.family] = fam.envelopes
        bad = [d for d in devices if d.state != "ONLINE"]
        if bad:
            lines.append("")
            lines.append("not online:")
            for d in bad[:15]:
                lines.append(f"  {d.id:<20} {d.state:<11} {d.reason}")
            if len(bad) > 15:
                lines.append(f"  ... and {len(bad) - 15} more")
        self._prev_t = now
        self._prev_delivered = delivered
        return "\n".join(lines)


def channel_key(topic: str) -> str:
    """`gnss/bd-1/fix` -> `gnss/fix`: the latest envelope is kept per family and channel."""
    parts = topic.split("/", 2)
    return f"{parts[0]}/{parts[-1]}" if len(parts) == 3 else topic


def latest_section(latest: dict, limit: int = 12) -> list[str]:
    """The "latest:" lines: the newest envelope of each family and channel, payload cut to fit."""
    import json

    from tianwang.v1.client import unpack

    lines = ["", "latest:"]
    for key in sorted(latest)[:limit]:
        env = latest[key]
        payload = json.dumps(
            unpack(env.payload), default=lambda o: o.hex() if isinstance(o, bytes) else str(o), ensure_ascii=False
        )
        lines.append(f"  {env.seq:>9} {env.topic:<40} {payload[:110]}")
    return lines
