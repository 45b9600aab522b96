"""Offline decoding of JT/T 808 captures (`tianwang decode --driver jt808`): the decoder prints what
the live listener published for the same bytes (recorded beside each capture), whole or split."""

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.jt808.decode import Decoder
from tianwang.gateway.cli.decode import run_decode

CAPTURES = Path(__file__).parent / "captures" / "jt808"
ROOT = Path(__file__).resolve().parent.parent
SESSIONS = {
    "jt808_2013_session": ("13912345678", {"bad_checksum": 1, "truncated": 1, "unsupported": 1}),
    "jt808_2019_session": ("13500000019", {"truncated": 1}),
}


def expected(name):
    lines = (CAPTURES / f"{name}.expected.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def decode_all(decoder, chunks):
    out = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    out += decoder.finish()
    return out


def as_json(pubs, phone):
    # the same round trip through JSON that `tianwang decode` makes
    return [
        json.loads(
            json.dumps({"topic": f"gnss/{phone}/{x.channel}", "device_time_ns": x.device_time_ns, "payload": x.payload})
        )
        for x in pubs
    ]


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_decode_prints_what_the_listener_published(name):
    phone, drops = SESSIONS[name]
    out, err = io.StringIO(), io.StringIO()
    with open(CAPTURES / f"{name}.bin", "rb") as f:
        assert run_decode("jt808", phone, f, out, err) == 0
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert got == expected(name)
    summary = err.getvalue()
    for reason, n in drops.items():
        assert f"{reason}={n}" in summary


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_any_split_gives_the_same_publications(name):
    phone, drops = SESSIONS[name]
    data = (CAPTURES / f"{name}.bin").read_bytes()
    whole = Decoder(phone)
    reference = as_json(decode_all(whole, [data]), phone)
    assert reference == expected(name)
    assert whole.drops == drops
    one = Decoder(phone)
    assert as_json(decode_all(one, [data[i : i + 1] for i in range(len(data))]), phone) == reference
    assert one.drops == drops and one.frames == whole.frames and one.dropped_bytes == whole.dropped_bytes
    rng = random.Random(name)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)]
        d = Decoder(phone)
        assert as_json(decode_all(d, chunks), phone) == reference
        assert d.drops == drops


def test_2013_capture_values_read_independently():
    pubs = decode_all(Decoder("13912345678"), [(CAPTURES / "jt808_2013_session.bin").read_bytes()])
    fixes = [x.payload for x in pubs if x.channel == "fix"]
    alarms = [x.payload for x in pubs if x.channel == "alarm"]
    # 10 live reports (the duplicate is not published), 3 stored, 30 from the split batch, 1 without a fix
    assert len(fixes) == 44
    assert fixes[0]["lat"] == 0x01577E7E / 1e6 and fixes[0]["lon"] == 0x06CD7D7D / 1e6
    assert fixes[0]["time_ns"] == 1718000000 * 10**9 and fixes[0]["speed_mps"] == round(30 / 3.6, 4)
    assert [f["alarm"] for f in fixes[:10]] == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert alarms == [
        {"kind": "sos", "active": True, "raw": "0x00000001", "alarm_word": 1},
        {"kind": "sos", "active": False, "raw": "0x00000000", "alarm_word": 0},
    ]
    assert [f["stored"] for f in fixes].count(True) == 3 and all(f["alarm"] == 1 for f in fixes[10:13])
    assert [round(f["lon"], 6) for f in fixes[13:43]] == [round(0x06CD7D7D / 1e6 + i * 0.00005, 6) for i in range(30)]
    last = fixes[-1]
    assert last["quality"] == 0 and last["time_ns"] is None and last["signal"] == 9 and last["sats_used_total"] == 0


def test_2019_capture_values_read_independently():
    pubs = decode_all(Decoder("13500000019"), [(CAPTURES / "jt808_2019_session.bin").read_bytes()])
    fixes = [x.payload for x in pubs]
    assert len(fixes) == 6 and all(x.channel == "fix" for x in pubs)
    assert all(f["lat"] < 0 and f["lon"] < 0 for f in fixes)
    assert fixes[0]["sats_used"] == {"BDS": 9, "GPS": 0, "GLO": 0, "GAL": 0, "QZSS": 0}
    assert (fixes[-1]["lat"], fixes[-1]["lon"], fixes[-1]["alt_m"]) == (-33.4512, -70.6585, 561.0)


def test_resend_split_and_second_phone_in_a_crafted_stream():
    bcd = p.phone_to_bcd("13000000001")
    other = p.phone_to_bcd("13000000002")
    from tianwang.gateway.framing import encode_jt808

    loc = p.location_body(1.0, 2.0, 1718000000 * 10**9)
    stream = (
        encode_jt808(p.build(p.LOCATION, loc, bcd, 5))
        + encode_jt808(p.build(p.LOCATION, loc, bcd, 5))  # resend: not published again
        + encode_jt808(p.build(p.LOCATION, loc, bcd, 6))  # same body, new serial: a new report
        + encode_jt808(p.build(p.LOCATION, loc, other, 7))  # another phone on the same connection
        + encode_jt808(p.build(p.LOCATION, loc[:20], bcd, 8))  # short body
    )
    d = Decoder("13000000001")
    pubs = decode_all(d, [stream])
    assert len(pubs) == 2
    assert d.drops == {"phone_mismatch": 1, "bad_body": 1}
    assert d.frames == 5


def test_tianwang_decode_command_line():
    name = "jt808_2013_session"
    env = dict(os.environ)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tianwang",
            "decode",
            "--driver",
            "jt808",
            "--id",
            "13912345678",
            str(CAPTURES / f"{name}.bin"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == expected(name)
    assert "46 publications" in proc.stderr and "bad_checksum=1" in proc.stderr


from hypothesis import given, strategies as st  # noqa: E402

MSG_IDS = [p.TERMINAL_ACK, p.HEARTBEAT, p.LOGOUT, p.REGISTER, p.AUTH, p.LOCATION, p.LOCATION_REPLY, p.BATCH, 0x0900]


@given(
    msg_id=st.sampled_from(MSG_IDS),
    body=st.binary(max_size=300),
    version=st.sampled_from([None, 1]),
    noise=st.binary(max_size=40),
)
def test_any_checked_frame_is_published_or_counted_and_the_next_survives(msg_id, body, version, noise):
    from tianwang.gateway.framing import encode_jt808

    width = 10 if version else 6
    bcd = bytes.fromhex("13000000001".rjust(width * 2, "0"))
    good = encode_jt808(p.build(p.LOCATION, p.location_body(1.5, 2.5, 1718000000 * 10**9), bcd, 60000, version))
    d = Decoder("13000000001")
    pubs = d.feed(noise + encode_jt808(p.build(msg_id, body, bcd, 1, version)) + good)
    pubs += d.finish()
    assert pubs and pubs[-1].channel in ("fix", "alarm")
    last_fix = [x for x in pubs if x.channel == "fix"][-1].payload
    assert (last_fix["lat"], last_fix["lon"]) == (1.5, 2.5)
