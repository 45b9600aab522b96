"""What a driver is: the spec it registers and the interface the supervisor drives.

A driver package exposes a `DriverSpec` through the `tianwang.drivers` entry-point group. The
supervisor creates one `Driver` per configured device (or per listener, for families such as
JT/T 808 where devices dial in) and hands it a `DeviceContext` (tianwang.gateway.lifecycle.supervisor) through which
it publishes readings, reports health and counts drops. Drivers never touch gRPC or NATS.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tianwang.gateway.errors import CommandError

if TYPE_CHECKING:  # not at run time: importing the SDK's names loads neither pydantic nor the supervisor
    from tianwang.gateway.lifecycle.config import DeviceConfig
    from tianwang.gateway.lifecycle.supervisor import DeviceContext

# a driver's own config model (a DeviceConfig or ListenerConfig subclass): `class MyDriver(Driver[MyConfig])`
ConfigT = TypeVar("ConfigT", bound="DeviceConfig")


class Health(enum.StrEnum):
    """Device health, published on `<family>/<id>/health` and shown by ListDevices."""

    CONNECTING = "CONNECTING"  # opening the transport / handshaking
    ONLINE = "ONLINE"  # connected and producing data
    DEGRADED = "DEGRADED"  # connected, but data is missing or suspect (the reason says why)
    OFFLINE = "OFFLINE"  # not connected; the supervisor is backing off before the next attempt
    DISABLED = "DISABLED"  # configured with `enabled: false`: listed, never run, commands refused


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """A command a driver accepts through SendCommand."""

    name: str
    description: str
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)  # arg name -> description
    needs_reason: bool = False  # commands that change what the public sees need a reason
    # False for commands that only read (a camera snapshot): a token that may read the device's topics
    # (`read` patterns matching `<family>/<id>/#`) may call them; True needs a `control` pattern
    needs_control: bool = True
    # calls per second each token may make (after `per_token_burst` at once); 0 = no limit of its own.
    # For read-only actions that cost the device (a camera snapshot): anyone who may read may call them
    per_token_per_s: float = 0.0
    per_token_burst: int = 0


@dataclasses.dataclass(frozen=True)
class Publication:
    """One reading as a driver hands it over: `channel` is appended to `<family>/<id>/`."""

    channel: str
    payload: dict[str, Any]
    device_time_ns: int = 0


@dataclasses.dataclass(frozen=True)
class DriverSpec:
    """What a driver package registers under the `tianwang.drivers` entry-point group.

    name          the `driver:` value in config (`beidou`)
    family        first topic level of everything it publishes (`gnss`)
    kind          "device": one instance per `devices:` entry; "listener": one per `listeners:` entry,
                  which registers the devices that connect to it as children
    config_model  pydantic model (a subclass of tianwang.gateway.lifecycle.config.DeviceConfig or ListenerConfig)
    factory       (config, ctx) -> Driver
    transports    URL schemes it accepts (`serial`, `tcp`, `http`), for `tianwang drivers`
    actions       commands it executes
    decoder       optional (device_id) -> object with feed(bytes) -> list[Publication] and
                  finish() -> list[Publication], plus `drops` (reason -> count): `tianwang decode`
    simulator     optional "module:function" taking argv, for `tianwang simulate`
    demo          optional `async demo(stack: contextlib.AsyncExitStack) -> {"devices": [...],
                  "listeners": [...]}`: start this family's simulators (their lifetime tied to the
                  stack) and return config entries pointing at them, for `tianwang run --demo`
    recordable    the driver hands the raw bytes of its transport to `ctx.tap` (DeviceContext), so
                  `tianwang record` (the Record RPC) can capture them; for a listener, its
                  terminals' bytes, each on the terminal's own context. False: the transport is
                  not a byte stream (HTTP/SOAP) or the driver does not tap it
    """

    name: str
    family: str
    config_model: type
    factory: Callable[[Any, Any], Driver[Any]]
    kind: str = "device"
    transports: tuple[str, ...] = ()
    actions: tuple[ActionSpec, ...] = ()
    description: str = ""
    decoder: Callable[[str], Any] | None = None
    simulator: str | None = None
    demo: Callable[[Any], Any] | None = None
    recordable: bool = False

    def action(self, name: str) -> ActionSpec | None:
        for a in self.actions:
            if a.name == name:
                return a
        return None


class Driver(abc.ABC, Generic[ConfigT]):
    """One device (or one listener). The supervisor runs `run()` in its own task.

    Lifecycle: the supervisor calls `run()`; the driver opens its transport, calls
    `ctx.set_health(Health.ONLINE)` once the device answers, and keeps reading. When the link fails it
    raises (DeviceError or any exception); the supervisor then calls `close()`, reports OFFLINE, backs
    off with jitter and calls `run()` again on the same object. On shutdown or removal the task is
    cancelled and `close()` is awaited (with a time limit) so ports are closed and subscriptions ended.
    """

    def __init__(self, config: ConfigT, ctx: DeviceContext) -> None:
        self.config = config
        self.ctx = ctx

    @abc.abstractmethod
    async def run(self) -> None:
        """Connect and serve until the link fails (raise) or the task is cancelled."""

    async def command(self, action: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Execute one command; return the result map. Raises CommandError with a reply code."""
        raise CommandError("UNSUPPORTED", f"driver {self.ctx.driver_name!r} has no action {action!r}")

    async def close(self) -> None:
        """Release the transport (close ports, unsubscribe). Must be safe to call more than once."""
