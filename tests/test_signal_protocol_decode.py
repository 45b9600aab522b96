"""Offline decoding of GB/T 20999 captures (`tianwang decode --driver signal`): the recorded capture
gives its expected publications, whole, split anywhere, on both framer implementations."""

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from tianwang.drivers.signal import protocol as p
from tianwang.drivers.signal.decode import Decoder
from tianwang.gateway.cli.decode import run_decode

CAPTURES = Path(__file__).parent / "captures" / "signal"
ROOT = Path(__file__).resolve().parent.parent
CAPTURE = CAPTURES / "gbt20999_poll.bin"
DROPS = {"bad_checksum": 1, "truncated": 2, "noise": 1, "bad_message": 1, "host_frame": 1, "other_controller": 1}


def expected():
    lines = (CAPTURES / "gbt20999_poll.expected.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def as_json(pubs, device="tsc-0017"):
    return [
        json.loads(
            json.dumps(
                {"topic": f"signal/{device}/{x.channel}", "device_time_ns": x.device_time_ns, "payload": x.payload}
            )
        )
        for x in pubs
    ]


def decode_all(decoder, chunks):
    out = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.finish()


def test_capture_decodes_to_expected():
    out, err = io.StringIO(), io.StringIO()
    with open(CAPTURE, "rb") as f:
        assert run_decode("signal", "tsc-0017", f, out, err) == 0
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert got == expected()
    summary = err.getvalue()
    assert "14 frames, 13 publications" in summary
    for reason, n in DROPS.items():
        assert f"{reason}={n}" in summary


def test_capture_split_anywhere_on_both_framers(impl):
    data = CAPTURE.read_bytes()
    want = expected()
    d = Decoder("tsc-0017", framer=impl.Gbt20999Framer())
    assert as_json(decode_all(d, [data[i : i + 1] for i in range(len(data))])) == want
    assert d.drops == DROPS
    assert d.counters == {"heartbeat_reply": 2, "query_reply": 4, "report": 4, "query_error": 1}
    rnd = random.Random(20999)
    for _ in range(20):
        chunks, i = [], 0
        while i < len(data):
            j = i + rnd.randint(1, 64)
            chunks.append(data[i:j])
            i = j
        d = Decoder("tsc-0017", framer=impl.Gbt20999Framer())
        assert as_json(decode_all(d, chunks)) == want


def test_decode_command_line():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "tianwang", "decode", "--driver", "signal", "--id", "tsc-0017", str(CAPTURE)],
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.decode().splitlines()] == expected()
    assert b"bad_checksum=1" in proc.stderr


def test_other_profile():
    # a controller that does not escape and counts the length field as N-4: the decoder given that
    # profile reads it; raw 7E/7D inside values do not disturb the length framing
    prof = p.Profile(length_field="n-4", escaped=False)
    reply = p.Message(
        p.FrameType.QUERY_REPLY,
        9,
        1,
        p._values(
            [
                (3, 3, 2, 0, bytes((0x10, 0x7E, 0x7D))),
                (13, 2, 3, 0, b"\x7e"),
            ]
        ),
    )
    d = Decoder("x", profile=prof)
    pubs = d.feed(p.encode(reply, prof) * 2)
    assert [x.channel for x in pubs] == ["status", "lamps", "lamps"]
    assert pubs[1].payload["groups"] == {"1": "red", "2": "unknown_0x7e", "3": "unknown_0x7d"}
    assert pubs[0].payload["plan"] == 126
    # the majority decoder counts the same bytes as drops and publishes nothing
    m = Decoder("x")
    assert m.feed(p.encode(reply, prof)) + m.finish() == []
    assert m.drops


def test_status_only_on_change_and_stage_from_status_table():
    d = Decoder("x")
    poll = p.Message(
        p.FrameType.QUERY_REPLY,
        9,
        1,
        p._values(
            [
                (3, 3, 2, 0, bytes((0x20, 0x10))),
                (6, 3, 2, 0, bytes((0x10, 0x20))),  # stage 2 is running; no 13.2.4 in this frame
            ]
        ),
    )
    [lamps] = d.feed(p.encode(poll))
    assert lamps.channel == "lamps" and lamps.payload["stage"] == 2 and lamps.payload["stage_status"] == "running"
    mode = p.Message(p.FrameType.REPORT, 9, 2, p._values([(13, 2, 2, 0, b"\x11")]))
    [status] = d.feed(p.encode(mode))
    assert status.payload["mode"] == "centre_day_plan" and status.payload["changed"] == ["mode"]
    assert d.feed(p.encode(mode)) == []  # same mode again: no status
