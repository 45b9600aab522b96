"""The gateway as a process: `tianwang run -c FILE`, SIGHUP reload, SIGTERM shutdown."""

import asyncio
import signal
import time

import grpc
import pytest
import yaml

from gw import CONTROL, READ, GatewayProcess, client, md, unpack
from tianwang.v1 import gateway_pb2 as pb

pytestmark = [pytest.mark.twins, pytest.mark.timeout(90)]


def config(devices, tokens=None):
    return {
        "gateway": {"name": "proc", "listen": "127.0.0.1:0", "metrics": None},
        "auth": {
            "tokens": tokens
            or [
                {"name": "reader", "token_env": "TW_T_READ", "read": ["#"]},
                {"name": "operator", "token_env": "TW_T_CONTROL", "read": ["#"], "control": ["#"]},
            ]
        },
        "devices": devices,
    }


ENV = {"TW_T_READ": READ, "TW_T_CONTROL": CONTROL}


def write(path, cfg):
    path.write_text(yaml.safe_dump(cfg))


@pytest.fixture
def proc_factory():
    procs = []

    def start(path):
        p = GatewayProcess(path, ENV)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


async def health_events(stream, want, timeout=15):
    """Read health envelopes until `want(events)` is true; events are (device, state, reason)."""
    events = []

    async def run():
        async for batch in stream:
            for env in batch.envelopes:
                p = unpack(env.payload)
                events.append((env.device_id, p["state"], p["reason"]))
            if want(events):
                return

    await asyncio.wait_for(run(), timeout)
    return events


async def test_sighup_applies_only_what_changed_and_keeps_subscribers(tmp_path, proc_factory):
    path = tmp_path / "gw.yaml"
    gen = lambda i, **kw: {"id": i, "driver": "testgen", "rate_hz": 5, **kw}  # noqa: E731
    write(path, config([gen("keep"), gen("drop"), gen("change")]))
    proc = proc_factory(path)
    async with client(proc.addr) as (stub, _):
        stream = stub.Subscribe(
            pb.SubscribeRequest(topics=["test/+/health"], from_seq=1, max_delay_ms=1), metadata=md(READ)
        )
        await health_events(stream, lambda ev: sum(1 for e in ev if e[1] == "ONLINE") == 3)
        write(path, config([gen("keep"), gen("change", rate_hz=7), gen("new")]))
        proc.signal(signal.SIGHUP)

        def done(ev):
            return (
                ("drop", "OFFLINE", "removed from config") in ev
                and any(e[0] == "new" and e[1] == "ONLINE" for e in ev)
                and sum(1 for e in ev if e[0] == "change" and e[1] == "ONLINE") == 1
            )

        events = await health_events(stream, done)
        assert ("change", "OFFLINE", "config changed") in events
        assert not [e for e in events if e[0] == "keep"], "an unchanged device was restarted"
        reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
        assert sorted(d.id for d in reply.devices) == ["change", "keep", "new"]
        # a broken file is refused and the gateway runs on with what it had
        path.write_text("devices: [{id: x, driver: nosuch}]\n")
        proc.signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
        assert sorted(d.id for d in reply.devices) == ["change", "keep", "new"]
        # the same stream is still delivering
        keep_before = next(d for d in reply.devices if d.id == "keep").counters["envelopes"]
        await asyncio.sleep(0.6)
        reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
        assert next(d for d in reply.devices if d.id == "keep").counters["envelopes"] > keep_before
        stream.cancel()
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    err = proc.stderr()
    assert "reload refused: devices[0] (x).driver: unknown driver 'nosuch'" in err


async def test_sighup_revokes_streams_of_removed_tokens(tmp_path, proc_factory):
    path = tmp_path / "gw.yaml"
    dev = [{"id": "g", "driver": "testgen", "rate_hz": 20}]
    write(path, config(dev))
    proc = proc_factory(path)
    async with client(proc.addr) as (stub, _):
        reader = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md(READ))
        operator = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md(CONTROL))
        await asyncio.wait_for(reader.read(), 5)
        await asyncio.wait_for(operator.read(), 5)
        write(
            path,
            config(dev, tokens=[{"name": "operator", "token_env": "TW_T_CONTROL", "read": ["#"], "control": ["#"]}]),
        )
        proc.signal(signal.SIGHUP)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                await asyncio.wait_for(reader.read(), 5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        batch = await asyncio.wait_for(operator.read(), 5)  # the remaining token keeps its stream
        assert batch.envelopes
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        operator.cancel()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_everything_within_five_seconds(tmp_path, proc_factory, sig):
    marker = tmp_path / "closed"
    path = tmp_path / "gw.yaml"
    write(
        path,
        config([{"id": f"g{i}", "driver": "testgen", "rate_hz": 50, "close_marker": str(marker)} for i in range(5)]),
    )
    proc = proc_factory(path)
    async with client(proc.addr) as (stub, _):
        stream = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md(READ))
        await asyncio.wait_for(stream.read(), 5)
        t0 = time.monotonic()
        proc.signal(sig)
        code = await asyncio.to_thread(proc.wait, 10)
        elapsed = time.monotonic() - t0
        assert code == 0 and elapsed < 5, (code, elapsed)
        ended = False
        try:
            while True:
                b = await asyncio.wait_for(stream.read(), 5)
                if b is grpc.aio.EOF:
                    ended = True
                    break
        except grpc.aio.AioRpcError as exc:
            ended = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert ended
    assert sorted(marker.read_text().splitlines()) == [f"g{i} closed" for i in range(5)]


async def test_bad_config_exits_1_with_paths(tmp_path, proc_factory):
    path = tmp_path / "gw.yaml"
    path.write_text("gateway: {listen: 'x'}\n")
    with pytest.raises(RuntimeError) as err:
        proc_factory(path)
    assert "gateway.listen: expected HOST:PORT" in str(err.value)


async def test_port_in_use_is_a_clear_error(tmp_path, proc_factory):
    path = tmp_path / "gw.yaml"
    write(path, config([]))
    first = proc_factory(path)
    cfg = config([])
    cfg["gateway"]["listen"] = first.addr
    other = tmp_path / "other.yaml"
    write(other, cfg)
    with pytest.raises(RuntimeError) as err:
        proc_factory(other)
    assert f"cannot listen on {first.addr}" in str(err.value)


async def test_a_listener_whose_port_is_taken_fails_the_start(tmp_path, proc_factory):
    import socket

    with socket.socket() as holder:  # another program already listens there
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = tmp_path / "gw.yaml"
        cfg = config([])
        cfg["listeners"] = [
            {"id": "fleet", "driver": "jt808", "listen": f"127.0.0.1:{port}", "auth_secret_env": "TW_T_READ"}
        ]
        write(path, cfg)
        with pytest.raises(RuntimeError) as err:
            proc_factory(path)
    text = str(err.value)
    assert f"listener fleet: cannot listen on 127.0.0.1:{port}: the address is in use" in text
    assert "Traceback" not in text


async def test_a_sighup_during_start_up_is_held_until_started(tmp_path):
    """`systemctl reload` while the gateway starts: the SIGHUP is held and applied once started,
    never the signal's default action (death, which Restart=on-failure takes for a clean exit)."""
    import os
    import subprocess
    import sys
    import threading

    from gw import ROOT

    path = tmp_path / "gw.yaml"
    cfg = config([{"id": "gen-1", "driver": "testgen", "rate_hz": 5}])
    cfg["gateway"]["journal"] = {"path": str(tmp_path / "journal")}
    write(path, cfg)
    env = dict(os.environ, **ENV, TIANWANG_DRIVER_MODULES="tw_testgen")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "plugins"), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tianwang", "run", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    lines: list[str] = []
    hup_sent = threading.Event()

    def drain():
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            # the journal is opened early in start(): the rest of start-up is still to come
            if not hup_sent.is_set() and "tianwang.app: journal " in line:
                proc.send_signal(signal.SIGHUP)
                hup_sent.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        ready = await asyncio.to_thread(proc.stdout.readline)
        assert ready, f"the gateway died during start-up (rc {proc.wait(10)}): {''.join(lines)}"
        assert hup_sent.is_set()
        deadline = time.monotonic() + 15
        while not any("reloaded " in line for line in lines) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert any("reloaded " in line for line in lines), "".join(lines)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
