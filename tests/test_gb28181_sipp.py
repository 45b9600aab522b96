"""SIPp (Debian sip-tester) as an independent GB/T 28181 device against the real gb28181 listener:
REGISTER with digest (with and without qop), keepalive MESSAGEs, and a Catalog query answered in
two chunks through an out-of-call scenario; checked through gRPC (ListDevices, Subscribe).

The scenarios and the injection file are in tests/sipp/ (`make tools` installs sipp when root)."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from gw import READ, base_config, client, md, running, unpack, until
from tianwang.v1 import gateway_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = ROOT / "tests" / "sipp"
SERVER_ID = "43030000002000000001"
pytestmark = pytest.mark.timeout(90)


def _devices():
    """(device ID, password) of each line of the injection file."""
    out = []
    for line in (SIPP_DIR / "devices.csv").read_text().splitlines()[1:]:
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split(";")
        password = fields[3].split("password=")[1].rstrip("]")
        out.append((fields[0], password))
    return out


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sipp() -> str:
    path = shutil.which("sipp")
    assert path, "sipp is missing: `make tools` installs sip-tester (or: sudo apt-get install sip-tester)"
    return path


@pytest.mark.parametrize("qop", [False, True])
async def test_sipp_devices_register_keep_alive_and_answer_the_catalog(tmp_path, qop):
    from tianwang.drivers.gb28181 import SPEC

    sipp = _sipp()
    devices = _devices()
    devices_file = tmp_path / "gb-devices.json"
    devices_file.write_text(json.dumps([{"id": d, "password": pw} for d, pw in devices]))
    os.chmod(devices_file, 0o600)
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "registration": "known",
        "devices_file": str(devices_file),
        "digest_qop": qop,
        "registrations_file": str(tmp_path / "gb.registrations"),
        "subscribe": {"catalog": True, "alarm": None, "mobile_position": None},
    }
    trace = tmp_path / "sipp-messages.log"
    async with running(base_config(listeners=[listener]), SPEC) as gw:
        entry = gw.supervisor.lookup("gb")
        await until(lambda: "listen" in entry.info, what="gb28181 listener bound")
        port = int(entry.info["listen"].rsplit(":", 1)[1])
        proc = subprocess.Popen(
            [
                sipp,
                "-sf",
                str(SIPP_DIR / "gb_device.xml"),
                "-oocsf",
                str(SIPP_DIR / "gb_catalog_ooc.xml"),
                "-inf",
                str(SIPP_DIR / "devices.csv"),
                f"127.0.0.1:{port}",
                "-i",
                "127.0.0.1",
                "-p",
                str(_free_udp_port()),
                "-t",
                "u1",
                "-m",
                str(len(devices)),
                "-l",
                str(len(devices)),
                "-r",
                "10",
                "-d",
                "30000",
                "-nostdin",
                "-max_socket",
                "100",
                "-trace_msg",
                "-message_file",
                str(trace),
                "-trace_err",
                "-error_file",
                str(tmp_path / "sipp-errors.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        try:
            async with client(gw) as (stub, _ch):

                async def rows():
                    reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
                    return {d.id: d for d in reply.devices}

                listed = {}

                async def poll():
                    listed.update(await rows())
                    return listed

                for _ in range(200):
                    listed.clear()
                    await poll()
                    ok = all(d in listed and listed[d].state == "ONLINE" for d, _ in devices)
                    channels = {d: [r for r in listed.values() if r.parent == d] for d, _ in devices}
                    if ok and all(len(c) == 2 for c in channels.values()):
                        break
                    assert proc.poll() is None, f"sipp ended early: {proc.stderr.read().decode()[-2000:]}"
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError(f"devices or catalogs missing: {sorted(listed)}")
                for d, _ in devices:
                    names = sorted(r.info.get("name", "") for r in channels[d])
                    assert names == sorted(["湘潭市雨湖区韶山西路口", "岳塘区河东大道与芙蓉路口"]), names
                    assert all(r.id.startswith(d[:10] + "131") for r in channels[d])
                # the health topic said ONLINE for each device
                req = pb.SubscribeRequest(topics=[f"camera/{d}/health" for d, _ in devices], from_seq=1, max_batch=64)
                seen = {}
                call = stub.Subscribe(req, metadata=md(READ))
                async for batch in call:
                    for env in batch.envelopes:
                        seen[env.device_id] = unpack(env.payload).get("state")
                    if all(seen.get(d) == "ONLINE" for d, _ in devices):
                        break
                call.cancel()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log = trace.read_text(errors="replace")
    auths = [line for line in log.splitlines() if line.strip().startswith("Authorization:")]
    assert len(auths) >= len(devices)
    assert all(("qop=auth" in a) == qop for a in auths)
    assert log.count("<CmdType>Keepalive</CmdType>") >= len(devices)
