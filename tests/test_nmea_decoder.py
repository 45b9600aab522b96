"""NMEA framer + decoder: typed fields, everything real streams do wrong, twins and splits.

Every stream test runs on the compiled decoder and its twin (`impl`), fed whole, byte by byte and
at random splits; Hypothesis checks that any bytes, split anywhere, give the same messages,
counters and exceptions in both.
"""

import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import FUZZ_EXAMPLES
from tianwang.drivers.beidou import nmea_writer as w
from tianwang.gateway import framing
from tianwang.gateway.errors import FrameError

REASONS = ("bad_checksum", "no_checksum", "too_long", "truncated", "bad_sentence", "bad_field", "binary")


def counters(dec):
    return dec.frames, dec.resyncs, dec.dropped_bytes, dec.unchecked, dec.drops


def run(impl, data, splits=None, **options):
    """Feed `data` cut at `splits` (sorted offsets), then finish. Returns (messages, decoder)."""
    dec = impl.NmeaDecoder(**options)
    out = []
    last = 0
    for cut in splits or ():
        out += dec.feed(data[last:cut])
        last = cut
    out += dec.feed(data[last:])
    out += dec.finish()
    return out, dec


def run_every_way(impl, data, seed=7, **options):
    """The messages and counters, checked to be the same whole, byte by byte and at random splits."""
    whole, dec = run(impl, data, **options)
    expected = (whole, counters(dec))
    bytewise, dec = run(impl, data, list(range(1, len(data))), **options)
    assert (bytewise, counters(dec)) == expected, "byte-by-byte feeding changed the result"
    rng = random.Random(seed)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 12)))) if len(data) > 1 else []
        got, dec = run(impl, data, cuts, **options)
        assert (got, counters(dec)) == expected, f"splitting at {cuts} changed the result"
    return expected


def one(impl, line):
    msgs, dec = run(impl, line)
    assert len(msgs) == 1, (msgs, dec.drops)
    return msgs[0]


# ---------------------------------------------------------------------------------------------
# typed fields


def test_gga_fields(impl):
    m = one(impl, b"$GPGGA,123519.25,4807.038,N,01131.000,W,1,08,0.9,545.4,M,46.9,M,,*7C\r\n")
    assert type(m) is impl.GGA and m.FORMATTER == "GGA"
    assert m.talker == "GP"
    assert m.time_of_day_ns == ((12 * 60 + 35) * 60 + 19) * 10**9 + 250_000_000
    assert m.lat == pytest.approx(48 + 7.038 / 60, abs=1e-12)
    assert m.lon == pytest.approx(-(11 + 31.0 / 60), abs=1e-12)
    assert (m.quality, m.sats_used, m.hdop, m.alt_m, m.geoid_sep_m) == (1, 8, 0.9, 545.4, 46.9)
    assert math.isnan(m.dgps_age_s) and m.dgps_station == -1


def test_gga_empty_fix(impl):
    m = one(impl, w.sentence("GNGGA", ["", "", "", "", "", "0", "00", "", "", "", "", "", "", ""]))
    assert m.time_of_day_ns == -1 and math.isnan(m.lat) and math.isnan(m.lon)
    assert (m.quality, m.sats_used) == (0, 0) and math.isnan(m.hdop)


def test_latlon_bits_are_exact_integer_arithmetic(impl):
    # deg + (minutes * 10**k) / (60 * 10**k): both implementations produce these exact doubles
    m = one(
        impl,
        w.sentence("GNGGA", ["000000", "3150.7812345", "S", "11711.9234567", "E", "1", "", "", "", "", "", "", "", ""]),
    )
    assert m.lat == -(31 + 507812345 / (60.0 * 1e7))
    assert m.lon == 117 + 119234567 / (60.0 * 1e7)


def test_rmc_fields(impl):
    m = one(impl, b"$GNRMC,235959.000,A,3150.7812,N,11711.9234,E,12.5,45.3,311224,5.4,W,D,S*70\r\n")
    assert type(m) is impl.RMC
    assert m.time_of_day_ns == 86399 * 10**9
    assert (m.status, m.speed_knots, m.course_deg) == ("A", 12.5, 45.3)
    assert (m.year, m.month, m.day) == (2024, 12, 31)
    assert (m.mag_var_deg, m.mode, m.nav_status) == (-5.4, "D", "S")


def test_rmc_old_form_and_century(impl):
    m = one(impl, w.sentence("GPRMC", ["081836", "V", "", "", "", "", "", "", "130998", "", ""]))
    assert (m.status, m.year, m.month, m.day, m.mode, m.nav_status) == ("V", 1998, 9, 13, "", "")
    assert math.isnan(m.lat) and math.isnan(m.speed_knots)


def test_gsa_system_id_and_old_form(impl):
    m = one(impl, b"$GNGSA,A,3,01,03,07,,,,,,,,,,1.6,0.9,1.3,4*3D\r\n")
    assert (m.talker, m.selection, m.fix_type, m.svids, m.system_id) == ("GN", "A", 3, (1, 3, 7), 4)
    assert (m.pdop, m.hdop, m.vdop) == (1.6, 0.9, 1.3)
    old = one(
        impl, w.sentence("BDGSA", ["A", "2", "05", "", "", "", "", "", "", "", "", "", "", "", "2.0", "1.1", "1.7"])
    )
    assert (old.talker, old.fix_type, old.svids, old.system_id, old.vdop) == ("BD", 2, (5,), -1, 1.7)


def test_gsa_with_more_than_twelve_ids(impl):
    ids = [f"{i:02d}" for i in range(1, 17)]
    with_sys = one(impl, w.sentence("GNGSA", ["A", "3", *ids, "1.2", "0.7", "1.0", "4"]))
    assert with_sys.svids == tuple(range(1, 17)) and with_sys.system_id == 4 and with_sys.vdop == 1.0
    without = one(impl, w.sentence("GNGSA", ["A", "3", *ids, "1.2", "0.7", "1.0"]))
    assert without.svids == tuple(range(1, 17)) and without.system_id == -1 and without.pdop == 1.2


def test_gsv_signal_id_and_padding(impl):
    m = one(impl, b"$GBGSV,2,1,07,01,45,183,42,03,55,220,,07,,,39,,,,,1*70\r\n")
    assert (m.talker, m.total, m.number, m.sats_in_view, m.signal_id) == ("GB", 2, 1, 7, 1)
    assert m.satellites == ((1, 45, 183, 42), (3, 55, 220, -1), (7, -1, -1, 39))
    old = one(impl, w.sentence("BDGSV", ["1", "1", "01", "14", "30", "100", "39"]))
    assert old.signal_id == -1 and old.satellites == ((14, 30, 100, 39),)


def test_gll_vtg_zda_gst_gns(impl):
    gll = one(impl, w.sentence("GNGLL", ["3150.5", "N", "11711.25", "E", "101010.5", "A", "A"]))
    assert (gll.lat, gll.lon, gll.time_of_day_ns, gll.status, gll.mode) == (
        31 + 50.5 / 60,
        117 + 11.25 / 60,
        36610 * 10**9 + 500_000_000,
        "A",
        "A",
    )
    vtg = one(impl, w.sentence("GNVTG", ["45.3", "T", "", "M", "12.5", "N", "23.2", "K", "A"]))
    assert (vtg.course_deg, vtg.speed_knots, vtg.speed_kmh, vtg.mode) == (45.3, 12.5, 23.2, "A")
    assert math.isnan(vtg.course_mag_deg)
    zda = one(impl, w.sentence("GNZDA", ["000001.00", "01", "01", "2025", "-08", "30"]))
    assert (zda.time_of_day_ns, zda.day, zda.month, zda.year, zda.zone_hours, zda.zone_minutes) == (
        10**9,
        1,
        1,
        2025,
        -8,
        30,
    )
    gst = one(impl, w.sentence("GPGST", ["120000.00", "1.5", "2.5", "1.5", "30.0", "1.2", "1.4", "2.2"]))
    assert (gst.rms, gst.sd_major_m, gst.orientation_deg, gst.sd_alt_m) == (1.5, 2.5, 30.0, 2.2)
    gns = one(
        impl,
        w.sentence(
            "GNGNS", ["120000.00", "3150.0", "N", "11711.0", "E", "AANA", "12", "0.8", "50.0", "-3.0", "", "", "V"]
        ),
    )
    assert (gns.mode, gns.sats_used, gns.hdop, gns.alt_m, gns.nav_status) == ("AANA", 12, 0.8, 50.0, "V")


def test_txt(impl):
    m = one(impl, w.txt("ANTENNA OPEN"))
    assert (m.talker, m.total, m.number, m.text_id, m.text) == ("GP", 1, 1, 1, "ANTENNA OPEN")


def test_rdss_sentences(impl):
    msg = "你好".encode("gb2312")
    txr = one(impl, w.txr("0245678", msg, encoding=0, kind=1, send_time="1530"))
    assert (txr.talker, txr.kind, txr.sender, txr.encoding, txr.send_time) == ("BD", 1, "0245678", 0, "1530")
    assert txr.content == msg.hex().upper().encode()
    fki = one(impl, w.fki_21("TXA", False, False, 0, 45))
    assert (fki.form, fki.command, fki.executed, fki.interval_ok, fki.suppression, fki.wait_s) == (
        "2.1",
        "TXA",
        False,
        0,
        0,
        45,
    )
    fki3 = one(impl, w.fki_bds3(12 * 3600 * 10**9, "TCQ", False, reason=1, remaining_s=37))
    assert (fki3.form, fki3.time_of_day_ns, fki3.command, fki3.executed, fki3.reason, fki3.wait_s) == (
        "bds3",
        12 * 3600 * 10**9,
        "TCQ",
        False,
        1,
        37,
    )
    ici = one(impl, w.ici("0245678", "12345", "0999999", 1, 60, 3, True, 2))
    assert (
        ici.card_id,
        ici.serial,
        ici.broadcast_id,
        ici.user_class,
        ici.interval_s,
        ici.level,
        ici.encrypted,
        ici.subordinates,
    ) == ("0245678", "12345", "0999999", 1, 60, 3, True, 2)
    icp = one(impl, w.ici("15950044", interval_s=30, formatter="ICP"))
    assert type(icp) is impl.ICP and (icp.card_id, icp.interval_s, icp.encrypted) == ("15950044", 30, False)
    tci = one(impl, w.tci("15950044", "15950045", msg, encoding=0, freq_point=2, send_time="153000", ack=1))
    assert (tci.sender, tci.recipient, tci.freq_point, tci.send_time, tci.encoding, tci.ack) == (
        "15950044",
        "15950045",
        2,
        "153000",
        0,
        1,
    )
    assert tci.content == msg.hex().upper().encode()
    pwi = one(impl, w.pwi(3600 * 10**9, rdss2=[(1, 4), (2, 0)], s2c=[(5, 3)]))
    assert (pwi.time_of_day_ns, pwi.rdss2, pwi.s2c) == (3600 * 10**9, ((1, 4), (2, 0)), ((5, 3),))


def test_spec_examples_have_valid_checksums(impl):
    # two RDSS sentences as receivers send them, with their published checksums
    raw = impl.parse_nmea_sentence(b"$CCICA,0,00*7B")
    assert type(raw) is impl.RawSentence and (raw.talker, raw.address, raw.fields) == ("CC", "CCICA", ("0", "00"))
    fki = impl.parse_nmea_sentence(b"$BDFKI,TXA,Y,Y,0,0000*13\r\n")
    assert (fki.command, fki.executed, fki.interval_ok, fki.wait_s) == ("TXA", True, 1, 0)


def test_unknown_and_proprietary_pass_through(impl):
    msgs, dec = run(
        impl,
        w.sentence("GPXTE", ["A", "A", "0.67", "L", "N"])
        + w.sentence("PUBX", ["00", "x,y"])
        + w.sentence("PCAS03", ["1", "0"])
        + w.sentence("BDABC", []),
    )
    assert [(m.talker, m.address, m.fields) for m in msgs] == [
        ("GP", "GPXTE", ("A", "A", "0.67", "L", "N")),
        ("", "PUBX", ("00", "x", "y")),
        ("", "PCAS03", ("1", "0")),
        ("BD", "BDABC", ()),
    ]
    assert dec.frames == 4 and sum(dec.drops.values()) == 0


def test_long_rdss_message_is_kept(impl):
    content = ("北斗短报文" * 60).encode("gb2312")  # 600 bytes -> 1200 hex digits
    line = w.txr("0245678", content)
    assert len(line) > 1000
    msgs, dec = run(impl, line + w.txt("OK"))
    assert [type(m).__name__ for m in msgs] == ["TXR", "TXT"] and msgs[0].content == content.hex().upper().encode()
    msgs, dec = run(impl, line + w.txt("OK"), max_message_length=512)
    assert [type(m).__name__ for m in msgs] == ["TXT"] and dec.drops["too_long"] == 1


# ---------------------------------------------------------------------------------------------
# what real streams do wrong

GOOD = [
    w.sentence(
        "GNRMC",
        ["120000.00", "A", "3150.7812345", "N", "11711.9234567", "E", "12.5", "45.3", "281124", "", "", "A", "V"],
    ),
    w.sentence(
        "GNGGA",
        ["120000.00", "3150.7812345", "N", "11711.9234567", "E", "1", "14", "0.9", "52.3", "M", "-3.1", "M", "", ""],
    ),
    w.sentence("GNGSA", ["A", "3", "01", "03", "07", "", "", "", "", "", "", "", "", "", "1.6", "0.9", "1.3", "4"]),
]


def good_messages(impl):
    return [one(impl, s) for s in GOOD]


def test_clean_stream(impl):
    (msgs, ctr) = run_every_way(impl, b"".join(GOOD))
    assert msgs == good_messages(impl)
    assert ctr == (3, 0, 0, 0, dict.fromkeys(REASONS, 0))


def test_garbage_before_first_sentence(impl):
    noise = b"\x00\xff\x17garbage\x01\x02" + b"ANTENNA" + GOOD[0][20:]  # the tail end of a line joined mid-way
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, noise + b"".join(GOOD))
    assert msgs == good_messages(impl)
    assert (frames, resyncs, dropped) == (3, 1, len(noise) - 2)  # the CR LF of the cut line is not noise


def test_double_dollar_and_cr_cr_lf(impl):
    data = b"$" + GOOD[0].replace(b"\r\n", b"\r\r\n") + b"$$" + GOOD[1] + b"\n\n" + GOOD[2]
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl)
    assert (frames, resyncs, dropped, sum(drops.values())) == (3, 3, 3, 0)


def test_truncated_sentences(impl):
    cut = GOOD[1][:40]
    data = GOOD[0] + cut + GOOD[1] + cut + b"\x00" + GOOD[2] + cut
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl)
    assert drops["truncated"] == 3 and dropped == 3 * len(cut) + 1 and frames == 3


def test_terminator_missing_after_checksum(impl):
    data = GOOD[0].rstrip(b"\r\n") + GOOD[1] + GOOD[2].rstrip(b"\r\n")
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl) and dropped == 0


def test_bad_checksums(impl):
    bad = GOOD[1][:-4] + b"00\r\n"
    short = GOOD[1][:-3] + b"\r\n"  # one hex digit
    longer = GOOD[1][:-2] + b"0\r\n"  # three
    data = GOOD[0] + bad + short + longer + GOOD[1] + GOOD[2]
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl)
    assert drops["bad_checksum"] == 3 and dropped == len(bad) + len(short) + len(longer) - 6


def test_lowercase_checksum(impl):
    data = b"".join(w.sentence(s[1:6].decode(), s[7 : s.index(b"*")].decode().split(","), lowercase=True) for s in GOOD)
    assert data != b"".join(GOOD)
    (msgs, ctr) = run_every_way(impl, data)
    assert msgs == good_messages(impl) and ctr[0] == 3


def test_missing_checksum_is_accepted_and_counted(impl):
    no_ck = w.sentence("GNGGA", GOOD[1][7 : GOOD[1].index(b"*")].decode().split(","), with_checksum=False)
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, GOOD[0] + no_ck + GOOD[2])
    assert msgs == good_messages(impl) and unchecked == 1 and dropped == 0
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(
        impl, GOOD[0] + no_ck + GOOD[2], require_checksum=True
    )
    assert msgs == [good_messages(impl)[0], good_messages(impl)[2]]
    assert drops["no_checksum"] == 1 and unchecked == 0 and dropped == len(no_ck) - 2


def test_over_long_lines_are_dropped(impl):
    fields = ["A"] * 60
    exact = w.sentence("GPXYZ", ["x" * (128 - 10)])
    assert len(exact) - 2 == 128
    too_long = w.sentence("GPXYZ", ["x" * (129 - 10)])
    huge = w.sentence("GPXYZ", fields * 20)
    data = GOOD[0] + exact + too_long + GOOD[1] + huge + GOOD[2]
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert [type(m).__name__ for m in msgs] == ["RMC", "RawSentence", "GGA", "GSA"]
    assert drops["too_long"] == 2 and dropped == len(too_long) + len(huge) - 4


def test_binary_frames_interleaved(impl):
    ubx = w.ubx_frame(0x01, 0x07, bytes(range(92)) + b"$GPGGA,\r\n")  # NAV-PVT-sized, with NMEA-looking bytes
    rtcm = w.rtcm3_frame(bytes([0x3E, 0xD0]) + b"\r\n$\x00" * 30)
    casic = w.casic_frame(0x01, 0x03, b"\xba\xce$\r\n" * 4)
    data = ubx + GOOD[0] + rtcm + GOOD[1] + casic + GOOD[2] + ubx
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl)
    assert drops["binary"] == 4 and resyncs == 0 and dropped == 2 * len(ubx) + len(rtcm) + len(casic)


def test_damaged_binary_frame_is_noise_and_spares_the_next_sentence(impl):
    ubx = bytearray(w.ubx_frame(0x01, 0x07, bytes(40)))
    ubx[-1] ^= 0xFF
    fake_len = b"\xb5\x62\x01\x07\xff\x00"  # claims 255 bytes: the sentences inside must survive
    data = bytes(ubx) + GOOD[0] + fake_len + GOOD[1] + GOOD[2] + b"\xd3\x00"
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl)
    assert drops["binary"] == 0 and dropped == len(ubx) + len(fake_len) + 2


def test_bad_fields_are_dropped_one_by_one(impl):
    bads = [
        w.sentence("GNGGA", ["250000.00", "3150.0", "N", "11711.0", "E", "1", "", "", "", "", "", "", "", ""]),
        w.sentence("GNGGA", ["120000.00", "3150.0", "Q", "11711.0", "E", "1", "", "", "", "", "", "", "", ""]),
        w.sentence("GNGGA", ["120000.00", "3175.0", "N", "11711.0", "E", "1", "", "", "", "", "", "", "", ""]),
        w.sentence("GNRMC", ["120000.00", "A", "", "", "", "", "1.x", "", "", "", "", ""]),
        w.sentence("GNRMC", ["120000.00", "A", "", "", "", "", "", "", "321324", "", "", ""]),
        w.sentence("GNGSA", ["A", "3", "1a", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "4"]),
        w.sentence("GBGSV", ["1", "1", "01", "07", "30", "100"]),
        w.sentence("BDFKI", ["TXA", "X", "Y", "0", "0000"]),
        w.sentence("BDFKI", ["TXA", "Y", "Y", "0", "0075"]),
        w.sentence("BDPWI", ["120000.00", "2", "1", "4"]),
        w.sentence("GNGGA", ["1200", "", "", "", "", "1", "", "", "", "", "", "", "", ""]),
    ]
    data = GOOD[0] + b"".join(bads) + GOOD[1] + GOOD[2]
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl)
    assert drops["bad_field"] == len(bads) and dropped == sum(len(b) - 2 for b in bads)


def test_bad_addresses(impl):
    bads = [
        w.sentence("gpgga", ["1"]),
        w.sentence("G", ["1"]),
        w.sentence("GP-GA", []),
        w.sentence("ABCDEFGHIJKLMNOP", []),
    ]
    data = b"".join(bads) + GOOD[0] + b"$\r\n" + GOOD[1] + GOOD[2]
    (msgs, (frames, resyncs, dropped, unchecked, drops)) = run_every_way(impl, data)
    assert msgs == good_messages(impl) and drops["bad_sentence"] == 5


def test_unterminated_end_of_stream(impl):
    msgs, dec = run(impl, GOOD[0] + GOOD[1][:-2])
    assert msgs == good_messages(impl)[:2]
    msgs, dec = run(impl, GOOD[0] + GOOD[1][:-3])
    assert msgs == good_messages(impl)[:1] and dec.drops["truncated"] == 1


def test_pending_bytes_are_bounded(impl):
    dec = impl.NmeaDecoder()
    dec.feed(b"$GPGGA," + b"1" * 100)
    assert dec.pending == 107
    dec.feed(b"1" * 100)  # past max_length: dropped, nothing held
    assert dec.pending == 0 and dec.drops["too_long"] == 1
    dec.feed(b"\r\n\xb5\x62\x01\x07\x00\x04")  # a UBX header claiming 1024 bytes: held until decided
    assert dec.pending == 6
    assert dec.finish() == [] and dec.pending == 0


def test_finish_resets_for_a_new_stream(impl):
    dec = impl.NmeaDecoder()
    assert dec.feed(GOOD[0][:30]) == []
    assert dec.finish() == []
    assert dec.feed(GOOD[1]) == [good_messages(impl)[1]]
    assert dec.drops["truncated"] == 1 and dec.frames == 1


def test_bytearray_and_memoryview_inputs(impl):
    dec = impl.NmeaDecoder()
    assert dec.feed(bytearray(GOOD[0])) + dec.feed(memoryview(GOOD[1])) == good_messages(impl)[:2]


@pytest.mark.parametrize("bad", ["$GPGGA", 5, None, [36, 71]])
def test_non_bytes_input_is_a_type_error(impl, bad):
    with pytest.raises(TypeError):
        impl.NmeaDecoder().feed(bad)
    with pytest.raises(TypeError):
        impl.parse_nmea_sentence(bad)


@pytest.mark.parametrize(
    "options",
    [
        dict(max_length=8),
        dict(max_length=200, max_message_length=100),
        dict(max_binary_length=2),
        dict(max_length=1 << 21),
    ],
)
def test_bad_limits(impl, options):
    with pytest.raises(ValueError):
        impl.NmeaDecoder(**options)


@pytest.mark.parametrize(
    "line,reason",
    [
        (b"$GPGGA,1*00", "bad_checksum"),
        (b"GPGGA,1", "noise"),
        (b"$GPGGA,1*", "bad_checksum"),
        (w.sentence("GPGGA", ["99"]), "bad_field"),
        (b"$gp*00", "bad_checksum"),
        (GOOD[0] + GOOD[1], "noise"),
        (b"$GPXYZ,1", "no_checksum"),
    ],
)
def test_parse_sentence_errors(impl, line, reason):
    with pytest.raises(FrameError) as info:
        impl.parse_nmea_sentence(line, require_checksum=True)
    assert info.value.reason == reason


def test_checksum_function(impl):
    assert impl.nmea_checksum(b"CCICA,0,00") == 0x7B
    assert impl.nmea_checksum(bytearray(b"")) == 0
    with pytest.raises(TypeError):
        impl.nmea_checksum("CCICA")


def test_messages_compare_across_implementations():
    impls = framing.implementations()
    data = b"".join(GOOD) + w.pwi(0, [(1, 2)]) + w.sentence("PUBX", ["00"])
    results = [run(i, data)[0] for i in impls]
    assert all(r == results[0] for r in results)
    assert results[0][0] != results[0][1]


# ---------------------------------------------------------------------------------------------
# twins and fuzz

sentence_parts = st.sampled_from(
    GOOD
    + [
        w.txt("ANTENNA OPEN"),
        w.txr("0245678", b"\xc4\xe3"),
        w.fki_bds3(0, "TCQ", False, 1, 10),
        w.sentence("PUBX", ["00"]),
        w.ubx_frame(1, 7, b"\x00" * 8),
        w.rtcm3_frame(b"\x3e\xd0\x00"),
        w.casic_frame(1, 3, b"\x00" * 4),
        b"$",
        b"\r\n",
        b"\r",
        b"*",
        b",",
        b"$$",
        b"*7B\r\n",
    ]
)
streams = st.lists(
    st.one_of(
        sentence_parts,
        st.binary(max_size=24),
        sentence_parts.flatmap(lambda s: st.integers(0, len(s)).map(lambda k: s[:k])),
    ),
    max_size=12,
).map(b"".join)


def outcome(impl, data, cuts, **options):
    dec = impl.NmeaDecoder(**options)
    out = []
    last = 0
    try:
        for cut in cuts:
            out += dec.feed(data[last:cut])
            last = cut
        out += dec.feed(data[last:])
        out += dec.finish()
    except Exception as exc:  # the exception class is part of the outcome
        return ("raised", type(exc).__name__)
    return out, counters(dec)


def _check_twins(data, cuts, **options):
    reference = outcome(framing.twins(), data, [], **options)
    for impl in framing.implementations():
        assert outcome(impl, data, cuts, **options) == reference, impl.NAME


@given(data=streams, cuts=st.lists(st.integers(0, 400), max_size=6).map(sorted))
def test_twins_agree_on_sentence_like_streams(data, cuts):
    _check_twins(data, [c for c in cuts if c <= len(data)])


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6).map(sorted), require=st.booleans())
def test_twins_agree_on_any_bytes(data, cuts, require):
    _check_twins(
        data,
        [c for c in cuts if c <= len(data)],
        require_checksum=require,
        max_length=32,
        max_message_length=64,
        max_binary_length=64,
    )


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=streams, cuts=st.lists(st.integers(0, 400), max_size=8).map(sorted))
def test_fuzz_nmea_twins_and_splits(data, cuts):
    _check_twins(data, [c for c in cuts if c <= len(data)])


junk = st.binary(max_size=20).map(lambda b: bytes(c for c in b if c not in b"$\xb5\xd3\xba"))
items = st.lists(
    st.one_of(
        st.tuples(st.just("good"), st.sampled_from(GOOD)),
        st.tuples(st.just("junk"), junk),
        st.tuples(
            st.just("binary"),
            st.sampled_from(
                [w.ubx_frame(1, 7, b"$x\r\n"), w.rtcm3_frame(b"\x3e\xd0$\r\n"), w.casic_frame(1, 3, b"$\r\n\x00")]
            ),
        ),
        st.tuples(st.just("bad"), st.sampled_from(GOOD).map(lambda s: s[:-4] + b"ZZ\r\n")),
        st.tuples(
            st.just("cut"), st.sampled_from(GOOD).flatmap(lambda s: st.integers(1, len(s) - 4).map(lambda k: s[:k]))
        ),
    ),
    max_size=15,
)


@settings(max_examples=FUZZ_EXAMPLES)
@given(parts=items, cuts=st.lists(st.integers(0, 2000), max_size=8).map(sorted))
def test_fuzz_nmea_keeps_every_good_sentence(parts, cuts):
    # A good sentence survives whatever surrounds it: junk (no `$`, no binary sync bytes), binary
    # frames, bad checksums and sentences cut short. Checksums are required here: a cut sentence
    # running into junk that holds a CR would otherwise end there as a sentence without checksum.
    data = b"".join(chunk for _, chunk in parts)
    expected = [chunk for kind, chunk in parts if kind == "good"]
    for impl in framing.implementations():
        msgs, dec = run(impl, data, [c for c in cuts if c <= len(data)], require_checksum=True)
        assert msgs == [one(impl, s) for s in expected], impl.NAME
        assert dec.frames == len(expected)
