"""GCJ-02 <-> WGS-84 for positions Chinese devices report in the civilian obfuscated datum.

GCJ-02 is WGS-84 shifted by a smooth, deliberately irregular offset (a few hundred metres), computed
on the Krasovsky ellipsoid (a = 6378245 m, e^2 = 0.00669342162296594323). The forward direction
(WGS-84 -> GCJ-02) is the widely published formula; there is no closed-form inverse, so
`gcj02_to_wgs84` iterates the forward formula until the shift is undone (well under a centimetre in
a few steps; the published forward formula is itself the reference, so "exact" means "round-trips").

Outside the rough bounding box of China (the box every implementation uses) no shift is applied.
"""

from __future__ import annotations

import math

KRASOVSKY_A = 6378245.0
KRASOVSKY_E2 = 0.00669342162296594323
# the rectangle common implementations treat as "inside China" (degrees)
CHINA_LON = (72.004, 137.8347)
CHINA_LAT = (0.8293, 55.8271)


def outside_china(lat: float, lon: float) -> bool:
    """True where GCJ-02 applies no shift (outside the box around China)."""
    return not (CHINA_LON[0] <= lon <= CHINA_LON[1] and CHINA_LAT[0] <= lat <= CHINA_LAT[1])


def _offset_m(x: float, y: float) -> tuple[float, float]:
    """The obfuscation's raw (north, east) terms for x = lon - 105, y = lat - 35 (degrees)."""
    px, py = math.pi * x, math.pi * y
    wave_x = (20.0 * math.sin(6.0 * px) + 20.0 * math.sin(2.0 * px)) * 2.0 / 3.0
    root = math.sqrt(abs(x))
    north = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * root + wave_x
    north += (20.0 * math.sin(py) + 40.0 * math.sin(py / 3.0)) * 2.0 / 3.0
    north += (160.0 * math.sin(py / 12.0) + 320.0 * math.sin(py / 30.0)) * 2.0 / 3.0
    east = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * root + wave_x
    east += (20.0 * math.sin(px) + 40.0 * math.sin(px / 3.0)) * 2.0 / 3.0
    east += (150.0 * math.sin(px / 12.0) + 300.0 * math.sin(px / 30.0)) * 2.0 / 3.0
    return north, east


def _shift(lat: float, lon: float) -> tuple[float, float]:
    """(dlat, dlon) in degrees that GCJ-02 adds at a WGS-84 position."""
    north, east = _offset_m(lon - 105.0, lat - 35.0)
    phi = math.radians(lat)
    w2 = 1.0 - KRASOVSKY_E2 * math.sin(phi) ** 2
    w = math.sqrt(w2)
    meridian = KRASOVSKY_A * (1.0 - KRASOVSKY_E2) / (w2 * w)  # radius of curvature along the meridian
    normal = KRASOVSKY_A / w  # along the prime vertical
    return math.degrees(north / meridian), math.degrees(east / (normal * math.cos(phi)))


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """WGS-84 (lat, lon) -> GCJ-02 (lat, lon); unchanged outside China."""
    if outside_china(lat, lon):
        return lat, lon
    dlat, dlon = _shift(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float, *, tolerance_deg: float = 1e-10, max_steps: int = 30) -> tuple[float, float]:
    """GCJ-02 (lat, lon) -> WGS-84 (lat, lon) by fixed-point iteration of the forward shift (the
    shift varies slowly, so each step cuts the error by orders of magnitude); unchanged outside
    China."""
    if outside_china(lat, lon):
        return lat, lon
    wlat, wlon = lat, lon
    for _ in range(max_steps):
        glat, glon = wgs84_to_gcj02(wlat, wlon)
        elat, elon = glat - lat, glon - lon
        wlat, wlon = wlat - elat, wlon - elon
        if abs(elat) < tolerance_deg and abs(elon) < tolerance_deg:
            break
    return wlat, wlon
