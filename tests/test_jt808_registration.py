"""JT/T 808 registrations: a registered phone cannot be registered again over the air (the
terminal hijack of issue 7), registrations persist across restarts in `registrations_file`, an
operator's `deregister` (control grant + reason, audited) lets a phone register again, and the
`open` policy that keeps the old behaviour is an explicit, logged choice. Real TCP on 127.0.0.1."""

import json
import logging
import os
import stat
import subprocess
import sys

import grpc
import msgpack
import pytest
import yaml

import tianwang.drivers.jt808 as jt808
from gw import CONTROL, GNSS_ONLY, ROOT, base_config, client, journal_envelopes, md, running
from jt808_helpers import SECRET, RawTerminal, listener, location, until
from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.jt808.registry import Registrations, RegistryError, read_file, write_file
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.driver import Health

pytestmark = pytest.mark.timeout(60)


def registration(plate="", colour=0, maker="M", terminal_id="ID"):
    return p.register_body(p.Registration(31, 0, maker, "X", terminal_id, colour, plate, "2013"))


async def register(raw, **kw):
    """Send a 0x0100; return (result, code) of the 0x8100."""
    await raw.send(p.REGISTER, registration(**kw))
    header, body = await raw.recv()
    assert header.msg_id == p.REGISTER_REPLY
    serial, result, code = p.parse_register_reply(body)
    assert serial == raw.serial
    return result, code


async def report(raw, lat):
    await raw.send(p.LOCATION, location(lat=lat))
    return (await raw.ack())[1][2]


# -- the hijack ---------------------------------------------------------------------------------
async def test_second_registration_of_a_phone_is_refused_and_the_real_session_lives_on():
    async with listener() as gw:
        real = await RawTerminal("13800000001").connect(gw.port)
        result, code = await register(real, plate="沪A10001", colour=2)
        assert (result, code) == (p.RegisterResult.OK, p.derive_auth_code(SECRET.encode(), "13800000001"))
        assert await real.login(code) == p.Result.OK
        assert await report(real, 1.0) == p.Result.OK

        # someone else reaches the port and registers as the same phone: result 3, no code
        thief = await RawTerminal("13800000001").connect(gw.port)
        result, stolen = await register(thief, plate="沪A10001", colour=2)
        assert (result, stolen) == (p.RegisterResult.TERMINAL_REGISTERED, "")
        # whatever it then presents does not authenticate, and the real session is not touched
        assert await thief.login(stolen or "guess") == p.Result.FAILURE
        assert await report(real, 2.0) == p.Result.OK
        await until(lambda: len(gw.payloads("gnss/13800000001/fix")) == 2, what="both fixes")
        assert [f["lat"] for f in gw.payloads("gnss/13800000001/fix")] == [1.0, 2.0]
        assert gw.entry("13800000001").state == Health.ONLINE
        counters = gw.entry("fleet").counters
        assert counters.get("connections_replaced", 0) == 0
        assert counters["reregistrations_refused"] == 1 and counters["registrations"] == 1
        assert [h["state"] for h in gw.payloads("gnss/13800000001/health")] == ["ONLINE"]
        # the real terminal reconnecting with its code still replaces its own stale connection
        again = await RawTerminal("13800000001").connect(gw.port)
        assert await again.login(code) == p.Result.OK
        assert await real.closed_by_peer()
        assert await report(again, 3.0) == p.Result.OK
        for t in (thief, again):
            t.close()


async def test_a_terminal_that_came_in_with_its_code_cannot_be_registered_over():
    # provisioned out of band (derived code), it never sent a 0x0100: its first authentication registers it
    async with listener() as gw:
        real = await RawTerminal("13800000002").connect(gw.port)
        assert await real.login() == p.Result.OK
        thief = await RawTerminal("13800000002").connect(gw.port)
        assert await register(thief) == (p.RegisterResult.TERMINAL_REGISTERED, "")
        assert await report(real, 4.0) == p.Result.OK
        rows = await gw.sup.send_command("fleet", "registrations", {}, 5.0)
        assert [(r["phone"], r["via"]) for r in rows["terminals"]] == [("13800000002", "0x0102")]
        assert "code" not in rows["terminals"][0] and rows["persistent"] is False
        for t in (real, thief):
            t.close()


async def test_a_vehicle_registered_to_another_phone_gets_result_1():
    async with listener() as gw:
        first = await RawTerminal("13800000003").connect(gw.port)
        assert (await register(first, plate="粤B12345", colour=1))[0] == p.RegisterResult.OK
        other = await RawTerminal("13800000004").connect(gw.port)
        assert await register(other, plate="粤B12345", colour=1) == (p.RegisterResult.VEHICLE_REGISTERED, "")
        # the same plate in another colour is another vehicle; no plate binds nothing
        assert (await register(other, plate="粤B12345", colour=2))[0] == p.RegisterResult.OK
        third = await RawTerminal("13800000005").connect(gw.port)
        assert (await register(third))[0] == p.RegisterResult.OK
        for t in (first, other, third):
            t.close()


async def test_a_wrong_code_never_closes_the_live_session():
    async with listener() as gw:
        real = await RawTerminal("13800000006").connect(gw.port)
        assert await real.login() == p.Result.OK
        thief = await RawTerminal("13800000006").connect(gw.port)
        assert await thief.login("0000000000000000") == p.Result.FAILURE
        assert await report(real, 5.0) == p.Result.OK
        assert gw.entry("fleet").counters.get("connections_replaced", 0) == 0
        for t in (real, thief):
            t.close()


# -- persistence --------------------------------------------------------------------------------
async def test_registrations_survive_a_restart_and_the_old_code_still_authenticates(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "fleet.registrations"
    # no auth_secret: a random one per start, so only the file can carry the code across the restart
    async with listener(auth_secret=None, registrations_file=str(path)) as gw:
        real = await RawTerminal("13800000007").connect(gw.port)
        result, code = await register(real, plate="京A00007", colour=1, maker="ACME", terminal_id="T7")
        assert result == p.RegisterResult.OK and code
        assert await real.login(code) == p.Result.OK
        real.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = read_file(str(path))
    assert saved["13800000007"]["code"] == code
    assert {k: saved["13800000007"][k] for k in ("manufacturer", "terminal_id", "plate", "via")} == {
        "manufacturer": "ACME",
        "terminal_id": "T7",
        "plate": "京A00007",
        "via": "0x0100",
    }
    async with listener(auth_secret=None, registrations_file=str(path)) as gw:
        assert gw.entry("fleet").info["registrations"] == "1"
        thief = await RawTerminal("13800000007").connect(gw.port)
        assert await register(thief) == (p.RegisterResult.TERMINAL_REGISTERED, "")
        back = await RawTerminal("13800000007").connect(gw.port)
        assert await back.login(code) == p.Result.OK
        assert await report(back, 6.0) == p.Result.OK
        # a second vehicle with the same plate is still refused after the restart
        other = await RawTerminal("13800000008").connect(gw.port)
        assert (await register(other, plate="京A00007", colour=1))[0] == p.RegisterResult.VEHICLE_REGISTERED
        for t in (thief, back, other):
            t.close()
    # codes are secrets: no log line carries one
    assert code not in caplog.text


async def test_a_registrations_file_that_cannot_be_written_degrades_the_listener_until_it_can(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    path = state / "fleet.registrations"
    async with listener(registrations_file=str(path)) as gw:
        state.rmdir()  # the directory went away under the listener
        a = await RawTerminal("13800000012").connect(gw.port)
        assert (await register(a))[0] == p.RegisterResult.OK
        await until(lambda: gw.entry("fleet").state == Health.DEGRADED, what="DEGRADED")
        assert "registrations not saved: cannot write" in gw.entry("fleet").reason
        assert gw.entry("fleet").counters["registrations_write_errors"] == 1
        state.mkdir()
        b = await RawTerminal("13800000013").connect(gw.port)
        assert (await register(b))[0] == p.RegisterResult.OK
        await until(lambda: gw.entry("fleet").state == Health.ONLINE, what="ONLINE again")
        assert set(read_file(str(path))) == {"13800000012", "13800000013"}  # nothing registered meanwhile was lost
        for t in (a, b):
            t.close()


async def test_a_registrations_file_in_a_missing_directory_stops_the_listener_from_starting(tmp_path):
    from tianwang.gateway.datapath.journal import Journal
    from tianwang.gateway.datapath.router import Router
    from tianwang.gateway.lifecycle.config import load_config
    from tianwang.gateway.lifecycle.registry import Registry
    from tianwang.gateway.lifecycle.supervisor import Supervisor

    reg = Registry()
    reg.register(jt808.SPEC)
    entry = {
        "id": "fleet",
        "driver": "jt808",
        "listen": "127.0.0.1:0",
        "registrations_file": str(tmp_path / "no" / "r"),
    }
    # `check` refuses it (tests/test_site_check.py); a directory removed after the check is refused by
    # the listener itself
    with pytest.raises(ConfigError):
        load_config({"gateway": {"metrics": None}, "listeners": [entry]}, reg)
    config = load_config({"gateway": {"metrics": None}}, reg).model_copy(
        update={"listeners": (jt808.SPEC.config_model.model_validate(entry),)}
    )
    sup = Supervisor(reg, Router(Journal(1 << 20)))
    await sup.apply(config)
    try:
        row = sup.lookup("fleet")
        assert row.state == Health.OFFLINE and f"directory {tmp_path / 'no'} does not exist" in row.reason
        assert "fleet" not in sup._running
    finally:
        await sup.stop_all()


def test_registrations_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    reg = Registrations(str(path))  # no event loop: written at once
    reg.add("1", "code-1", "0x0100", {"plate": "A1", "plate_colour": 1})
    before = path.read_bytes()

    def crash(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        reg.add("2", "code-2", "0x0100", {})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the crash mid-write left the old file as it was
    assert set(Registrations(str(path)).terminals) == {"1"}
    assert Registrations(str(path)).phone_of_plate(1, "A1") == "1"
    write_file(str(path), {"3": {"code": "c"}})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o644)  # copied in by hand, say: loading tightens it
    assert set(Registrations(str(path)).terminals) == {"3"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize(
    "content, why",
    [
        (b'{"format": "tianwang.jt808.registrations", "version": 1, "terminals": {', "corrupt: Expecting"),
        (b"[1, 2]", "not a registrations file"),
        (b"\xff\xfe", "corrupt: not UTF-8"),
        (
            b'{"format": "tianwang.jt808.registrations", "version": 1, "terminals": {"12x": {"code": "a"}}}',
            "not a phone number",
        ),
        (b'{"format": "tianwang.jt808.registrations", "version": 1, "terminals": {"12": {}}}', "has no code"),
    ],
)
def test_a_corrupt_registrations_file_is_a_one_line_error(tmp_path, content, why):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    with pytest.raises(RegistryError) as info:
        Registrations(str(path))
    assert str(path) in str(info.value) and why in str(info.value) and "\n" not in str(info.value)


def _config_file(tmp_path, **listener_keys):
    cfg = tmp_path / "gw.yaml"
    entry = {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:0", "auth_secret_env": "TW_T_JT"}
    entry.update(listener_keys)
    cfg.write_text(
        yaml.safe_dump(
            {
                "gateway": {"listen": "127.0.0.1:0", "metrics": None},
                "auth": {"tokens": [{"name": "ops", "token_env": "TW_T_OPS", "read": ["#"]}]},
                "listeners": [entry],
            }
        )
    )
    return cfg


def _tianwang(*args):
    env = dict(os.environ, TW_T_JT="x" * 32, TW_T_OPS="y" * 32)
    return subprocess.run(
        [sys.executable, "-m", "tianwang", *args], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT
    )


def test_check_and_run_refuse_a_corrupt_registrations_file_in_one_line(tmp_path):
    bad = tmp_path / "fleet.registrations"
    bad.write_text('{"format": "tianwang.jt808.registrations", "version": 1, "terminals": {"1": ')
    cfg = _config_file(tmp_path, registrations_file=str(bad))
    for args, stream in ((("check", str(cfg)), "stdout"), (("run", "-c", str(cfg)), "stderr")):
        r = _tianwang(*args)
        out = getattr(r, stream).strip()
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr
        assert len(out.splitlines()) == 1, out
        assert (
            out.startswith("listeners[0] (fleet).registrations_file: ") and f"registrations file {bad}: corrupt" in out
        )


def test_check_warns_about_open_registration_and_memory_only_registrations(tmp_path):
    r = _tianwang("check", str(_config_file(tmp_path, registration="open")))
    assert r.returncode == 0, r.stdout
    assert (
        "warning: listeners[0] (fleet).registration: open: anyone who reaches the port can register as any phone"
        in r.stderr
    )
    assert (
        "warning: listeners[0] (fleet).registrations_file: not set: registrations are kept in memory only" in r.stderr
    )
    r = _tianwang("check", str(_config_file(tmp_path, registrations_file=str(tmp_path / "fleet.registrations"))))
    assert r.returncode == 0 and "listeners[0] (fleet).registration" not in r.stderr, r.stderr


# -- policies -----------------------------------------------------------------------------------
async def test_open_policy_is_logged_and_lets_a_phone_register_again(caplog):
    caplog.set_level(logging.WARNING, logger="tianwang.driver.jt808")
    async with listener(registration="open") as gw:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("fleet: registration open: anyone who reaches the port" in m for m in warnings), warnings
        a = await RawTerminal("13800000009").connect(gw.port)
        assert (await register(a))[0] == p.RegisterResult.OK
        b = await RawTerminal("13800000009").connect(gw.port)
        assert (await register(b))[0] == p.RegisterResult.OK  # the legacy behaviour, chosen explicitly
        for t in (a, b):
            t.close()
    caplog.clear()
    async with listener():
        assert not any("registration open" in r.getMessage() for r in caplog.records)


async def test_known_policy_refuses_a_known_phone_registering_twice(tmp_path):
    async with listener(registration="known", terminals=["13800000010"]) as gw:
        a = await RawTerminal("13800000010").connect(gw.port)
        assert (await register(a))[0] == p.RegisterResult.OK
        b = await RawTerminal("13800000010").connect(gw.port)
        assert await register(b) == (p.RegisterResult.TERMINAL_REGISTERED, "")
        for t in (a, b):
            t.close()


# -- the operator's deregister ----------------------------------------------------------------
async def test_deregister_needs_control_and_a_reason_is_audited_and_lets_the_phone_register_again(tmp_path):
    path = tmp_path / "fleet.registrations"
    entry = {
        "id": "fleet",
        "driver": "jt808",
        "listen": "127.0.0.1:0",
        "auth_secret": "s" * 32,
        "registrations_file": str(path),
    }
    async with running(base_config(listeners=[entry], control=["gnss/+"]), jt808.SPEC) as gw:
        driver = gw.supervisor._running["fleet"].driver
        await until(lambda: driver.port, what="listener bound")
        old = await RawTerminal("13800000011").connect(driver.port)
        result, code = await register(old, plate="苏E11111", colour=1)
        assert result == p.RegisterResult.OK
        old.close()
        await until(lambda: "13800000011" in read_file(str(path)), what="registration written")

        async with client(gw) as (stub, _):
            args = msgpack.packb({"phone": "013800000011"})

            async def deregister(token, reason):
                req = pb_command(action="deregister", args=args, reason=reason)
                return await stub.SendCommand(req, metadata=md(token))

            # a token without a control grant, and a control token without a reason: refused
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await deregister(GNSS_ONLY, "terminal replaced")
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await deregister(CONTROL, "  ")
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs a reason" in info.value.details()
            assert "13800000011" in read_file(str(path))
            again = await RawTerminal("13800000011").connect(driver.port)
            assert await register(again, plate="苏E11111", colour=1) == (p.RegisterResult.TERMINAL_REGISTERED, "")

            reply = await deregister(CONTROL, "terminal replaced")
            assert reply.ok, reply.message
            result = msgpack.unpackb(reply.result)
            assert result["phone"] == "13800000011" and result["deregistered"] is True and result["persistent"] is True
            assert "13800000011" not in read_file(str(path))  # on disk before the reply
            # the core's audit record names who, what and why
            audits = [e["payload"] for e in journal_envelopes(gw.journal, "audit/fleet/command")]
            assert audits[-1]["principal"] == "operator" and audits[-1]["reason"] == "terminal replaced"
            assert audits[-1]["ok"] is True and audits[-1]["action"] == "deregister"

            # the replacement terminal registers (same plate: the vehicle left with the old one)
            assert await register(again, plate="苏E11111", colour=1) == (p.RegisterResult.OK, code)
            assert await again.login(code) == p.Result.OK
            await until(lambda: "13800000011" in read_file(str(path)), what="registration written again")

            # deregistering a phone that is not registered, or without a phone
            reply = await stub.SendCommand(
                pb_command(action="deregister", args=msgpack.packb({"phone": "139"}), reason="cleanup"),
                metadata=md(CONTROL),
            )
            assert not reply.ok and reply.code == "NOT_FOUND"
            reply = await stub.SendCommand(
                pb_command(action="deregister", args=msgpack.packb({"phone": "x"}), reason="cleanup"),
                metadata=md(CONTROL),
            )
            assert not reply.ok and reply.code == "INVALID"
            # deregister is the listener's: a terminal does not take it
            reply = await stub.SendCommand(
                pb_command(device_id="13800000011", action="deregister", args=args, reason="x"), metadata=md(CONTROL)
            )
            assert not reply.ok and reply.code == "UNSUPPORTED"
            listing = await stub.SendCommand(pb_command(action="registrations"), metadata=md(CONTROL))
            rows = msgpack.unpackb(listing.result)["terminals"]
            assert [r["phone"] for r in rows] == ["13800000011"] and "code" not in rows[0]
            assert code not in json.dumps(rows, ensure_ascii=False)
            again.close()


def pb_command(device_id="fleet", action="", args=b"", reason=""):
    from tianwang.v1 import gateway_pb2 as pb

    return pb.CommandRequest(device_id=device_id, action=action, args=args, reason=reason, timeout_ms=5000)


# -- squatting (issue 20, item 13) ----------------------------------------------------------------
async def test_a_registration_that_never_authenticates_expires_and_frees_phone_and_plate(tmp_path):
    path = str(tmp_path / "fleet.registrations")
    async with listener(registration_timeout_s=1.0, registrations_file=path) as gw:
        squatter = await RawTerminal("13800000101").connect(gw.port)
        result, _code = await register(squatter, plate="沪A77777", colour=2)
        assert result == p.RegisterResult.OK
        squatter.close()
        await gw.driver.registry.flush()
        assert read_file(path)["13800000101"]["authenticated"] is False
        # a terminal that registered and authenticated keeps its registration
        real = await RawTerminal("13800000102").connect(gw.port)
        result, code = await register(real, plate="沪A88888", colour=2)
        assert result == p.RegisterResult.OK and await real.login(code) == p.Result.OK
        await until(lambda: "13800000101" not in gw.driver.registry, 10, "the squatted registration expired")
        assert gw.entry("fleet").counters["registrations_expired"] == 1
        assert "13800000102" in gw.driver.registry
        await gw.driver.registry.flush()
        on_disk = read_file(path)
        assert "13800000101" not in on_disk and on_disk["13800000102"]["authenticated"] is True
        # the vehicle the squatter named registers now (before: result 1, plate taken)
        owner = await RawTerminal("13800000103").connect(gw.port)
        result, code = await register(owner, plate="沪A77777", colour=2)
        assert result == p.RegisterResult.OK and await owner.login(code) == p.Result.OK
        for t in (real, owner):
            t.close()


async def test_registrations_are_rate_limited_per_address():
    async with listener(registrations_per_s=0.01, registrations_burst=3) as gw:
        results = []
        for i in range(5):
            raw = await RawTerminal(f"1380000020{i}").connect(gw.port)
            try:
                results.append((await register(raw))[0])
            except EOFError:
                results.append("closed")
            raw.close()
        assert results == [p.RegisterResult.OK] * 3 + ["closed", "closed"]
        assert len(gw.driver.registry) == 3
        assert gw.entry("fleet").counters["registrations_rate_limited"] == 2
        # a phone already registered is answered as before (result 3): refusals cost no registration
        raw = await RawTerminal("13800000200").connect(gw.port)
        assert (await register(raw))[0] == p.RegisterResult.TERMINAL_REGISTERED
        raw.close()


async def test_connections_that_do_not_authenticate_are_capped_per_address():
    async with listener(max_unauthenticated_per_address=4, auth_timeout_s=30) as gw:
        idle = [await RawTerminal(f"138000003{i:02d}").connect(gw.port) for i in range(4)]
        await until(lambda: len(gw.driver.connections) == 4, 5, "four connections")
        extra = await RawTerminal("13800000399").connect(gw.port)
        assert await extra.closed_by_peer()
        assert gw.entry("fleet").counters["connections_refused_per_address"] == 1
        # one that authenticates no longer counts against its address
        assert await idle[0].login() == p.Result.OK
        late = await RawTerminal("13800000398").connect(gw.port)
        assert await late.login() == p.Result.OK
        assert len(gw.driver.connections) == 5
        for t in idle + [extra, late]:
            t.close()
