"""GB/T 28181 video networking: the platform side that cameras, NVRs and 4G units REGISTER to
(`listeners: - driver: gb28181`), over UDP and TCP on one port.

Devices and their catalog channels publish under the `camera` family beside the ONVIF cameras
(`camera/<channel-id>/alarm`, `camera/<id>/health`); mobile positions go to `gnss/<device-id>/fix`.
The room: sip.py, digest.py, transaction.py, sdp.py (SIP, sans-io), manscdp.py, catalog.py,
ptz.py, datum.py, ids.py (the MANSCDP bodies and what they mean, sans-io), config.py (the
listener's config model), registrar.py (REGISTER and digest), session.py (one device: liveness,
catalog, alarms, positions), registry.py (registrations kept across restarts), driver.py (the
sockets and timers), commands.py and media.py (commands; live video calls), simulator.py and
sim_*.py (`tianwang simulate gb28181`), demo.py (the `run --demo` part).

`SPEC` registers the listener driver. This module stays light on purpose (`tianwang drivers`
imports it): the listener and its config model are imported when first used.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tianwang.drivers.sdk import ActionSpec, DriverSpec

if TYPE_CHECKING:
    from tianwang.drivers.gb28181.config import Gb28181Config
    from tianwang.drivers.sdk import DeviceContext, Driver

_PTZ = {"pan": "velocity -1..1", "tilt": "velocity -1..1", "zoom": "velocity -1..1"}
_PRESET = {"token": "preset number 1-255"}


def _factory(config: Gb28181Config, ctx: DeviceContext) -> Driver:
    from tianwang.drivers.gb28181.driver import Gb28181Listener

    return Gb28181Listener(config, ctx)


async def _demo(stack: contextlib.AsyncExitStack) -> dict[str, Any]:
    """`tianwang run --demo`: an NVR with four channels and two 4G body cameras (demo.py)."""
    from tianwang.drivers.gb28181.demo import demo

    return await demo(stack)


def _spec() -> DriverSpec:
    from tianwang.drivers.gb28181.config import Gb28181Config

    return DriverSpec(
        name="gb28181",
        family="camera",
        config_model=Gb28181Config,
        factory=_factory,
        kind="listener",
        transports=("udp", "tcp"),
        actions=(
            ActionSpec(
                "ptz_move",
                "on a channel (or a device): pan/tilt/zoom at these velocities, stopped after "
                "duration_s (the stop is always sent)",
                {**_PTZ, "duration_s": "seconds before the stop (default 1, at most 60)"},
            ),
            ActionSpec("ptz_stop", "stop any pan/tilt/zoom move"),
            ActionSpec(
                "preset_set",
                "store the current position as a preset",
                {**_PRESET, "name": "ignored (GB presets have no name)"},
            ),
            ActionSpec("preset_goto", "move to a stored preset", dict(_PRESET)),
            ActionSpec("preset_delete", "delete a stored preset", dict(_PRESET)),
            ActionSpec("preset_list", "the stored presets (PresetQuery)", needs_control=False),
            ActionSpec(
                "reset_alarm",
                "ResetAlarm, so the device reports its next alarm",
                {"method": "alarm method 1-7 (optional)", "type": "alarm type (optional)"},
            ),
            ActionSpec(
                "record_query",
                "the recordings between start and end (RecordInfo)",
                {
                    "start": "epoch seconds or yyyy-MM-ddTHH:mm:ss Beijing time (default: a day ago)",
                    "end": "the same (default: now)",
                    "type": "all, time, alarm or manual (default all)",
                },
                needs_control=False,
            ),
            ActionSpec("device_info", "DeviceInfo: name, manufacturer, model, firmware, inputs", needs_control=False),
            ActionSpec("device_status", "DeviceStatus: online, status, recording, alarm inputs", needs_control=False),
            ActionSpec("catalog", "query the catalog again; the channels and tree nodes it holds", needs_control=False),
            ActionSpec("reboot", "TeleBoot: restart the device", needs_reason=True),
            ActionSpec(
                "play",
                "live video: INVITE the channel to send RTP (PS) to host:port; result: ssrc, sdp, call_id",
                {
                    "host": "the media receiver's IP address",
                    "port": "its port",
                    "transport": "udp or tcp (default udp)",
                },
            ),
            ActionSpec(
                "stop_play", "BYE: end a live video call", {"call_id": "the call (default: every call of the target)"}
            ),
            ActionSpec(
                "registrations",
                "on the listener: every registration (ID, address, transport, expiry, version), without passwords",
                needs_control=False,
            ),
        ),
        description="GB/T 28181-2016/2022 devices (cameras, NVRs, 4G units) registering over SIP (UDP and TCP)",
        simulator="tianwang.drivers.gb28181.simulator:main",
        demo=_demo,
    )


def __getattr__(name: str) -> DriverSpec:
    # SPEC is built on first use: the config model pulls in pydantic
    if name == "SPEC":
        spec = globals()["SPEC"] = _spec()
        return spec
    raise AttributeError(f"module 'tianwang.drivers.gb28181' has no attribute {name!r}")
