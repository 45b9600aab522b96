"""GB/T 28181 20-digit codes: parts, strict refusal of 18-digit ids with a reason, lax mode."""

from __future__ import annotations

import pytest

from tianwang.drivers.gb28181 import ids
from tianwang.drivers.gb28181.ids import GbId, InvalidGbId, parse_gb_id


def test_twenty_digits_parsed_into_parts():
    g = parse_gb_id("43030000001320000017")
    assert g == GbId("43030000001320000017", "43030000", "00", 132, 0, "000017")
    assert g.conforming and g.domain == "4303000000" and g.type_name == "ipc" and str(g) == "43030000001320000017"
    server = parse_gb_id(" 43030000002000000001 ")
    assert (server.type, server.network, server.type_name) == (ids.SIP_SERVER, 0, "sip_server")
    assert parse_gb_id("34020000001185000001").network == 5


def test_strict_refuses_18_digits_with_a_clear_reason():
    with pytest.raises(InvalidGbId) as e:
        parse_gb_id("430300000013200001")
    assert e.value.reason == "bad_length" and isinstance(e.value, ValueError)
    msg = str(e.value)
    assert "18 digits" in msg and "20" in msg and "strict_ids: false" in msg


@pytest.mark.parametrize("bad, why", [("", "empty"), ("   ", "empty"), ("4303000000132000001X", "not_digits"),
                                      ("４３０３０００００１３２００００１７", "not_digits"),  # full-width digits
                                      ("430300000013200000170", "bad_length"), (None, "empty")])  # fmt: skip
def test_strict_refusals(bad, why):
    with pytest.raises(InvalidGbId) as e:
        parse_gb_id(bad)
    assert e.value.reason == why


def test_lax_mode_accepts_non_conforming_ids_as_opaque():
    g = parse_gb_id("430300000013200001", strict=False)
    assert (g.raw, g.conforming, g.type, g.domain) == ("430300000013200001", False, None, None)
    assert parse_gb_id("IPC-01.a_b", strict=False).raw == "IPC-01.a_b"
    assert parse_gb_id("43030000001320000017", strict=False).type == 132
    for bad in ("a/b", "cam+1", "x#", "user@host", "a b", "x" * 65, "摄像机"):
        with pytest.raises(InvalidGbId) as e:
            parse_gb_id(bad, strict=False)
        assert e.value.reason == "bad_characters"


def test_helpers():
    assert ids.is_region("43") and ids.is_region("4303") and ids.is_region("430304") and ids.is_region("43030401")
    assert not ids.is_region("430") and not ids.is_region("43030000001320000017") and not ids.is_region("ab")
    assert ids.id_type("43030000002160000001") == ids.VIRTUAL_ORG == 216
    assert ids.id_type("43030000002150000001") == ids.BUSINESS_GROUP == 215
    assert ids.id_type("430300000013200001") is None
    assert ids.domain_of("43030000002000000001") == "4303000000" and ids.domain_of("4303") is None
    assert (ids.DVR, ids.NVR, ids.CAMERA, ids.IPC, ids.ALARM_INPUT, ids.MOBILE) == (111, 118, 131, 132, 134, 138)
    assert ids.is_gb_id("43030000001320000017") and not ids.is_gb_id("4303000000132000001７")
