"""BeiDou receivers: NMEA fixes and RDSS short messages (JT/T 808 terminals: tianwang.drivers.jt808).

`SPEC` registers the receiver driver (`driver: beidou`, one device per serial line or TCP serial
server). This module stays light on purpose
(`tianwang drivers` and `tianwang decode` import it): the driver, its transports and the simulator
are imported when first used.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tianwang.drivers.sdk import ActionSpec, DriverSpec

if TYPE_CHECKING:
    from tianwang.drivers.beidou.config import BeidouConfig
    from tianwang.drivers.beidou.decode import Decoder
    from tianwang.drivers.sdk import DeviceContext, Driver


def _factory(config: BeidouConfig, ctx: DeviceContext) -> Driver:
    from tianwang.drivers.beidou.driver import BeidouDriver

    return BeidouDriver(config, ctx)


def _decoder(device_id: str) -> Decoder:
    from tianwang.drivers.beidou.decode import Decoder

    return Decoder(device_id)


async def _demo(stack: contextlib.AsyncExitStack) -> dict[str, Any]:
    """`tianwang run --demo`: two patrol-car receivers around Xiangtan. One on a pty (a BeiDou-only
    NMEA 4.11 module at 1 Hz with line noise, added on purpose and labelled `demo_noise`, and a
    protocol 2.1 RDSS card that receives a message from the command centre every 20 s), one behind
    a TCP serial server (multi-constellation at 5 Hz with a BDS-3 RDSS terminal)."""
    from tianwang.drivers.beidou.simulator import ReceiverSimulator

    car = ReceiverSimulator(
        "pty",
        rate=1,
        talker="GB",
        noise=True,
        rdss="2.1",
        interval_s=60,
        card_id="0245678",
        seed=11,
        message_every_s=20.0,
    )
    await car.start()
    stack.push_async_callback(car.stop)
    van = ReceiverSimulator(
        "tcp", rate=5, talker="GN", rdss="bds3", interval_s=30, card_id="0245679", seed=12, origin=(27.8397, 112.9543)
    )  # 1 km north-east of the car
    await van.start()
    stack.push_async_callback(van.stop)
    return {
        "devices": [
            {
                "id": "bd-car-01",
                "driver": "beidou",
                "url": car.url + "?baudrate=115200",
                "rdss": {"protocol": "2.1"},
                # the top view files this device's drops under "demo noise, deliberate" (docs/contract.md)
                "labels": {
                    "vehicle": "patrol car 01",
                    "demo_noise": "its simulator adds line noise on purpose: bad checksums, cut lines, garbage",
                },
            },
            {
                "id": "bd-van-02",
                "driver": "beidou",
                "url": van.url,
                "rdss": {"protocol": "bds3"},
                "labels": {"vehicle": "command van 02"},
            },
        ]
    }


def _spec() -> DriverSpec:
    from tianwang.drivers.beidou.config import BeidouConfig

    return DriverSpec(
        name="beidou",
        family="gnss",
        config_model=BeidouConfig,
        factory=_factory,
        kind="device",
        recordable=True,
        transports=("serial", "tcp"),
        actions=(
            ActionSpec(
                "send_message",
                "send an RDSS short message ($CCTXA or $CCTCQ per config); the reply is the terminal's $BDFKI",
                {
                    "dest": "recipient card id (7 digits for protocol 2.1)",
                    "text": "message text (give text or hex)",
                    "hex": "message bytes as hex digits (give text or hex)",
                    "encoding": "gb2312 (default from config), code or mixed",
                },
            ),
            ActionSpec("card_info", "query the RDSS card ($CCICA / $CCICR) and return its $BDICI / $BDICP fields"),
        ),
        description="BeiDou (BDS) receivers on serial or TCP: NMEA fixes, receiver alarms, RDSS short messages",
        decoder=_decoder,
        simulator="tianwang.drivers.beidou.simulator:main",
        demo=_demo,
    )


def __getattr__(name: str) -> DriverSpec:
    # SPEC is built on first use: the config model pulls in pydantic, which `tianwang decode`
    # (it imports tianwang.drivers.beidou.decode, and so this package) has no use for
    if name == "SPEC":
        spec = globals()["SPEC"] = _spec()
        return spec
    raise AttributeError(f"module 'tianwang.drivers.beidou' has no attribute {name!r}")
