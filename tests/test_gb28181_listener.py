"""The gb28181 listener end to end: an in-process gateway (gRPC on loopback) with the listener on a
real UDP+TCP port, and tiny devices (tests/gb_helpers.py) registering with digest, keeping alive,
going silent, unregistering, and coming back after a gateway restart."""

from __future__ import annotations

import contextlib
import os
import re
import stat

import pytest

import tianwang.drivers.gb28181 as gb28181
from gb_helpers import DOMAIN, NVR_ID, PASSWORD, SERVER_ID, GbDevice
from gw import READ, base_config, client, journal_envelopes, md, running, until
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.config import load_config
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)
IPC_ID = "43030000001320000007"


def write_devices(tmp_path, *ids, password=PASSWORD):
    path = tmp_path / "gb-devices.yaml"
    path.write_text("".join(f"- {{id: '{i}', password: '{password}'}}\n" for i in ids), encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def listener_config(tmp_path, *ids, **extra):
    cfg = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "devices_file": write_devices(tmp_path, *(ids or (NVR_ID, IPC_ID))),
        "keepalive": {"interval_s": 0.5, "count": 2},
        "subscribe": {"catalog": False},
    }
    cfg.update(extra)
    return cfg


@contextlib.asynccontextmanager
async def gateway(listener):
    config = base_config(listeners=[listener], control=["camera/+"], name="gb")
    async with running(config, gb28181.SPEC) as gw:
        entry = gw.supervisor.lookup("gb")
        await until(lambda: "listen" in entry.info, what="gb28181 listener bound")
        port = int(entry.info["listen"].rsplit(":", 1)[1])
        yield gw, port


def state(gw, dev_id):
    entry = gw.supervisor.lookup(dev_id)
    return entry.state.value if entry is not None else None


async def test_devices_register_with_digest_over_udp_and_tcp_and_show_in_list_devices(tmp_path):
    async with gateway(listener_config(tmp_path)) as (gw, port):
        nvr = await GbDevice(port, NVR_ID, transport="udp").start()
        ipc = await GbDevice(port, IPC_ID, transport="tcp", version="3.0").start()
        try:
            ok = await nvr.register()
            assert ok.status == 200, ok
            assert ok.headers.get("Expires") == "3600"
            # Beijing local time with milliseconds: devices set their clocks from it
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", ok.headers.get("Date"))
            # answered at the packet's source: the rport the device asked for is filled in
            assert ok.top_via.rport == nvr.local[1] and ok.top_via.received == "127.0.0.1"
            assert (await ipc.register(qop=False)).status == 200  # a device answering without qop
            await until(lambda: state(gw, NVR_ID) == "ONLINE" and state(gw, IPC_ID) == "ONLINE", what="ONLINE")
            async with client(gw) as (stub, _):
                reply = await stub.ListDevices(pb.ListDevicesRequest(family="camera"), metadata=md(READ))
            rows = {d.id: d for d in reply.devices}
            assert rows[NVR_ID].parent == "gb" and rows[IPC_ID].parent == "gb"
            assert rows[NVR_ID].info["transport"] == "UDP" and rows[IPC_ID].info["transport"] == "TCP"
            assert rows[NVR_ID].info["address"] == f"127.0.0.1:{nvr.local[1]}"
            assert rows[NVR_ID].info["version"] == "2016" and rows[IPC_ID].info["version"] == "2022"
            assert rows["gb"].info["registrations"] == "2"
            health = [e for e in journal_envelopes(gw.journal, "camera/+/health") if e["device_id"] == NVR_ID]
            assert health[-1]["payload"] == {"state": "ONLINE", "previous": "OFFLINE", "reason": "registered"}
        finally:
            await nvr.stop()
            await ipc.stop()


async def test_port_0_picks_again_when_the_udp_twin_of_the_tcp_port_is_taken(tmp_path, monkeypatch):
    # `listen: HOST:0` binds TCP first, then UDP on the same port; on a box with thousands of UDP
    # sockets that port's UDP side may be taken. Take it for real, just before the listener binds it
    import socket

    from tianwang.drivers.gb28181.driver import Gb28181Listener

    blockers, original = [], Gb28181Listener._bind_udp

    async def bind_udp(self, host, port):
        if not blockers:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, port))
            blockers.append(sock)
        return await original(self, host, port)

    monkeypatch.setattr(Gb28181Listener, "_bind_udp", bind_udp)
    try:
        async with gateway(listener_config(tmp_path)) as (gw, port):
            assert port != blockers[0].getsockname()[1]
            assert gw.supervisor.restarts == 0  # picked again inside one start, not by a failed run and its backoff
            nvr = await GbDevice(port, NVR_ID, transport="udp").start()
            try:
                assert (await nvr.register()).status == 200
                await until(lambda: state(gw, NVR_ID) == "ONLINE", what="ONLINE over UDP on the port picked again")
            finally:
                await nvr.stop()
    finally:
        for sock in blockers:
            sock.close()


async def test_digest_refusals_stale_nonces_and_unknown_devices(tmp_path):
    async with gateway(listener_config(tmp_path)) as (gw, port):
        nvr = await GbDevice(port, NVR_ID).start()
        stranger = await GbDevice(port, "43030000001320000099").start()
        try:
            assert (await nvr.register(password="not-it")).status == 403
            assert (await stranger.register()).status == 403  # not in the devices file
            assert state(gw, NVR_ID) in (None, "OFFLINE")
            # the digest over the uri as the device sent it (SIPp: sip:<ip>:<port>), another username
            ok = await nvr.register(uri=f"sip:127.0.0.1:{port}")
            assert ok.status == 200
            # a nonce is single-use: the same Authorization again is challenged as stale
            first = await nvr.transact(nvr.build("REGISTER", headers=[("Expires", "3600")]))
            challenge = first.headers.get("WWW-Authenticate")
            from tianwang.drivers.gb28181 import digest

            params = digest.parse_challenge(challenge)
            auth = digest.authorization(
                NVR_ID,
                params["realm"],
                PASSWORD,
                "REGISTER",
                f"sip:{SERVER_ID}@{DOMAIN}",
                params["nonce"],
                qop=params.get("qop"),
            )
            headers = [("Expires", "3600"), ("Authorization", auth)]
            assert (await nvr.transact(nvr.build("REGISTER", headers=headers))).status == 200
            again = await nvr.transact(nvr.build("REGISTER", headers=headers))
            assert again.status == 401 and "stale=true" in again.headers.get("WWW-Authenticate")
            # too short a registration: 423 with the minimum
            short = await nvr.register(expires=30)
            assert short.status == 423 and short.headers.get("Min-Expires") == "3600"
            counters = gw.supervisor.lookup("gb").counters
            assert counters["auth_failures"] >= 1 and counters["registrations_refused"] >= 3
            # a MESSAGE from a device that is not registered is refused, so it registers
            assert (await stranger.keepalive()).status == 403
        finally:
            await nvr.stop()
            await stranger.stop()


async def test_keepalive_liveness_faulty_channels_and_unregister(tmp_path):
    async with gateway(listener_config(tmp_path)) as (gw, port):
        nvr = await GbDevice(port, NVR_ID).start()
        try:
            assert (await nvr.register()).status == 200
            assert (await nvr.keepalive()).status == 200
            # silence: OFFLINE after interval x count (0.5 s x 2)
            await until(lambda: state(gw, NVR_ID) == "OFFLINE", 10, "OFFLINE after missed keepalives")
            assert "no keepalive" in gw.supervisor.lookup(NVR_ID).reason
            # a keepalive brings it back
            assert (await nvr.keepalive()).status == 200
            await until(lambda: state(gw, NVR_ID) == "ONLINE", 5, "ONLINE again")
            assert (await nvr.keepalive(status="ERROR")).status == 200
            await until(lambda: state(gw, NVR_ID) == "DEGRADED", 5, "DEGRADED on Status ERROR")
            assert (await nvr.keepalive()).status == 200
            await until(lambda: state(gw, NVR_ID) == "ONLINE", 5, "ONLINE on Status OK")
            # unregister (Expires 0, after the same challenge)
            assert (await nvr.register(expires=0)).status == 200
            await until(lambda: state(gw, NVR_ID) == "OFFLINE", 5, "OFFLINE after unregister")
            assert gw.supervisor.lookup(NVR_ID).reason == "unregistered"
            assert (await nvr.keepalive()).status == 403
            assert gw.supervisor.lookup(NVR_ID).counters["keepalives"] >= 3
        finally:
            await nvr.stop()


async def test_retransmitted_register_is_answered_from_the_transaction_not_twice(tmp_path):
    async with gateway(listener_config(tmp_path)) as (gw, port):
        nvr = await GbDevice(port, NVR_ID).start()
        try:
            req = nvr.build("REGISTER", headers=[("Expires", "3600")])
            first = await nvr.transact(req)
            second = await nvr.transact(req)  # the same request again: a UDP retransmission
            assert first.status == second.status == 401
            # the cached answer, not a new challenge with a new nonce
            assert first.headers.get("WWW-Authenticate") == second.headers.get("WWW-Authenticate")
            assert gw.supervisor.lookup("gb").counters["retransmissions_absorbed"] == 1
            assert gw.supervisor.lookup("gb").counters["challenges"] == 1
        finally:
            await nvr.stop()


async def test_registrations_survive_a_restart(tmp_path):
    from gb_helpers import channel_ids

    regs = tmp_path / "gb.registrations"
    cfg = listener_config(
        tmp_path, registrations_file=str(regs), keepalive={"interval_s": 30, "count": 3}, subscribe={"catalog": True}
    )
    channels = channel_ids(NVR_ID, 2)
    async with gateway(cfg) as (gw, port):
        nvr = await GbDevice(port, NVR_ID, transport="udp", channels=[(c, "路口") for c in channels]).start()
        try:
            assert (await nvr.register()).status == 200
            await until(
                lambda: regs.exists() and channels[1] in regs.read_text() and "V2.1.0" in regs.read_text(),
                10,
                "registration, channels and DeviceInfo written",
            )
        finally:
            await nvr.stop()
    assert stat.S_IMODE(os.stat(regs).st_mode) == 0o600
    import json

    rec = json.loads(regs.read_text())["devices"][NVR_ID]
    # where it was, on what, and which address of ours it reached (the Via of later requests)
    assert (rec["transport"], rec["local"], rec["channels"]) == ("UDP", f"127.0.0.1:{port}", channels)
    cfg["listen"] = f"127.0.0.1:{port}"  # the same port: the device keeps sending there
    async with gateway(cfg) as (gw, port2):
        # known at once, before it says anything: ONLINE, with the reason
        await until(lambda: state(gw, NVR_ID) == "ONLINE", 5, "restored ONLINE")
        assert "restored" in gw.supervisor.lookup(NVR_ID).reason
        # its channels too, with what it said of itself, before it says anything
        assert all(state(gw, c) == "ONLINE" and gw.supervisor.lookup(c).parent == NVR_ID for c in channels)
        assert gw.supervisor.lookup(NVR_ID).info["firmware"] == "V2.1.0"
        nvr = await GbDevice(port2, NVR_ID, transport="udp", channels=[(c, "路口") for c in channels]).start()
        try:
            # its keepalive is taken without a new REGISTER; an alarm lands on its channel's topic
            assert (await nvr.alarm(source=channels[1])).status == 200
            assert [e["device_id"] for e in journal_envelopes(gw.journal, "camera/+/alarm")] == [channels[1]]
            assert (await nvr.keepalive()).status == 200
            # the catalog is read again: the names come back
            await until(lambda: gw.supervisor.lookup(channels[0]).info.get("name") == "路口", 10, "catalog read again")
            listing = await gw.supervisor.send_command("gb", "registrations", {}, 5)
            assert [d["id"] for d in listing["devices"]] == [NVR_ID] and listing["persistent"]
        finally:
            await nvr.stop()


async def test_malformed_sip_and_xml_are_counted_drops_and_the_good_messages_around_them_survive(tmp_path):
    async with gateway(listener_config(tmp_path)) as (gw, port):
        nvr = await GbDevice(port, NVR_ID).start()
        try:
            assert (await nvr.register()).status == 200
            nvr.send_raw(b"NOT SIP AT ALL\r\n\r\n")
            nvr.send_raw(b"MESSAGE sip:x@y SIP/2.0\r\nVia: nonsense\r\n\r\n")
            bad = await nvr.message(b'<?xml version="1.0"?><Notify><CmdType>Keepalive</CmdType><SN>1')
            assert bad.status == 400
            assert (await nvr.keepalive()).status == 200
            listener = gw.supervisor.lookup("gb").counters
            device = gw.supervisor.lookup(NVR_ID).counters
            assert sum(v for k, v in listener.items() if k.startswith("dropped_")) >= 2, listener
            assert sum(v for k, v in device.items() if k.startswith("dropped_")) == 1, device
            assert device["keepalives"] == 1
        finally:
            await nvr.stop()


def test_check_reports_every_mistake_of_a_gb28181_listener_in_one_run(tmp_path):
    bad_file = tmp_path / "devices.yaml"
    bad_file.write_text("- {id: '123', password: x}\n- {id: '43030000001320000001'}\n- {idd: 1}\n", encoding="utf-8")
    config = base_config(
        listeners=[
            {
                "id": "gb",
                "driver": "gb28181",
                "listen": "127.0.0.1:5060",
                "server_id": "4303",
                "keepalive": {"interval_s": -1, "count": 0},
                "expires": {"min_s": 7200, "max_s": 3600},
                "devices_file": str(bad_file),
                "charset": "latin1",
            }
        ]
    )
    from gw import registry

    with pytest.raises(ConfigError) as info:
        load_config(config, registry(gb28181.SPEC))
    paths = {p for p, _ in info.value.problems}
    for key in ("server_id", "keepalive.interval_s", "keepalive.count", "expires", "charset", "devices_file"):
        assert f"listeners[0].{key}" in paths, (key, info.value.problems)
    # every entry of the devices file at once
    text = dict(info.value.problems)["listeners[0].devices_file"]
    assert "[0].id" in text and "[1].password" in text and "[2].idd: unknown key" in text, text


def test_open_registration_warns_and_needs_the_default_password(monkeypatch):
    from gw import registry
    from tianwang.gateway.lifecycle.config import warnings_for

    cfg = {"id": "gb", "driver": "gb28181", "listen": "127.0.0.1:5060", "server_id": SERVER_ID, "registration": "open"}
    with pytest.raises(ConfigError) as info:
        load_config(base_config(listeners=[cfg]), registry(gb28181.SPEC))
    assert any(p == "listeners[0].registration" and "default password" in w for p, w in info.value.problems)
    monkeypatch.setenv("GB_DEFAULT_PW", "secret")
    config = load_config(base_config(listeners=[dict(cfg, password_env="GB_DEFAULT_PW")]), registry(gb28181.SPEC))
    warned = dict(warnings_for(config))
    assert "open" in warned["listeners[0].registration"]
    assert "listeners[0].registrations_file" in warned


async def test_a_tcp_device_is_reached_on_its_connection_and_degraded_while_it_has_none(tmp_path):
    async with gateway(listener_config(tmp_path, subscribe={"catalog": True})) as (gw, port):
        ipc = await GbDevice(port, IPC_ID, transport="tcp").start()
        try:
            assert (await ipc.register()).status == 200
            await until(lambda: ipc.requests("MESSAGE", "Catalog"), 5, "the catalog query over its connection")
            await ipc.stop()  # the connection closes: it cannot be dialled behind its NAT
            await until(lambda: state(gw, IPC_ID) == "DEGRADED", 5, "DEGRADED without a connection")
            assert "TCP connection closed" in gw.supervisor.lookup(IPC_ID).reason
            with pytest.raises(Exception) as info:
                await gw.supervisor.send_command(IPC_ID, "device_info", {}, 2)
            assert getattr(info.value, "code", "") == "OFFLINE"
            await ipc.rebind()  # a new connection from a new port
            assert (await ipc.keepalive()).status == 200
            await until(lambda: state(gw, IPC_ID) == "ONLINE", 5, "ONLINE on its new connection")
            result = await gw.supervisor.send_command(IPC_ID, "device_info", {}, 5)
            assert result["firmware"] == "V2.1.0"
        finally:
            await ipc.stop()


async def test_the_sweep_looks_at_every_device_once_a_round_spread_over_the_ticks(tmp_path, monkeypatch):
    # liveness and refreshes of 10,000 devices in one go stalled the loop for tens of milliseconds
    # every second; each tick now takes its share, and a round still sees every device once
    from tianwang.drivers.gb28181.driver import SWEEP_S, TICK_S, Gb28181Listener

    ids = [f"4303000000132000{i:04d}" for i in range(1, 31)]
    rounds: list[list[str]] = []
    per_step: list[int] = []
    step, listener_part, one = (
        Gb28181Listener.sweep_step,
        Gb28181Listener._sweep_listener,
        Gb28181Listener._sweep_device,
    )

    def sweep_step(self):
        per_step.append(0)
        step(self)

    def sweep_listener(self, now):
        rounds.append([])
        listener_part(self, now)

    def sweep_device(self, dev, now):
        per_step[-1] += 1
        rounds[-1].append(dev.id)
        one(self, dev, now)

    monkeypatch.setattr(Gb28181Listener, "sweep_step", sweep_step)
    monkeypatch.setattr(Gb28181Listener, "_sweep_listener", sweep_listener)
    monkeypatch.setattr(Gb28181Listener, "_sweep_device", sweep_device)
    async with gateway(listener_config(tmp_path, *ids, keepalive={"interval_s": 60, "count": 3})) as (gw, port):
        devices = [await GbDevice(port, dev_id).start() for dev_id in ids]
        try:
            for d in devices:
                assert (await d.register()).status == 200
            first = len(rounds)
            await until(lambda: len(rounds) >= first + 3, 20, "three sweep rounds after every device registered")
            full = rounds[first + 1]  # a round that began after the last registration, and ended
            assert sorted(full) == sorted(ids)  # every device once
            share = -(-len(ids) // round(SWEEP_S / TICK_S))
            assert 1 < share and max(per_step) == share  # spread: no step looks at more than its share
            assert all(state(gw, i) == "ONLINE" for i in ids)
        finally:
            for d in devices:
                await d.stop()
