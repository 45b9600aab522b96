"""`tianwang run --demo`: the gateway on built-in simulators of every device family that has a
driver, on 127.0.0.1 only, with a live view of the traffic on stdout.

Each driver package contributes its part through `DriverSpec.demo` (start simulators, return config
entries pointing at them). Tokens come from TIANWANG_DEMO_READ_TOKEN / TIANWANG_DEMO_CONTROL_TOKEN or
are generated and printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time

from tianwang.gateway.errors import GatewayError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _token(env: str) -> tuple[str, bool]:
    value = os.environ.get(env)
    if value:
        return value, False
    return secrets.token_urlsafe(24), True


async def run_demo(listen: str | None = None, metrics: str | None = None, live: bool = True, ready=None) -> int:
    from tianwang.gateway.app import Gateway, announce
    from tianwang.gateway.lifecycle.config import load_config, parse_hostport
    from tianwang.gateway.lifecycle.registry import default_registry

    listen = listen or "127.0.0.1:50051"
    if parse_hostport(listen)[0] not in LOOPBACK:
        raise GatewayError(f"run --demo listens on loopback only, not {listen}")
    if metrics == "off":
        metrics = None
    elif metrics is None:
        metrics = "127.0.0.1:9108"
    registry = default_registry()
    read_token, read_new = _token("TIANWANG_DEMO_READ_TOKEN")
    control_token, control_new = _token("TIANWANG_DEMO_CONTROL_TOKEN")

    async with contextlib.AsyncExitStack() as stack:
        devices, listeners, families = [], [], []
        for spec in registry.specs():
            if spec.demo is None:
                continue
            part = await spec.demo(stack)
            devices += part.get("devices", [])
            listeners += part.get("listeners", [])
            families.append(spec.name)
        if not devices and not listeners:
            raise GatewayError("no installed driver provides a demo simulator")
        config = load_config(
            {
                "gateway": {"name": "demo", "listen": listen, "metrics": metrics},
                "auth": {
                    # the tokens come from the environment or were generated just now, not from a file
                    "allow_inline_secrets": True,
                    "tokens": [
                        {"name": "demo-read", "token": read_token, "read": ["#"]},
                        {"name": "demo-control", "token": control_token, "read": ["#"], "control": ["#"]},
                    ]
                },
                "devices": devices,
                "listeners": listeners,
            },
            registry,
        )
        gw = Gateway(config)

        def on_ready(g):
            # the demo listens on loopback only, so its tokens may go in the ready line
            announce(g, extra={"read_token": read_token, "control_token": control_token})
            addr = f"127.0.0.1:{g.port}"
            print(f"demo: drivers {', '.join(families)}; {len(devices)} devices, {len(listeners)} listeners", file=sys.stderr)
            if read_new or control_new:
                print("demo: generated tokens (set TIANWANG_DEMO_READ_TOKEN / TIANWANG_DEMO_CONTROL_TOKEN to fix them):", file=sys.stderr)
            print(f"demo:   read token     {read_token}", file=sys.stderr)
            print(f"demo:   control token  {control_token}", file=sys.stderr)
            print(
                f"demo: try  TIANWANG_TOKEN={read_token} tianwang subscribe --addr {addr} --topic 'gnss/#'",
                file=sys.stderr,
            )
            if live:
                task = asyncio.get_running_loop().create_task(_live_view(g))
                stack.callback(task.cancel)
            if ready is not None:
                ready(g)

        await gw.serve(ready=on_ready)
    return 0


async def _live_view(gw, interval: float = 2.0) -> None:
    """Print the top view and the newest envelopes every `interval` seconds."""
    from tianwang.gateway.datapath.fanout import device_message
    from tianwang.gateway.cli.top import TopView, channel_key, latest_section
    from tianwang.v1 import gateway_pb2 as pb

    view = TopView()
    cursor = gw.journal.next_seq
    while True:
        await asyncio.sleep(interval)
        stats = gw.stats()
        devices = [device_message(e) for e in gw.supervisor.entries.values()]
        text = view.render(stats, devices, time.monotonic())
        gap, cursor = gw.journal.gap_for(cursor)
        latest: dict[str, pb.Envelope] = {}
        while True:
            data, n, cursor = gw.journal.collect(cursor, None, 4096, 8 * 1024 * 1024)
            if not n:
                break
            for env in pb.Batch.FromString(data).envelopes:
                latest[channel_key(env.topic)] = env
        lines = [text, *latest_section(latest)]
        sys.stdout.write("\n".join(lines) + "\n\n")
        sys.stdout.flush()
