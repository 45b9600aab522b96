"""The GB/T 28181 part of `tianwang run --demo`: an NVR with four channels and two 4G body cameras
(mobile units) registering to a gb28181 listener on a free loopback port, each with its own
generated password. The NVR raises an alarm now and then (motion, tripwire, video loss) and the
body cameras drive around Xiangtan once the listener subscribes to their positions.

`__init__.py` names `demo` as the spec's demo part.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import tempfile
from contextlib import AsyncExitStack
from typing import Any

from tianwang.drivers.gb28181.simulator import DEFAULT_SERVER_ID

DEMO_ALARM_RATE = 0.2  # alarms per second over the demo fleet: one every five seconds


def _free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (the listener binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no loopback port free for both UDP and TCP")


async def demo(stack: AsyncExitStack) -> dict[str, Any]:
    """Start the fleet (it retries until the listener is up) and return the listener's config."""
    from tianwang.drivers.gb28181.simulator import Fleet

    port = _free_udp_tcp_port()
    fleet = Fleet(
        "127.0.0.1",
        port,
        devices=1,
        channels=4,
        mobile=2,
        password=secrets.token_urlsafe(12),
        alarm_rate=DEMO_ALARM_RATE,
        keepalive_s=20.0,
        backoff_initial=0.3,
        backoff_max=2.0,
    )
    for device in fleet.devices:  # each its own password
        device.password = secrets.token_urlsafe(12)
    await fleet.start()
    stack.push_async_callback(fleet.stop)
    where = stack.enter_context(tempfile.TemporaryDirectory(prefix="tianwang-demo-gb-"))
    # per-device passwords live in a devices_file (0600), as a real deployment keeps them
    devices_file = os.path.join(where, "gb-devices.json")
    fd = os.open(devices_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump([{"id": d.id, "password": d.password, "name": d.name} for d in fleet.devices], f, ensure_ascii=False)
    return {
        "listeners": [
            {
                "id": "gb",
                "driver": "gb28181",
                "listen": f"127.0.0.1:{port}",
                "server_id": DEFAULT_SERVER_ID,
                "registration": "known",
                "devices_file": devices_file,
                "keepalive": {"interval_s": 20, "count": 3},
                "subscribe": {"catalog": True, "alarm": {}, "mobile_position": {"interval_s": 5}},
                "registrations_file": os.path.join(where, "gb.registrations"),
            }
        ]
    }
