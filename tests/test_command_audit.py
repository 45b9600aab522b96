"""Every command that reaches a device is audited with its outcome, whatever happens to its caller:
the attempt is on record before the device is touched, the outcome after (issue 20, item 7).
And Record calls: audited before the first byte is taken, their buffers bounded (item 16)."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import msgpack
import pytest

from gw import CONTROL, base_config, client, journal_envelopes, md, running, until
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)


def gen(id, **kw):
    return {"id": id, "driver": "testgen", "rate_hz": 0, **kw}


def audits(gw, pattern="audit/#"):
    return journal_envelopes(gw.journal, pattern)


async def online(gw, device_id):
    await until(lambda: gw.supervisor.lookup(device_id).state.value == "ONLINE", 10, f"{device_id} ONLINE")


async def test_a_command_whose_caller_cancels_runs_on_and_is_audited_with_its_outcome():
    async with running(base_config([gen("gen-1")])) as gw, client(gw) as (stub, _):
        await online(gw, "gen-1")
        call = stub.SendCommand(
            pb.CommandRequest(
                device_id="gen-1", action="slow", args=msgpack.packb({"s": 0.6}), reason="try", timeout_ms=10_000
            ),
            metadata=md(CONTROL),
        )
        # the attempt is on record while the device is still working on it
        await until(lambda: audits(gw, "audit/gen-1/command/attempt"), 10, "the attempt's audit record")
        attempt = audits(gw, "audit/gen-1/command/attempt")[0]
        assert attempt["payload"]["action"] == "slow" and attempt["payload"]["principal"] == "operator"
        assert attempt["payload"]["args"] == {"s": 0.6} and attempt["payload"]["reason"] == "try"
        assert not audits(gw, "audit/gen-1/command")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # the device finishes, and its outcome is audited though nobody waits for it
        await until(lambda: audits(gw, "audit/gen-1/command"), 10, "the outcome's audit record")
        outcome = audits(gw, "audit/gen-1/command")[0]
        p = outcome["payload"]
        assert (p["ok"], p["code"], p["caller_cancelled"], p["attempt_seq"]) == (True, "OK", True, attempt["seq"])
        assert outcome["seq"] > attempt["seq"]

        # a caller that waits gets the outcome's seq, linked to its attempt
        reply = await stub.SendCommand(pb.CommandRequest(device_id="gen-1", action="refuse"), metadata=md(CONTROL))
        records = {e["seq"]: e for e in audits(gw, "audit/gen-1/command/#")}
        done = records[reply.audit_seq]
        assert done["topic"] == "audit/gen-1/command" and done["payload"]["code"] == "REFUSED"
        assert done["payload"]["caller_cancelled"] is False
        assert records[done["payload"]["attempt_seq"]]["topic"] == "audit/gen-1/command/attempt"


async def test_a_command_in_flight_when_the_gateway_stops_is_audited_as_cancelled():
    async with running(base_config([gen("gen-1")])) as gw, client(gw) as (stub, _):
        await online(gw, "gen-1")
        call = stub.SendCommand(
            pb.CommandRequest(device_id="gen-1", action="slow", args=msgpack.packb({"s": 30}), timeout_ms=60_000),
            metadata=md(CONTROL),
        )
        await until(lambda: audits(gw, "audit/gen-1/command/attempt"), 10, "the attempt's audit record")
        await gw.stop()
        with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
            await call
        outcome = audits(gw, "audit/gen-1/command")
        assert [(e["payload"]["ok"], e["payload"]["code"]) for e in outcome] == [(False, "CANCELLED")]


def unwritable(publish, suffix):
    """The router's publish, failing as a journal that cannot write does for topics ending in `suffix`."""
    from tianwang.gateway.errors import FrameError

    def failing(topic, device_id, payload, *a):
        if topic.endswith(suffix):
            raise FrameError(f"{topic}: journal unwritable: disk full (test)")
        return publish(topic, device_id, payload, *a)

    return failing


async def test_a_command_is_not_run_when_its_attempt_cannot_be_recorded():
    async with running(base_config([gen("gen-1")])) as gw, client(gw) as (stub, _):
        await online(gw, "gen-1")
        emitted = gw.supervisor.lookup("gen-1").envelopes
        gw.router.publish = unwritable(gw.router.publish, "/command/attempt")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SendCommand(
                pb.CommandRequest(device_id="gen-1", action="emit", args=msgpack.packb({"n": 3})), metadata=md(CONTROL)
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert gw.supervisor.lookup("gen-1").envelopes == emitted  # the device was never asked


def tap_spec():
    """The test driver, recordable: a test hands bytes to its tap as a driver's read would."""
    import tw_testgen

    return dataclasses.replace(tw_testgen.SPEC, name="taptest", transports=("tcp",), recordable=True)


async def test_a_recorder_that_stops_reading_holds_a_bounded_amount():
    from tianwang.gateway.datapath import fanout

    assert fanout.MAX_RECORD_BUFFERED // fanout.MAX_RECORDINGS * fanout.MAX_RECORDINGS <= fanout.MAX_RECORD_BUFFERED
    devices = [{"id": f"tap-{i}", "driver": "taptest", "rate_hz": 0} for i in range(3)]
    async with running(base_config(devices), tap_spec()) as gw, client(gw) as (stub, _):
        for i in range(3):
            await online(gw, f"tap-{i}")
        gw.service.record_held_bytes = 1 << 20  # a smaller share, so the test needs fewer bytes
        calls = [
            stub.Record(pb.RecordRequest(device_id=f"tap-{i}", max_bytes=200 << 20), metadata=md(CONTROL))
            for i in range(3)
        ]
        await until(lambda: len(gw.service.recordings) == 3, 10, "three recordings")
        chunk = b"\x7e" * 65536
        for _ in range(200):  # 13 MB per device; nobody reads
            for i in range(3):
                tap = gw.supervisor.lookup(f"tap-{i}").ctx.tap
                if tap is not None:
                    tap(chunk)
            await asyncio.sleep(0)
        held = [r.held for r in gw.service.recordings]
        assert all(r.overrun for r in gw.service.recordings)
        assert sum(held) <= 3 * (1 << 20)
        # a recorder that reads again gets what was held, then the reason its recording ended
        got = 0
        end = None
        async for c in calls[0]:
            got += len(c.data)
            if c.end:
                end = c.end
        assert end is not None and "fell behind" in end and got > 0
        for c in calls[1:]:
            c.cancel()
        await until(lambda: not gw.service.recordings, 10, "the recordings released")
        records = [e["payload"] for e in journal_envelopes(gw.journal, "audit/tap-0/record")]
        assert [r["code"] for r in records] == ["STARTED", "ENDED"] and "fell behind" in records[1]["message"]


async def test_a_recording_is_not_made_when_its_start_cannot_be_audited():
    async with (
        running(base_config([{"id": "tap-1", "driver": "taptest", "rate_hz": 0}]), tap_spec()) as gw,
        client(gw) as (stub, _),
    ):
        await online(gw, "tap-1")
        gw.router.publish = unwritable(gw.router.publish, "/record")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Record(pb.RecordRequest(device_id="tap-1", seconds=1), metadata=md(CONTROL)):
                pass
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert gw.supervisor.lookup("tap-1").ctx.tap is None and not gw.service.recordings
