"""Records the JT/T 808 captures in this directory: `.venv/bin/python tests/captures/jt808/jt808_record.py`.

Each session is a hand-driven terminal talking to the real jt808 listener over TCP on 127.0.0.1.
Everything the terminal wrote is saved as `<name>.bin`; what the listener published for it (the
`fix` and `alarm` envelopes, read back from the journal) is saved as `<name>.expected.jsonl` in the
format of `tianwang decode`. The decode tests then check that the offline decoder, fed the .bin,
prints exactly what the live listener published. Times are fixed, so a re-recording gives the
same files.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for jt808_helpers

import uvloop  # noqa: E402

from jt808_helpers import RawTerminal, listener, until  # noqa: E402
from tianwang.drivers.jt808 import protocol as p  # noqa: E402

T0 = 1718000000 * 1_000_000_000  # 2024-06-10 06:13:20 UTC


class Recording(RawTerminal):
    """A raw terminal that keeps every byte it writes."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = bytearray()

    async def write(self, data):
        self.sent += data
        await super().write(data)

    async def send(self, msg_id, body=b"", serial=None):
        await self.write(self.frame(msg_id, body, serial))


async def session_2013(gw) -> Recording:
    """A 2013 terminal with the oddities seen in the field: modem noise between frames, a frame with
    a bad check code, coordinates whose bytes need escaping, a resend after a lost ack, an unknown
    message id, a blind-area batch, a split batch, unknown additional items and a report without
    a fix (zero time)."""
    t = Recording("13912345678")
    await t.connect(gw.port)
    reg = p.Registration(44, 300, "SZTRK", "TRK-2013-A", "A000123", 1, "粤B12345", "2013")
    await t.send(p.REGISTER, p.register_body(reg))
    _, body = await t.recv()
    _, result, code = p.parse_register_reply(body)
    assert result == p.RegisterResult.OK
    await t.send(p.AUTH, p.auth_body(code))
    assert (await t.ack())[1][2] == p.Result.OK
    await t.send(p.HEARTBEAT)
    await t.ack()
    # 0x01577E7E / 0x06CD7D7D: latitude and longitude words made of 7E and 7D bytes
    lat0, lon0 = 0x01577E7E / 1e6, 0x06CD7D7D / 1e6
    bodies = []
    for k in range(10):
        alarm = p.ALARM_SOS if 3 <= k <= 5 else 0
        body = p.location_body(
            lat0 + k * 0.0001,
            lon0 + k * 0.0002,
            T0 + k * 10**9,
            alt_m=45,
            speed_kmh=30 + k,
            course_deg=60,
            alarm=alarm,
            mileage_km=1234.5 + k / 10,
            signal=22,
            satellites=12,
        )
        bodies.append(body)
        if k == 8:
            await t.write(b"AT+CSQ\r\n+CSQ: 22,99\r\n")  # modem chatter on the data link
            bad = bytearray(t.frame(p.LOCATION, body))
            bad[-2] ^= 0x01
            await t.write(bytes(bad))
            _, (_, _, r) = await t.ack()
            assert r == p.Result.MESSAGE_ERROR
            await t.send(p.LOCATION, body)  # sent again after the error, as terminals do
        else:
            await t.send(p.LOCATION, body)
        await t.ack()
        if k == 7:
            await t.send(p.LOCATION, body, serial=t.serial)  # the same message again: its ack was lost
            await t.ack()
    await t.send(0x0900, b"\x41passthrough")  # data uplink: not a position
    await t.ack()
    stored = [
        p.location_body(
            lat0 - i * 0.001, lon0, T0 - (3 - i) * 60 * 10**9, speed_kmh=12.5, course_deg=180, alarm=p.ALARM_SOS
        )
        for i in range(3)
    ]
    await t.send(p.BATCH, p.batch_body(stored, p.BATCH_BLIND_AREA))
    await t.ack()
    many = [
        p.location_body(lat0 + 0.01, lon0 + i * 0.00005, T0 + (20 + i) * 10**9, speed_kmh=40.0, course_deg=90)
        for i in range(30)
    ]
    parts = p.split_body(p.batch_body(many), 500)
    first = t.serial + 1
    for i, part in enumerate(parts):
        await t.write(t.frame(p.BATCH, part, serial=first + i, total=len(parts), index=i + 1))
        await t.ack()
    t.serial = first + len(parts) - 1
    extras = bytes((0x25, 4, 0, 0, 0, 3, 0x2A, 2, 0, 1, 0x2B, 4, 0, 0x0C, 0, 0x20))
    last = p.location_body(lat0, lon0, T0, status=0, signal=9, satellites=0)
    nofix = last[:22] + bytes(6) + last[28:] + extras  # time all zeros, as terminals without a fix send
    await t.send(p.LOCATION, nofix)
    await t.ack()
    await t.send(p.LOGOUT)
    await t.ack()
    return t


async def session_2019(gw) -> Recording:
    """A 2019 terminal (BCD[10] phone, version byte) south and west of the equator: it registers
    with the 2019 layout, answers one location query, and its connection is cut mid-frame."""
    t = Recording("13500000019", version="2019")
    await t.connect(gw.port)
    reg = p.Registration(0, 0, "CLTRACKERS", "T19-PRO", "CL-2019-000042", 0, "", "2019")
    await t.send(p.REGISTER, p.register_body(reg))
    _, body = await t.recv()
    _, result, code = p.parse_register_reply(body)
    await t.send(p.AUTH, p.auth_body(code, "2019", imei="861234567890123", software_version="fw-3.2.1"))
    assert (await t.ack())[1][2] == p.Result.OK
    for k in range(5):
        body = p.location_body(
            -33.45 - k * 0.0003,
            -70.66 + k * 0.0004,
            T0 + k * 10**9,
            alt_m=560,
            speed_kmh=55.5,
            course_deg=305,
            status=p.STATUS_FIXED | (1 << 19),
            satellites=9,
        )
        await t.send(p.LOCATION, body)
        await t.ack()
    query = asyncio.ensure_future(gw.sup.send_command(t.phone, "query_location", {}, 3.0))
    header, _ = await t.recv()
    assert header.msg_id == p.QUERY_LOCATION
    answer = p.location_body(
        -33.4512,
        -70.6585,
        T0 + 6 * 10**9,
        alt_m=561,
        speed_kmh=0.0,
        course_deg=305,
        status=p.STATUS_FIXED | (1 << 19),
        satellites=10,
    )
    await t.send(p.LOCATION_REPLY, p.location_reply_body(header.serial, answer))
    await query
    cut = t.frame(p.LOCATION, p.location_body(-33.46, -70.65, T0 + 7 * 10**9))
    await t.write(cut[: len(cut) // 2])
    return t


def expected_lines(gw, phone) -> list[str]:
    out = []
    for env in gw.envelopes(f"gnss/{phone}/#"):
        if env["topic"].endswith(("/fix", "/alarm")):
            obj = {"topic": env["topic"], "device_time_ns": env["device_time_ns"], "payload": env["payload"]}
            out.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
    return out


async def main():
    async with listener() as gw:
        for name, session in (("jt808_2013_session", session_2013), ("jt808_2019_session", session_2019)):
            t = await session(gw)
            await asyncio.sleep(0.1)
            t.close()
            await until(lambda t=t: gw.entry(t.phone).state.value == "OFFLINE")
            (HERE / f"{name}.bin").write_bytes(bytes(t.sent))
            lines = expected_lines(gw, t.phone)
            (HERE / f"{name}.expected.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            drops = {
                k: v for k, v in gw.entry(t.phone).counters.items() if k.startswith("dropped_") and k != "dropped_bytes"
            }
            print(f"{name}: {len(t.sent)} bytes, {len(lines)} publications, listener drops {drops}")


if __name__ == "__main__":
    uvloop.run(main())
