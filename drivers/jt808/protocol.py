"""JT/T 808 messages: header and body parsing and building, for both ends of the link.

Sans-io: this module turns the bytes of one unescaped, checksum-verified frame (header + body, as
the 0x7E framer in tianwang.gateway.framing hands them over) into typed messages and back. It opens nothing
and keeps no connection state beyond what a caller passes in (`Reassembler` for split messages).

Facts used here (JT/T 808-2011/2013/2019):
- Header, 2011/2013: msg id WORD, body attributes WORD, phone BCD[6], serial WORD, then
  [total WORD, index WORD] when the message is split. 2019 sets attribute bit 14 and adds a
  protocol-version BYTE after the attributes; the phone is BCD[10].
- Body attributes: bits 0-9 body length, 10-12 encryption (bit 10 = RSA), 13 split, 14 = 2019 header.
- Words are big-endian. STRING is GBK. Times are BCD[6] YYMMDDhhmmss in GMT+8.
- 0x0200 body: alarm DWORD, status DWORD, lat DWORD, lon DWORD (degrees x 1e6, hemisphere in status
  bits 2 and 3), altitude WORD (m), speed WORD (0.1 km/h), direction WORD (degrees), time BCD[6],
  then additional items (id BYTE, length BYTE, value).

Every parse error raises `Jt808Error` (a FrameError) whose `reason` is the drop-counter label and
whose `header` is set once the header was readable, so the platform can still answer with
0x8001 result 2 ("message error").
"""

from __future__ import annotations

import calendar
import collections
import enum
import hashlib
import hmac
import struct
import time

from tianwang.drivers.sdk import FrameError

# -- message ids ------------------------------------------------------------------------------
TERMINAL_ACK = 0x0001  # terminal general response
HEARTBEAT = 0x0002
LOGOUT = 0x0003  # terminal deregistration (注销)
REGISTER = 0x0100
AUTH = 0x0102
LOCATION = 0x0200
LOCATION_REPLY = 0x0201  # answer to 0x8201
BATCH = 0x0704  # batch / blind-area location upload
PLATFORM_ACK = 0x8001  # platform general response
REGISTER_REPLY = 0x8100
QUERY_LOCATION = 0x8201

MESSAGE_NAMES = {
    TERMINAL_ACK: "terminal_ack",
    HEARTBEAT: "heartbeat",
    LOGOUT: "logout",
    REGISTER: "register",
    AUTH: "auth",
    LOCATION: "location",
    LOCATION_REPLY: "location_reply",
    BATCH: "batch",
    PLATFORM_ACK: "platform_ack",
    REGISTER_REPLY: "register_reply",
    QUERY_LOCATION: "query_location",
}


class Result(enum.IntEnum):
    """Result byte of 0x0001 / 0x8001."""

    OK = 0  # success / acknowledged
    FAILURE = 1
    MESSAGE_ERROR = 2  # the message could not be understood
    UNSUPPORTED = 3  # the receiver does not handle this message id
    ALARM_CONFIRMED = 4  # 0x8001 only: the platform has handled the alarm


class RegisterResult(enum.IntEnum):
    """Result byte of 0x8100."""

    OK = 0
    VEHICLE_REGISTERED = 1  # the vehicle is already registered (to another terminal)
    NO_VEHICLE = 2  # no such vehicle in the platform's database
    TERMINAL_REGISTERED = 3  # the terminal is already registered
    NO_TERMINAL = 4  # no such terminal in the platform's database


# -- body attributes --------------------------------------------------------------------------
BODY_LENGTH_MASK = 0x03FF
ENCRYPTION_MASK = 0x1C00
SPLIT_BIT = 0x2000
VERSION_BIT = 0x4000
MAX_BODY = BODY_LENGTH_MASK  # 10 bits

# The protocol-version byte a 2019 terminal sends (JT/T 808-2019: "initial version is 1").
PROTOCOL_VERSION_2019 = 1

# 2013 header 12 bytes (+4 when split); 2019 header 17 bytes (+4).
HEADER_2013 = 12
HEADER_2019 = 17
PHONE_DIGITS = {"2013": 12, "2019": 20}

# -- status and alarm bits (0x0200) -----------------------------------------------------------
STATUS_ACC_ON = 1 << 0
STATUS_FIXED = 1 << 1
STATUS_SOUTH = 1 << 2
STATUS_WEST = 1 << 3
# which constellations the fix used (2013: bits 18-21)
STATUS_SYSTEMS = ((1 << 18, "GPS"), (1 << 19, "BDS"), (1 << 20, "GLO"), (1 << 21, "GAL"))

ALARM_SOS = 1 << 0

# Alarm flag bits of JT/T 808-2013 table 24, named as `kind` on gnss/<id>/alarm. Bits the standard
# reserves are named `bit_<n>` so a terminal that uses them is still reported.
ALARM_KINDS = {
    0: "sos",
    1: "overspeed",
    2: "fatigue_driving",
    3: "danger_warning",
    4: "gnss_module_fault",
    5: "antenna_open",
    6: "antenna_short",
    7: "power_undervoltage",
    8: "power_off",
    9: "lcd_fault",
    10: "tts_fault",
    11: "camera_fault",
    12: "ic_card_fault",
    13: "overspeed_warning",
    14: "fatigue_warning",
    18: "driving_overtime_today",
    19: "parking_overtime",
    20: "area_in_out",
    21: "route_in_out",
    22: "route_time_abnormal",
    23: "route_deviation",
    24: "vss_fault",
    25: "fuel_abnormal",
    26: "vehicle_stolen",
    27: "illegal_ignition",
    28: "illegal_displacement",
    29: "collision",
    30: "rollover",
    31: "illegal_door_open",
}
for _bit in range(32):
    ALARM_KINDS.setdefault(_bit, f"bit_{_bit}")
del _bit

# Additional location items (0x0200 after the fixed part)
EXTRA_MILEAGE = 0x01  # DWORD, 1/10 km
EXTRA_SIGNAL = 0x30  # BYTE, wireless signal strength
EXTRA_SATELLITES = 0x31  # BYTE, GNSS satellites used

GMT8_S = 8 * 3600
LOCATION_FIXED_LEN = 28

_HEAD = struct.Struct(">HH")
_SERIAL = struct.Struct(">H")
_SPLIT = struct.Struct(">HH")
_LOCATION = struct.Struct(">IIIIHHH")
_ACK = struct.Struct(">HHB")
_U32 = struct.Struct(">I")


class Jt808Error(FrameError):
    """A frame that passed the checksum but is not a valid message.

    `reason`: drop-counter label (`short_header`, `length_mismatch`, `bad_bcd`, `encrypted`,
    `bad_body`, `bad_split`, `bad_position`...). `header`: the parsed Header when it was readable.
    """

    def __init__(self, reason: str, message: str, header: Header | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.header = header


# -- header -----------------------------------------------------------------------------------
class Header:
    """One message header. `phone` is the BCD number without its leading zeros (the device id);
    `phone_bcd` the raw bytes, echoed in replies so the terminal sees its own number."""

    __slots__ = ("msg_id", "attrs", "protocol_version", "phone", "phone_bcd", "serial", "total", "index", "size")

    def __init__(
        self,
        msg_id: int,
        attrs: int,
        protocol_version: int | None,
        phone: str,
        phone_bcd: bytes,
        serial: int,
        total: int = 0,
        index: int = 0,
        size: int = 0,
    ) -> None:
        self.msg_id = msg_id
        self.attrs = attrs
        self.protocol_version = protocol_version  # None for 2011/2013 headers
        self.phone = phone
        self.phone_bcd = phone_bcd
        self.serial = serial
        self.total = total  # 0 when the message is not split
        self.index = index  # 1-based part number when split
        self.size = size  # header length in bytes

    @property
    def version(self) -> str:
        return "2019" if self.attrs & VERSION_BIT else "2013"

    @property
    def body_length(self) -> int:
        return self.attrs & BODY_LENGTH_MASK

    @property
    def split(self) -> bool:
        return bool(self.attrs & SPLIT_BIT)

    @property
    def encryption(self) -> int:
        return (self.attrs & ENCRYPTION_MASK) >> 10

    def __repr__(self) -> str:
        split = f" part {self.index}/{self.total}" if self.total else ""
        return (
            f"Header(0x{self.msg_id:04X} {self.version} phone={self.phone} serial={self.serial}"
            f" body={self.body_length}{split})"
        )


def phone_from_bcd(bcd: bytes) -> str:
    """BCD phone -> digits without leading zeros ('0' for all zeros). Raises Jt808Error."""
    digits = bcd.hex()
    if not digits.isdigit():
        raise Jt808Error("bad_bcd", f"phone {digits!r} is not BCD")
    return digits.lstrip("0") or "0"


def phone_to_bcd(phone: str, version: str = "2013") -> bytes:
    """Digits -> BCD[6] (2011/2013) or BCD[10] (2019), zero-padded on the left. Raises ValueError."""
    width = PHONE_DIGITS[version]
    if not phone.isdigit() or not phone.isascii():
        raise ValueError(f"phone {phone!r} must be decimal digits")
    if len(phone) > width:
        raise ValueError(f"phone {phone!r} has more than {width} digits (the {version} header's BCD)")
    return bytes.fromhex(phone.rjust(width, "0"))


def parse(frame: bytes) -> tuple[Header, bytes]:
    """Split one unescaped, verified frame (header + body, no checksum) into (Header, body).

    Raises Jt808Error: `short_header`, `bad_bcd`, `length_mismatch` (the body is not as long as
    the attributes say), `bad_split` (part index 0 or beyond the total), `encrypted` (RSA bodies
    are not supported; the header is attached so the caller can answer).
    """
    n = len(frame)
    if n < HEADER_2013:
        raise Jt808Error("short_header", f"frame of {n} bytes is shorter than a header")
    msg_id, attrs = _HEAD.unpack_from(frame, 0)
    if attrs & VERSION_BIT:
        if n < HEADER_2019:
            raise Jt808Error("short_header", f"frame of {n} bytes is shorter than a 2019 header")
        protocol_version = frame[4]
        phone_bcd = bytes(frame[5:15])
        serial = _SERIAL.unpack_from(frame, 15)[0]
        pos = HEADER_2019
    else:
        protocol_version = None
        phone_bcd = bytes(frame[4:10])
        serial = _SERIAL.unpack_from(frame, 10)[0]
        pos = HEADER_2013
    total = index = 0
    split = attrs & SPLIT_BIT
    if split:
        if n < pos + 4:
            raise Jt808Error("short_header", f"split frame of {n} bytes has no packet item")
        total, index = _SPLIT.unpack_from(frame, pos)
        pos += 4
    digits = phone_bcd.hex()
    if not digits.isdigit():
        raise Jt808Error("bad_bcd", f"phone {digits!r} is not BCD")
    header = Header(msg_id, attrs, protocol_version, digits.lstrip("0") or "0", phone_bcd, serial, total, index, pos)
    length = attrs & BODY_LENGTH_MASK
    if n - pos != length:
        raise Jt808Error("length_mismatch", f"0x{msg_id:04X}: body is {n - pos} bytes, attributes say {length}", header)
    if split and not 1 <= index <= total:
        raise Jt808Error("bad_split", f"0x{msg_id:04X}: part {index} of {total}", header)
    if attrs & ENCRYPTION_MASK:
        raise Jt808Error("encrypted", f"0x{msg_id:04X}: encrypted bodies are not supported", header)
    return header, bytes(frame[pos:])


def build(
    msg_id: int,
    body: bytes,
    phone_bcd: bytes,
    serial: int,
    protocol_version: int | None = None,
    total: int = 0,
    index: int = 0,
) -> bytes:
    """Header + body of one message (unescaped, no checksum: the framer's encoder adds those).

    `protocol_version` None writes a 2011/2013 header (phone BCD[6]); an int writes a 2019 header
    with that version byte (phone BCD[10]). `total`/`index` > 0 write a split-packet item.
    Raises ValueError for a body longer than 1023 bytes or a phone of the wrong width.
    """
    n = len(body)
    if n > MAX_BODY:
        raise ValueError(f"body of {n} bytes exceeds the 10-bit length field (split it)")
    attrs = n
    if protocol_version is None:
        if len(phone_bcd) != 6:
            raise ValueError("a 2013 header needs a BCD[6] phone")
        head = _HEAD.pack(msg_id, attrs | (SPLIT_BIT if total else 0)) + phone_bcd + _SERIAL.pack(serial & 0xFFFF)
    else:
        if len(phone_bcd) != 10:
            raise ValueError("a 2019 header needs a BCD[10] phone")
        attrs |= VERSION_BIT | (SPLIT_BIT if total else 0)
        head = _HEAD.pack(msg_id, attrs) + bytes((protocol_version,)) + phone_bcd + _SERIAL.pack(serial & 0xFFFF)
    if total:
        head += _SPLIT.pack(total, index)
    return head + body


def reply_header_args(header: Header) -> dict:
    """Keyword arguments for `build` that answer `header` in the same header version."""
    return {"phone_bcd": header.phone_bcd, "protocol_version": header.protocol_version}


# -- split messages ---------------------------------------------------------------------------
class Reassembler:
    """Joins the parts of split messages (attribute bit 13) of one terminal.

    Parts of one message carry consecutive serials, so a message is identified by
    (msg id, total, serial of part 1). Bounded: at most `max_pending` messages in flight, each of at
    most `max_parts` parts and `max_bytes` in total; `expire(now)` drops those older than `timeout`.
    `dropped` counts discarded incomplete messages by reason.
    """

    def __init__(
        self, max_parts: int = 64, max_bytes: int = 65536, max_pending: int = 4, timeout: float = 60.0
    ) -> None:
        self.max_parts = max_parts
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.timeout = timeout
        self._pending: dict[tuple[int, int, int], list] = {}  # key -> [started, nbytes, {index: body}]
        self.dropped: dict[str, int] = {}

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def add(self, header: Header, body: bytes, now: float) -> bytes | None:
        """Add one part; return the joined body when the message is complete, else None.
        Raises Jt808Error(`bad_split`) for a part the limits refuse (its message is discarded)."""
        total, index = header.total, header.index
        if total > self.max_parts:
            raise Jt808Error("bad_split", f"0x{header.msg_id:04X}: {total} parts exceed {self.max_parts}", header)
        key = (header.msg_id, total, (header.serial - index + 1) & 0xFFFF)
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= self.max_pending:
                oldest = min(self._pending, key=lambda k: self._pending[k][0])
                del self._pending[oldest]
                self._drop("split_evicted")
            entry = self._pending[key] = [now, 0, {}]
        parts = entry[2]
        if index not in parts:
            entry[1] += len(body)
            if entry[1] > self.max_bytes:
                del self._pending[key]
                raise Jt808Error(
                    "bad_split", f"0x{header.msg_id:04X}: joined body exceeds {self.max_bytes} bytes", header
                )
            parts[index] = body
        if len(parts) < total:
            return None
        del self._pending[key]
        return b"".join(parts[i] for i in range(1, total + 1))

    def expire(self, now: float) -> int:
        """Discard messages whose first part is older than `timeout`; return how many."""
        old = [k for k, e in self._pending.items() if now - e[0] > self.timeout]
        for k in old:
            del self._pending[k]
            self._drop("split_timeout")
        return len(old)

    def __len__(self) -> int:
        return len(self._pending)


class RecentMessages:
    """The last `size` messages of one terminal, to recognise a resend (same id, serial and body)
    of a message whose ack was lost, so it is acknowledged again but not published twice."""

    __slots__ = ("size", "_keys", "_order")

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._keys: set = set()
        self._order: collections.deque = collections.deque()

    def seen_before(self, msg_id: int, serial: int, body: bytes) -> bool:
        key = (msg_id, serial, body)
        if key in self._keys:
            return True
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.size:
            self._keys.discard(self._order.popleft())
        return False


def split_body(body: bytes, part_size: int = MAX_BODY) -> list[bytes]:
    """Cut a long body into parts for split messages (each at most `part_size` bytes)."""
    if part_size < 1 or part_size > MAX_BODY:
        raise ValueError(f"part size must be 1..{MAX_BODY}")
    return [body[i : i + part_size] for i in range(0, len(body), part_size)] or [b""]


# -- general responses ------------------------------------------------------------------------
def parse_ack(body: bytes) -> tuple[int, int, int]:
    """0x0001 / 0x8001 body -> (reply serial, reply msg id, result). Raises Jt808Error."""
    if len(body) != 5:
        raise Jt808Error("bad_body", f"general response of {len(body)} bytes (expected 5)")
    return _ACK.unpack(body)


def ack_body(reply_serial: int, reply_id: int, result: int = Result.OK) -> bytes:
    """Body of 0x8001 (platform) or 0x0001 (terminal)."""
    return _ACK.pack(reply_serial & 0xFFFF, reply_id, int(result))


# -- strings ----------------------------------------------------------------------------------
def _text(raw: bytes) -> str:
    """Fixed-width BYTE[n] or STRING field -> text: GBK, NUL and space padding removed."""
    return raw.split(b"\x00", 1)[0].decode("gbk", errors="replace").strip()


def _fixed(text: str, width: int) -> bytes:
    raw = text.encode("gbk")
    if len(raw) > width:
        raise ValueError(f"{text!r} is longer than {width} bytes")
    return raw.ljust(width, b"\x00")


# -- registration and authentication ----------------------------------------------------------
# Field widths (manufacturer, model, terminal id) of the 0x0100 body by edition.
REGISTER_LAYOUT = {"2011": (5, 8, 7), "2013": (5, 20, 7), "2019": (11, 30, 30)}


class Registration:
    """0x0100 body."""

    __slots__ = ("province", "city", "manufacturer", "model", "terminal_id", "plate_colour", "plate", "edition")

    def __init__(
        self,
        province: int,
        city: int,
        manufacturer: str,
        model: str,
        terminal_id: str,
        plate_colour: int,
        plate: str,
        edition: str,
    ) -> None:
        self.province = province
        self.city = city
        self.manufacturer = manufacturer
        self.model = model
        self.terminal_id = terminal_id
        self.plate_colour = plate_colour
        self.plate = plate
        self.edition = edition

    def info(self) -> dict:
        return {
            "manufacturer": self.manufacturer,
            "model": self.model,
            "terminal_id": self.terminal_id,
            "plate": self.plate,
            "plate_colour": self.plate_colour,
            "province": self.province,
            "city": self.city,
            "edition": self.edition,
        }


def parse_register(body: bytes, version: str) -> Registration:
    """0x0100 body -> Registration. 2019 is told by the header; 2011 from 2013 by length: the
    2013 fixed part is 37 bytes, the 2011 one 25, and a plate is a few GBK characters, so a body
    shorter than 37 bytes is 2011. Raises Jt808Error(`bad_body`)."""
    if version == "2019":
        edition = "2019"
    else:
        edition = "2013" if len(body) >= 37 else "2011"
    w_maker, w_model, w_id = REGISTER_LAYOUT[edition]
    fixed = 4 + w_maker + w_model + w_id + 1
    if len(body) < fixed:
        raise Jt808Error("bad_body", f"register body of {len(body)} bytes is shorter than {fixed}")
    province, city = _HEAD.unpack_from(body, 0)
    p = 4
    maker = _text(body[p : p + w_maker])
    p += w_maker
    model = _text(body[p : p + w_model])
    p += w_model
    terminal_id = _text(body[p : p + w_id])
    p += w_id
    colour = body[p]
    plate = _text(body[p + 1 :])
    return Registration(province, city, maker, model, terminal_id, colour, plate, edition)


def register_body(reg: Registration) -> bytes:
    """Registration -> 0x0100 body in `reg.edition` layout."""
    w_maker, w_model, w_id = REGISTER_LAYOUT[reg.edition]
    return (
        _HEAD.pack(reg.province, reg.city)
        + _fixed(reg.manufacturer, w_maker)
        + _fixed(reg.model, w_model)
        + _fixed(reg.terminal_id, w_id)
        + bytes((reg.plate_colour,))
        + reg.plate.encode("gbk")
    )


def parse_register_reply(body: bytes) -> tuple[int, int, str]:
    """0x8100 body -> (reply serial, result, auth code ('' unless result is OK))."""
    if len(body) < 3:
        raise Jt808Error("bad_body", f"register reply of {len(body)} bytes")
    serial = _SERIAL.unpack_from(body, 0)[0]
    result = body[2]
    code = _text(body[3:]) if result == RegisterResult.OK else ""
    return serial, result, code


def register_reply_body(reply_serial: int, result: int, auth_code: str = "") -> bytes:
    out = _SERIAL.pack(reply_serial & 0xFFFF) + bytes((int(result),))
    if result == RegisterResult.OK:
        out += auth_code.encode("gbk")
    return out


class Authentication:
    """0x0102 body. `imei` and `software_version` only in 2019."""

    __slots__ = ("code", "imei", "software_version")

    def __init__(self, code: str, imei: str = "", software_version: str = "") -> None:
        self.code = code
        self.imei = imei
        self.software_version = software_version


def parse_auth(body: bytes, version: str) -> Authentication:
    """0x0102 body. 2013: the whole body is the code (a trailing NUL, sent by some terminals,
    is ignored). 2019: code length BYTE, code, IMEI BYTE[15], software version BYTE[20]."""
    if version != "2019":
        return Authentication(_text(body))
    if not body:
        raise Jt808Error("bad_body", "empty 2019 auth body")
    n = body[0]
    if len(body) < 1 + n:
        raise Jt808Error("bad_body", f"auth code of {n} bytes in a body of {len(body)}")
    code = body[1 : 1 + n].decode("gbk", errors="replace")
    rest = body[1 + n :]
    return Authentication(code, _text(rest[:15]), _text(rest[15:35]))


def auth_body(code: str, version: str = "2013", imei: str = "", software_version: str = "") -> bytes:
    raw = code.encode("gbk")
    if version != "2019":
        return raw
    if len(raw) > 255:
        raise ValueError("auth code longer than 255 bytes")
    return bytes((len(raw),)) + raw + _fixed(imei, 15) + _fixed(software_version, 20)


def derive_auth_code(secret: bytes, phone: str) -> str:
    """The auth code the platform hands a terminal: the first 16 hex digits of
    HMAC-SHA256(secret, phone). Stateless, so codes survive a gateway restart without a database."""
    return hmac.new(secret, phone.encode("ascii"), hashlib.sha256).hexdigest()[:16]


# -- location ---------------------------------------------------------------------------------
class Location:
    """The basic location (0x0200, and inside 0x0201 / 0x0704) with the additional items read."""

    __slots__ = (
        "alarm",
        "status",
        "lat",
        "lon",
        "alt_m",
        "speed_kmh",
        "course_deg",
        "time_ns",
        "mileage_km",
        "signal",
        "satellites",
        "extras",
    )

    def __init__(
        self,
        alarm: int,
        status: int,
        lat: float,
        lon: float,
        alt_m: int,
        speed_kmh: float,
        course_deg: int,
        time_ns: int | None,
        mileage_km: float | None = None,
        signal: int | None = None,
        satellites: int | None = None,
        extras: dict[int, bytes] | None = None,
    ) -> None:
        self.alarm = alarm
        self.status = status
        self.lat = lat  # signed degrees (south negative)
        self.lon = lon  # signed degrees (west negative)
        self.alt_m = alt_m
        self.speed_kmh = speed_kmh
        self.course_deg = course_deg
        self.time_ns = time_ns  # UTC ns, None when the BCD time is not a valid date
        self.mileage_km = mileage_km
        self.signal = signal
        self.satellites = satellites
        self.extras = extras or {}  # other additional items: id -> raw bytes

    @property
    def fixed(self) -> bool:
        return bool(self.status & STATUS_FIXED)

    def systems(self) -> list[str]:
        return [name for bit, name in STATUS_SYSTEMS if self.status & bit]

    def __repr__(self) -> str:
        return (
            f"Location({self.lat:.6f},{self.lon:.6f} alt={self.alt_m} v={self.speed_kmh}km/h "
            f"dir={self.course_deg} alarm=0x{self.alarm:X} status=0x{self.status:X} t={self.time_ns})"
        )


def bcd_time_ns(raw: bytes) -> int | None:
    """BCD[6] YYMMDDhhmmss in GMT+8 -> UTC ns since the epoch; None when it is not a valid date
    (terminals without a fix often send zeros). Raises Jt808Error(`bad_bcd`) for non-BCD nibbles."""
    digits = raw.hex()
    if not digits.isdigit():
        raise Jt808Error("bad_bcd", f"time {digits!r} is not BCD")
    year = 2000 + int(digits[0:2])
    month = int(digits[2:4])
    day = int(digits[4:6])
    hour = int(digits[6:8])
    minute = int(digits[8:10])
    second = int(digits[10:12])
    if not (
        1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and hour < 24
        and minute < 60
        and second < 60
    ):
        return None
    return (calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - GMT8_S) * 1_000_000_000


def time_bcd(time_ns: int) -> bytes:
    """UTC ns -> BCD[6] in GMT+8 (whole seconds)."""
    t = time.gmtime(time_ns // 1_000_000_000 + GMT8_S)
    return bytes.fromhex(
        f"{t.tm_year % 100:02d}{t.tm_mon:02d}{t.tm_mday:02d}{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}"
    )


def parse_location(body: bytes, start: int = 0, end: int | None = None) -> Location:
    """Basic location plus additional items from body[start:end]. Raises Jt808Error: `bad_body`
    (shorter than 28 bytes, or an item running past the end), `bad_bcd`, `bad_position`
    (latitude beyond 90 or longitude beyond 180 degrees)."""
    if end is None:
        end = len(body)
    if end - start < LOCATION_FIXED_LEN:
        raise Jt808Error("bad_body", f"location of {end - start} bytes is shorter than {LOCATION_FIXED_LEN}")
    alarm, status, lat_u, lon_u, alt, speed, course = _LOCATION.unpack_from(body, start)
    if lat_u > 90_000_000 or lon_u > 180_000_000:
        raise Jt808Error("bad_position", f"position {lat_u / 1e6},{lon_u / 1e6} is out of range")
    lat = lat_u / 1e6
    lon = lon_u / 1e6
    if status & STATUS_SOUTH:
        lat = -lat
    if status & STATUS_WEST:
        lon = -lon
    # altitude is a WORD in the 2013 table but terminals below sea level send it two's-complement
    if alt >= 0x8000:
        alt -= 0x10000
    time_ns = bcd_time_ns(bytes(body[start + 22 : start + 28]))
    loc = Location(alarm, status, lat, lon, alt, speed / 10.0, course, time_ns)
    p = start + LOCATION_FIXED_LEN
    while p < end:
        if p + 2 > end:
            raise Jt808Error("bad_body", "additional item header runs past the body")
        item, n = body[p], body[p + 1]
        p += 2
        if p + n > end:
            raise Jt808Error("bad_body", f"additional item 0x{item:02X} of {n} bytes runs past the body")
        value = bytes(body[p : p + n])
        p += n
        if item == EXTRA_MILEAGE and n == 4:
            loc.mileage_km = _U32.unpack(value)[0] / 10.0
        elif item == EXTRA_SIGNAL and n == 1:
            loc.signal = value[0]
        elif item == EXTRA_SATELLITES and n == 1:
            loc.satellites = value[0]
        else:
            loc.extras[item] = value
    return loc


def location_body(
    lat: float,
    lon: float,
    time_ns: int,
    alt_m: int = 0,
    speed_kmh: float = 0.0,
    course_deg: int = 0,
    alarm: int = 0,
    status: int | None = None,
    mileage_km: float | None = None,
    signal: int | None = None,
    satellites: int | None = None,
) -> bytes:
    """Build a 0x0200 body (terminal side). With `status` None: fixed, BeiDou + GPS used, and the
    hemisphere bits from the signs of lat/lon; a given status gets its hemisphere bits set too."""
    if status is None:
        status = STATUS_FIXED | (1 << 18) | (1 << 19)
    status &= ~(STATUS_SOUTH | STATUS_WEST)
    if lat < 0:
        status |= STATUS_SOUTH
    if lon < 0:
        status |= STATUS_WEST
    out = _LOCATION.pack(
        alarm & 0xFFFFFFFF,
        status & 0xFFFFFFFF,
        round(abs(lat) * 1e6),
        round(abs(lon) * 1e6),
        int(alt_m) & 0xFFFF,
        min(0xFFFF, round(speed_kmh * 10)),
        int(course_deg) % 360,
    ) + time_bcd(time_ns)
    if mileage_km is not None:
        out += bytes((EXTRA_MILEAGE, 4)) + _U32.pack(round(mileage_km * 10) & 0xFFFFFFFF)
    if signal is not None:
        out += bytes((EXTRA_SIGNAL, 1, signal & 0xFF))
    if satellites is not None:
        out += bytes((EXTRA_SATELLITES, 1, satellites & 0xFF))
    return out


# -- batch upload and location query ----------------------------------------------------------
BATCH_NORMAL = 0  # a batch of current reports
BATCH_BLIND_AREA = 1  # reports stored while the terminal had no network (盲区补报)


def parse_batch(body: bytes) -> tuple[int, list[Location]]:
    """0x0704 body: count WORD, type BYTE, then items of (length WORD, location body).
    Returns (type, locations). Raises Jt808Error (`bad_body` when the items do not add up)."""
    if len(body) < 3:
        raise Jt808Error("bad_body", f"batch body of {len(body)} bytes")
    count = _SERIAL.unpack_from(body, 0)[0]
    kind = body[2]
    p = 3
    out = []
    for i in range(count):
        if p + 2 > len(body):
            raise Jt808Error("bad_body", f"batch item {i + 1} of {count} is missing")
        n = _SERIAL.unpack_from(body, p)[0]
        p += 2
        if p + n > len(body):
            raise Jt808Error("bad_body", f"batch item {i + 1} of {n} bytes runs past the body")
        out.append(parse_location(body, p, p + n))
        p += n
    if p != len(body):
        raise Jt808Error("bad_body", f"{len(body) - p} bytes after the {count} batch items")
    return kind, out


def batch_body(locations: list[bytes], kind: int = BATCH_NORMAL) -> bytes:
    """0x0704 body from location bodies."""
    out = [_SERIAL.pack(len(locations)), bytes((kind,))]
    for loc in locations:
        out.append(_SERIAL.pack(len(loc)))
        out.append(loc)
    return b"".join(out)


def parse_location_reply(body: bytes) -> tuple[int, Location]:
    """0x0201 body: reply serial WORD + location. Returns (serial of the 0x8201, location)."""
    if len(body) < 2:
        raise Jt808Error("bad_body", f"location reply of {len(body)} bytes")
    return _SERIAL.unpack_from(body, 0)[0], parse_location(body, 2)


def location_reply_body(reply_serial: int, location: bytes) -> bytes:
    return _SERIAL.pack(reply_serial & 0xFFFF) + location


# -- what gets published ----------------------------------------------------------------------
_KMH_TO_MPS = 1 / 3.6


def fix_payload(loc: Location, stored: bool = False) -> dict:
    """The `gnss/<phone>/fix` payload (keys as in docs/contract.md; what a terminal does not report is
    None). JT/T 808 gives one satellite count for the whole fix, so `sats_used` is split by
    constellation only when the status bits name exactly one system; `sats_used_total` always
    carries the count. Extra keys: `alarm` and `status` (raw words), `acc_on`, `systems`,
    `mileage_km`, `signal`, and `stored` (True for positions a terminal kept while it had no
    network and uploaded later in a blind-area batch)."""
    status = loc.status
    systems = [name for bit, name in STATUS_SYSTEMS if status & bit]
    sats = loc.satellites
    sats_used = None
    if sats is not None and len(systems) == 1:
        sats_used = {"BDS": 0, "GPS": 0, "GLO": 0, "GAL": 0, "QZSS": 0}
        sats_used[systems[0]] = sats
    return {
        "time_ns": loc.time_ns,
        "lat": loc.lat,
        "lon": loc.lon,
        "alt_m": float(loc.alt_m),
        # 0.1 km/h steps; 1e-4 m/s keeps them apart and matches the NMEA driver's rounding
        "speed_mps": round(loc.speed_kmh * _KMH_TO_MPS, 4),
        "course_deg": float(loc.course_deg),
        "quality": 1 if status & STATUS_FIXED else 0,
        "mode": None,
        "hdop": None,
        "pdop": None,
        "vdop": None,
        "sats_used": sats_used,
        "sats_view": None,
        "source": "jt808",
        "sats_used_total": sats,
        "systems": systems,
        "alarm": loc.alarm,
        "status": status,
        "acc_on": bool(status & STATUS_ACC_ON),
        "mileage_km": loc.mileage_km,
        "signal": loc.signal,
        "stored": stored,
    }


def alarm_changes(previous: int, current: int) -> list[dict]:
    """`gnss/<phone>/alarm` payloads for the bits that changed between two alarm words, lowest
    bit first: `kind` (ALARM_KINDS), `active`, `raw` (the whole current word as text, 0x + 8 hex
    digits: `raw` is text for every driver) and `alarm_word` (the same word as a number)."""
    changed = previous ^ current
    out = []
    bit = 0
    while changed:
        if changed & 1:
            out.append(
                {
                    "kind": ALARM_KINDS[bit],
                    "active": bool(current >> bit & 1),
                    "raw": f"0x{current:08x}",
                    "alarm_word": current,
                }
            )
        changed >>= 1
        bit += 1
    return out
