"""JT/T 808 vehicle terminals: a listener that terminals dial into over TCP (`listeners: - driver: jt808`).

Terminals publish under the `gnss` family (`gnss/<phone>/fix`, `/alarm`, `/health`), like BeiDou
receivers. The room: config.py (the listener's config model), protocol.py (messages, sans-io),
session.py (what one terminal's messages mean, sans-io: used by the listener and the offline
decoder alike), driver.py (the TCP listener), decode.py (`tianwang decode --driver jt808`),
simulator.py (`tianwang simulate jt808`, a fleet of terminals).

`SPEC` registers the listener driver. This module stays light on purpose (`tianwang drivers` and
`tianwang decode` import it): the listener, its config model and the simulator are imported when
first used.
"""

from __future__ import annotations

import contextlib
import types
from typing import TYPE_CHECKING, Any

from tianwang.drivers.sdk import ActionSpec, DriverSpec

if TYPE_CHECKING:
    from tianwang.drivers.jt808.config import Jt808Config
    from tianwang.drivers.jt808.decode import Decoder
    from tianwang.drivers.sdk import DeviceContext, Driver

DEMO_TERMINALS = 200


def _factory(config: Jt808Config, ctx: DeviceContext) -> Driver:
    from tianwang.drivers.jt808.driver import Jt808Listener

    return Jt808Listener(config, ctx)


def _decoder(device_id: str) -> Decoder:
    from tianwang.drivers.jt808.decode import Decoder

    return Decoder(device_id)


def _listener_port(socket: types.ModuleType) -> int:
    """A free loopback port below the ephemeral range. The fleet dials before the listener is up, and
    a dial to a port inside that range can be given the same port as its own source: the socket
    connects to itself (TCP simultaneous open) and holds the port the listener then cannot bind."""
    import random

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), max(1025, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # every try taken: any free port, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _demo(stack: contextlib.AsyncExitStack) -> dict[str, Any]:
    """`tianwang run --demo`: a fleet of simulated terminals dialling a listener on a free loopback
    port. The fleet starts first and keeps re-dialling (with backoff) until the listener is up."""
    import os
    import secrets
    import socket
    import tempfile

    from tianwang.drivers.jt808.simulator import Fleet

    port = _listener_port(socket)
    fleet = Fleet("127.0.0.1", port, terminals=DEMO_TERMINALS, rate=1.0, backoff_initial=0.3, backoff_max=2.0)
    await fleet.start()
    stack.push_async_callback(fleet.stop)
    # registrations kept in a file for the demo's lifetime, as a real listener keeps them (and
    # without the warning a memory-only listener gets)
    where = stack.enter_context(tempfile.TemporaryDirectory(prefix="tianwang-demo-"))
    return {
        "listeners": [
            {
                "id": "fleet",
                "driver": "jt808",
                "listen": f"127.0.0.1:{port}",
                "auth_secret": secrets.token_hex(16),
                "registrations_file": os.path.join(where, "fleet.registrations"),
                # the whole simulated fleet dials in from 127.0.0.1 at once
                "registrations_burst": DEMO_TERMINALS,
                "max_unauthenticated_per_address": DEMO_TERMINALS,
            }
        ]
    }


def _spec() -> DriverSpec:
    from tianwang.drivers.jt808.config import Jt808Config

    return DriverSpec(
        name="jt808",
        family="gnss",
        config_model=Jt808Config,
        factory=_factory,
        kind="listener",
        recordable=True,
        transports=("tcp",),
        actions=(
            ActionSpec(
                "query_location",
                "on a terminal: ask it for its position now (0x8201); the result is the fix of its 0x0201 answer",
            ),
            ActionSpec(
                "deregister",
                "on the listener: forget a terminal's registration so that phone may register over the air "
                "again (a replaced terminal); its code and any live connection are left as they are",
                args={"phone": "the terminal's phone number"},
                needs_reason=True,
            ),
            ActionSpec(
                "registrations",
                "on the listener: every registered terminal (phone, when, how, what it said), without codes",
            ),
        ),
        description="JT/T 808-2011/2013/2019 vehicle terminals dialling in over TCP",
        decoder=_decoder,
        simulator="tianwang.drivers.jt808.simulator:main",
        demo=_demo,
    )


def __getattr__(name: str) -> DriverSpec:
    # SPEC is built on first use: the config model pulls in pydantic, which `tianwang decode`
    # (it imports tianwang.drivers.jt808.decode, and so this package) has no use for
    if name == "SPEC":
        spec = globals()["SPEC"] = _spec()
        return spec
    raise AttributeError(f"module 'tianwang.drivers.jt808' has no attribute {name!r}")
