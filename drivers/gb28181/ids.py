"""GB/T 28181 20-digit codes: `CCCCCCCC II TTT N SSSSSS`.

    CCCCCCCC  centre code: a GB/T 2260 administrative area, unused levels 0 (Xiangtan: 43030000)
    II        industry (00 public-security roads, 04 traffic roads, 05 traffic checkpoints...)
    TTT       type (111 DVR, 118 NVR, 131 camera, 132 IPC, 134 alarm input, 138 mobile unit,
              200 SIP server, 215 business group, 216 virtual organisation...)
    N         network (5 public-security network, 7 Internet, 8 social-resource network...)
    SSSSSS    serial

Codes of 2, 4, 6 or 8 digits are administrative regions (catalog tree nodes). The SIP domain is
usually the first 10 digits of the server's code. Field: some devices use 18-digit or otherwise
non-conforming codes; `parse_gb_id(s, strict=False)` takes those as opaque ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DVR = 111
VIDEO_SERVER = 112
ENCODER = 113
DECODER = 114
ALARM_CONTROLLER = 117
NVR = 118
CAMERA = 131
IPC = 132
DISPLAY = 133
ALARM_INPUT = 134
ALARM_OUTPUT = 135
VOICE_INPUT = 136
VOICE_OUTPUT = 137
MOBILE = 138
SIP_SERVER = 200
WEB_SERVER = 201
MEDIA_SERVER = 202
BUSINESS_GROUP = 215
VIRTUAL_ORG = 216

TYPE_NAMES = {
    DVR: "dvr", VIDEO_SERVER: "video_server", ENCODER: "encoder", DECODER: "decoder",
    ALARM_CONTROLLER: "alarm_controller", NVR: "nvr", CAMERA: "camera", IPC: "ipc", DISPLAY: "display",
    ALARM_INPUT: "alarm_input", ALARM_OUTPUT: "alarm_output", VOICE_INPUT: "voice_input",
    VOICE_OUTPUT: "voice_output", MOBILE: "mobile", SIP_SERVER: "sip_server", WEB_SERVER: "web_server",
    MEDIA_SERVER: "media_server", BUSINESS_GROUP: "business_group", VIRTUAL_ORG: "virtual_org",
}  # fmt: skip

# what a lax id may hold: it becomes a SIP user part and a topic level, so no '/', '+', '#', '@', ':'
_LAX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class InvalidGbId(ValueError):
    """A string that is not an acceptable GB/T 28181 code. `reason`: `empty`, `not_digits`,
    `bad_length`, `bad_characters`."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(slots=True, frozen=True)
class GbId:
    """A parsed code. The parts are None for a non-conforming id accepted in lax mode."""

    raw: str
    center: str | None
    industry: str | None
    type: int | None
    network: int | None
    serial: str | None

    @property
    def conforming(self) -> bool:
        return self.center is not None

    @property
    def domain(self) -> str | None:
        """The first 10 digits (the usual SIP domain and realm), None when not conforming."""
        return self.raw[:10] if self.conforming else None

    @property
    def type_name(self) -> str | None:
        return TYPE_NAMES.get(self.type) if self.type is not None else None

    def __str__(self) -> str:
        return self.raw


def _is_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def parse_gb_id(s: str, strict: bool = True) -> GbId:
    """A 20-digit code -> GbId. `strict=False` also accepts non-conforming ids (18 digits, letters)
    made of `A-Z a-z 0-9 _ . -`, up to 64 characters, as opaque ids. Raises InvalidGbId (a
    ValueError) whose message says what is wrong and what would fix it."""
    if not isinstance(s, str) or not s.strip():
        raise InvalidGbId("empty", "empty GB/T 28181 id")
    s = s.strip()
    if len(s) == 20 and _is_digits(s):
        return GbId(s, s[:8], s[8:10], int(s[10:13]), int(s[13]), s[14:])
    if not strict:
        if _LAX.match(s):
            return GbId(s, None, None, None, None, None)
        raise InvalidGbId("bad_characters", f"id {s[:70]!r}: only letters, digits, '_', '.', '-' (1-64) are usable")
    hint = "; set strict_ids: false to accept non-conforming ids"
    if not _is_digits(s):
        raise InvalidGbId("not_digits", f"id {s[:70]!r} is not all digits: a GB/T 28181 id is 20 digits{hint}")
    raise InvalidGbId(
        "bad_length",
        f"id {s[:70]!r} has {len(s)} digits: a GB/T 28181 id has 20 "
        f"(centre 8, industry 2, type 3, network 1, serial 6){hint}",
    )


def is_gb_id(s: str) -> bool:
    """True for a conforming 20-digit code."""
    return isinstance(s, str) and len(s) == 20 and _is_digits(s)


def is_region(s: str) -> bool:
    """True for an administrative-region code (2, 4, 6 or 8 digits)."""
    return isinstance(s, str) and len(s) in (2, 4, 6, 8) and _is_digits(s)


def id_type(s: str) -> int | None:
    """The type digits (11-13) of a 20-digit code, None for anything else."""
    return int(s[10:13]) if is_gb_id(s) else None


def domain_of(s: str) -> str | None:
    """The first 10 digits of a 20-digit code (the usual SIP domain), None for anything else."""
    return s[:10] if is_gb_id(s) else None
