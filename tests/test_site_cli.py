"""The operator's view: `devices` shows the counters that diagnose a link, `command --out FILE`
writes a result's bytes to a file, `top` and GetStats show a token only what it may read, and a
stream whose grant a reload narrows is told so."""

import asyncio
import json
import sys

import pytest
import tw_testgen

import tianwang.drivers.onvif as onvif
from gw import GNSS_ONLY, READ, base_config, running
from onvif_helpers import camera, device
from tianwang.drivers.sdk import DriverSpec
from tianwang.gateway.cli.main import format_devices, main
from tianwang.gateway.datapath.auth import grant_narrowed
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)

CAMGEN = DriverSpec(name="camgen", family="camera", config_model=tw_testgen.TestGenConfig, factory=tw_testgen.TestGen)


# -- 12. the devices table ----------------------------------------------------------------------
def test_the_devices_table_shows_the_counters_that_diagnose_a_link():
    bad_baud = pb.Device(
        id="bd-1",
        family="gnss",
        driver="beidou",
        state="ONLINE",
        reason="",
        counters={"envelopes": 3, "reconnects": 2, "dropped_bad_checksum": 120, "dropped_noise": 7},
    )
    quiet = pb.Device(id="bd-2", family="gnss", driver="beidou", state="ONLINE", counters={"envelopes": 9})
    many = pb.Device(
        id="bd-3",
        family="gnss",
        driver="beidou",
        state="OFFLINE",
        reason="down",
        counters={"reconnects": 1, "failed_attempts": 1, "dropped_a": 1, "dropped_b": 2, "dropped_c": 3},
    )
    lines = format_devices([bad_baud, quiet, many]).splitlines()
    assert lines[0].split() == ["ID", "FAMILY", "DRIVER", "STATE", "LAST", "SEEN", "ENVELOPES", "COUNTERS", "REASON"]
    assert "reconnects=2 dropped_bad_checksum=120 dropped_noise=7" in lines[1]
    assert lines[2].split()[-1] == "-"
    assert "reconnects=1 failed_attempts=1 dropped_c=3 dropped_b=2 +1" in lines[3]


async def test_devices_prints_the_counters_from_a_running_gateway(capsys):
    cfg = base_config(
        [{"id": "gen-1", "driver": "testgen", "refuse": True, "backoff": {"initial_s": 0.01, "max_s": 0.02}}]
    )
    async with running(cfg) as gw:
        entry = gw.supervisor.lookup("gen-1")
        while entry.counters.get("reconnects", 0) < 2:
            await asyncio.sleep(0.01)
        rc = await asyncio.to_thread(main, ["devices", "--addr", f"127.0.0.1:{gw.port}", "--token", READ])
    out = capsys.readouterr().out
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith("gen-1"))
    assert "reconnects=" in row and "failed_attempts=" in row


# -- 13. command --out --------------------------------------------------------------------------
async def test_command_out_writes_a_snapshot_to_a_file(tmp_path, capsys):
    async with camera(rate=0) as sim:
        cfg = base_config([device(sim)], control=("camera/+",), name="onvif")
        async with running(cfg, onvif.SPEC) as gw:
            while gw.supervisor.lookup("cam-1").state.value != "ONLINE":
                await asyncio.sleep(0.02)
            target = tmp_path / "snap.jpg"
            args = [
                "command",
                "cam-1",
                "snapshot",
                "--addr",
                f"127.0.0.1:{gw.port}",
                "--token",
                READ,
                "--out",
                str(target),
            ]
            rc = await asyncio.to_thread(main, args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    reply = json.loads(captured.out)
    image = target.read_bytes()
    assert image[:2] == b"\xff\xd8" and len(image) == reply["result"]["size"]
    assert reply["result"]["jpeg"] == {"file": str(target), "bytes": len(image)}
    assert f"wrote {len(image)} bytes (jpeg) to {target}" in captured.err


# -- 14. a token sees what it may read ----------------------------------------------------------
async def test_stats_and_top_show_a_token_only_what_it_may_read(capsys):
    cfg = base_config(
        [
            {"id": "gen-1", "driver": "testgen", "rate_hz": 20},
            {"id": "gen-2", "driver": "testgen", "rate_hz": 20},
            {"id": "cam-9", "driver": "camgen", "rate_hz": 20},
        ]
    )
    async with running(cfg, CAMGEN) as gw:
        while gw.supervisor.lookup("cam-9").envelopes < 2:
            await asyncio.sleep(0.01)
        gis = gw.auth.principal_for(gw.auth.identify((("authorization", f"Bearer {GNSS_ONLY}"),))[1])
        families = {f.family: f for f in gw.stats(gis).families}
        assert set(families) == {"test"} and families["test"].devices == 1  # gen-1 only
        assert families["test"].envelopes == gw.supervisor.lookup("gen-1").envelopes
        everyone = {
            f.family
            for f in gw.stats(
                gw.auth.principal_for(gw.auth.identify((("authorization", f"Bearer {READ}"),))[1])
            ).families
        }
        assert everyone == {"test", "camera"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tianwang",
            "top",
            "--once",
            "--interval",
            "0.2",
            "--addr",
            f"127.0.0.1:{gw.port}",
            "--token",
            GNSS_ONLY,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    out = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "gen-1" in out or "test" in out
    assert "camera" not in out and "cam-9" not in out and "gen-2" not in out


def test_a_narrowed_grant_is_told_apart_from_an_unrelated_change():
    assert grant_narrowed(("#",), ("gnss/#",), ("#",))
    assert grant_narrowed(("gnss/#", "camera/#"), ("gnss/#",), ("camera/+/event",))
    assert not grant_narrowed(("#",), ("gnss/#",), ("gnss/+/fix",))  # the stream keeps all it read
    assert not grant_narrowed(("gnss/#",), ("gnss/#", "camera/#"), ("gnss/#",))  # widened
    assert grant_narrowed(("gnss/+/fix",), ("gnss/bd-1/fix",), ("gnss/#",))
