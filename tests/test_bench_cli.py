"""`tianwang bench` at tiny sizes: results.json has every field docs/bench.md documents, with its
type (and nothing undocumented), report.md and valid PNG plots are written, a doctored baseline is
flagged, bad options are one-line errors. The figures themselves are not checked: speed belongs in
bench/."""

import copy
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from gw import ROOT
from tianwang.gateway.benchmarks import runner

pytestmark = pytest.mark.timeout(120)

# the four sections that run in seconds; `scale` starts a gateway per device fleet (four), with their simulators
TINY = ["--quick", "--scale", "0.002", "--sections", "nmea,router,fanout,latency"]
TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def bench(*args, timeout=100):
    return subprocess.run(
        [sys.executable, "-m", "tianwang", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


def documented_fields() -> dict[str, str]:
    """`path` -> type from the results.json table of docs/bench.md."""
    text = (ROOT / "docs" / "bench.md").read_text().split("## `results.json`", 1)[1]
    fields = dict(re.findall(r"^\| `([a-z_.\[\]]+)` \| ([a-z ]+?) \|", text, re.M))
    assert len(fields) > 20, fields
    return fields


def check(value, kind: str, where: str):
    kinds = kind.split(" or ")
    ok = any(value is None if k == "null" else TYPES[k](value) for k in kinds)
    assert ok, f"{where}: {value!r} is not {kind}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = bench(*TINY, "--out", str(out))
    return out, r


def test_results_json_matches_the_documented_schema(tiny_run):
    out, r = tiny_run
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads((out / "results.json").read_text())
    fields = documented_fields()
    for path, kind in fields.items():
        if path == "baseline":
            continue  # only with --baseline: test_a_doctored_baseline_is_flagged
        if "[]." in path:
            array, key = path.split("[].")
            assert results[array], f"{array} is empty"
            for i, item in enumerate(results[array]):
                assert key in item, f"{array}[{i}] has no {key}"
                check(item[key], kind, f"{array}[{i}].{key}")
        elif "." in path:
            parent, key = path.split(".")
            assert key in results[parent], f"no {path}"
            check(results[parent][key], kind, path)
        else:
            assert path in results, f"no {path}"
            check(results[path], kind, path)
    # nothing undocumented, at the levels the table covers
    assert set(results) - {"baseline"} <= set(fields)
    assert {f"machine.{k}" for k in results["machine"]} <= set(fields)
    assert {f"metrics[].{k}" for m in results["metrics"] for k in m} <= set(fields)
    assert results["schema_version"] == runner.SCHEMA_VERSION
    assert results["sections"] == ["nmea", "router", "fanout", "latency"] and results["errors"] == []
    assert results["metrics"] and {m["section"] for m in results["metrics"]} == set(results["sections"])
    assert all(m["better"] in ("higher", "lower") for m in results["metrics"])
    # one name per figure within its section: the key a baseline is matched on
    keys = [(m["section"], m["name"]) for m in results["metrics"]]
    assert len(keys) == len(set(keys))
    # the latency runs went over ptys and TCP, and every reading written arrived
    runs = results["details"]["latency"]["rates"]
    for rate in runs:
        assert rate["pty_devices"] >= 1 and rate["tcp_devices"] >= 1 and rate["received"] > 0
        assert rate["missing"] == 0 and rate["p50_ms"] <= rate["p99_ms"] <= rate["p999_ms"] <= rate["max_ms"]
        # every reading that arrived was split into its stages by the gateway's trace
        stages = rate["stages"]
        assert stages["readings"] == rate["received"] and stages["envelopes_per_batch"] >= 1
        # and the readings of the recorded devices into device write -> driver read -> routed
        assert 0 < stages["sampled_reads"] <= stages["readings"]
        for stage in ("routed", "read", "decode", "journal", "stream", "delivery", "grpc_write"):
            assert stages[stage]["p50_ms"] <= stages[stage]["p99_ms"]
        ps = [p for p, _ in rate["distribution"]]
        assert ps == sorted(ps) and ps[0] == 0.5 and rate["distribution"][0][1] == rate["p50_ms"]
    # the default journal in memory at each rate, and on disk under both synced policies
    assert {r["journal"] for r in runs} == {"memory", "disk-batch", "disk-always"}


def test_report_and_plots_are_written(tiny_run):
    out, r = tiny_run
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    m = results["machine"]
    assert report.startswith("# tianwang bench")
    assert f"USING_CEXT={m['using_cext']}" in report and m["cpu_model"] in report and m["python"] in report
    for title in ("NMEA decoding and framing", "Router and journal", "gRPC fan-out", "End-to-end latency"):
        assert f"## {title}" in report
    assert "## Scale" not in report  # not asked for
    for peer, version in results["peers"].items():
        assert f"{peer} {version if version else 'not installed (skipped)'}" in report
    for name in (
        "nmea.png",
        "router.png",
        "fanout.png",
        "latency.png",
        "latency-distribution.png",
        "latency-stages.png",
    ):
        assert f"]({name})" in report
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 200
            img.verify()
    assert not (out / "scale.png").exists()
    # progress: plain lines on stderr (not a terminal), the summary on stdout
    assert re.search(r"^bench \[1/\d+\] nmea: ", r.stderr, re.M), r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith(f"tianwang bench: {len(results['metrics'])} figures")


def test_a_doctored_baseline_is_flagged(tiny_run, tmp_path):
    out, _ = tiny_run
    base = json.loads((out / "results.json").read_text())
    doctored = copy.deepcopy(base)
    victims = {}
    for m in doctored["metrics"]:
        if m["section"] == "router" and m["better"] == "higher" and m["value"]:
            m["value"] *= 100  # the baseline was 100x faster (every run of it): now is 99% worse
            m["best"] *= 100
            victims[m["name"]] = m
        elif m["section"] == "router":
            m["value"] = (m["value"] or 0) / 100
            m["best"] = (m["best"] or 0) / 100
    (tmp_path / "old.json").write_text(json.dumps(doctored))
    r = bench(
        "--scale",
        "0.002",
        "--quick",
        "--sections",
        "router",
        "--out",
        str(tmp_path / "new"),
        "--baseline",
        str(tmp_path / "old.json"),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    flagged = re.findall(r"^REGRESSION: router: (.+?): ", r.stdout, re.M)
    assert set(flagged) == set(victims), r.stdout
    results = json.loads((tmp_path / "new" / "results.json").read_text())
    fields = documented_fields()
    check(results["baseline"], fields["baseline"], "baseline")
    assert {x["name"] for x in results["baseline"]["regressions"]} == set(victims)
    report = (tmp_path / "new" / "report.md").read_text()
    assert "## Against the baseline" in report and report.count("**REGRESSION**") == len(victims)

    # the same run against a baseline 100x slower: nothing flagged, exit 0
    for m in doctored["metrics"]:
        if m["name"] in victims:
            m["value"] /= 100 * 100
            m["best"] /= 100 * 100
    (tmp_path / "old.json").write_text(json.dumps(doctored))
    r = bench(
        "--scale",
        "0.002",
        "--quick",
        "--sections",
        "router",
        "--out",
        str(tmp_path / "new"),
        "--baseline",
        str(tmp_path / "old.json"),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "REGRESSION" not in r.stdout and f"{len(victims)} figures compared, 0 regressed" in r.stdout


def test_compare_flags_only_changes_beyond_the_threshold():
    def result(**values):
        return {
            "metrics": [
                {"section": "s", "name": n, "unit": "readings" if n == "lost" else "u", "better": b, "value": v}
                for n, (b, v) in values.items()
            ]
        }

    base = result(
        rate=("higher", 100.0), lat=("lower", 10.0), lost=("lower", 0.0), cpu=("lower", 0.0), gone=("higher", 5.0)
    )
    assert [c["regressed"] for c in runner.compare(base, base)] == [False] * 5
    now = result(
        rate=("higher", 89.0), lat=("lower", 10.9), lost=("lower", 1.0), cpu=("lower", 0.003), new=("higher", 1.0)
    )
    got = {c["name"]: c for c in runner.compare(now, base)}
    assert set(got) == {"rate", "lat", "lost", "cpu"}  # only what both have
    assert got["rate"]["regressed"] and round(got["rate"]["change_pct"]) == -11
    assert not got["lat"]["regressed"]  # 9% worse: under 10
    assert got["lost"]["regressed"]  # any loss where there was none
    assert not got["cpu"]["regressed"]  # no percentage of nothing
    assert not runner.compare(now, base, threshold_pct=12)[0]["regressed"]
    better = result(rate=("higher", 500.0), lat=("lower", 1.0), lost=("lower", 0.0))
    assert not any(c["regressed"] for c in runner.compare(better, base))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--sections", "nmea,bogus"],
            "argument --sections: 'nmea,bogus': sections are nmea, router, fanout, latency, scale",
        ),
        (["--sections", ""], "argument --sections: '': sections are"),
        (["--scale", "0"], "argument --scale: 0 is out of range (0.001 to 100)"),
        (["--scale", "nan"], "argument --scale: 'nan' is not a number"),
        (["--threshold", "-5"], "argument --threshold: -5 is out of range (0 to 1000 %)"),
        (["--quick", "extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_options_are_usage_errors(args, message):
    r = bench(*args, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr.splitlines()[-1], r.stderr
    assert "Traceback" not in r.stderr


def test_bad_baseline_or_out_is_one_line(tmp_path):
    not_json = tmp_path / "x.json"
    not_json.write_text("{nope")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema_version": 99, "metrics": []}))
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases = [
        (
            ["--baseline", str(tmp_path / "missing.json")],
            f"tianwang bench: --baseline: cannot read {tmp_path / 'missing.json'}: No such file or directory",
        ),
        (["--baseline", str(not_json)], f"tianwang bench: --baseline: {not_json} is not JSON"),
        (
            ["--baseline", str(other)],
            f"tianwang bench: --baseline: {other} has schema_version 99; this tianwang reads 1",
        ),
        (["--out", str(a_file / "sub")], f"tianwang bench: --out {a_file / 'sub'}: cannot write there"),
    ]
    for args, message in cases:
        r = bench(*args, "--sections", "router", timeout=30)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(message), (args, r.stderr)
        assert r.stdout == ""


def test_missing_matplotlib_is_one_line(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None; from tianwang.gateway.cli.main import main; "
        f"sys.exit(main(['bench', '--out', {str(tmp_path)!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr == (
        "tianwang bench: matplotlib is not installed (the plots); install the bench extra: "
        "pip install 'tianwang[bench]'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_peer_is_skipped_and_named(tmp_path):
    # pynmea2 hidden from the import system, gpsdecode from PATH: the run goes on without them
    code = (
        "import sys; sys.modules['pynmea2'] = None; from tianwang.gateway.cli.main import main; "
        f"sys.exit(main(['bench', '--quick', '--scale', '0.002', '--sections', 'nmea', '--out', {str(tmp_path)!r}]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(tmp_path / "nothing-here")},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    skipped = [line for line in r.stdout.splitlines() if line.startswith("skipped: ")]
    assert skipped == [
        "skipped: nmea: pynmea2: not installed (pip install 'tianwang[bench]')",
        *(
            f"skipped: nmea: gpsdecode on {shape}: not installed (Debian package gpsd-clients)"
            for shape in ("nmea", "many", "short", "mixed-ubx", "mixed-casic")
        ),
    ]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["peers"]["pynmea2"] is None and results["peers"]["gpsdecode"] is None
    assert results["peers"]["pynmeagps"]  # still there, still measured
    names = {m["name"] for m in results["metrics"]}
    assert "decode pynmeagps" in names and "decode pynmea2" not in names
    assert not any("gpsdecode" in n for n in names) and results["errors"] == []
    report = (tmp_path / "report.md").read_text()
    assert "pynmea2 not installed (skipped)" in report and "gpsdecode not installed (skipped)" in report
    assert "- skipped pynmea2: not installed" in report
