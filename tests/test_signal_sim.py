"""`tianwang simulate signal` as a process (first line, a driver against it, SIGTERM, usage errors),
the sans-io controller model, and the `run --demo` part."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal as sig
import subprocess
import sys
import time

import pytest

import tianwang.drivers.signal as signal
from gw import ROOT, base_config, running, until
from tianwang.drivers.signal import protocol as p
from tianwang.drivers.signal.controller import STAGE_GROUPS, Controller

pytestmark = pytest.mark.timeout(90)


def simulate(*args):
    return subprocess.run(
        [sys.executable, "-m", "tianwang", "simulate", "signal", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_usage_errors_are_one_line():
    for args, text in (
        (("--controllers", "-1"), "--controllers must be at least 1"),
        (("--profile", "acme"), "--profile 'acme' is not one of"),
        (("--transport", "pty", "--connect", "127.0.0.1:9"), "--connect needs --transport tcp"),
        (("--fault", "fire"), "fault 'fire' is not one of"),
    ):
        r = simulate(*args)
        assert r.returncode == 2, args
        assert text in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_simulator_process_serves_a_driver_until_sigterm(transport):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tianwang",
            "simulate",
            "signal",
            "--transport",
            transport,
            "--controllers",
            "2",
            "--profile",
            "ccitt",
            "--traffic-interval",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    try:
        first = json.loads(await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline))
        assert first["kind"] == "signal" and first["profile"] == "ccitt" and first["controller_ids"] == [1001, 1002]
        assert first["url"].startswith("serial:///dev/" if transport == "pty" else "tcp://127.0.0.1:")
        urls = first["urls"] if transport == "tcp" else [first["url"]] * 2
        devices = [
            {
                "id": f"tsc-{n}",
                "driver": "signal",
                "url": u,
                "controller_id": n,
                "profile": "ccitt",
                "poll_hz": 4,
                "backoff": {"initial_s": 0.1, "max_s": 0.3},
            }
            for n, u in zip(first["controller_ids"], urls, strict=True)
        ]
        async with running(base_config(devices, control=["signal/+"]), signal.SPEC) as gw:
            sup = gw.supervisor
            await until(lambda: all(sup.lookup(d["id"]).state.value == "ONLINE" for d in devices), 20, "online")
            await until(lambda: all(sup.lookup(d["id"]).envelopes >= 5 for d in devices), 20, "readings")
            result = await sup.send_command("tsc-1002", "all_red", {}, 8.0)
            assert result["mode"] == "all_red"
    finally:
        proc.send_signal(sig.SIGTERM)
        out, err = await asyncio.get_running_loop().run_in_executor(None, proc.communicate)
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])["final"]
    assert final["queries"] >= 4 and final["sets"] >= 2 and final["commands"] == 1


def test_controller_cycles_stages_with_safe_lamps():
    c = Controller(1, now=1000.0)
    seen_stages, seen_colours = [], set()
    for i in range(200):
        now = 1000.0 + i * 0.5
        lamps = c.lamps(now)
        stage = c.stage
        if not seen_stages or seen_stages[-1] != stage:
            seen_stages.append(stage)
        green = {g for g, code in lamps.items() if code in (0x20, 0x21)}
        assert green <= set(STAGE_GROUPS[stage])  # never a green outside the running stage
        seen_colours |= {p.colour(code) for code in lamps.values()}
    assert set(seen_stages) == {1, 2, 3, 4}
    assert all(b == a % 4 + 1 for a, b in zip(seen_stages, seen_stages[1:], strict=False)), (
        seen_stages
    )  # the plan's chain
    assert {"green", "green_flash", "yellow", "red"} <= seen_colours


def test_controller_answers_queries_and_refuses_what_it_cannot_do():
    c = Controller(9, now=time.time())
    q = p.query(9, 1, [(13, 2, 2, 0), (99, 1, 0, 0)])
    (reply,) = c.handle(q, time.time())
    assert reply.frame_type == p.FrameType.QUERY_ERROR and reply.values[0].value == b"\x30"
    s = p.set_request(9, 2, [(17, 1, 2, 0, b"\x07")])
    (reply,) = c.handle(s, time.time())
    assert reply.frame_type == p.FrameType.SET_ERROR and reply.values[0].value == b"\x12"
    c.silent = True
    assert c.handle(p.query(9, 3, [(13, 2, 2, 0)]), time.time()) == []


async def test_demo_part_runs_a_junction_group():
    async with contextlib.AsyncExitStack() as stack:
        part = await signal.SPEC.demo(stack)
        devices = part["devices"]
        assert len(devices) == 4
        urls = [d["url"] for d in devices]
        assert urls[0] == urls[1] == urls[2] and urls[0].startswith("serial://") and urls[3].startswith("tcp://")
        for d in devices:
            d.update(poll_hz=4)
        async with running(base_config(devices, control=["signal/+"]), signal.SPEC) as gw:
            sup = gw.supervisor
            await until(lambda: all(sup.lookup(d["id"]).state.value == "ONLINE" for d in devices), 20, "demo online")
            await until(lambda: all(sup.lookup(d["id"]).envelopes >= 4 for d in devices), 20, "demo lamps")
            result = await sup.send_command(devices[1]["id"], "yellow_flash", {}, 8.0)
            assert result["mode"] == "yellow_flash"


def test_decode_takes_the_profile(tmp_path):
    """`tianwang decode --driver signal --profile P` reads a capture of a controller speaking P; the
    same bytes under the majority profile are dropped as bad checksums, never published."""
    prof = p.PROFILES["ccitt"]
    c = Controller(77, prof, now=time.time())
    poll = p.query(77, 1, [(3, 3, 2, 0), (13, 2, 2, 0), (13, 2, 3, 0), (13, 2, 4, 0)])
    capture = tmp_path / "ccitt.bin"
    capture.write_bytes(b"".join(p.encode(m, prof) for m in c.handle(poll, time.time())) * 3)

    def decode(*args):
        return subprocess.run(
            [sys.executable, "-m", "tianwang", "decode", "--driver", "signal", *args, str(capture)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    good = decode("--profile", "ccitt")
    lines = [json.loads(x) for x in good.stdout.splitlines()]
    assert good.returncode == 0 and [x["topic"] for x in lines].count("signal/capture/lamps") == 3
    assert lines[0]["payload"]["mode"] == "local_fixed"
    wrong = decode()
    assert wrong.returncode == 0 and wrong.stdout == "" and "bad_checksum=3" in wrong.stderr
    bad = decode("--profile", "acme")
    assert bad.returncode == 2 and bad.stderr.startswith("tianwang decode: unknown profile 'acme'")
    assert "Traceback" not in bad.stderr
