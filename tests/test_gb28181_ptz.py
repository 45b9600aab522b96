"""PTZCmd: the standard's golden examples, every direction combination round-tripped, presets,
focus/iris, aux, and refusals (bad checksum, bad hex, opposite directions)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tianwang.drivers.gb28181 import ptz
from tianwang.drivers.gb28181.ptz import PtzError, decode_ptz_cmd, preset_cmd, ptz_cmd, stop_cmd
from tianwang.drivers.sdk import FrameError


def checksum(hex16: str) -> int:
    b = bytes.fromhex(hex16)
    return sum(b[:7]) % 256


def test_stop_golden():
    assert stop_cmd() == "A50F0100000000B5"
    assert ptz_cmd(0, 0, 0) == "A50F0100000000B5"
    cmd = decode_ptz_cmd("A50F0100000000B5")
    assert (cmd.kind, cmd.address, cmd.pan, cmd.tilt, cmd.zoom) == ("stop", 1, 0, 0, 0)


def test_standard_j6_example_is_zoom_in_speed_1_address_4d():
    cmd = decode_ptz_cmd("A50F4D1000001021")
    assert (cmd.kind, cmd.instruction, cmd.address, cmd.data3) == ("move", 0x10, 0x4D, 1)
    assert (cmd.pan, cmd.tilt) == (0, 0) and cmd.zoom == pytest.approx(1 / 15)
    assert cmd.zoom > 0  # 0x10 is zoom in (tele), as the standard says
    # and we build the same bytes for it
    assert ptz_cmd(0, 0, 1 / 15, address=0x4D) == "A50F4D1000001021"
    assert ptz.encode(0x10, 0, 0, 1, address=0x4D) == "A50F4D1000001021"


@pytest.mark.parametrize("pan, tilt, zoom", list(itertools.product((-1, -0.5, 0, 0.3, 1), repeat=3)))
def test_every_direction_combination_round_trips(pan, tilt, zoom):
    text = ptz_cmd(pan, tilt, zoom, address=0x123)
    assert len(text) == 16 and text == text.upper() and int(text[14:], 16) == checksum(text)
    cmd = decode_ptz_cmd(text)
    assert cmd.address == 0x123
    assert cmd.kind == ("stop" if (pan, tilt, zoom) == (0, 0, 0) else "move")
    assert cmd.pan == pytest.approx(pan, abs=0.5 / 255)
    assert cmd.tilt == pytest.approx(tilt, abs=0.5 / 255)
    assert cmd.zoom == pytest.approx(zoom, abs=0.5 / 15)
    ins = cmd.instruction
    assert bool(ins & ptz.RIGHT) == (pan > 0) and bool(ins & ptz.LEFT) == (pan < 0)
    assert bool(ins & ptz.UP) == (tilt > 0) and bool(ins & ptz.DOWN) == (tilt < 0)
    assert bool(ins & ptz.ZOOM_IN) == (zoom > 0) and bool(ins & ptz.ZOOM_OUT) == (zoom < 0)


def test_speed_mapping_and_clamping():
    cmd = decode_ptz_cmd(ptz_cmd(1, -1, -1))
    assert (cmd.data1, cmd.data2, cmd.data3) == (255, 255, 15)
    assert ptz_cmd(5, -7, 2) == ptz_cmd(1, -1, 1)  # clamped
    tiny = decode_ptz_cmd(ptz_cmd(0.0001, 0, 0.0001))
    assert (tiny.data1, tiny.data3) == (1, 1) and tiny.instruction == ptz.RIGHT | ptz.ZOOM_IN
    with pytest.raises(ValueError):
        ptz_cmd(float("nan"), 0, 0)
    with pytest.raises(ValueError):
        ptz_cmd(0, 0, 0, address=4096)


@pytest.mark.parametrize("op, code", [("set", 0x81), ("goto", 0x82), ("delete", 0x83)])
def test_presets_1_to_255(op, code):
    for n in range(1, 256):
        text = preset_cmd(op, n, address=7)
        assert text[6:8] == f"{code:02X}" and text[10:12] == f"{n:02X}"
        cmd = decode_ptz_cmd(text)
        assert (cmd.kind, cmd.op, cmd.preset, cmd.address) == ("preset", op, n, 7)
    for bad in (0, 256, -1, True):
        with pytest.raises(ValueError):
            preset_cmd(op, bad)
    with pytest.raises(ValueError):
        preset_cmd("jump", 1)


def test_bad_checksum_and_other_refusals():
    with pytest.raises(PtzError) as e:
        decode_ptz_cmd("A50F0100000000B6")
    assert e.value.reason == "bad_checksum" and isinstance(e.value, FrameError)
    for text, why in [("A50F01000000B5", "bad_length"), ("A50F01000000ZZB5", "bad_hex"), ("B50F0100000000C5", "bad_header"),
                      (ptz.encode(0x03, 10, 0, 0), "bad_instruction"), (ptz.encode(0x0C, 0, 10, 0), "bad_instruction"),
                      (ptz.encode(0x30, 0, 0, 3), "bad_instruction"), (ptz.encode(0x43, 9, 0, 0), "bad_instruction")]:  # fmt: skip
        with pytest.raises(PtzError) as e:
            decode_ptz_cmd(text)
        assert e.value.reason == why
    assert decode_ptz_cmd(" a50f0100000000b5 ").kind == "stop"


def test_focus_iris_aux_cruise_scan():
    f = decode_ptz_cmd(ptz.fi_cmd(focus=1))
    assert (f.kind, f.instruction, f.focus) == ("focus", 0x41, 1.0)
    f = decode_ptz_cmd(ptz.fi_cmd(focus=-0.5))
    assert f.instruction == 0x42 and f.focus == pytest.approx(-0.5, abs=0.01)
    i = decode_ptz_cmd(ptz.fi_cmd(iris=1))
    assert (i.kind, i.instruction, i.iris) == ("iris", 0x44, 1.0)
    assert decode_ptz_cmd(ptz.fi_cmd(iris=-1)).instruction == 0x48
    assert decode_ptz_cmd(ptz.fi_cmd()).kind == "stop"
    a = decode_ptz_cmd(ptz.aux_cmd(True, 1))
    assert (a.kind, a.op, a.aux) == ("aux", "on", 1)
    assert decode_ptz_cmd(ptz.aux_cmd(False, 2)).op == "off"
    c = decode_ptz_cmd(ptz.encode(ptz.CRUISE_SPEED, 3, 0x34, 0x2))
    assert (c.kind, c.op, c.group, c.value) == ("cruise", "speed", 3, 0x234)
    assert decode_ptz_cmd(ptz.encode(ptz.CRUISE_ADD, 1, 9)).value == 9
    s = decode_ptz_cmd(ptz.encode(ptz.SCAN, 2, 1))
    assert (s.kind, s.op, s.group) == ("scan", "left_edge", 2)
    assert decode_ptz_cmd(ptz.encode(0xA0)).kind == "other"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20) | st.binary(min_size=8, max_size=8).map(lambda b: b.hex()))
def test_any_text_decodes_or_raises_ptz_error(text):
    try:
        cmd = decode_ptz_cmd(text)
    except PtzError as e:
        assert e.reason
    else:
        assert -1 <= cmd.pan <= 1 and -1 <= cmd.tilt <= 1 and -1 <= cmd.zoom <= 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 15), st.integers(0, 0xFFF))
def test_encode_decode_fields_round_trip(ins, d1, d2, d3, addr):
    text = ptz.encode(ins, d1, d2, d3, addr)
    try:
        cmd = decode_ptz_cmd(text)
    except PtzError as e:
        assert e.reason == "bad_instruction"
        return
    assert (cmd.instruction, cmd.data1, cmd.data2, cmd.data3, cmd.address) == (ins, d1, d2, d3, addr)
