"""What the simulated GB/T 28181 devices see and do, without any SIP: their IDs, the places in
Xiangtan their channels are named after, the roads the 4G units drive, a PTZ head that moves at the
commanded speeds, recordings to list and the alarms they raise.

Everything here is plain state fed with times, so the tests of the movement and the PTZ model need
no sockets and the device code (sim_device.py) only asks "where are you now".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

# GB/T 2260: Hunan 43, Xiangtan 4303; the districts and county-level cities under it
XIANGTAN = "43030000"
CIVIL_CODES = {
    "430302": "雨湖区",
    "430304": "岳塘区",
    "430321": "湘潭县",
    "430381": "湘乡市",
    "430382": "韶山市",
}
# (civil code, place, lat, lon): where a channel looks; roads, squares and bridges of Xiangtan
PLACES = (
    ("430302", "韶山西路与建设北路口", 27.8662, 112.9066),
    ("430302", "雨湖公园东门", 27.8541, 112.9134),
    ("430302", "湘潭大学北门", 27.9046, 112.8673),
    ("430302", "基建营路口", 27.8617, 112.9179),
    ("430302", "窑湾历史文化街", 27.8393, 112.9217),
    ("430302", "湘潭火车站广场", 27.8711, 112.9004),
    ("430302", "车站路与人民路口", 27.8684, 112.9081),
    ("430304", "河东大道与芙蓉路口", 27.8449, 112.9447),
    ("430304", "万达广场南广场", 27.8412, 112.9538),
    ("430304", "宝塔公园入口", 27.8342, 112.9495),
    ("430304", "岳塘国际商贸城", 27.8573, 112.9615),
    ("430304", "板塘铺立交", 27.8762, 112.9588),
    ("430304", "湘潭一大桥东桥头", 27.8438, 112.9314),
    ("430304", "莲城大桥东桥头", 27.8607, 112.9398),
    ("430321", "易俗河镇天易大道", 27.7832, 112.9391),
    ("430321", "湘潭县人民医院门口", 27.7791, 112.9512),
    ("430321", "昭山景区停车场", 27.9723, 113.0217),
    ("430381", "湘乡东山学校门口", 27.7349, 112.5412),
    ("430381", "湘乡市人民路步行街", 27.7367, 112.5301),
    ("430382", "韶山冲毛泽东广场", 27.9178, 112.5267),
    ("430382", "韶山高铁站出站口", 27.9089, 112.5563),
    ("430382", "银田镇银田寺", 27.9432, 112.6174),
)
# what the devices themselves are called
SITES = (
    "雨湖分局",
    "岳塘分局",
    "湘潭县公安局",
    "湘乡市公安局",
    "韶山市公安局",
    "交警支队",
    "九华派出所",
    "城正街派出所",
)
MANUFACTURER = "Tianwang"
CENTRE = (27.83, 112.94)  # Xiangtan's centre, where the 4G units drive
EARTH_M_PER_DEG = 111_320.0

# device kinds and their GB/T 28181 type digits (11-13 of the ID)
TYPE_NVR = 118
TYPE_IPC = 132
TYPE_CAMERA = 131
TYPE_MOBILE = 138
TYPE_ALARM_INPUT = 134


def gb_id(type_code: int, serial: int, industry: str = "00", network: int = 8) -> str:
    """A 20-digit ID under Xiangtan: centre 43030000, industry, type, network (8 = social
    resources), six-digit serial."""
    if not 0 <= serial <= 999_999:
        raise ValueError(f"serial {serial} does not fit six digits")
    return f"{XIANGTAN}{industry}{type_code:03d}{network}{serial:06d}"


@dataclass
class Place:
    civil_code: str
    name: str
    lat: float
    lon: float


def place_for(index: int, rng: random.Random) -> Place:
    """The index-th channel's place: names repeat with a number once the list is used up, and the
    position is jittered by up to ~200 m so no two channels sit on one point."""
    civil, name, lat, lon = PLACES[index % len(PLACES)]
    lap = index // len(PLACES)
    if lap:
        name = f"{name}{lap + 1}号点"
    return Place(civil, name, lat + rng.uniform(-0.002, 0.002), lon + rng.uniform(-0.002, 0.002))


# -- the 4G units' roads ---------------------------------------------------------------------------
class Route:
    """A closed loop of straight legs through Xiangtan, driven at a speed that changes per leg.

    Built from waypoints scattered around the centre, sorted by bearing so the loop does not cross
    itself; `at(t)` gives position, speed and course at any time (course from the leg's bearing)."""

    def __init__(self, rng: random.Random, centre=CENTRE, spread_m: float = 6000.0, legs: int = 6):
        lat0 = centre[0] + rng.uniform(-0.03, 0.03)
        lon0 = centre[1] + rng.uniform(-0.03, 0.03)
        self.m_per_deg_lon = EARTH_M_PER_DEG * math.cos(math.radians(lat0))
        points = []
        for _ in range(legs):
            bearing = rng.uniform(0, 2 * math.pi)
            r = rng.uniform(spread_m * 0.2, spread_m)
            points.append((bearing, r * math.cos(bearing), r * math.sin(bearing)))  # (bearing, north m, east m)
        points.sort()
        self.origin = (lat0, lon0)
        self.points = [(n, e) for _b, n, e in points]
        self.speeds_mps = [rng.uniform(15, 60) / 3.6 for _ in range(legs)]
        self.alt_m = rng.uniform(40.0, 80.0)
        self.legs = []  # (start north, start east, d north, d east, length m, duration s, speed)
        for i, (n0, e0) in enumerate(self.points):
            n1, e1 = self.points[(i + 1) % legs]
            length = math.hypot(n1 - n0, e1 - e0) or 1.0
            self.legs.append((n0, e0, n1 - n0, e1 - e0, length, length / self.speeds_mps[i], self.speeds_mps[i]))
        self.lap_s = sum(leg[5] for leg in self.legs)
        self.phase_s = rng.uniform(0, self.lap_s)

    def at(self, t: float) -> tuple[float, float, float, float, float]:
        """(lat, lon, speed km/h, course degrees clockwise from north, altitude m) at unix time `t`."""
        s = (t + self.phase_s) % self.lap_s
        for n0, e0, dn, de, _length, duration, speed in self.legs:
            if s <= duration:
                f = s / duration
                north, east = n0 + dn * f, e0 + de * f
                course = math.degrees(math.atan2(de, dn)) % 360.0
                lat = self.origin[0] + north / EARTH_M_PER_DEG
                lon = self.origin[1] + east / self.m_per_deg_lon
                return lat, lon, speed * 3.6, course, self.alt_m
            s -= duration
        n0, e0 = self.points[0]  # rounding at the lap's very end
        return self.origin[0] + n0 / EARTH_M_PER_DEG, self.origin[1] + e0 / self.m_per_deg_lon, 0.0, 0.0, self.alt_m


# -- a PTZ head ------------------------------------------------------------------------------------
PAN_DEG_S = 60.0  # full-speed pan, degrees per second
TILT_DEG_S = 30.0
ZOOM_X_S = 4.0  # full-speed zoom, magnification steps per second
TILT_RANGE = (-90.0, 10.0)
ZOOM_RANGE = (1.0, 30.0)


class PtzHead:
    """Pan (0-360, wraps), tilt and zoom that move at the commanded velocities (-1..1 of full speed)
    from the moment of the command until a stop or the next command; presets 1-255 remember a
    position and `goto` moves there at once."""

    def __init__(self, pan: float = 0.0, tilt: float = 0.0, zoom: float = 1.0):
        self.pan, self.tilt, self.zoom = pan, tilt, zoom
        self.v = (0.0, 0.0, 0.0)
        self.since = 0.0
        self.presets: dict[int, tuple[float, float, float]] = {}
        self.commands = 0

    def position(self, now: float) -> tuple[float, float, float]:
        dt = max(0.0, now - self.since)
        vp, vt, vz = self.v
        pan = (self.pan + vp * PAN_DEG_S * dt) % 360.0
        tilt = min(TILT_RANGE[1], max(TILT_RANGE[0], self.tilt + vt * TILT_DEG_S * dt))
        zoom = min(ZOOM_RANGE[1], max(ZOOM_RANGE[0], self.zoom + vz * ZOOM_X_S * dt))
        return pan, tilt, zoom

    def move(self, pan: float, tilt: float, zoom: float, now: float) -> None:
        self.pan, self.tilt, self.zoom = self.position(now)
        self.v = (max(-1.0, min(1.0, pan)), max(-1.0, min(1.0, tilt)), max(-1.0, min(1.0, zoom)))
        self.since = now
        self.commands += 1

    def stop(self, now: float) -> None:
        self.move(0.0, 0.0, 0.0, now)

    def moving(self) -> bool:
        return self.v != (0.0, 0.0, 0.0)

    def preset_set(self, number: int, now: float) -> None:
        self.presets[number] = self.position(now)
        self.commands += 1

    def preset_goto(self, number: int, now: float) -> bool:
        where = self.presets.get(number)
        if where is None:
            return False
        self.pan, self.tilt, self.zoom = where
        self.v = (0.0, 0.0, 0.0)
        self.since = now
        self.commands += 1
        return True

    def preset_delete(self, number: int) -> bool:
        self.commands += 1
        return self.presets.pop(number, None) is not None


# -- alarms ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlarmKind:
    name: str  # the simulator's word, also the --alarm-kinds vocabulary
    method: int  # GB/T 28181 AlarmMethod: 2 device, 5 video
    alarm_type: int  # AlarmType under that method
    priority: int
    description: str


ALARM_KINDS = {
    "motion": AlarmKind("motion", 5, 2, 3, "移动侦测报警"),
    "tripwire": AlarmKind("tripwire", 5, 5, 2, "绊线入侵报警"),
    "video_loss": AlarmKind("video_loss", 2, 1, 1, "视频丢失报警"),
}


# -- recordings ------------------------------------------------------------------------------------
@dataclass
class Recording:
    start: float  # unix seconds
    end: float
    kind: str  # time | alarm | manual
    size_kib: int = field(default=0)


def recordings(channel_index: int, start: float, end: float, kinds: str = "all", limit: int = 200) -> list[Recording]:
    """Half-hour files of continuous recording over [start, end), and an alarm clip in every third
    half hour: deterministic per channel so two queries agree."""
    out: list[Recording] = []
    slot = 1800.0
    t = math.floor(start / slot) * slot
    while t < end and len(out) < limit:
        if kinds in ("all", "time"):
            out.append(Recording(max(t, start), min(t + slot, end), "time", 180_000 + 97 * channel_index))
        if kinds in ("all", "alarm") and int(t / slot + channel_index) % 3 == 0:
            a = t + 600.0
            if start <= a < end:
                out.append(Recording(a, min(a + 60.0, end), "alarm", 6_000 + channel_index))
        t += slot
    return out[:limit]
