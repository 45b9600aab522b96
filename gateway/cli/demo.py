"""`tianwang run --demo`: the gateway on built-in simulators of every device family that has a
driver, on 127.0.0.1 only, with a live view of the traffic on stdout (redrawn in place on a
terminal, plain frames otherwise); `q`, Ctrl-C, SIGTERM or `--seconds` end it with exit 0.

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

from tianwang.gateway.cli.top import Keys, LiveScreen, TopView, channel_key
from tianwang.gateway.errors import GatewayError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _token(env: str) -> tuple[str, bool]:
    value = os.environ.get(env)
    if value:
        return value, False
    return secrets.token_urlsafe(24), True


# a command to suggest, by the first demo device present: (device, action and arguments)
TRY_COMMANDS = (
    ("tsc-2001", "yellow_flash --reason 'demo drill'"),
    ("cam-01", "ptz_move pan=0.5 duration_s=1"),
    ("bd-car-01", "card_info"),
)


def _program() -> str:
    """How the user started `tianwang` (`.venv/bin/tianwang` under `make demo`), for the hints."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 if os.path.basename(argv0) == "tianwang" else "tianwang"


def hints(addr: str, read_token: str, control_token: str, device_ids, seconds: float | None = None) -> list[str]:
    """The lines that tell a new user how to use the running demo: exact commands with the tokens."""
    prog = _program()
    lines = [
        f"in another terminal:  export TIANWANG_ADDR={addr} TIANWANG_TOKEN={read_token}",
        f"  subscribe:  {prog} subscribe --topic 'gnss/+/fix' --json",
    ]
    for device, action in TRY_COMMANDS:
        if device in device_ids:
            lines.append(f"  command:    TIANWANG_TOKEN={control_token} {prog} command {device} {action}")
            break
    lines.append(f"  this view:  {prog} top")
    if seconds:
        lines.append(f"the demo stops by itself after {seconds:g} s; q or Ctrl-C stops it sooner")
    else:
        lines.append("q or Ctrl-C stops the demo")
    return lines


async def run_demo(
    listen: str | None = None, metrics: str | None = None, live: bool = True, ready=None, seconds: float | None = None
) -> int:
    """Run the demo until SIGTERM/SIGINT, `q` on the terminal, or `seconds` (when given)."""
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
    timed_out: list[float] = []  # `seconds` ran out (rather than q, Ctrl-C or SIGTERM)
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
        # a superior police platform (the city's) that the gateway registers to as a lower
        # platform: it receives the catalog, the alarms and the positions (gb28181-uplink.md)
        superior, superior_log = await _superior(stack)
        config = load_config(
            {
                "gateway": {"name": "demo", "listen": listen, "metrics": metrics},
                "auth": {
                    # the tokens come from the environment or were generated just now, not from a file
                    "allow_inline_secrets": True,
                    "tokens": [
                        {"name": "demo-read", "token": read_token, "read": ["#"]},
                        {"name": "demo-control", "token": control_token, "read": ["#"], "control": ["#"]},
                    ],
                },
                "devices": devices,
                "listeners": listeners,
                "uplinks": [
                    {
                        "id": "city",
                        "superior": f"127.0.0.1:{superior.port}",
                        "superior_id": superior.id,
                        "local_id": DEMO_LOCAL_ID,
                        "password": superior.password,
                        "bind": "127.0.0.1:0",
                        "keepalive": {"interval_s": 20, "count": 3},
                        "control": ["camera/+"],
                    }
                ],
            },
            registry,
        )
        gw = Gateway(config)

        def on_ready(g):
            # the demo listens on loopback only, so its tokens may go in the ready line
            announce(g, extra={"read_token": read_token, "control_token": control_token})
            addr = f"127.0.0.1:{g.port}"
            tips = hints(addr, read_token, control_token, {d["id"] for d in devices}, seconds)
            print(
                f"demo: drivers {', '.join(families)}; {len(devices)} devices, {len(listeners)} listeners",
                file=sys.stderr,
            )
            if read_new or control_new:
                print(
                    "demo: generated tokens (set TIANWANG_DEMO_READ_TOKEN / TIANWANG_DEMO_CONTROL_TOKEN to fix them):",
                    file=sys.stderr,
                )
            print(f"demo:   read token     {read_token}", file=sys.stderr)
            print(f"demo:   control token  {control_token}", file=sys.stderr)
            for line in tips:
                print(f"demo: {line}", file=sys.stderr)
            print(
                f"demo: superior platform simulator {superior.id} on udp://127.0.0.1:{superior.port}: the gateway "
                f"registers to it as uplink `city`; what it receives: tail -f {superior_log}",
                file=sys.stderr,
            )
            loop = asyncio.get_running_loop()
            if seconds:

                def time_up():
                    timed_out.append(seconds)
                    g.request_stop()

                loop.call_later(seconds, time_up)
            if live:
                task = loop.create_task(_live_view(g, tips))
                stack.push_async_callback(_finish, task)
                keys = stack.enter_context(Keys())
                if keys.fd is not None:

                    def on_key():
                        if keys.read():
                            g.request_stop()
                        elif keys.fd is None:
                            loop.remove_reader(fd)

                    fd = keys.fd
                    loop.add_reader(fd, on_key)
                    stack.callback(loop.remove_reader, fd)
            if ready is not None:
                ready(g)

        await gw.serve(ready=on_ready)
    if timed_out:
        print(f"demo: stopped after {seconds:g} s", file=sys.stderr)
    return 0


DEMO_LOCAL_ID = "43030000002000000002"  # the gateway towards the demo's superior platform (type 200)


async def _superior(stack):
    """The demo's superior platform simulator; what it receives goes as JSON lines to a file."""
    import tempfile

    from tianwang.gateway.uplink.platform_sim import PlatformSim

    where = stack.enter_context(tempfile.TemporaryDirectory(prefix="tianwang-demo-superior-"))
    path = os.path.join(where, "superior.jsonl")
    out = stack.enter_context(await asyncio.to_thread(open, path, "w", encoding="utf-8"))  # off the loop
    sim = PlatformSim("127.0.0.1", 0, out=out)
    await sim.start()
    stack.push_async_callback(sim.stop)

    def summary():
        got = ", ".join(
            f"{n} {kind}" for kind, n in sorted(sim.stats().items()) if kind not in ("lowers", "registered")
        )
        print(f"demo: the superior platform received: {got or 'nothing'}", file=sys.stderr)

    stack.callback(summary)
    return sim, path


async def _finish(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _live_view(gw, hints=(), interval: float = 2.0, screen: LiveScreen | None = None) -> None:
    """The top view of the running gateway with the newest envelope of each channel, every
    `interval` seconds: redrawn in place on a terminal, plain lines otherwise."""
    from tianwang.gateway.datapath.fanout import device_message
    from tianwang.v1 import gateway_pb2 as pb

    view = TopView()
    cursor = gw.journal.next_seq
    latest: dict[str, pb.Envelope] = {}

    def frame():
        nonlocal cursor
        _, cursor = gw.journal.gap_for(cursor)
        while True:
            data, n, cursor = gw.journal.collect(cursor, None, 4096, 8 * 1024 * 1024)
            if not n:
                break
            for env in pb.Batch.FromString(data).envelopes:
                latest[channel_key(env.topic)] = env
        devices = [device_message(e) for e in list(gw.supervisor.entries.values())]
        return view.frame(gw.stats(), devices, time.monotonic(), latest=latest, hints=hints)

    with screen or LiveScreen() as out:
        if out.tty:
            out.show(frame())  # the first frame at once; its rates are 0 until the next one
        while True:
            await asyncio.sleep(interval)
            out.show(frame())
