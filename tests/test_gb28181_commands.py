"""Commands on GB/T 28181 devices and channels through a real gRPC SendCommand: the `control` grant,
the audit record of every call, PTZ with its stop always sent, presets, queries, reboot with a
reason, live video (INVITE / ACK / BYE), and requests that reach a device behind NAT at its last
source."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import msgpack
import pytest

import tianwang.drivers.gb28181 as gb28181
from gb_helpers import NVR_ID, PASSWORD, SERVER_ID, GbDevice, channel_ids
from gw import CONTROL, READ, base_config, client, journal_envelopes, md, running, until
from tianwang.drivers.gb28181 import ptz
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def setup(tmp_path, transport="udp"):
    path = tmp_path / "gb-devices.yaml"
    path.write_text(f"- {{id: '{NVR_ID}', password: '{PASSWORD}'}}\n", encoding="utf-8")
    path.chmod(0o600)
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "devices_file": str(path),
    }
    async with running(base_config(listeners=[listener], control=["camera/+"], name="gb"), gb28181.SPEC) as gw:
        entry = gw.supervisor.lookup("gb")
        await until(lambda: "listen" in entry.info, what="listener bound")
        port = int(entry.info["listen"].rsplit(":", 1)[1])
        ids = channel_ids(NVR_ID, 2)
        nvr = await GbDevice(
            port, NVR_ID, transport=transport, channels=list(zip(ids, ["一号", "二号"], strict=True))
        ).start()
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: gw.supervisor.lookup(ids[1]) is not None, 10, "channels listed")
            async with client(gw) as (stub, _):
                yield gw, stub, nvr, ids
        finally:
            await nvr.stop()


async def send(stub, device, action, args=None, token=CONTROL, reason="", timeout_ms=5000):
    req = pb.CommandRequest(
        device_id=device, action=action, args=msgpack.packb(args or {}), reason=reason, timeout_ms=timeout_ms
    )
    reply = await stub.SendCommand(req, metadata=md(token))
    return reply, (msgpack.unpackb(reply.result) if reply.result else {})


async def test_ptz_move_sends_the_move_then_the_stop_and_every_call_is_audited(tmp_path):
    async with setup(tmp_path) as (gw, stub, nvr, ids):
        reply, result = await send(stub, ids[0], "ptz_move", {"pan": 0.5, "duration_s": 0.3})
        assert reply.ok, reply.message
        assert result["ptz_cmd"] == ptz.ptz_cmd(0.5, 0, 0) and result["moved_s"] >= 0.3
        await until(lambda: len(nvr.ptz) == 2, 5, "move and stop")
        assert nvr.ptz == [ptz.ptz_cmd(0.5, 0, 0), ptz.stop_cmd()]
        # the PTZ went to the channel's ID, through its device
        controls = nvr.requests("MESSAGE", "DeviceControl")
        assert all(f"<DeviceID>{ids[0]}</DeviceID>" in text for _r, text in controls)
        audit = [e["payload"] for e in journal_envelopes(gw.journal, f"audit/{ids[0]}/command")]
        assert audit[-1]["action"] == "ptz_move" and audit[-1]["ok"] and audit[-1]["principal"] == "operator"
        # a token without control on cameras is refused, and that is audited too
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await send(stub, ids[0], "ptz_stop", token=READ)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        audit = [e["payload"] for e in journal_envelopes(gw.journal, f"audit/{ids[0]}/command")]
        assert audit[-1]["code"] == "PERMISSION_DENIED"
        bad, _ = await send(stub, ids[0], "ptz_move", {"pan": 2})
        assert not bad.ok and bad.code == "INVALID"


async def test_the_stop_is_sent_even_when_the_caller_goes_away(tmp_path):
    async with setup(tmp_path) as (gw, stub, nvr, ids):
        req = pb.CommandRequest(
            device_id=ids[1], action="ptz_move", args=msgpack.packb({"tilt": -1, "duration_s": 5}), timeout_ms=10000
        )
        call = stub.SendCommand(req, metadata=md(CONTROL))
        await until(lambda: len(nvr.ptz) == 1, 5, "the move")
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await call
        await until(lambda: len(nvr.ptz) == 2, 5, "the stop after the caller left")
        assert nvr.ptz[1] == ptz.stop_cmd()


async def test_presets_queries_reset_alarm_and_reboot(tmp_path):
    async with setup(tmp_path) as (gw, stub, nvr, ids):
        reply, result = await send(stub, ids[0], "preset_goto", {"token": 2})
        assert reply.ok and result["ptz_cmd"] == ptz.preset_cmd("goto", 2)
        reply, result = await send(stub, ids[0], "preset_list", token=READ)
        assert reply.ok, reply.message
        assert result["presets"] == [{"token": "1", "name": "gate"}, {"token": "2", "name": "crossing"}]
        reply, result = await send(stub, NVR_ID, "device_info", token=READ)
        assert reply.ok and result["firmware"] == "V2.1.0" and result["manufacturer"] == "Tianwang"
        reply, result = await send(stub, NVR_ID, "device_status", token=READ)
        assert reply.ok and result["status"] == "OK"
        reply, result = await send(
            stub, ids[1], "record_query", {"start": "2026-12-07T00:00:00", "type": "all"}, token=READ
        )
        assert reply.ok, reply.message
        assert result["sum_num"] == 3 and result["complete"] and len(result["records"]) == 3
        _req, text = nvr.requests("MESSAGE", "RecordInfo")[0]
        assert "<Type>all</Type>" in text and "<StartTime>2026-12-07T00:00:00</StartTime>" in text
        reply, result = await send(stub, NVR_ID, "catalog", token=READ)
        assert reply.ok and sorted(result["channels"]) == sorted(ids) and result["complete"]
        reply, result = await send(stub, ids[0], "reset_alarm", {"method": 2})
        assert reply.ok and result["result"] == "OK"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await send(stub, NVR_ID, "reboot")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in info.value.details()
        reply, result = await send(stub, NVR_ID, "reboot", reason="hung encoder")
        assert reply.ok and result["rebooting"]
        await until(
            lambda: any("<TeleBoot>Boot</TeleBoot>" in t for _r, t in nvr.requests("MESSAGE", "DeviceControl")),
            5,
            "TeleBoot",
        )
        listing, result = await send(stub, "gb", "registrations", token=READ)
        assert listing.ok and result["devices"][0]["id"] == NVR_ID


async def test_play_invites_with_an_sdp_offer_and_stop_play_says_bye(tmp_path):
    async with setup(tmp_path, transport="tcp") as (gw, stub, nvr, ids):
        reply, result = await send(stub, ids[0], "play", {"host": "127.0.0.1", "port": 30000, "transport": "udp"})
        assert reply.ok, reply.message
        invite, offer = nvr.requests("INVITE")[0]
        assert "m=video 30000 RTP/AVP" in offer and f"y={result['offered_ssrc']}" in offer
        assert invite.headers.get("Subject") == f"{ids[0]}:{result['offered_ssrc']},{SERVER_ID}:0"
        assert result["ssrc"] == "0430000077" and "y=0430000077" in result["sdp"]
        await until(lambda: nvr.requests("ACK"), 5, "ACK")
        assert nvr.requests("ACK")[0][0].call_id == result["call_id"]
        reply, stopped = await send(stub, ids[0], "stop_play", {"call_id": result["call_id"]})
        assert reply.ok and stopped["stopped"] == [result["call_id"]]
        assert nvr.requests("BYE")[0][0].call_id == result["call_id"]
        # the media receiver may choose the SSRC (a superior platform's y=): it is offered as given
        reply, chosen = await send(stub, ids[0], "play", {"host": "127.0.0.1", "port": 30004, "ssrc": "0430312345"})
        assert reply.ok and chosen["offered_ssrc"] == "0430312345" and "y=0430312345" in nvr.requests("INVITE")[1][1]
        reply, _ = await send(stub, ids[1], "play", {"host": "127.0.0.1", "port": 30006, "ssrc": "0430312345"})
        assert reply.code == "BUSY"  # in use by the call above
        reply, _ = await send(stub, ids[1], "play", {"host": "127.0.0.1", "port": 30006, "ssrc": "12"})
        assert reply.code == "INVALID" and "10 digits" in reply.message
        reply, _ = await send(stub, ids[0], "stop_play", {"call_id": chosen["call_id"]})
        assert reply.ok
        # a call still open when the device unregisters gets its BYE too
        reply, second = await send(stub, ids[1], "play", {"host": "127.0.0.1", "port": 30002, "transport": "tcp"})
        assert reply.ok and "TCP/RTP/AVP" in nvr.requests("INVITE")[-1][1]
        assert (await nvr.register(expires=0)).status == 200
        await until(lambda: len(nvr.requests("BYE")) == 3, 5, "BYE on unregister")
        assert nvr.requests("BYE")[2][0].call_id == second["call_id"]


async def test_requests_follow_a_device_behind_nat_to_its_new_source_and_udp_is_retransmitted(tmp_path):
    async with setup(tmp_path) as (gw, stub, nvr, ids):
        old_port = nvr.local[1]
        await nvr.rebind()
        assert nvr.local[1] != old_port
        assert (await nvr.keepalive()).status == 200
        assert gw.supervisor.lookup(NVR_ID).info["address"] == f"127.0.0.1:{nvr.local[1]}"  # its last source
        nvr.drop_next_answers = 1  # the device misses the first copy: the listener sends it again
        reply, result = await send(stub, NVR_ID, "device_status", token=READ)
        assert reply.ok, reply.message
        statuses = nvr.requests("MESSAGE", "DeviceStatus")
        assert len(statuses) == 2 and statuses[0][0].branch == statuses[1][0].branch
        assert gw.supervisor.lookup("gb").counters["retransmissions"] >= 1
