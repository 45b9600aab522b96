"""SIPp (Debian sip-tester) in server mode as an independent superior platform for the gateway's
uplink: it challenges the REGISTER with digest, verifies the answer (tests/sipp/gb_superior_uas.xml)
and answers the keepalives; SIPp's own exit status says every call of the scenario succeeded."""

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from gw import base_config, journal_envelopes, running, until

SCENARIO = Path(__file__).resolve().parent / "sipp" / "gb_superior_uas.xml"
LOCAL_ID = "43030000002000000009"  # the scenario's verifyauth username
PASSWORD = "sipp-superior-0123"  # and password
pytestmark = pytest.mark.timeout(90)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _uplink(port, password):
    return {
        "id": "sipp",
        "superior": f"127.0.0.1:{port}",
        "superior_id": "43000000002000000001",
        "local_id": LOCAL_ID,
        "password": password,
        "bind": "127.0.0.1:0",
        "keepalive": {"interval_s": 0.3, "count": 3},
    }


def _bound(port) -> bool:
    """True once something (SIPp) holds the UDP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


async def _sipp(tmp_path, port, calls):
    sipp = shutil.which("sipp")
    assert sipp, "sipp is missing: `make tools` installs sip-tester (or: sudo apt-get install sip-tester)"
    proc = await _start(sipp, tmp_path, port, calls)
    # the uplink's first REGISTER must find SIPp listening (else it waits the standard's 60 s)
    await until(lambda: _bound(port) or proc.returncode is not None, timeout=20, what="sipp listening")
    assert proc.returncode is None, (await proc.stderr.read()).decode(errors="replace")[-2000:]
    return proc


async def _start(sipp, tmp_path, port, calls):
    return await asyncio.create_subprocess_exec(
        sipp,
        "-sf",
        str(SCENARIO),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        "u1",
        "-m",
        str(calls),
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(tmp_path / "sipp-messages.log"),
        "-trace_err",
        "-error_file",
        str(tmp_path / "sipp-errors.log"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )


async def test_sipp_superior_accepts_the_digest_registration_and_the_keepalives(tmp_path):
    port = _free_udp_port()
    proc = await _sipp(tmp_path, port, calls=4)  # the registration and three keepalives
    try:
        raw = base_config()
        raw["uplinks"] = [_uplink(port, PASSWORD)]
        async with running(raw) as gw:
            entry = gw.supervisor.lookup("sipp")
            await until(lambda: entry.state.value == "ONLINE", timeout=30, what="registered to SIPp")
            rc = await asyncio.wait_for(proc.wait(), 30)
            err = (await proc.stderr.read()).decode(errors="replace")
            assert rc == 0, f"sipp exit {rc}: {err[-2000:]}"
            log = (tmp_path / "sipp-messages.log").read_text(errors="replace")
            assert "Authorization: Digest" in log and 'username="43030000002000000009"' in log
            assert log.count("<CmdType>Keepalive</CmdType>") >= 3
            states = [e["payload"]["state"] for e in journal_envelopes(gw.journal, "uplink/sipp/health")]
            assert "ONLINE" in states
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sipp_superior_refuses_a_wrong_password_and_the_uplink_says_so(tmp_path):
    port = _free_udp_port()
    proc = await _sipp(tmp_path, port, calls=1)
    try:
        raw = base_config()
        raw["uplinks"] = [_uplink(port, "not-the-password")]
        async with running(raw) as gw:
            entry = gw.supervisor.lookup("sipp")
            await until(lambda: "403" in entry.reason, timeout=30, what="the 403 in the uplink's health")
            assert entry.state.value == "OFFLINE"
            await asyncio.wait_for(proc.wait(), 30)
            assert proc.returncode != 0  # SIPp counts the refused call as failed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
