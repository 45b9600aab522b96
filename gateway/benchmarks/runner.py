"""`tianwang bench`: the sections, their sizes, results.json, report.md, the plots and the comparison
with a baseline. The format of results.json is documented in docs/bench.md (SCHEMA_VERSION).

A section is a list of steps (label, function); the progress bar counts steps. A step adds metrics
(one figure each, with its unit and whether higher or lower is better) and details (the raw figures
the report and the plots show). A step that fails is recorded in `errors` and the run goes on.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tianwang.gateway.benchmarks.common import machine, timed

SCHEMA_VERSION = 1
TITLES = {
    "nmea": "NMEA decoding and framing",
    "router": "Router and journal",
    "fanout": "gRPC fan-out",
    "latency": "End-to-end latency",
    "scale": "Scale",
}
DEFAULT_THRESHOLD = 10.0  # percent
# docs/architecture.md: `tianwang decode` at least 5x gpsd's `gpsdecode` on every corpus shape
DECODE_SPEEDUP_TARGET = 5.0
# CPU time below this over a run's window is a few ticks of the clock that measures it (10 ms
# ticks on Linux): such a `cores` figure is not a result, and is not drawn
CPU_RESOLUTION_S = 0.1


class Sizes:
    """How big each measurement is: full, or --quick (about a minute on two cores); `scale`
    multiplies counts, and shortens windows when below 1."""

    def __init__(self, quick: bool, scale: float):
        self.quick = quick
        self.scale = scale

    def n(self, full: int, quick: int, low: int = 1) -> int:
        return max(low, int((quick if self.quick else full) * self.scale))

    def seconds(self, full: float, quick: float, low: float = 0.5) -> float:
        base = quick if self.quick else full
        return max(low, base * min(1.0, self.scale))

    def repeats(self, full: int, quick: int) -> int:
        return quick if self.quick or self.scale < 1 else full


class Bench:
    def __init__(self, sizes: Sizes, workdir: str):
        self.sizes = sizes
        self.workdir = workdir
        self.metrics: list[dict] = []
        self.details: dict[str, dict] = {}
        self.notes: dict[str, list[str]] = {}
        self.skipped: list[dict] = []
        self.cleanup: list = []  # called at the end of the run, failed or not

    def metric(
        self,
        section: str,
        name: str,
        value,
        unit: str,
        better: str = "higher",
        timing: dict | None = None,
        count: float | None = None,
    ) -> None:
        """One figure. With `timing` (common.timed) and `count`, value = count / median and best =
        count / min (for a rate), or the median and min themselves when count is None."""
        m: dict[str, Any] = {
            "section": section,
            "name": name,
            "unit": unit,
            "better": better,
            "value": None,
            "best": None,
            "repeats": 1,
        }
        if timing is not None:
            m["repeats"] = timing["repeats"]
            if count is None:
                m["value"], m["best"] = timing["median_s"], timing["min_s"]
            else:
                m["value"], m["best"] = count / timing["median_s"], count / timing["min_s"]
        else:
            m["value"] = m["best"] = value
        m["value"] = None if m["value"] is None else float(m["value"])
        m["best"] = None if m["best"] is None else float(m["best"])
        self.metrics.append(m)

    def detail(self, section: str, key: str, value) -> None:
        self.details.setdefault(section, {})[key] = value

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def skip(self, section: str, what: str, why: str) -> None:
        self.skipped.append({"section": section, "what": what, "why": why})
        self.note(section, f"skipped {what}: {why}")


# -- sections ------------------------------------------------------------------------------------------
def _impls():
    from tianwang.gateway import framing

    return framing.implementations()


def steps_nmea(b: Bench) -> list:
    from tianwang.gateway.benchmarks import frames, nmea

    s = b.sizes
    state = {}
    sec = "nmea"

    def corpus():
        state["data"], state["count"] = nmea.corpus_bytes(s.n(4000, 400, 10))
        state["chunks"] = nmea.chunks_of(state["data"])
        b.detail(sec, "corpus", {"shape": "nmea", "sentences": state["count"], "bytes": len(state["data"])})

    def typed(impl):
        def run():
            reps = s.repeats(3, 2) if impl.NAME == "python" else s.repeats(30, 5)
            t, got = timed(lambda: nmea.decode_typed(impl, state["chunks"]), reps, warmup=1)
            assert got == state["count"], f"{impl.NAME} decoded {got} of {state['count']} sentences"
            b.metric(sec, f"decode {impl.NAME}", None, "sentences/s", timing=t, count=state["count"])

        return run

    def pipeline(impl):
        def run():
            reps = s.repeats(3, 2) if impl.NAME == "python" else s.repeats(20, 3)
            t, _ = timed(lambda: nmea.receiver_pipeline(impl, state["chunks"]), reps, warmup=1)
            b.metric(
                sec, f"decode + epochs + fix payloads {impl.NAME}", None, "sentences/s", timing=t, count=state["count"]
            )

        return run

    def peer(name, fn):
        def run():
            if nmea.peer_versions()[name] is None:
                b.skip(sec, name, "not installed (pip install 'tianwang[bench]')")
                return
            t, got = timed(lambda: fn(state["data"]), s.repeats(3, 1))
            assert got == state["count"], f"{name} parsed {got} of {state['count']} sentences"
            b.metric(sec, f"decode {name}", None, "sentences/s", timing=t, count=state["count"])

        return run

    def framer(impl, corpus_name):
        def run():
            key = ("frames", corpus_name)
            if key not in state:
                fr, _ = frames.build(corpus_name, s.n(1 << 20, 256 << 10, 4096))
                state[key] = (frames.chunked(fr), len(fr))
            chunks, nframes = state[key]
            nbytes = sum(map(len, chunks))
            reps = s.repeats(3, 2) if impl.NAME == "python" else s.repeats(30, 5)
            t, got = timed(lambda: frames.feed_all(impl, corpus_name, chunks), reps, warmup=1)
            assert got == nframes, f"{impl.NAME} framed {got} of {nframes} {corpus_name} frames"
            b.metric(sec, f"framer {corpus_name} {impl.NAME}", None, "MB/s", timing=t, count=nbytes / 1e6)

        return run

    def versus(shape):
        def run():
            if nmea.peer_versions()["gpsdecode"] is None:
                b.skip(sec, f"gpsdecode on {shape}", "not installed (Debian package gpsd-clients)")
                return
            _, unit, full = nmea.SHAPES[shape]
            n = s.n(full, full // 10, 100)
            r = nmea.decode_vs_gpsdecode(shape, n, b.workdir, rounds=s.repeats(3, 2))
            if n < full:
                b.note(
                    sec,
                    f"{shape}: {n:,} {unit}, not the full {full:,}: the start of the Python process "
                    "weighs more in the speed-up than at full size",
                )
            b.details.setdefault(sec, {}).setdefault("decode_vs_gpsdecode", []).append(r)
            b.metric(sec, f"tianwang decode {shape} {n} {unit}", r["tianwang_s"], "s", better="lower")
            b.metric(sec, f"tianwang decode / gpsdecode speed-up {shape}", r["ratio"], "x")

        return run

    steps = [("build the NMEA corpus", corpus)]
    for impl in _impls():
        steps.append((f"decode, {impl.NAME}", typed(impl)))
    steps += [
        ("decode, pynmea2", peer("pynmea2", nmea.decode_pynmea2)),
        ("decode, pynmeagps", peer("pynmeagps", nmea.decode_pynmeagps)),
    ]
    for impl in _impls():
        steps.append((f"receiver pipeline, {impl.NAME}", pipeline(impl)))
    for corpus_name in ("jt808", "gbt20999") if s.quick else frames.CORPORA:
        for impl in _impls():
            steps.append((f"framer {corpus_name}, {impl.NAME}", framer(impl, corpus_name)))
    for shape in nmea.SHAPES:
        steps.append((f"tianwang decode vs gpsdecode, {shape}", versus(shape)))
    return steps


def steps_router(b: Bench) -> list:
    import uvloop

    from tianwang.gateway.benchmarks import fanout

    s = b.sizes
    sec = "router"
    n = s.n(200_000, 50_000, 1000)

    def append(impl, packed):
        def run():
            t, _ = timed(lambda: fanout.router_append(impl, n, packed), s.repeats(5, 3))
            b.metric(
                sec,
                f"Router.publish {'prepacked' if packed else 'dict'} payload {impl.NAME}",
                None,
                "envelopes/s",
                timing=t,
                count=n,
            )

        return run

    def journal(policy):
        def run():
            jn = s.n(300_000, 50_000, 1000)
            stats = {}

            def once():
                elapsed, stats["counters"] = uvloop.run(fanout.journal_append(policy, jn))
                return elapsed

            t, _ = timed(once, s.repeats(3, 1))
            b.metric(sec, f"journal append until visible, {policy}", None, "envelopes/s", timing=t, count=jn)
            b.detail(sec, f"journal_{policy}_counters", stats["counters"])

        return run

    steps = []
    for impl in _impls():
        for packed in (False, True):
            steps.append((f"Router.publish, {'prepacked' if packed else 'dict'}, {impl.NAME}", append(impl, packed)))
    for policy in ("memory", "batch") if s.quick else ("memory", "never", "batch", "always"):
        steps.append((f"journal append, {policy}", journal(policy)))
    return steps


def steps_fanout(b: Bench) -> list:
    import uvloop

    from tianwang.gateway.benchmarks import fanout

    s = b.sizes
    sec = "fanout"
    total = s.n(600_000, 100_000, 2000)
    plain_total = s.n(60_000, 10_000, 200)
    state = {}

    def start():
        state["tianwang"] = fanout.ServerProcess("tianwang", total)
        state["plain"] = fanout.ServerProcess("plain", plain_total)

    def subs(k):
        def run():
            per_sub = {1: total, 4: total * 5 // 6, 16: total // 4}[k]
            plain_per_sub = max(1, plain_total // k)
            t, _ = timed(lambda: uvloop.run(fanout.deliver(state["tianwang"].addr, k, per_sub, True)), s.repeats(3, 1))
            delivered, plain_s = uvloop.run(fanout.deliver(state["plain"].addr, k, plain_per_sub, False))
            b.metric(sec, f"tianwang, {k} subscriber(s)", None, "envelopes/s", timing=t, count=k * per_sub)
            b.metric(sec, f"one-message-per-write server, {k} subscriber(s)", delivered / plain_s, "envelopes/s")
            b.metric(
                sec,
                f"tianwang / one-message-per-write, {k} subscriber(s)",
                (k * per_sub / t["median_s"]) / (delivered / plain_s),
                "x",
            )

        return run

    def stop():
        for server in state.values():
            server.close()

    b.cleanup.append(stop)
    return (
        [("start the servers", start)]
        + [(f"{k} subscriber(s)", subs(k)) for k in (1, 4, 16)]
        + [("stop the servers", stop)]
    )


JOURNAL_ON_DISK = ("batch", "always")  # fsync policies the latency section also runs with the journal on disk


def latency_rates(sizes: Sizes) -> list[int]:
    base = [1000, 5000] if sizes.quick else [1000, 5000, 10000, 20000]
    return sorted({max(2, int(r * sizes.scale)) for r in base})


def steps_latency(b: Bench) -> list:
    import uvloop

    from tianwang.gateway.benchmarks import latency

    s = b.sizes
    sec = "latency"

    def rate(r, journal=None):
        def run():
            res = uvloop.run(
                latency.run_rate(b.workdir, r, s.seconds(5.0, 2.0), warmup_s=s.seconds(1.0, 1.0), journal=journal)
            )
            b.details.setdefault(sec, {}).setdefault("rates", []).append(res)
            # the memory journal (the default config) keeps the names earlier runs used
            where = f", journal on disk (fsync {journal})" if journal else ""
            for q in ("p50", "p99", "p999"):
                b.metric(sec, f"{q} at {r} readings/s{where}", res[f"{q}_ms"], "ms", better="lower")
            b.metric(
                sec,
                f"readings missing at {r} readings/s{where}",
                res["missing"] + res["write_refused"],
                "readings",
                better="lower",
            )

        return run

    b.detail(sec, "design_target", {"rate": latency.DESIGN_RATE, "p99_ms": latency.DESIGN_P99_MS})
    steps = [(f"{r} readings/s over ptys and TCP", rate(r)) for r in latency_rates(s)]
    # the journal on disk: at every rate (--quick: the highest only)
    disk_rates = latency_rates(s)[-1:] if s.quick else latency_rates(s)
    for policy in JOURNAL_ON_DISK:
        steps += [(f"{r} readings/s, journal on disk (fsync {policy})", rate(r, policy)) for r in disk_rates]
    return steps


def steps_scale(b: Bench) -> list:
    import uvloop

    from tianwang.gateway import framing
    from tianwang.gateway.benchmarks import scale

    s = b.sizes
    sec = "scale"
    hot_path = "cext" if framing.USING_CEXT else "python"

    def record(label, res, received, expected):
        b.details.setdefault(sec, {}).setdefault("runs", []).append(
            dict(res, label=label, received=received, expected=expected)
        )
        cpu_s = (res.get("gateway_cpu_cores") or 0) * (res.get("window_s") or 0)
        if cpu_s < CPU_RESOLUTION_S:
            b.note(
                sec,
                f"{label}: gateway CPU {res.get('gateway_cpu_cores') or 0:.3f} cores over {res.get('window_s') or 0:g} s "
                f"is {cpu_s * 1000:.0f} ms of CPU, a few ticks of the 10 ms clock that measures it: not a result "
                "(run without --quick, or with a larger --scale)",
            )
        b.metric(sec, f"{label}: gateway CPU", res["gateway_cpu_cores"], "cores", better="lower")
        b.metric(sec, f"{label}: gateway peak RSS", res["gateway_peak_rss_mib"], "MiB", better="lower")
        b.metric(sec, f"{label}: lost", max(0, expected - received), "readings", better="lower")

    def jt808():
        n = s.n(5000, 200, 2)
        res = uvloop.run(scale.jt808_fleet(b.workdir, n, s.seconds(20, 3), hot_path))
        record(f"{n} JT/T 808 terminals at 1 Hz", res, res["fix_envelopes_received"], res["fixes_acked_by_listener"])

    def signal():
        n, t = s.n(500, 20, 2), (s.n(5000, 0, 0) if not s.quick else 0)
        res = uvloop.run(scale.signal_junctions(b.workdir, n, t, s.seconds(20, 3), hot_path))
        label = f"{n} signal controllers polled at 1 Hz" + (f" beside {t} terminals" if t else "")
        record(label, res, res["lamps_received"], res["polls_answered_total"])

    def onvif():
        n = s.n(200, 10, 2)
        res = uvloop.run(scale.onvif_cameras(b.workdir, n, s.seconds(60, 4)))
        record(f"{n} ONVIF cameras at 1 event/s", res, res["events_received"], res["events_queued"])
        if res.get("latency_ms_p99") is not None:
            b.metric(sec, f"{n} ONVIF cameras: latency p99", res["latency_ms_p99"], "ms", better="lower")

    def gb28181():
        from tianwang.gateway.benchmarks import scale_gb28181

        n, k, rate = s.n(10000, 100, 2), s.n(1000, 10, 1), float(s.n(200, 20, 1))
        res = uvloop.run(scale_gb28181.gb28181_devices(b.workdir, n, 5, k, rate, s.seconds(60, 10), hot_path))
        label = f"{n} GB/T 28181 devices x 5 channels + {k} mobile, {rate:g} alarms/s"
        record(label, res, res["alarms_received"], res["alarms_acked"])
        if res.get("all_online_s") is not None:
            b.metric(sec, f"{label}: all ONLINE after", res["all_online_s"], "s", better="lower")
        if res.get("catalogs_complete_s") is not None:
            b.metric(sec, f"{label}: every catalog in after", res["catalogs_complete_s"], "s", better="lower")
        b.metric(sec, f"{label}: catalogs left partial", res.get("catalogs_partial", 0), "devices", better="lower")
        b.metric(sec, f"{label}: positions", res["fixes_per_s_received"], "fixes/s")
        if res.get("latency_ms_p99") is not None:
            b.metric(sec, f"{label}: alarm latency p50", res["latency_ms_p50"], "ms", better="lower")
            b.metric(sec, f"{label}: alarm latency p99", res["latency_ms_p99"], "ms", better="lower")

    return [
        ("JT/T 808 terminals", jt808),
        ("signal controllers", signal),
        ("ONVIF cameras", onvif),
        ("GB/T 28181 devices", gb28181),
    ]


STEPS = {
    "nmea": steps_nmea,
    "router": steps_router,
    "fanout": steps_fanout,
    "latency": steps_latency,
    "scale": steps_scale,
}


# -- progress ----------------------------------------------------------------------------------------------
class Progress:
    """A rich progress bar on stderr when it is a terminal; plain lines otherwise."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.bar = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as RichProgress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = RichProgress(
                TextColumn("[bold]bench[/bold] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def step(self, section: str, label: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"{section}: {label}")
        else:
            print(f"bench [{self.done + 1}/{self.total}] {section}: {label}", file=self.stream, flush=True)

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description="done")
            self.bar.stop()


# -- the run -----------------------------------------------------------------------------------------------
def run(sections, quick: bool, scale: float, progress_stream=None) -> dict:
    """Run `sections` and return the results (the content of results.json)."""
    started = time.perf_counter()
    stamp = datetime.now(UTC)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="tianwang-bench-") as workdir:
        b = Bench(Sizes(quick, scale), workdir)
        plans = [(sec, STEPS[sec](b)) for sec in sections]
        progress = Progress(sum(len(steps) for _, steps in plans), progress_stream)
        errors, timing = [], {}
        try:
            for sec, steps in plans:
                t0 = time.perf_counter()
                for label, fn in steps:
                    progress.step(sec, label)
                    try:
                        fn()
                    except Exception as exc:  # recorded, the run goes on
                        errors.append({"section": sec, "step": label, "error": f"{type(exc).__name__}: {exc}"[:500]})
                    progress.advance()
                timing[sec] = round(time.perf_counter() - t0, 2)
        finally:
            for fn in b.cleanup:
                try:
                    fn()
                except Exception:  # a cleanup that fails leaves the others to run
                    pass
            progress.close()
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    from tianwang.gateway.benchmarks.nmea import peer_versions

    return {
        "schema_version": SCHEMA_VERSION,
        "tianwang_version": info.pop("tianwang_version"),
        "timestamp": stamp.isoformat(timespec="seconds"),
        "quick": quick,
        "scale": scale,
        "sections": list(sections),
        "wall_s": round(time.perf_counter() - started, 2),
        "section_wall_s": timing,
        "machine": info,
        "peers": peer_versions(),
        "metrics": b.metrics,
        "details": b.details,
        "notes": b.notes,
        "skipped": b.skipped,
        "errors": errors,
    }


# -- the comparison with a baseline ---------------------------------------------------------------------
def load_baseline(path: str) -> dict:
    """An earlier results.json; ValueError with a one-line reason when it is not one."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or "schema_version" not in data or not isinstance(data.get("metrics"), list):
        raise ValueError(f"{path} is not a tianwang bench results.json (no schema_version or metrics)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {data['schema_version']!r}; this tianwang reads {SCHEMA_VERSION}")
    return data


def compare(results: dict, baseline: dict, threshold_pct: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Each of the product's own figures that the baseline also has, with its change in percent and
    whether it regressed by the noise-aware rule of tianwang.gateway.benchmarks.compare."""
    from tianwang.gateway.benchmarks.compare import compare as noise_aware

    return noise_aware(results, baseline, threshold_pct)


# -- report and plots --------------------------------------------------------------------------------------
def _fmt(value, unit="") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if unit == "readings":
        return f"{value:,.0f}"
    if unit in ("sentences/s", "envelopes/s") or (isinstance(value, (int, float)) and abs(value) >= 1000):
        return f"{value:,.0f}"
    if unit == "cores":
        return f"{value:.3f}"
    if unit == "s" or unit == "ms":
        return f"{value:.3f}" if unit == "s" else f"{value:.2f}"
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


def _pct(change: float) -> str:
    return "new" if change == float("inf") else f"{change:+.1f}%"


def write_plots(results: dict, out: Path) -> list[str]:
    """PNG plots of the sections that ran (matplotlib, Agg backend): the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_section: dict[str, list[dict]] = {}
    for m in results["metrics"]:
        if m["value"] is not None and m["unit"] != "readings":  # counts of losses: in the report only
            by_section.setdefault(m["section"], []).append(m)

    def below_resolution(m):
        """A `cores` figure whose CPU time over its run's window is a few clock ticks."""
        if m["unit"] != "cores":
            return False
        runs = results["details"].get(m["section"], {}).get("runs", [])
        window = next((r.get("window_s") or 0 for r in runs if m["name"].startswith(r.get("label", "") + ":")), None)
        return window is not None and m["value"] * window < CPU_RESOLUTION_S

    def bars(name, title, metrics, log=False):
        """One panel per unit. A panel of a single figure says nothing a table does not, so it is
        left to the report, and so is a CPU figure below the clock's resolution; on a log axis a
        bar's length means nothing, so figures are points."""
        metrics = [m for m in metrics if not below_resolution(m)]
        panels = []
        for unit in sorted({m["unit"] for m in metrics}):
            ms = [m for m in metrics if m["unit"] == unit]
            if len(ms) >= 2:
                panels.append((unit, ms))
        if not panels:
            return
        rows = sum(len(ms) for _, ms in panels)
        fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 + 0.42 * rows + 0.6 * len(panels)), squeeze=False)
        for ax, (unit, ms) in zip(axes[:, 0], panels, strict=True):
            names = [m["name"] for m in ms]
            values = [m["value"] for m in ms]
            on_log = log and unit.endswith("/s") and all(v > 0 for v in values)
            if on_log:
                ax.plot(values, names, "o", color="#3b75af")
                ax.set_xscale("log")
            else:
                ax.barh(names, values, color="#3b75af")
            ax.invert_yaxis()
            ax.set_xlabel(unit + (" (log scale)" if on_log else ""))
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(axis="x", alpha=0.3, which="both" if on_log else "major")
            if unit == "x" and any("speed-up" in n for n in names):
                # the decode speed-up: the design target and whether every shape meets it
                ax.axvline(
                    DECODE_SPEEDUP_TARGET,
                    color="red",
                    linestyle="--",
                    linewidth=1,
                    label=f"target {DECODE_SPEEDUP_TARGET:g}x",
                )
                worst = min(v for n, v in zip(names, values, strict=True) if "speed-up" in n)
                verdict = "met" if worst >= DECODE_SPEEDUP_TARGET else "NOT met"
                # --quick decodes small files, where the Python process's start weighs in the ratio
                sizes = " at --quick sizes (the target is for full-size files)" if results.get("quick") else ""
                ax.set_title(
                    f"speed-up over gpsdecode: target {DECODE_SPEEDUP_TARGET:g}x {verdict} "
                    f"(lowest {worst:.2f}x){sizes}",
                    fontsize=9,
                )
                ax.legend(fontsize=8, loc="lower right")
        if axes[0, 0].get_title():  # the first panel has a title of its own (the speed-up verdict)
            fig.suptitle(title)
        else:
            axes[0, 0].set_title(title)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)

    bars("nmea.png", TITLES["nmea"], by_section.get("nmea", []), log=True)
    bars("router.png", TITLES["router"], by_section.get("router", []))
    bars(
        "fanout.png",
        TITLES["fanout"] + " (envelopes/s delivered in total)",
        [m for m in by_section.get("fanout", []) if m["unit"] == "envelopes/s"],
        log=True,
    )
    bars("scale.png", TITLES["scale"], by_section.get("scale", []))
    rates = results["details"].get("latency", {}).get("rates", [])
    if rates:
        written += _latency_plots(results, out, plt)
    return written


def _mode(r: dict) -> str:
    """The journal a latency run had ("memory", "disk-batch", "disk-always"); runs from before the
    journal on disk was measured were all memory."""
    return r.get("journal", "memory")


MODE_LABELS = {
    "memory": "journal in memory (default)",
    "disk-batch": "journal on disk, fsync batch",
    "disk-always": "journal on disk, fsync always",
}


def _plain_log_axis(axis, values, ticks=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)):
    """A log axis with plain-number ticks (0.5, 1, 2 ms) spanning `values`, rather than 10^0."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    values = [v for v in values if v and v > 0] or [1.0]
    lo, hi = min(values), max(values)
    axis.set_major_locator(FixedLocator([v for v in ticks if lo / 2.5 <= v <= hi * 2.5]))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    axis.set_major_formatter(fmt)
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _latency_plots(results: dict, out: Path, plt) -> list[str]:
    """latency.png (p50/p99/p999 against the rate), latency-distribution.png (the whole distribution
    at each rate, one panel per journal) and latency-stages.png (where the time goes)."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    d = results["details"].get("latency", {})
    rates = sorted(d.get("rates", []), key=lambda r: r["rate"])
    if not rates:
        return []
    written = []
    target = d.get("design_target", {})
    memory = [r for r in rates if _mode(r) == "memory"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for q, style in (("p50", "o-"), ("p99", "s-"), ("p999", "^-")):
        pts = [(r["rate"], r[f"{q}_ms"]) for r in memory if r[f"{q}_ms"] is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=f"{q}, journal in memory")
    for mode, color in (("disk-batch", "#8c564b"), ("disk-always", "#7f7f7f")):
        pts = [(r["rate"], r["p99_ms"]) for r in rates if _mode(r) == mode and r["p99_ms"] is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "s--", color=color, label=f"p99, {MODE_LABELS[mode]}")
    if target:
        ax.axhline(
            target["p99_ms"], color="red", linestyle="--", linewidth=1, label=f"p99 target ({target['p99_ms']:g} ms)"
        )
        ax.axvline(target["rate"], color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    values = [r[f"{q}_ms"] for r in rates for q in ("p50", "p99", "p999") if r[f"{q}_ms"]] + [target.get("p99_ms", 1)]
    ax.xaxis.set_major_locator(FixedLocator(sorted({r["rate"] for r in rates})))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    _plain_log_axis(ax.yaxis, values)
    ax.set_xlabel("readings/s (ptys and TCP together)")
    ax.set_ylabel("device write -> gRPC subscriber, ms")
    ax.set_title(TITLES["latency"])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)
    written.append("latency.png")

    # the distribution: x is the percentile on a scale of 1/(1 - p), so the tail gets the room
    modes = [m for m in MODE_LABELS if any(_mode(r) == m and r.get("distribution") for r in rates)]
    if modes:
        fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 4.5), squeeze=False, sharey=True)
        every = [ms for r in rates for _, ms in r.get("distribution", [])]
        for ax, mode in zip(axes[0], modes, strict=True):
            for r in rates:
                if _mode(r) != mode or not r.get("distribution"):
                    continue
                xs = [-math.log10(1 - p) for p, _ in r["distribution"]]
                ax.plot(xs, [ms for _, ms in r["distribution"]], "-", linewidth=1.5, label=f"{r['rate']:,}/s")
            ticks = [(0.5, "50"), (0.9, "90"), (0.99, "99"), (0.999, "99.9"), (0.9999, "99.99")]
            ax.xaxis.set_major_locator(FixedLocator([-math.log10(1 - p) for p, _ in ticks]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * (1 - 10**-v):.4g}"))
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis, every)
            ax.set_xlabel("percentile of readings")
            ax.set_title(MODE_LABELS[mode], fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, title="readings/s", title_fontsize=8)
        axes[0][0].set_ylabel("device write -> gRPC subscriber, ms")
        fig.suptitle("Latency distribution at each rate")
        fig.tight_layout()
        fig.savefig(out / "latency-distribution.png", dpi=100)
        plt.close(fig)
        written.append("latency-distribution.png")

    # where the time goes: mean of each stage (the means add up to the mean latency)
    staged = [r for r in rates if r.get("stages", {}).get("readings")]
    if staged:
        from tianwang.gateway.benchmarks.latency import STAGE_LABELS, STAGES

        staged.sort(key=lambda r: (list(MODE_LABELS).index(_mode(r)) if _mode(r) in MODE_LABELS else 9, r["rate"]))
        labels = [f"{r['rate']:,}/s, {MODE_LABELS.get(_mode(r), _mode(r))}" for r in staged]
        fig, ax = plt.subplots(figsize=(9, 2.2 + 0.38 * len(staged)))
        left = [0.0] * len(staged)
        for stage, color in zip(STAGES, ("#3b75af", "#ef8636", "#519e3e", "#c53a32"), strict=True):
            widths = [max(0.0, r["stages"][stage]["mean_ms"] or 0.0) for r in staged]
            ax.barh(labels, widths, left=left, color=color, label=STAGE_LABELS[stage])
            left = [a + w for a, w in zip(left, widths, strict=True)]
        ax.invert_yaxis()
        ax.set_xlabel("mean ms per reading")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(
            fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16 - 1.2 / (2.2 + 0.38 * len(staged))), ncol=2
        )
        ax.set_title("Where the time goes (device write -> subscriber read)")
        fig.tight_layout()
        fig.savefig(out / "latency-stages.png", dpi=100)
        plt.close(fig)
        written.append("latency-stages.png")
    return written


def write_report(
    results: dict,
    comparison: list[dict] | None,
    plots: list[str],
    out: Path,
    baseline_path: str | None = None,
    threshold_pct: float = DEFAULT_THRESHOLD,
    baseline_sizes: tuple | None = None,
) -> str:
    m = results["machine"]
    lines = [
        "# tianwang bench",
        "",
        f"{results['timestamp']} · tianwang {results['tianwang_version']} · "
        f"{'quick' if results['quick'] else 'full'} run, scale {results['scale']:g} · {results['wall_s']:.0f} s",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores; load average {m['load_avg']} at the start, {m['load_avg_end']} at the end",
        f"- Python {m['python']} on {m['platform']}",
        f"- hot path: `USING_CEXT={m['using_cext']}`"
        + (f" ({m['why_not_compiled']})" if m["why_not_compiled"] else ""),
        "- peers: " + ", ".join(f"{k} {v if v else 'not installed (skipped)'}" for k, v in results["peers"].items()),
        "",
        "Figures are medians of several runs (time.perf_counter); other work on the same cores shows in them.",
    ]
    if comparison is not None:
        regressed = [c for c in comparison if c["regressed"]]
        lines += [
            "",
            "## Against the baseline",
            "",
            f"Baseline `{baseline_path}`: {len(comparison)} figures compared, "
            f"{len(regressed)} regressed beyond their tolerance (the product's own figures only; "
            f"--threshold {threshold_pct:g}%; the rules: docs/bench.md).",
        ]
        if baseline_sizes is not None and baseline_sizes != (results["quick"], results["scale"]):
            lines += [
                "",
                f"The baseline was made with other sizes (quick {baseline_sizes[0]}, scale {baseline_sizes[1]}): "
                "rates may not compare.",
            ]
        if regressed:
            lines += ["", "| regression | baseline | now | change |", "|---|---|---|---|"]
            lines += [
                f"| **{c['section']}: {c['name']}** ({c['unit']}) | {_fmt(c['baseline'], c['unit'])} | "
                f"{_fmt(c['value'], c['unit'])} | {_pct(c['change_pct'])} |"
                for c in regressed
            ]
    changes = {(c["section"], c["name"]): c for c in comparison or []}
    for sec in results["sections"]:
        ms = [x for x in results["metrics"] if x["section"] == sec]
        lines += ["", f"## {TITLES.get(sec, sec)}", ""]
        if sec in results["section_wall_s"]:
            lines += [f"Section time: {results['section_wall_s'][sec]:.1f} s.", ""]
        if ms:
            head = "| figure | value | unit | best | runs |" + (
                " baseline | change |" if comparison is not None else ""
            )
            lines += [head, "|---|---|---|---|---|" + ("---|---|" if comparison is not None else "")]
            for x in ms:
                value, best = _fmt(x["value"], x["unit"]), _fmt(x["best"], x["unit"])
                row = f"| {x['name']} | {value} | {x['unit']} | {best} | {x['repeats']} |"
                if comparison is not None:
                    c = changes.get((sec, x["name"]))
                    flag = " **REGRESSION**" if c and c["regressed"] else ""
                    row += f" {_fmt(c['baseline'], x['unit'])} | {_pct(c['change_pct'])}{flag} |" if c else " | |"
                lines.append(row)
        d = results["details"].get(sec, {})
        if sec == "nmea" and d.get("decode_vs_gpsdecode"):
            lines += [
                "",
                "Whole `tianwang decode --driver beidou -` process against `gpsdecode` (best of the runs):",
                "",
                "| corpus shape | size | tianwang decode | gpsdecode | speed-up |",
                "|---|---|---|---|---|",
            ]
            for r in d["decode_vs_gpsdecode"]:
                lines.append(
                    f"| {r['shape']} | {r['items']:,} frames+sentences, {r['bytes'] / 1e6:.1f} MB | {r['tianwang_s']:.3f} s | "
                    f"{r['gpsdecode_s']:.3f} s | {r['ratio']:.2f}x |"
                )
        if sec == "latency" and d.get("rates"):
            t = d["design_target"]
            ordered = sorted(
                d["rates"],
                key=lambda r: (list(MODE_LABELS).index(_mode(r)) if _mode(r) in MODE_LABELS else 9, r["rate"]),
            )
            lines += [
                "",
                f"Design target: p99 <= {t['p99_ms']:g} ms at {t['rate']:,} readings/s.",
                "",
                "| readings/s | journal | devices (pty + TCP) x Hz | p50 ms | p99 ms | p999 ms | max ms | missing "
                "| CPU cores: gateway / devices / subscriber |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in ordered:
                cpu = " / ".join(
                    "n/a" if r.get(k) is None else f"{r[k]:.2f}"
                    for k in ("gateway_cpu_cores", "devices_cpu_cores", "subscriber_cpu_cores")
                )
                lines.append(
                    f"| {r['rate']:,} | {_mode(r)} | {r['pty_devices']} + {r['tcp_devices']} x {r['hz_per_device']} | "
                    f"{_fmt(r['p50_ms'], 'ms')} | {_fmt(r['p99_ms'], 'ms')} | {_fmt(r['p999_ms'], 'ms')} | "
                    f"{_fmt(r['max_ms'], 'ms')} | {r['missing'] + r['write_refused']} | {cpu} |"
                )
            staged = [r for r in ordered if r.get("stages", {}).get("readings")]
            if staged:
                from tianwang.gateway.benchmarks.latency import STAGE_LABELS, STAGES

                lines += [
                    "",
                    "Where the time goes, p50 / p99 ms of each stage (the gateway's stage trace; the first "
                    "stage split into its two halves for the readings of the two recorded devices; "
                    "`gRPC write` is how long gRPC took to accept a batch, during which the next one gathers):",
                    "",
                    "| readings/s | journal | "
                    + " | ".join(STAGE_LABELS[k] for k in STAGES[:1] + ("read", "decode") + STAGES[1:])
                    + " | gRPC write | envelopes per batch |",
                    "|---|---|" + "---|" * (len(STAGES) + 4),
                ]
                for r in staged:
                    st = r["stages"]
                    keys = STAGES[:1] + ("read", "decode") + STAGES[1:] + ("grpc_write",)
                    cells = [
                        f"{_fmt(st[k]['p50_ms'], 'ms')} / {_fmt(st[k]['p99_ms'], 'ms')}" if k in st else "n/a"
                        for k in keys
                    ]
                    per = st.get("envelopes_per_batch")
                    per = f"{per:.2f}" if per else "n/a"
                    lines.append(f"| {r['rate']:,} | {_mode(r)} | " + " | ".join(cells) + f" | {per} |")
            at = [r for r in d["rates"] if r["rate"] == t["rate"] and _mode(r) == "memory"]
            if at and at[0]["p99_ms"] is not None:
                verdict = "met" if at[0]["p99_ms"] <= t["p99_ms"] else "not met"
                lines += ["", f"At {t['rate']:,} readings/s: p99 {at[0]['p99_ms']:.2f} ms, target {verdict}."]
            else:
                lines += ["", f"{t['rate']:,} readings/s was not run (the full run does; --quick does not)."]
            lines += [
                "",
                "Devices, gateway and subscriber are three processes; on a machine with fewer free cores "
                "than that, they queue behind each other and the tail shows it.",
            ]
        if sec == "scale" and d.get("runs"):
            lines += [
                "",
                "| run | connect s | window s | gateway CPU | RSS (peak) MiB | received / sent | gaps |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in d["runs"]:
                lines.append(
                    f"| {r['label']} | {r.get('connect_s')} | {r['window_s']:g} | {r['gateway_cpu_cores']:.3f} cores | "
                    f"{r['gateway_rss_mib']} ({r['gateway_peak_rss_mib']}) | {r['received']:,} / {r['expected']:,} | "
                    f"{r['gaps']} |"
                )
        if results["notes"].get(sec) or any(e["section"] == sec for e in results["errors"]):
            lines.append("")
        for note in results["notes"].get(sec, []):
            lines.append(f"- {note}")
        for e in results["errors"]:
            if e["section"] == sec:
                lines.append(f"- **failed** {e['step']}: {e['error']}")
        for plot in [f"{sec}.png"] + ([f"{sec}-distribution.png", f"{sec}-stages.png"] if sec == "latency" else []):
            if plot in plots:
                lines += ["", f"![{TITLES.get(sec, sec)}]({plot})"]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text
