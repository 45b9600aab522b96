"""GB/T 28181 PTZCmd: the 8-byte front-end control instruction, written as 16 hex characters in a
DeviceControl body (`<PTZCmd>A50F0100000000B5</PTZCmd>`). Sans-io: values in, text out, and back.

Layout (GB/T 28181-2016 A.3): byte 1 `A5`; byte 2 version and check nibble (`0F` for version 0);
byte 3 the address's low byte; byte 4 the instruction; bytes 5 and 6 data 1 and 2; byte 7 data 3 in
the high nibble and the address's high nibble in the low one; byte 8 the sum of bytes 1-7 mod 256.

Instructions:
- 0x00-0x3F pan/tilt/zoom: 0x20 zoom out (wide), 0x10 zoom in (tele), 0x08 up, 0x04 down, 0x02 left,
  0x01 right; data 1 pan speed, data 2 tilt speed (0-255), data 3 zoom speed (0-15); 0x00 is stop.
  (One well-known open implementation labels 0x10 and 0x20 the other way round; this follows the
  standard, whose J.6 example `A50F4D1000001021` is zoom in at zoom speed 1.)
- 0x40-0x4F focus and iris: 0x48 iris close, 0x44 iris open, 0x42 focus near, 0x41 focus far
  (data 1 focus speed, data 2 iris speed); 0x40 stops them.
- 0x81 set preset, 0x82 go to preset, 0x83 delete preset: the number (1-255) in data 2.
- 0x84-0x88 cruise (add point, delete point, speed, dwell time, start): data 1 the cruise group,
  data 2 the preset or the value's low byte, data 3 its high nibble.
- 0x89 scan (data 2: 0 start, 1 set left edge, 2 set right edge), 0x8A scan speed; data 1 the group.
- 0x8C auxiliary switch on, 0x8D off: data 1 the switch (1 = wiper).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tianwang.drivers.sdk import FrameError

RIGHT, LEFT, DOWN, UP, ZOOM_IN, ZOOM_OUT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
FOCUS_FAR, FOCUS_NEAR, IRIS_OPEN, IRIS_CLOSE = 0x41, 0x42, 0x44, 0x48
FI_STOP = 0x40
PRESET_SET, PRESET_GOTO, PRESET_DELETE = 0x81, 0x82, 0x83
CRUISE_ADD, CRUISE_DELETE, CRUISE_SPEED, CRUISE_DWELL, CRUISE_START = 0x84, 0x85, 0x86, 0x87, 0x88
SCAN, SCAN_SPEED = 0x89, 0x8A
AUX_ON, AUX_OFF = 0x8C, 0x8D
MAX_ADDRESS = 0xFFF  # 12 bits: byte 3 and the low nibble of byte 7

_PRESET_OPS = {"set": PRESET_SET, "goto": PRESET_GOTO, "delete": PRESET_DELETE}
_CRUISE_OPS = {CRUISE_ADD: "add_point", CRUISE_DELETE: "delete_point", CRUISE_SPEED: "speed",
               CRUISE_DWELL: "dwell", CRUISE_START: "start"}  # fmt: skip


class PtzError(FrameError):
    """A PTZCmd that cannot be read. `reason`: `bad_length`, `bad_hex`, `bad_header`, `bad_checksum`,
    `bad_instruction` (opposite directions together)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(slots=True, frozen=True)
class PtzCommand:
    """A decoded PTZCmd. `pan`, `tilt`, `zoom` are velocities -1..1 (right, up and zoom in positive);
    `focus` (far +) and `iris` (open +) likewise for 0x4x; `preset` for preset commands; `op` names
    the preset, cruise, scan or aux operation; `group` the cruise or scan group, `value` the cruise
    point/speed/dwell or scan sub-command, `aux` the switch number."""

    kind: str  # move, stop, preset, focus, iris, cruise, scan, aux, other
    address: int
    instruction: int
    data1: int
    data2: int
    data3: int
    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    focus: float = 0.0
    iris: float = 0.0
    preset: int | None = None
    op: str | None = None
    group: int | None = None
    value: int | None = None
    aux: int | None = None


def encode(instruction: int, data1: int = 0, data2: int = 0, data3: int = 0, address: int = 1) -> str:
    """The 16 hex characters of one PTZCmd. Raises ValueError for out-of-range fields."""
    if not 0 <= address <= MAX_ADDRESS:
        raise ValueError(f"PTZ address must be 0-{MAX_ADDRESS}, not {address}")
    for name, v, top in (
        ("instruction", instruction, 255),
        ("data1", data1, 255),
        ("data2", data2, 255),
        ("data3", data3, 15),
    ):
        if not 0 <= v <= top:
            raise ValueError(f"PTZ {name} must be 0-{top}, not {v}")
    b = [0xA5, 0x0F, address & 0xFF, instruction, data1, data2, (data3 << 4) | (address >> 8)]
    b.append(sum(b) & 0xFF)
    return bytes(b).hex().upper()


def _speed(v: float, top: int) -> int:
    """|velocity| 0..1 -> speed 0..top; a non-zero velocity never rounds down to speed 0."""
    s = round(abs(v) * top)
    return max(1, s) if v != 0 else 0


def _velocity(name: str, value: float | str) -> float:
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} is not a number")
    return max(-1.0, min(1.0, v))


def ptz_cmd(pan: float, tilt: float, zoom: float, address: int = 1) -> str:
    """Pan/tilt/zoom velocities -1..1 (right, up, zoom in positive; clamped) -> PTZCmd; 0, 0, 0 is
    the stop. Raises ValueError for NaN or a bad address."""
    pan, tilt, zoom = _velocity("pan", pan), _velocity("tilt", tilt), _velocity("zoom", zoom)
    instruction = 0
    if pan > 0:
        instruction |= RIGHT
    elif pan < 0:
        instruction |= LEFT
    if tilt > 0:
        instruction |= UP
    elif tilt < 0:
        instruction |= DOWN
    if zoom > 0:
        instruction |= ZOOM_IN
    elif zoom < 0:
        instruction |= ZOOM_OUT
    return encode(instruction, _speed(pan, 255), _speed(tilt, 255), _speed(zoom, 15), address)


def stop_cmd(address: int = 1) -> str:
    """The PTZ stop (`A50F0100000000B5` at address 1)."""
    return encode(0, 0, 0, 0, address)


def preset_cmd(op: str, number: int, address: int = 1) -> str:
    """Preset `set`, `goto` or `delete` for preset 1-255. Raises ValueError."""
    if op not in _PRESET_OPS:
        raise ValueError(f"preset op must be set, goto or delete, not {op!r}")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 255:
        raise ValueError(f"preset number must be 1-255, not {number!r}")
    return encode(_PRESET_OPS[op], 0, number, 0, address)


def fi_cmd(focus: float = 0.0, iris: float = 0.0, address: int = 1) -> str:
    """Focus (far +, near -) and iris (open +, close -) velocities -1..1; 0, 0 stops them."""
    focus, iris = _velocity("focus", focus), _velocity("iris", iris)
    instruction = FI_STOP
    if focus > 0:
        instruction |= FOCUS_FAR & 0x0F
    elif focus < 0:
        instruction |= FOCUS_NEAR & 0x0F
    if iris > 0:
        instruction |= IRIS_OPEN & 0x0F
    elif iris < 0:
        instruction |= IRIS_CLOSE & 0x0F
    return encode(instruction, _speed(focus, 255), _speed(iris, 255), 0, address)


def aux_cmd(on: bool, switch: int = 1, address: int = 1) -> str:
    """Auxiliary switch on/off (switch 1 is the wiper)."""
    if not 1 <= switch <= 255:
        raise ValueError(f"aux switch must be 1-255, not {switch}")
    return encode(AUX_ON if on else AUX_OFF, switch, 0, 0, address)


def decode_ptz_cmd(text: str) -> PtzCommand:
    """16 hex characters (any case, surrounding blanks ignored) -> PtzCommand. Raises PtzError."""
    if not isinstance(text, str):
        raise PtzError("bad_hex", f"not text: {type(text).__name__}")
    text = text.strip()
    if len(text) != 16:
        raise PtzError("bad_length", f"{len(text)} characters, want 16")
    try:
        b = bytes.fromhex(text)
    except ValueError:
        raise PtzError("bad_hex", repr(text)) from None
    if b[0] != 0xA5:
        raise PtzError("bad_header", f"first byte {b[0]:02X}, want A5")
    if sum(b[:7]) & 0xFF != b[7]:
        raise PtzError("bad_checksum", f"{b[7]:02X}, want {sum(b[:7]) & 0xFF:02X}")
    ins, d1, d2, d3 = b[3], b[4], b[5], b[6] >> 4
    address = b[2] | ((b[6] & 0x0F) << 8)
    base: dict[str, Any] = dict(address=address, instruction=ins, data1=d1, data2=d2, data3=d3)
    if ins == 0 or ins == FI_STOP:
        return PtzCommand("stop", **base)
    if ins < 0x40:
        if ins & (LEFT | RIGHT) == LEFT | RIGHT or ins & (UP | DOWN) == UP | DOWN or ins & 0x30 == 0x30:
            raise PtzError("bad_instruction", f"opposite directions together: {ins:02X}")
        pan = (d1 / 255) * (1 if ins & RIGHT else -1 if ins & LEFT else 0)
        tilt = (d2 / 255) * (1 if ins & UP else -1 if ins & DOWN else 0)
        zoom = (d3 / 15) * (1 if ins & ZOOM_IN else -1 if ins & ZOOM_OUT else 0)
        return PtzCommand("move", pan=pan, tilt=tilt, zoom=zoom, **base)
    if ins < 0x50:
        if ins & 0x03 == 0x03 or ins & 0x0C == 0x0C:
            raise PtzError("bad_instruction", f"opposite focus/iris together: {ins:02X}")
        focus = (d1 / 255) * (1 if ins & 0x01 else -1 if ins & 0x02 else 0)
        iris = (d2 / 255) * (1 if ins & 0x04 else -1 if ins & 0x08 else 0)
        return PtzCommand("focus" if ins & 0x03 else "iris", focus=focus, iris=iris, **base)
    if ins in (PRESET_SET, PRESET_GOTO, PRESET_DELETE):
        op = {PRESET_SET: "set", PRESET_GOTO: "goto", PRESET_DELETE: "delete"}[ins]
        return PtzCommand("preset", preset=d2, op=op, **base)
    if ins in _CRUISE_OPS:
        value = d2 | (d3 << 8) if ins in (CRUISE_SPEED, CRUISE_DWELL) else d2
        return PtzCommand("cruise", op=_CRUISE_OPS[ins], group=d1, value=value, **base)
    if ins == SCAN:
        op = {0: "start", 1: "left_edge", 2: "right_edge"}.get(d2, "other")
        return PtzCommand("scan", op=op, group=d1, value=d2, **base)
    if ins == SCAN_SPEED:
        return PtzCommand("scan", op="speed", group=d1, value=d2 | (d3 << 8), **base)
    if ins in (AUX_ON, AUX_OFF):
        return PtzCommand("aux", op="on" if ins == AUX_ON else "off", aux=d1, **base)
    return PtzCommand("other", **base)
