"""`bench --baseline` on synthetic results.json: only the product's own figures count, an unchanged
build passes ten runs of ten under the noise a shared machine makes, and a real 20% slowdown is
caught ten times of ten. No benchmark runs here: the comparison logic alone."""

import copy
import json
import random

from tianwang.gateway.benchmarks import runner
from tianwang.gateway.benchmarks.compare import is_own


def m(section, name, value, unit, better="higher", repeats=1, best=None):
    return {
        "section": section,
        "name": name,
        "unit": unit,
        "better": better,
        "value": float(value),
        "best": float(best if best is not None else value),
        "repeats": repeats,
    }


def quick_run():
    """The figures of a `--quick` run, with plausible values (their shape is what matters)."""
    ms = [
        m("nmea", "decode cext", 1.9e6, "sentences/s", repeats=5, best=2.0e6),
        m("nmea", "decode python", 1.4e5, "sentences/s", repeats=2, best=1.5e5),
        m("nmea", "decode pynmea2", 6.0e4, "sentences/s"),
        m("nmea", "decode pynmeagps", 4.0e4, "sentences/s"),
        m("nmea", "decode + epochs + fix payloads cext", 9.0e5, "sentences/s", repeats=3, best=9.5e5),
        m("nmea", "framer jt808 cext", 400.0, "MB/s", repeats=5, best=420.0),
        m("nmea", "framer gbt20999 python", 9.0, "MB/s", repeats=2, best=9.5),
        m("nmea", "tianwang decode nmea 20000 sentences", 0.42, "s", "lower"),
        m("nmea", "tianwang decode / gpsdecode speed-up nmea", 6.1, "x"),
        m("router", "Router.publish prepacked payload cext", 7.0e5, "envelopes/s", repeats=3, best=7.4e5),
        m("router", "journal append until visible, batch", 3.0e5, "envelopes/s"),
        m("fanout", "tianwang, 4 subscriber(s)", 1.2e6, "envelopes/s"),
        m("fanout", "one-message-per-write server, 4 subscriber(s)", 9.0e4, "envelopes/s"),
        m("fanout", "tianwang / one-message-per-write, 4 subscriber(s)", 13.0, "x"),
        m("latency", "p50 at 5000 readings/s", 1.2, "ms", "lower"),
        m("latency", "p99 at 5000 readings/s", 3.1, "ms", "lower"),
        m("latency", "p999 at 5000 readings/s", 6.0, "ms", "lower"),
        m("latency", "readings missing at 5000 readings/s", 0, "readings", "lower"),
        m("scale", "200 JT/T 808 terminals at 1 Hz: gateway CPU", 0.003, "cores", "lower"),
        m("scale", "20 signal controllers polled at 1 Hz: gateway CPU", 0.41, "cores", "lower"),
        m("scale", "200 JT/T 808 terminals at 1 Hz: gateway peak RSS", 96.0, "MiB", "lower"),
        m("scale", "200 JT/T 808 terminals at 1 Hz: lost", 0, "readings", "lower"),
        m("scale", "10 ONVIF cameras: latency p99", 12.0, "ms", "lower"),
    ]
    return {"schema_version": runner.SCHEMA_VERSION, "metrics": ms}


def noisy(base, rng, slowdown=1.0):
    """The same build run again on a shared two-core machine: what each kind of figure moved by
    between repeated quick runs (medians more than the best runs, tails most, peers a lot).
    `slowdown` > 1: a build that is that much slower everywhere."""
    out = copy.deepcopy(base)
    for x in out["metrics"]:
        u = x["unit"]
        if not is_own(x):
            f = rng.uniform(0.5, 1.4)
            x["value"] *= f
            x["best"] *= f
        elif u.endswith("/s") and x["repeats"] > 1:
            x["value"] *= rng.uniform(0.85, 1.05) / slowdown
            x["best"] *= rng.uniform(0.95, 1.03) / slowdown
        elif u.endswith("/s"):
            x["value"] = x["best"] = x["value"] * rng.uniform(0.82, 1.1) / slowdown
        elif u == "s":
            x["value"] = x["best"] = x["value"] * rng.uniform(0.9, 1.2) * slowdown
        elif u == "ms":
            spread = {"p50": 1.4, "p99": 1.8, "p999": 2.5}.get(x["name"].split()[0], 1.4)
            x["value"] = x["best"] = x["value"] * rng.uniform(0.8, spread) * slowdown
        elif u == "cores":
            # the quick runs' small CPU figures are a few clock ticks: 0.003 can read 0.012
            x["value"] = x["best"] = (
                rng.uniform(0.003, 0.012) if x["value"] < 0.01 else x["value"] * rng.uniform(0.85, 1.25) * slowdown
            )
        elif u == "MiB":
            x["value"] = x["best"] = x["value"] * rng.uniform(0.95, 1.05)
    return out


def regressed(now, base):
    return [c["name"] for c in runner.compare(now, base, 10.0) if c["regressed"]]


def test_only_the_products_own_figures_count():
    base = quick_run()
    now = copy.deepcopy(base)
    for x in now["metrics"]:
        if not is_own(x):
            x["value"] = x["best"] = x["value"] / 3  # the tools (and the ratios) got 3x worse
    assert regressed(now, base) == []
    compared = {c["name"] for c in runner.compare(now, base, 10.0)}
    assert "decode pynmea2" not in compared and "one-message-per-write server, 4 subscriber(s)" not in compared
    assert "tianwang decode / gpsdecode speed-up nmea" not in compared
    assert "decode cext" in compared and "p99 at 5000 readings/s" in compared


def test_an_unchanged_build_passes_ten_times_out_of_ten(tmp_path):
    base = quick_run()
    (tmp_path / "base.json").write_text(json.dumps(base))
    base = runner.load_baseline(str(tmp_path / "base.json"))
    moved_beyond_plain_threshold = 0
    for seed in range(10):
        now = noisy(base, random.Random(seed))
        assert regressed(now, base) == [], f"run {seed}"
        # the noise is real: a plain 10% rule over every figure would have flagged these runs
        moved_beyond_plain_threshold += any(
            (b["value"] - n["value"]) / b["value"] > 0.10
            if n["better"] == "higher"
            else (n["value"] - b["value"]) / b["value"] > 0.10
            for n, b in zip(now["metrics"], base["metrics"], strict=True)
            if b["value"]
        )
    assert moved_beyond_plain_threshold == 10
    # the issue's own example: a p99 at 5,000/s moving 3.1 -> 5.5 ms by noise
    now = copy.deepcopy(base)
    next(x for x in now["metrics"] if x["name"] == "p99 at 5000 readings/s")["value"] = 5.5
    assert regressed(now, base) == []


def test_a_real_20_percent_slowdown_is_caught_ten_times_out_of_ten():
    base = quick_run()
    timed = {x["name"] for x in base["metrics"] if is_own(x) and x["unit"].endswith("/s") and x["repeats"] > 1}
    for seed in range(10):
        now = noisy(base, random.Random(100 + seed), slowdown=1.2)
        flagged = set(regressed(now, base))
        assert timed <= flagged, f"run {seed}: {sorted(timed - flagged)} missed"
        assert all(is_own(x) for x in now["metrics"] if x["name"] in flagged)


def test_a_loss_where_there_was_none_always_counts():
    base = quick_run()
    now = copy.deepcopy(base)
    next(x for x in now["metrics"] if x["name"] == "readings missing at 5000 readings/s")["value"] = 1
    assert regressed(now, base) == ["readings missing at 5000 readings/s"]


def test_a_busy_machine_is_named_in_a_warning():
    from tianwang.gateway.benchmarks.compare import load_warning

    idle = {"machine": {"cores": 2, "load_avg": [0.4, 0.5, 0.5], "load_avg_end": [0.9, 0.6, 0.5]}}
    busy = {"machine": {"cores": 2, "load_avg": [0.4, 0.5, 0.5], "load_avg_end": [8.9, 6.0, 4.0]}}
    assert load_warning(idle, idle) is None
    assert "load average up to 8.9 on 2 cores in this run" in load_warning(busy, idle)
    assert "0.9 on 2 in the baseline" in load_warning(busy, idle)
    assert load_warning(idle, busy) is not None
