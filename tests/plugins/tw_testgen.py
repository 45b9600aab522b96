"""A test-only driver: emits readings at a configured rate and takes a few commands.

Loaded into a gateway subprocess with PYTHONPATH=tests/plugins and
TIANWANG_DRIVER_MODULES=tw_testgen; in-process tests register SPEC in their own Registry. Like any
driver, it imports the core only through tianwang.drivers.sdk (docs/drivers.md).
"""

import asyncio
import os

from pydantic import Field

from tianwang.drivers.sdk import ActionSpec, CommandError, DeviceConfig, DeviceError, Driver, DriverSpec, Health


class TestGenConfig(DeviceConfig):
    rate_hz: float = Field(default=50.0, ge=0)  # 0: readings only on the `emit` command
    burst: int = Field(default=1, ge=1)  # readings per tick
    channels: tuple[str, ...] = ("reading",)
    payload_bytes: int = Field(default=8, ge=0)
    fail_after: int = Field(default=0, ge=0)  # raise after this many readings in one run (0: never)
    refuse: bool = False  # every connection attempt fails
    close_marker: str | None = None  # a file appended to on every close()


class TestGen(Driver):
    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.counter = 0
        self.runs = 0

    async def run(self):
        cfg = self.config
        self.runs += 1
        if cfg.refuse:
            raise DeviceError("connection refused (test driver)")
        self.ctx.set_info(runs=self.runs)
        self.ctx.set_health(Health.ONLINE, "test generator running")
        emitted = 0
        if cfg.rate_hz == 0:
            await asyncio.Event().wait()
        period = 1.0 / cfg.rate_hz
        pad = "x" * cfg.payload_bytes
        while True:
            for _ in range(cfg.burst):
                for ch in cfg.channels:
                    self.counter += 1
                    self.ctx.publish(ch, {"n": self.counter, "pad": pad, "run": self.runs})
                emitted += 1
                if cfg.fail_after and emitted >= cfg.fail_after:
                    raise DeviceError(f"link lost after {emitted} readings (test driver)")
            await asyncio.sleep(period)

    async def command(self, action, args, timeout):
        if action == "echo":
            return {"echo": args}
        if action == "emit":
            n = int(args.get("n", 1))
            for _ in range(n):
                for ch in self.config.channels:
                    self.counter += 1
                    self.ctx.publish(ch, {"n": self.counter, "run": self.runs})
            return {"emitted": n}
        if action == "slow":
            await asyncio.sleep(float(args.get("s", 1.0)))
            return {"slept": args.get("s", 1.0)}
        if action == "refuse":
            raise CommandError("REFUSED", "the device says no (test driver)")
        raise CommandError("UNSUPPORTED", action)

    async def close(self):
        if self.config.close_marker:
            with open(self.config.close_marker, "a") as f:
                f.write(f"{self.ctx.device_id} closed\n")
                f.flush()
                os.fsync(f.fileno())


SPEC = DriverSpec(
    name="testgen",
    family="test",
    config_model=TestGenConfig,
    factory=TestGen,
    transports=(),
    actions=(
        ActionSpec("echo", "return the arguments"),
        ActionSpec("emit", "publish n readings now", {"n": "count"}),
        ActionSpec("slow", "take s seconds to answer", {"s": "seconds"}),
        ActionSpec("refuse", "answer with a refusal"),
        ActionSpec("set_plan", "a command that needs a reason", needs_reason=True),
    ),
    description="test-only reading generator",
)
