"""ONVIF cameras (`devices: - driver: onvif`), on onvif-zeep-async.

Cameras publish under the `camera` family: `camera/<id>/event/<topic path>` for each ONVIF event
and `camera/<id>/health`. The room: config.py (the config model), driver.py (connect, health,
events, commands), events.py (an ONVIF notification -> a payload, with onvif-parsers),
soap.py (the device side's SOAP envelopes, for the simulator), simulator.py (`tianwang simulate
onvif`), discovery.py (WS-Discovery: `tianwang discover` and the simulator's responder).

This module stays light on purpose (`tianwang drivers` imports it): zeep, lxml and aiohttp load when a
camera starts.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tianwang.drivers.sdk import ActionSpec, DriverSpec

if TYPE_CHECKING:
    from tianwang.drivers.onvif.config import OnvifConfig
    from tianwang.drivers.sdk import DeviceContext, Driver

DEMO_CAMERAS = 4
# snapshots need only read access and each costs the camera (and the gateway) up to 3 MiB: each
# token may take this many per second, after a burst (a wall of cameras refreshed every few seconds fits)
SNAPSHOTS_PER_S = 2.0
SNAPSHOTS_BURST = 10

_PTZ_ARGS = {"profile": "media profile token (default: the configured or first profile)"}


def _factory(config: OnvifConfig, ctx: DeviceContext) -> Driver:
    from tianwang.drivers.onvif.driver import OnvifDriver

    return OnvifDriver(config, ctx)


async def _demo(stack: contextlib.AsyncExitStack) -> dict[str, Any]:
    """`tianwang run --demo`: a handful of cameras with motion, tamper and line-crossing events."""
    import secrets

    from tianwang.drivers.onvif.simulator import CameraFleet

    password = secrets.token_urlsafe(12)
    fleet = CameraFleet(DEMO_CAMERAS, password=password, rate=0.5)
    await fleet.start()
    stack.push_async_callback(fleet.stop)
    return {
        "devices": [
            {
                "id": f"cam-{i + 1:02d}",
                "driver": "onvif",
                "host": cam.host,
                "port": cam.port,
                "username": cam.username,
                "password": password,  # generated per run, loopback only
            }
            for i, cam in enumerate(fleet.cameras)
        ]
    }


def _spec() -> DriverSpec:
    from tianwang.drivers.onvif.config import OnvifConfig

    return DriverSpec(
        name="onvif",
        family="camera",
        config_model=OnvifConfig,
        factory=_factory,
        transports=("http",),
        actions=(
            ActionSpec(
                "ptz_move",
                "continuous pan/tilt/zoom move, stopped after duration_s",
                {
                    "pan": "velocity -1..1",
                    "tilt": "velocity -1..1",
                    "zoom": "velocity -1..1",
                    "duration_s": "seconds before the stop (default 1, at most 60)",
                    **_PTZ_ARGS,
                },
            ),
            ActionSpec("ptz_stop", "stop any pan/tilt/zoom move", dict(_PTZ_ARGS)),
            ActionSpec(
                "ptz_goto",
                "absolute move to a position (generic spaces)",
                {"pan": "-1..1", "tilt": "-1..1", "zoom": "0..1", **_PTZ_ARGS},
            ),
            ActionSpec(
                "preset_set",
                "store the current position as a preset",
                {"name": "preset name", "token": "existing preset token to overwrite (optional)", **_PTZ_ARGS},
            ),
            ActionSpec("preset_goto", "move to a stored preset", {"token": "preset token", **_PTZ_ARGS}),
            ActionSpec("preset_list", "the stored presets with their positions", dict(_PTZ_ARGS)),
            ActionSpec(
                "snapshot",
                "one JPEG from the camera's snapshot URI (result: jpeg bytes)",
                dict(_PTZ_ARGS),
                needs_control=False,
                per_token_per_s=SNAPSHOTS_PER_S,
                per_token_burst=SNAPSHOTS_BURST,
            ),
            ActionSpec("stream_uri", "the RTSP URI of a media profile", dict(_PTZ_ARGS), needs_control=False),
        ),
        description="ONVIF cameras over HTTP SOAP: events (PullPoint or webhook), PTZ, presets, snapshots",
        simulator="tianwang.drivers.onvif.simulator:main",
        demo=_demo,
    )


def __getattr__(name: str) -> DriverSpec:
    # SPEC is built on first use: the config model pulls in pydantic
    if name == "SPEC":
        spec = globals()["SPEC"] = _spec()
        return spec
    raise AttributeError(f"module 'tianwang.drivers.onvif' has no attribute {name!r}")
