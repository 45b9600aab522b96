"""`tianwang simulate jt808` as a process: its first line, its fleet against the listener, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jt808_helpers import SECRET, listener, until
from tianwang.drivers.jt808 import protocol as p
from tianwang.gateway.lifecycle.driver import Health

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


async def test_simulate_jt808_process_reports_until_sigterm():
    async with listener() as gw:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tianwang",
                "simulate",
                "jt808",
                "--connect",
                f"127.0.0.1:{gw.port}",
                "--terminals",
                "4",
                "--rate",
                "5",
                "--version",
                "2019",
                "--phone-base",
                "13300000000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ),
        )
        try:
            first = json.loads(proc.stdout.readline())
            assert first["kind"] == "jt808" and first["url"] == f"tcp://127.0.0.1:{gw.port}"
            assert first["phones"] == [str(13300000000 + i) for i in range(4)]  # one per terminal
            assert (first["first_phone"], first["last_phone"]) == ("13300000000", "13300000003")
            phones = [str(13300000000 + i) for i in range(4)]
            await until(
                lambda: all(gw.entry(x) is not None and gw.entry(x).state == Health.ONLINE for x in phones),
                15,
                "online",
            )
            await until(lambda: all(len(gw.payloads(f"gnss/{x}/fix")) >= 3 for x in phones), 10, "fixes")
            assert gw.entry(phones[0]).info["version"] == "2019"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        final = json.loads(out.strip().splitlines()[-1])["final"]
        assert final["terminals"] == 4 and final["auth_ok"] == 4 and final["registrations"] == 4
        assert final["reports_acked"] > 0 and final["acks_not_ok"] == 0
        await until(lambda: all(gw.entry(x).state == Health.OFFLINE for x in phones), 5, "offline")
        published = sum(len(gw.payloads(f"gnss/{x}/fix")) for x in phones)
        # every acknowledged position was published; at most the ones in flight at SIGTERM more
        assert final["fixes_acked"] <= published <= final["fixes_acked"] + final["pending"] + 4


def test_simulate_jt808_usage_errors():
    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "tianwang", "simulate", "jt808", *a],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )

    assert run().returncode == 2  # --connect is required
    bad = run("--connect", "nowhere")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    assert run("--connect", "127.0.0.1:1", "--terminals", "0").returncode == 2


async def test_fleet_library_counts_sent_and_acked():
    from tianwang.drivers.jt808.simulator import Fleet

    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=20, rate=20.0)
        await fleet.start()
        try:
            await fleet.wait_online()
            await until(lambda: fleet.counters["reports_acked"] >= 200, 10, "reports")
        finally:
            await fleet.stop()
        s = fleet.stats()
        assert s["online"] == 0 and s["connects"] == 20 and s["disconnects"] == 20
        published = len(gw.payloads("gnss/+/fix"))
        assert s["fixes_acked"] <= published <= s["fixes_acked"] + s["pending"]
        # each terminal drives its own route: no two report the same place
        last = {t.phone: (t.last_report["lat"], t.last_report["lon"]) for t in fleet.terminals}
        assert len(set(last.values())) == 20
        assert all(t.auth_code == p.derive_auth_code(SECRET.encode(), t.phone) for t in fleet.terminals)
