"""The holes found on review, each closed: a caller without a token cannot flood the journal
through SendCommand audits, requests are bounded per method with clear errors, GetStats shows
other people's streams only to admins, commands can be rate-limited per token, tokenless reads
are loud, and no token ever reaches the logs."""

import asyncio
import logging
import signal

import grpc
import msgpack
import pytest
import yaml

from gw import CONTROL, READ, GatewayProcess, base_config, client, md, running, unpack
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)

ADMIN = "admin-token-0123456789"


def gen(dev_id, **kw):
    return {"id": dev_id, "driver": "testgen", "rate_hz": 0, **kw}


async def audits(stub, device="#"):
    stream = stub.Subscribe(
        pb.SubscribeRequest(topics=[f"audit/{device}"], from_seq=1, max_delay_ms=1), metadata=md(READ)
    )
    out = []
    try:
        while True:
            batch = await asyncio.wait_for(stream.read(), 0.5)
            out += [unpack(e.payload) for e in batch.envelopes]
    except TimeoutError:
        pass
    stream.cancel()
    return out


async def test_refused_commands_cannot_flood_the_journal():
    async with running(base_config([gen("gen-1")])) as gw:
        async with client(gw) as (stub, _):
            big = msgpack.packb({"blob": "x" * 60_000})
            codes = []
            for _ in range(120):  # no token, 60 KB of args each
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.SendCommand(
                        pb.CommandRequest(device_id="gen-1", action="echo", args=big, reason="r" * 900)
                    )
                codes.append(err.value.code())
            # the first refusals of the burst are audited, the rest are refused and counted
            assert codes[:50] == [grpc.StatusCode.UNAUTHENTICATED] * 50
            assert set(codes[50:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            assert stats.counters["commands_refused_unaudited"] == 70
            # audited by what they were, not by what they carried
            recs = await audits(stub, "gen-1/command")
            assert len(recs) == 50
            assert recs[0]["args"] == {} and recs[0]["args_bytes"] == len(big) and recs[0]["principal"] == ""
            assert recs[0]["code"] == "UNAUTHENTICATED"
            assert stats.journal_bytes < 64 * 1024  # 120 x 60 KB of args did not go into the journal
            assert stats.first_seq == 1  # and nothing was evicted
            # other clients are not affected by one address's refusals: an authorized command runs
            reply = await stub.SendCommand(
                pb.CommandRequest(device_id="gen-1", action="echo", reason="ok"), metadata=md(CONTROL)
            )
            assert reply.ok


async def test_requests_are_bounded_per_method_with_clear_errors():
    async with running(base_config([gen("gen-1")])) as gw:
        async with client(gw) as (stub, _):
            cases = [
                (
                    pb.CommandRequest(device_id="gen-1", action="echo", args=msgpack.packb({"b": "x" * 70_000})),
                    "args: ",
                ),
                (pb.CommandRequest(device_id="gen-1", action="echo", reason="y" * 100_000), "CommandRequest of"),
                (pb.CommandRequest(device_id="gen-1", action="a" * 65), "action: longer than 64"),
                (pb.CommandRequest(device_id="gen-1", action="echo", reason="y" * 1025), "reason: longer than 1024"),
            ]
            for req, text in cases:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.SendCommand(req, metadata=md(CONTROL))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (text, err.value.details())
                assert text in err.value.details()
            for req, text in [
                (pb.SubscribeRequest(topics=["test/#"] * 65), "at most 64"),
                (pb.SubscribeRequest(topics=["a/" * 200 + "b"]), "longer than 256"),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Subscribe(req, metadata=md(READ)).read()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in err.value.details()
            # past 1 MiB gRPC itself refuses, with RESOURCE_EXHAUSTED, never UNKNOWN
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SendCommand(
                    pb.CommandRequest(device_id="gen-1", action="echo", reason="z" * (2 << 20)), metadata=md(CONTROL)
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_get_stats_shows_other_streams_only_to_admins():
    cfg = base_config([gen("gen-1")])
    cfg["auth"]["tokens"].append({"name": "ops", "token": ADMIN, "read": ["#"], "admin": True})
    async with running(cfg) as gw:
        async with client(gw) as (stub, _):
            mine = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"]), metadata=md(READ))
            theirs = stub.Subscribe(pb.SubscribeRequest(topics=["gnss/#"]), metadata=md(CONTROL))
            while len(gw.service.subscribers) < 2:
                await asyncio.sleep(0.01)
            as_reader = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            assert [s.principal for s in as_reader.subscriber_stats] == ["reader"]
            assert as_reader.subscribers == 2  # the count is no secret
            as_admin = await stub.GetStats(pb.GetStatsRequest(), metadata=md(ADMIN))
            assert sorted(s.principal for s in as_admin.subscriber_stats) == ["operator", "reader"]
            mine.cancel()
            theirs.cancel()


async def test_per_token_command_rate_limit_is_audited():
    cfg = base_config([gen("gen-1")])
    for t in cfg["auth"]["tokens"]:
        if t["name"] == "operator":
            t.update(commands_per_s=0.5, commands_burst=2)
    async with running(cfg) as gw:
        async with client(gw) as (stub, _):
            results = []
            for _ in range(4):
                try:
                    r = await stub.SendCommand(
                        pb.CommandRequest(device_id="gen-1", action="echo", reason="x"), metadata=md(CONTROL)
                    )
                    results.append(r.code)
                except grpc.aio.AioRpcError as exc:
                    results.append(exc.code().name)
                    assert "limited to 0.5 commands/s" in exc.details()
            assert results == ["OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
            recs = await audits(stub, "gen-1/command")
            assert [r["code"] for r in recs] == ["OK", "OK", "RATE_LIMITED", "RATE_LIMITED"]
            assert all(r["principal"] == "operator" and r["reason"] == "x" for r in recs)


async def test_tokenless_reads_are_off_by_default_and_loud_when_on(caplog):
    async with running(base_config([gen("gen-1")])) as gw:
        async with client(gw) as (stub, _):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Subscribe(pb.SubscribeRequest()).read()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "anonymous_read" not in caplog.text
    cfg = base_config([gen("gen-1")])
    cfg["auth"]["anonymous_read"] = ["test/#"]
    with caplog.at_level(logging.WARNING):
        async with running(cfg):
            pass
    assert "auth.anonymous_read is on: anyone who reaches this port may read test/# without a token" in caplog.text


async def test_no_token_reaches_the_logs_of_a_full_run(tmp_path):
    wrong = "wrong-token-the-logs-must-not-show-42"
    rotated = "rotated-control-token-9876543210"
    path = tmp_path / "gw.yaml"
    cfg = {
        "gateway": {"name": "logs", "listen": "127.0.0.1:0", "metrics": None},
        "auth": {
            "allow_inline_secrets": True,
            "tokens": [
                {"name": "reader", "token_env": "TW_T_READ", "read": ["#"]},
                {"name": "operator", "token": CONTROL, "read": ["#"], "control": ["#"]},
            ],
        },
        "devices": [{"id": "g", "driver": "testgen", "rate_hz": 20}],
    }
    path.write_text(yaml.safe_dump(cfg))
    proc = GatewayProcess(path, {"TW_T_READ": READ, "TIANWANG_LOG_LEVEL": "debug"})
    try:
        async with client(proc.addr) as (stub, _):
            s = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md(READ))
            await asyncio.wait_for(s.read(), 5)
            await stub.SendCommand(
                pb.CommandRequest(device_id="g", action="echo", reason="log test"), metadata=md(CONTROL)
            )
            for bad in (wrong, f"{wrong} extra", "Basic " + wrong):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.SendCommand(
                        pb.CommandRequest(device_id="g", action="echo"), metadata=(("authorization", bad),)
                    )
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.GetStats(pb.GetStatsRequest(), metadata=(("authorization", f"Bearer {bad}"),))
            cfg["auth"]["tokens"][1]["token"] = rotated
            path.write_text(yaml.safe_dump(cfg))
            proc.signal(signal.SIGHUP)
            with pytest.raises(grpc.aio.AioRpcError):
                for _ in range(200):
                    await stub.SendCommand(pb.CommandRequest(device_id="g", action="echo"), metadata=md(CONTROL))
                    await asyncio.sleep(0.02)
            s.cancel()
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    logs = proc.stderr()
    assert "DEBUG" in logs and "reloaded" in logs  # it was a full, verbose run
    for secret in (READ, CONTROL, wrong, rotated):
        assert secret not in logs
