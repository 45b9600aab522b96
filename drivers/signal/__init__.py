"""Traffic-signal controllers speaking GB/T 20999-2017 (`driver: signal`, `protocol: gbt20999`).

The room: protocol.py (messages, sans-io), config.py (one device entry), link.py (a serial line or
TCP link shared by the controllers on it), driver.py (polling, health, commands), decode.py
(`tianwang decode --driver signal`, and the picture the driver publishes), controller.py (a simulated
controller, sans-io) and simulator.py (`tianwang simulate signal`: controllers on a pty or TCP).
Framing is the hot path's `Gbt20999Framer` (through tianwang.drivers.sdk).

`SPEC` is built on first use: `tianwang drivers` and `tianwang decode` import this package and need
neither pydantic nor the driver.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tianwang.drivers.sdk import ActionSpec, DriverSpec

if TYPE_CHECKING:
    from tianwang.drivers.sdk import DeviceContext, Driver
    from tianwang.drivers.signal.config import SignalConfig
    from tianwang.drivers.signal.decode import Decoder

# what each command sets; all but `read` change what the junction shows, so they need a reason
ACTIONS: tuple[tuple[str, str, dict[str, str], bool], ...] = (
    (
        "read",
        "read any object: the controller's reply values",
        {
            "class": "data class (1-255)",
            "object": "object (1-255)",
            "attribute": "attribute (0 = all)",
            "element": "element (0 = all)",
        },
        False,
    ),
    (
        "specify_stage",
        "hold a stage (centre control 17.1.2 or 17.2.1 per profile); confirmed by 13.2.4",
        {"stage": "stage number"},
        True,
    ),
    ("specify_plan", "run a plan (17.1.3 or 17.3.1); confirmed by 13.2.3", {"plan": "plan number"}, True),
    (
        "specify_mode",
        "set the run mode (17.1.4 or 17.4.1); confirmed by 13.2.2",
        {"mode": "run mode name (yellow_flash, local_fixed, ...) or code"},
        True,
    ),
    ("yellow_flash", "command pipe 1: yellow flash; confirmed by mode 0x31 and no green lamp", {}, True),
    ("all_red", "command pipe 2: all red; confirmed by mode 0x32 and every lamp red", {}, True),
    ("lamps_on", "command pipe 3: lamps on again; confirmed by a mode other than lamps off", {}, True),
    ("lamps_off", "command pipe 4: lamps off; confirmed by mode 0x33 and every lamp off", {}, True),
    ("restart", "command pipe 5: restart the controller; confirmed by its answer afterwards", {}, True),
    ("cancel", "command pipe 0: back to the schedule; confirmed by a mode neither special nor manual", {}, True),
    (
        "download_plan",
        "write a plan through the 18.2.1 transaction (open, write, verify, done) and read it back",
        {
            "plan": "plan number (1-16)",
            "greens": "green seconds per stage",
            "chain": "stages in order (default 1..n)",
            "cycle": "cycle seconds",
            "offset": "offset seconds (default 0)",
        },
        True,
    ),
)


def _factory(config: SignalConfig, ctx: DeviceContext) -> Driver:
    from tianwang.drivers.signal.driver import SignalDriver

    return SignalDriver(config, ctx)


def _decoder(device_id: str, profile: str = "majority") -> Decoder:
    from tianwang.drivers.signal.decode import Decoder

    return Decoder(device_id, profile=profile)


async def _demo(stack: contextlib.AsyncExitStack) -> dict[str, Any]:
    """`tianwang run --demo`: a junction group. Three controllers on one multi-drop pty line (as on
    an RS-485 bus) and one over TCP, lamps cycling; detector reports every 5 s."""
    from tianwang.drivers.signal.simulator import SignalSimulator

    line = SignalSimulator("pty", controllers=3, base_id=2001, traffic_s=5.0)
    await line.start()
    stack.push_async_callback(line.stop)
    tcp = SignalSimulator("tcp", controllers=1, base_id=2101, traffic_s=5.0, profile="majority")
    await tcp.start()
    stack.push_async_callback(tcp.stop)
    devices = [
        {
            "id": f"tsc-{c.id}",
            "driver": "signal",
            "protocol": "gbt20999",
            "url": line.url + "?baudrate=9600",
            "controller_id": c.id,
            "labels": {"junction": "demo group", "line": "multi-drop"},
        }
        for c in line.controllers
    ]
    devices.append(
        {
            "id": f"tsc-{tcp.controllers[0].id}",
            "driver": "signal",
            "protocol": "gbt20999",
            "url": tcp.url,
            "labels": {"junction": "demo group", "line": "tcp"},
        }
    )
    return {"devices": devices}


def _spec() -> DriverSpec:
    from tianwang.drivers.signal.config import SignalConfig

    return DriverSpec(
        name="signal",
        family="signal",
        config_model=SignalConfig,
        factory=_factory,
        kind="device",
        recordable=True,
        transports=("serial", "tcp"),
        actions=tuple(ActionSpec(name, text, args, needs_reason=reason) for name, text, args, reason in ACTIONS),
        description="GB/T 20999-2017 traffic-signal controllers on serial lines (multi-drop) or TCP",
        decoder=_decoder,
        simulator="tianwang.drivers.signal.simulator:main",
        demo=_demo,
    )


def __getattr__(name: str) -> DriverSpec:
    if name == "SPEC":
        spec = globals()["SPEC"] = _spec()
        return spec
    raise AttributeError(f"module 'tianwang.drivers.signal' has no attribute {name!r}")
