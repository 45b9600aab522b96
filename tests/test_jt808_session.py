"""One JT/T 808 message handler for live and offline (tianwang.drivers.jt808.session).

The same bytes go through the live path (a real TCP connection into the listener, in a real
Supervisor -> Router -> Journal stack, publications read back from the journal) and through the
offline decoder (`tianwang decode --driver jt808`), and the two must publish the same thing and
count the same drops. Then the Session on its own (sans-io): the replies it asks for and when it
closes a connection."""

import asyncio
import json
import random
from pathlib import Path

import pytest

from jt808_helpers import SECRET, RawTerminal, listener, until
from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.jt808.decode import Decoder
from tianwang.drivers.jt808.session import Gate, Session, TerminalState
from tianwang.gateway.framing import encode_jt808
from tianwang.gateway.lifecycle.driver import Health

pytestmark = pytest.mark.timeout(60)

CAPTURES = Path(__file__).parent / "captures" / "jt808"
PHONES = {"jt808_2013_session": "13912345678", "jt808_2019_session": "13500000019"}
T0 = 1718000000 * 1_000_000_000


def normal(items):
    # the same round trip through JSON that `tianwang decode` makes, for both sides
    return [json.loads(json.dumps(x)) for x in items]


def offline(data: bytes, phone: str, chunks=None):
    """(publications as topic/device_time_ns/payload, drops) of the offline decoder."""
    d = Decoder(phone)
    pubs = []
    for chunk in chunks or [data]:
        pubs += d.feed(chunk)
    pubs += d.finish()
    out = [
        {"topic": f"gnss/{phone}/{x.channel}", "device_time_ns": x.device_time_ns, "payload": x.payload} for x in pubs
    ]
    return normal(out), d.drops


async def live(data: bytes, phone: str, chunks) -> tuple[list, dict]:
    """(publications, drops) of the listener for `data` sent over one TCP connection in `chunks`;
    the connection is half-closed after the last byte and the result read once the terminal is
    OFFLINE (the listener has handled every byte by then)."""
    async with listener() as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        replies = asyncio.ensure_future(reader.read())  # what the platform answers, read to the end
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.001)
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass  # the listener closed it first (a logout)
        try:
            await asyncio.wait_for(replies, 10)
        except ConnectionError:
            pass
        await until(lambda: gw.entry(phone) is not None and gw.entry(phone).state == Health.OFFLINE, what="OFFLINE")
        writer.close()
        pubs = [
            {"topic": e["topic"], "device_time_ns": e["device_time_ns"], "payload": e["payload"]}
            for e in gw.envelopes(f"gnss/{phone}/#")
            if e["topic"].endswith(("/fix", "/alarm"))
        ]
        drops = {}
        for device in (phone, "fleet"):
            for key, n in gw.entry(device).counters.items():
                if key.startswith("dropped_") and n:
                    drops[key[len("dropped_") :]] = drops.get(key[len("dropped_") :], 0) + n
        return normal(pubs), drops


def cut(data: bytes, seed, n=25) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(n, len(data) - 1)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)]


# -- live and offline on the same bytes --------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PHONES))
async def test_capture_live_and_offline_publish_the_same(name):
    phone = PHONES[name]
    data = (CAPTURES / f"{name}.bin").read_bytes()
    chunks = cut(data, name)
    live_pubs, live_drops = await live(data, phone, chunks)
    offline_pubs, offline_drops = offline(data, phone, chunks)
    assert live_pubs == offline_pubs
    assert live_drops == offline_drops
    # and both are what the listener published when the capture was recorded
    recorded = [
        json.loads(line) for line in (CAPTURES / f"{name}.expected.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert offline_pubs == recorded


def crafted_session(seed: int, phone="13800000042", version="2013") -> bytes:
    """A long session of one terminal after it registered and authenticated, built at random from
    what terminals send: reports with alarm bits coming and going, resends, normal and blind-area
    batches, split batches, query answers, heartbeats, acks, unknown ids, bad bodies, bad check
    codes, line noise, a frame from another phone; a logout at the end."""
    rng = random.Random(seed)
    t = RawTerminal(phone, version)
    other = RawTerminal("13800000099", version)
    out = [
        t.frame(p.REGISTER, p.register_body(p.Registration(31, 100, "RNDMK", "R-1", "ID42", 1, "沪B00042", version)))
    ]
    code = p.derive_auth_code(SECRET.encode(), phone)
    out.append(t.frame(p.AUTH, p.auth_body(code, version, imei="860000000000042", software_version="rnd")))
    alarms = [0, 0, 0, p.ALARM_SOS, 1 << 1, (1 << 1) | p.ALARM_SOS, 1 << 29, (1 << 31) | (1 << 17)]
    clock = [T0]

    def position(alarm=None):
        clock[0] += 10**9
        return p.location_body(
            rng.uniform(-60, 60),
            rng.uniform(-170, 170),
            clock[0],
            alt_m=rng.randint(-20, 900),
            speed_kmh=rng.randint(0, 1200) / 10,
            course_deg=rng.randint(0, 359),
            alarm=rng.choice(alarms) if alarm is None else alarm,
            mileage_km=rng.choice([None, rng.randint(0, 99999) / 10]),
            signal=rng.choice([None, 17]),
            satellites=rng.choice([None, 0, 11]),
        )

    last = None
    for _ in range(160):
        kind = rng.choices(
            [
                "loc",
                "resend",
                "batch",
                "blind",
                "split",
                "reply",
                "heartbeat",
                "ack",
                "unknown",
                "bad_body",
                "bad_check",
                "noise",
                "other_phone",
            ],
            [30, 4, 4, 4, 3, 2, 3, 2, 1, 2, 2, 1, 1],
        )[0]
        if kind == "loc":
            last = t.frame(p.LOCATION, position())
            out.append(last)
        elif kind == "resend" and last is not None:
            out.append(last)  # the same frame again: its ack was lost
        elif kind in ("batch", "blind"):
            bodies = [position() for _ in range(rng.randint(1, 6))]
            out.append(
                t.frame(p.BATCH, p.batch_body(bodies, p.BATCH_BLIND_AREA if kind == "blind" else p.BATCH_NORMAL))
            )
        elif kind == "split":
            parts = p.split_body(p.batch_body([position() for _ in range(rng.randint(12, 30))]), 300)
            first = t.serial + 1
            for i, part in enumerate(parts):
                out.append(t.frame(p.BATCH, part, serial=first + i, total=len(parts), index=i + 1))
            t.serial = first + len(parts) - 1
        elif kind == "reply":
            out.append(t.frame(p.LOCATION_REPLY, p.location_reply_body(rng.randint(1, 9), position())))
        elif kind == "heartbeat":
            out.append(t.frame(p.HEARTBEAT))
        elif kind == "ack":
            out.append(t.frame(p.TERMINAL_ACK, p.ack_body(rng.randint(0, 9), p.QUERY_LOCATION)))
        elif kind == "unknown":
            out.append(t.frame(0x0900, b"\x41passthrough"))
        elif kind == "bad_body":
            out.append(t.frame(p.LOCATION, position()[: rng.randint(0, 27)]))
        elif kind == "bad_check":
            bad = bytearray(t.frame(p.LOCATION, position()))
            bad[-2] ^= 0x01 if bad[-2] not in (0x7C, 0x7D, 0x7E, 0x7F) else 0x10
            out.append(bytes(bad))
        elif kind == "noise":
            out.append(b"AT+CSQ\r\n+CSQ: 21,99\r\n")
        elif kind == "other_phone":
            out.append(other.frame(p.LOCATION, position()))
    out.append(t.frame(p.LOGOUT))
    return b"".join(out)


@pytest.mark.parametrize("seed,version", [(1, "2013"), (2, "2019"), (3, "2013")])
async def test_crafted_session_live_and_offline_publish_the_same(seed, version):
    phone = "13800000042"
    data = crafted_session(seed, phone, version)
    chunks = cut(data, seed, 60)
    live_pubs, live_drops = await live(data, phone, chunks)
    offline_pubs, offline_drops = offline(data, phone)
    assert len(live_pubs) > 100 and any(x["topic"].endswith("/alarm") for x in live_pubs)
    assert any(x["payload"].get("stored") for x in live_pubs)
    assert live_pubs == offline_pubs
    assert live_drops == offline_drops
    assert {"phone_mismatch", "bad_checksum", "bad_body", "unsupported"} <= set(live_drops)


# -- the Session on its own ---------------------------------------------------------------------
class StrictGate(Gate):
    """One code, one phone: what a listener's policy looks like to a Session."""

    def __init__(self, code="right"):
        super().__init__()
        self.code = code
        self.attached = []

    def registration(self, phone, info):
        return p.RegisterResult.OK, self.code

    def check_auth(self, phone, code):
        return "" if code == self.code else "wrong auth code"

    def attach(self, phone, info):
        self.attached.append((phone, info))
        return self.terminal


BCD = p.phone_to_bcd("13900000001")


def frame(msg_id, body=b"", serial=1, bcd=BCD, **kw):
    return p.build(msg_id, body, bcd, serial, **kw)


def acks(step):
    return [(r.msg_id,) + p.parse_ack(r.body) for r in step.replies if r.msg_id == p.PLATFORM_ACK]


def test_session_register_authenticate_report_and_log_out():
    gate = StrictGate()
    s = Session(gate, max_bad_frames=4, max_auth_failures=3, peer="10.0.0.9:4000")
    # before authentication a report is refused with result 1 and published nowhere
    step = s.handle(frame(p.LOCATION, p.location_body(1.0, 2.0, T0), 1), 0.0)
    assert step.publications == [] and step.drops == ["unauthenticated"]
    assert acks(step) == [(p.PLATFORM_ACK, 1, p.LOCATION, p.Result.FAILURE)]
    step = s.handle(
        frame(p.REGISTER, p.register_body(p.Registration(1, 2, "MK", "MD", "ID", 1, "沪A1", "2013")), 2), 0.0
    )
    ((msg_id, body, header),) = step.replies
    assert msg_id == p.REGISTER_REPLY and p.parse_register_reply(body) == (2, p.RegisterResult.OK, "right")
    assert header == {"phone_bcd": BCD, "protocol_version": None}
    step = s.handle(frame(p.AUTH, p.auth_body("right"), 3), 0.0)
    assert step.online and acks(step) == [(p.PLATFORM_ACK, 3, p.AUTH, p.Result.OK)]
    ((phone, info),) = gate.attached
    assert phone == "13900000001" and info["address"] == "10.0.0.9:4000" and info["manufacturer"] == "MK"
    # SOS raised: a fix and an alarm edge; the same word again: a fix only
    for serial in (4, 5):
        step = s.handle(frame(p.LOCATION, p.location_body(1.0, 2.0, T0 + serial, alarm=p.ALARM_SOS), serial), 0.0)
        assert acks(step) == [(p.PLATFORM_ACK, serial, p.LOCATION, p.Result.OK)]
    assert [x.channel for x in step.publications] == ["fix"] and gate.terminal.alarm == p.ALARM_SOS
    # a resend (same serial and body) is acknowledged again and not published
    step = s.handle(frame(p.LOCATION, p.location_body(1.0, 2.0, T0 + 5, alarm=p.ALARM_SOS), 5), 0.0)
    assert step.publications == [] and step.counts == ["duplicates"] and len(step.replies) == 1
    # a blind-area batch without SOS leaves the alarm state alone
    step = s.handle(frame(p.BATCH, p.batch_body([p.location_body(1.0, 2.0, T0)], p.BATCH_BLIND_AREA), 6), 0.0)
    assert [(x.channel, x.payload["stored"]) for x in step.publications] == [("fix", True)] and gate.terminal.alarm == 1
    step = s.handle(frame(p.LOCATION, p.location_body(1.0, 2.0, T0 + 7), 7), 0.0)
    assert [x.payload for x in step.publications if x.channel == "alarm"] == [
        {"kind": "sos", "active": False, "raw": "0x00000000", "alarm_word": 0}
    ]
    # a 0x0201 answers a query: no 0x8001 for it
    step = s.handle(frame(p.LOCATION_REPLY, p.location_reply_body(77, p.location_body(3.0, 4.0, T0)), 8), 0.0)
    assert step.replies == [] and step.answer[0] == 77 and step.answer[1]["lat"] == 3.0
    step = s.handle(frame(p.LOGOUT, b"", 9), 0.0)
    assert acks(step) == [(p.PLATFORM_ACK, 9, p.LOGOUT, p.Result.OK)] and step.close == ("logged out (0x0003)", "")


def test_session_closes_on_failed_logins_and_on_garbage_before_authentication():
    s = Session(StrictGate(), max_bad_frames=3, max_auth_failures=2)
    step = s.handle(frame(p.AUTH, p.auth_body("wrong"), 1), 0.0)
    assert acks(step) == [(p.PLATFORM_ACK, 1, p.AUTH, p.Result.FAILURE)] and step.close is None
    step = s.handle(frame(p.AUTH, p.auth_body("still wrong"), 2), 0.0)
    assert acks(step) == [(p.PLATFORM_ACK, 2, p.AUTH, p.Result.FAILURE)] and step.close == (
        "2 failed authentications",
        "",
    )
    s = Session(StrictGate(), max_bad_frames=3)
    for serial in (1, 2):
        step = s.handle(frame(p.HEARTBEAT, b"", serial), 0.0)
        assert step.drops == ["unauthenticated"] and step.close is None and len(step.replies) == 1
    # the third bad frame closes the connection: its answer is not written any more
    step = s.handle(frame(p.LOCATION, b"\x00" * 5, 3), 0.0)
    assert step.drops == ["unauthenticated"] and step.replies == []
    assert step.close == ("3 bad frames before authentication", "garbage_closed")


def test_session_drops_by_reason_and_answers_what_it_can():
    gate = Gate()
    s = Session(gate, terminal=gate.terminal, versions=(2013,), split_timeout=10.0)
    step = s.handle(frame(p.LOCATION, b"\x00" * 10, 1), 0.0)
    assert step.drops == ["bad_body"] and acks(step) == [(p.PLATFORM_ACK, 1, p.LOCATION, p.Result.MESSAGE_ERROR)]
    step = s.handle(
        frame(p.LOCATION, p.location_body(1.0, 2.0, T0), 2, bcd=p.phone_to_bcd("1", "2019"), protocol_version=1), 0.0
    )
    assert step.drops == ["version_refused"] and acks(step) == [(p.PLATFORM_ACK, 2, p.LOCATION, p.Result.UNSUPPORTED)]
    step = s.handle(frame(p.HEARTBEAT, b"", 3, bcd=p.phone_to_bcd("13900000002")), 0.0)
    assert step.drops == ["phone_mismatch"] and acks(step) == [(p.PLATFORM_ACK, 3, p.HEARTBEAT, p.Result.FAILURE)]
    step = s.handle(frame(0x0900, b"x", 4), 0.0)
    assert step.drops == ["unsupported"] and acks(step) == [(p.PLATFORM_ACK, 4, 0x0900, p.Result.UNSUPPORTED)]
    # a frame that failed its check: answered only when its header is the terminal's own
    content = frame(p.LOCATION, p.location_body(1.0, 2.0, T0), 5)
    step = s.rejected([content, frame(p.LOCATION, b"", 6, bcd=p.phone_to_bcd("13900000002"))], 2)
    assert acks(step) == [(p.PLATFORM_ACK, 5, p.LOCATION, p.Result.MESSAGE_ERROR)] and step.close is None
    # the first part of a split message is acknowledged; left unfinished it expires
    part = frame(p.BATCH, b"\x00\x02\x00", 7, total=2, index=1)
    step = s.handle(part, 1.0)
    assert step.publications == [] and acks(step) == [(p.PLATFORM_ACK, 7, p.BATCH, p.Result.OK)]
    assert s.expire(5.0).drops == [] and s.expire(12.0).drops == ["split_timeout"]


def test_offline_decoder_is_a_session_that_admits_the_terminal_from_the_first_byte():
    d = Decoder("13900000001")
    assert isinstance(d.session.terminal, TerminalState)
    pubs = d.feed(encode_jt808(frame(p.LOCATION, p.location_body(1.0, 2.0, T0, alarm=p.ALARM_SOS), 1)))
    assert [x.channel for x in pubs] == ["fix", "alarm"]
