"""`tianwang record`, `tianwang replay` and captures in `tianwang decode`: a real gateway (in process,
gRPC on loopback) with a beidou receiver on a pty and a jt808 terminal over TCP, recorded by the
real CLI while subscribers keep reading; a capture replayed over TCP into a gateway; the capture
format's round trip and its truncated and corrupt files; the Record RPC's refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import zlib

import grpc
import msgpack
import pytest
from hypothesis import given, strategies as st

import tianwang.drivers.beidou as beidou
import tianwang.drivers.jt808 as jt808
import tianwang.drivers.onvif as onvif
from gw import CONTROL, READ, ROOT, base_config, client, journal_envelopes, md, running, until
from tianwang.drivers.beidou.decode import Decoder as BeidouDecoder
from tianwang.drivers.beidou.simulator import ReceiverSimulator
from tianwang.drivers.jt808.decode import Decoder as Jt808Decoder
from tianwang.drivers.jt808.simulator import Fleet
from tianwang.gateway.cli.capture import (
    FROM_DEVICE,
    MAGIC,
    TO_DEVICE,
    CaptureError,
    CaptureWriter,
    capture_or_raw,
    read_capture,
    read_capture_file,
)
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)
CAPTURE = ROOT / "tests" / "captures" / "beidou" / "sim_gb_5hz_rdss.twcap"
EXPECTED = ROOT / "tests" / "captures" / "beidou" / "sim_gb_5hz_rdss.expected.jsonl"
LISTENER = {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:0", "auth_secret": "record-secret"}


class TracedReceiver(ReceiverSimulator):
    """A receiver that keeps every byte it writes to its line."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.written = bytearray()

    def _put(self, data: bytes) -> None:
        self.written += data
        super()._put(data)


async def tw(*args, token=CONTROL, timeout=30):
    """`python -m tianwang ARGS` in a subprocess, without blocking the loop the gateway runs on."""
    env = dict(os.environ, TIANWANG_TOKEN=token or "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tianwang",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def fixes(pubs):
    return {p.payload["time_ns"]: p.payload for p in pubs if p.channel == "fix"}


@pytest.mark.twins
async def test_record_a_receiver_and_a_terminal_while_the_gateway_publishes(tmp_path):
    rx = TracedReceiver("pty", rate=10, talker="GN", rdss=None, seed=3)
    await rx.start()
    got = []
    try:
        devices = [{"id": "bd-1", "driver": "beidou", "url": rx.url, "receiver": {"epoch_period_s": 0.1}}]
        config = base_config(devices, [LISTENER], control=["gnss/+"], name="rec")
        async with running(config, beidou.SPEC, jt808.SPEC) as gw, client(gw) as (stub, _):
            listener = gw.supervisor._running["fleet"].driver
            await until(lambda: listener.port, what="listener bound")
            fleet = Fleet("127.0.0.1", listener.port, terminals=1, rate=5.0)
            await fleet.start()
            phone = fleet.terminals[0].phone

            async def subscribe():
                async for batch in stub.Subscribe(pb.SubscribeRequest(from_seq=1), metadata=md(READ)):
                    for env in batch.envelopes:
                        got.append((env.seq, env.topic, msgpack.unpackb(env.payload)))

            sub = asyncio.ensure_future(subscribe())
            try:
                await fleet.wait_online()

                def count(topic):
                    return sum(1 for _, t, _ in got if t == topic)

                await until(lambda: count("gnss/bd-1/fix") >= 5 and count(f"gnss/{phone}/fix") >= 2, 10, "fixes")
                (rc_a, out_a, err_a), (rc_b, out_b, err_b) = await asyncio.gather(
                    tw(
                        "record",
                        "bd-1",
                        "--addr",
                        f"127.0.0.1:{gw.port}",
                        "--out",
                        tmp_path / "bd.twcap",
                        "--seconds",
                        "1",
                        "--note",
                        "test",
                    ),
                    tw(
                        "record",
                        phone,
                        "--addr",
                        f"127.0.0.1:{gw.port}",
                        "--out",
                        tmp_path / "t.twcap",
                        "--seconds",
                        "1",
                    ),
                )
                n = count("gnss/bd-1/fix")
                await until(lambda: count("gnss/bd-1/fix") >= n + 3, 5, "fixes after the recording")
                assert not gw.service.recordings and gw.supervisor.lookup("bd-1").ctx.tap is None
            finally:
                sub.cancel()
                await asyncio.gather(sub, return_exceptions=True)
                await fleet.stop()
    finally:
        await rx.stop()

    assert rc_a == 0, err_a
    assert rc_b == 0, err_b
    assert json.loads(out_a)["end"] == "1 s recorded" and json.loads(out_a)["bytes"] > 0
    assert not list(tmp_path.glob("*.part"))
    # a JT/T 808 capture holds the terminal's auth code: only the user who recorded it may read it
    for name in ("t.twcap", "bd.twcap"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name

    # subscribers lost nothing: every seq, and a fix for every epoch the receiver wrote meanwhile
    seqs = [s for s, _, _ in got]
    assert seqs == list(range(1, len(seqs) + 1))
    live_bd = {p["time_ns"]: p for _, t, p in got if t == "gnss/bd-1/fix"}
    times = sorted(live_bd)
    assert times == sorted(t for t in rx.epochs if times[0] <= t <= times[-1])

    # the receiver: the capture is one stretch of exactly what the simulator wrote, about 1 s of it
    bd = read_capture_file(str(tmp_path / "bd.twcap"))
    assert (bd.header["device_id"], bd.header["driver"], bd.header["transport"]) == ("bd-1", "beidou", "serial")
    assert bd.header["url"] == rx.url and bd.header["note"] == "test" and bd.trailer["end"] == "1 s recorded"
    assert {d for _, d, _ in bd.records} == {FROM_DEVICE}
    data = bd.device_bytes
    assert data and data in bytes(rx.written)
    assert 0.4 <= bd.duration_s <= 1.0
    assert all(bd.header["start_ns"] <= t <= bd.header["start_ns"] + 1_050_000_000 for t, _, _ in bd.records)
    dec = BeidouDecoder("bd-1")
    recorded = fixes(dec.feed(data) + dec.finish())
    assert len(recorded) >= 4
    for t, fix in recorded.items():  # the epochs of the window decode to the fixes subscribers got
        assert (fix["lat"], fix["lon"], fix["sats_used"]) == (
            live_bd[t]["lat"],
            live_bd[t]["lon"],
            live_bd[t]["sats_used"],
        )

    # the terminal: its reports (decoded to the fixes the listener published) and the platform's acks
    term = read_capture_file(str(tmp_path / "t.twcap"))
    assert (term.header["device_id"], term.header["driver"], term.header["parent"]) == (phone, "jt808", "fleet")
    assert term.header["url"] == f"tcp://127.0.0.1:{listener.port}"
    sent = [d for _, direction, d in term.records if direction == TO_DEVICE]
    assert sent and all(d[0] == 0x7E and d[1:3] == b"\x80\x01" for d in sent)  # platform general replies
    dec = Jt808Decoder(phone)
    recorded = [p.payload for p in dec.feed(term.device_bytes) if p.channel == "fix"]
    live = [p for _, t, p in got if t == f"gnss/{phone}/fix"]
    assert len(recorded) >= 3
    # reports at 5 Hz share their whole second: the recorded ones are a run of what was published
    at = live.index(recorded[0])
    assert live[at : at + len(recorded)] == recorded


async def test_replay_over_tcp_into_a_gateway_gives_the_capture_s_fixes():
    expected = [json.loads(line)["payload"] for line in EXPECTED.read_text().splitlines() if '/fix"' in line]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tianwang",
        "replay",
        str(CAPTURE),
        "--tcp",
        "127.0.0.1:0",
        "--speed",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert first["kind"] == "replay" and first["url"].startswith("tcp://127.0.0.1:")
        assert (first["device_id"], first["driver"], first["chunks"]) == ("bd-1", "beidou", 19)
        devices = [{"id": "bd-r", "driver": "beidou", "url": first["url"], "receiver": {"epoch_period_s": 0.2}}]
        async with running(base_config(devices, name="replayed"), beidou.SPEC) as gw, client(gw) as (stub, _):
            got = []

            async def subscribe():
                req = pb.SubscribeRequest(topics=["gnss/bd-r/fix"], from_seq=1)
                async for batch in stub.Subscribe(req, metadata=md(READ)):
                    got.extend(msgpack.unpackb(e.payload) for e in batch.envelopes)

            sub = asyncio.ensure_future(subscribe())
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 15)
                assert proc.returncode == 0, err
                final = json.loads(out.decode().splitlines()[-1])["final"]
                assert final["done"] and final["bytes_sent"] == first["bytes"]
                await until(lambda: len(got) >= len(expected), 5, "the replayed fixes")
                await asyncio.sleep(0.3)  # nothing more comes
            finally:
                sub.cancel()
                await asyncio.gather(sub, return_exceptions=True)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert got == expected


async def test_decode_of_a_capture_is_the_decode_of_its_bytes(tmp_path):
    raw = tmp_path / "raw.nmea"
    raw.write_bytes(read_capture_file(str(CAPTURE)).device_bytes)
    (rc1, from_capture, err1), (rc2, from_raw, _), (rc3, by_header, _) = await asyncio.gather(
        tw("decode", "--driver", "beidou", "--id", "capture", CAPTURE),
        tw("decode", "--driver", "beidou", raw),
        tw("decode", CAPTURE),
    )
    assert rc1 == rc2 == rc3 == 0, err1
    assert from_capture == from_raw == EXPECTED.read_text()
    # without --driver and --id, the capture's header names both: the recorded device's topics
    assert read_capture_file(str(CAPTURE)).header["device_id"] == "bd-1"
    assert by_header == EXPECTED.read_text().replace('"topic":"gnss/capture/', '"topic":"gnss/bd-1/')
    assert "15" not in err1 or "publications" in err1
    with open(raw, "rb") as f:  # raw input passes through untouched, whatever the size of the read
        stream, cap = capture_or_raw(f)
        assert cap is None and stream.read(3) + stream.read() == raw.read_bytes()


# -- the format ------------------------------------------------------------------------------------
records = st.lists(
    st.tuples(
        st.integers(-(10**9), 10**10), st.sampled_from([FROM_DEVICE, TO_DEVICE]), st.binary(min_size=1, max_size=64)
    ),
    max_size=20,
)


@given(records, st.text(max_size=20))
def test_a_capture_reads_back_as_written(recs, device_id):
    f = io.BytesIO()
    header = {"device_id": device_id, "driver": "beidou", "start_ns": 1_700_000_000_000_000_000, "extra": "kept"}
    w = CaptureWriter(f, header)
    t = header["start_ns"]
    absolute = []
    for dt, direction, data in recs:
        t += dt
        w.add(t, direction, data)
        absolute.append((t, direction, data))
    w.close("done")
    cap = read_capture(f.getvalue())
    assert cap.header == header and cap.records == absolute and cap.trailer["end"] == "done"
    assert cap.device_bytes == b"".join(d for _, direction, d in recs if direction == FROM_DEVICE)


def small_capture() -> bytes:
    f = io.BytesIO()
    w = CaptureWriter(f, {"device_id": "bd-1", "driver": "beidou", "start_ns": 10})
    w.add(20, FROM_DEVICE, b"$GNRMC,1*00\r\n")
    w.add(25, TO_DEVICE, b"$CCICA,0,00*7B\r\n")
    w.close("1 s recorded")
    return f.getvalue()


def test_every_truncation_and_every_flipped_byte_is_an_error():
    data = small_capture()
    good = read_capture(data)
    for cut in range(len(data)):
        with pytest.raises(CaptureError, match="truncated|empty|not a tianwang capture"):
            read_capture(data[:cut])
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x41
        try:
            cap = read_capture(bytes(bad))
        except CaptureError:
            continue
        # only the end record's own text may change unnoticed: the records never do
        assert cap.records == good.records and cap.header == good.header
    assert zlib.crc32(data[: data.rindex(b"\x84")]) == good.trailer["crc32"]
    with pytest.raises(CaptureError, match="version 2"):
        read_capture(MAGIC + b"\x02" + data[len(MAGIC) + 1 :])


async def test_replay_and_decode_refuse_bad_files_in_one_line(tmp_path):
    data = CAPTURE.read_bytes()
    (tmp_path / "cut.twcap").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.twcap").write_bytes(bytes(flipped))
    (tmp_path / "text.nmea").write_bytes(b"$GNRMC\r\n")
    runs = await asyncio.gather(
        tw("replay", tmp_path / "cut.twcap"),
        tw("decode", tmp_path / "cut.twcap"),
        tw("replay", tmp_path / "flipped.twcap", "--tcp", "127.0.0.1:0"),
        tw("decode", "--driver", "beidou", tmp_path / "flipped.twcap"),
        tw("replay", tmp_path / "text.nmea"),
        tw("replay", tmp_path / "missing.twcap"),
        tw("replay", CAPTURE, "--speed", "-1"),
    )
    for (rc, out, err), what in zip(
        runs,
        ("truncated", "truncated", "corrupt", "corrupt", "not a tianwang capture", "cannot read", "speed"),
        strict=True,
    ):
        assert rc == 2 and out == "", err
        assert len(err.strip().splitlines()) == 1 or what == "speed", err
        assert what in err and "Traceback" not in err


# -- refusals --------------------------------------------------------------------------------------
async def test_record_refusals(tmp_path):
    rx = ReceiverSimulator("pty", rate=10, rdss=None)
    await rx.start()
    try:
        devices = [
            {"id": "bd-1", "driver": "beidou", "url": rx.url},
            {"id": "cam-1", "driver": "onvif", "host": "127.0.0.1", "port": 9, "username": "u", "password": "p"},
        ]
        config = base_config(devices, [LISTENER], control=["gnss/+", "camera/+"], name="refusals")
        async with running(config, beidou.SPEC, jt808.SPEC, onvif.SPEC) as gw, client(gw) as (stub, _):
            await until(lambda: gw.supervisor.lookup("bd-1").state.value == "ONLINE", 10, "receiver online")

            async def record(token=CONTROL, **req):
                chunks = []
                try:
                    async for chunk in stub.Record(pb.RecordRequest(**req), metadata=md(token)):
                        chunks.append(chunk)
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details()
                return chunks

            assert (await record(READ, device_id="bd-1", seconds=1))[0] == grpc.StatusCode.PERMISSION_DENIED
            assert (await record(None, device_id="bd-1", seconds=1))[0] == grpc.StatusCode.UNAUTHENTICATED
            assert (await record(device_id="nope", seconds=1))[0] == grpc.StatusCode.NOT_FOUND
            code, text = await record(device_id="cam-1", seconds=1)
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "HTTP/SOAP" in text
            code, text = await record(device_id="fleet", seconds=1)
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "listener" in text and "terminals" in text
            assert (await record(device_id="bd-1", seconds=-1))[0] == grpc.StatusCode.INVALID_ARGUMENT
            assert (await record(device_id="bd-1", seconds=float("nan")))[0] == grpc.StatusCode.INVALID_ARGUMENT
            assert (await record(device_id="bd-1", max_bytes=1 << 40))[0] == grpc.StatusCode.INVALID_ARGUMENT

            # max_bytes ends a recording with exactly that many bytes
            chunks = await record(device_id="bd-1", max_bytes=1000)
            assert chunks[0].start.device_id == "bd-1" and chunks[0].start.driver == "beidou"
            assert chunks[-1].end.startswith("max_bytes") and sum(len(c.data) for c in chunks) == 1000
            assert gw.supervisor.lookup("bd-1").ctx.tap is None

            # who recorded what, and who was refused, is audited like a command
            audits = [e["payload"] for e in journal_envelopes(gw.journal, "audit/bd-1/record")]
            assert [(a["principal"], a["code"], a["ok"]) for a in audits] == [
                ("reader", "PERMISSION_DENIED", False),
                ("operator", "STARTED", True),
                ("operator", "ENDED", True),
            ]
            assert "needs `control`" in audits[0]["message"] and audits[0]["bytes"] == 0
            assert audits[1]["max_bytes"] == 1000 and audits[1]["seconds"] == 0
            assert audits[2]["bytes"] == 1000 and audits[2]["message"].startswith("max_bytes")
            assert journal_envelopes(gw.journal, "audit/+/record") == journal_envelopes(gw.journal, "audit/bd-1/record")

            addr = f"127.0.0.1:{gw.port}"
            out = tmp_path / "x.twcap"
            runs = await asyncio.gather(
                tw("record", "bd-1", "--addr", addr, "--out", out, "--seconds", "1", token=READ),
                tw("record", "cam-1", "--addr", addr, "--out", out, "--seconds", "1"),
                tw("record", "nope", "--addr", addr, "--out", out, "--seconds", "1"),
                tw("record", "bd-1", "--addr", addr, "--out", tmp_path / "no" / "x.twcap", "--seconds", "1"),
                tw("record", "bd-1", "--addr", "127.0.0.1:1", "--timeout", "0.3", "--out", out, "--seconds", "1"),
            )
            for (rc, stdout, err), what in zip(
                runs,
                ("PERMISSION_DENIED", "HTTP/SOAP", "NOT_FOUND", "cannot write", "cannot reach the gateway"),
                strict=True,
            ):
                assert rc == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
                assert what in err, err
            assert not list(tmp_path.rglob("*.twcap*"))
            for seconds in ("0", "-2"):
                rc, _, err = await tw("record", "bd-1", "--addr", addr, "--out", out, "--seconds", seconds)
                assert rc == 2 and "--seconds" in err and "Traceback" not in err
    finally:
        await rx.stop()


async def test_recorders_that_vanish_mid_stream_release_the_device(tmp_path):
    """A recorder killed mid-stream (its connection just drops) ends its recording; the gateway
    carries on (reading the call's peer after such a drop used to crash grpc)."""
    rx = ReceiverSimulator("pty", rate=10, rdss=None)
    await rx.start()
    try:
        config = base_config([{"id": "bd-1", "driver": "beidou", "url": rx.url}], control=["gnss/+"], name="vanish")
        async with running(config, beidou.SPEC) as gw, client(gw) as (stub, _):
            await until(lambda: gw.supervisor.lookup("bd-1").state.value == "ONLINE", 10, "receiver online")
            for i in range(3):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tianwang",
                    "record",
                    "bd-1",
                    "--addr",
                    f"127.0.0.1:{gw.port}",
                    "--out",
                    str(tmp_path / f"{i}.twcap"),
                    env=dict(os.environ, TIANWANG_TOKEN=CONTROL),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    cwd=ROOT,
                )
                await until(lambda: gw.service.recordings, 10, "a recording")
                await asyncio.sleep(0.1 * i)
                proc.kill()
                await proc.wait()
                await until(lambda: not gw.service.recordings, 5, "the recording released")
            assert gw.supervisor.lookup("bd-1").ctx.tap is None
            reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
            assert [d.state for d in reply.devices] == ["ONLINE"]
            assert gw.service.counters["record_calls"] == 3

            # a reload that takes `control` on the device from the token ends its recording
            from tianwang.gateway.datapath.auth import Authenticator
            from tianwang.gateway.lifecycle.config import load_config

            chunks = []

            async def record():
                async for chunk in stub.Record(pb.RecordRequest(device_id="bd-1"), metadata=md(CONTROL)):
                    chunks.append(chunk)

            task = asyncio.ensure_future(record())
            await until(lambda: len(chunks) >= 2, 5, "recorded bytes")
            narrower = load_config(base_config([], control=["test/+"]), gw.registry).auth
            assert gw.service.recheck_streams(Authenticator(narrower)) == 1
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await asyncio.wait_for(task, 5)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "may no longer record gnss/bd-1" in denied.value.details()
            await until(lambda: not gw.service.recordings, 5, "the recording released")
    finally:
        await rx.stop()


async def test_record_a_signal_controller_over_tcp_both_ways():
    """A GB/T 20999 controller over TCP: its replies and reports, and the driver's polls."""
    import tianwang.drivers.signal as signal
    from gw import journal_envelopes
    from tianwang.drivers.signal.decode import Decoder as SignalDecoder
    from tianwang.drivers.signal.simulator import SignalSimulator

    sim = SignalSimulator("tcp", controllers=1, base_id=17, traffic_s=0.3)
    await sim.start()
    try:
        devices = [{"id": "tsc-1", "driver": "signal", "url": sim.url, "poll_hz": 5}]
        async with (
            running(base_config(devices, control=["signal/+"], name="sig"), signal.SPEC) as gw,
            client(gw) as (stub, _),
        ):
            await until(lambda: gw.supervisor.lookup("tsc-1").state.value == "ONLINE", 10, "controller online")
            chunks = [
                c async for c in stub.Record(pb.RecordRequest(device_id="tsc-1", seconds=0.8), metadata=md(CONTROL))
            ]
            live = [e["payload"]["groups"] for e in journal_envelopes(gw.journal, "signal/tsc-1/lamps")]
    finally:
        await sim.stop()
    start, body, end = chunks[0].start, chunks[1:-1], chunks[-1]
    assert (start.driver, start.transport, start.url) == ("signal", "tcp", sim.url)
    assert end.end == "0.8 s recorded"
    polls = [c.data for c in body if c.direction == pb.TO_DEVICE]
    replies = b"".join(c.data for c in body if c.direction == pb.FROM_DEVICE)
    assert len(polls) >= 3 and replies
    assert [c.t_ns for c in body] == sorted(c.t_ns for c in body)
    host = SignalDecoder("tsc-1")
    assert host.feed(b"".join(polls)) == [] and host.drops.get("host_frame") == len(polls)
    dec = SignalDecoder("tsc-1")
    lamps = [p.payload["groups"] for p in dec.feed(replies) if p.channel == "lamps"]
    assert len(lamps) >= 3 and all(g in live for g in lamps)
