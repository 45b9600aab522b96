"""`tianwang bench --baseline`: which figures count, and how much a figure may move by noise.

Only the product's own figures count. The comparison tools (pynmea2, pynmeagps, gpsdecode, the
one-message-per-write server) and the ratios against them are listed in the report but never
flagged: they measure the tools, and the ratios carry the tools' noise.

A figure regresses when it is worse than the baseline's, in its `better` direction, by more than
its tolerance:

- a rate timed several times (`repeats` > 1): the median run AND the best run are both worse by
  more than `--threshold`. Noise (other work on the cores) drags single runs, so it moves the
  median; it seldom drags every run, so the best run stays put. A slower build moves both.
- a figure measured once: by more than its kind's tolerance (or `--threshold` when that is
  larger) AND by more than the kind's absolute floor. The tolerances are what repeated `--quick`
  runs of one build on a shared two-core machine moved by (TOLERANCES below), with room: latency
  tails move most, a p99 of 3 ms can read 5.5 ms on the next run.
- readings lost: any loss where the baseline had none; otherwise more than the tolerance.

Unknown units keep the plain rule: worse by more than `--threshold`.
"""

from __future__ import annotations

import re

# names of the comparison tools' figures, and of the ratios against them (section, pattern)
PEER_FIGURES = (
    ("nmea", re.compile(r"^decode (pynmea2|pynmeagps)$")),
    ("nmea", re.compile(r"gpsdecode")),
    ("fanout", re.compile(r"one-message-per-write")),
)

# kind -> (relative tolerance %, absolute floor in the figure's unit) for figures measured once
TOLERANCES = {
    "rate": (25.0, 0.0),  # a rate measured once (fan-out, journal at quick sizes)
    "s": (25.0, 0.05),  # a whole process's wall time: start-up weighs in
    "p50": (50.0, 1.0),  # ms
    "p99": (100.0, 5.0),  # ms: tails double by noise on a loaded machine
    "p999": (200.0, 10.0),  # ms
    "latency": (50.0, 2.0),  # other latencies (the ONVIF events' p99 at scale)
    "cores": (30.0, 0.05),  # below 0.05 cores over a few seconds is under the clock's resolution
    "MiB": (15.0, 8.0),
    "readings": (50.0, 10.0),
}
RATE_UNITS = ("sentences/s", "envelopes/s", "MB/s")


def is_own(metric: dict) -> bool:
    """True for the product's own figures; False for the comparison tools' and the ratios."""
    if metric.get("unit") == "x":
        return False
    for section, pattern in PEER_FIGURES:
        if metric.get("section") == section and pattern.search(metric.get("name", "")):
            return False
    return True


def kind(metric: dict) -> str | None:
    """The kind of figure (a key of TOLERANCES, or "timed" for a rate timed several times); None
    for a unit this module does not know."""
    unit, name = metric.get("unit"), metric.get("name", "")
    if unit in RATE_UNITS or (isinstance(unit, str) and unit.endswith("/s")):
        return "timed" if (metric.get("repeats") or 1) > 1 and metric.get("best") is not None else "rate"
    if unit == "ms":
        for q in ("p999", "p99", "p50"):
            if name.startswith(q + " ") or f" {q}" in name:
                return q
        return "latency"
    if unit in TOLERANCES:
        return unit
    return None


def _worse_pct(was: float, now: float, better: str) -> float:
    """How much worse `now` is than `was`, in percent of `was` (negative: better)."""
    change = (now - was) / abs(was) * 100
    return -change if better == "higher" else change


def judge(metric: dict, old: dict, threshold_pct: float) -> tuple[float, bool, str]:
    """(change in percent, regressed, the rule applied) for `metric` against the baseline's `old`."""
    was, now = float(old["value"]), float(metric["value"])
    better = metric["better"]
    if was == 0:
        change = 0.0 if now == 0 else float("inf")
        # no percentage of nothing: only a loss where there was none counts
        return change, metric["unit"] == "readings" and better == "lower" and now > 0, "any loss"
    change = (now - was) / abs(was) * 100
    worse = _worse_pct(was, now, better)
    k = kind(metric)
    if k is None:
        return change, worse > threshold_pct, f"worse by more than {threshold_pct:g}%"
    if k == "timed":
        best_now, best_was = metric.get("best"), old.get("best")
        if not isinstance(best_was, (int, float)) or not best_was or best_now is None:
            return change, worse > threshold_pct, f"worse by more than {threshold_pct:g}%"
        best_worse = _worse_pct(float(best_was), float(best_now), better)
        return (
            change,
            worse > threshold_pct and best_worse > threshold_pct,
            (f"median and best run both worse by more than {threshold_pct:g}%"),
        )
    tolerance, floor = TOLERANCES[k]
    tolerance = max(tolerance, threshold_pct)
    return (
        change,
        worse > tolerance and abs(now - was) > floor,
        (f"worse by more than {tolerance:g}%" + (f" and {floor:g} {metric['unit']}" if floor else "")),
    )


def compare(results: dict, baseline: dict, threshold_pct: float) -> list[dict]:
    """Each of the product's own figures that the baseline also has (same section and name): its
    change in percent, whether it regressed, and by which rule."""
    base = {(m["section"], m["name"]): m for m in baseline["metrics"] if isinstance(m, dict) and "name" in m}
    out = []
    for m in results["metrics"]:
        old = base.get((m["section"], m["name"]))
        if old is None or m["value"] is None or not isinstance(old.get("value"), (int, float)) or not is_own(m):
            continue
        change, regressed, rule = judge(m, old, threshold_pct)
        out.append(
            {
                "section": m["section"],
                "name": m["name"],
                "unit": m["unit"],
                "baseline": float(old["value"]),
                "value": m["value"],
                "change_pct": change,
                "regressed": regressed,
                "rule": rule,
            }
        )
    return out


def load_warning(results: dict, baseline: dict) -> str | None:
    """A warning when either run had more runnable work than cores (1-minute load average, at the
    start or the end): then no tolerance holds, and a regression may be the other work."""

    def worst(r):
        m = r.get("machine") or {}
        loads = [x[0] for x in (m.get("load_avg"), m.get("load_avg_end")) if isinstance(x, (list, tuple)) and x]
        return max(loads, default=0.0), m.get("cores") or 0

    now, cores = worst(results)
    was, base_cores = worst(baseline)
    if (cores and now > cores) or (base_cores and was > base_cores):
        return (
            f"the machine was busy (load average up to {now:.1f} on {cores} cores in this run, {was:.1f} on "
            f"{base_cores} in the baseline): other work moves the figures beyond any tolerance; compare runs "
            "made on an idle machine before believing a regression"
        )
    return None
