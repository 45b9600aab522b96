"""Writes the receiver captures in this directory (`*.nmea`) and, with --expected, their expected
decoder output (`*.expected.jsonl`, what `tianwang decode --driver beidou` prints).

The captures are synthesized, not recorded: each reproduces, byte for byte, the habits of one kind
of receiver described in its `.md` header. Deterministic: running it again gives the same files.

    .venv/bin/python tests/captures/beidou/make_nmea_captures.py [--expected]
"""

from __future__ import annotations

import datetime as dt
import io
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tianwang.drivers.beidou import nmea_writer as w  # noqa: E402

SEC = 10**9


def utc(*args) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * SEC


def walk(start, k, heading_deg=60.0, speed_mps=8.0):
    """A car driving straight: position after k seconds."""
    lat0, lon0 = start
    d = speed_mps * k
    dlat = d * math.cos(math.radians(heading_deg)) / 111_320.0
    dlon = d * math.sin(math.radians(heading_deg)) / (111_320.0 * math.cos(math.radians(lat0)))
    return lat0 + dlat, lon0 + dlon


def bds_sky(k, used=8):
    # GEO 1-5 sit still; MEO/IGSO drift; the first `used` are in the solution
    sats = []
    for i, svid in enumerate((1, 2, 3, 4, 5, 7, 10, 19, 20, 27, 30)):
        elev = [48, 33, 52, 21, 40, 61, 35, 70, 28, 15, 9][i] + (k // 5 if svid > 5 else 0)
        az = [140, 235, 190, 120, 250, 60, 300, 20, 330, 160, 90][i]
        sats.append(w.Satellite("BDS", svid, min(elev, 89), az, 30 + (elev // 3), used=i < used))
    return sats


# ---------------------------------------------------------------------------------------------


def bd410004_bds_only() -> bytes:
    """An older BeiDou-only module (BD 410004 output standard): BD talker throughout, no System IDs,
    times with 3 decimals, positions with 5; protocol 2.1 RDSS on the same port."""
    t0 = utc(2024, 11, 28, 8, 30, 0)
    ew = w.EpochWriter(
        style="bd", talker="BD", order=("RMC", "GGA", "GSA", "GSV", "GLL"), time_decimals=3, latlon_decimals=5
    )
    out = io.BytesIO()
    out.write(w.ici("0245678", "30012", "0245600", 1, 60, 3, False, 0))
    for k in range(22):
        t = t0 + k * SEC
        if k < 3:  # cold start: no fix yet
            st = w.EpochState(
                time_ns=t,
                quality=0,
                fix_type=1,
                satellites=[w.Satellite(s.system, s.svid, s.elev, s.az, None, used=False) for s in bds_sky(k)],
            )
        else:
            lat, lon = walk((31.2304, 121.4737), k - 3)
            st = w.EpochState(
                time_ns=t,
                lat=lat,
                lon=lon,
                alt_m=12.4 + 0.1 * k,
                geoid_sep_m=9.2,
                speed_mps=8.0,
                course_deg=60.0,
                hdop=1.1,
                pdop=1.9,
                vdop=1.5,
                satellites=bds_sky(k),
            )
        for n, s in enumerate(ew.sentences(st)):
            if (k * 7 + n) % 11 == 3:  # this firmware sometimes writes `$$`
                s = b"$" + s
            if (k + n) % 4 == 0:  # and `\r\r\n` endings
                s = s[:-2] + b"\r\r\n"
            out.write(s)
        if k == 8:
            out.write(w.txt("ANTENNA OPEN", talker="BD"))
        if k == 12:
            out.write(w.txt("ANTENNA OK", talker="BD"))
        if k == 10:
            out.write(
                w.txr("0245001", "巡逻车01请到人民广场集合".encode("gb2312"), encoding=0, kind=1, send_time="0830")
            )
        if k == 14:
            out.write(w.fki_21("TXA", False, False, 0, 45))
        if k == 18:
            out.write(w.fki_21("TXA", True, True, 0, 0))
    return out.getvalue()


def nmea410_multi_gnss() -> bytes:
    """A u-blox-like NMEA 4.10 multi-GNSS receiver across midnight on New Year's Eve: GN solution,
    one GNGSA per constellation with its System ID, GSV per constellation and signal (Signal IDs),
    lowercase checksums, UBX NAV-PVT frames after every epoch, an RTCM3 1005 frame, a reset mid-line,
    one bad checksum, an HDOP spike."""
    t0 = utc(2024, 12, 31, 23, 59, 55)
    ew = w.EpochWriter(style="nmea410", talker="GN", order=("RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA"))
    out = io.BytesIO()
    for k in range(15):
        lat, lon = walk((39.9042, 116.4074), k, heading_deg=200.0, speed_mps=12.5)
        sats = [w.Satellite("GPS", s, min(20 + 3 * s, 85), 25 * s % 360, 38, used=True) for s in (2, 5, 12, 13, 15, 24)]
        sats += [w.Satellite("GPS", s, min(20 + 3 * s, 85), 25 * s % 360, 35, used=False, signal_id=7) for s in (5, 12)]
        sats += [w.Satellite("GLO", s, 30 + s, 40 * s % 360, 33, used=s != 9) for s in (1, 8, 9)]
        sats += [w.Satellite("GAL", s, 45, 15 * s % 360, 36, used=True) for s in (3, 13, 26)]
        sats += [w.Satellite("BDS", s, 25 + s, 11 * s % 360, 37, used=True) for s in (6, 9, 16, 39, 40, 45)]
        sats += [w.Satellite("BDS", s, 25 + s, 11 * s % 360, 33, used=False, signal_id=5) for s in (39, 40)]
        hdop = 7.5 if k in (10, 11) else 0.7
        st = w.EpochState(
            time_ns=t0 + k * SEC,
            lat=lat,
            lon=lon,
            alt_m=48.9,
            geoid_sep_m=-8.4,
            speed_mps=12.5,
            course_deg=200.0,
            hdop=hdop,
            pdop=hdop + 0.6,
            vdop=1.1,
            satellites=sats,
        )
        for s in ew.sentences(st):
            body = s[1 : s.index(b"*")]
            s = b"$" + body + b"*%02x\r\n" % w.checksum(body)
            if k == 5 and body.startswith(b"GNGGA"):
                out.write(s[:37])  # the receiver reset mid-line: the rest never came
                continue
            if k == 9 and body.startswith(b"GNGLL"):
                s = s[:-4] + b"00\r\n"  # a bit flipped on the line
            out.write(s)
        out.write(w.ubx_frame(0x01, 0x07, bytes((k * 7 + i) % 256 for i in range(92))))
        if k == 3:
            out.write(w.rtcm3_frame(bytes([0x3E, 0xD0]) + bytes(17)))
    return out.getvalue()


def casic_bds3_terminal() -> bytes:
    """A CASIC-chip (ZhongKe Microelectronics) GPS+BDS module inside a BDS-3 RDSS terminal: GN
    solution, GPGSA/BDGSA and GPGSV/BDGSV without IDs, CASIC binary frames, vendor sentences without
    checksums, a boot banner at the wrong baud rate, an over-long vendor line, a 6 s stall."""
    t0 = utc(2025, 3, 15, 2, 14, 0)
    ew = w.EpochWriter(
        style="bd",
        talker="GN",
        order=("GGA", "GLL", "GSA", "GSV", "RMC", "VTG", "ZDA"),
        time_decimals=3,
        latlon_decimals=6,
    )
    out = io.BytesIO()
    out.write(bytes([0xF8, 0x80, 0x1E, 0x00, 0xFE, 0x98, 0x66, 0xE0]) * 4 + b"\r\n")  # banner at 9600 read at 115200
    out.write(w.sentence("PCAS06", ["0"], with_checksum=False))
    out.write(w.sentence("GPTXT", ["01", "01", "02", "MA=CASIC"]))
    out.write(w.sentence("GPTXT", ["01", "01", "02", "IC=AT6558R-5N-32-1C510800,B1I+L1" + "-" * 100]))  # too long
    out.write(w.ici("15950044", "7301", "15950000", 2, 30, 2, True, 0, formatter="ICP"))
    k_values = list(range(6)) + list(range(12, 18))  # the module stalls for 6 s after the sixth epoch
    for k in k_values:
        t = t0 + k * SEC
        lat, lon = walk((22.5431, 114.0579), k, heading_deg=300.0, speed_mps=5.0)
        sats = [w.Satellite("GPS", s, 30 + s, 13 * s % 360, 40, used=True) for s in (3, 6, 17, 19)]
        sats += [w.Satellite("BDS", s, 30 + s, 17 * s % 360, 41, used=s != 33) for s in (3, 8, 13, 24, 33)]
        st = w.EpochState(
            time_ns=t,
            lat=lat,
            lon=lon,
            alt_m=31.0,
            geoid_sep_m=-2.6,
            speed_mps=5.0,
            course_deg=300.0,
            hdop=1.4,
            pdop=2.2,
            vdop=1.7,
            satellites=sats,
        )
        out.write(ew.epoch(st))
        out.write(w.casic_frame(0x01, 0x03, bytes((k + i) % 256 for i in range(16))))
        out.write(w.pwi(t, rdss2=[(1, 3), (2, 0), (3, 1)], s2c=[(1, 2)] if k % 2 else []))
        if k == 2:
            out.write(w.sentence("GPTXT", ["01", "01", "01", "ANTENNA SHORT"]))
        if k == 4:
            out.write(w.sentence("GPTXT", ["01", "01", "01", "ANTENNA OK"]))
        if k == 3:
            out.write(w.fki_bds3(t, "TCQ", False, reason=1, remaining_s=27))
        if k == 13:
            out.write(
                w.tci(
                    "15950012",
                    "15950044",
                    "收到，十分钟后到达".encode("gb2312"),
                    encoding=0,
                    freq_point=2,
                    send_time="021412",
                    ack=1,
                )
            )
            out.write(w.fki_bds3(t, "TCQ", True, reason=0, remaining_s=0))
    return out.getvalue()


def _dual_sky(k):
    sats = [w.Satellite("GPS", s, min(25 + 2 * s, 85), 21 * s % 360, 42, used=s != 29) for s in (2, 5, 11, 18, 25, 29)]
    sats += [
        w.Satellite("BDS", s, min(20 + s, 85), 13 * s % 360, 40, used=s not in (41, 59))
        for s in (6, 9, 14, 21, 26, 33, 41, 59)
    ]
    return sats


def dualband_satellites_first() -> bytes:
    """A dual-frequency (L1+L5 / B1I+B2a) NMEA 4.11 receiver that writes its satellites first: per
    epoch GSA for every constellation on band 1, then again on band 2 (no signal ID in GSA), GSV
    for signals 1 and 7/8, GST and ZDA between them, then GGA and RMC. A no-fix start."""
    t0 = utc(2026, 11, 29, 7, 45, 0)
    ew = w.EpochWriter(style="nmea410", talker="GN", order=("GSA", "GST", "GSV", "ZDA", "GGA", "RMC"), dual_band=True)
    out = io.BytesIO()
    for k in range(12):
        t = t0 + k * SEC
        if k < 2:
            st = w.EpochState(
                time_ns=t,
                quality=0,
                fix_type=1,
                satellites=[w.Satellite(s.system, s.svid, s.elev, s.az, None, used=False) for s in _dual_sky(k)],
            )
        else:
            lat, lon = walk((30.5928, 114.3055), k - 2, heading_deg=95.0, speed_mps=11.0)
            st = w.EpochState(
                time_ns=t,
                lat=lat,
                lon=lon,
                alt_m=23.7,
                geoid_sep_m=-12.1,
                speed_mps=11.0,
                course_deg=95.0,
                hdop=0.8,
                pdop=1.4,
                vdop=1.1,
                satellites=_dual_sky(k),
                rms=1.2,
                sd_lat_m=0.8,
                sd_lon_m=0.7,
                sd_alt_m=1.5,
            )
        out.write(ew.epoch(st))
    return out.getvalue()


def casic_at6558_mixed() -> bytes:
    """An ATGM336H-class module (ZKW AT6558) with binary output switched on beside NMEA: per epoch
    the NMEA sentences (GN solution, BD-style GSA/GSV) interleaved with CASIC NAV-PV, NAV-DOP,
    NAV-TIMEUTC, NAV-GPSINFO/BDSINFO, and NAV-STATUS every other epoch; plus a CASIC frame with a
    bad checksum, line noise made of sync bytes, a CASIC frame written into the middle of an RMC
    (the RMC is lost, the frame is not), and a stray CFG-MSG ack frame."""
    t0 = utc(2026, 11, 29, 9, 0, 0)
    ew = w.EpochWriter(style="bd", talker="GN", order=("GGA", "GSA", "GSV", "RMC"), time_decimals=3, latlon_decimals=6)
    out = io.BytesIO()
    for k in range(10):
        t = t0 + k * SEC
        lat, lon = walk((27.8294, 112.9401), k, heading_deg=30.0, speed_mps=6.0)
        sats = [w.Satellite("GPS", s, 30 + s, 13 * s % 360, 40, used=True) for s in (3, 6, 17, 19)]
        sats += [w.Satellite("BDS", s, 30 + s, 17 * s % 360, 41, used=s != 33) for s in (3, 8, 13, 24, 33)]
        st = w.EpochState(
            time_ns=t,
            lat=lat,
            lon=lon,
            alt_m=60.0,
            geoid_sep_m=-15.0,
            speed_mps=6.0,
            course_deg=30.0,
            hdop=1.2,
            pdop=2.0,
            vdop=1.6,
            satellites=sats,
        )
        nmea = ew.sentences(st)
        kinds = ("PV", "DOP", "TIMEUTC", "INFO") + (("STATUS",) if k % 2 == 0 else ())
        frames = w.casic_epoch(st, 5_000_000 + k * 1000, kinds)
        seq = []
        for i in range(max(len(nmea), len(frames))):
            if i < len(frames):
                seq.append(frames[i])
            if i < len(nmea):
                seq.append(nmea[i])
        if k == 4:
            bad = bytearray(frames[0])
            bad[-1] ^= 0x5A
            seq.insert(0, bytes(bad))  # a NAV-PV with a bad checksum before the good one
        if k == 6:
            seq.insert(3, b"\xba\xce\x10\x00\xb5\x62\x01\xba")  # sync bytes as noise
        if k == 7:
            rmc = [x for x in seq if x[3:6] == b"RMC"][0]
            at = seq.index(rmc)
            seq[at] = rmc[:30] + w.casic_frame(0x05, 0x01, bytes([0x06, 0x01, 0, 0]))  # cut by an ACK frame
        out.write(b"".join(seq))
    return out.getvalue()


def ublox_m8_mixed() -> bytes:
    """A u-blox M8-class receiver with UBX NAV-PVT, NAV-DOP, NAV-SAT, NAV-TIMEUTC and NAV-EOE beside
    NMEA 4.10: the binary epoch (ended by EOE) comes before the NMEA one. Also: a NAV-PVT with a
    bad checksum, an RTCM3 frame, random garbage, and two epochs in which the binary says no fix
    (gnssFixOK 0) at the start."""
    t0 = utc(2026, 11, 29, 12, 0, 0)
    ew = w.EpochWriter(style="nmea410", talker="GN", order=("RMC", "VTG", "GGA", "GSA", "GSV", "GLL"))
    out = io.BytesIO()
    for k in range(10):
        t = t0 + k * SEC
        sats = [w.Satellite("GPS", s, 25 + s, 20 * s % 360, 39, used=k >= 2) for s in (1, 4, 8, 10, 22)]
        sats += [w.Satellite("GAL", s, 40, 15 * s % 360, 36, used=k >= 2) for s in (3, 13)]
        sats += [w.Satellite("BDS", s, 25 + s, 11 * s % 360, 37, used=k >= 2) for s in (6, 9, 16, 39)]
        if k < 2:
            st = w.EpochState(time_ns=t, quality=0, fix_type=1, satellites=sats)
        else:
            lat, lon = walk((27.8294, 112.9401), k - 2, heading_deg=180.0, speed_mps=9.0)
            st = w.EpochState(
                time_ns=t,
                lat=lat,
                lon=lon,
                alt_m=75.0,
                geoid_sep_m=-15.0,
                speed_mps=9.0,
                course_deg=180.0,
                hdop=0.9,
                pdop=1.5,
                vdop=1.2,
                satellites=sats,
            )
        frames = w.ubx_epoch(st)
        if k == 5:
            bad = bytearray(frames[0])
            bad[-2] ^= 0x01
            out.write(bytes(bad))
        out.write(b"".join(frames))
        if k == 3:
            out.write(w.rtcm3_frame(bytes([0x3E, 0xD0]) + bytes(17)))
        if k == 6:
            out.write(bytes([0xB5, 0x00, 0xB5, 0x62, 0xFF, 0xFF, 0x13, 0x37, 0xD3, 0xBA]))
        out.write(ew.epoch(st))
    return out.getvalue()


CAPTURES = {
    "bd410004_bds_only": bd410004_bds_only,
    "nmea410_multi_gnss": nmea410_multi_gnss,
    "casic_bds3_terminal": casic_bds3_terminal,
    "dualband_satellites_first": dualband_satellites_first,
    "casic_at6558_mixed": casic_at6558_mixed,
    "ublox_m8_mixed": ublox_m8_mixed,
}


def expected_output(data: bytes) -> str:
    from tianwang.gateway.cli.decode import run_decode

    out, err = io.StringIO(), io.StringIO()
    if run_decode("beidou", "capture", io.BytesIO(data), out, err) != 0:
        raise SystemExit(err.getvalue())
    return out.getvalue()


def main(argv):
    for name, make in CAPTURES.items():
        data = make()
        (HERE / f"{name}.nmea").write_bytes(data)
        if "--expected" in argv:
            (HERE / f"{name}.expected.jsonl").write_text(expected_output(data), encoding="utf-8")
        print(f"{name}.nmea: {len(data)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
