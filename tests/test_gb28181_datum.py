"""GCJ-02 <-> WGS-84: published reference pairs, round trips around Xiangtan under 0.5 m, and no
shift outside China."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tianwang.drivers.gb28181.datum import gcj02_to_wgs84, outside_china, wgs84_to_gcj02

# (WGS-84 lat, lon) -> (GCJ-02 lat, lon): the reference pairs published with the eviltransform
# libraries (Shanghai, Shenzhen, Beijing), computed there independently of this code
PUBLISHED = [
    ((31.1774276, 121.5272106), (31.17530398364597, 121.531541859215)),
    ((22.543847, 113.912316), (22.540796131694766, 113.9171764808363)),
    ((39.911954, 116.377817), (39.91334545536069, 116.38404722455657)),
]


def metres(a, b) -> float:
    """Great-circle distance between two (lat, lon) in metres (haversine, mean Earth radius)."""
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(h))


@pytest.mark.parametrize("wgs, gcj", PUBLISHED)
def test_published_pairs(wgs, gcj):
    got = wgs84_to_gcj02(*wgs)
    assert got == pytest.approx(gcj, abs=1e-9)
    back = gcj02_to_wgs84(*gcj)
    assert metres(back, wgs) < 0.01


def test_shift_is_real_around_xiangtan():
    # the obfuscation moves points by hundreds of metres: a no-op conversion would pass a round trip
    here = (27.83, 112.94)
    assert 100 < metres(here, wgs84_to_gcj02(*here)) < 1000


def test_round_trip_grid_around_xiangtan_under_half_a_metre():
    worst = 0.0
    for i in range(-10, 11):
        for j in range(-10, 11):
            wgs = (27.83 + i * 0.05, 112.94 + j * 0.05)
            back = gcj02_to_wgs84(*wgs84_to_gcj02(*wgs))
            worst = max(worst, metres(back, wgs))
    assert worst < 0.5


@settings(max_examples=300, deadline=None)
@given(st.floats(18.0, 53.0), st.floats(74.0, 135.0))
def test_round_trip_inside_china(lat, lon):
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lat, lon))
    assert metres(back, (lat, lon)) < 0.5


@pytest.mark.parametrize("pos", [(51.5, -0.12), (35.68, 139.76), (-33.9, 151.2), (60.0, 100.0), (0.5, 110.0)])
def test_outside_china_unchanged(pos):
    assert outside_china(*pos)
    assert wgs84_to_gcj02(*pos) == pos
    assert gcj02_to_wgs84(*pos) == pos
    assert not outside_china(27.83, 112.94)
