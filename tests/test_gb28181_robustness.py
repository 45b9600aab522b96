"""The gb28181 listener under the field's faults: subscriptions refreshed in their dialog and renewed
when a device ends them, a register storm of simulated devices (tianwang.drivers.gb28181.simulator)
with nothing dropped, floods from unknown sources counted and rate-limited while a real device
still gets in, a TCP stream that cannot be resynchronised, and registrations surviving kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time

import pytest
import yaml

import tianwang.drivers.gb28181 as gb28181
from gb_helpers import NVR_ID, PASSWORD, SERVER_ID, GbDevice, xml
from gw import READ, GatewayProcess, base_config, client, md, running, until
from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.simulator import Fleet
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)


def devices_file(tmp_path, *ids):
    path = tmp_path / "gb-devices.yaml"
    path.write_text("".join(f"- {{id: '{i}', password: '{PASSWORD}'}}\n" for i in ids or (NVR_ID,)), encoding="utf-8")
    path.chmod(0o600)
    return str(path)


@contextlib.asynccontextmanager
async def gateway(listener):
    async with running(base_config(listeners=[listener], control=["camera/+"], name="gb"), gb28181.SPEC) as gw:
        entry = gw.supervisor.lookup("gb")
        await until(lambda: "listen" in entry.info, what="listener bound")
        yield gw, int(entry.info["listen"].rsplit(":", 1)[1])


async def test_subscriptions_are_refreshed_in_their_dialog_and_renewed_when_the_device_ends_them(tmp_path):
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "devices_file": devices_file(tmp_path),
        "subscribe": {"catalog": True, "alarm": {"end_priority": 2}},
    }
    async with gateway(listener) as (gw, port):
        nvr = await GbDevice(port, NVR_ID).start()
        nvr.subscribe_expires = 2  # the device grants two seconds: refreshed after 1.6 s
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: len(nvr.requests("SUBSCRIBE", "Catalog")) >= 2, 10, "a catalog refresh")
            first, second = (r for r, _ in nvr.requests("SUBSCRIBE", "Catalog")[:2])
            # the same dialog: Call-ID, From tag, the To tag the device gave, the next CSeq
            assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
            assert first.to.tag is None and second.to.tag is not None
            assert second.cseq[0] == first.cseq[0] + 1
            alarm_sub, text = nvr.requests("SUBSCRIBE", "Alarm")[0]
            assert "<EndAlarmPriority>2</EndAlarmPriority>" in text and alarm_sub.headers.get("Event").startswith(
                "presence"
            )
            # the device ends the catalog subscription: a new dialog follows
            ended = xml("Notify", "Catalog", nvr.next_sn(), NVR_ID, "<SumNum>0</SumNum>\r\n")
            nvr.subscribe_expires = 3600
            req = nvr.build(
                "NOTIFY",
                ended,
                [("Event", first.headers.get("Event")), ("Subscription-State", "terminated;reason=timeout")],
                "Application/MANSCDP+xml",
                call_id=first.call_id,
            )
            assert (await nvr.transact(req)).status == 200
            await until(
                lambda: any(r.call_id != first.call_id for r, _ in nvr.requests("SUBSCRIBE", "Catalog")),
                10,
                "a new catalog subscription",
            )
            assert gw.supervisor.lookup(NVR_ID).counters["subscriptions_terminated"] == 1
        finally:
            await nvr.stop()


async def test_a_register_storm_of_simulated_devices_drops_no_registration(tmp_path):
    n = 150
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "registration": "open",
        "password": "12345678",
        "subscribe": {"catalog": True},
        "registrations_file": str(tmp_path / "gb.registrations"),
    }
    config = base_config(listeners=[listener], control=["camera/+"], name="gb")
    async with running(config, gb28181.SPEC) as gw:
        entry = gw.supervisor.lookup("gb")
        await until(lambda: "listen" in entry.info, what="listener bound")
        port = int(entry.info["listen"].rsplit(":", 1)[1])
        fleet = Fleet("127.0.0.1", port, devices=n, channels=1, keepalive_s=30.0)
        await fleet.start()
        try:
            await fleet.wait_online(timeout=60)
            ids = [d.id for d in fleet.devices]
            await until(
                lambda: all(
                    gw.supervisor.lookup(i) is not None and gw.supervisor.lookup(i).state.value == "ONLINE" for i in ids
                ),
                30,
                "every device ONLINE",
            )
            before = entry.counters["registrations"]
            fleet.storm()  # every device registers again at once
            loop = asyncio.get_running_loop()
            async with client(gw) as (stub, _):
                # the loop keeps serving gRPC while the storm is handled
                started = loop.time()
                reply = await stub.ListDevices(pb.ListDevicesRequest(family="camera"), metadata=md(READ))
                assert len(reply.devices) >= n and loop.time() - started < 10
            await until(lambda: entry.counters["registrations"] - before >= n, 60, "every device registered again")
            # every device got its 200 (a datagram lost on the way is sent again, and answered from the cache)
            await until(lambda: fleet.counters["registered"] >= 2 * n, 60, "every 200 at the devices")
            assert entry.counters.get("registrations_refused", 0) == 0 and not entry.counters.get("dropped_flood")
            driver = gw.supervisor._running["gb"].driver
            await driver.registry.flush()
            assert len(json.loads(open(tmp_path / "gb.registrations").read())["devices"]) == n
        finally:
            await fleet.stop()


async def test_floods_from_unknown_sources_are_counted_and_rate_limited_and_a_real_device_still_gets_in(tmp_path):
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "devices_file": devices_file(tmp_path),
        "unknown_per_s": 20,
        "unknown_burst": 50,
    }
    async with gateway(listener) as (gw, port):
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.bind(("127.0.0.1", 0))
        flood.setblocking(False)
        local = flood.getsockname()
        sent = 0
        answers = 0
        started = time.monotonic()
        try:
            for i in range(1500):
                stranger = f"430300000013200{i:05d}"
                method = "REGISTER" if i % 2 else "MESSAGE"
                req = sip.build_request(
                    method,
                    f"sip:{SERVER_ID}@127.0.0.1:{port}",
                    via_host=local[0],
                    via_port=local[1],
                    transport="UDP",
                    from_uri=f"sip:{stranger}@4303000000",
                    from_tag="f",
                    to_uri=f"sip:{SERVER_ID}@4303000000",
                    call_id=f"flood-{i}",
                    cseq=1,
                    headers=[("Expires", "3600")],
                    body=xml("Notify", "Keepalive", i, stranger, "<Status>OK</Status>\r\n")
                    if method == "MESSAGE"
                    else b"",
                    content_type="Application/MANSCDP+xml" if method == "MESSAGE" else None,
                )
                flood.sendto(req.to_bytes(), ("127.0.0.1", port))
                sent += 1
                if i % 100 == 0:
                    await asyncio.sleep(0.01)
            # a real device in the middle of the flood
            nvr = await GbDevice(port, NVR_ID).start()
            try:
                assert (await nvr.register()).status == 200
            finally:
                await nvr.stop()
            await until(
                lambda: (
                    gw.supervisor.lookup("gb").counters.get("dropped_flood", 0)
                    + gw.supervisor.lookup("gb").counters.get("registrations_refused", 0)
                    >= 700
                ),
                10,
                "flood handled",
            )
            await asyncio.sleep(0.3)
            while True:
                try:
                    flood.recv(65536)
                    answers += 1
                except BlockingIOError:
                    break
        finally:
            flood.close()
        elapsed = time.monotonic() - started
        counters = gw.supervisor.lookup("gb").counters
        # at most the burst plus the rate over the time it took: the rest dropped and counted
        assert answers <= 50 + 20 * elapsed + 1, (answers, elapsed)
        # what reached the listener (the kernel may drop some of a blast) was answered within the
        # budget or dropped and counted
        handled = counters["messages_unregistered"] + counters["registrations_refused"]
        assert handled >= sent // 2, counters
        assert counters["dropped_flood"] >= handled - answers - 5, counters
        assert gw.supervisor.lookup(NVR_ID).state.value == "ONLINE"
        # none of it reached the journal as a device: no row for any stranger
        assert not [e for e in gw.supervisor.entries if e.startswith("430300000013200")]


async def test_a_tcp_stream_that_cannot_be_resynchronised_is_closed_and_counted(tmp_path):
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "devices_file": devices_file(tmp_path),
    }
    async with gateway(listener) as (gw, port):
        nvr = await GbDevice(port, NVR_ID, transport="tcp").start()
        try:
            assert (await nvr.register()).status == 200
            keep = nvr.build(
                "MESSAGE",
                xml("Notify", "Keepalive", 1, NVR_ID, "<Status>OK</Status>\r\n"),
                content_type="Application/MANSCDP+xml",
            )
            # a whole message, then one without Content-Length: the first is taken, the stream closed
            nvr.send_raw(
                keep.to_bytes() + b"MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4:5;branch=z9hG4bKx\r\n"
                b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\n"
            )
            await until(lambda: gw.supervisor.lookup("gb").counters.get("dropped_missing_header"), 5, "the drop")
            await until(lambda: gw.supervisor.lookup(NVR_ID).counters.get("keepalives") == 1, 5, "the good message")
            await until(lambda: not gw.supervisor._running["gb"].driver.connections, 5, "the connection closed")
        finally:
            await nvr.stop()


def test_registrations_survive_kill_9(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    regs = tmp_path / "gb.registrations"
    config = base_config(
        listeners=[
            {
                "id": "gb",
                "driver": "gb28181",
                "listen": f"127.0.0.1:{port}",
                "server_id": SERVER_ID,
                "devices_file": devices_file(tmp_path),
                "registrations_file": str(regs),
                "subscribe": {"catalog": False},
            }
        ]
    )
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    async def register():
        nvr = await GbDevice(port, NVR_ID).start()
        try:
            return (await nvr.register()).status
        finally:
            await nvr.stop()

    first = GatewayProcess(path)
    try:
        assert asyncio.run(register()) == 200
        deadline = time.monotonic() + 10
        while not (regs.exists() and NVR_ID in regs.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert NVR_ID in regs.read_text()
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    assert oct(os.stat(regs).st_mode & 0o777) == "0o600"
    second = GatewayProcess(path)
    try:

        async def listed():
            async with client(second.addr) as (stub, _):
                for _ in range(100):
                    reply = await stub.ListDevices(pb.ListDevicesRequest(family="camera"), metadata=md(READ))
                    rows = {d.id: d for d in reply.devices}
                    if NVR_ID in rows:
                        return rows[NVR_ID]
                    await asyncio.sleep(0.05)
            return None

        row = asyncio.run(listed())
        assert row is not None and row.state == "ONLINE" and "restored" in row.reason
    finally:
        second.signal(signal.SIGTERM)
        try:
            second.wait(10)
        finally:
            second.kill()
