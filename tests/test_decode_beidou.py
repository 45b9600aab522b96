"""`tianwang decode --driver beidou`: receiver captures replayed to their expected output (whole,
split, on both implementations), facts read from them independently, agreement with gpsd's
`gpsdecode` on positions and times, and the JSON-lines writer against its twin."""

import datetime as dt
import io
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.decode import Decoder
from tianwang.drivers.beidou.receiver import ReceiverProtocol
from tianwang.gateway import framing
from tianwang.gateway.cli.decode import run_decode
from tianwang.gateway.lifecycle.driver import Publication

CAPTURES = Path(__file__).parent / "captures" / "beidou"
NAMES = [
    "bd410004_bds_only",
    "nmea410_multi_gnss",
    "casic_bds3_terminal",
    "dualband_satellites_first",
    "casic_at6558_mixed",
    "ublox_m8_mixed",
]
# fixes from binary messages (full precision): not compared with gpsdecode's NMEA-rounded positions
BINARY_NAMES = ["casic_at6558_mixed", "ublox_m8_mixed"]
ROOT = Path(__file__).resolve().parents[1]


def capture(name):
    return (CAPTURES / f"{name}.nmea").read_bytes()


def expected(name):
    return (CAPTURES / f"{name}.expected.jsonl").read_text(encoding="utf-8")


def decode_text(data, impl=None, cuts=()):
    """What `tianwang decode` writes for `data`, fed in pieces, on one implementation."""
    impl = impl or framing
    proto = ReceiverProtocol("capture", implementation=impl)
    out, last = [], 0
    for cut in list(cuts) + [len(data)]:
        out.append(impl.json_lines("gnss/capture/", proto.feed(data[last:cut], None)))
        last = cut
    out.append(impl.json_lines("gnss/capture/", proto.finish(None)))
    return "".join(out)


def records(text):
    return [json.loads(line) for line in text.splitlines()]


def on(recs, channel):
    return [r for r in recs if r["topic"] == f"gnss/capture/{channel}"]


@pytest.mark.parametrize("name", NAMES)
def test_capture_decodes_to_its_expected_output(name):
    out, err = io.StringIO(), io.StringIO()
    assert run_decode("beidou", "capture", io.BytesIO(capture(name)), out, err) == 0
    assert out.getvalue() == expected(name)
    assert err.getvalue().startswith("tianwang decode: ")


@pytest.mark.parametrize("name", NAMES)
def test_capture_same_output_split_and_on_the_twin(impl, name):
    data = capture(name)
    rng = random.Random(name)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(data)), 30))
        assert decode_text(data, impl, cuts) == expected(name)
    assert decode_text(data, impl, range(1, len(data), 7)) == expected(name)


def test_bd410004_capture_facts():
    recs = records(expected("bd410004_bds_only"))
    fixes = on(recs, "fix")
    t0 = int(dt.datetime(2024, 11, 28, 8, 30, tzinfo=dt.UTC).timestamp()) * 10**9
    assert [f["payload"]["time_ns"] for f in fixes] == [t0 + k * 10**9 for k in range(22)]
    assert [f["payload"]["quality"] for f in fixes[:4]] == [0, 0, 0, 1]
    assert fixes[3]["payload"]["lat"] == 31.2304 and fixes[3]["payload"]["lon"] == 121.4737
    assert all(f["payload"]["sats_used"] == {"BDS": 8, "GPS": 0, "GLO": 0, "GAL": 0, "QZSS": 0} for f in fixes[3:])
    assert [(s["payload"]["state"], s["payload"]["reason"]) for s in on(recs, "state")] == [
        ("NO_FIX", "RMC status V"),
        ("FIX", "3D fix, 8 satellites"),
    ]
    assert [(a["payload"]["kind"], a["payload"]["active"]) for a in on(recs, "alarm")] == [
        ("antenna_open", True),
        ("antenna_open", False),
    ]
    (msg,) = on(recs, "message")
    assert msg["payload"]["text"] == "巡逻车01请到人民广场集合" and msg["payload"]["sender"] == "0245001"
    assert bytes.fromhex(msg["payload"]["raw"]).decode("gb2312") == msg["payload"]["text"]
    dec = Decoder("capture")
    dec.feed(capture("bd410004_bds_only"))
    dec.finish()
    assert dec.dropped_bytes == 14 and sum(dec.drops.values()) == 0
    events = dec.protocol.take_rdss_events()
    assert [(type(e).__name__, getattr(e, "code", None)) for e in events] == [
        ("CardInfo", None),
        ("RdssFeedback", "interval_not_reached"),
        ("RdssFeedback", "ok"),
    ]


def test_nmea410_capture_facts():
    recs = records(expected("nmea410_multi_gnss"))
    fixes = on(recs, "fix")
    t0 = int(dt.datetime(2024, 12, 31, 23, 59, 55, tzinfo=dt.UTC).timestamp()) * 10**9
    assert [f["device_time_ns"] for f in fixes] == [t0 + k * 10**9 for k in range(15)]  # across New Year
    truth = {"BDS": 6, "GPS": 6, "GLO": 2, "GAL": 3, "QZSS": 0}
    assert all(f["payload"]["sats_used"] == truth for f in fixes)
    assert fixes[5]["payload"]["alt_m"] is None and fixes[4]["payload"]["alt_m"] == 48.9  # GGA lost in the reset
    assert [s["payload"]["state"] for s in on(recs, "state")] == ["FIX", "DEGRADED", "FIX"]
    dec = Decoder("capture")
    dec.feed(capture("nmea410_multi_gnss"))
    dec.finish()
    assert (dec.drops["bad_checksum"], dec.drops["truncated"], dec.drops["binary"]) == (1, 1, 16)


def test_casic_capture_facts():
    recs = records(expected("casic_bds3_terminal"))
    t0 = int(dt.datetime(2025, 3, 15, 2, 14, tzinfo=dt.UTC).timestamp()) * 10**9
    assert [(s["payload"]["state"], s["device_time_ns"]) for s in on(recs, "state")] == [
        ("FIX", t0),
        ("STALE", t0 + 8 * 10**9),
        ("FIX", t0 + 12 * 10**9),
    ]
    assert len(on(recs, "fix")) == 12
    (msg,) = on(recs, "message")
    assert (msg["payload"]["text"], msg["payload"]["recipient"], msg["payload"]["protocol"]) == (
        "收到，十分钟后到达",
        "15950044",
        "bds3",
    )
    dec = Decoder("capture")
    dec.feed(capture("casic_bds3_terminal"))
    dec.finish()
    assert (dec.drops["too_long"], dec.drops["binary"], dec.protocol._decoder.unchecked) == (1, 12, 1)
    events = dec.protocol.take_rdss_events()
    feedback = [(e.command, e.ok, e.code, e.wait_s) for e in events if type(e).__name__ == "RdssFeedback"]
    assert feedback == [("TCQ", False, "interval_not_reached", 27), ("TCQ", True, "ok", 0)]
    assert dec.protocol.card.card_id == "15950044" and dec.protocol.card.encrypted


# ---------------------------------------------------------------------------------------------
# gpsd


def gpsdecode(data):
    """gpsd's reading of the same NMEA: {time_ns: (lat, lon)} of its TPV reports with a fix."""
    exe = shutil.which("gpsdecode")
    if exe is None:
        pytest.fail("gpsdecode is not installed: `apt-get install -y gpsd-clients` (the CI script does)")
    out = subprocess.run([exe], input=data, capture_output=True, timeout=60, check=True).stdout
    fixes = {}
    for line in out.decode().splitlines():
        tpv = json.loads(line)
        if tpv.get("class") == "TPV" and tpv.get("mode", 0) >= 2 and "lat" in tpv and "time" in tpv:
            when = dt.datetime.strptime(tpv["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
            ns = int(when.timestamp()) * 10**9 + when.microsecond * 1000
            fixes.setdefault(ns, []).append((tpv["lat"], tpv["lon"]))
    return fixes


def ours(data):
    return {
        r["payload"]["time_ns"]: (r["payload"]["lat"], r["payload"]["lon"])
        for r in on(records(decode_text(data)), "fix")
        if r["payload"]["quality"] > 0
    }


def long_route():
    """Ten minutes of a car in Wuhan, both talker styles, every sentence kind, 0.1 s epochs at the
    end (fractional times), positions with 7 decimals of minutes."""
    t0 = int(dt.datetime(2025, 6, 30, 23, 55, tzinfo=dt.UTC).timestamp()) * 10**9
    out = []
    for k in range(600):
        style = "nmea410" if (k // 100) % 2 == 0 else "bd"
        step = 10**8 if k >= 500 else 10**9
        t = t0 + min(k, 500) * 10**9 + max(0, k - 500) * step
        ang = k / 90.0
        sats = [w.Satellite("BDS", s, 30 + s, 7 * s % 360, 40, used=True) for s in (1, 3, 6, 9, 14, 26, 33)]
        sats += [w.Satellite("GPS", s, 25 + s, 9 * s % 360, 38, used=True) for s in (4, 8, 11)]
        st_ = w.EpochState(
            time_ns=t,
            lat=30.5928 + 0.01 * math.sin(ang),
            lon=114.3055 + 0.012 * math.cos(ang),
            alt_m=23.0,
            geoid_sep_m=-13.1,
            speed_mps=9.0,
            course_deg=(k * 3) % 360,
            hdop=0.8,
            pdop=1.4,
            vdop=1.1,
            satellites=sats,
        )
        out.append(
            w.EpochWriter(
                style=style, order=("RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA"), latlon_decimals=7
            ).epoch(st_)
        )
    return b"".join(out)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in BINARY_NAMES] + ["long_route"])
def test_positions_and_times_match_gpsdecode(name):
    # Same NMEA, read by gpsd 3.22 and by us: for every epoch gpsd reports a fix for, we report the
    # same time and the same position within 1e-7 degree. Satellite counts are not compared: gpsd
    # before 3.25 takes NMEA 4.10 BDS satellites (System ID 4, numbers 1..63) for GPS or SBAS and
    # reports too few used (see nmea410_multi_gnss.md); test_nmea410_capture_facts checks ours.
    data = long_route() if name == "long_route" else capture(name)
    theirs, mine = gpsdecode(data), ours(data)
    assert len(theirs) >= (500 if name == "long_route" else 10), "gpsd reported too few fixes to compare"
    for time_ns, positions in theirs.items():
        assert time_ns in mine, f"gpsd has a fix at {time_ns} that we do not"
        for lat, lon in positions:
            assert abs(mine[time_ns][0] - lat) <= 1e-7 and abs(mine[time_ns][1] - lon) <= 1e-7, (time_ns, lat, lon)


# ---------------------------------------------------------------------------------------------
# the command and the JSON writer


def test_cli_decode_file_and_stdin(tmp_path):
    path = CAPTURES / "casic_bds3_terminal.nmea"
    done = subprocess.run(
        [sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "--id", "bd-7", str(path)],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines == expected("casic_bds3_terminal").replace("gnss/capture/", "gnss/bd-7/").splitlines()
    assert "140 frames" in done.stderr.decode() and "too_long=1" in done.stderr.decode()
    piped = subprocess.run(
        [sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "-"],
        input=path.read_bytes(),
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    assert piped.returncode == 0 and piped.stdout.decode() == expected("casic_bds3_terminal")


def test_cli_decode_stops_quietly_when_the_reader_goes_away(tmp_path):
    # `tianwang decode ... | head -1`: no traceback, exit 0
    path = tmp_path / "long.nmea"
    path.write_bytes((CAPTURES / "casic_bds3_terminal.nmea").read_bytes() * 3000)
    with open(path, "rb") as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "-"],
            cwd=ROOT,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0 and json.loads(first)["topic"].startswith("gnss/capture/")
    assert "Traceback" not in err and "Exception" not in err, err


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(-1e6, 1e6).map(lambda x: round(x, 4)),
        st.text(max_size=12),
        st.binary(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=20,
)


@given(
    payloads=st.lists(st.tuples(st.text(min_size=1, max_size=8), json_values, st.integers(0, 2**63 - 1)), max_size=4),
    prefix=st.text(max_size=10),
)
def test_json_lines_twins_agree(payloads, prefix):
    pubs = [
        Publication(channel, value if isinstance(value, dict) else {"v": value}, t) for channel, value, t in payloads
    ]
    texts = [impl.json_lines(prefix, pubs) for impl in framing.implementations()]
    assert all(t == texts[0] for t in texts)
    assert all(impl.json_lines_utf8(prefix, pubs) == texts[0].encode() for impl in framing.implementations())
    lines = texts[0].split("\n")  # not splitlines(): U+0085 and U+2028 may sit inside strings
    assert lines[-1] == "" and len(lines) == len(pubs) + 1
    for line, pub in zip(lines[:-1], pubs, strict=True):
        obj = json.loads(line)
        assert obj["topic"] == prefix + pub.channel and obj["device_time_ns"] == pub.device_time_ns


def test_json_lines_matches_json_module_float_for_float():
    floats = [
        0.1,
        0.30000000000000004,
        1e-4,
        9.999e-5,
        123456.789,
        999999.999999999,
        1e6,
        5e-324,
        -0.0,
        2.5,
        31.846353908,
        117.198724278,
        1 / 3,
        12.441,
        6.4002,
        1e16,
        1e22,
    ]
    pubs = [Publication("x", {"v": f}, 0) for f in floats]
    for impl in framing.implementations():
        got = [json.loads(line)["payload"]["v"] for line in impl.json_lines("p/", pubs).splitlines()]
        assert got == floats
        assert impl.json_lines("p/", pubs) == "".join(
            json.dumps({"topic": "p/x", "device_time_ns": 0, "payload": {"v": f}}, separators=(",", ":")) + "\n"
            for f in floats
        )


def test_json_lines_key_cache_never_writes_a_stale_key(impl):
    # the compiled writer remembers dict keys by object: keys made and dropped one after another
    # (addresses get reused), keys equal in value but distinct objects, keys needing escapes
    for round_ in range(3):
        pubs = []
        for i in range(3000):
            key = "".join(("k", str(i), '"' if i % 97 == 0 else "", "é" if i % 89 == 0 else ""))
            pubs.append(Publication("x", {key: i, "lat": 1.5, str(round_ * 10_000 + i): None}, i))
            del key
        want = "".join(
            json.dumps(
                {"topic": "p/x", "device_time_ns": p.device_time_ns, "payload": p.payload},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            + "\n"
            for p in pubs
        )
        assert impl.json_lines("p/", pubs) == want
        assert impl.json_lines_utf8("p/", pubs) == want.encode()


def test_json_lines_keys_as_json_writes_them(impl):
    payload = {1: "a", -2: "b", 2.5: "c", None: "e", "f": {False: 0, True: 1}}
    assert (
        impl.json_lines("p/", [Publication("x", payload, 0)])
        == json.dumps({"topic": "p/x", "device_time_ns": 0, "payload": payload}, separators=(",", ":")) + "\n"
    )


@pytest.mark.parametrize(
    "bad,error",
    [({"v": object()}, TypeError), ({(1, 2): "tuple key"}, TypeError), ({"v": [{float("nan"): 1}]}, ValueError)],
)
def test_json_lines_refuses_what_json_cannot_carry(impl, bad, error):
    with pytest.raises(error):
        impl.json_lines("p/", [Publication("x", bad, 0)])
