"""REGISTER as the gb28181 listener answers it (registrar.py, sans-io) and the registrations file
(registry.py): digest with and without qop, stale and replayed nonces, expiry bounds, unregister,
the Date header; atomic 0600 writes and refusal of a corrupt file."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat

import pytest

from tianwang.drivers.gb28181 import digest, registry, sip
from tianwang.drivers.gb28181.registrar import Registrar, date_header
from tianwang.drivers.gb28181.registry import Registrations, RegistryError, read_file

DEV = "43030000001180000001"
SERVER = "43030000002000000001"
REALM = "4303000000"


def register(expires="3600", auth=None, contact=None, user=DEV):
    headers = [] if expires is None else [("Expires", expires)]
    if auth:
        headers.append(("Authorization", auth))
    return sip.build_request(
        "REGISTER",
        f"sip:{SERVER}@10.0.0.1:5060",
        via_host="192.168.1.64",
        via_port=5060,
        transport="UDP",
        from_uri=f"sip:{user}@{REALM}",
        from_tag="t1",
        to_uri=f"sip:{user}@{REALM}",
        call_id="call-1",
        cseq=1,
        contact=contact or f"sip:{user}@192.168.1.64:5060",
        headers=headers,
    )


@pytest.fixture
def registrar():
    return Registrar(REALM, {DEV: "12345678"}.get, min_expires=3600, max_expires=86400)


def answer(registrar, challenge_resp, *, qop=True, password="12345678", uri=None, expires="3600", now=2.0):
    ch = digest.parse_challenge(challenge_resp.headers.get("WWW-Authenticate"))
    auth = digest.authorization(
        DEV,
        ch["realm"],
        password,
        "REGISTER",
        uri or f"sip:{SERVER}@{REALM}",
        ch["nonce"],
        qop=ch.get("qop") if qop else None,
    )
    return registrar.handle(register(expires, auth), now, 1_700_000_000.0, source=("203.0.113.9", 40001)), auth


def test_challenge_then_digest_with_and_without_qop(registrar):
    first = registrar.handle(register(), 1.0, 1_700_000_000.0, source=("203.0.113.9", 40001))
    assert first.outcome == "challenged" and first.response.status == 401
    assert 'qop="auth"' in first.response.headers.get("WWW-Authenticate")
    ok, _ = answer(registrar, first.response)
    assert ok.outcome == "registered" and ok.expires_s == 3600 and ok.response.status == 200
    assert ok.response.headers.get("Date") == "2023-11-15T06:13:20.000"  # Beijing time of that UTC second
    assert ok.response.headers.get("Contact") == f"<sip:{DEV}@192.168.1.64:5060>"
    # answered where the packet came from (NAT): received and rport from the source
    via = ok.response.top_via
    assert via.received == "203.0.113.9" and via.rport == 40001
    second = registrar.handle(register(), 3.0, 1_700_000_000.0)
    plain, _ = answer(registrar, second.response, qop=False, uri="sip:10.0.0.1:5060", now=4.0)
    assert plain.outcome == "registered"


def test_wrong_password_unknown_device_and_bad_ids_are_refused(registrar):
    first = registrar.handle(register(), 1.0, 0.0)
    wrong, _ = answer(registrar, first.response, password="nope")
    assert wrong.outcome == "refused" and wrong.response.status == 403
    stranger = registrar.handle(register(user="43030000001180000002"), 1.0, 0.0)
    assert stranger.outcome == "unknown" and stranger.response.status == 403
    short = registrar.handle(register(user="4303000000118"), 1.0, 0.0)
    assert short.outcome == "unknown" and "20-digit" in short.why
    lax = Registrar(REALM, lambda d: "pw", strict_ids=False)
    assert lax.handle(register(user="430300000011800001"), 1.0, 0.0).outcome == "challenged"


def test_nonces_are_single_use_and_expire(registrar):
    first = registrar.handle(register(), 1.0, 0.0)
    ok, auth = answer(registrar, first.response)
    assert ok.outcome == "registered"
    replay = registrar.handle(register("3600", auth), 2.5, 0.0)
    assert replay.outcome == "challenged" and "stale=true" in replay.response.headers.get("WWW-Authenticate")
    old = registrar.handle(register(), 10.0, 0.0)
    late, _ = answer(registrar, old.response, now=10.0 + 301)
    assert late.outcome == "challenged" and "stale=true" in late.response.headers.get("WWW-Authenticate")


def test_expires_bounds_contact_expires_and_unregister(registrar):
    short, _ = answer(registrar, registrar.handle(register("600"), 1.0, 0.0).response, expires="600")
    assert short.response.status == 423 and short.response.headers.get("Min-Expires") == "3600"
    long, _ = answer(registrar, registrar.handle(register("999999"), 1.0, 0.0).response, expires="999999")
    assert long.outcome == "registered" and long.response.headers.get("Expires") == "86400"
    gone, _ = answer(registrar, registrar.handle(register("0"), 1.0, 0.0).response, expires="0")
    assert gone.outcome == "unregistered" and gone.response.status == 200
    # no Expires header: the Contact's expires parameter, else one hour
    req = register(None, contact=f"<sip:{DEV}@192.168.1.64:5060>;expires=7200")
    assert registrar._expires(req) == 7200
    assert registrar._expires(register(None)) == 3600
    bad = registrar.handle(register("soon"), 1.0, 0.0)
    assert bad.response.status == 400


def test_date_header_is_beijing_local_time_with_milliseconds():
    assert date_header(0.25) == "1970-01-01T08:00:00.250"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", date_header(1_765_000_000.5))


async def test_registrations_are_written_atomically_with_mode_0600(tmp_path):
    path = tmp_path / "gb.registrations"
    regs = Registrations(str(path), min_interval_s=0)
    for i in range(50):  # a storm: coalesced into a few writes
        regs.put(
            f"4303000000118000{i:04d}",
            address=f"10.0.0.{i}:5060",
            transport="UDP",
            expires_at=2e9,
            registered_at=1.7e9,
            version="2016",
        )
    await regs.flush()
    assert regs.writes < 50
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = read_file(str(path))
    assert len(again) == 50 and again["43030000001180000007"]["address"] == "10.0.0.7:5060"
    assert not (tmp_path / "gb.registrations.tmp").exists()
    regs.remove("43030000001180000007")
    await regs.flush()
    assert "43030000001180000007" not in read_file(str(path))
    assert set(Registrations(str(path)).live(1.9e9)) == set(again) - {"43030000001180000007"}
    assert Registrations(str(path)).live(2.1e9) == {}


async def test_a_storm_of_registrations_is_written_once_at_once_then_once_per_interval(tmp_path):
    path = tmp_path / "gb.registrations"
    regs = Registrations(str(path))
    assert regs.min_interval_s == registry.WRITE_INTERVAL_S == 5.0  # the bound docs/gb28181.md gives
    regs.put("43030000001180000000", address="10.0.0.1:5060", transport="UDP", expires_at=2e9)
    for _ in range(200):  # the first write happens in a thread: wait until it has
        if regs.writes:
            break
        await asyncio.sleep(0.01)
    assert regs.writes == 1 and "43030000001180000000" in read_file(str(path))
    for i in range(1, 1000):  # the rest of the storm, within the interval
        regs.put(f"4303000000118000{i:04d}", address=f"10.0.{i // 250}.{i % 250}:5060", expires_at=2e9)
    await asyncio.sleep(0.5)
    assert regs.writes == 1 and regs.pending  # waiting out the interval, not one write per REGISTER
    assert len(read_file(str(path))) == 1
    await regs.flush()  # a clean stop writes what is pending at once
    assert regs.writes == 2 and not regs.pending and len(read_file(str(path))) == 1000
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_file_that_is_not_a_registrations_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "gb.registrations"
    for text, why in (
        ("{not json", "corrupt"),
        (json.dumps({"format": "other"}), "not a GB/T 28181"),
        (json.dumps({"format": "tianwang.gb28181.registrations", "version": 1, "devices": {"x": {}}}), "no address"),
    ):
        path.write_text(text)
        with pytest.raises(RegistryError) as info:
            Registrations(str(path))
        assert why in str(info.value) and "\n" not in str(info.value)
